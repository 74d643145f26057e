/*
 * layout_slice.c -- a rectangle of an existing layout as a layout of its
 * own: the queries [q0, q0 + q_len) and keys [k0, k0 + kv_len) of the
 * parent, optionally cut to the parent's causal half-plane
 * (sparcl_layout_init_slice: what a rank of a sequence split over
 * processes runs against one shard of keys, the MPI ring of src/mpi/), and
 * optionally only some of its heads (sparcl__layout_slice: a device's share
 * of a multi-device plan, plan/multi_plan.c).
 *
 * The slice is read from the parent as a rule: candidate columns come from
 * the parent's stored blocks that overlap the rectangle (found by binary
 * search, so the work follows the slice, not the parent's rows), a slice
 * block is FULL when every parent block under it is stored FULL and the
 * causal edge does not cross it, and only the remaining blocks are read
 * element by element.
 */
#include <stdlib.h>

#include "layout/layout.h"
#include "layout/layout_rules.h"
#include "layout/layout_slice.h"
#include "runtime/error.h"

typedef struct slice_rule {
    const sparcl_layout *p;
    int h0; /* the slice's head 0 is the parent's head h0 (per-head parents) */
    int q0, k0, q_len, kv_len, block, nbc;
    int causal;
    int64_t poff;        /* parent kv_len - q_len: pos(i) = i + poff */
    int32_t *stamp, tag; /* candidate de-duplication, nbc entries */
} slice_rule;

static int parent_head(const slice_rule *s, int h)
{
    return s->p->heads == 1 ? 0 : s->h0 + h;
}

/* Slice rows [*i0, *i1) of block row br, keys [*j0, *j1) of block column bc. */
static void slice_rows(const slice_rule *s, int br, int *i0, int *i1)
{
    *i0 = br * s->block;
    *i1 = *i0 + s->block < s->q_len ? *i0 + s->block : s->q_len;
}

static void slice_cols(const slice_rule *s, int bc, int *j0, int *j1)
{
    *j0 = bc * s->block;
    *j1 = *j0 + s->block < s->kv_len ? *j0 + s->block : s->kv_len;
}

static int slice_candidates(const void *self, int h, int br, int32_t *cols)
{
    slice_rule *s = (slice_rule *)self;
    const sparcl_layout *p = s->p;
    const int ph = parent_head(s, h), pb = p->block;
    int i0, i1;
    slice_rows(s, br, &i0, &i1);
    if (++s->tag == INT32_MAX) {
        for (int c = 0; c < s->nbc; ++c)
            s->stamp[c] = 0;
        s->tag = 1;
    }
    const int pr0 = (s->q0 + i0) / pb, pr1 = (s->q0 + i1 - 1) / pb;
    const int pc0 = s->k0 / pb, pc1 = (s->k0 + s->kv_len - 1) / pb;
    int n = 0;
    for (int pr = pr0; pr <= pr1; ++pr) {
        const int64_t end = p->row_ptr[(int64_t)ph * (p->nbr + 1) + pr + 1];
        for (int64_t e = sparcl__layout_lower_bound(p, ph, pr, pc0); e < end && p->col[e] <= pc1;
             ++e) {
            int64_t a = (int64_t)p->col[e] * pb - s->k0, b = a + pb - 1;
            a = a < 0 ? 0 : a;
            b = b >= s->kv_len ? s->kv_len - 1 : b;
            for (int64_t c = a / s->block; c <= b / s->block; ++c)
                if (s->stamp[c] != s->tag) {
                    s->stamp[c] = s->tag;
                    cols[n++] = (int32_t)c;
                }
        }
    }
    return n;
}

static int slice_classify(const void *self, int h, int br, int bc)
{
    const slice_rule *s = self;
    const sparcl_layout *p = s->p;
    const int ph = parent_head(s, h), pb = p->block;
    int i0, i1, j0, j1;
    slice_rows(s, br, &i0, &i1);
    slice_cols(s, bc, &j0, &j1);
    int crossing = 0;
    if (s->causal) {
        /* key k attends from parent row r iff k <= r + poff */
        if ((int64_t)s->k0 + j0 > (int64_t)s->q0 + i1 - 1 + s->poff)
            return SPARCL__BLOCK_EMPTY;
        crossing = (int64_t)s->k0 + j1 - 1 > (int64_t)s->q0 + i0 + s->poff;
    }
    const int c = sparcl__layout_blocks_class(p, ph, (s->q0 + i0) / pb, (s->q0 + i1 - 1) / pb,
                                              (s->k0 + j0) / pb, (s->k0 + j1 - 1) / pb);
    return c == SPARCL__BLOCK_FULL && crossing ? SPARCL__BLOCK_PARTIAL : c;
}

