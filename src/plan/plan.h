/*
 * plan.h -- the plan object, private to the files of the plan itself
 * (plan.c: creation and forward dispatch; plan_backward.c: the backward
 * calls).  Attention kinds never include this header: they see their plan
 * through plan_api.h.
 */
#ifndef SPARCL_PLAN_H
#define SPARCL_PLAN_H

#include "plan/plan_api.h"
#include "sparcl.h"

struct sparcl_plan {
    sparcl_ctx *ctx;
    sparcl_plan_desc desc;       /* layout and params pointers cleared */
    sparcl__plan_view view;      /* the same facts, as the kind sees them */
    sparcl__plan_report report;  /* sparcl_plan_params(), _origin() */
    const sparcl__kind_ops *ops; /* the kind's table */
    void *state;                 /* the kind's private state */
    /* Half storage staged through fp32 workspaces (dtype_stage.h): set for
     * every plan of a half dtype; freed after the kind. */
    struct sparcl__dtype_stage *stage;
};

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
/* The same for a buffer of `elems` elements of the plan's dtype (q, k, v,
 * out and their gradients). */
sparcl_status sparcl__plan_check_stored(sparcl_plan *p, cl_mem m, const char *name, int64_t elems);
/* The same checks without a plan: `m` a valid buffer of at least `elems`
 * floats; `queue` NULL or a queue of ctx's context and device (`owner`
 * completes the message: "queue does not belong to the <owner> context"). */
sparcl_status sparcl__check_float_buffer(sparcl_ctx *ctx, cl_mem m, const char *name,
                                         int64_t elems);
sparcl_status sparcl__check_queue(sparcl_ctx *ctx, cl_command_queue queue, const char *owner);
/* OK for NULL (the context's queue) or a queue of the plan's context and
 * device; otherwise SPARCL_ERR_INVALID_ARGUMENT with a message. */
sparcl_status sparcl__plan_check_queue(sparcl_plan *p, cl_command_queue queue);

/* What every call on a device queue starts with: p not NULL and `queue`
 * checked (sparcl__plan_check_queue); ts receives p's strides (q, k, v,
 * out). */
sparcl_status sparcl__plan_call_begin(sparcl_plan *p, cl_command_queue queue, sparcl_strides ts[4]);

/* Validates a descriptor (shapes, GQA ratio, head_dim, scale, strides,
 * parameter map, layout shape), naming the first wrong field.  Strides:
 * none negative; for every tensor, each extent x stride, the span and the
 * span in bytes fit in int64 (the contiguous layout's too, for the host
 * calls); out's strides injective (sparcl__plan_strides_injective()). */
sparcl_status sparcl__plan_desc_check(sparcl_ctx *ctx, const sparcl_plan_desc *d);

/* The tiled layout of a plan whose kind walks one (ops->tiled), else NULL. */
const struct sparcl__tiled *sparcl__plan_tiled(const sparcl_plan *p);

#endif
