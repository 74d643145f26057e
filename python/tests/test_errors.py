"""Bad input raises clear exceptions: Python-side checks name the argument,
sparcl's own refusals carry its status and message."""

import numpy as np
import pytest

import sparcl
from conftest import quiet_context, randn

SQ, D = 17, 72


@pytest.fixture(scope="module")
def plan(ctx):
    with sparcl.Plan(ctx, q_heads=2, kv_heads=1, q_len=SQ, kv_len=20, head_dim=D) as p:
        yield p


@pytest.fixture
def qkv(rng):
    return randn(rng, 1, 2, SQ, D), randn(rng, 1, 1, 20, D), randn(rng, 1, 1, 20, D)


def test_exception_hierarchy():
    assert issubclass(sparcl.InvalidArgument, sparcl.SparclError)
    assert issubclass(sparcl.InvalidArgument, ValueError)
    assert issubclass(sparcl.NotSupported, sparcl.SparclError)
    assert not issubclass(sparcl.NotSupported, ValueError)


def test_float64_is_refused_not_cast(plan, qkv):
    q, k, v = qkv
    with pytest.raises(TypeError, match=r"^q must be a float32 array .* got float64"):
        plan.forward(q.astype(np.float64), k, v)
    with pytest.raises(TypeError, match=r"^v must be a float32 array"):
        plan.forward(q, k, v.astype(np.float16))
    with pytest.raises(TypeError, match=r"^k must be a numpy array, got list"):
        plan.forward(q, k.tolist(), v)


def test_half_plans_name_their_dtype(ctx, qkv):
    q, k, v = qkv
    p = sparcl.Plan(ctx, q_len=SQ, kv_len=20, head_dim=D, q_heads=2, kv_heads=1, dtype="float16")
    with pytest.raises(TypeError, match=r"q must be a float16 array for this plan's dtype float16"):
        p.forward(q, k, v)
    p = sparcl.Plan(ctx, q_len=SQ, kv_len=20, head_dim=D, q_heads=2, kv_heads=1, dtype="bfloat16")
    with pytest.raises(TypeError, match=r"uint16 \(bfloat16 bit patterns\)"):
        p.forward(q.view(np.int32).astype(np.int16), k, v)


def test_shape_mismatch_names_argument_and_shapes(plan, qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match=r"^v must have shape \[1, 1, 20, 72\], got \[1, 1, 19, 72\]"):
        plan.forward(q, k, v[:, :, :19])
    with pytest.raises(ValueError, match=r"^q must have shape \[1, 2, 17, 72\], got \[2, 17, 72\]"):
        plan.forward(q[0], k, v)
    out, lse = plan.forward(q, k, v)
    dout = np.zeros_like(out)
    with pytest.raises(ValueError, match=r"^lse must have shape \[1, 2, 17\]"):
        plan.backward(q, k, v, out, lse[:, :1], dout)
    with pytest.raises(TypeError, match=r"^lse must be a float32 array"):
        plan.backward(q, k, v, out, lse.astype(np.float64), dout)
    with pytest.raises(TypeError, match=r"^dout must be a float32 array"):
        plan.backward(q, k, v, out, lse, dout.astype(np.float64))
    with pytest.raises(TypeError, match=r"lse is required"):
        plan.backward(q, k, v, out, None, dout)


def test_bad_layout_arguments_carry_sparcls_message(ctx):
    with pytest.raises(sparcl.InvalidArgument, match="left -1") as e:
        sparcl.Layout.window(ctx, 17, left=-1)
    assert e.value.status == -1 and e.value.status_name == "invalid argument"
    assert "left -1" in e.value.message and "invalid argument" in str(e.value)
    assert ctx.errmsg == e.value.message
    with pytest.raises(sparcl.InvalidArgument, match="block"):
        sparcl.Layout.causal(ctx, 17, block=0)
    with pytest.raises(sparcl.InvalidArgument, match="q_len"):
        sparcl.Layout.dense(ctx, 0, 5)
    with pytest.raises(sparcl.InvalidArgument):  # a mask with no block set
        sparcl.Layout.block_mask(ctx, 17, 17, np.zeros((1, 1, 1), dtype=bool), block=64)
    with pytest.raises(sparcl.InvalidArgument, match="stride"):
        sparcl.Layout.strided(ctx, 17, stride=0)
    # without a context, the message comes from the calling thread's slot
    with pytest.raises(sparcl.InvalidArgument, match="right -3"):
        sparcl.Layout.window(None, 17, left=1, right=-3)


