/*
 * tiling.c -- re-blocks a layout (any block size) to the kernel's tile,
 * folding in the plan's causal rule and the sequence bounds.  See tiling.h.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/array.h"
#include "runtime/checked.h"
#include "runtime/error.h"
#include "layout/layout.h"
#include "runtime/memory.h"
#include "layout/tiling.h"

/* `bytes` at a page boundary (freed with free()), so that a device sharing
 * host memory can use the array in place (tiling.h); NULL if out of memory. */
static void *page_alloc(size_t bytes)
{
    const size_t page = SPARCL__TILING_ALIGN;
    if (bytes > SIZE_MAX - page)
        return NULL;
    return aligned_alloc(page, (bytes + page - 1) / page * page);
}

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

/* Set bits of x, without a call into the compiler's runtime (a library
 * routine where the build does not target an instruction for it). */
static int popcount32(uint32_t x)
{
    x -= (x >> 1) & 0x55555555u;
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0fu;
    return (int)((x * 0x01010101u) >> 24);
}

/* Whether every element of a tile of head h attends: each layout block row
 * br0..br1 it crosses stores FULL blocks at every block column bc0..bc1.  cur[k] is block row br0 +
 * k's first stored block not left of the previous tile asked about; tiles are asked about left to
 * right, so one tile row costs O(its stored blocks + tiles). */
static int tile_covered(const sparcl_layout *l, int h, int br0, int br1, int bc0, int bc1,
                        int64_t *cur)
{
    if (!l)
        return 1;
    const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1);
    for (int br = br0; br <= br1; ++br) {
        const int64_t end = rp[br + 1];
        int64_t e = cur[br - br0];
        while (e < end && l->col[e] < bc0)
            ++e;
        cur[br - br0] = e;
        for (int bc = bc0; bc <= bc1; ++bc, ++e)
            if (e >= end || l->col[e] != bc || l->mask[e] >= 0)
                return 0;
    }
    return 1;
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
        const int64_t lo = sparcl__layout_lower_bound(l, h, br, c0 / B);
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

/* The growing output arrays of one build, against the host limit. */
typedef struct grow {
    int64_t cap_c, cap_m, cap_b;
    size_t used, limit;
} grow;

/* Appends tile column c with `count` attended pairs: FULL, or PARTIAL with
 * the tm * mw words at `bits`.  1 on success, 0 out of memory, -1 over the
 * host limit, -2 more masks than an int32 can number. */
static int append_tile(sparcl__tiling *t, grow *g, int32_t c, const uint32_t *bits, int64_t count)
{
    int r;
    if ((t->nnz >= g->cap_c || t->nnz >= g->cap_m) &&
        ((r = sparcl__array_grow_capped((void **)&t->col, &g->cap_c, t->nnz + 1, sizeof *t->col,
                                        &g->used, g->limit)) != 1 ||
         (r = sparcl__array_grow_capped((void **)&t->mask, &g->cap_m, t->nnz + 1, sizeof *t->mask,
                                        &g->used, g->limit)) != 1))
        return r;
    t->col[t->nnz] = c;
    if (!bits) {
        t->mask[t->nnz] = -1;
    } else {
        const int64_t words = (int64_t)t->tm * t->mw;
        if (t->n_masks >= INT32_MAX / words)
            return -2;
        if ((r = sparcl__array_grow_capped((void **)&t->bits, &g->cap_b, (t->n_masks + 1) * words,
                                           sizeof *t->bits, &g->used, g->limit)) != 1)
            return r;
        memcpy(t->bits + t->n_masks * words, bits, sizeof *bits * (size_t)words);
        t->mask[t->nnz] = (int32_t)t->n_masks++;
    }
    t->pairs += count;
    ++t->nnz;
    return 1;
}

/* Whether layout block row br of head h stores the same blocks in a and b:
 * the same columns, each FULL in both or PARTIAL with the same bits. */
static int block_row_same(const sparcl_layout *a, const sparcl_layout *b, int h, int br)
{
    const int64_t *ra = a->row_ptr + (int64_t)h * (a->nbr + 1) + br;
    const int64_t *rb = b->row_ptr + (int64_t)h * (b->nbr + 1) + br;
    if (ra[1] - ra[0] != rb[1] - rb[0])
        return 0;
    if (ra[1] == ra[0]) /* both empty (the arrays may even be NULL) */
        return 1;
    if (memcmp(a->col + ra[0], b->col + rb[0], sizeof *a->col * (size_t)(ra[1] - ra[0])))
        return 0;
    for (int64_t k = 0; k < ra[1] - ra[0]; ++k) {
        const int64_t ma = a->mask[ra[0] + k], mb = b->mask[rb[0] + k];
        if ((ma < 0) != (mb < 0) ||
            (ma >= 0 && memcmp(a->bits + ma * a->words_per_mask, b->bits + mb * b->words_per_mask,
                               sizeof *a->bits * (size_t)a->words_per_mask)))
            return 0;
    }
    return 1;
}

