"""MultiPlan: one call sharded over several contexts (here two contexts on the
same device, which sparcl allows), against the single-device Plan."""

import numpy as np
import pytest

import sparcl
from conftest import assert_close, quiet_context, randn


@pytest.mark.parametrize("mode", ["heads", "queries", "keys"])
def test_sharded_call_matches_one_plan(ctx, rng, mode):
    kw = dict(q_heads=4, kv_heads=2, q_len=113, head_dim=72)
    layout = sparcl.Layout.window(ctx, 113, left=30, block=16)
    q, k, v = randn(rng, 1, 4, 113, 72), randn(rng, 1, 2, 113, 72), randn(rng, 1, 2, 113, 72)
    dout = randn(rng, 1, 4, 113, 72)
    one = sparcl.Plan(ctx, layout=layout, **kw)
    out1, lse1 = one.forward(q, k, v)
    grads1 = one.backward(q, k, v, out1, lse1, dout)
    other = quiet_context()
    with sparcl.MultiPlan([ctx, other], mode, layout=layout, **kw) as multi:
        shards = multi.shards()
        assert len(shards) == 2 and {s["context"] for s in shards} == {0, 1}
        out, lse = multi.forward(q, k, v)
        assert_close(out, out1.astype(np.float64), 2e-5, "out")
        assert_close(lse, lse1.astype(np.float64), 2e-5, "lse")
        # heads: a share of one kv head would build another backward program
        # (its SPLIT default differs); queries and keys cover the backward
        if mode != "heads":
            grads = multi.backward(q, k, v, out, lse, dout)
            for name, a, b in zip(("dq", "dk", "dv"), grads, grads1):
                assert_close(a, b.astype(np.float64), 5e-5, name)
    other.close()


def test_errors(ctx):
    with pytest.raises(ValueError, match="mode must be"):
        sparcl.MultiPlan([ctx], "rows", q_len=17, head_dim=72)
    with pytest.raises(TypeError, match="contexts"):
        sparcl.MultiPlan([], q_len=17, head_dim=72)
    with pytest.raises(sparcl.InvalidArgument, match="repeated|context"):
        sparcl.MultiPlan([ctx, ctx], q_len=17, head_dim=72)
    with pytest.raises(sparcl.NotSupported):
        sparcl.MultiPlan([ctx], q_len=17, head_dim=72, dtype="float16")
    other = quiet_context()
    multi = sparcl.MultiPlan([ctx, other], q_len=17, head_dim=72, q_heads=2)
    other.close()  # closes the plan that uses it
    assert multi.closed
