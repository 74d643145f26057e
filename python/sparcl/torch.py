"""PyTorch autograd integration of sparcl attention (CPU tensors).

Imported only on request (``import sparcl.torch``); ``import sparcl`` never
imports PyTorch.

    import sparcl, sparcl.torch
    ctx = sparcl.Context()
    layout = sparcl.Layout.window(ctx, 512, 512, left=127)
    out = sparcl.torch.attention(q, k, v, layout)      # q, k, v: [B, H, S, D]
    out.sum().backward()                               # sparcl's backward kernels

`attention` is a ``torch.autograd.Function``: its forward runs
``sparcl.Plan.forward`` and its backward ``sparcl.Plan.backward`` (the fused
sparse backward, not PyTorch's autograd of a dense computation).

Tensors
    CPU tensors of float32, float16 or bfloat16, all three of one dtype, 4-D:
    ``tensor_layout="BHSD"`` ([batch, heads, seq, head_dim], the layout of
    ``torch.nn.functional.scaled_dot_product_attention``) or ``"BSHD"``
    ([batch, seq, heads, head_dim], FlashAttention's).  k and v have the same
    shape; they may have fewer heads than q (GQA / MQA: query head h uses KV
    head ``h // (q_heads // kv_heads)``, as Llama's ``repeat_kv``).
    sparcl's host calls read contiguous [B, H, S, D] arrays, so contiguous
    BHSD float32/float16/bfloat16 tensors are handed over without a copy
    (``Tensor.numpy()``; bfloat16 through ``.view(torch.int16)``, which NumPy
    sees as the uint16 bit patterns sparcl reads); BSHD or non-contiguous
    tensors are copied once into [B, H, S, D].  The output has the input's
    tensor layout (for BSHD a transposed view of a [B, H, S, D] buffer).
    The optional LSE is float32 [B, q_heads, q_len] in either layout (as
    FlashAttention's ``softmax_lse``) and carries no gradient.

Plans
    A sparcl plan compiles and uploads its layout once; building one per call
    would dominate a training step.  Plans are therefore cached per
    (context, batch, heads, lengths, head_dim, dtype, layout object, causal,
    scale) in a small least-recently-used cache of `plan_cache_size()`
    entries (default 16; `set_plan_cache_size`, `clear_plan_cache`).  The
    layout is keyed by identity: pass the same Layout object every step (a
    new but equal Layout builds a new plan).  The cache holds a reference to
    the layout and the context of each entry.  An evicted plan is dropped,
    not closed, so a graph that still needs it for backward keeps it alive.
    Closing a context closes its plans (sparcl.Context.close): a closed
    plan is dropped from the cache when next looked up, and calls with that
    context raise; `clear_plan_cache()` drops every reference at once.

Context
    ``ctx=None`` uses one default `sparcl.Context()` (SPARCL_DEVICE, else
    the first GPU, else the first CPU) created on first use (thread-safe)
    and kept for the life of the process; `default_context()` returns it.

Rows that attend no key give output 0 and LSE -inf, as PyTorch's
scaled_dot_product_attention does with a boolean mask.
"""

import collections
import threading

import numpy as np
import torch
from torch.autograd.function import once_differentiable

import sparcl

__all__ = [
    "attention",
    "default_context",
    "plan_cache_size",
    "set_plan_cache_size",
    "clear_plan_cache",
]

_DTYPES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}

_lock = threading.Lock()
_default_ctx = None
_plans = collections.OrderedDict()  # key -> (plan, ctx, layout)
_cache_size = 16


def default_context():
    """The process-wide sparcl.Context used when ``ctx`` is None: created on
    first call (again if it was closed), freed at interpreter exit by
    sparcl's handle finalizers."""
    global _default_ctx
    with _lock:
        if _default_ctx is None or _default_ctx.closed:
            _default_ctx = sparcl.Context()
        return _default_ctx


def plan_cache_size():
    """Maximum number of cached plans."""
    return _cache_size


def set_plan_cache_size(n):
    """Sets the maximum number of cached plans (>= 0; 0 disables caching:
    every call builds its plan).  Drops the least recently used entries
    beyond n."""
    global _cache_size
    n = int(n)
    if n < 0:
        raise ValueError("plan cache size must be >= 0, got %d" % n)
    with _lock:
        _cache_size = n
        while len(_plans) > n:
            _plans.popitem(last=False)


def clear_plan_cache():
    """Drops every cached plan (and the cache's references to layouts and
    contexts).  Plans still referenced by an autograd graph stay alive until
    that graph is freed."""
    with _lock:
        _plans.clear()


def _cached(key):
    """The live cached plan of `key`, or None (call with _lock held)."""
    entry = _plans.get(key)
    if entry is None:
        return None
    if entry[0].closed:  # its context was closed, which closes its plans
        del _plans[key]
        return None
    _plans.move_to_end(key)
    return entry[0]


def _get_plan(ctx, shape, dtype, layout, causal, scale):
    batch, q_heads, kv_heads, q_len, kv_len, head_dim = shape
    key = (id(ctx), shape, dtype, id(layout) if layout is not None else None, causal, scale)
    with _lock:
        plan = _cached(key)
    if plan is not None:
        return plan
    plan = sparcl.Plan(ctx, batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len,
                       kv_len=kv_len, head_dim=head_dim, layout=layout, causal=causal,
                       scale=scale, dtype=dtype)
    with _lock:
        if _cache_size > 0:
            # Another thread may have built the same plan meanwhile: keep one.
            other = _cached(key)
            if other is not None:
                return other
            # The entry keeps ctx and layout alive, so their ids stay unique.
            _plans[key] = (plan, ctx, layout)
            while len(_plans) > _cache_size:
                _plans.popitem(last=False)
    return plan


