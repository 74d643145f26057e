/*
 * span.h -- the adaptive-span kind's state, shared by its forward
 * (kind_span.c) and its backward (span_backward.c): the spans on the
 * device, the ramp, and the attn_span kernels of each pass.
 */
#ifndef SPARCL_SPAN_H
#define SPARCL_SPAN_H

#include <pthread.h>

#include "plan/plan_api.h"

/* The kernels of one pass and the tile they were built with. */
typedef struct sparcl__span_kernels {
    cl_kernel k[3]; /* forward: attn_span_fwd; backward: _bwd_dq, _bwd_dkv, _bwd_dz */
    int wg_size, block_m, block_n;
    sparcl_params params;
    sparcl_param_source source;
} sparcl__span_kernels;

typedef struct sparcl__span {
    const sparcl__plan_view *view;
    /* Held while a call sets kernel arguments and enqueues, and while the
     * backward kernels are built. */
    pthread_mutex_t lock;
    cl_mem spans; /* q_heads floats */
    float ramp;
    sparcl__span_kernels fwd, bwd; /* bwd.k[0] NULL until built */
} sparcl__span;

/* Builds the kernels `names` (n of them) of attn_span with the checked
 * parameters `ps` into *out (nothing kept on failure). */
sparcl_status sparcl__span_kernels_build(const sparcl__span *s, const sparcl__pset *ps,
                                         sparcl_param_source source, int n,
                                         const char *const *names, sparcl__span_kernels *out);
void sparcl__span_kernels_release(sparcl__span_kernels *k);

/* The kernel arguments every attn_span kernel but _bwd_dz ends with, from
 * argument *at on: spans, ramp, scale, the q, k, v and out strides (ts),
 * q_len, kv_len and the GQA group. */
cl_int sparcl__span_tail_args(const sparcl__span *s, cl_kernel kn, cl_uint *at,
                              const sparcl_strides *ts);

/* The kind's backward (span_backward.c), as plan_api.h's table wants it. */
sparcl_status sparcl__span_prepare_backward(void *state, const sparcl_params *override,
                                            sparcl_params *params, sparcl_param_source *source);
sparcl_status sparcl__span_backward(void *state, const sparcl__bwd_call *c);

#endif
