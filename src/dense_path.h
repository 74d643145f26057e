/*
 * dense_path.h -- the dense algorithm of the forward pass (ALGO=1): S = Q K^T
 * by CLBlast's strided-batched SGEMM into an N^2 workspace, our masked row
 * softmax (cl/attn_dense_softmax.cl), then O = P V by SGEMM.  For high
 * densities it can beat the fused kernel; the tuner measures the crossover
 * per device, and a plan uses it only when chosen and when it fits.
 */
#ifndef SPARCL_DENSE_PATH_H
#define SPARCL_DENSE_PATH_H

#include "plan.h"
#include "sparcl.h"

/* Bytes of score workspace one head needs at tile width block_n. */
size_t sparcl__dense_head_bytes(int q_len, int kv_len, int block_n);

/* Sets up ALGO=1 for a plan whose tile arrays are uploaded: checks that the
 * path applies (an in-order queue, row strides of at least head_dim, one
 * head's scores within the device's allocation limit and a quarter of its
 * memory), then builds the softmax kernel with `options` and allocates the
 * workspace for as many heads at once as fit.  *applies = 0 (and SPARCL_OK)
 * when the path does not apply, with the reason sent to the log; the plan
 * then uses the fused kernel. */
sparcl_status sparcl__dense_init(sparcl_plan *p, const char *options, int *applies);

/* Enqueues the dense algorithm on `queue` for strides ts (q, k, v, out).
 * Called with p->lock held, after the buffers were checked.  The queue must
 * be in-order (CLBlast takes no wait lists); the first command waits for
 * the caller's list and for the plan's previous call (p->last, which this
 * call replaces), so calls on different queues never share the workspace
 * at once.  *event, if not NULL, receives the event of the last command. */
sparcl_status sparcl__dense_forward(sparcl_plan *p, cl_command_queue queue,
                                    const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                    cl_mem out, cl_mem lse, cl_uint num_wait, const cl_event *wait,
                                    cl_event *event);

#endif
