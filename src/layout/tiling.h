/*
 * tiling.h -- re-blocking a layout to a kernel's BLOCK_M x BLOCK_N tile.
 *
 * The kernel walks, for each tile row of each layout head, a list of tile
 * columns.  A tile is FULL (every element of the BLOCK_M x BLOCK_N tile that
 * lies inside q_len attends, and all BLOCK_N columns are < kv_len) or
 * PARTIAL with one bit per element (BLOCK_M rows of MW = ceil(BLOCK_N/32)
 * 32-bit words).  The causal rule of the plan is folded in here, so the
 * kernel never evaluates a pattern: semantics stay exactly the layout's.
 */
#ifndef SPARCL_TILING_H
#define SPARCL_TILING_H

#include "sparcl.h"

/* ptr, and col and mask unless they outgrew the bound reserved for them,
 * start at a multiple of this (a page), so a device that shares host
 * memory can take them as they are (plan_tiles.c). */
#define SPARCL__TILING_ALIGN 4096

typedef struct sparcl__tiling {
    int heads;         /* layout heads (1 for dense) */
    int ntr, ntc;      /* tile rows and columns */
    int tm, tn, mw;    /* BLOCK_M, BLOCK_N, mask words per row */
    int32_t *ptr;      /* heads * (ntr + 1) */
    int32_t *col;      /* nnz tile columns */
    int32_t *mask;     /* nnz: -1 FULL, else mask index */
    uint32_t *bits;    /* n_masks * tm * mw */
    int64_t nnz, n_masks;
    int64_t pairs;     /* attended pairs over the tiling's heads */
    int64_t rows_copied; /* tile rows taken from a previous tiling */
} sparcl__tiling;

/* A tiling built before (its layout, lengths and causal rule, and its
 * arrays on the host), for a build of another layout or length to copy the
 * tile rows that come out the same. */
typedef struct sparcl__tiling_prev {
    const sparcl_layout *layout;
    int q_len, kv_len, causal;
    const sparcl__tiling *tiling;
} sparcl__tiling_prev;

/* layout == NULL means dense with one head.  A tile inside FULL layout
 * blocks (and clear of the causal diagonal and of kv_len) costs O(1) per
 * layout block row it crosses; every other tile O(tile area / 32) plus its
 * PARTIAL elements; memory O(stored tiles). */
sparcl_status sparcl__tiling_build(sparcl_ctx *ctx, const sparcl_layout *layout, int q_len,
                                   int kv_len, int causal, int tm, int tn, sparcl__tiling *out);

/* As sparcl__tiling_build, copying from `prev` (NULL: nothing) each tile
 * row whose layout block rows store the same blocks in both layouts, end at
 * the same query row and stay clear of both kv_lens, when both are tiled at
 * the same tile, heads, block size and causal diagonal: the result is the
 * same array for array; rows_copied counts the copied rows.  Comparing
 * costs O(the compared rows' stored blocks), copying O(their tiles); only
 * the rows that differ are re-blocked. */
sparcl_status sparcl__tiling_build_from(sparcl_ctx *ctx, const sparcl_layout *layout, int q_len,
                                        int kv_len, int causal, int tm, int tn,
                                        const sparcl__tiling_prev *prev, sparcl__tiling *out);

void sparcl__tiling_free(sparcl__tiling *t);

#endif
