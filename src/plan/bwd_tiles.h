/*
 * bwd_tiles.h -- the tile lists a backward pass walks: the layout re-blocked
 * at the backward's own tile, listed by row (the dQ kernel) and by column
 * (the dK/dV kernel, layout/tiling_transpose.h), with the mask bits both
 * views index, uploaded once.
 */
#ifndef SPARCL_BWD_TILES_H
#define SPARCL_BWD_TILES_H

#include "sparcl.h"

typedef struct sparcl__bwd_tiles {
    cl_mem row_ptr, row_col, row_mask; /* by tile row, for the dQ kernel */
    cl_mem col_ptr, col_row, col_mask; /* by tile column, for the dK/dV kernel */
    cl_mem mask_bits;
    int layout_heads, ntr, ntc; /* layout heads (1: shared), tile rows, tile columns */
    size_t bytes;               /* device bytes of the arrays above */
} sparcl__bwd_tiles;

/* Re-blocks `layout` (NULL: dense) with the plan's causal rule to
 * block_m x block_n and uploads both views into *out (zeroed first).  On
 * failure call sparcl__bwd_tiles_release. */
sparcl_status sparcl__bwd_tiles_init(sparcl_ctx *ctx, const sparcl_layout *layout,
                                     const sparcl_plan_desc *d, int block_m, int block_n,
                                     sparcl__bwd_tiles *out);

/* Releases the device arrays; a zeroed struct is fine. */
void sparcl__bwd_tiles_release(sparcl__bwd_tiles *t);

#endif
