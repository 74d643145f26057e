/*
 * linformer.h -- what the Linformer forward (linformer.c) shares with its
 * backward (linformer_backward.c): the plan state and the projection of
 * keys and values along the sequence.
 */
#ifndef SPARCL_PLAN_LINFORMER_H
#define SPARCL_PLAN_LINFORMER_H

#include "plan/plan_api.h"

struct sparcl__linformer {
    const sparcl__plan_view *view;
    cl_mem e, f;        /* proj_len x kv_len each */
    size_t bytes;       /* of e and f */
    sparcl_plan *inner; /* attention over proj_len keys, k/v contiguous */
};

/* K' = E K and V' = F V per batch and kv head into new scratch buffers
 * *kp and *vp (contiguous [B, kv_heads, proj_len, D], released by the
 * caller also on failure); ts: q, k, v strides.  *packed receives their
 * strides. */
sparcl_status sparcl__linformer_project(struct sparcl__linformer *l, cl_command_queue queue,
                                        const sparcl_strides *ts, cl_mem k, cl_mem v, cl_mem *kp,
                                        cl_mem *vp, sparcl_strides *packed);

/* The backward (linformer_backward.c). */
sparcl_status sparcl__linformer_prepare_backward(void *state, const sparcl_params *override,
                                                 sparcl_params *params,
                                                 sparcl_param_source *source);
sparcl_status sparcl__linformer_backward(void *state, const sparcl__bwd_call *c);

#endif
