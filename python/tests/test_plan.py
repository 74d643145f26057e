"""Plan.forward / Plan.backward on NumPy arrays against two float64 oracles:
sparcl's own reference (sparcl.reference_forward/backward) and the NumPy
masked softmax written in conftest.py (from Layout.mask)."""

import numpy as np
import pytest

import sparcl
from conftest import assert_close, full_mask, np_backward, np_forward, quiet_context, randn

# (batch, q_heads, kv_heads, q_len, kv_len, head_dim, layout kind, causal flag)
CASES = [
    (1, 4, 2, 1, 113, 72, "window", False),  # one query row, GQA
    (2, 2, 1, 17, 17, 100, "causal", False),  # MQA, batch 2
    (1, 2, 2, 113, 113, 72, "window", True),  # window plus the causal flag
    (1, 4, 2, 17, 40, 100, None, True),  # dense, causal flag, q_len < kv_len
    (1, 2, 2, 40, 17, 72, "streaming", False),  # q_len > kv_len: rows with no key
]


def make_layout(ctx, kind, q_len, kv_len):
    if kind is None:
        return None
    if kind == "window":
        return sparcl.Layout.window(ctx, q_len, kv_len, left=9, right=2, block=16)
    if kind == "causal":
        return sparcl.Layout.causal(ctx, q_len, kv_len, block=8)
    if kind == "streaming":
        return sparcl.Layout.streaming(ctx, q_len, kv_len, sink=2, local=5, block=16)
    raise AssertionError(kind)


def inputs(rng, b, hq, hk, sq, sk, d):
    return randn(rng, b, hq, sq, d), randn(rng, b, hk, sk, d), randn(rng, b, hk, sk, d)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b%d-h%d/%d-q%d-k%d-d%d-%s%s" % (
    c[0], c[1], c[2], c[3], c[4], c[5], c[6], "-causal" if c[7] else ""))
def test_forward_and_backward_f32(ctx, rng, case):
    b, hq, hk, sq, sk, d, kind, causal = case
    layout = make_layout(ctx, kind, sq, sk)
    kw = dict(batch=b, q_heads=hq, kv_heads=hk, q_len=sq, kv_len=sk, head_dim=d, layout=layout,
              causal=causal)
    q, k, v = inputs(rng, b, hq, hk, sq, sk, d)
    with sparcl.Plan(ctx, **kw) as plan:
        out, lse = plan.forward(q, k, v)
        assert out.dtype == np.float32 and out.shape == q.shape
        assert lse.dtype == np.float32 and lse.shape == (b, hq, sq)
        ref_out, ref_lse = sparcl.reference_forward(ctx, q, k, v, **kw)
        mask = full_mask(layout, hq, sq, sk, causal)
        np_out, np_lse = np_forward(q, k, v, mask)
        # the two oracles agree with each other to double precision
        assert_close(ref_out, np_out, 1e-10, "reference vs numpy out")
        assert_close(ref_lse, np_lse, 1e-10, "reference vs numpy lse")
        assert_close(out, ref_out, 2e-5, "out")
        assert_close(lse, ref_lse, 2e-5, "lse")
        if kind == "streaming":  # q_len > kv_len: the first rows attend nothing
            assert not mask[0, 0].any() and np.isneginf(lse[0, 0, 0]) and (out[0, 0, 0] == 0).all()

        dout = randn(rng, b, hq, sq, d)
        dq, dk, dv = plan.backward(q, k, v, out, lse, dout)
        rq, rk, rv = sparcl.reference_backward(ctx, q, k, v, dout, **kw)
        nq, nk, nv = np_backward(q, k, v, mask, dout)
        for name, a, r, n in (("dq", dq, rq, nq), ("dk", dk, rk, nk), ("dv", dv, rv, nv)):
            assert a.dtype == np.float32
            assert_close(r, n, 1e-9, "reference vs numpy " + name)
            assert_close(a, r, 5e-5, name)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_storage(ctx, rng, dtype):
    b, hq, hk, sq, sk, d = 1, 2, 2, 17, 113, 72
    layout = sparcl.Layout.causal(ctx, sq, sk, block=16)
    kw = dict(batch=b, q_heads=hq, kv_heads=hk, q_len=sq, kv_len=sk, head_dim=d, layout=layout)
    q32, k32, v32 = inputs(rng, b, hq, hk, sq, sk, d)
    if dtype == "float16":
        to, back, tol = sparcl.to_float16, sparcl.from_float16, 2e-3
        assert sparcl.to_float16(q32).dtype == np.float16
    else:
        to, back, tol = sparcl.to_bfloat16, sparcl.from_bfloat16, 1.6e-2
        assert sparcl.to_bfloat16(q32).dtype == np.uint16
    q, k, v = to(q32), to(k32), to(v32)
    qf, kf, vf = back(q), back(k), back(v)  # exact: what the kernels read
    with sparcl.Plan(ctx, dtype=dtype, **kw) as plan:
        assert plan.dtype == dtype
        out, lse = plan.forward(q, k, v)
        assert out.dtype == q.dtype and lse.dtype == np.float32
        ref_out, ref_lse = sparcl.reference_forward(ctx, qf, kf, vf, **kw)
        assert_close(back(out), ref_out, tol, "out")
        assert_close(lse, ref_lse, 2e-5, "lse")  # lse stays fp32
        dout = to(randn(rng, b, hq, sq, d))
        dq, dk, dv = plan.backward(q, k, v, out, lse, dout)
        assert dq.dtype == dk.dtype == dv.dtype == q.dtype
        # the backward reads the rounded out: compare with the NumPy backward from it
        mask = full_mask(layout, hq, sq, sk)
        rq, rk, rv = sparcl.reference_backward(ctx, qf, kf, vf, back(dout), **kw)
        for name, a, r in (("dq", dq, rq), ("dk", dk, rk), ("dv", dv, rv)):
            assert_close(back(a), r, 4 * tol, name)
        assert mask.any()


