"""sparcl.MultiPlan: one attention call sharded over several contexts."""

import ctypes

from . import _abi
from ._abi import lib
from ._handle import Handle
from .desc import Desc
from .errors import check
from .plan import backward_arrays, forward_arrays

MODES = {
    "heads": _abi.SPARCL_SHARD_HEADS,
    "queries": _abi.SPARCL_SHARD_QUERIES,
    "keys": _abi.SPARCL_SHARD_KEYS,
}
_FP = ctypes.POINTER(ctypes.c_float)


class MultiPlan(Handle):
    """MultiPlan(contexts, mode="heads", **plan_kwargs): the call of a Plan with
    these keywords cut over `contexts` (one per device; two may share a
    device) by query heads, query rows or keys, every share run at once,
    the result that of the single-device call within fp32 rounding.
    float32 only; forward and backward take and return NumPy arrays as
    Plan's do.  Errors carry contexts[0]'s message.  Every context is kept
    alive and closes this plan before it closes."""

    _kind = "multi-device plan"

    def __init__(self, contexts, mode="heads", **plan_kwargs):
        from .context import Context

        contexts = list(contexts)
        if not contexts or not all(isinstance(c, Context) for c in contexts):
            raise TypeError("contexts must be a non-empty list of sparcl.Context")
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(map(repr, MODES)), mode))
        handles = (ctypes.c_void_p * len(contexts))(*[c._borrow() for c in contexts])
        desc = Desc(**plan_kwargs)
        out = ctypes.c_void_p()
        status = lib.sparcl_multi_plan_init(handles, len(contexts), ctypes.byref(out), desc.ref(),
                                            MODES[mode])
        check(status, contexts[0]._borrow())
        desc.layout = None
        desc.c.layout = None
        self._contexts = contexts
        self._desc = desc
        self._own(out.value, lib.sparcl_multi_plan_free)
        for c in contexts:
            c._adopt(self)

    @property
    def q_shape(self):
        return self._desc.q_shape

    @property
    def kv_shape(self):
        return self._desc.kv_shape

    def _check(self, status):
        check(status, self._contexts[0]._borrow())

    def shards(self):
        """One dict per share: context (index), head0/heads, kv_head0/kv_heads,
        row0/rows, key0/keys, pairs, device_bytes."""
        h = self._borrow()
        out = []
        for i in range(lib.sparcl_multi_plan_shard_count(h)):
            info = _abi.sparcl_shard_info()
            info.struct_size = ctypes.sizeof(info)
            self._check(lib.sparcl_multi_plan_shard(h, i, ctypes.byref(info)))
            out.append({name: int(getattr(info, name)) for name, _ in info._fields_[1:]})
        return out

    def forward(self, q, k, v):
        """(out, lse) of the whole call, as Plan.forward."""
        h = self._borrow()
        arrays = forward_arrays(self._desc, q, k, v)
        self._check(lib.sparcl_multi_plan_forward_host(h, *(a.ctypes.data_as(_FP) for a in arrays)))
        return arrays[3], arrays[4]

    def backward(self, q, k, v, out, lse, dout):
        """(dq, dk, dv) of the whole call, as Plan.backward."""
        h = self._borrow()
        arrays = backward_arrays(self._desc, q, k, v, out, lse, dout)
        self._check(lib.sparcl_multi_plan_backward_host(h, *(a.ctypes.data_as(_FP) for a in arrays)))
        return arrays[6:]
