/*
 * select.h -- the state of a dynamic block selection plan (kind_select.c)
 * that its backward (select_backward.c) shares: the selection kernels and
 * their workspace, the forward's tile lists, and the backward's lists and
 * resources, all under one lock, with the last call that used the
 * workspace.
 */
#ifndef SPARCL_SELECT_H
#define SPARCL_SELECT_H

#include <pthread.h>

#include "plan/plan_api.h"
#include "plan/select_lists.h"

enum { SPARCL__SEL_POOL = SPARCL__SEL_LIST_KERNELS, SPARCL__SEL_BLOCKS, SPARCL__SEL_KERNELS };
enum {
    SPARCL__SEL_POOL_Q,
    SPARCL__SEL_POOL_K,
    SPARCL__SEL_CHOICE,
    SPARCL__SEL_SCORE,
    SPARCL__SEL_WEIGHT,
    SPARCL__SEL_SCRATCH
};

struct sparcl__plan_bwd;

typedef struct sparcl__dynsel {
    const sparcl__plan_view *view;
    sparcl__plan_view folded; /* what attn_fwd and attn_bwd see: batches folded into heads */
    /* The forward over fwd's lists: a fused softmax or, for decoding
     * calls, a split-KV decoding state of the kind `inner`. */
    const sparcl__kind_ops *inner;
    void *fused;
    cl_kernel kn[SPARCL__SEL_KERNELS];
    cl_mem scratch[SPARCL__SEL_SCRATCH];
    sparcl__sel_lists fwd;
    /* The backward (select_backward.c): its lists at the backward's tile
     * and its kernels, NULL until prepared. */
    sparcl__sel_lists bwd_lists;
    struct sparcl__plan_bwd *bwd;
    int block, n_qb, n_kb;
    size_t bytes;       /* device bytes of the workspace */
    sparcl_layout *pin; /* own copy (NULL: nothing pinned) */
    pthread_mutex_t lock;
    cl_event last; /* the previous call: the workspace's last user */
} sparcl__dynsel;

/* Checks that the batches of the tensors (strides ts: q, k, v, out) fold
 * into heads. */
sparcl_status sparcl__select_check_fold(const sparcl__dynsel *s, const sparcl_strides *ts);

/* Pools q and k (strides ts[0], ts[1]) and selects the blocks into the
 * workspace, after `wait` and the previous call; *ev: the selection.
 * Called with the lock held. */
sparcl_status sparcl__select_enqueue_choice(sparcl__dynsel *s, cl_command_queue queue,
                                            const sparcl_strides *ts, cl_mem q, cl_mem k,
                                            cl_uint num_wait, const cl_event *wait, cl_event *ev);

/* Shrinks the tile of the choice p of `schema` (attn_fwd or attn_bwd)
 * until it divides the selection block (BLOCK_M and BLOCK_N halve,
 * WG_SIZE and VEC follow) and checks a changed choice again. */
sparcl_status sparcl__select_fit_tile(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                      const sparcl__kernel_schema *schema, sparcl__pset *p,
                                      int block);

/* Makes `ev` (retained) the workspace's last user.  Called with the lock. */
void sparcl__select_set_last(sparcl__dynsel *s, cl_event ev);

/* The backward entries of the kind (select_backward.c). */
sparcl_status sparcl__select_prepare_backward(void *state, const sparcl_params *override,
                                              sparcl_params *params, sparcl_param_source *source);
sparcl_status sparcl__select_backward(void *state, const sparcl__bwd_call *c);

#endif
