"""sparcl.torch.attention against PyTorch: the forward against
scaled_dot_product_attention computed in float64 with the equivalent boolean
mask (from Layout.mask), the gradients (sparcl's own backward kernels)
against PyTorch's autograd of that same float64 computation.  Skipped when
torch is not installed."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import sparcl  # noqa: E402
import sparcl.conventions  # noqa: E402
import sparcl.torch as st  # noqa: E402


@pytest.fixture(scope="module")
def ctx():
    c = sparcl.Context()
    yield c
    st.clear_plan_cache()
    c.close()


def layout_mask(layout, q_heads):
    """[heads or 1, q_len, kv_len] bool tensor of the layout's attended pairs."""
    masks = [layout.mask(h) for h in range(layout.heads)]
    m = torch.from_numpy(np.stack(masks))
    assert m.shape[0] in (1, q_heads)
    return m


def causal_mask(q_len, kv_len):
    i = torch.arange(q_len)[:, None]
    j = torch.arange(kv_len)[None, :]
    return (j <= i + (kv_len - q_len))[None]


def reference(q, k, v, mask, scale=None):
    """float64 SDPA on [B, H, S, D] with GQA expanded by repeat_interleave
    (query head h reads KV head h // group); mask [1 or H, S, T] bool."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def reference_lse(q, k, mask, scale):
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    s = (q @ k.transpose(-1, -2)) * scale
    return s.masked_fill(~mask, float("-inf")).logsumexp(dim=-1)


def make_qkv(b, hq, hk, sq, sk, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, sq, d, generator=g)
    k = torch.randn(b, hk, sk, d, generator=g)
    v = torch.randn(b, hk, sk, d, generator=g)
    return [t.to(dtype) for t in (q, k, v)]


def run_both(ctx, q, k, v, layout, mask, *, causal=False, scale=None,
             tensor_layout="BHSD", seed=1):
    """sparcl's out and grads and the float64 reference's, all in BHSD."""
    qs, ks, vs = (t.clone() for t in (q, k, v))
    if tensor_layout == "BSHD":
        qs, ks, vs = (t.transpose(1, 2).contiguous() for t in (qs, ks, vs))
    for t in (qs, ks, vs):
        t.requires_grad_()
    out = st.attention(qs, ks, vs, layout, causal=causal, scale=scale,
                       tensor_layout=tensor_layout, ctx=ctx)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(q.dtype)
    grads = torch.autograd.grad(out, (qs, ks, vs), dout)
    if tensor_layout == "BSHD":
        out = out.transpose(1, 2)
        dout = dout.transpose(1, 2)
        grads = tuple(g.transpose(1, 2) for g in grads)

    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = reference(q64, k64, v64, mask, scale)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    return out.detach(), grads, ref.detach(), ref_grads


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


# (batch, q_heads, kv_heads, q_len, kv_len, head_dim, window left, right)
SHAPES = [
    (1, 1, 1, 1, 1, 72, 0, 0),
    (2, 2, 2, 17, 17, 100, 4, 0),
    (1, 4, 2, 113, 113, 72, 31, 0),  # GQA
    (2, 4, 1, 17, 17, 32, 5, 3),     # MQA, two-sided window
    (1, 2, 2, 17, 113, 72, 40, 0),   # q_len < kv_len (bottom-right aligned)
]


@pytest.mark.parametrize("tensor_layout", ["BHSD", "BSHD"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_window_forward_and_grads_match_sdpa(ctx, shape, tensor_layout):
    b, hq, hk, sq, sk, d, left, right = shape
    layout = sparcl.Layout.window(ctx, sq, sk, left=left, right=right, block=16)
    mask = layout_mask(layout, hq)
    q, k, v = make_qkv(b, hq, hk, sq, sk, d)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, layout, mask,
                                          tensor_layout=tensor_layout)
    assert out.shape == (b, hq, sq, d) and out.dtype == torch.float32
    assert max_diff(out, ref) < 1e-5
    for name, g, r in zip("qkv", grads, ref_grads):
        assert g.shape == r.shape, name
        assert max_diff(g, r) < 3e-5, name


@pytest.mark.parametrize("shape", [(1, 2, 2, 17, 17, 72), (2, 4, 2, 113, 113, 100)])
def test_causal_flag_and_dense_match_sdpa(ctx, shape):
    b, hq, hk, sq, sk, d = shape
    q, k, v = make_qkv(b, hq, hk, sq, sk, d, seed=2)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, None, causal_mask(sq, sk), causal=True)
    assert max_diff(out, ref) < 1e-5
    assert max(max_diff(g, r) for g, r in zip(grads, ref_grads)) < 3e-5
    full = torch.ones(1, sq, sk, dtype=torch.bool)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, None, full)
    assert max_diff(out, ref) < 1e-5
    assert max(max_diff(g, r) for g, r in zip(grads, ref_grads)) < 3e-5


def test_window_and_causal_flag_intersect(ctx):
    # A two-sided window with causal=True keeps only the past half.
    layout = sparcl.Layout.window(ctx, 17, 17, left=3, right=3, block=16)
    mask = layout_mask(layout, 2) & causal_mask(17, 17)
    q, k, v = make_qkv(1, 2, 2, 17, 17, 32, seed=3)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, layout, mask, causal=True)
    assert max_diff(out, ref) < 1e-5
    assert max(max_diff(g, r) for g, r in zip(grads, ref_grads)) < 3e-5


def test_per_head_layout(ctx):
    # One window per query head (heads=4) differs from one shared pattern.
    q, k, v = make_qkv(1, 4, 2, 17, 17, 32, seed=4)
    layout = sparcl.conventions.sliding_window(ctx, 17, 6, heads=4, block=8)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, layout, layout_mask(layout, 4))
    assert max_diff(out, ref) < 1e-5
    assert max(max_diff(g, r) for g, r in zip(grads, ref_grads)) < 3e-5


def test_scale_and_lse(ctx):
    layout = sparcl.Layout.window(ctx, 17, 17, left=7, block=16)
    mask = layout_mask(layout, 2)
    q, k, v = make_qkv(2, 2, 2, 17, 17, 72, seed=5)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, layout, mask, scale=0.3)
    assert max_diff(out, ref) < 1e-5
    assert max(max_diff(g, r) for g, r in zip(grads, ref_grads)) < 3e-5
    for tensor_layout in ("BHSD", "BSHD"):
        qq = q if tensor_layout == "BHSD" else q.transpose(1, 2)
        kk = k if tensor_layout == "BHSD" else k.transpose(1, 2)
        vv = v if tensor_layout == "BHSD" else v.transpose(1, 2)
        out2, lse = st.attention(qq, kk, vv, layout, scale=0.3, ctx=ctx,
                                 tensor_layout=tensor_layout, return_lse=True)
        assert lse.shape == (2, 2, 17) and lse.dtype == torch.float32
        assert not lse.requires_grad
        want = reference_lse(q.double(), k.double(), mask, 0.3)
        assert max_diff(lse, want) < 1e-5


def test_rows_without_keys_give_zero_like_sdpa(ctx):
    # Causal with q_len > kv_len: the first q_len - kv_len rows attend
    # nothing; sparcl and SDPA (boolean mask) both give 0 there.
    q, k, v = make_qkv(1, 1, 1, 17, 5, 32, seed=6)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, None, causal_mask(17, 5), causal=True)
    assert out[0, 0, :12].abs().max().item() == 0.0
    assert max_diff(out, ref) < 1e-5
    assert grads[0][0, 0, :12].abs().max().item() == 0.0
    assert max(max_diff(g, r) for g, r in zip(grads, ref_grads)) < 3e-5


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
@pytest.mark.parametrize("tensor_layout", ["BHSD", "BSHD"])
def test_half_precision(ctx, dtype, tol, tensor_layout):
    layout = sparcl.Layout.window(ctx, 113, 113, left=20, block=16)
    mask = layout_mask(layout, 4)
    q, k, v = make_qkv(1, 4, 2, 113, 113, 72, dtype=dtype, seed=7)
    out, grads, ref, ref_grads = run_both(ctx, q, k, v, layout, mask,
                                          tensor_layout=tensor_layout)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert max_diff(out, ref) < tol
    for name, g, r in zip("qkv", grads, ref_grads):
        # Relative to the gradient's size: half storage of dq/dk/dv.
        assert max_diff(g, r) < tol * max(1.0, r.abs().max().item()), name


def test_non_contiguous_bhsd_input(ctx):
    layout = sparcl.Layout.window(ctx, 17, 17, left=4, block=16)
    q, k, v = make_qkv(1, 2, 2, 17, 17, 32, seed=8)
    wide = torch.randn(1, 2, 17, 64)
    q_view = wide[..., :32]  # seq stride 64: copied, not misread
    q_view.copy_(q)
    assert not q_view.is_contiguous()
    out = st.attention(q_view, k, v, layout, ctx=ctx)
    ref = reference(q.double(), k.double(), v.double(), layout_mask(layout, 2))
    assert max_diff(out, ref) < 1e-5


def test_plan_cache_reuses_and_evicts(ctx):
    st.clear_plan_cache()
    old = st.plan_cache_size()
    try:
        layout = sparcl.Layout.window(ctx, 17, 17, left=4, block=16)
        q, k, v = make_qkv(1, 2, 2, 17, 17, 32, seed=9)
        q.requires_grad_()
        for _ in range(3):
            st.attention(q, k, v, layout, ctx=ctx)
        assert len(st._plans) == 1
        st.attention(q, k, v, layout, ctx=ctx, scale=0.5)
        st.attention(q, k, v, None, ctx=ctx)
        assert len(st._plans) == 3
        # A forward whose plan is evicted before its backward still works.
        out = st.attention(q, k, v, layout, ctx=ctx)
        st.set_plan_cache_size(0)
        assert len(st._plans) == 0
        (g,) = torch.autograd.grad(out.sum(), (q,))
        q64 = q.detach().double().requires_grad_()
        ref = reference(q64, k.double(), v.double(), layout_mask(layout, 2))
        (rg,) = torch.autograd.grad(ref.sum(), (q64,))
        assert max_diff(g, rg) < 3e-5
        st.set_plan_cache_size(2)
        for s in (0.1, 0.2, 0.3):
            st.attention(q, k, v, layout, ctx=ctx, scale=s)
        assert len(st._plans) == 2
        with pytest.raises(ValueError):
            st.set_plan_cache_size(-1)
    finally:
        st.set_plan_cache_size(old)
        st.clear_plan_cache()


def test_default_context_is_created_once():
    a = st.default_context()
    assert st.default_context() is a
    q, k, v = make_qkv(1, 1, 1, 17, 17, 32, seed=10)
    ref = reference(q.double(), k.double(), v.double(), causal_mask(17, 17))
    assert max_diff(st.attention(q, k, v, causal=True), ref) < 1e-5


def test_bad_inputs_raise_clear_errors(ctx):
    q, k, v = make_qkv(1, 4, 2, 17, 17, 32)
    layout = sparcl.Layout.window(ctx, 17, 17, left=4, block=16)
    meta = torch.empty(1, 4, 17, 32, device="meta")
    with pytest.raises(ValueError, match=r"q is on device meta.*CPU"):
        st.attention(meta, k, v, ctx=ctx)
    with pytest.raises(ValueError, match=r"k must be 4-D"):
        st.attention(q, k[0], v, ctx=ctx)
    with pytest.raises(ValueError, match=r"k has 3 heads"):
        st.attention(q, k[:, :1].expand(1, 3, 17, 32), v[:, :1].expand(1, 3, 17, 32), ctx=ctx)
    with pytest.raises(ValueError, match=r"k has head_dim 16"):
        st.attention(q, k[..., :16], v[..., :16], ctx=ctx)
    with pytest.raises(ValueError, match=r"v must have k's shape"):
        st.attention(q, k, v[:, :, :9], ctx=ctx)
    with pytest.raises(ValueError, match=r"k has batch 2"):
        st.attention(q, k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1), ctx=ctx)
    with pytest.raises(ValueError, match=r"one dtype"):
        st.attention(q, k.half(), v, ctx=ctx)
    with pytest.raises(ValueError, match=r"q has dtype torch.float64"):
        st.attention(q.double(), k.double(), v.double(), ctx=ctx)
    with pytest.raises(ValueError, match=r"tensor_layout"):
        st.attention(q, k, v, ctx=ctx, tensor_layout="SBHD")
    with pytest.raises(ValueError, match=r"layout is 17 x 17"):
        st.attention(q[:, :, :9], k, v, layout, ctx=ctx)
    per_head3 = sparcl.Layout.window(ctx, 17, 17, left=4, heads=3, block=16)
    with pytest.raises(ValueError, match=r"layout has 3 heads"):
        st.attention(q, k, v, per_head3, ctx=ctx)
    with pytest.raises(TypeError, match=r"v must be a torch.Tensor"):
        st.attention(q, k, v.numpy(), ctx=ctx)


def test_import_sparcl_does_not_import_torch():
    code = "import sys, sparcl; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_inplace_change_after_forward_is_detected(ctx):
    # q is handed to sparcl without a copy and saved for backward: PyTorch's
    # version counter must refuse a backward after q changed in place.
    q, k, v = make_qkv(1, 2, 2, 17, 17, 32, seed=11)
    q.requires_grad_()
    qq = q * 1.0
    out = st.attention(qq, k, v, causal=True, ctx=ctx)
    with torch.no_grad():
        qq.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_double_backward_is_refused(ctx):
    q, k, v = make_qkv(1, 2, 2, 17, 17, 32, seed=12)
    q.requires_grad_()
    out = st.attention(q, k, v, causal=True, ctx=ctx)
    (g,) = torch.autograd.grad(out.sum(), (q,), create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_closed_context_is_refused_and_cache_recovers():
    q, k, v = make_qkv(1, 1, 1, 17, 17, 32, seed=13)
    ref = reference(q.double(), k.double(), v.double(), causal_mask(17, 17))
    c = sparcl.Context()
    assert max_diff(st.attention(q, k, v, causal=True, ctx=c), ref) < 1e-5
    c.close()  # closes the cached plan too
    with pytest.raises(ValueError, match="closed"):
        st.attention(q, k, v, causal=True, ctx=c)
    with sparcl.Context() as c2:
        assert max_diff(st.attention(q, k, v, causal=True, ctx=c2), ref) < 1e-5
        st.clear_plan_cache()
