"""Building a sparcl_plan_desc from Python keyword arguments.

Shared by Plan, the references and the tuning database, so the three read
the same keywords the same way.  The struct is always initialized through
sparcl_plan_desc_init_sized(desc, sizeof) (the versioned-struct rule) and
then set field by field.
"""

import ctypes
import math

import numpy as np

from . import _abi, dtypes
from ._abi import lib
from .errors import check

NORMALIZATIONS = {
    "softmax": _abi.SPARCL_NORMALIZATION_SOFTMAX,
    "sparsemax": _abi.SPARCL_NORMALIZATION_SPARSEMAX,
    "entmax15": _abi.SPARCL_NORMALIZATION_ENTMAX15,
    "entmax": _abi.SPARCL_NORMALIZATION_ENTMAX,
}
ATTENTION = {
    "exact": _abi.SPARCL_ATTENTION_EXACT,
    "favor": _abi.SPARCL_ATTENTION_FAVOR,
    "linformer": _abi.SPARCL_ATTENTION_LINFORMER,
    "span": _abi.SPARCL_ATTENTION_SPAN,
    "lsh": _abi.SPARCL_ATTENTION_LSH,
}
SELECT = {
    "none": _abi.SPARCL_SELECT_NONE,
    "topk": _abi.SPARCL_SELECT_TOPK,
    "mass": _abi.SPARCL_SELECT_MASS,
}

# Plain int fields copied as given when not None.
_INT_FIELDS = ("features", "proj_len", "select_k", "select_block", "lsh_rounds", "lsh_buckets",
               "lsh_chunk")


def _choice(name, table, value):
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise ValueError("%s must be one of %s, got %r" % (name, ", ".join(map(repr, table)), value))


def _int_arg(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be an int, got %r" % (name, value))
    return int(value)


def _float_array(name, values, n=None):
    a = np.ascontiguousarray(values, dtype=np.float32).ravel()
    if n is not None and a.size != n:
        raise ValueError("%s needs %d values, got %d" % (name, n, a.size))
    return a


class Desc:
    """A filled sparcl_plan_desc plus the Python objects its pointers borrow."""

    def __init__(self, *, q_len, head_dim, kv_len=None, q_heads=1, kv_heads=None, batch=1,
                 layout=None, causal=False, scale=None, dtype="float32",
                 normalization="softmax", alpha=None, params=None, unchecked_params=False,
                 attention="exact", features=None, proj_len=None, seed=None, proj_e=None,
                 proj_f=None, select="none", select_k=None, select_tau=None, select_block=None,
                 spans=None, span_ramp=None, lsh_rounds=None, lsh_buckets=None, lsh_chunk=None,
                 previous=None):
        from .layout import Layout
        from .plan import Plan

        d = _abi.sparcl_plan_desc()
        check(lib.sparcl_plan_desc_init_sized(ctypes.byref(d), ctypes.sizeof(d)), None)
        kv_len = q_len if kv_len is None else kv_len
        kv_heads = q_heads if kv_heads is None else kv_heads
        for name, value in (("batch", batch), ("q_heads", q_heads), ("kv_heads", kv_heads),
                            ("q_len", q_len), ("kv_len", kv_len), ("head_dim", head_dim)):
            setattr(d, name, _int_arg(name, value))
        if scale is not None:
            scale = float(scale)
            if not math.isfinite(scale) or scale == 0.0:
                raise ValueError("scale must be finite and nonzero (None means 1/sqrt(head_dim)), got %r" % scale)
            d.scale = scale
        d.causal = 1 if causal else 0
        self.layout = layout
        if layout is not None:
            if not isinstance(layout, Layout):
                raise TypeError("layout must be a sparcl.Layout or None, got %r" % type(layout).__name__)
            d.layout = layout._borrow()
        self.previous = previous
        if previous is not None:
            if not isinstance(previous, Plan):
                raise TypeError("previous must be a sparcl.Plan or None, got %r" % type(previous).__name__)
            d.previous = previous._borrow()
        self.dtype = dtypes.code(dtype)
        d.dtype = self.dtype
        self.normalization = _choice("normalization", NORMALIZATIONS, normalization)
        if self.normalization == _abi.SPARCL_NORMALIZATION_ENTMAX and alpha is None:
            self.normalization = _abi.SPARCL_NORMALIZATION_ENTMAX15
        d.normalization = self.normalization
        if alpha is not None:
            d.alpha = float(alpha)
        self.params = None
        if params is not None:
            if not isinstance(params, dict):
                raise TypeError("params must be a dict of name -> int, got %r" % type(params).__name__)
            self.params = _abi.params_from_dict(params)
            d.params = ctypes.pointer(self.params)
        d.unchecked_params = 1 if unchecked_params else 0
        self.attention = _choice("attention", ATTENTION, attention)
        d.attention = self.attention
        for name in _INT_FIELDS:
            value = locals()[name]
            if value is not None:
                setattr(d, name, _int_arg(name, value))
        if seed is not None:
            d.seed = int(seed)
        self._arrays = []
        for name, value in (("proj_e", proj_e), ("proj_f", proj_f)):
            if value is not None:
                a = _float_array(name, value)
                self._arrays.append(a)
                setattr(d, name, a.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        d.select = _choice("select", SELECT, select)
        if select_tau is not None:
            d.select_tau = float(select_tau)
        if spans is not None:
            a = _float_array("spans", spans, d.q_heads)
            self._arrays.append(a)
            d.spans = a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if span_ramp is not None:
            d.span_ramp = float(span_ramp)
        self.c = d

    @property
    def q_shape(self):
        d = self.c
        return (d.batch, d.q_heads, d.q_len, d.head_dim)

    @property
    def kv_shape(self):
        d = self.c
        return (d.batch, d.kv_heads, d.kv_len, d.head_dim)

    @property
    def lse_shape(self):
        d = self.c
        return (d.batch, d.q_heads, d.q_len)

    def ref(self):
        return ctypes.byref(self.c)