/* Whether tile row tr of head h (rows up to r1, layout block rows br0..br1)
 * comes out exactly as in p's tiling: its rows end at r1 there too, and
 * each block row stores the same blocks in both layouts, none reaching past
 * column kv_inner (the tile columns below both lengths, so that no tile is
 * clipped by either).  The tile, heads, block size and causal offset were
 * checked for the whole build.  O(the rows' stored blocks). */
static int row_unchanged(const sparcl__tiling_prev *p, const sparcl_layout *l, int h, int tr,
                         int r1, int br0, int br1, int64_t kv_inner)
{
    const int tm = p->tiling->tm;
    if (tr >= p->tiling->ntr || ((int64_t)tr * tm + tm < p->q_len ? tr * tm + tm : p->q_len) != r1)
        return 0;
    for (int br = br0; br <= br1; ++br) {
        const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + br;
        if (rp[1] > rp[0] && ((int64_t)l->col[rp[1] - 1] + 1) * l->block > kv_inner)
            return 0;
        if (!block_row_same(p->layout, l, h, br))
            return 0;
    }
    return 1;
}

/* Whether `p` can give rows to a build of layout l (q_len x kv_len, causal,
 * tm x tn): both laid out, at the same heads and block size, tiled at the
 * same tile, with the same causal rule and diagonal offset. */
static int prev_applies(const sparcl__tiling_prev *p, const sparcl_layout *l, int q_len, int kv_len,
                        int causal, int tm, int tn)
{
    return p && p->layout && p->tiling && l && p->tiling->tm == tm && p->tiling->tn == tn &&
           p->layout->heads == l->heads && p->tiling->heads == l->heads &&
           p->layout->block == l->block && !p->causal == !causal &&
           (!causal || (int64_t)p->kv_len - p->q_len == (int64_t)kv_len - q_len);
}

sparcl_status sparcl__tiling_build(sparcl_ctx *ctx, const sparcl_layout *l, int q_len,
                                   int kv_len, int causal, int tm, int tn, sparcl__tiling *t)
{
    return sparcl__tiling_build_from(ctx, l, q_len, kv_len, causal, tm, tn, NULL, t);
}

