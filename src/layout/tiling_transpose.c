/*
 * tiling_transpose.c -- lists a tiling's tiles by column for the backward
 * dK/dV kernel.  See tiling_transpose.h.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"
#include "layout/tiling_transpose.h"

sparcl_status sparcl__tiling_transpose(sparcl_ctx *ctx, const sparcl__tiling *t,
                                       sparcl__tiling_cols *c)
{
    memset(c, 0, sizeof *c);
    c->heads = t->heads;
    c->ntc = t->ntc;
    /* Per-head list lengths: counts of a built tiling, so non-negative. */
    const size_t col_ptrs = (size_t)(t->ntc + 1), row_ptrs = (size_t)(t->ntr + 1);
    const size_t nptr = (size_t)t->heads * col_ptrs;
    c->ptr = calloc(nptr, sizeof *c->ptr);
    c->row = malloc(sizeof *c->row * (size_t)(t->nnz ? t->nnz : 1));
    c->mask = malloc(sizeof *c->mask * (size_t)(t->nnz ? t->nnz : 1));
    int32_t *next = malloc(sizeof *next * nptr);
    if (!c->ptr || !c->row || !c->mask || !next) {
        free(next);
        sparcl__tiling_cols_free(c);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the column tiling");
    }
    /* Count tiles per (head, column), then prefix-sum into offsets.  Head h
     * owns ptr[h*(ntc+1) .. h*(ntc+1)+ntc]; entries stay grouped by head in
     * the same order as the forward's. */
    for (int h = 0; h < t->heads; ++h) {
        int32_t *cp = c->ptr + (size_t)h * col_ptrs;
        const int32_t *rp = t->ptr + (size_t)h * row_ptrs;
        for (int32_t e = rp[0]; e < rp[t->ntr]; ++e)
            ++cp[t->col[e] + 1];
        cp[0] = rp[0];
        for (int col = 0; col < t->ntc; ++col)
            cp[col + 1] += cp[col];
        memcpy(next + (size_t)h * col_ptrs, cp, sizeof *cp * col_ptrs);
    }
    /* Walking the forward lists row by row places each column's tiles in
     * ascending row order, which fixes the summation order of dK/dV. */
    for (int h = 0; h < t->heads; ++h) {
        int32_t *nx = next + (size_t)h * col_ptrs;
        const int32_t *rp = t->ptr + (size_t)h * row_ptrs;
        for (int tr = 0; tr < t->ntr; ++tr)
            for (int32_t e = rp[tr]; e < rp[tr + 1]; ++e) {
                int32_t at = nx[t->col[e]]++;
                c->row[at] = tr;
                c->mask[at] = t->mask[e];
            }
    }
    free(next);
    return SPARCL_OK;
}

void sparcl__tiling_cols_free(sparcl__tiling_cols *c)
{
    if (!c)
        return;
    free(c->ptr);
    free(c->row);
    free(c->mask);
    memset(c, 0, sizeof *c);
}
