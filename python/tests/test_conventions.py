"""sparcl.conventions: each mapped layout attends exactly the keys the model
library's own rule selects (rules written out here from transformers'
code, independently of sparcl's window formula)."""

import numpy as np
import pytest

import sparcl
from sparcl import conventions


@pytest.fixture(scope="module")
def ctx():
    with sparcl.Context() as c:
        yield c


def hf_sliding_rule(q_len, kv_len, window):
    """transformers' masking_utils: causal_mask_function (kv <= q) and
    sliding_window_overlay (kv > q - W), queries being the last q_len of the
    kv_len positions (a KV cache holds the earlier ones)."""
    q = np.arange(q_len)[:, None] + (kv_len - q_len)
    kv = np.arange(kv_len)[None, :]
    return (kv > q - window) & (kv <= q)


def gpt_neo_local_rule(n, window):
    """GPT-Neo's local bias: tril(ones) xor tril(ones, -window_size)."""
    ones = np.ones((n, n), dtype=bool)
    return np.tril(ones) ^ np.tril(ones, -window)


def longformer_rule(n, attention_window):
    """Longformer's sliding band: |kv - q| <= attention_window // 2."""
    half = attention_window // 2
    q = np.arange(n)[:, None]
    kv = np.arange(n)[None, :]
    return np.abs(kv - q) <= half


@pytest.mark.parametrize(
    "q_len,kv_len,window",
    [(1, 1, 1), (17, 17, 1), (17, 17, 4), (17, 17, 17), (17, 17, 40), (113, 113, 32),
     (1, 113, 32), (17, 113, 9)],
)
def test_sliding_window_matches_hf_rule(ctx, q_len, kv_len, window):
    layout = conventions.sliding_window(ctx, q_len, window, kv_len=kv_len, block=16)
    want = hf_sliding_rule(q_len, kv_len, window)
    np.testing.assert_array_equal(layout.mask(), want)
    # W keys per row once the window is full: the current token included.
    assert want[-1].sum() == min(window, kv_len)


def test_sliding_window_extents_is_w_minus_one():
    assert conventions.sliding_window_extents(1) == (0, 0)
    assert conventions.sliding_window_extents(4096) == (4095, 0)


def test_passing_w_as_left_attends_one_key_too_many(ctx):
    # The mistake the helper exists to prevent: the row attends W + 1 keys.
    wrong = sparcl.Layout.window(ctx, 33, 33, left=8, right=0, block=16).mask()
    right = conventions.sliding_window(ctx, 33, 8, block=16).mask()
    want = hf_sliding_rule(33, 33, 8)
    np.testing.assert_array_equal(right, want)
    assert (wrong.sum(axis=1)[8:] == want.sum(axis=1)[8:] + 1).all()


def test_sliding_window_per_head_layout(ctx):
    layout = conventions.sliding_window(ctx, 17, 5, heads=3, block=8)
    assert layout.heads == 3
    for h in range(3):
        np.testing.assert_array_equal(layout.mask(h), hf_sliding_rule(17, 17, 5))


@pytest.mark.parametrize("n,window", [(1, 1), (17, 3), (113, 16)])
def test_gpt_neo_local_matches_its_bias(ctx, n, window):
    layout = conventions.gpt_neo_local(ctx, n, window, block=16)
    np.testing.assert_array_equal(layout.mask(), gpt_neo_local_rule(n, window))
    assert conventions.GPT_NEO_SCALE == 1.0


@pytest.mark.parametrize("n,attention_window", [(1, 2), (17, 4), (113, 32), (17, 64)])
def test_longformer_window_matches_its_band(ctx, n, attention_window):
    layout = conventions.longformer_window(ctx, n, attention_window, block=16)
    want = longformer_rule(n, attention_window)
    np.testing.assert_array_equal(layout.mask(), want)
    if n > attention_window:
        assert want[n // 2].sum() == attention_window + 1


def test_longformer_refuses_odd_window():
    with pytest.raises(ValueError, match="even"):
        conventions.longformer_extents(7)


@pytest.mark.parametrize("bad", [0, -3])
def test_windows_must_be_positive(bad):
    with pytest.raises(ValueError, match="window"):
        conventions.sliding_window_extents(bad)
    with pytest.raises(ValueError, match="attention_window"):
        conventions.longformer_extents(bad)


def test_window_must_be_int():
    with pytest.raises(TypeError, match="window"):
        conventions.sliding_window_extents(4.0)


def test_kv_head_for_matches_repeat_kv():
    # repeat_kv repeats each KV head n_rep times consecutively.
    q_heads, kv_heads = 12, 4
    repeated = np.repeat(np.arange(kv_heads), q_heads // kv_heads)
    got = [conventions.kv_head_for(h, q_heads, kv_heads) for h in range(q_heads)]
    assert got == list(repeated)
    assert conventions.kv_head_for(5, 8, 1) == 0
    assert conventions.kv_head_for(5, 8, 8) == 5
    with pytest.raises(ValueError, match="divide"):
        conventions.kv_head_for(0, 12, 5)
    with pytest.raises(ValueError, match="q_head"):
        conventions.kv_head_for(12, 12, 4)