def test_python_side_layout_checks(ctx):
    with pytest.raises(TypeError, match="q_len must be an int"):
        sparcl.Layout.causal(ctx, 17.5)
    with pytest.raises(TypeError, match="left must be an int"):
        sparcl.Layout.window(ctx, 17, left="3")
    with pytest.raises(TypeError, match="ctx must be a sparcl.Context"):
        sparcl.Layout.causal("ctx", 17)
    with pytest.raises(ValueError, match=r"mask must have shape .* = \[1, 1, 1\], got \[1, 2, 1\]"):
        sparcl.Layout.block_mask(ctx, 17, 17, np.ones((1, 2, 1), dtype=bool), block=64)
    with pytest.raises(TypeError, match="mask must be a bool or uint8"):
        sparcl.Layout.block_mask(ctx, 17, 17, np.ones((1, 1, 1), dtype=np.float32), block=64)
    with pytest.raises(ValueError, match="dilation needs one value per head"):
        sparcl.Layout.dilated_window(ctx, 17, left=2, dilation=[1, 2], heads=3)
    with pytest.raises(ValueError, match="at most 8"):
        a = sparcl.Layout.causal(ctx, 17)
        sparcl.Layout.union(*([a] * 9))
    with pytest.raises(TypeError, match="union takes sparcl.Layout"):
        sparcl.Layout.union(a, "b")
    with pytest.raises(TypeError, match="constructors"):
        sparcl.Layout()


def test_bad_plan_arguments(ctx):
    with pytest.raises(sparcl.InvalidArgument, match="head_dim 300"):
        sparcl.Plan(ctx, q_len=17, head_dim=300)
    with pytest.raises(sparcl.InvalidArgument, match="kv_heads"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, q_heads=3, kv_heads=2)
    lay = sparcl.Layout.causal(ctx, 17)
    with pytest.raises(sparcl.InvalidArgument, match="layout"):
        sparcl.Plan(ctx, q_len=18, head_dim=72, layout=lay)
    with pytest.raises(sparcl.NotSupported, match="(?i)favor"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, layout=lay, attention="favor", features=16)
    with pytest.raises(TypeError, match="head_dim must be an int"):
        sparcl.Plan(ctx, q_len=17, head_dim=72.0)
    with pytest.raises(TypeError, match="missing"):
        sparcl.Plan(ctx, q_len=17)
    with pytest.raises(ValueError, match="dtype must be"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, dtype="float64")
    with pytest.raises(TypeError, match="params must be a dict"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, params=[("BLOCK_M", 8)])
    with pytest.raises(sparcl.InvalidArgument, match="identifier|name"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, params={"BLOCK M": 8})
    with pytest.raises(TypeError, match="layout must be a sparcl.Layout"):
        sparcl.Plan(ctx, q_len=17, head_dim=72, layout="causal")
    with pytest.raises(TypeError, match="ctx must be a sparcl.Context"):
        sparcl.Plan(None, q_len=17, head_dim=72)


def test_reference_refuses_non_float32(ctx, qkv):
    q, k, v = qkv
    with pytest.raises(TypeError, match="^q must be a float32 array"):
        sparcl.reference_forward(ctx, q.astype(np.float64), k, v)
    with pytest.raises(ValueError, match="q_len=5 disagrees"):
        sparcl.reference_forward(ctx, q, k, v, q_len=5)


def test_closed_objects_refuse_use(qkv):
    ctx = quiet_context()
    lay = sparcl.Layout.causal(ctx, SQ, 20)
    plan = sparcl.Plan(ctx, q_heads=2, kv_heads=1, q_len=SQ, kv_len=20, head_dim=D, layout=lay)
    lay.close()
    assert lay.closed
    lay.close()  # idempotent
    with pytest.raises(ValueError, match="layout is closed"):
        lay.density()
    with pytest.raises(ValueError, match="layout is closed"):
        sparcl.Plan(ctx, q_len=SQ, kv_len=20, head_dim=D, layout=lay)
    out, _ = plan.forward(*qkv)  # the plan kept what it needed of the layout
    assert np.isfinite(out).all()
    plan.close()
    with pytest.raises(ValueError, match="plan is closed"):
        plan.forward(*qkv)
    with pytest.raises(ValueError, match="plan is closed"):
        plan.params
    # closing the context closes the plans made from it first
    p2 = sparcl.Plan(ctx, q_heads=2, kv_heads=1, q_len=SQ, kv_len=20, head_dim=D)
    other = sparcl.Layout.window(ctx, SQ, left=2)
    ctx.close()
    assert ctx.closed and p2.closed
    assert other.pairs() > 0  # layouts do not need their context in C
    with pytest.raises(ValueError, match="context is closed"):
        ctx.device
    with pytest.raises(ValueError, match="context is closed"):
        sparcl.Plan(ctx, q_len=SQ, head_dim=D)
    with pytest.raises(ValueError, match="context is closed"):
        sparcl.Layout.causal(ctx, SQ)
    with pytest.raises(ValueError, match="closed"):
        with ctx:
            pass
    assert "closed" in repr(ctx) and "closed" in repr(p2) and "closed" in repr(lay)


def test_handles_cannot_be_copied_or_pickled(ctx):
    import copy
    import pickle

    lay = sparcl.Layout.causal(ctx, SQ)
    plan = sparcl.Plan(ctx, q_len=SQ, head_dim=D)
    for obj in (ctx, lay, plan):
        for fn in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be copied or pickled"):
                fn(obj)
    assert lay.pairs() > 0 and not plan.closed
