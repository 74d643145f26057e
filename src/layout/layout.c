/*
 * layout.c -- the layout object: the rule-driven builder, the basic
 * patterns of the foundation (dense, causal, sliding window, block mask) and
 * the read-only queries.
 *
 * Generators describe a pattern as a sparcl__rule (candidate block columns,
 * a cheap block classifier, and the exact element predicate); the builder
 * turns that into BSR with per-block bit masks.  Work is proportional to the
 * stored blocks, never to q_len * kv_len.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/array.h"
#include "runtime/checked.h"
#include "runtime/error.h"
#include "layout/layout.h"
#include "layout/layout_rules.h"
#include "runtime/memory.h"

#define MAX_LEN (1 << 30)
#define MAX_BLOCK 1024

sparcl_status sparcl__layout_check_shape(sparcl_ctx *ctx, int heads, int q_len, int kv_len,
                                         int block)
{
    if (heads < 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "heads %d must be >= 1", heads);
    if (q_len < 1 || q_len > MAX_LEN)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "q_len %d must be in [1, 2^30]",
                            q_len);
    if (kv_len < 1 || kv_len > MAX_LEN)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "kv_len %d must be in [1, 2^30]", kv_len);
    if (block < 1 || block > MAX_BLOCK)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "block %d must be in [1, %d]",
                            block, MAX_BLOCK);
    int64_t nbr = (q_len + (int64_t)block - 1) / block;
    if ((int64_t)heads * (nbr + 1) > (int64_t)INT_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "heads %d x block rows %lld overflows", heads, (long long)nbr);
    return SPARCL_OK;
}

sparcl_status sparcl__layout_build(sparcl_ctx *ctx, sparcl_layout **out, int heads, int q_len,
                                   int kv_len, int block, const sparcl__rule *rule)
{
    *out = NULL;
    sparcl_status st = sparcl__layout_check_shape(ctx, heads, q_len, kv_len, block);
    if (st != SPARCL_OK)
        return st;
    /* Memory before building: the fixed arrays, plus the stored blocks when
     * the rule bounds them per row (dense, causal, windows). */
    const int64_t nbr = sparcl__ceil_div_i64(q_len, block),
                  nbc = sparcl__ceil_div_i64(kv_len, block);
    const size_t words = (size_t)(((int64_t)block * block + 63) / 64);
    size_t fixed = sparcl__sat_add(
        sizeof(sparcl_layout),
        sparcl__sat_add(sparcl__sat_mul((size_t)heads * (size_t)(nbr + 1), sizeof(int64_t)),
                        sparcl__sat_add((size_t)nbc * 8u, words * 8u)));
    size_t estimate = fixed;
    if (rule->row_blocks_max > 0)
        estimate =
            sparcl__sat_add(fixed, sparcl__sat_mul(sparcl__sat_mul((size_t)heads * (size_t)nbr,
                                                                   (size_t)rule->row_blocks_max),
                                                   sizeof(int32_t) + sizeof(int64_t)));
    char what[128];
    snprintf(what, sizeof what, "a layout of %d heads x %d x %d at block %d", heads, q_len, kv_len,
             block);
    if ((st = sparcl__mem_check_host(ctx, what, estimate)) != SPARCL_OK)
        return st;
    const size_t limit = sparcl__mem_host_limit(ctx);
    size_t used = fixed;
    sparcl_layout *l = calloc(1, sizeof *l);
    int32_t *cand = NULL, *stamp = NULL;
    uint64_t *scratch = NULL;
    int grown = 1;
    if (!l)
        goto oom;
    l->heads = heads;
    l->q_len = q_len;
    l->kv_len = kv_len;
    l->block = block;
    l->nbr = (q_len + block - 1) / block;
    l->nbc = (kv_len + block - 1) / block;
    l->words_per_mask = (int)(((int64_t)block * block + 63) / 64);
    l->row_ptr = malloc(sizeof *l->row_ptr * (size_t)heads * (size_t)(l->nbr + 1));
    cand = malloc(sizeof *cand * (size_t)l->nbc);
    stamp = calloc((size_t)l->nbc, sizeof *stamp);
    scratch = malloc(sizeof *scratch * (size_t)l->words_per_mask);
    if (!l->row_ptr || !cand || !stamp || !scratch)
        goto oom;

    int64_t cap_c = 0, cap_e = 0, cap_m = 0;
    int32_t tag = 0;
    for (int h = 0; h < heads; ++h) {
        for (int br = 0; br < l->nbr; ++br) {
            l->row_ptr[(int64_t)h * (l->nbr + 1) + br] = l->nnz;
            ++tag;
            if (tag == INT32_MAX) { /* never in practice; keep stamps valid */
                memset(stamp, 0, sizeof *stamp * (size_t)l->nbc);
                tag = 1;
            }
            int n = rule->candidates(rule->self, h, br, cand), u = 0;
            for (int k = 0; k < n; ++k) {
                int32_t c = cand[k];
                if (c < 0 || c >= l->nbc || stamp[c] == tag)
                    continue;
                stamp[c] = tag;
                cand[u++] = c;
            }
            qsort(cand, (size_t)u, sizeof *cand, sparcl__cmp_i32);
            int i0 = br * block, i1 = (int)((int64_t)i0 + block < q_len ? i0 + block : q_len);
            for (int k = 0; k < u; ++k) {
                int bc = cand[k];
                int j0 = bc * block, j1 = (int)((int64_t)j0 + block < kv_len ? j0 + block : kv_len);
                int64_t area = (int64_t)(i1 - i0) * (j1 - j0), count = area;
                int cls = rule->classify ? rule->classify(rule->self, h, br, bc)
                                         : SPARCL__BLOCK_PARTIAL;
                if (cls == SPARCL__BLOCK_EMPTY)
                    continue;
                if (cls == SPARCL__BLOCK_PARTIAL) {
                    memset(scratch, 0, sizeof *scratch * (size_t)l->words_per_mask);
                    count = 0;
                    for (int i = i0; i < i1; ++i) {
                        int64_t row = (int64_t)(i - i0) * block;
                        if (rule->row_span) {
                            int64_t a, b;
                            rule->row_span(rule->self, h, i, &a, &b);
                            a = a > j0 ? a : j0;
                            b = b < j1 ? b : j1;
                            if (b > a) {
                                sparcl__bits_set_range(scratch, row + a - j0, row + b - j0);
                                count += b - a;
                            }
                            continue;
                        }
                        for (int j = j0; j < j1; ++j)
                            if (rule->attends(rule->self, h, i, j)) {
                                int64_t bit = row + (j - j0);
                                scratch[bit / 64] |= (uint64_t)1 << (bit % 64);
                                ++count;
                            }
                    }
                    if (count == 0)
                        continue;
                }
                if ((grown = sparcl__array_grow_capped((void **)&l->col, &cap_c, l->nnz + 1,
                                                       sizeof *l->col, &used, limit)) != 1 ||
                    (grown = sparcl__array_grow_capped((void **)&l->mask, &cap_e, l->nnz + 1,
                                                       sizeof *l->mask, &used, limit)) != 1)
                    goto grow_failed;
                l->col[l->nnz] = bc;
                if (count == area) {
                    l->mask[l->nnz] = -1;
                } else {
                    if ((grown = sparcl__array_grow_capped((void **)&l->bits, &cap_m,
                                                           (l->n_masks + 1) * l->words_per_mask,
                                                           sizeof *l->bits, &used, limit)) != 1)
                        goto grow_failed;
                    memcpy(l->bits + l->n_masks * l->words_per_mask, scratch,
                           sizeof *scratch * (size_t)l->words_per_mask);
                    l->mask[l->nnz] = l->n_masks++;
                }
                l->pairs += count;
                ++l->nnz;
            }
        }
        l->row_ptr[(int64_t)h * (l->nbr + 1) + l->nbr] = l->nnz;
    }
    free(cand);
    free(stamp);
    free(scratch);
    *out = l;
    return SPARCL_OK;
