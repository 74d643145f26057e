/*
 * layout_varlen.c -- packed variable-length batches as one layout
 * (sparcl_layout_init_varlen): sequence s's queries are the packed rows
 * [cu_q[s], cu_q[s + 1]) and its keys the packed keys [cu_k[s], cu_k[s +
 * 1]); its own layout (or dense, for NULL) places its pairs on the block
 * diagonal and nothing crosses from one sequence to another.  A plan over
 * the packed layout then runs the whole batch in one call with the fused
 * kernels as they are: tiles that straddle a boundary are PARTIAL and
 * carry their masks, so the result is token-exact per sequence.
 *
 * The packed layout is read from the sequences' layouts as a rule:
 * candidate columns come from the stored blocks of the sequences that a
 * block row meets (the work follows the sequences' blocks, not the packed
 * width), a block inside one sequence is FULL when every block of the
 * sequence's layout under it is stored FULL, and only blocks on a boundary
 * or over PARTIAL sequence blocks are read element by element.
 */
#include <stdlib.h>

#include "layout/layout.h"
#include "runtime/error.h"

typedef struct varlen_rule {
    int count, block, nbc, heads;
    const int32_t *cu_q, *cu_k;
    const sparcl_layout *const *seqs;
    int32_t *stamp, tag; /* candidate de-duplication, nbc entries */
    /* attends() is asked row by row, block by block: the last row's
     * sequence and the last sequence block's entry are kept. */
    int last_i, last_s;
    const sparcl_layout *last_l;
    int last_h, last_br, last_bc;
    int64_t last_e;
} varlen_rule;

/* The sequence that holds packed query row i: the last s with cu_q[s] <= i
 * (that one is not empty, else s + 1 would qualify too). */
static int seq_of_row(const varlen_rule *v, int i)
{
    int lo = 0, hi = v->count - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (v->cu_q[mid] <= i)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static int seq_head(const sparcl_layout *l, int h)
{
    return l->heads == 1 ? 0 : h;
}

/* Marks the packed block columns of keys [a, b] of sequence s (inclusive,
 * sequence coordinates) into cols, once each per block row. */
static int emit(varlen_rule *v, int s, int64_t a, int64_t b, int32_t *cols, int n)
{
    for (int64_t c = (v->cu_k[s] + a) / v->block; c <= (v->cu_k[s] + b) / v->block; ++c)
        if (v->stamp[c] != v->tag) {
            v->stamp[c] = v->tag;
            cols[n++] = (int32_t)c;
        }
    return n;
}

static int varlen_candidates(const void *self, int h, int br, int32_t *cols)
{
    varlen_rule *v = (varlen_rule *)self;
    const int tq = v->cu_q[v->count];
    const int i0 = br * v->block, i1 = i0 + v->block < tq ? i0 + v->block : tq;
    if (++v->tag == INT32_MAX) {
        for (int c = 0; c < v->nbc; ++c)
            v->stamp[c] = 0;
        v->tag = 1;
    }
    int n = 0;
    for (int s = seq_of_row(v, i0); s < v->count && v->cu_q[s] < i1; ++s) {
        const int kl = v->cu_k[s + 1] - v->cu_k[s];
        if (kl == 0 || v->cu_q[s + 1] == v->cu_q[s])
            continue;
        const sparcl_layout *l = v->seqs[s];
        if (!l) {
            n = emit(v, s, 0, kl - 1, cols, n);
            continue;
        }
        /* the sequence's own block rows under packed rows [i0, i1) */
        const int r0 = (i0 > v->cu_q[s] ? i0 - v->cu_q[s] : 0) / l->block;
        const int r1 = ((i1 < v->cu_q[s + 1] ? i1 : v->cu_q[s + 1]) - v->cu_q[s] - 1) / l->block;
        const int lh = seq_head(l, h);
        for (int r = r0; r <= r1; ++r) {
            const int64_t *rp = l->row_ptr + (int64_t)lh * (l->nbr + 1) + r;
            for (int64_t e = rp[0]; e < rp[1]; ++e) {
                const int64_t a = (int64_t)l->col[e] * l->block, b = a + l->block - 1;
                n = emit(v, s, a, b < kl ? b : kl - 1, cols, n);
            }
        }
    }
    return n;
}

static int varlen_classify(const void *self, int h, int br, int bc)
{
    const varlen_rule *v = self;
    const int tq = v->cu_q[v->count], tk = v->cu_k[v->count];
    const int i0 = br * v->block, i1 = (i0 + v->block < tq ? i0 + v->block : tq) - 1;
    const int j0 = bc * v->block, j1 = (j0 + v->block < tk ? j0 + v->block : tk) - 1;
    const int s = seq_of_row(v, i0);
    if (s != seq_of_row(v, i1) || j0 < v->cu_k[s] || j1 >= v->cu_k[s + 1])
        return SPARCL__BLOCK_PARTIAL; /* a boundary crosses the block */
    const sparcl_layout *l = v->seqs[s];
    if (!l)
        return SPARCL__BLOCK_FULL;
    const int lb = l->block;
    return sparcl__layout_blocks_class(l, seq_head(l, h), (i0 - v->cu_q[s]) / lb,
                                       (i1 - v->cu_q[s]) / lb, (j0 - v->cu_k[s]) / lb,
                                       (j1 - v->cu_k[s]) / lb);
}

static int varlen_attends(const void *self, int h, int i, int j)
{
    varlen_rule *v = (varlen_rule *)self; /* the builder's own, for the caches */
    if (i != v->last_i) {
        v->last_i = i;
        v->last_s = seq_of_row(v, i);
    }
    const int s = v->last_s;
    if (j < v->cu_k[s] || j >= v->cu_k[s + 1])
        return 0;
    const sparcl_layout *l = v->seqs[s];
    if (!l)
        return 1;
    const int a = i - v->cu_q[s], b = j - v->cu_k[s], lh = seq_head(l, h);
    const int br = a / l->block, bc = b / l->block;
    if (l != v->last_l || lh != v->last_h || br != v->last_br || bc != v->last_bc) {
        v->last_l = l;
        v->last_h = lh;
        v->last_br = br;
        v->last_bc = bc;
        v->last_e = sparcl__layout_find(l, lh, br, bc);
    }
    return v->last_e >= 0 &&
           sparcl__layout_entry_bit(l, v->last_e, a - br * l->block, b - bc * l->block);
}

/* Checks one offsets array: count + 1 entries from 0, never decreasing,
 * the total at least 1 and at most the layout limit. */
static sparcl_status check_offsets(sparcl_ctx *ctx, const char *name, const int32_t *cu, int count)
{
    if (!cu)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", name);
    if (cu[0] != 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s[0] is %d, must be 0", name,
                            (int)cu[0]);
    for (int s = 0; s < count; ++s)
        if (cu[s + 1] < cu[s])
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s decreases at sequence %d: %s[%d] = %d > %s[%d] = %d", name, s,
                                name, s, (int)cu[s], name, s + 1, (int)cu[s + 1]);
    if (cu[count] < 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s[%d] = 0: the packed batch has no %s at all", name, count,
                            name[3] == 'q' ? "query" : "key");
    return SPARCL_OK;
}

