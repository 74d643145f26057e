/*
 * layout_user.c -- layouts the application describes itself: BSR arrays
 * of full blocks, token-level CSR arrays, and a predicate callback.
 *
 * The arrays are validated completely before anything is built (the
 * message names the first bad entry), then read through the same rule
 * interface as every generator, so user layouts get the same storage,
 * statistics and re-blocking as the built-in ones.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/array.h"
#include "runtime/error.h"
#include "layout/layout_rules.h"

#define FAIL_ARG(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* Checks a row pointer of `rows` + 1 entries and the indices it covers
 * (each in [0, limit)); *nnz receives the total.  max_row (>0) bounds the
 * entries of one row. */
static sparcl_status check_compressed(sparcl_ctx *ctx, const char *kind, const int64_t *row_ptr,
                                      const int32_t *col_idx, int64_t rows, int64_t limit,
                                      int64_t max_row, int64_t *nnz)
{
    if (!row_ptr)
        return FAIL_ARG("%s row_ptr is NULL", kind);
    if (row_ptr[0] != 0)
        return FAIL_ARG("%s row_ptr[0] %lld must be 0", kind, (long long)row_ptr[0]);
    for (int64_t r = 0; r < rows; ++r) {
        int64_t len = row_ptr[r + 1] - row_ptr[r];
        if (len < 0)
            return FAIL_ARG("%s row_ptr[%lld] %lld is below row_ptr[%lld] %lld", kind,
                            (long long)(r + 1), (long long)row_ptr[r + 1], (long long)r,
                            (long long)row_ptr[r]);
        if (max_row > 0 && len > max_row)
            return FAIL_ARG("%s row %lld has %lld entries, more than the %lld columns", kind,
                            (long long)r, (long long)len, (long long)max_row);
    }
    *nnz = row_ptr[rows];
    if (*nnz == 0)
        return FAIL_ARG("%s has no entry: the layout would be empty", kind);
    if (!col_idx)
        return FAIL_ARG("%s col_idx is NULL", kind);
    for (int64_t e = 0; e < *nnz; ++e)
        if (col_idx[e] < 0 || col_idx[e] >= limit)
            return FAIL_ARG("%s col_idx[%lld] %d must be in [0, %lld)", kind, (long long)e,
                            col_idx[e], (long long)limit);
    return SPARCL_OK;
}

/* ---- BSR --------------------------------------------------------------- */

typedef struct bsr {
    int nbr;
    const int64_t *row_ptr;
    const int32_t *col;
} bsr;

static int bsr_candidates(const void *self, int h, int br, int32_t *cols)
{
    const bsr *b = self;
    int64_t r = (int64_t)h * b->nbr + br, n = b->row_ptr[r + 1] - b->row_ptr[r];
    memcpy(cols, b->col + b->row_ptr[r], sizeof *cols * (size_t)n);
    return (int)n;
}

static int bsr_classify(const void *self, int h, int br, int bc)
{
    (void)self, (void)h, (void)br, (void)bc;
    return SPARCL__BLOCK_FULL; /* asked only about listed blocks */
}

static int bsr_attends(const void *self, int h, int i, int j)
{
    (void)self, (void)h, (void)i, (void)j;
    return 1;
}

SPARCL_API sparcl_status sparcl_layout_init_bsr(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                int q_len, int kv_len, int block,
                                                const int64_t *row_ptr, const int32_t *col_idx)
{
    sparcl__geom g;
    int64_t nnz;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK)
        st = check_compressed(ctx, "bsr", row_ptr, col_idx, (int64_t)heads * g.nbr, g.nbc, g.nbc,
                              &nnz);
    if (st != SPARCL_OK)
        return st;
    bsr b = {g.nbr, row_ptr, col_idx};
    sparcl__rule rule = {&b, bsr_candidates, bsr_classify, bsr_attends, NULL, 0};
    return sparcl__layout_build(ctx, out, heads, q_len, kv_len, block, &rule);
}

/* ---- CSR --------------------------------------------------------------- */

typedef struct csr {
    sparcl__geom g;
    const int64_t *row_ptr;
    int32_t *keys; /* sorted copy of each row */
    sparcl__set_scratch *scratch;
} csr;

