/*
 * layout_slice.h -- a rectangle of a layout (query heads, rows, keys) as a
 * layout of its own; see layout_slice.c.
 */
#ifndef SPARCL_LAYOUT_SLICE_H
#define SPARCL_LAYOUT_SLICE_H

#include "sparcl.h"

/* The part of `src` at query heads [h0, h0 + heads) (a one-head layout
 * stays one head and ignores h0), rows [i0, i0 + q_len) and keys
 * [j0, j0 + kv_len), at src's block size: head h, row i, key j of the
 * result attend iff (h0 + h, i0 + i, j0 + j) of src do.  When i0 and j0 are
 * multiples of the block, blocks are taken over as stored (O(stored blocks)
 * plus the bits of PARTIAL ones); otherwise every element of a candidate
 * block is asked.  The rectangle must lie inside src (else
 * SPARCL_ERR_INTERNAL: callers compute it).  The result may hold no block
 * at all. */
sparcl_status sparcl__layout_slice(sparcl_ctx *ctx, const sparcl_layout *src, int h0, int heads,
                                   int i0, int q_len, int j0, int kv_len, sparcl_layout **out);

#endif
