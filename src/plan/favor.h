/*
 * favor.h -- what the FAVOR+ forward (favor.c) shares with its backward
 * (favor_backward.c): the plan state, the kernels of cl/favor.cl, the
 * per-call scratch and the recomputation of the forward's intermediate
 * products, which the backward needs again (it keeps no state between
 * calls).
 */
#ifndef SPARCL_PLAN_FAVOR_H
#define SPARCL_PLAN_FAVOR_H

#include <pthread.h>

#include "plan/plan_api.h"

/* Causal chunk length: intra-chunk work is O(N CHUNK (m + D)), the rest
 * O(N m D), so a chunk near m balances the two. */
#define SPARCL__FAVOR_CHUNK 64

/* The kernels of cl/favor.cl: the forward's, then the backward's (created
 * on the first backward or sparcl_plan_prepare_backward()). */
enum {
    SPARCL__FAVOR_PHI,
    SPARCL__FAVOR_HEAD_MAX,
    SPARCL__FAVOR_AUGMENT,
    SPARCL__FAVOR_PREFIX,
    SPARCL__FAVOR_MASK,
    SPARCL__FAVOR_FINISH,
    SPARCL__FAVOR_FWD_COUNT,
    SPARCL__FAVOR_BWD_OUT = SPARCL__FAVOR_FWD_COUNT,
    SPARCL__FAVOR_BWD_CHAIN,
    SPARCL__FAVOR_BWD_KEY_STAB,
    SPARCL__FAVOR_BWD_NORM,
    SPARCL__FAVOR_KERNEL_COUNT
};

struct sparcl__favor {
    const sparcl__plan_view *view;
    pthread_mutex_t lock; /* guards the kernels' arguments and their creation */
    cl_mem omega;         /* features x head_dim */
    size_t bytes;
    int bwd_built; /* the backward's kernels exist */
    cl_kernel kernel[SPARCL__FAVOR_KERNEL_COUNT];
};

/* Creates kernels [first, first + n) of cl/favor.cl into f->kernel. */
sparcl_status sparcl__favor_kernels(struct sparcl__favor *f, int first, int n);

/* One kernel argument: a size and a pointer to the value. */
typedef struct sparcl__favor_arg {
    size_t size;
    const void *value;
} sparcl__favor_arg;
#define SPARCL__FAVOR_ARG(x) ((sparcl__favor_arg){sizeof(x), &(x)})

/* Sets the kernel's arguments and enqueues it over g0 x g1 x g2
 * work-items (nothing when one is 0).  Caller holds f->lock. */
sparcl_status sparcl__favor_launch(struct sparcl__favor *f, cl_command_queue queue, int which,
                                   const sparcl__favor_arg *args, int n_args, size_t g0, size_t g1,
                                   size_t g2);

/* Per-call device scratch.  The forward's: phi(Q), phi(K), the key
 * maxima, [V 1], the states, the numerators, one chunk's scores.  The
 * backward's besides: where each stabilizer's maximum lies (qarg per query
 * row: its feature; karg per key (batch, head): the index in its len x m
 * block), g = d oaug, d phi(Q), d phi(K), the query-side states R and the
 * per-row sums of the chain through the exponential. */
typedef struct sparcl__favor_scratch {
    cl_mem qf, kf, kmax, vaug, state, oaug, a;
    cl_mem qarg, karg, g, dqf, dkf, rstate, qsum, ksum;
} sparcl__favor_scratch;

/* Allocates the forward's scratch, and with `backward` the backward's too.
 * On failure what was allocated stays in *w for _free. */
sparcl_status sparcl__favor_scratch_alloc(struct sparcl__favor *f, sparcl__favor_scratch *w,
                                          int backward);
void sparcl__favor_scratch_free(sparcl__favor_scratch *w);

/* The forward up to the numerators: phi(Q) in w->qf, phi(K) in w->kf,
 * [V 1] in w->vaug, the states phi(K_c)^T [V_c 1] in w->state (exclusive
 * prefix over chunks when causal, else the one total), and w->oaug =
 * [numerator, denominator] per query row.  ts: q, k, v strides.  Caller
 * holds f->lock. */
sparcl_status sparcl__favor_numerators(struct sparcl__favor *f, cl_command_queue queue,
                                       const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                       const sparcl__favor_scratch *w);

/* Ends a call that holds f->lock with scratch *w: on success the marker
 * `event` (when not NULL) after everything enqueued; then unlocks and
 * frees the scratch.  Returns st, or the marker's failure. */
sparcl_status sparcl__favor_end_call(struct sparcl__favor *f, cl_command_queue queue,
                                     sparcl_status st, cl_event *event, sparcl__favor_scratch *w);

/* The backward (favor_backward.c). */
sparcl_status sparcl__favor_prepare_backward(void *state, const sparcl_params *override,
                                             sparcl_params *params, sparcl_param_source *source);
sparcl_status sparcl__favor_backward(void *state, const sparcl__bwd_call *c);

#endif
