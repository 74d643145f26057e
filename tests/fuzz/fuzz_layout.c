/*
 * fuzz_layout.c -- layouts from user block masks, BSR and CSR arrays,
 * window parameters and packed variable-length batches (offsets often
 * malformed, sequence layouts of the wrong shape), and their re-blocking
 * to kernel tiles.  Beyond "no crash", every accepted
 * layout is checked against its definition at sampled elements, and the
 * tiling (with or without causal) is checked element by element against
 * sparcl_layout_attends on small shapes, and built again from its own tiling
 * (the rows it copies) to the same arrays.  A mismatch traps.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "layout/layout.h"
#include "sparcl.h"
#include "layout/tiling.h"

#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c))                                                                            \
            __builtin_trap();                                                                \
    } while (0)

/* Whether two arrays of `bytes` agree (empty ones may be NULL). */
static int same(const void *a, const void *b, size_t bytes)
{
    return bytes == 0 || !memcmp(a, b, bytes);
}

static void check_tiling(const sparcl_layout *l, int causal, int tm, int tn)
{
    sparcl__tiling t;
    if (sparcl__tiling_build(NULL, l, l->q_len, l->kv_len, causal, tm, tn, &t) != SPARCL_OK)
        return;
    int64_t off = (int64_t)l->kv_len - l->q_len, pairs = 0;
    for (int h = 0; h < t.heads; ++h)
        for (int tr = 0; tr < t.ntr; ++tr)
            for (int e = t.ptr[h * (t.ntr + 1) + tr]; e < t.ptr[h * (t.ntr + 1) + tr + 1]; ++e) {
                CHECK(e == t.ptr[h * (t.ntr + 1) + tr] || t.col[e] > t.col[e - 1]);
                for (int r = 0; r < tm; ++r)
                    for (int c = 0; c < tn; ++c) {
                        int i = tr * tm + r, j = t.col[e] * tn + c;
                        int bit = t.mask[e] < 0
                                      ? 1
                                      : (int)(t.bits[((int64_t)t.mask[e] * tm + r) * t.mw + c / 32] >>
                                              (c % 32)) & 1;
                        if (i >= l->q_len) {
                            continue;
                        }
                        int want = j < l->kv_len && sparcl_layout_attends(l, h, i, j) &&
                                   (!causal || j <= i + off);
                        CHECK(bit == want);
                        pairs += want;
                    }
            }
    /* Nothing attended may be missing from the tile lists. */
    int64_t total = 0;
    for (int h = 0; h < l->heads; ++h)
        for (int i = 0; i < l->q_len; ++i)
            for (int j = 0; j < l->kv_len; ++j)
                total += sparcl_layout_attends(l, h, i, j) && (!causal || j <= i + off);
    CHECK(pairs == total && t.pairs == total);
    /* Re-blocked from its own tiling: every row that can be copied is, and
     * the arrays come out the same. */
    sparcl__tiling again;
    const sparcl__tiling_prev prev = {l, l->q_len, l->kv_len, causal, &t};
    if (sparcl__tiling_build_from(NULL, l, l->q_len, l->kv_len, causal, tm, tn, &prev, &again) ==
        SPARCL_OK) {
        CHECK(again.nnz == t.nnz && again.n_masks == t.n_masks && again.pairs == t.pairs);
        CHECK(same(again.ptr, t.ptr, sizeof *t.ptr * (size_t)t.heads * (size_t)(t.ntr + 1)));
        CHECK(same(again.col, t.col, sizeof *t.col * (size_t)t.nnz));
        CHECK(same(again.mask, t.mask, sizeof *t.mask * (size_t)t.nnz));
        CHECK(same(again.bits, t.bits,
                   sizeof *t.bits * (size_t)t.n_masks * (size_t)t.tm * (size_t)t.mw));
        sparcl__tiling_free(&again);
    }
    sparcl__tiling_free(&t);
}

/* Packed batches of up to 4 sequences, each NULL (dense) or a window; the
 * offsets sane or raw, the windows of the sequence's lengths or not.  An
 * accepted batch is checked element by element against the definition. */
