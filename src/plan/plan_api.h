/*
 * plan_api.h -- the plan as an attention kind sees it, and the table of
 * operations every kind provides.
 *
 * plan.c validates a descriptor, chooses the kind (attention_kinds.c) and
 * calls through its table; a kind keeps its resources behind a void * and
 * reaches the plan only through what this header declares.  A new kind
 * (decoding, dynamic selection, LSH, another storage type) is one more
 * table registered in attention_kinds.c.
 */
#ifndef SPARCL_PLAN_API_H
#define SPARCL_PLAN_API_H

#include "kernels/params.h"
#include "sparcl.h"

#define SPARCL__PLAN_ORIGIN_MAX 576

/* What every kind may read of its plan; fixed from creation on. */
typedef struct sparcl__plan_view {
    sparcl_ctx *ctx;
    sparcl_plan_desc desc;         /* layout, params, proj_e, proj_f cleared */
    float scale;                   /* effective: desc.scale or 1/sqrt(head_dim) */
    sparcl_strides qs, ks, vs, os; /* resolved */
} sparcl__plan_view;

/* One forward call: checked buffers, the queue resolved (never NULL). */
typedef struct sparcl__fwd_call {
    cl_command_queue queue;
    const sparcl_strides *ts; /* q, k, v, out */
    cl_mem q, k, v, out, lse; /* lse may be NULL */
    cl_uint num_wait;
    const cl_event *wait;
    cl_event *event; /* may be NULL */
    /* sparcl_plan_forward_cache(), checked: lengths (NULL for an ordinary
     * forward), and for a paged cache the block table and pool size. */
    const int32_t *kv_lens;
    const int32_t *block_table;
    int pool_pages;
} sparcl__fwd_call;

/* One backward call: checked buffers, the queue resolved. */
typedef struct sparcl__bwd_call {
    cl_command_queue queue;
    const sparcl_strides *ts; /* q, k, v, out (= dout) */
    cl_mem q, k, v, out, lse, dout, dq, dk, dv;
    cl_uint num_wait;
    const cl_event *wait;
    cl_event *event;
    /* Gradients of a kind's own parameters, NULL when not wanted (only
     * kinds with proj_grads set receive any): Linformer's E and F. */
    cl_mem dproj_e, dproj_f;
    /* The gradient of an adaptive-span plan's spans (q_heads floats), NULL
     * when not wanted (only kinds with span_grads set receive one). */
    cl_mem dspans;
} sparcl__bwd_call;

/* The parameters a plan reports (sparcl_plan_params, _origin). */
typedef struct sparcl__plan_report {
    sparcl_params params;
    sparcl_param_source source;
    char origin[SPARCL__PLAN_ORIGIN_MAX];
    /* The CLBlast parameters applied for the plan's GEMMs (gemm_params.c);
     * an empty map and "" where the plan runs none. */
    sparcl_params gemm;
    char gemm_origin[SPARCL__PLAN_ORIGIN_MAX];
} sparcl__plan_report;

typedef struct sparcl__kind_ops {
    const char *name; /* for messages: "FAVOR+", "fused softmax", ... */
    /* What this plan of the kind is called in messages when that is more
     * precise than `name` ("sparsemax" for an entmax plan); NULL: name. */
    const char *(*label)(const void *state);
    /* The tuned family plan.c chooses parameters from before create, or
     * NULL (the kind has no tuned parameters of its own). */
    const sparcl__kernel_schema *family;
    /* Creates the kind's state for the view (desc: the caller's descriptor,
     * with its borrowed pointers).  params: the checked choice when family
     * is set, else NULL.  `report` holds that choice; a kind may replace it.
     * SPARCL_OK with *state NULL declines: the kind does not apply, it has
     * adjusted *params, and plan.c chooses the kind again. */
    sparcl_status (*create)(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                            sparcl__pset *params, sparcl__plan_report *report, void **state);
    sparcl_status (*forward)(void *state, const sparcl__fwd_call *c);
    /* Nonzero: forward also takes calls with kv_lens (a KV cache). */
    int takes_lengths;
    /* Backward resources: (re)built from `override` when given or not yet
     * built; *params and *source receive those in use.  NULL, with backward
     * NULL: the kind has no backward pass. */
    sparcl_status (*prepare_backward)(void *state, const sparcl_params *override,
                                      sparcl_params *params, sparcl_param_source *source);
    sparcl_status (*backward)(void *state, const sparcl__bwd_call *c);
    /* Low-rank kinds: no_lse, the forward writes no lse and the backward
     * takes none (FAVOR+); proj_grads, the backward can write the gradients
     * of the projections E and F (Linformer). */
    int no_lse, proj_grads;
    /* Nonzero: the backward can write the gradient of the spans (adaptive
     * span, sparcl_plan_backward_span()). */
    int span_grads;
    /* Half storage (SPARCL_DTYPE_F16, BF16; dtype_stage.h).  half_forward:
     * the forward reads and writes the plan's dtype itself; otherwise a
     * half plan creates the kind for fp32 and stages its forward through
     * fp32 workspaces.  half_backward (only with half_forward: the kind
     * sees the plan's own view): the backward reads and writes the plan's
     * dtype itself.  Otherwise a half plan's backward is staged, unless
     * half_no_backward: it cannot be (it reruns the forward's half kernels
     * on the call's q and k), and it refuses half storage. */
    int half_forward, half_backward, half_no_backward;
    /* Nonzero: the state starts with a sparcl__tiled (plan_tiles.h), which
     * a later plan's desc.previous may copy tile rows from. */
    int tiled;
    /* Redraws the kind's random matrices; NULL: it has none. */
    sparcl_status (*redraw)(void *state, uint64_t seed);
    size_t (*device_bytes)(const void *state);
    void (*free)(void *state); /* NULL does nothing */
} sparcl__kind_ops;

/* The forward of plan `p` with explicit tensor strides ts (q, k, v, out) on
 * `queue` (NULL: the context's), buffers checked: for kinds that run an
 * inner plan. */
sparcl_status sparcl__plan_forward_strided(sparcl_plan *p, cl_command_queue queue,
                                           const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                           cl_mem out, cl_mem lse, cl_uint num_wait,
                                           const cl_event *wait, cl_event *event);

/* The backward of plan `p` with explicit strides ts (q, k, v, out; dq,
 * dk, dv, dout take them too) on `queue` (NULL: the context's), buffers
 * checked as the public call checks them: for kinds that run an inner
 * plan. */
sparcl_status sparcl__plan_backward_strided(sparcl_plan *p, cl_command_queue queue,
                                            const sparcl_strides *ts, cl_mem q, cl_mem k,
                                            cl_mem v, cl_mem out, cl_mem lse, cl_mem dout,
                                            cl_mem dq, cl_mem dk, cl_mem dv, cl_uint num_wait,
                                            const cl_event *wait, cl_event *event);

/* The view of `p` (NULL for NULL), and its state when `p` is a plan of
 * `kind`, else NULL: for the public calls a single kind offers. */
const sparcl__plan_view *sparcl__plan_view_of(const sparcl_plan *p);
void *sparcl__plan_state(const sparcl_plan *p, const sparcl__kind_ops *kind);

#endif
