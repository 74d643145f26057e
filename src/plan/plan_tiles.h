/*
 * plan_tiles.h -- what the kinds that walk a layout tile by tile share (the
 * fused softmax and entmax kernels, the dense path's masked softmax, the
 * backward): the layout re-blocked to the tuned tile and uploaded once, the
 * kernel arguments that describe it, the lock that serializes argument
 * setting and enqueueing, and the event of the previous call that used the
 * kind's workspace.
 */
#ifndef SPARCL_PLAN_TILES_H
#define SPARCL_PLAN_TILES_H

#include <pthread.h>

#include "layout/tiling.h"
#include "plan/plan_api.h"

struct sparcl__plan_bwd;
struct sparcl__entmax_bwd;

typedef struct sparcl__tiled {
    const sparcl__plan_view *view;
    pthread_mutex_t lock; /* clSetKernelArg + enqueue are not thread-safe per kernel */
    cl_mem tile_ptr, tile_col, tile_mask, mask_bits;
    int layout_heads, n_tile_rows, block_m, block_n, wg_size;
    sparcl_layout *layout;        /* own copy (NULL = dense), for the backward */
    struct sparcl__plan_bwd *bwd; /* backward resources, NULL until prepared */
    /* The sparse normalizations' backward resources instead (entmax plans;
     * backward_entmax.c), NULL until prepared. */
    struct sparcl__entmax_bwd *entmax_bwd;
    /* The previous call that used the kind's workspace; a call that uses
     * it waits for this one (guarded by `lock`), whatever the queue. */
    cl_event last;
    size_t bytes; /* device bytes of the tile arrays */
    /* The host arrays the buffers use in place (a device sharing host
     * memory: no copy); the others are NULL.  Freed after the buffers. */
    sparcl__tiling in_place;
    size_t bwd_bytes; /* device bytes of bwd, set with it under `lock` */
} sparcl__tiled;

/* Re-blocks `layout` (NULL: dense) to p's BLOCK_M x BLOCK_N, copying the
 * tile rows that come out the same from `previous`'s tiled layout where it
 * has one (desc.previous; NULL: none), uploads it and keeps a copy of the
 * layout.  On failure call sparcl__tiled_release. */
sparcl_status sparcl__tiled_init(sparcl__tiled *t, const sparcl__plan_view *v,
                                 const sparcl_layout *layout, const struct sparcl_plan *previous,
                                 const sparcl__pset *p);

/* A tiled layout whose four arrays (tile_ptr, tile_col, tile_mask,
 * mask_bits, in that order) another part of the plan fills on the device
 * (dynamic block selection, kind_select.c): retains them; their bytes are
 * the owner's to count.  No host layout: the backward has nothing to walk. */
void sparcl__tiled_init_external(sparcl__tiled *t, const sparcl__plan_view *v,
                                 const sparcl__pset *p, const cl_mem bufs[4], int layout_heads,
                                 int n_tile_rows);

/* Releases everything, the backward's resources included. */
void sparcl__tiled_release(sparcl__tiled *t);

/* Device bytes of the tile arrays and of the backward's resources. */
size_t sparcl__tiled_bytes(const sparcl__tiled *t);

/* Sets the ten kernel arguments every kernel that walks the tiled layout
 * takes, in this order from argument *a on: tile_ptr, tile_col, tile_mask,
 * mask_bits, q_len, kv_len, q_heads, group (q_heads / kv_heads),
 * layout_heads, n_tile_rows.  Advances *a; returns the OR of the
 * clSetKernelArg results. */
cl_int sparcl__tiled_set_layout_args(const sparcl__tiled *t, cl_kernel kn, cl_uint *a);

/* The caller's wait list followed by t->last, if any: a malloc'd array of
 * *n events, or NULL when out of memory.  Called with t->lock held. */
cl_event *sparcl__tiled_wait_list(const sparcl__tiled *t, cl_uint num_wait, const cl_event *wait,
                                  cl_uint *n);

/* Makes `ev` (retained) the workspace's last user.  Called with the lock. */
void sparcl__tiled_set_last(sparcl__tiled *t, cl_event ev);

/* A read-only device copy of `bytes` of `data`, added to *counted. */
sparcl_status sparcl__upload(sparcl_ctx *ctx, cl_mem *out, const void *data, size_t bytes,
                             size_t *counted);

/* The backward of softmax attention over the tiled layout (backward.c):
 * the prepare_backward and backward entries of the tables of kinds whose
 * state starts with its sparcl__tiled. */
sparcl_status sparcl__tiled_prepare_backward(void *state, const sparcl_params *override,
                                             sparcl_params *params, sparcl_param_source *source);
sparcl_status sparcl__tiled_backward(void *state, const sparcl__bwd_call *c);
size_t sparcl__plan_bwd_bytes(const struct sparcl__plan_bwd *b);
void sparcl__plan_bwd_free(struct sparcl__plan_bwd *b);

/* The same backward over tile lists another part of the plan provides
 * (dynamic block selection fills them on the device per call): the
 * kernels of the checked choice `ps` of the attn_bwd family, which take
 * over `tiles`' arrays (released by sparcl__plan_bwd_free, also on
 * failure; *tiles is zeroed).  The lists must be at ps's BLOCK_M x
 * BLOCK_N. */
struct sparcl__bwd_tiles;
sparcl_status sparcl__plan_bwd_create(const sparcl__plan_view *v, const sparcl__pset *ps,
                                      sparcl_param_source source, struct sparcl__bwd_tiles *tiles,
                                      struct sparcl__plan_bwd **out);

/* Enqueues the backward of call c over b's lists for the view v (its
 * per-call workspaces are released once enqueued).  The caller serializes
 * calls on one b. */
sparcl_status sparcl__plan_bwd_enqueue(const sparcl__plan_view *v, const struct sparcl__plan_bwd *b,
                                       const sparcl__bwd_call *c);

/* The parameters b runs with and where they came from (either may be
 * NULL). */
void sparcl__plan_bwd_report(const struct sparcl__plan_bwd *b, sparcl_params *params,
                             sparcl_param_source *source);

/* The backward of sparsemax / alpha-entmax attention over the tiled layout
 * (backward_entmax.c): the same entries for the entmax kind, whose state
 * starts with its sparcl__tiled. */
sparcl_status sparcl__entmax_prepare_backward(void *state, const sparcl_params *override,
                                              sparcl_params *params, sparcl_param_source *source);
sparcl_status sparcl__entmax_backward(void *state, const sparcl__bwd_call *c);
void sparcl__entmax_bwd_free(struct sparcl__entmax_bwd *b);

#endif
