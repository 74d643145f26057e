"""sparcl.Plan: shapes, layout and tuned kernel parameters, built once."""

import ctypes

import numpy as np

from . import _abi, dtypes
from ._abi import lib
from ._handle import Handle
from .desc import Desc
from .errors import check

SOURCES = {
    _abi.SPARCL_PARAMS_DEFAULT: "default",
    _abi.SPARCL_PARAMS_OVERRIDE: "override",
    _abi.SPARCL_PARAMS_DATABASE: "database",
}

_F32P = ctypes.POINTER(ctypes.c_float)


def prepare(name, array, shape, dtype_code):
    """Checks one tensor argument and returns it C-contiguous.

    Wrong dtype: TypeError naming the argument and the expected dtype.
    Wrong shape: ValueError naming the argument, the expected and the actual
    shape.  A non-contiguous array (a transpose, a slice) is copied with
    np.ascontiguousarray; the result is the same as for a contiguous copy."""
    if not isinstance(array, np.ndarray):
        raise TypeError("%s must be a numpy array, got %s" % (name, type(array).__name__))
    if not dtypes.accepts(dtype_code, array.dtype):
        raise TypeError(
            "%s must be a %s array for this plan's dtype %s, got %s"
            % (name, dtypes.expected(dtype_code), dtypes.NAMES[dtype_code], array.dtype)
        )
    if tuple(array.shape) != tuple(shape):
        raise ValueError(
            "%s must have shape %s, got %s" % (name, list(shape), list(array.shape))
        )
    return np.ascontiguousarray(array)


def prepare_lse(name, array, shape):
    if not isinstance(array, np.ndarray):
        raise TypeError("%s must be a numpy array, got %s" % (name, type(array).__name__))
    if array.dtype != np.float32:
        raise TypeError("%s must be a float32 array, got %s" % (name, array.dtype))
    if tuple(array.shape) != tuple(shape):
        raise ValueError("%s must have shape %s, got %s" % (name, list(shape), list(array.shape)))
    return np.ascontiguousarray(array)


def forward_arrays(desc, q, k, v, with_lse=True):
    """Checked inputs and fresh outputs of a forward call of `desc`:
    (q, k, v, out, lse); lse None when the kind writes none."""
    dt = desc.dtype
    q = prepare("q", q, desc.q_shape, dt)
    k = prepare("k", k, desc.kv_shape, dt)
    v = prepare("v", v, desc.kv_shape, dt)
    out = np.empty(desc.q_shape, dtype=q.dtype)
    lse = np.empty(desc.lse_shape, dtype=np.float32) if with_lse else None
    return q, k, v, out, lse


def backward_arrays(desc, q, k, v, out, lse, dout, with_lse=True):
    """Checked inputs and fresh outputs of a backward call of `desc`:
    (q, k, v, out, lse, dout, dq, dk, dv)."""
    dt = desc.dtype
    q = prepare("q", q, desc.q_shape, dt)
    k = prepare("k", k, desc.kv_shape, dt)
    v = prepare("v", v, desc.kv_shape, dt)
    out = prepare("out", out, desc.q_shape, dt)
    dout = prepare("dout", dout, desc.q_shape, dt)
    if with_lse:
        if lse is None:
            raise TypeError("lse is required (the forward's lse)")
        lse = prepare_lse("lse", lse, desc.lse_shape)
    else:
        lse = None
    grads = [np.empty(shape, dtype=q.dtype) for shape in (desc.q_shape, desc.kv_shape, desc.kv_shape)]
    return (q, k, v, out, lse, dout, *grads)


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