static int csr_candidates(const void *self, int h, int br, int32_t *cols)
{
    const csr *c = self;
    int64_t p0, p1, n = 0;
    sparcl__geom_rows(&c->g, br, &p0, &p1);
    int64_t r0 = (int64_t)h * c->g.q_len + p0 - c->g.off, r1 = r0 + (p1 - p0);
    sparcl__scratch_next(c->scratch, c->g.nbc);
    for (int64_t e = c->row_ptr[r0]; e < c->row_ptr[r1 + 1]; ++e)
        n = sparcl__scratch_add(c->scratch, c->keys[e] / c->g.block, cols, (int)n);
    return (int)n;
}

static int csr_attends(const void *self, int h, int i, int j)
{
    const csr *c = self;
    int64_t r = (int64_t)h * c->g.q_len + i;
    const int32_t *k = c->keys + c->row_ptr[r];
    size_t n = (size_t)(c->row_ptr[r + 1] - c->row_ptr[r]);
    int32_t key = j;
    return bsearch(&key, k, n, sizeof *k, sparcl__cmp_i32) != NULL;
}

SPARCL_API sparcl_status sparcl_layout_init_csr(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                int q_len, int kv_len, int block,
                                                const int64_t *row_ptr, const int32_t *col_idx)
{
    sparcl__geom g;
    int64_t nnz, rows = (int64_t)heads * q_len;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK)
        st = check_compressed(ctx, "csr", row_ptr, col_idx, rows, kv_len, 0, &nnz);
    if (st != SPARCL_OK)
        return st;
    sparcl__set_scratch scratch;
    csr c = {g, row_ptr, malloc(sizeof *c.keys * (size_t)nnz), &scratch};
    st = sparcl__scratch_init(ctx, &scratch, g.nbc);
    if (st == SPARCL_OK && !c.keys)
        st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot copy %lld csr entries",
                          (long long)nnz);
    if (st == SPARCL_OK) {
        memcpy(c.keys, col_idx, sizeof *c.keys * (size_t)nnz);
        for (int64_t r = 0; r < rows; ++r)
            qsort(c.keys + row_ptr[r], (size_t)(row_ptr[r + 1] - row_ptr[r]), sizeof *c.keys,
                  sparcl__cmp_i32);
        sparcl__rule rule = {&c, csr_candidates, NULL, csr_attends, NULL, 0};
        st = sparcl__layout_build(ctx, out, heads, q_len, kv_len, block, &rule);
    }
    sparcl__scratch_free(&scratch);
    free(c.keys);
    return st;
}

/* ---- Predicate --------------------------------------------------------- */

typedef struct predicate {
    int nbc;
    sparcl_layout_predicate fn;
    void *user;
} predicate;

static int pred_candidates(const void *self, int h, int br, int32_t *cols)
{
    (void)h, (void)br;
    const predicate *p = self;
    for (int c = 0; c < p->nbc; ++c)
        cols[c] = c;
    return p->nbc;
}

static int pred_attends(const void *self, int h, int i, int j)
{
    const predicate *p = self;
    return p->fn(p->user, h, i, j) != 0;
}

SPARCL_API sparcl_status sparcl_layout_init_predicate(sparcl_ctx *ctx, sparcl_layout **out,
                                                      int heads, int q_len, int kv_len, int block,
                                                      sparcl_layout_predicate fn, void *user)
{
    sparcl__geom g;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st != SPARCL_OK)
        return st;
    if (!fn)
        return FAIL_ARG("predicate fn is NULL");
    predicate p = {g.nbc, fn, user};
    sparcl__rule rule = {&p, pred_candidates, NULL, pred_attends, NULL, 0};
    st = sparcl__layout_build(ctx, out, heads, q_len, kv_len, block, &rule);
    if (st == SPARCL_OK && (*out)->pairs == 0) {
        sparcl_layout_free(*out);
        *out = NULL;
        return FAIL_ARG("predicate attends no pair in %d heads x %d x %d: the layout would be "
                        "empty",
                        heads, q_len, kv_len);
    }
    return st;
}