def test_numpy_dtype_objects_select_the_dtype(ctx, rng):
    plan = sparcl.Plan(ctx, q_len=17, head_dim=72, dtype=np.float16)
    assert plan.dtype == "float16"
    assert sparcl.Plan(ctx, q_len=17, head_dim=72, dtype="bf16").dtype == "bfloat16"


def test_non_contiguous_inputs_are_copied(ctx, rng):
    sq, d = 17, 72
    plan = sparcl.Plan(ctx, q_len=sq, head_dim=d, q_heads=2, causal=True)
    # [B, S, H, D] storage viewed as [B, H, S, D]: not C-contiguous
    q_bshd, k_bshd, v_bshd = (randn(rng, 1, sq, 2, d) for _ in range(3))
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q_bshd, k_bshd, v_bshd))
    assert not q.flags.c_contiguous
    out, lse = plan.forward(q, k, v)
    out2, lse2 = plan.forward(*(np.ascontiguousarray(x) for x in (q, k, v)))
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(lse, lse2)
    dout = randn(rng, 1, 2, sq, d)[:, :, :, :]
    g1 = plan.backward(q, k, v, out, lse, dout[:, ::-1][:, ::-1])
    g2 = plan.backward(*(np.ascontiguousarray(x) for x in (q, k, v)), out, lse, dout)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


def test_scale_and_call(ctx, rng):
    q, k, v = inputs(rng, 1, 1, 1, 17, 17, 72)
    plan = sparcl.Plan(ctx, q_len=17, head_dim=72, scale=0.3)
    out, lse = plan(q, k, v)
    ref, ref_lse = sparcl.reference_forward(None, q, k, v, scale=0.3)
    np_out, _ = np_forward(q, k, v, full_mask(None, 1, 17, 17), scale=float(np.float32(0.3)))
    assert_close(ref, np_out, 1e-10, "reference vs numpy")
    assert_close(out, ref, 2e-5, "out")


def test_sparsemax(ctx, rng):
    b, hq, sq, d = 1, 2, 17, 72
    layout = sparcl.Layout.window(ctx, sq, left=8, block=8)
    kw = dict(q_heads=hq, q_len=sq, head_dim=d, layout=layout, normalization="sparsemax")
    q, k, v = (3 * x for x in inputs(rng, b, hq, hq, sq, sq, d))
    plan = sparcl.Plan(ctx, **kw)
    out, tau = plan.forward(q, k, v)
    ref, ref_tau = sparcl.reference_forward(ctx, q, k, v, **kw)
    assert_close(out, ref, 1e-4, "out")
    assert_close(tau, ref_tau, 1e-4, "tau")
    # sparsemax weights are exactly 0 below tau: some rows ignore some attended keys
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k) / np.sqrt(d)
    mask = full_mask(layout, hq, sq, sq)
    assert ((s - ref_tau[..., None] <= 0) & mask[None]).any()
    # (the sparse normalizations' backward goes through the same Plan.backward as
    # softmax's; it is left out here to save two kernel compiles)