static int slice_attends(const void *self, int h, int i, int j)
{
    const slice_rule *s = self;
    int64_t r = (int64_t)s->q0 + i, k = (int64_t)s->k0 + j;
    if (s->causal && k > r + s->poff)
        return 0;
    return sparcl_layout_attends(s->p, parent_head(s, h), (int)r, (int)k);
}

/* A bound on the stored blocks of one block row of the slice, so that the
 * builder can refuse a slice too large for memory before building it: a
 * slice block row spans at most block / pb + 2 parent block rows, each
 * stores at most the parent's fullest row, and each parent block covers
 * at most pb / block + 2 slice columns. */
static int64_t slice_row_blocks_max(const sparcl_layout *p, int block, int nbc)
{
    int64_t fullest = 0;
    for (int64_t r = 0; r < (int64_t)p->heads * (p->nbr + 1); ++r)
        if (r % (p->nbr + 1) != p->nbr) {
            const int64_t n = p->row_ptr[r + 1] - p->row_ptr[r];
            fullest = n > fullest ? n : fullest;
        }
    const int64_t bound = ((int64_t)block / p->block + 2) * fullest * (p->block / block + 2);
    return bound < nbc ? bound : nbc;
}

/* The slice of heads [h0, h0 + heads) (all of a one-head parent), queries
 * [q0, q0 + q_len) and keys [k0, k0 + kv_len) at `block`; the rectangle
 * has been checked. */
static sparcl_status slice(sparcl_ctx *ctx, sparcl_layout **out, const sparcl_layout *layout,
                           int causal, int h0, int heads, int q0, int q_len, int k0, int kv_len,
                           int block)
{
    slice_rule s = {layout,      h0,
                    q0,          k0,
                    q_len,       kv_len,
                    block,       (kv_len + block - 1) / block,
                    causal != 0, (int64_t)layout->kv_len - layout->q_len,
                    NULL,        0};
    s.stamp = calloc((size_t)s.nbc, sizeof *s.stamp);
    if (!s.stamp)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate slice scratch");
    sparcl__rule rule = {&s,
                         slice_candidates,
                         slice_classify,
                         slice_attends,
                         NULL,
                         slice_row_blocks_max(layout, block, s.nbc)};
    sparcl_status st =
        sparcl__layout_build(ctx, out, layout->heads == 1 ? 1 : heads, q_len, kv_len, block, &rule);
    free(s.stamp);
    return st;
}

SPARCL_API sparcl_status sparcl_layout_init_slice(sparcl_ctx *ctx, sparcl_layout **out,
                                                  const sparcl_layout *layout, int causal, int q0,
                                                  int q_len, int k0, int kv_len, int block)
{
    if (!out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!layout)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "layout is NULL");
    if (block == 0)
        block = layout->block;
    sparcl_status st = sparcl__layout_check_shape(ctx, layout->heads, q_len, kv_len, block);
    if (st != SPARCL_OK)
        return st;
    if (q0 < 0 || q0 > layout->q_len - q_len)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "q0 %d, q_len %d: slice queries [%d, %lld) are not within the "
                            "layout's q_len %d",
                            q0, q_len, q0, (long long)q0 + q_len, layout->q_len);
    if (k0 < 0 || k0 > layout->kv_len - kv_len)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "k0 %d, kv_len %d: slice keys [%d, %lld) are not within the "
                            "layout's kv_len %d",
                            k0, kv_len, k0, (long long)k0 + kv_len, layout->kv_len);
    return slice(ctx, out, layout, causal, 0, layout->heads, q0, q_len, k0, kv_len, block);
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
    return slice(ctx, out, src, 0, h0, heads, i0, q_len, j0, kv_len, src->block);
}
