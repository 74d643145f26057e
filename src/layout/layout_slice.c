/*
 * layout_slice.c -- a rectangle of a layout as a layout of its own: some
 * query heads, a range of query rows and a range of keys, renumbered from
 * zero.  Multi-device plans (plan/multi_plan.c) give each device the slice
 * of the pattern its share of the call covers.  A slice is token-exact:
 * sub-head h, row i and key j attend iff the source's (h0 + h, i0 + i,
 * j0 + j) do; the bottom-right alignment of q_len != kv_len plays no part,
 * because a layout stores pairs, not positions.
 */
#include <stdlib.h>

#include "layout/layout.h"
#include "layout/layout_slice.h"
#include "runtime/error.h"

typedef struct slice_rule {
    const sparcl_layout *src;
    int h0, i0, j0, q_len, kv_len;
    int aligned;    /* i0 and j0 are multiples of the block: blocks map one to one */
    int32_t *stamp; /* per sub block column: the call that last emitted it */
    int32_t tag;
} slice_rule;

static int src_head(const slice_rule *r, int h)
{
    return r->src->heads == 1 ? 0 : r->h0 + h;
}

static int slice_candidates(const void *self, int h, int br, int32_t *cols)
{
    slice_rule *r = (slice_rule *)self; /* the stamps are scratch of this build */
    const sparcl_layout *l = r->src;
    const int B = l->block, sh = src_head(r, h);
    const int64_t ra = (int64_t)r->i0 + (int64_t)br * B;
    const int64_t rb = ra + B < (int64_t)r->i0 + r->q_len ? ra + B : (int64_t)r->i0 + r->q_len;
    const int64_t ka = r->j0, kb = (int64_t)r->j0 + r->kv_len; /* source keys [ka, kb) */
    if (++r->tag == INT32_MAX) {
        const int nbc = (int)((r->kv_len + (int64_t)B - 1) / B);
        for (int c = 0; c < nbc; ++c)
            r->stamp[c] = 0;
        r->tag = 1;
    }
    int n = 0;
    for (int64_t sr = ra / B; sr <= (rb - 1) / B; ++sr) {
        const int64_t *rp = l->row_ptr + (int64_t)sh * (l->nbr + 1) + sr;
        for (int64_t e = rp[0]; e < rp[1]; ++e) {
            int64_t a = (int64_t)l->col[e] * B, b = a + B; /* the source block's keys */
            a = a > ka ? a : ka;
            b = b < kb ? b : kb;
            if (b <= a)
                continue;
            for (int64_t c = (a - ka) / B; c <= (b - 1 - ka) / B; ++c)
                if (r->stamp[c] != r->tag) {
                    r->stamp[c] = r->tag;
                    cols[n++] = (int32_t)c;
                }
        }
    }
    return n;
}

static int slice_classify(const void *self, int h, int br, int bc)
{
    const slice_rule *r = self;
    if (!r->aligned)
        return SPARCL__BLOCK_PARTIAL;
    const sparcl_layout *l = r->src;
    /* Aligned: sub block (br, bc) is source block (br + i0/B, bc + j0/B)
     * clipped to the rectangle, so FULL stays FULL. */
    int64_t e =
        sparcl__layout_find(l, src_head(r, h), br + r->i0 / l->block, bc + r->j0 / l->block);
    return e < 0            ? SPARCL__BLOCK_EMPTY
           : l->mask[e] < 0 ? SPARCL__BLOCK_FULL
                            : SPARCL__BLOCK_PARTIAL;
}

static int slice_attends(const void *self, int h, int i, int j)
{
    const slice_rule *r = self;
    return sparcl_layout_attends(r->src, src_head(r, h), r->i0 + i, r->j0 + j);
}

sparcl_status sparcl__layout_slice(sparcl_ctx *ctx, const sparcl_layout *src, int h0, int heads,
                                   int i0, int q_len, int j0, int kv_len, sparcl_layout **out)
{
    *out = NULL;
    if (!src || heads < 1 || q_len < 1 || kv_len < 1 || h0 < 0 || i0 < 0 || j0 < 0 ||
        (src->heads > 1 && (int64_t)h0 + heads > src->heads) || (int64_t)i0 + q_len > src->q_len ||
        (int64_t)j0 + kv_len > src->kv_len)
        return sparcl__fail(ctx, SPARCL_ERR_INTERNAL,
                            "layout slice heads %d+%d rows %d+%d keys %d+%d outside the layout", h0,
                            heads, i0, q_len, j0, kv_len);
    const int B = src->block;
    slice_rule r = {src, h0, i0, j0, q_len, kv_len, i0 % B == 0 && j0 % B == 0, NULL, 0};
    r.stamp = calloc((size_t)((kv_len + (int64_t)B - 1) / B), sizeof *r.stamp);
    if (!r.stamp)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a layout slice");
    const sparcl__rule rule = {&r, slice_candidates, slice_classify, slice_attends, NULL, 0};
    sparcl_status st =
        sparcl__layout_build(ctx, out, src->heads == 1 ? 1 : heads, q_len, kv_len, B, &rule);
    free(r.stamp);
    return st;
}