sparcl_status sparcl__tiling_build_from(sparcl_ctx *ctx, const sparcl_layout *l, int q_len,
                                        int kv_len, int causal, int tm, int tn,
                                        const sparcl__tiling_prev *prev, sparcl__tiling *t)
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
        sparcl__sat_mul((size_t)ntc, 4 * sizeof(int32_t) + 1),
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
    grow g = {0, 0, 0, fixed, sparcl__mem_host_limit(ctx)};
    int grown = 1;
    int32_t *cand = malloc(sizeof *cand * (size_t)t->ntc);
    int32_t *stamp = calloc((size_t)t->ntc, sizeof *stamp);
    uint32_t *tile = malloc(sizeof *tile * (size_t)tm * (size_t)t->mw);
    /* block rows one tile row crosses, at most */
    const int spans = l ? (int)sparcl__ceil_div_i64(tm, l->block) + 1 : 1;
    int64_t *cur = malloc(sizeof *cur * (size_t)spans);
    /* tile column c's first and last layout block columns: no division per tile */
    int32_t *cblk = malloc(sizeof *cblk * 2 * (size_t)t->ntc);
    uint8_t *full_block = malloc((size_t)t->ntc); /* cand[k]'s block is FULL */
    t->ptr = page_alloc(sizeof *t->ptr * (size_t)t->heads * (size_t)(t->ntr + 1));
    int32_t tag = 0;
    if (!cand || !stamp || !tile || !cur || !cblk || !full_block || !t->ptr)
        goto oom;
    /* The bound checked above holds every tile: reserve it (pages are only
     * touched as tiles are stored) instead of growing by copies. */
    if (tiles > 0 && (t->col = page_alloc(sizeof *t->col * tiles)) &&
        (t->mask = page_alloc(sizeof *t->mask * tiles))) {
        g.cap_c = g.cap_m = (int64_t)tiles;
        g.used += tiles * (sizeof *t->col + sizeof *t->mask);
    }
    for (int c = 0; l && c < t->ntc; ++c) {
        int64_t c0 = (int64_t)c * tn, c1 = c0 + tn < kv_len ? c0 + tn : kv_len;
        cblk[2 * c] = (int32_t)(c0 / l->block);
        cblk[2 * c + 1] = (int32_t)((c1 - 1) / l->block);
    }
    const int reuse = prev_applies(prev, l, q_len, kv_len, causal, tm, tn);
    const int64_t kv_inner = reuse ? (kv_len < prev->kv_len ? kv_len : prev->kv_len) / tn * tn : 0;
    for (int h = 0; h < t->heads; ++h) {
        for (int tr = 0; tr < t->ntr; ++tr) {
            if (t->nnz > INT32_MAX - 1)
                goto too_big;
            t->ptr[(int64_t)h * (t->ntr + 1) + tr] = (int32_t)t->nnz;
            int r0 = (int)((int64_t)tr * tm);
            int r1 = (int)((int64_t)r0 + tm < q_len ? (int64_t)r0 + tm : q_len);
            /* the layout block rows this tile row crosses */
            const int br0 = l ? r0 / l->block : 0, br1 = l ? (r1 - 1) / l->block : 0;
            if (reuse && row_unchanged(prev, l, h, tr, r1, br0, br1, kv_inner)) {
                /* the previous tiling's row, as this build would make it */
                const sparcl__tiling *o = prev->tiling;
                const int32_t *op = o->ptr + (int64_t)h * (o->ntr + 1) + tr;
                for (int32_t e = op[0]; e < op[1]; ++e) {
                    const uint32_t *mb =
                        o->mask[e] < 0 ? NULL : o->bits + (int64_t)o->mask[e] * (int64_t)tile_words;
                    int64_t count = (int64_t)(r1 - r0) * tn;
                    if (mb) {
                        count = 0;
                        for (size_t w = 0; w < tile_words; ++w)
                            count += popcount32(mb[w]);
                    }
                    if ((grown = append_tile(t, &g, o->col[e], mb, count)) != 1)
                        goto append_failed;
                }
                ++t->rows_copied;
                continue;
            }
            int n = 0;
            ++tag;
            if (!l) {
                for (int c = 0; c < t->ntc; ++c)
                    cand[n++] = c;
            } else {
                int B = l->block;
                for (int br = br0; br <= br1; ++br) {
                    const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + br;
                    cur[br - br0] = rp[0];
                    for (int64_t e = rp[0]; e < rp[1]; ++e) {
                        int j0 = l->col[e] * B; /* < kv_len: a stored block */
                        int j1 = (int)((int64_t)j0 + B < kv_len ? (int64_t)j0 + B : kv_len);
                        for (int c = j0 / tn; c <= (j1 - 1) / tn; ++c)
                            if (stamp[c] != tag) {
                                stamp[c] = tag;
                                full_block[n] = l->mask[e] < 0;
                                cand[n++] = c;
                            }
                    }
                }
                int sorted = 1; /* one block row's columns come sorted */
                for (int k = 1; k < n && sorted; ++k)
                    sorted = cand[k - 1] < cand[k];
                if (!sorted)
                    qsort(cand, (size_t)n, sizeof *cand, sparcl__cmp_i32);
            }
            /* One block row whose blocks split into whole tiles: each tile
             * lies in the one block it came from, FULL where that block is. */
            const int own_block = l && br0 == br1 && l->block % tn == 0;
            for (int k = 0; k < n; ++k) {
                int c0 = (int)((int64_t)cand[k] * tn);
                int c1 = (int)((int64_t)c0 + tn < kv_len ? (int64_t)c0 + tn : kv_len);
                if (causal && c0 > (r1 - 1) + off)
                    break; /* this and every later tile lie above the diagonal */
                const int cut = causal && (int64_t)(c1 - 1) > r0 + off;
                /* The common interior tile is FULL without touching a bit. */
                const int covered = !cut && c1 - c0 == tn &&
                                    (own_block ? full_block[k]
                                               : tile_covered(l, h, br0, br1, cblk[2 * cand[k]],
                                                              cblk[2 * cand[k] + 1], cur));
                int64_t count = (int64_t)(r1 - r0) * tn;
                if (!covered) {
                    fill_tile(l, h, r0, r1, c0, c1, t->mw, tile, tm);
                    if (cut) {
                        for (int i = r0; i < r1; ++i) {
                            int64_t last = i + off; /* last key row i may see */
                            int from = last + 1 - c0 < 0 ? 0 : (int)(last + 1 - c0);
                            uint32_t *row = tile + (i - r0) * t->mw;
                            for (int c = from; c < c1 - c0; ++c)
                                row[c / 32] &= ~((uint32_t)1 << (c % 32));
                        }
                    }
                    count = 0;
                    for (int w = 0; w < tm * t->mw; ++w)
                        count += popcount32(tile[w]);
                    if (count == 0)
                        continue;
                }
                const int full = c1 - c0 == tn && count == (int64_t)(r1 - r0) * tn;
                if ((grown = append_tile(t, &g, cand[k], full ? NULL : tile, count)) != 1)
                    goto append_failed;
            }
        }
        t->ptr[(int64_t)h * (t->ntr + 1) + t->ntr] = (int32_t)t->nnz;
    }
    st = SPARCL_OK;
    goto done;
append_failed:
    if (grown == -1) {
        st = sparcl__mem_over_host(ctx, what, g.used);
        goto done;
    }
    if (grown == 0)
        goto oom;
too_big:
    st = sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                      "layout needs more than 2^31 tiles at BLOCK_M %d x BLOCK_N %d", tm, tn);
    goto done;
oom:
    st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the tiled layout");
done:
    free(cand);
    free(stamp);
    free(tile);
    free(cur);
    free(cblk);
    free(full_block);
    if (st != SPARCL_OK)
        sparcl__tiling_free(t);
    return st;
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
