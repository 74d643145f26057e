/*
 * bwd_tiles.c -- building and uploading a backward's tile lists (see
 * bwd_tiles.h).
 */
#include <string.h>

#include "layout/tiling.h"
#include "layout/tiling_transpose.h"
#include "plan/bwd_tiles.h"
#include "plan/plan_tiles.h"

sparcl_status sparcl__bwd_tiles_init(sparcl_ctx *ctx, const sparcl_layout *layout,
                                     const sparcl_plan_desc *d, int block_m, int block_n,
                                     sparcl__bwd_tiles *out)
{
    memset(out, 0, sizeof *out);
    sparcl__tiling g;
    sparcl_status st =
        sparcl__tiling_build(ctx, layout, d->q_len, d->kv_len, d->causal, block_m, block_n, &g);
    if (st != SPARCL_OK)
        return st;
    sparcl__tiling_cols c;
    if ((st = sparcl__tiling_transpose(ctx, &g, &c)) != SPARCL_OK) {
        sparcl__tiling_free(&g);
        return st;
    }
    out->layout_heads = g.heads;
    out->ntr = g.ntr;
    out->ntc = g.ntc;
    /* Sizes of arrays the tilings hold (allocated with checked sizes). */
    const size_t nnz = (size_t)g.nnz;
    const size_t row_ptrs = (size_t)g.heads * (size_t)(g.ntr + 1);
    const size_t col_ptrs = (size_t)c.heads * (size_t)(c.ntc + 1);
    const size_t words = (size_t)g.n_masks * (size_t)g.tm * (size_t)g.mw;
    cl_mem *const dst[7] = {&out->row_ptr, &out->row_col,  &out->row_mask, &out->col_ptr,
                            &out->col_row, &out->col_mask, &out->mask_bits};
    const void *const src[7] = {g.ptr, g.col, g.mask, c.ptr, c.row, c.mask, g.bits};
    const size_t bytes[7] = {4 * row_ptrs, 4 * nnz, 4 * nnz,  4 * col_ptrs,
                             4 * nnz,      4 * nnz, 4 * words};
    for (int i = 0; i < 7 && st == SPARCL_OK; ++i)
        st = sparcl__upload(ctx, dst[i], src[i], bytes[i], &out->bytes);
    sparcl__tiling_cols_free(&c);
    sparcl__tiling_free(&g);
    return st;
}

void sparcl__bwd_tiles_release(sparcl__bwd_tiles *t)
{
    cl_mem ms[7] = {t->row_ptr, t->row_col,  t->row_mask, t->col_ptr,
                    t->col_row, t->col_mask, t->mask_bits};
    for (int i = 0; i < 7; ++i)
        if (ms[i])
            clReleaseMemObject(ms[i]);
    memset(t, 0, sizeof *t);
}