def test_entmax_keywords(ctx, rng):
    # "entmax" without alpha is 1.5-entmax; alpha 2 is sparsemax (the reference
    # builds no program, so this costs no compile)
    q, k, v = inputs(rng, 1, 1, 1, 17, 17, 72)
    ent, _ = sparcl.reference_forward(ctx, q, k, v, normalization="entmax")
    ent15, _ = sparcl.reference_forward(ctx, q, k, v, normalization="entmax", alpha=1.5)
    e15, _ = sparcl.reference_forward(ctx, q, k, v, normalization="entmax15")
    sm, _ = sparcl.reference_forward(ctx, q, k, v, normalization="sparsemax")
    sm2, _ = sparcl.reference_forward(ctx, q, k, v, normalization="entmax", alpha=2.0)
    soft, _ = sparcl.reference_forward(ctx, q, k, v)
    np.testing.assert_allclose(ent, e15, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ent15, e15, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sm, sm2, rtol=0, atol=1e-6)
    assert np.abs(sm - soft).max() > 1e-3 and np.abs(ent - soft).max() > 1e-3
    with pytest.raises(ValueError, match="normalization"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, normalization="relu")


def test_params_override_and_origin(ctx, rng):
    # two kv heads: the backward's defaults are then those of the other tests
    # (its SPLIT follows batch x kv_heads), so no other program is built
    q, k, v = inputs(rng, 1, 2, 2, 17, 17, 72)
    default = sparcl.Plan(ctx, q_len=17, head_dim=72, q_heads=2, causal=True)
    assert default.params_source == "default"  # the test context reads no database
    assert "default" in default.params_origin
    assert set(default.params) >= {"BLOCK_M", "BLOCK_N"}
    # the same values given explicitly: source "override", the same program
    plan = sparcl.Plan(ctx, q_len=17, head_dim=72, q_heads=2, causal=True,
                       params=dict(default.params))
    assert plan.params_source == "override"
    assert plan.params == default.params
    a, _ = default.forward(q, k, v)
    b, _ = plan.forward(q, k, v)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(sparcl.InvalidArgument, match="BLOCK_M"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, params={"BLOCK_M": 3})
    bwd_params, bwd_source = plan.backward_params()
    assert "BLOCK_N" in bwd_params and bwd_source == "default"
    assert plan.device_bytes > 0


def test_plan_keeps_its_context_alive(rng):
    ctx = quiet_context()
    plan = sparcl.Plan(ctx, q_len=17, head_dim=72)
    del ctx
    import gc
    gc.collect()
    q, k, v = inputs(rng, 1, 1, 1, 17, 17, 72)
    out, _ = plan.forward(q, k, v)
    assert np.isfinite(out).all()
    plan.close()


def test_ml_dtypes_bfloat16_arrays(ctx, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is optional")
    q32, k32, v32 = inputs(rng, 1, 2, 2, 17, 113, 72)
    plan = sparcl.Plan(ctx, q_heads=2, q_len=17, kv_len=113, head_dim=72, dtype="bfloat16")
    bits = [sparcl.to_bfloat16(x) for x in (q32, k32, v32)]
    out_bits, lse_bits = plan.forward(*bits)
    out, lse = plan.forward(*(b.view(ml_dtypes.bfloat16) for b in bits))
    assert out.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(out.view(np.uint16), out_bits)
    np.testing.assert_array_equal(lse, lse_bits)


def test_previous_plan_for_a_new_length(ctx, rng):
    # A plan for 17 more tokens made from the first one (desc.previous) gives
    # the result of a plan made without it, bit for bit, and the oracle's.
    first = sparcl.Plan(ctx, q_len=300, head_dim=72, q_heads=2, causal=True,
                        layout=sparcl.Layout.window(ctx, 300, 300, left=40, right=0, block=16))
    layout = sparcl.Layout.window(ctx, 317, 317, left=40, right=0, block=16)
    kw = dict(q_len=317, head_dim=72, q_heads=2, causal=True, layout=layout)
    grown = sparcl.Plan(ctx, previous=first, **kw)
    fresh = sparcl.Plan(ctx, **kw)
    q, k, v = inputs(rng, 1, 2, 2, 317, 317, 72)
    out, _ = grown.forward(q, k, v)
    want, _ = fresh.forward(q, k, v)
    assert np.array_equal(out, want)
    ref, _ = np_forward(q, k, v, full_mask(layout, 2, 317, 317, causal=True))
    assert_close(out, ref, 2e-5, "out")
    with pytest.raises(TypeError, match="previous must be a sparcl.Plan"):
        sparcl.Plan(ctx, previous=layout, **kw)
