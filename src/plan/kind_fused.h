/*
 * kind_fused.h -- the fused softmax forward (kind_fused.c) over a tiled
 * layout that another kind fills on the device: dynamic block selection
 * (kind_select.c) writes the tile lists in the queue, then runs this state's
 * forward through sparcl__kind_fused.forward and frees it with
 * sparcl__kind_fused.free.
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

#endif