grow_failed:
    if (grown < 0) {
        free(cand);
        free(stamp);
        free(scratch);
        sparcl_layout_free(l);
        return sparcl__mem_over_host(ctx, what, used);
    }
oom:
    free(cand);
    free(stamp);
    free(scratch);
    sparcl_layout_free(l);
    return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the layout");
}

void sparcl__bits_set_range(uint64_t *row, int64_t a, int64_t b)
{
    while (a < b) {
        int64_t w = a / 64;
        int s = (int)(a % 64), n = b - a < 64 - s ? (int)(b - a) : 64 - s;
        row[w] |= (n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << s;
        a += n;
    }
}

uint64_t sparcl__bits_get64(const uint64_t *src, int64_t so, int n)
{
    int64_t w = so / 64;
    int s = (int)(so % 64);
    uint64_t v = src[w] >> s;
    if (s && s + n > 64)
        v |= src[w + 1] << (64 - s);
    return n == 64 ? v : v & (((uint64_t)1 << n) - 1);
}

SPARCL_API void sparcl_layout_free(sparcl_layout *l)
{
    if (!l)
        return;
    free(l->row_ptr);
    free(l->col);
    free(l->mask);
    free(l->bits);
    free(l);
}

/* ---- Dense and causal ------------------------------------------------ */

/* Dense, causal and window are all bands lo <= j - pos(i) <= hi. */
static sparcl_status build_band(sparcl_ctx *ctx, sparcl_layout **out, int heads, int q_len,
                                int kv_len, int block, int64_t lo, int64_t hi)
{
    sparcl__dband b = {{0}, lo, hi, NULL, 0};
    if (block > 0)
        sparcl__geom_init(&b.g, q_len, kv_len, block);
    sparcl__rule rule = sparcl__dband_rule(&b);
    sparcl_status st = sparcl__layout_build(ctx, out, heads, q_len, kv_len, block, &rule);
    if (st == SPARCL_OK)
        sparcl__layout_set_follow(*out, 0, -lo, hi);
    return st;
}

void sparcl__layout_set_follow(sparcl_layout *l, int sink, int64_t left, int64_t right)
{
    l->follow = 1;
    l->follow_sink = sink;
    l->follow_left = left;
    l->follow_right = right;
}

#define CHECK_OUT(out)                                                                    \
    do {                                                                                  \
        if (!(out))                                                                       \
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");         \
        *(out) = NULL;                                                                    \
    } while (0)

SPARCL_API sparcl_status sparcl_layout_init_dense(sparcl_ctx *ctx, sparcl_layout **out,
                                                  int heads, int q_len, int kv_len, int block)
{
    CHECK_OUT(out);
    return build_band(ctx, out, heads, q_len, kv_len, block, -SPARCL__UNBOUNDED,
                      SPARCL__UNBOUNDED);
}

SPARCL_API sparcl_status sparcl_layout_init_causal(sparcl_ctx *ctx, sparcl_layout **out,
                                                   int heads, int q_len, int kv_len, int block)
{
    CHECK_OUT(out);
    return build_band(ctx, out, heads, q_len, kv_len, block, -SPARCL__UNBOUNDED, 0);
}

SPARCL_API sparcl_status sparcl_layout_init_window(sparcl_ctx *ctx, sparcl_layout **out,
                                                   int heads, int q_len, int kv_len, int block,
                                                   int left, int right)
{
    CHECK_OUT(out);
    if (left < 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "window left %d must be >= 0",
                            left);
    if (right < 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "window right %d must be >= 0",
                            right);
    return build_band(ctx, out, heads, q_len, kv_len, block, -(int64_t)left, right);
}

/* ---- Block mask ------------------------------------------------------ */

typedef struct block_mask {
    const uint8_t *mask;
    int nbr, nbc;
} block_mask;

static int mask_candidates(const void *self, int h, int br, int32_t *cols)
{
    const block_mask *m = self;
    const uint8_t *row = m->mask + ((int64_t)h * m->nbr + br) * m->nbc;
    int n = 0;
    for (int c = 0; c < m->nbc; ++c)
        if (row[c])
            cols[n++] = c;
    return n;
}

static int mask_classify(const void *self, int h, int br, int bc)
{
    (void)self, (void)h, (void)br, (void)bc;
    return SPARCL__BLOCK_FULL; /* candidates are exactly the set blocks */
}

static int mask_attends(const void *self, int h, int i, int j)
{
    (void)self, (void)h, (void)i, (void)j;
    return 1;
}

SPARCL_API sparcl_status sparcl_layout_init_block_mask(sparcl_ctx *ctx, sparcl_layout **out,
                                                       int heads, int q_len, int kv_len,
                                                       int block, const uint8_t *mask)
{
    CHECK_OUT(out);
    if (!mask)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "mask is NULL");
    sparcl_status st = sparcl__layout_check_shape(ctx, heads, q_len, kv_len, block);
    if (st != SPARCL_OK)
        return st;
    block_mask m = {mask, (q_len + block - 1) / block, (kv_len + block - 1) / block};
    int64_t total = (int64_t)heads * m.nbr * m.nbc, set = 0;
    for (int64_t k = 0; k < total && !set; ++k)
        set = mask[k] != 0;
    if (!set)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "block mask has no block set (%d heads x %d x %d blocks)", heads,
                            m.nbr, m.nbc);
    sparcl__rule rule = {&m, mask_candidates, mask_classify, mask_attends, NULL, 0};
    return sparcl__layout_build(ctx, out, heads, q_len, kv_len, block, &rule);
}