def _to_numpy(t):
    """A contiguous [B, H, S, D] tensor as the NumPy array sparcl reads
    (sharing its memory): float32/float16 as such, bfloat16 as uint16 bits."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _from_numpy(a, dtype):
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _to_bhsd(t, bshd):
    """Detached contiguous [B, H, S, D] tensor (no copy when already so)."""
    t = t.detach()
    if bshd:
        t = t.transpose(1, 2)
    return t.contiguous()


def _from_bhsd(t, bshd):
    return t.transpose(1, 2) if bshd else t


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(fctx, q, k, v, plan, bshd):
        qc, kc, vc = (_to_bhsd(t, bshd) for t in (q, k, v))
        out, lse = plan.forward(_to_numpy(qc), _to_numpy(kc), _to_numpy(vc))
        out_t = _from_numpy(out, q.dtype)
        lse_t = torch.from_numpy(lse)
        fctx.plan = plan
        fctx.bshd = bshd
        fctx.save_for_backward(qc, kc, vc, out_t, lse_t)
        fctx.mark_non_differentiable(lse_t)
        return _from_bhsd(out_t, bshd), lse_t

    @staticmethod
    @once_differentiable
    def backward(fctx, dout, _dlse):
        qc, kc, vc, out_t, lse_t = fctx.saved_tensors
        bshd = fctx.bshd
        doc = _to_bhsd(dout, bshd)
        dq, dk, dv = fctx.plan.backward(
            _to_numpy(qc),
            _to_numpy(kc),
            _to_numpy(vc),
            _to_numpy(out_t),
            lse_t.numpy(),
            _to_numpy(doc),
        )
        grads = tuple(_from_bhsd(_from_numpy(g, qc.dtype), bshd) for g in (dq, dk, dv))
        return grads + (None, None)


def _check_inputs(q, k, v, tensor_layout):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError("%s must be a torch.Tensor, got %s" % (name, type(t).__name__))
        if t.device.type != "cpu":
            raise ValueError(
                "%s is on device %s; sparcl.torch runs on CPU tensors (move it with .cpu())"
                % (name, t.device)
            )
        if t.dim() != 4:
            raise ValueError(
                "%s must be 4-D [%s], got %d-D shape %s"
                % (name, ", ".join(tensor_layout), t.dim(), tuple(t.shape))
            )
        if t.dtype not in _DTYPES:
            raise ValueError(
                "%s has dtype %s; sparcl.torch takes float32, float16 or bfloat16" % (name, t.dtype)
            )
        if t.numel() == 0:
            raise ValueError("%s is empty (shape %s)" % (name, tuple(t.shape)))
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(
            "q, k and v must have one dtype, got q %s, k %s, v %s" % (q.dtype, k.dtype, v.dtype)
        )
    if tensor_layout == "BHSD":
        (b, hq, sq, d), (bk, hk, sk, dk) = q.shape, k.shape
    else:
        (b, sq, hq, d), (bk, sk, hk, dk) = q.shape, k.shape
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError("v must have k's shape %s, got %s" % (tuple(k.shape), tuple(v.shape)))
    if bk != b:
        raise ValueError("k has batch %d but q has batch %d" % (bk, b))
    if dk != d:
        raise ValueError("k has head_dim %d but q has head_dim %d" % (dk, d))
    if hq % hk != 0:
        raise ValueError(
            "k has %d heads, which does not divide q's %d heads (GQA needs q_heads %% kv_heads == 0)"
            % (hk, hq)
        )
    return b, hq, hk, sq, sk, d


def attention(
    q,
    k,
    v,
    layout=None,
    *,
    causal=False,
    scale=None,
    tensor_layout="BHSD",
    ctx=None,
    return_lse=False,
):
    """Sparse attention softmax(scale * q k^T, masked by layout) v with
    sparcl's forward and backward.

    q: [B, Hq, Sq, D] (or [B, Sq, Hq, D] with tensor_layout="BSHD");
    k, v: [B, Hkv, Skv, D] (or [B, Skv, Hkv, D]) with Hq % Hkv == 0.
    layout: a sparcl.Layout with q_len Sq, kv_len Skv and 1 or Hq heads, or
    None for dense.  causal: also mask key j > i + (Skv - Sq) (bottom-right
    aligned, as the layouts).  scale: score scale, None for 1/sqrt(D).
    ctx: the sparcl.Context (None: `default_context()`).
    Returns out (q's shape and dtype), or (out, lse) with return_lse=True,
    lse float32 [B, Hq, Sq] without gradient.

    Raises ValueError naming the argument for a CUDA tensor, a tensor that
    is not 4-D, mixed dtypes, mismatched batch/heads/head_dim, or a layout
    whose shape does not fit; sparcl.SparclError for what sparcl refuses.
    """
    if tensor_layout not in ("BHSD", "BSHD"):
        raise ValueError('tensor_layout must be "BHSD" or "BSHD", got %r' % (tensor_layout,))
    b, hq, hk, sq, sk, d = _check_inputs(q, k, v, tensor_layout)
    if layout is not None:
        if layout.q_len != sq or layout.kv_len != sk:
            raise ValueError(
                "layout is %d x %d (q_len x kv_len) but q has %d positions and k %d"
                % (layout.q_len, layout.kv_len, sq, sk)
            )
        if layout.heads not in (1, hq):
            raise ValueError(
                "layout has %d heads; it needs 1 or q's %d heads" % (layout.heads, hq)
            )
    if scale is not None:
        scale = float(scale)
    if ctx is None:
        ctx = default_context()
    plan = _get_plan(ctx, (b, hq, hk, sq, sk, d), _DTYPES[q.dtype], layout, bool(causal), scale)
    out, lse = _Attention.apply(q, k, v, plan, tensor_layout == "BSHD")
    return (out, lse) if return_lse else out
