/*
 * tiling.c -- re-blocks a layout (any block size) to the kernel's tile,
 * folding in the plan's causal rule and the sequence bounds.  See tiling.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/array.h"
#include "runtime/checked.h"
#include "runtime/error.h"
#include "layout/layout.h"
#include "runtime/memory.h"
#include "layout/tiling.h"

/* Sets bits [a, b) of one mask row. */
static void set_range(uint32_t *row, int a, int b)
{
    for (int c = a; c < b;) {
        int w = c / 32, s = c % 32, n = 32 - s < b - c ? 32 - s : b - c;
        uint32_t m = n == 32 ? 0xffffffffu : (((uint32_t)1 << n) - 1u) << s;
        row[w] |= m;
        c += n;
    }
}

/* ORs the m (<= 32) low bits of v into a mask row at bit dp. */
static void or_bits(uint32_t *row, int dp, uint32_t v, int m)
{
    int w = dp / 32, s = dp % 32;
    row[w] |= v << s;
    if (s && s + m > 32)
        row[w + 1] |= v >> (32 - s);
}

static int popcount32(uint32_t x)
{
    return __builtin_popcount(x);
}

/* Fills tile (tr, tc) of head h into `tile` (tm * mw words, zeroed here). */
static void fill_tile(const sparcl_layout *l, int h, int r0, int r1, int c0, int c1, int mw,
                      uint32_t *tile, int tm)
{
    memset(tile, 0, sizeof *tile * (size_t)tm * (size_t)mw);
    if (!l) {
        for (int i = r0; i < r1; ++i)
            set_range(tile + (i - r0) * mw, 0, c1 - c0);
        return;
    }
    int B = l->block;
    for (int br = r0 / B; br <= (r1 - 1) / B; ++br) {
        const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + br;
        int64_t lo = rp[0], hi = rp[1];
        int want = c0 / B;
        while (lo < hi) { /* first entry with col >= want */
            int64_t mid = lo + (hi - lo) / 2;
            if (l->col[mid] < want)
                lo = mid + 1;
            else
                hi = mid;
        }
        int ia = br * B > r0 ? br * B : r0;
        int ib = br * B + B < r1 ? br * B + B : r1;
        for (int64_t e = lo; e < rp[1] && (int64_t)l->col[e] * B < c1; ++e) {
            int jb0 = l->col[e] * B;
            int ja = jb0 > c0 ? jb0 : c0;
            int jb = jb0 + B < c1 ? jb0 + B : c1;
            for (int i = ia; i < ib; ++i) {
                uint32_t *row = tile + (i - r0) * mw;
                if (l->mask[e] < 0) {
                    set_range(row, ja - c0, jb - c0);
                    continue;
                }
                const uint64_t *src = l->bits + l->mask[e] * l->words_per_mask;
                int64_t so = (int64_t)(i - br * B) * B + (ja - jb0);
                for (int k = 0; k < jb - ja; k += 32) {
                    int m = jb - ja - k < 32 ? jb - ja - k : 32;
                    or_bits(row, ja - c0 + k, (uint32_t)sparcl__bits_get64(src, so + k, m), m);
                }
            }
        }
    }
}