static sparcl_layout *fuzz_varlen(fuzz_input *in, int heads, int block)
{
    int count = fuzz_range(in, 1, 4), sane = fuzz_range(in, 0, 3) != 0;
    int32_t cu_q[5] = {0}, cu_k[5] = {0};
    int left[4], right[4];
    sparcl_layout *seq[4] = {NULL, NULL, NULL, NULL}, *l = NULL;
    for (int s = 0; s < count; ++s) {
        cu_q[s + 1] = sane ? cu_q[s] + fuzz_range(in, 0, 30) : fuzz_int(in);
        cu_k[s + 1] = sane ? cu_k[s] + fuzz_range(in, 0, 30) : fuzz_int(in);
        left[s] = fuzz_range(in, 0, 40);
        right[s] = fuzz_range(in, 0, 40);
        int ql = sane ? cu_q[s + 1] - cu_q[s] : fuzz_range(in, 1, 30);
        int kl = sane ? cu_k[s + 1] - cu_k[s] : fuzz_range(in, 1, 30);
        if (fuzz_range(in, 0, 2) && ql > 0 && kl > 0)
            sparcl_layout_init_window(NULL, &seq[s], fuzz_range(in, 0, 3) ? 1 : heads, ql, kl,
                                      fuzz_range(in, 1, 20), left[s], right[s]);
    }
    int small = 1; /* raw offsets: only small ones may be built */
    for (int s = 0; s <= count; ++s)
        small &= cu_q[s] <= 200 && cu_k[s] <= 200;
    if (!small) {
        for (int s = 0; s < count; ++s)
            sparcl_layout_free(seq[s]);
        return NULL;
    }
    if (sparcl_layout_init_varlen(NULL, &l, count, cu_q, cu_k, (const sparcl_layout *const *)seq,
                                  fuzz_range(in, 0, 1) ? 0 : block) != SPARCL_OK) {
        CHECK(l == NULL);
    } else {
        CHECK(cu_q[0] == 0 && cu_k[0] == 0);
        for (int h = 0; h < l->heads; ++h)
            for (int i = 0; i < cu_q[count]; ++i)
                for (int j = 0; j < cu_k[count]; ++j) {
                    int want = 0;
                    for (int s = 0; s < count; ++s)
                        if (i >= cu_q[s] && i < cu_q[s + 1] && j >= cu_k[s] && j < cu_k[s + 1]) {
                            int64_t d = (int64_t)(j - cu_k[s]) -
                                        (i - cu_q[s] + (cu_k[s + 1] - cu_k[s]) -
                                         (cu_q[s + 1] - cu_q[s]));
                            want = !seq[s] || (d >= -left[s] && d <= right[s]);
                        }
                    CHECK(sparcl_layout_attends(l, h, i, j) == want);
                }
    }
    for (int s = 0; s < count; ++s)
        sparcl_layout_free(seq[s]);
    return l;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size, 0};
    int kind = fuzz_range(&in, 0, 5);
    sparcl_layout *l = NULL;
    if (kind == 0) { /* raw arguments, mostly invalid: must fail cleanly */
        int heads = fuzz_int(&in), lq = fuzz_int(&in), lk = fuzz_int(&in), b = fuzz_int(&in);
        int left = fuzz_int(&in), right = fuzz_int(&in);
        if ((int64_t)lq * lk / (b > 0 ? b : 1) / (b > 0 ? b : 1) > 4096 || heads > 4)
            return 0; /* keep valid ones small */
        if (sparcl_layout_init_window(NULL, &l, heads, lq, lk, b, left, right) == SPARCL_OK) {
            CHECK(l && sparcl_layout_pairs(l) >= 0);
            sparcl_layout_free(l);
        } else {
            CHECK(l == NULL);
        }
        return 0;
    }
    int heads = fuzz_range(&in, 1, 3), lq = fuzz_range(&in, 1, 70), lk = fuzz_range(&in, 1, 70);
    int block = fuzz_range(&in, 1, 40);
    if (kind == 1) {
        int nbr = (lq + block - 1) / block, nbc = (lk + block - 1) / block;
        size_t n = (size_t)heads * nbr * nbc;
        uint8_t *mask = malloc(n);
        for (size_t x = 0; x < n; ++x)
            mask[x] = in.pos < in.size ? in.data[in.pos++] & 1 : 0;
        sparcl_status st = sparcl_layout_init_block_mask(NULL, &l, heads, lq, lk, block, mask);
        if (st == SPARCL_OK)
            for (int h = 0; h < heads; ++h)
                for (int i = 0; i < lq; ++i)
                    for (int j = 0; j < lk; ++j)
                        CHECK(sparcl_layout_attends(l, h, i, j) ==
                              (mask[((size_t)h * nbr + i / block) * nbc + j / block] != 0));
        free(mask);
    } else if (kind == 3 || kind == 4) {
        /* CSR (token rows) or BSR (block rows) arrays, often malformed:
         * rows may decrease or overrun, columns may be out of range. */
        int bsr = kind == 4;
        int rows = heads * (bsr ? (lq + block - 1) / block : lq);
        int cols = bsr ? (lk + block - 1) / block : lk;
        int64_t *ptr = malloc(sizeof *ptr * (size_t)(rows + 1));
        int nnz = fuzz_range(&in, 0, 300);
        int32_t *col = malloc(sizeof *col * (size_t)(nnz ? nnz : 1));
        int sane = fuzz_range(&in, 0, 3) != 0;
        ptr[0] = sane ? 0 : fuzz_range(&in, -2, 2);
        for (int r = 1; r <= rows; ++r)
            ptr[r] = sane ? ptr[r - 1] + (r == rows ? 0 : fuzz_range(&in, 0, 3))
                          : fuzz_range(&in, -5, nnz + 5);
        if (sane) {
            if (ptr[rows] > nnz)
                ptr[rows] = nnz;
            for (int r = rows; r > 0; --r) /* keep it non-decreasing */
                if (ptr[r - 1] > ptr[r])
                    ptr[r - 1] = ptr[r];
        }
        /* The API reads row_ptr[rows] column entries, so the array must
         * hold that many even when row_ptr is malformed elsewhere. */
        if (ptr[rows] > nnz) {
            int32_t *bigger = realloc(col, sizeof *col * (size_t)ptr[rows]);
            if (!bigger) {
                free(ptr);
                free(col);
                return 0;
            }
            col = bigger;
            nnz = (int)ptr[rows];
        }
        for (int x = 0; x < nnz; ++x)
            col[x] = sane ? fuzz_range(&in, 0, cols - 1) : fuzz_int(&in);
        sparcl_status st =
            bsr ? sparcl_layout_init_bsr(NULL, &l, heads, lq, lk, block, ptr, col)
                : sparcl_layout_init_csr(NULL, &l, heads, lq, lk, block, ptr, col);
        if (st == SPARCL_OK) {
            CHECK(ptr[0] == 0);
            for (int h = 0; h < heads; ++h)
                for (int i = 0; i < lq; ++i) {
                    int r = h * (bsr ? (lq + block - 1) / block : lq) + (bsr ? i / block : i);
                    for (int j = 0; j < lk; ++j) {
                        int want = 0;
                        for (int64_t x = ptr[r]; x < ptr[r + 1]; ++x)
                            want |= col[x] == (bsr ? j / block : j);
                        CHECK(sparcl_layout_attends(l, h, i, j) == want);
                    }
                }
        } else {
            CHECK(l == NULL);
        }
        free(ptr);
        free(col);
    } else if (kind == 5) {
        l = fuzz_varlen(&in, heads, block);
    } else {
        int left = fuzz_range(&in, 0, 80), right = fuzz_range(&in, 0, 80);
        if (sparcl_layout_init_window(NULL, &l, heads, lq, lk, block, left, right) == SPARCL_OK)
            for (int i = 0; i < lq; ++i)
                for (int j = 0; j < lk; ++j) {
                    int64_t d = (int64_t)j - (i + (int64_t)lk - lq);
                    CHECK(sparcl_layout_attends(l, 0, i, j) == (d >= -left && d <= right));
                }
    }
    if (l) {
        static const int tiles[] = {1, 2, 4, 8, 16, 32, 64, 128};
        int tm = tiles[fuzz_range(&in, 0, 7)], tn = tiles[fuzz_range(&in, 2, 7)];
        check_tiling(l, fuzz_range(&in, 0, 1), tm, tn);
    }
    sparcl_layout_free(l);
    return 0;
}
