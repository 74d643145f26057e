"""Every Layout constructor against a NumPy re-statement of its rule (the
definitions in include/sparcl.h, token by token), plus attends(), pairs(),
density() and nnz_blocks() consistency with the mask."""

import numpy as np
import pytest

import sparcl

Q, K, B = 37, 53, 8  # q_len != kv_len exercises bottom-right alignment


def grid(q_len=Q, kv_len=K):
    """pos(i) = i + kv_len - q_len as a column, j as a row."""
    i = np.arange(q_len)[:, None]
    return i + (kv_len - q_len), np.arange(kv_len)[None, :]


def check_layout(layout, expected, block=B):
    """expected: [heads, q_len, kv_len] or [q_len, kv_len] bools."""
    expected = np.asarray(expected, dtype=bool)
    if expected.ndim == 2:
        expected = expected[None]
    heads, q_len, kv_len = expected.shape
    assert (layout.heads, layout.q_len, layout.kv_len) == (heads, q_len, kv_len)
    if block:
        assert layout.block == block
    for h in range(heads):
        got = layout.mask(h)
        assert got.shape == (q_len, kv_len)
        wrong = np.argwhere(got != expected[h])
        assert wrong.size == 0, "head %d: %d pairs differ, first (i, j) = %s" % (
            h, len(wrong), tuple(wrong[0]))
    assert layout.pairs() == int(expected.sum())
    assert layout.density() == pytest.approx(expected.mean(), abs=1e-12)
    # attends() against the mask on a sample of pairs, and out of range
    rng = np.random.default_rng(7)
    for _ in range(200):
        h, i, j = rng.integers(heads), rng.integers(q_len), rng.integers(kv_len)
        assert layout.attends(h, i, j) == bool(expected[h, i, j])
    assert not layout.attends(0, q_len, 0) and not layout.attends(0, 0, -1)
    # a stored block for every block that has an attended pair
    b = layout.block
    nbr, nbc = -(-q_len // b), -(-kv_len // b)
    padded = np.zeros((heads, nbr * b, nbc * b), dtype=bool)
    padded[:, :q_len, :kv_len] = expected
    touched = padded.reshape(heads, nbr, b, nbc, b).any(axis=(2, 4)).sum()
    assert layout.nnz_blocks() >= touched
    return expected


def test_dense(ctx):
    check_layout(sparcl.Layout.dense(ctx, Q, K, block=B), np.ones((Q, K)))


def test_causal(ctx):
    pos, j = grid()
    check_layout(sparcl.Layout.causal(ctx, Q, K, block=B), j <= pos)


def test_causal_more_queries_than_keys(ctx):
    pos, j = grid(53, 37)
    check_layout(sparcl.Layout.causal(ctx, 53, 37, block=B), j <= pos)


def test_kv_len_defaults_to_q_len(ctx):
    lay = sparcl.Layout.causal(ctx, 17, block=4)
    assert lay.kv_len == 17


@pytest.mark.parametrize("left,right", [(0, 0), (5, 0), (3, 7), (100, 2)])
def test_window(ctx, left, right):
    pos, j = grid()
    d = j - pos
    check_layout(sparcl.Layout.window(ctx, Q, K, left=left, right=right, block=B),
                 (d >= -left) & (d <= right))


def test_block_mask(ctx):
    rng = np.random.default_rng(3)
    nbr, nbc = -(-Q // B), -(-K // B)
    m = rng.random((2, nbr, nbc)) < 0.4
    m[0, 0, 0] = m[1, -1, -1] = True
    expected = np.repeat(np.repeat(m, B, axis=1), B, axis=2)[:, :Q, :K]
    check_layout(sparcl.Layout.block_mask(ctx, Q, K, m, block=B), expected)
    # uint8 and a 2-D mask for one head
    one = sparcl.Layout.block_mask(ctx, Q, K, m[0].astype(np.uint8), block=B)
    check_layout(one, expected[0])


def test_dilated_window(ctx):
    pos, j = grid()
    d = j - pos
    dil = [1, 2, 3]
    expected = [(d >= -9) & (d <= 4) & (d % s == 0) for s in dil]
    check_layout(sparcl.Layout.dilated_window(ctx, Q, K, left=9, right=4, dilation=dil,
                                              heads=3, block=B), expected)
    # an int dilation applies to every head
    lay = sparcl.Layout.dilated_window(ctx, Q, K, left=9, right=4, dilation=2, heads=2, block=B)
    check_layout(lay, [expected[1], expected[1]])


@pytest.mark.parametrize("causal", [False, True])
def test_global_tokens(ctx, causal):
    pos, j = grid()
    g = [0, 5, 5, 40]
    expected = np.isin(j, g) | np.isin(pos, g)
    if causal:
        expected &= j <= pos
    check_layout(sparcl.Layout.global_tokens(ctx, Q, K, g, causal=causal, block=B), expected)


@pytest.mark.parametrize("first,last,causal", [(1, 1, False), (2, 0, True), (0, 1, False)])
def test_global_blocks(ctx, first, last, causal):
    pos, j = grid()
    nb = -(-K // B)
    glob = set(range(first)) | set(range(nb - last, nb))
    expected = np.isin(j // B, list(glob)) | np.isin(np.floor_divide(pos, B), list(glob))
    if causal:
        expected &= j <= pos
    lay = sparcl.Layout.global_blocks(ctx, Q, K, first=first, last=last, causal=causal, block=B)
    check_layout(lay, expected)


@pytest.mark.parametrize("stride,causal", [(4, False), (5, True)])
def test_strided(ctx, stride, causal):
    pos, j = grid()
    t = pos - j
    expected = (np.abs(t) <= stride) | (t % stride == 0)
    if causal:
        expected &= t >= 0
    check_layout(sparcl.Layout.strided(ctx, Q, K, stride=stride, causal=causal, block=B), expected)


def test_fixed(ctx):
    pos, j = grid()
    l, c, patterns = 8, 2, 2
    expected = []
    for h in range(3):
        qq = h % patterns
        def summary(x):
            r = np.mod(x, l)
            return (r >= l - (qq + 1) * c) & (r < l - qq * c)
        e = (j // l == np.floor_divide(pos, l)) | summary(j) | summary(pos)
        e &= j <= pos
        expected.append(e)
    lay = sparcl.Layout.fixed(ctx, Q, K, stride=l, summary=c, patterns=patterns, horizontal=True,
                              causal=True, heads=3, block=B)
    check_layout(lay, expected)


def test_fixed_defaults_are_sparcls(ctx):
    # stride 128, summary 16, causal: at 37 x 53 one window, so exactly causal
    pos, j = grid()
    check_layout(sparcl.Layout.fixed(ctx, Q, K, block=B), j <= pos)


def test_bigbird_without_random_blocks(ctx):
    pos, j = grid()
    nb = -(-K // B)
    qb, kb = np.floor_divide(pos, B), j // B
    glob = [0, nb - 1]
    expected = (np.abs(kb - qb) <= 1) | np.isin(kb, glob) | np.isin(qb, glob)
    lay = sparcl.Layout.bigbird(ctx, Q, K, window=1, global_first=1, global_last=1, random=0,
                                block=B)
    check_layout(lay, expected)


def test_bigbird_random_blocks_add_whole_blocks_per_head(ctx):
    base = sparcl.Layout.bigbird(ctx, 128, 128, random=0, heads=2, block=8)
    rnd = sparcl.Layout.bigbird(ctx, 128, 128, random=2, seed=5, heads=2, block=8)
    again = sparcl.Layout.bigbird(ctx, 128, 128, random=2, seed=5, heads=2, block=8)
    for h in range(2):
        b, r = base.mask(h), rnd.mask(h)
        assert (r >= b).all() and r.sum() > b.sum()
        extra = (r & ~b).reshape(16, 8, 16, 8)
        # random choices are whole blocks: 2 per query block row beyond window/global
        blocks = extra.any(axis=(1, 3))
        assert (extra.all(axis=(1, 3)) == blocks).all()
        assert (blocks.sum(axis=1) <= 2).all() and blocks.sum() > 0
        np.testing.assert_array_equal(r, again.mask(h))  # a function of the seed
    assert not np.array_equal(rnd.mask(0), rnd.mask(1))  # per_head draws
    check_layout(rnd, [rnd.mask(0), rnd.mask(1)])


@pytest.mark.parametrize("causal", [False, True])
def test_longformer(ctx, causal):
    pos, j = grid()
    d = j - pos
    g = [3, 30]
    expected = []
    for s in (1, 2):
        e = ((d >= -6) & (d <= 6) & (d % s == 0)) | np.isin(j, g) | np.isin(pos, g)
        if causal:
            e &= j <= pos
        expected.append(e)
    lay = sparcl.Layout.longformer(ctx, Q, K, left=6, right=6, dilation=[1, 2], global_tokens=g,
                                   causal=causal, heads=2, block=B)
    check_layout(lay, expected)


def test_streaming(ctx):
    pos, j = grid()
    expected = (j <= pos) & ((j < 4) | (pos - j <= 9))
    check_layout(sparcl.Layout.streaming(ctx, Q, K, sink=4, local=9, block=B), expected)


def test_vertical_slash_shared_and_per_head(ctx):
    pos, j = grid()
    cols, offs = [0, 7], [0, 3, 20]
    shared = (np.isin(j, cols) | np.isin(pos - j, offs)) & (j <= pos)
    check_layout(sparcl.Layout.vertical_slash(ctx, Q, K, columns=cols, offsets=offs, block=B),
                 shared)
    per_cols, per_offs = [[1], [2, 50]], [[0], [-2, 5]]
    expected = [np.isin(j, c) | np.isin(pos - j, o) for c, o in zip(per_cols, per_offs)]
    lay = sparcl.Layout.vertical_slash(ctx, Q, K, columns=per_cols, offsets=per_offs,
                                       causal=False, heads=2, block=B)
    check_layout(lay, expected)


def test_bsr(ctx):
    nbr, nbc = -(-Q // B), -(-K // B)
    rows = [[0], [1, 3], [], [6, 0, 6], [2]]
    row_ptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    col_idx = np.array([c for r in rows for c in r], dtype=np.int32)
    assert len(rows) == nbr
    blocks = np.zeros((nbr, nbc), dtype=bool)
    for r, cs in enumerate(rows):
        blocks[r, cs] = True
    expected = np.repeat(np.repeat(blocks, B, 0), B, 1)[:Q, :K]
    check_layout(sparcl.Layout.bsr(ctx, Q, K, row_ptr, col_idx, block=B), expected)


def test_csr_and_from_mask(ctx):
    rng = np.random.default_rng(11)
    m = rng.random((2, Q, K)) < 0.1
    m[0, 0, 0] = True
    check_layout(sparcl.Layout.from_mask(ctx, m, block=B), m)
    flat = m[1]
    row_ptr = np.concatenate([[0], np.cumsum(flat.sum(1))]).astype(np.int64)
    # CSR takes keys in any order within a row: reverse each row's keys
    col_idx = np.concatenate([np.nonzero(r)[0][::-1] for r in flat]).astype(np.int32)
    check_layout(sparcl.Layout.csr(ctx, Q, K, row_ptr, col_idx, block=B), flat)


def test_predicate(ctx):
    def fn(h, i, j):
        return (i + j + h) % 3 == 0

    h, i, j = np.meshgrid(np.arange(2), np.arange(Q), np.arange(K), indexing="ij")
    check_layout(sparcl.Layout.predicate(ctx, Q, K, fn, heads=2, block=B), (i + j + h) % 3 == 0)


def test_predicate_exception_is_reraised(ctx):
    calls = []

    def fn(h, i, j):
        calls.append(1)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        sparcl.Layout.predicate(ctx, Q, K, fn, block=B)
    assert len(calls) == 1  # stops asking after the first failure


def test_union_intersection(ctx):
    pos, j = grid()
    win = sparcl.Layout.window(ctx, Q, K, left=3, block=B)
    glob = sparcl.Layout.global_tokens(ctx, Q, K, [0, 9], heads=2, block=4)
    w, g = (j - pos >= -3) & (j <= pos), np.isin(j, [0, 9]) | np.isin(pos, [0, 9])
    u = sparcl.Layout.union(win, glob)
    check_layout(u, [w | g, w | g])
    x = sparcl.Layout.intersection(win, glob)
    check_layout(x, [w & g, w & g])
    assert sparcl.Layout.union(win).pairs() == win.pairs()


def test_per_head(ctx):
    pos, j = grid()
    a = sparcl.Layout.causal(ctx, Q, K, block=B)
    b = sparcl.Layout.window(ctx, Q, K, left=2, right=2, heads=2, block=B)
    lay = sparcl.Layout.per_head(ctx, [a, b])
    w = np.abs(j - pos) <= 2
    check_layout(lay, [j <= pos, w, w])


@pytest.mark.parametrize("causal", [False, True])
def test_slice(ctx, causal):
    parent = sparcl.Layout.window(ctx, Q, K, left=10, right=5, block=B)
    pos, j = grid()
    full = (j - pos >= -10) & (j - pos <= 5)
    if causal:
        full &= j <= pos
    s = parent.slice(5, 20, 11, 30, causal=causal)
    check_layout(s, full[5:25, 11:41])


def test_slice_may_be_empty(ctx):
    parent = sparcl.Layout.causal(ctx, 64, block=8)
    s = parent.slice(0, 8, 32, 32)
    assert s.pairs() == 0 and not s.mask().any()


def test_varlen(ctx):
    cu = [0, 5, 5, 17, 30]
    seqs = [sparcl.Layout.causal(ctx, 5, block=4), None,
            sparcl.Layout.window(ctx, 12, left=2, block=4), None]
    lay = sparcl.Layout.varlen(ctx, cu, seqs=seqs, block=8)
    expected = np.zeros((30, 30), dtype=bool)
    expected[0:5, 0:5] = np.tril(np.ones((5, 5), dtype=bool))
    i, j = np.arange(12)[:, None], np.arange(12)[None, :]
    expected[5:17, 5:17] = (j - i >= -2) & (j <= i)
    expected[17:30, 17:30] = True
    check_layout(lay, expected)


def test_to_svg(ctx, tmp_path):
    lay = sparcl.Layout.window(ctx, 64, left=5, block=8)
    svg = lay.to_svg()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    st = lay.stats()
    assert svg.count('class="full"') == st["full_blocks"]
    assert svg.count('class="partial"') == st["partial_blocks"]
    path = tmp_path / "w.svg"
    assert lay.to_svg(str(path), head=0) == path.read_text()
    with pytest.raises(ValueError, match="head 1"):
        lay.to_svg(head=1)


def test_stats_and_bsr_arrays_agree(ctx):
    lay = sparcl.Layout.streaming(ctx, 100, 100, sink=3, local=10, heads=2, block=16)
    st = lay.stats()
    arr = lay.bsr_arrays()
    assert st["nnz_blocks"] == lay.nnz_blocks() == arr["col"].size
    assert st["full_blocks"] == int((arr["kind"] < 0).sum())
    assert st["pairs"] == lay.pairs()
    # row pointers index one array across heads: each head starts where the last ended
    rp = arr["row_ptr"]
    assert rp[0, 0] == 0 and rp[1, 0] == rp[0, -1] and rp[-1, -1] == arr["col"].size