sparcl_status sparcl__tiling_build(sparcl_ctx *ctx, const sparcl_layout *l, int q_len,
                                   int kv_len, int causal, int tm, int tn, sparcl__tiling *t)
{
    memset(t, 0, sizeof *t);
    if (tm < 1 || tn < 1 || q_len < 1 || kv_len < 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "cannot tile %d x %d at BLOCK_M %d x BLOCK_N %d", q_len, kv_len, tm,
                            tn);
    t->heads = l ? l->heads : 1;
    t->tm = tm;
    t->tn = tn;
    t->mw = (int)sparcl__ceil_div_i64(tn, 32);
    const int64_t ntr = sparcl__ceil_div_i64(q_len, tm), ntc = sparcl__ceil_div_i64(kv_len, tn);
    t->ntr = (int)ntr; /* at most q_len, kv_len: they fit an int */
    t->ntc = (int)ntc;
    const int64_t off = (int64_t)kv_len - q_len;
    if (!l && ntr * ntc > INT32_MAX) /* dense: known before any work */
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "dense %d x %d attention needs %lld tiles at BLOCK_M %d x BLOCK_N "
                            "%d, more than 2^31",
                            q_len, kv_len, (long long)(ntr * ntc), tm, tn);
    /* Host memory before any work: the scratch and row pointers, plus the
     * tile lists where their length is known or bounded (dense: every tile;
     * a layout: each stored block covers a bounded number of tiles). */
    const size_t tile_words = (size_t)tm * (size_t)t->mw;
    size_t fixed = sparcl__sat_add(
        sparcl__sat_mul((size_t)ntc, 2 * sizeof(int32_t)),
        sparcl__sat_add(tile_words * sizeof(uint32_t),
                        sparcl__sat_mul((size_t)t->heads * (size_t)(ntr + 1), sizeof(int32_t))));
    size_t tiles;
    if (!l) {
        tiles = (size_t)(ntr * ntc);
    } else {
        int64_t B = l->block;
        int64_t rows = B % tm == 0 ? B / tm : sparcl__ceil_div_i64(B, tm) + 1;
        int64_t cols = B % tn == 0 ? B / tn : sparcl__ceil_div_i64(B, tn) + 1;
        tiles = sparcl__sat_mul(sparcl__sat_mul((size_t)l->nnz, (size_t)rows), (size_t)cols);
        size_t all = sparcl__sat_mul((size_t)t->heads, (size_t)(ntr * ntc));
        tiles = tiles < all ? tiles : all;
    }
    char what[128];
    snprintf(what, sizeof what, "the %d x %d layout tiled at BLOCK_M %d x BLOCK_N %d", q_len,
             kv_len, tm, tn);
    sparcl_status st = sparcl__mem_check_host(
        ctx, what, sparcl__sat_add(fixed, sparcl__sat_mul(tiles, 2 * sizeof(int32_t))));
    if (st != SPARCL_OK)
        return st;
    const size_t limit = sparcl__mem_host_limit(ctx);
    size_t used = fixed;
    int grown = 1;
    int32_t *cand = malloc(sizeof *cand * (size_t)t->ntc);
    int32_t *stamp = calloc((size_t)t->ntc, sizeof *stamp);
    uint32_t *tile = malloc(sizeof *tile * (size_t)tm * (size_t)t->mw);
    t->ptr = malloc(sizeof *t->ptr * (size_t)t->heads * (size_t)(t->ntr + 1));
    int64_t cap_c = 0, cap_m = 0, cap_b = 0;
    int32_t tag = 0;
    if (!cand || !stamp || !tile || !t->ptr)
        goto oom;
    for (int h = 0; h < t->heads; ++h) {
        for (int tr = 0; tr < t->ntr; ++tr) {
            if (t->nnz > INT32_MAX - 1)
                goto too_big;
            t->ptr[(int64_t)h * (t->ntr + 1) + tr] = (int32_t)t->nnz;
            int r0 = (int)((int64_t)tr * tm);
            int r1 = (int)((int64_t)r0 + tm < q_len ? (int64_t)r0 + tm : q_len);
            int n = 0;
            ++tag;
            if (!l) {
                for (int c = 0; c < t->ntc; ++c)
                    cand[n++] = c;
            } else {
                int B = l->block;
                for (int br = r0 / B; br <= (r1 - 1) / B; ++br) {
                    const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + br;
                    for (int64_t e = rp[0]; e < rp[1]; ++e) {
                        int j0 = l->col[e] * B; /* < kv_len: a stored block */
                        int j1 = (int)((int64_t)j0 + B < kv_len ? (int64_t)j0 + B : kv_len);
                        for (int c = j0 / tn; c <= (j1 - 1) / tn; ++c)
                            if (stamp[c] != tag) {
                                stamp[c] = tag;
                                cand[n++] = c;
                            }
                    }
                }
                qsort(cand, (size_t)n, sizeof *cand, sparcl__cmp_i32);
            }
            for (int k = 0; k < n; ++k) {
                int c0 = (int)((int64_t)cand[k] * tn);
                int c1 = (int)((int64_t)c0 + tn < kv_len ? (int64_t)c0 + tn : kv_len);
                if (causal && c0 > (r1 - 1) + off)
                    break; /* this and every later tile lie above the diagonal */
                fill_tile(l, h, r0, r1, c0, c1, t->mw, tile, tm);
                if (causal && (int64_t)(c1 - 1) > r0 + off) {
                    for (int i = r0; i < r1; ++i) {
                        int64_t last = i + off; /* last key row i may see */
                        int from = last + 1 - c0 < 0 ? 0 : (int)(last + 1 - c0);
                        uint32_t *row = tile + (i - r0) * t->mw;
                        for (int c = from; c < c1 - c0; ++c)
                            row[c / 32] &= ~((uint32_t)1 << (c % 32));
                    }
                }
                int64_t count = 0;
                for (int w = 0; w < tm * t->mw; ++w)
                    count += popcount32(tile[w]);
                if (count == 0)
                    continue;
                if ((grown = sparcl__array_grow_capped((void **)&t->col, &cap_c, t->nnz + 1,
                                                       sizeof *t->col, &used, limit)) != 1 ||
                    (grown = sparcl__array_grow_capped((void **)&t->mask, &cap_m, t->nnz + 1,
                                                       sizeof *t->mask, &used, limit)) != 1)
                    goto grow_failed;
                t->col[t->nnz] = cand[k];
                int full = c1 - c0 == tn && count == (int64_t)(r1 - r0) * tn;
                if (full) {
                    t->mask[t->nnz] = -1;
                } else {
                    if (t->n_masks >= INT32_MAX / ((int64_t)tm * t->mw))
                        goto too_big;
                    int64_t words = (int64_t)tm * t->mw;
                    if ((grown = sparcl__array_grow_capped((void **)&t->bits, &cap_b,
                                                           (t->n_masks + 1) * words,
                                                           sizeof *t->bits, &used, limit)) != 1)
                        goto grow_failed;
                    memcpy(t->bits + t->n_masks * words, tile, sizeof *tile * (size_t)words);
                    t->mask[t->nnz] = (int32_t)t->n_masks++;
                }
                t->pairs += count;
                ++t->nnz;
            }
        }
        t->ptr[(int64_t)h * (t->ntr + 1) + t->ntr] = (int32_t)t->nnz;
    }
    free(cand);
    free(stamp);
    free(tile);
    return SPARCL_OK;
too_big:
    free(cand);
    free(stamp);
    free(tile);
    sparcl__tiling_free(t);
    return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                        "layout needs more than 2^31 tiles at BLOCK_M %d x BLOCK_N %d", tm, tn);
grow_failed:
    if (grown < 0) {
        free(cand);
        free(stamp);
        free(tile);
        sparcl__tiling_free(t);
        return sparcl__mem_over_host(ctx, what, used);
    }
oom:
    free(cand);
    free(stamp);
    free(tile);
    sparcl__tiling_free(t);
    return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the tiled layout");
}

void sparcl__tiling_free(sparcl__tiling *t)
{
    if (!t)
        return;
    free(t->ptr);
    free(t->col);
    free(t->mask);
    free(t->bits);
    memset(t, 0, sizeof *t);
}
