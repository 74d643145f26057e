/*
 * kind_fused.h -- the forward kinds that also run over a tiled layout that
 * another kind fills on the device: the fused softmax (kind_fused.c) and
 * split-KV decoding (decode.c).  Dynamic block selection (kind_select.c)
 * writes the tile lists in the queue, then runs such a state's forward
 * through the kind's table (sparcl__kind_fused or sparcl__kind_decode) and
 * frees it with the table's free.
 */
#ifndef SPARCL_KIND_FUSED_H
#define SPARCL_KIND_FUSED_H

#include "plan/plan_api.h"

typedef struct sparcl__fused_tiles {
    cl_mem bufs[4]; /* tile_ptr, tile_col, tile_mask, mask_bits (retained) */
    int layout_heads, n_tile_rows;
} sparcl__fused_tiles;

/* attn_fwd (and its K packing kernel when KT=1) for view v with the
 * checked choice `params`, over `tiles`.  v->desc is the shape the kernel
 * sees (a caller may fold batches into heads).  The state is a fused
 * softmax state: sparcl__kind_fused's forward, device_bytes and free take
 * it; it has no backward (no host layout). */
sparcl_status sparcl__fused_create_external(const sparcl__plan_view *v, const sparcl__pset *params,
                                            const sparcl__fused_tiles *tiles, void **state);

/* attn_decode and its merge for view v with the checked choice `params`
 * (of the attn_decode family), over `tiles` at BLOCK_M = q_len: a split-KV
 * decoding state (sparcl__kind_decode's forward, device_bytes and free)
 * for calls without lengths. */
sparcl_status sparcl__decode_create_external(const sparcl__plan_view *v, const sparcl__pset *params,
                                             const sparcl__fused_tiles *tiles, void **state);

#endif
