/*
 * tiling_transpose.h -- the column view of a tiling, for the backward pass.
 *
 * The dK/dV kernel owns a key tile and must visit every query tile that
 * attends to it, in a fixed order, to sum without atomics.  The forward
 * tiling lists tiles by row; this is the same set of tiles listed by column
 * (per layout head and tile column, the tile rows in ascending order), each
 * with the forward's mask index, so the mask bits are shared, not copied.
 */
#ifndef SPARCL_TILING_TRANSPOSE_H
#define SPARCL_TILING_TRANSPOSE_H

#include "layout/tiling.h"

typedef struct sparcl__tiling_cols {
    int heads, ntc;
    int32_t *ptr;  /* heads * (ntc + 1) offsets into row/mask */
    int32_t *row;  /* nnz tile rows, ascending within a column */
    int32_t *mask; /* nnz: -1 FULL, else the forward's mask index */
} sparcl__tiling_cols;

/* Builds the column lists of `t` (a counting sort: O(nnz + heads * ntc)
 * time, O(nnz) memory).  Fails only with SPARCL_ERR_OUT_OF_MEMORY. */
sparcl_status sparcl__tiling_transpose(sparcl_ctx *ctx, const sparcl__tiling *t,
                                       sparcl__tiling_cols *out);

void sparcl__tiling_cols_free(sparcl__tiling_cols *c);

#endif
