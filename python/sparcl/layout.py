"""sparcl.Layout: which keys each query attends to."""

import ctypes

import numpy as np

from . import _abi
from ._abi import lib
from ._handle import Handle
from .errors import check

_MAX_COMBINE = 8  # sparcl_layout_init_union/intersection take 1..8 layouts


def _ctx_handle(ctx):
    """A Context (or None) -> the handle C takes for messages."""
    if ctx is None:
        return None
    from .context import Context

    if not isinstance(ctx, Context):
        raise TypeError("ctx must be a sparcl.Context or None, got %r" % (type(ctx).__name__,))
    return ctx._borrow()


def _int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be an int, got %r" % (name, value))
    return int(value)


def _int_array(name, values, ctype=ctypes.c_int, allow_none=False):
    """A sequence of ints -> (ctypes array or None, length); values are kept alive by the caller."""
    if values is None:
        if allow_none:
            return None, 0
        raise TypeError("%s is required" % name)
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise TypeError("%s must be a 1-D sequence of ints, got %r" % (name, values))
    info = np.iinfo(np.dtype(ctype))
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError("%s has values outside the range of %s" % (name, ctype.__name__))
    c = (ctype * max(1, arr.size))(*arr.tolist())
    return c, int(arr.size)


class Layout(Handle):
    """An immutable attention pattern (block-sparse rows per head).

    Build one with a classmethod constructor; `heads` is 1 (the same pattern
    for every query head) or one per query head, `block` the storage block
    size in tokens (a storage choice: results are token-exact).  Errors in
    the arguments raise sparcl.InvalidArgument with sparcl's message.

    A layout keeps its Context alive (ctx may also be None: sparcl only
    uses it for error messages).
    """

    _kind = "layout"

    def __init__(self, *_args, **_kwargs):
        raise TypeError("build layouts with the Layout.dense/causal/window/... constructors")

    @classmethod
    def _make(cls, ctx, fn, *args):
        """Calls sparcl_layout_init_<fn>(ctx, &out, *args) and wraps the result."""
        h = _ctx_handle(ctx)
        out = ctypes.c_void_p()
        check(getattr(lib, "sparcl_layout_init_" + fn)(h, ctypes.byref(out), *args), h)
        self = cls.__new__(cls)
        self._ctx = ctx
        self._own(out.value, lib.sparcl_layout_free)
        return self

    # ---- foundation constructors ----

    @classmethod
    def dense(cls, ctx, q_len, kv_len=None, *, heads=1, block=64):
        """Every query attends to every key."""
        kv_len = q_len if kv_len is None else kv_len
        return cls._make(ctx, "dense", heads, q_len, kv_len, block)

    @classmethod
    def causal(cls, ctx, q_len, kv_len=None, *, heads=1, block=64):
        """Query i attends key j iff j <= i + (kv_len - q_len)."""
        kv_len = q_len if kv_len is None else kv_len
        return cls._make(ctx, "causal", heads, q_len, kv_len, block)

    @classmethod
    def window(cls, ctx, q_len, kv_len=None, *, left, right=0, heads=1, block=64):
        """Sliding window: -left <= j - pos(i) <= right, pos(i) = i + kv_len - q_len.

        A model library's sliding_window = W (the current token included)
        is left = W - 1, right = 0."""
        kv_len = q_len if kv_len is None else kv_len
        return cls._make(ctx, "window", heads, q_len, kv_len, block, left, right)

    @classmethod
    def block_mask(cls, ctx, q_len, kv_len, mask, *, block=64):
        """From a block mask [heads, nbr, nbc] (or [nbr, nbc] for one head) of
        bool/uint8, nbr = ceil(q_len / block), nbc = ceil(kv_len / block):
        a set entry attends that block in full."""
        m = np.asarray(mask)
        if m.dtype != np.bool_ and m.dtype != np.uint8:
            raise TypeError("mask must be a bool or uint8 array, got dtype %s" % m.dtype)
        if m.ndim == 2:
            m = m[None]
        q_len, kv_len, block = _int("q_len", q_len), _int("kv_len", kv_len), _int("block", block)
        if m.ndim != 3:
            raise ValueError("mask must be [heads, nbr, nbc], got shape %s" % (m.shape,))
        if block >= 1:
            want = (m.shape[0], -(-q_len // block), -(-kv_len // block))
            if m.shape != want:
                raise ValueError(
                    "mask must have shape [heads, ceil(q_len/block), ceil(kv_len/block)] = %s, "
                    "got %s" % (list(want), list(m.shape))
                )
        m = np.ascontiguousarray(m, dtype=np.uint8)
        ptr = m.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        return cls._make(ctx, "block_mask", m.shape[0], q_len, kv_len, block, ptr)

    # ---- patterns from the literature ----

    @classmethod
    def dilated_window(cls, ctx, q_len, kv_len=None, *, left, right=0, dilation=None, heads=1, block=64):
        """Window whose offsets j - pos(i) are multiples of the head's dilation
        (an int for every head, or a sequence of `heads` ints)."""
        kv_len = q_len if kv_len is None else kv_len
        if dilation is not None and np.ndim(dilation) == 0:
            dilation = [dilation] * heads
        arr, n = _int_array("dilation", dilation, allow_none=True)
        if arr is not None and n != heads:
            raise ValueError("dilation needs one value per head (%d), got %d" % (heads, n))
        return cls._make(ctx, "dilated_window", heads, q_len, kv_len, block, left, right, arr)

    @classmethod
    def global_tokens(cls, ctx, q_len, kv_len=None, positions=(), *, causal=False, heads=1, block=64):
        """Global key positions: every query sees them, and they see every key."""
        kv_len = q_len if kv_len is None else kv_len
        arr, n = _int_array("positions", positions)
        return cls._make(ctx, "global", heads, q_len, kv_len, block, arr, n, int(bool(causal)))

    @classmethod
    def global_blocks(cls, ctx, q_len, kv_len=None, *, first=1, last=1, causal=False, heads=1, block=64):
        """BigBird's global blocks: the first `first` and last `last` key blocks."""
        kv_len = q_len if kv_len is None else kv_len
        return cls._make(
            ctx, "global_blocks", heads, q_len, kv_len, block, first, last, int(bool(causal))
        )

    @classmethod
    def strided(cls, ctx, q_len, kv_len=None, *, stride, causal=False, heads=1, block=64):
        """Sparse Transformer strided: |t| <= stride or t % stride == 0, t = pos(i) - j."""
        kv_len = q_len if kv_len is None else kv_len
        return cls._make(ctx, "strided", heads, q_len, kv_len, block, stride, int(bool(causal)))

    @staticmethod
    def _desc(struct, init, **fields):
        """A versioned descriptor through its _init_sized, then the given fields."""
        d = struct()
        check(init(ctypes.byref(d), ctypes.sizeof(d)), None)
        for name, value in fields.items():
            if value is not None:
                setattr(d, name, int(value))
        return d

    @classmethod
    def fixed(cls, ctx, q_len, kv_len=None, *, stride=None, summary=None, patterns=None,
              horizontal=None, causal=None, heads=1, block=64):
        """Sparse Transformer "fixed" pattern; None keeps sparcl's default
        (stride 128, summary 16, patterns 1, not horizontal, causal)."""
        kv_len = q_len if kv_len is None else kv_len
        d = cls._desc(
            _abi.sparcl_fixed_desc, lib.sparcl_fixed_desc_init_sized, stride=stride,
            summary=summary, patterns=patterns, horizontal=horizontal, causal=causal,
        )
        return cls._make(ctx, "fixed", heads, q_len, kv_len, block, ctypes.byref(d))

    @classmethod
    def bigbird(cls, ctx, q_len, kv_len=None, *, window=None, global_first=None, global_last=None,
                random=None, seed=None, per_head=None, causal=None, heads=1, block=64):
        """BigBird in blocks; None keeps sparcl's default (window 1, global_first 1,
        global_last 1, random 3, seed 0, per_head, not causal)."""
        kv_len = q_len if kv_len is None else kv_len
        d = cls._desc(
            _abi.sparcl_bigbird_desc, lib.sparcl_bigbird_desc_init_sized, window=window,
            global_first=global_first, global_last=global_last, random=random, seed=seed,
            per_head=per_head, causal=causal,
        )
        return cls._make(ctx, "bigbird", heads, q_len, kv_len, block, ctypes.byref(d))

    @classmethod
    def longformer(cls, ctx, q_len, kv_len=None, *, left=None, right=None, dilation=None,
                   global_tokens=None, causal=None, heads=1, block=64):
        """Longformer: dilated window plus global tokens; None keeps sparcl's
        default (left 256, right 256, no dilation, no globals, not causal)."""
        kv_len = q_len if kv_len is None else kv_len
        d = cls._desc(
            _abi.sparcl_longformer_desc, lib.sparcl_longformer_desc_init_sized, left=left,
            right=right, causal=causal,
        )
        if dilation is not None and np.ndim(dilation) == 0:
            dilation = [dilation] * heads
        dil, n = _int_array("dilation", dilation, allow_none=True)
        if dil is not None:
            if n != heads:
                raise ValueError("dilation needs one value per head (%d), got %d" % (heads, n))
            d.dilation = dil
        glob, n_glob = _int_array("global_tokens", global_tokens, allow_none=True)
        if glob is not None:
            d.__setattr__("global", glob)
            d.n_global = n_glob
        return cls._make(ctx, "longformer", heads, q_len, kv_len, block, ctypes.byref(d))

    @classmethod
    def streaming(cls, ctx, q_len, kv_len=None, *, sink, local, heads=1, block=64):
        """StreamingLLM / A-shape: j <= pos(i) and (j < sink or pos(i) - j <= local)."""
        kv_len = q_len if kv_len is None else kv_len
        return cls._make(ctx, "streaming", heads, q_len, kv_len, block, sink, local)

    @classmethod
    def vertical_slash(cls, ctx, q_len, kv_len=None, *, columns=(), offsets=(), causal=None,
                       heads=1, block=64):
        """MInference vertical-slash: key columns and diagonals pos(i) - j.

        columns/offsets: one list shared by every head, or a list of `heads`
        lists (one per head).  causal None keeps sparcl's default (causal)."""
        kv_len = q_len if kv_len is None else kv_len
        d = cls._desc(
            _abi.sparcl_vertical_slash_desc, lib.sparcl_vertical_slash_desc_init_sized,
            causal=causal,
        )
        keep = []

        def lists(name, values):
            per_head = len(values) > 0 and all(np.ndim(v) == 1 for v in values)
            if per_head:
                if len(values) != heads:
                    raise ValueError("%s: %d per-head lists for %d heads" % (name, len(values), heads))
                counts = [len(v) for v in values]
                flat = [int(x) for v in values for x in v]
                c_counts, _ = _int_array(name + " counts", counts)
            else:
                flat, c_counts = list(values), None
            c_flat, n = _int_array(name, flat)
            keep.extend([c_flat, c_counts])
            return c_flat, c_counts, n

        cols, col_counts, n_cols = lists("columns", columns)
        offs, off_counts, n_offs = lists("offsets", offsets)
        d.columns, d.n_columns, d.offsets, d.n_offsets = cols, n_cols, offs, n_offs
        if col_counts is not None:
            d.column_counts = col_counts
        if off_counts is not None:
            d.offset_counts = off_counts
        return cls._make(ctx, "vertical_slash", heads, q_len, kv_len, block, ctypes.byref(d))

    # ---- user-defined layouts ----

    @classmethod
    def bsr(cls, ctx, q_len, kv_len, row_ptr, col_idx, *, heads=1, block=64):
        """From BSR arrays of FULL blocks (row_ptr: heads*nbr + 1 int64, col_idx int32)."""
        rp, _ = _int_array("row_ptr", row_ptr, ctypes.c_int64)
        ci, _ = _int_array("col_idx", col_idx, ctypes.c_int32)
        return cls._make(ctx, "bsr", heads, q_len, kv_len, block, rp, ci)

    @classmethod
    def csr(cls, ctx, q_len, kv_len, row_ptr, col_idx, *, heads=1, block=64):
        """From token-level CSR arrays (row_ptr: heads*q_len + 1 int64, col_idx int32)."""
        rp, _ = _int_array("row_ptr", row_ptr, ctypes.c_int64)
        ci, _ = _int_array("col_idx", col_idx, ctypes.c_int32)
        return cls._make(ctx, "csr", heads, q_len, kv_len, block, rp, ci)

    @classmethod
    def from_mask(cls, ctx, mask, *, block=64):
        """From a token mask [heads, q_len, kv_len] (or [q_len, kv_len]) of bools,
        through the CSR constructor."""
        m = np.asarray(mask, dtype=bool)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise ValueError("mask must be [heads, q_len, kv_len], got shape %s" % (m.shape,))
        heads, q_len, kv_len = m.shape
        flat = m.reshape(heads * q_len, kv_len)
        row_ptr = np.concatenate([[0], np.cumsum(flat.sum(axis=1))]).astype(np.int64)
        col_idx = np.nonzero(flat)[1].astype(np.int32)
        return cls.csr(ctx, q_len, kv_len, row_ptr, col_idx, heads=heads, block=block)

    @classmethod
    def predicate(cls, ctx, q_len, kv_len, fn, *, heads=1, block=64):
        """From fn(head, i, j) -> bool, called once per (head, i, j) (small sizes only).

        An exception raised by fn stops further calls and is re-raised."""
        failure = []

        def trampoline(_user, head, i, j):
            if failure:
                return 0
            try:
                return 1 if fn(head, i, j) else 0
            except BaseException as e:  # re-raised below, after the C call returns
                failure.append(e)
                return 0

        cb = _abi.PREDICATE_FN(trampoline)
        try:
            layout = cls._make(ctx, "predicate", heads, q_len, kv_len, block, cb, None)
        except Exception:
            if failure:
                raise failure[0] from None
            raise
        if failure:
            layout.close()
            raise failure[0]
        return layout

    # ---- combinators ----

    @staticmethod
    def _handles(layouts, what, max_count=None):
        layouts = list(layouts)
        if not layouts:
            raise ValueError("%s needs at least one layout" % what)
        if max_count is not None and len(layouts) > max_count:
            raise ValueError("%s takes at most %d layouts, got %d" % (what, max_count, len(layouts)))
        for x in layouts:
            if not isinstance(x, Layout):
                raise TypeError("%s takes sparcl.Layout objects, got %r" % (what, type(x).__name__))
        arr = (ctypes.c_void_p * len(layouts))(*[x._borrow() for x in layouts])
        return layouts, arr

    @classmethod
    def union(cls, *layouts, ctx=None):
        """i attends j iff it does in any of the layouts (1 to 8 of them)."""
        layouts, arr = cls._handles(layouts, "union", _MAX_COMBINE)
        ctx = ctx if ctx is not None else layouts[0]._ctx
        return cls._make(ctx, "union", arr, len(layouts))

    @classmethod
    def intersection(cls, *layouts, ctx=None):
        """i attends j iff it does in every one of the layouts (1 to 8 of them)."""
        layouts, arr = cls._handles(layouts, "intersection", _MAX_COMBINE)
        ctx = ctx if ctx is not None else layouts[0]._ctx
        return cls._make(ctx, "intersection", arr, len(layouts))

    @classmethod
    def per_head(cls, ctx, layouts):
        """The heads of layouts[0], then of layouts[1], ... as heads 0, 1, ..."""
        layouts, arr = cls._handles(layouts, "per_head")
        return cls._make(ctx, "per_head", arr, len(layouts))

    def slice(self, q0, q_len, k0, kv_len, *, causal=False, block=0):
        """The rectangle [q0, q0+q_len) x [k0, k0+kv_len) as a layout (may be empty).

        causal: also apply this layout's causal rule (parent coordinates).
        block: the slice's block size, 0 for this layout's."""
        return Layout._make(
            self._ctx, "slice", self._borrow(), int(bool(causal)), q0, q_len, k0, kv_len, block
        )

    @classmethod
    def varlen(cls, ctx, cu_q, cu_k=None, seqs=None, *, block=0):
        """Packed variable-length batch: sequence s owns rows [cu_q[s], cu_q[s+1])
        and keys [cu_k[s], cu_k[s+1]) (cu_k None: = cu_q); seqs[s] is its
        pattern (a Layout at its lengths) or None for dense; seqs None: all dense."""
        cu_k = cu_q if cu_k is None else cu_k
        cq, nq = _int_array("cu_q", cu_q, ctypes.c_int32)
        ck, nk = _int_array("cu_k", cu_k, ctypes.c_int32)
        if nq != nk:
            raise ValueError("cu_q and cu_k must have the same length, got %d and %d" % (nq, nk))
        count = nq - 1
        if count < 1:
            raise ValueError("cu_q needs at least 2 entries (count + 1), got %d" % nq)
        seqs = [None] * count if seqs is None else list(seqs)
        if len(seqs) != count:
            raise ValueError("seqs needs %d entries (one per sequence), got %d" % (count, len(seqs)))
        for s in seqs:
            if s is not None and not isinstance(s, Layout):
                raise TypeError("seqs entries must be sparcl.Layout or None")
        arr = (ctypes.c_void_p * count)(*[None if s is None else s._borrow() for s in seqs])
        return cls._make(ctx, "varlen", count, cq, ck, arr, block)

    # ---- properties and queries ----

    @property
    def heads(self):
        return lib.sparcl_layout_heads(self._borrow())

    @property
    def q_len(self):
        return lib.sparcl_layout_q_len(self._borrow())

    @property
    def kv_len(self):
        return lib.sparcl_layout_kv_len(self._borrow())

    @property
    def block(self):
        return lib.sparcl_layout_block(self._borrow())

    @property
    def context(self):
        return self._ctx

    def density(self):
        """Attended pairs / (heads * q_len * kv_len)."""
        return lib.sparcl_layout_density(self._borrow())

    def pairs(self):
        """Attended (query, key) pairs summed over heads."""
        return int(lib.sparcl_layout_pairs(self._borrow()))

    def nnz_blocks(self):
        """Stored blocks summed over heads."""
        return int(lib.sparcl_layout_nnz_blocks(self._borrow()))

    def attends(self, head, i, j):
        """True if query i of `head` attends key j (False out of range)."""
        return bool(lib.sparcl_layout_attends(self._borrow(), int(head), int(i), int(j)))

    def stats(self):
        """sparcl_layout_get_stats as a dict."""
        s = _abi.sparcl_layout_stats()
        check(lib.sparcl_layout_get_stats(self._borrow(), ctypes.byref(s)), None)
        return {name: getattr(s, name) for name, _ in s._fields_}

    def bsr_arrays(self):
        """A copy of the BSR storage: dict with heads, block, block_rows,
        block_cols, row_ptr [heads, block_rows+1], col, kind (-1 FULL, else
        the PARTIAL mask index) and partial [n_masks, block, block] bools."""
        v = _abi.sparcl_layout_bsr()
        check(lib.sparcl_layout_get_bsr(self._borrow(), ctypes.byref(v)), None)

        def arr(ptr, n):
            return np.ctypeslib.as_array(ptr, shape=(n,)).copy() if n else np.zeros(0, np.int64)

        b = v.block
        row_ptr = arr(v.row_ptr, v.heads * (v.block_rows + 1)).reshape(v.heads, v.block_rows + 1)
        bits = arr(v.bits, int(v.n_masks) * v.words_per_mask).astype(np.uint64)
        unpacked = np.unpackbits(bits.view(np.uint8), bitorder="little")
        per = v.words_per_mask * 64
        partial = unpacked.reshape(int(v.n_masks), per)[:, : b * b].reshape(-1, b, b).astype(bool)
        return {
            "heads": v.heads,
            "block": b,
            "block_rows": v.block_rows,
            "block_cols": v.block_cols,
            "row_ptr": row_ptr,
            "col": arr(v.col, int(v.nnz)).astype(np.int64),
            "kind": arr(v.mask, int(v.nnz)),
            "partial": partial,
        }

    def mask(self, head=0):
        """numpy bool [q_len, kv_len]: the token mask of `head` (from the BSR storage)."""
        head = _int("head", head)
        if not 0 <= head < self.heads:
            raise ValueError("head %d is not in [0, %d)" % (head, self.heads))
        q_len, kv_len = self.q_len, self.kv_len
        a = self.bsr_arrays()
        b = a["block"]
        out = np.zeros((a["block_rows"] * b, a["block_cols"] * b), dtype=bool)
        rp = a["row_ptr"][head]
        for r in range(a["block_rows"]):
            for e in range(int(rp[r]), int(rp[r + 1])):
                c, kind = int(a["col"][e]), int(a["kind"][e])
                tile = True if kind < 0 else a["partial"][kind]
                out[r * b : (r + 1) * b, c * b : (c + 1) * b] = tile
        return out[:q_len, :kv_len].copy()

    def to_svg(self, path=None, head=0, *, cell=None):
        """An SVG drawing of `head`'s stored blocks: FULL blocks dark, PARTIAL
        blocks light with their attended elements drawn when blocks are
        small enough.  Returns the text; writes it to `path` when given."""
        head = _int("head", head)
        if not 0 <= head < self.heads:
            raise ValueError("head %d is not in [0, %d)" % (head, self.heads))
        a = self.bsr_arrays()
        b, nbr, nbc = a["block"], a["block_rows"], a["block_cols"]
        if cell is None:
            cell = max(2, min(24, 640 // max(nbr, nbc, 1)))
        w, h = nbc * cell, nbr * cell
        parts = [
            '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">'
            % (w + 2, h + 2, w + 2, h + 2),
            "<title>sparcl layout: head %d of %d, %d x %d tokens, block %d, density %.4f</title>"
            % (head, self.heads, self.q_len, self.kv_len, b, self.density()),
            '<rect x="1" y="1" width="%d" height="%d" fill="white" stroke="#888"/>' % (w, h),
        ]
        draw_bits = b <= 16 and cell >= 2 * b
        rp = a["row_ptr"][head]
        for r in range(nbr):
            for e in range(int(rp[r]), int(rp[r + 1])):
                c, kind = int(a["col"][e]), int(a["kind"][e])
                x, y = 1 + c * cell, 1 + r * cell
                if kind < 0:
                    parts.append(
                        '<rect class="full" x="%d" y="%d" width="%d" height="%d" fill="#1f4e79"/>'
                        % (x, y, cell, cell)
                    )
                    continue
                parts.append(
                    '<rect class="partial" x="%d" y="%d" width="%d" height="%d" fill="#9dc3e6"/>'
                    % (x, y, cell, cell)
                )
                if draw_bits:
                    px = cell / b
                    for (ti, tj) in zip(*np.nonzero(a["partial"][kind])):
                        parts.append(
                            '<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="#1f4e79"/>'
                            % (x + tj * px, y + ti * px, px, px)
                        )
        parts.append("</svg>")
        svg = "\n".join(parts) + "\n"
        if path is not None:
            with open(path, "w") as f:
                f.write(svg)
        return svg

    def __repr__(self):
        if self.closed:
            return "<sparcl.Layout (closed)>"
        return "<sparcl.Layout heads=%d q_len=%d kv_len=%d block=%d density=%.4f>" % (
            self.heads, self.q_len, self.kv_len, self.block, self.density())
