"""sparcl's double-precision host references, for checking results."""

import ctypes

import numpy as np

from ._abi import lib
from .desc import Desc
from .errors import check

_DP = ctypes.POINTER(ctypes.c_double)
_FP = ctypes.POINTER(ctypes.c_float)


def _ctx_handle(ctx):
    if ctx is None:
        return None
    return ctx._borrow()


def _f32(name, a, shape=None):
    if not isinstance(a, np.ndarray):
        raise TypeError("%s must be a numpy array, got %s" % (name, type(a).__name__))
    if a.dtype != np.float32:
        raise TypeError("%s must be a float32 array (the reference reads floats), got %s"
                        % (name, a.dtype))
    if a.ndim != 4:
        raise ValueError("%s must be 4-D [B, H, S, D], got shape %s" % (name, list(a.shape)))
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError("%s must have shape %s, got %s" % (name, list(shape), list(a.shape)))
    return np.ascontiguousarray(a)


def _desc(q, k, kwargs):
    shape = dict(batch=q.shape[0], q_heads=q.shape[1], q_len=q.shape[2], head_dim=q.shape[3],
                 kv_heads=k.shape[1], kv_len=k.shape[2])
    for name, value in shape.items():
        if kwargs.get(name) is not None and kwargs[name] != value:
            raise ValueError("%s=%r disagrees with the arrays (%d)" % (name, kwargs[name], value))
        kwargs[name] = int(value)
    kwargs.pop("dtype", None)  # the reference reads float32 whatever the plan stores
    return Desc(**kwargs)


def reference_forward(ctx, q, k, v, **plan_kwargs):
    """(out, lse) as float64 from sparcl_reference_forward.

    ctx: a Context or None (it only receives the error message).  q, k, v:
    float32 arrays [B, H, S, D]; the shapes come from them.  plan_kwargs:
    as for Plan (layout, causal, scale, normalization, alpha, ...)."""
    q = _f32("q", q)
    k = _f32("k", k)
    v = _f32("v", v, k.shape)
    d = _desc(q, k, dict(plan_kwargs))
    out = np.empty(q.shape, dtype=np.float64)
    lse = np.empty(q.shape[:3], dtype=np.float64)
    h = _ctx_handle(ctx)
    check(lib.sparcl_reference_forward(h, d.ref(), q.ctypes.data_as(_FP), k.ctypes.data_as(_FP),
                                       v.ctypes.data_as(_FP), out.ctypes.data_as(_DP),
                                       lse.ctypes.data_as(_DP)), h)
    return out, lse


def reference_backward(ctx, q, k, v, dout, **plan_kwargs):
    """(dq, dk, dv) as float64 from sparcl_reference_backward (same arguments as
    reference_forward, plus dout float32 shaped like q)."""
    q = _f32("q", q)
    k = _f32("k", k)
    v = _f32("v", v, k.shape)
    dout = _f32("dout", dout, q.shape)
    d = _desc(q, k, dict(plan_kwargs))
    dq = np.empty(q.shape, dtype=np.float64)
    dk = np.empty(k.shape, dtype=np.float64)
    dv = np.empty(k.shape, dtype=np.float64)
    h = _ctx_handle(ctx)
    check(lib.sparcl_reference_backward(h, d.ref(), q.ctypes.data_as(_FP), k.ctypes.data_as(_FP),
                                        v.ctypes.data_as(_FP), dout.ctypes.data_as(_FP),
                                        dq.ctypes.data_as(_DP), dk.ctypes.data_as(_DP),
                                        dv.ctypes.data_as(_DP)), h)
    return dq, dk, dv