/* ---- Queries --------------------------------------------------------- */

SPARCL_API int sparcl_layout_heads(const sparcl_layout *l) { return l ? l->heads : 0; }
SPARCL_API int sparcl_layout_q_len(const sparcl_layout *l) { return l ? l->q_len : 0; }
SPARCL_API int sparcl_layout_kv_len(const sparcl_layout *l) { return l ? l->kv_len : 0; }
SPARCL_API int sparcl_layout_block(const sparcl_layout *l) { return l ? l->block : 0; }
SPARCL_API int64_t sparcl_layout_pairs(const sparcl_layout *l) { return l ? l->pairs : 0; }
SPARCL_API int64_t sparcl_layout_nnz_blocks(const sparcl_layout *l) { return l ? l->nnz : 0; }

SPARCL_API double sparcl_layout_density(const sparcl_layout *l)
{
    if (!l)
        return 0.0;
    return (double)l->pairs / ((double)l->heads * l->q_len * (double)l->kv_len);
}

SPARCL_API int sparcl_layout_attends(const sparcl_layout *l, int h, int i, int j)
{
    if (!l || h < 0 || h >= l->heads || i < 0 || i >= l->q_len || j < 0 || j >= l->kv_len)
        return 0;
    int br = i / l->block, bc = j / l->block;
    int64_t e = sparcl__layout_find(l, h, br, bc);
    return e >= 0 && sparcl__layout_entry_bit(l, e, i - br * l->block, j - bc * l->block);
}

int64_t sparcl__layout_lower_bound(const sparcl_layout *l, int h, int br, int bc)
{
    const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + br;
    int64_t lo = rp[0], hi = rp[1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (l->col[mid] < bc)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int64_t sparcl__layout_find(const sparcl_layout *l, int h, int br, int bc)
{
    int64_t e = sparcl__layout_lower_bound(l, h, br, bc);
    return e < l->row_ptr[(int64_t)h * (l->nbr + 1) + br + 1] && l->col[e] == bc ? e : -1;
}

int sparcl__layout_blocks_class(const sparcl_layout *l, int h, int r0, int r1, int c0, int c1)
{
    int found = 0, full = 1;
    for (int r = r0; r <= r1; ++r)
        for (int c = c0; c <= c1; ++c) {
            const int64_t e = sparcl__layout_find(l, h, r, c);
            if (e < 0)
                full = 0;
            else {
                found = 1;
                full &= l->mask[e] < 0;
            }
        }
    if (!found)
        return SPARCL__BLOCK_EMPTY;
    return full ? SPARCL__BLOCK_FULL : SPARCL__BLOCK_PARTIAL;
}