class Plan(Handle):
    """A sparcl plan: one attention problem, built once, run many times.

    Plan(ctx, *, q_len, head_dim, kv_len=None (= q_len), q_heads=1,
         kv_heads=None (= q_heads), batch=1, layout=None, causal=False,
         scale=None (1/sqrt(head_dim)), dtype="float32", normalization="softmax",
         alpha=None, params=None, ...)

    normalization: "softmax", "sparsemax", "entmax15", or "entmax" with
    alpha in (1, 2] (alpha None: 1.5).  params: a dict of kernel parameters
    overriding the tuned/default choice.  Further keywords (attention,
    features, proj_len, seed, select, select_k, select_tau, select_block,
    spans, span_ramp, lsh_rounds, lsh_buckets, lsh_chunk, unchecked_params)
    set the sparcl_plan_desc fields of the same names; see sparcl.h.
    previous: an earlier Plan of the same Context (another length of the
    same pattern), whose unchanged tile rows the new plan copies instead of
    re-blocking them (desc.previous); results never depend on it.

    The layout is read during construction only; the plan keeps its
    Context alive.  Tensors are NumPy arrays, C-contiguous [B, H, S, D]
    (other arrays are copied contiguous first): q [batch, q_heads, q_len,
    head_dim], k and v [batch, kv_heads, kv_len, head_dim], of the plan's
    dtype (see sparcl.dtypes); lse is float32 [batch, q_heads, q_len].
    """

    _kind = "plan"

    def __init__(self, ctx, **kwargs):
        from .context import Context

        if not isinstance(ctx, Context):
            raise TypeError("ctx must be a sparcl.Context, got %r" % type(ctx).__name__)
        h = ctx._borrow()
        desc = Desc(**kwargs)
        out = ctypes.c_void_p()
        check(lib.sparcl_plan_init(h, ctypes.byref(out), desc.ref()), h)
        self._ctx = ctx
        self._desc = desc
        desc.layout = None  # borrowed during init only
        desc.c.layout = None
        desc.previous = None
        desc.c.previous = None
        self._own(out.value, lib.sparcl_plan_free)
        ctx._adopt(self)

    # ---- shapes ----

    @property
    def context(self):
        return self._ctx

    @property
    def dtype(self):
        return dtypes.NAMES[self._desc.dtype]

    @property
    def q_shape(self):
        """[batch, q_heads, q_len, head_dim]: the shape of q, out and dout."""
        return self._desc.q_shape

    @property
    def kv_shape(self):
        """[batch, kv_heads, kv_len, head_dim]: the shape of k and v."""
        return self._desc.kv_shape

    @property
    def lse_shape(self):
        return self._desc.lse_shape

    def _has_lse(self):
        return self._desc.attention != _abi.SPARCL_ATTENTION_FAVOR

    # ---- calls ----

    def forward(self, q, k, v):
        """(out, lse): out like q, lse float32 [batch, q_heads, q_len] (natural-log
        sum of exponentials; tau for sparse normalizations; None for FAVOR+)."""
        h = self._borrow()
        q, k, v, out, lse = forward_arrays(self._desc, q, k, v, self._has_lse())
        lse_p = lse.ctypes.data_as(_F32P) if lse is not None else None
        check(lib.sparcl_plan_forward_host(h, _ptr(q), _ptr(k), _ptr(v), _ptr(out), lse_p),
              self._ctx._borrow())
        return out, lse

    def backward(self, q, k, v, out, lse, dout):
        """(dq, dk, dv) of the forward for dout = dLoss/dout; out and lse exactly as
        forward() returned them (lse None for FAVOR+ plans)."""
        h = self._borrow()
        q, k, v, out, lse, dout, dq, dk, dv = backward_arrays(self._desc, q, k, v, out, lse, dout,
                                                              self._has_lse())
        lse_p = lse.ctypes.data_as(_F32P) if lse is not None else None
        check(
            lib.sparcl_plan_backward_host(h, _ptr(q), _ptr(k), _ptr(v), _ptr(out), lse_p,
                                          _ptr(dout), _ptr(dq), _ptr(dk), _ptr(dv)),
            self._ctx._borrow(),
        )
        return dq, dk, dv

    def __call__(self, q, k, v):
        return self.forward(q, k, v)

    # ---- parameters ----

    def _params(self):
        p = _abi.sparcl_params()
        src = ctypes.c_int(0)
        lib.sparcl_plan_params(self._borrow(), ctypes.byref(p), ctypes.byref(src))
        return _abi.params_to_dict(p), SOURCES.get(src.value, str(src.value))

    @property
    def params(self):
        """The forward's kernel parameters, {name: value}."""
        return self._params()[0]

    @property
    def params_source(self):
        """"default", "override" or "database"."""
        return self._params()[1]

    @property
    def params_origin(self):
        """A sentence on where the parameters came from (database path and match)."""
        return _abi.text(lib.sparcl_plan_params_origin(self._borrow()))

    @property
    def device_bytes(self):
        """Device memory the plan itself holds (not the caller's tensors)."""
        return int(lib.sparcl_plan_device_bytes(self._borrow()))

    def prepare_backward(self, params=None):
        """Builds the backward's resources now, optionally with a parameter override."""
        h = self._borrow()
        p = None if params is None else ctypes.byref(_abi.params_from_dict(params))
        check(lib.sparcl_plan_prepare_backward(h, p), self._ctx._borrow())

    def backward_params(self):
        """(params dict, source) of the backward kernels (prepares them if needed)."""
        h = self._borrow()
        p = _abi.sparcl_params()
        src = ctypes.c_int(0)
        check(lib.sparcl_plan_backward_params(h, ctypes.byref(p), ctypes.byref(src)),
              self._ctx._borrow())
        return _abi.params_to_dict(p), SOURCES.get(src.value, str(src.value))

    def __repr__(self):
        if self.closed:
            return "<sparcl.Plan (closed)>"
        return "<sparcl.Plan q%s kv%s %s, params from %s>" % (
            list(self.q_shape), list(self.kv_shape), self.dtype, self.params_source)
