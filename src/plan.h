/*
 * plan.h -- the plan object, shared by the files that create and execute
 * plans (forward dispatch here; other passes in their own files).
 */
#ifndef SPARCL_PLAN_H
#define SPARCL_PLAN_H

#include <pthread.h>

#include "sparcl.h"

struct sparcl_plan {
    sparcl_ctx *ctx;
    sparcl_plan_desc desc; /* layout and params pointers cleared */
    float scale;
    sparcl_strides qs, ks, vs, os; /* resolved strides */
    sparcl_params params;
    sparcl_param_source source;
    cl_kernel kernel;
    pthread_mutex_t lock; /* clSetKernelArg + enqueue are not thread-safe per kernel */
    cl_mem tile_ptr, tile_col, tile_mask, mask_bits;
    size_t device_bytes;
    int layout_heads, n_tile_rows, wg_size, block_m, block_n;
    sparcl_layout *layout;          /* own copy (NULL = dense), for later passes */
    struct sparcl__plan_bwd *bwd;   /* backward resources, NULL until prepared */
    char origin[576]; /* sparcl_plan_params_origin() */
    /* KT=1: attn_fwd_pack_k fills `workspace` with K packed per tile before
     * each call.  Calls share the workspace, so each one's pack waits for
     * the previous call (`last`, guarded by `lock`), whatever the queue's
     * ordering. */
    cl_kernel pack_kernel;
    cl_mem workspace;
    cl_event last;
    /* ALGO=1 (dense_path.c): scores of `dense_chunk` heads, each q_len rows
     * of dense_ld floats (kv_len padded to whole tiles), and the masked
     * softmax kernel that runs between the two CLBlast GEMMs. */
    cl_kernel softmax_kernel;
    cl_mem scores;
    int dense_chunk;
    int64_t dense_ld;
    /* Other normalizations and attention kinds (attention_kinds.h). */
    int norm;                            /* attn_entmax's NORM; 0 for softmax */
    float alpha;                         /* entmax alpha when norm != 0 */
    struct sparcl__favor *favor;         /* FAVOR+ plans, else NULL */
    struct sparcl__linformer *linformer; /* Linformer plans, else NULL */
};

/* Sets the ten kernel arguments every kernel that walks the plan's tiled
 * layout takes, in this order from argument *a on: tile_ptr, tile_col,
 * tile_mask, mask_bits, q_len, kv_len, q_heads, group (q_heads / kv_heads),
 * layout_heads, n_tile_rows.
 * Advances *a; returns the OR of the clSetKernelArg results. */
cl_int sparcl__plan_set_layout_args(const sparcl_plan *p, cl_kernel kn, cl_uint *a);

/* The caller's wait list followed by p->last (the plan's previous call that
 * used its workspace), if any: a malloc'd array of *n events, or NULL when
 * out of memory.  Called with p->lock held. */
cl_event *sparcl__plan_wait_list(const sparcl_plan *p, cl_uint num_wait, const cl_event *wait,
                                 cl_uint *n);

/* Shared by the passes (plan.c). */
sparcl_strides sparcl__plan_resolve(sparcl_strides s, const sparcl_plan_desc *d, int heads,
                                    int len);
int64_t sparcl__plan_span(sparcl_strides s, int batch, int heads, int len, int dim);
/* 1 if the strides map every (batch, head, row, dim) element to its own
 * offset, by the sufficient test documented at sparcl_plan_desc: sorted by
 * stride, each axis of extent > 1 has a stride of at least the span of the
 * axes below it (the dim axis has stride 1).  For tensors that are
 * written. */
int sparcl__plan_strides_injective(sparcl_strides s, int batch, int heads, int len, int dim);
sparcl_status sparcl__plan_check_buffer(sparcl_plan *p, cl_mem m, const char *name,
                                        int64_t elems);
/* OK for NULL (the context's queue) or a queue of the plan's context and
 * device; otherwise SPARCL_ERR_INVALID_ARGUMENT with a message. */
sparcl_status sparcl__plan_check_queue(sparcl_plan *p, cl_command_queue queue);
/* A read-only device copy of `bytes` of `data`, counted in device_bytes. */
sparcl_status sparcl__plan_upload(sparcl_plan *p, cl_mem *out, const void *data, size_t bytes);

/* Frees the backward resources (backward.c).  NULL does nothing. */
void sparcl__plan_bwd_free(struct sparcl__plan_bwd *b);

/* A zeroed plan with the descriptor's shapes, scale and resolved strides,
 * before any parameter choice or device work (plan.c). */
sparcl_status sparcl__plan_alloc(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                 sparcl_plan **out);

/* Validates a descriptor (shapes, GQA ratio, head_dim, scale, strides,
 * parameter map, layout shape), naming the first wrong field.  Strides:
 * none negative; for every tensor, each extent x stride, the span and the
 * span in bytes fit in int64 (the contiguous layout's too, for the host
 * calls); out's strides injective (sparcl__plan_strides_injective()). */
sparcl_status sparcl__plan_desc_check(sparcl_ctx *ctx, const sparcl_plan_desc *d);

/* The forward call with explicit tensor strides for q, k, v and out (ts[0..3]),
 * on `queue` (NULL: the context's).  For plans that run an inner plan. */
sparcl_status sparcl__plan_forward_strided(sparcl_plan *p, cl_command_queue queue,
                                          const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                          cl_mem out, cl_mem lse, cl_uint num_wait,
                                          const cl_event *wait, cl_event *event);

#endif
