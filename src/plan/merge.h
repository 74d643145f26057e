/*
 * merge.h -- combining partial attention results by their log-sum-exps
 * (cl/attn_merge.cl): the public sparcl_merge() and the stacked form the
 * split-KV decoding path (decode.c) enqueues after its splits.
 */
#ifndef SPARCL_MERGE_H
#define SPARCL_MERGE_H

#include "sparcl.h"

/* The attn_merge_stacked kernel, built (or taken from the context's
 * program cache) through the one road of kernel_build.h. */
sparcl_status sparcl__merge_stacked_kernel(sparcl_ctx *ctx, int dtype, cl_kernel *out);

/* The rows of a stacked merge: `parts` (n <= SPARCL__MERGE_STACKED_MAX)
 * partial outputs at parts + p * (rows * head_dim) floats, contiguous
 * [batch, heads, q_len, head_dim] each, and their lses at lses + p * rows,
 * rows = batch * heads * q_len. */
typedef struct sparcl__merge_stacked {
    cl_mem parts, lses;
    int n;
    int batch, heads, q_len, head_dim;
} sparcl__merge_stacked;

/* Enqueues `kn` (from sparcl__merge_stacked_kernel; the caller serializes
 * its argument setting) merging m into out (strides os, resolved) and lse
 * (may be NULL), after the wait list; *event (may be NULL) receives its
 * event. */
sparcl_status sparcl__merge_stacked_enqueue(sparcl_ctx *ctx, cl_command_queue queue, cl_kernel kn,
                                            const sparcl__merge_stacked *m, cl_mem out,
                                            sparcl_strides os, cl_mem lse, cl_uint num_wait,
                                            const cl_event *wait, cl_event *event);

#endif