/* Checks the sequences' layouts against the offsets; the packed heads into
 * *heads and the first layout's block into *block0 (0: none). */
static sparcl_status check_seqs(sparcl_ctx *ctx, int count, const int32_t *cu_q,
                                const int32_t *cu_k, const sparcl_layout *const *seqs, int *heads,
                                int *block0)
{
    *heads = 1;
    *block0 = 0;
    for (int s = 0; s < count; ++s) {
        const sparcl_layout *l = seqs[s];
        const int ql = cu_q[s + 1] - cu_q[s], kl = cu_k[s + 1] - cu_k[s];
        if (!l)
            continue;
        if (l->q_len != ql || l->kv_len != kl)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "seqs[%d] is %d x %d but the offsets give sequence %d %d queries "
                                "and %d keys",
                                s, l->q_len, l->kv_len, s, ql, kl);
        if (l->heads != 1 && *heads != 1 && l->heads != *heads)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "seqs[%d] has %d heads but an earlier sequence has %d (each "
                                "must have 1 or the same count)",
                                s, l->heads, *heads);
        if (l->heads != 1)
            *heads = l->heads;
        if (!*block0)
            *block0 = l->block;
    }
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_layout_init_varlen(sparcl_ctx *ctx, sparcl_layout **out, int count,
                                                   const int32_t *cu_q, const int32_t *cu_k,
                                                   const sparcl_layout *const *seqs, int block)
{
    if (!out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (count < 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "count %d must be >= 1", count);
    if (!seqs)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "seqs is NULL");
    if (block < 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "block %d must be >= 0", block);
    sparcl_status st = check_offsets(ctx, "cu_q", cu_q, count);
    if (st == SPARCL_OK)
        st = check_offsets(ctx, "cu_k", cu_k, count);
    int heads = 1, block0 = 0;
    if (st == SPARCL_OK)
        st = check_seqs(ctx, count, cu_q, cu_k, seqs, &heads, &block0);
    if (st != SPARCL_OK)
        return st;
    if (block == 0)
        block = block0 ? block0 : 64;
    st = sparcl__layout_check_shape(ctx, heads, cu_q[count], cu_k[count], block);
    if (st != SPARCL_OK)
        return st;
    varlen_rule v = {count, block, (cu_k[count] + block - 1) / block,
                     heads, cu_q,  cu_k,
                     seqs,  NULL,  0,
                     -1,    0,     NULL,
                     0,     0,     0,
                     -1};
    v.stamp = calloc((size_t)v.nbc, sizeof *v.stamp);
    if (!v.stamp)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate varlen scratch");
    sparcl__rule rule = {&v, varlen_candidates, varlen_classify, varlen_attends, NULL, 0};
    st = sparcl__layout_build(ctx, out, heads, cu_q[count], cu_k[count], block, &rule);
    free(v.stamp);
    if (st == SPARCL_OK && (*out)->pairs == 0) {
        sparcl_layout_free(*out);
        *out = NULL;
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "the packed batch attends no pair at all");
    }
    return st;
}
