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
    int layout_heads, n_tile_rows, wg_size, block_m;
};

/* Validates a descriptor (shapes, GQA ratio, head_dim, scale, strides,
 * layout shape), naming the first wrong field. */
sparcl_status sparcl__plan_desc_check(sparcl_ctx *ctx, const sparcl_plan_desc *d);

#endif
