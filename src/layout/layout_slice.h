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
 * result attend iff (h0 + h, i0 + i, j0 + j) of src do.  The same slice as
 * the public sparcl_layout_init_slice() (without its causal cut), which
 * keeps every head: candidate blocks come from src's stored blocks over the
 * rectangle, FULL where every src block under one is FULL, and only the
 * others are read element by element.  The rectangle must lie inside src
 * (else SPARCL_ERR_INTERNAL: callers compute it).  The result may hold no
 * block at all. */
sparcl_status sparcl__layout_slice(sparcl_ctx *ctx, const sparcl_layout *src, int h0, int heads,
                                   int i0, int q_len, int j0, int kv_len, sparcl_layout **out);

#endif
