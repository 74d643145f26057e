/*
 * merge.c -- combining partial attention results by their log-sum-exps:
 * the public sparcl_merge() (parts in separate buffers, the application's
 * split of a long sequence over calls or devices) and the stacked merge of
 * the split-KV decoding path.  The arithmetic is cl/attn_merge.cl's; here
 * are the checks, the kernels (through kernel_build.h) and the launches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/params.h"
#include "plan/kernel_build.h"
#include "plan/merge.h"
#include "plan/plan.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"

#define MERGE_ARGS 8 /* part buffers of one attn_merge launch (cl/attn_merge.cl) */

static sparcl_status merge_kernel(sparcl_ctx *ctx, const char *name, int dtype, cl_kernel *out)
{
    sparcl__problem prob = {0};
    prob.dtype = dtype;
    const sparcl__pset none = {{0}, 0};
    return sparcl__family_kernels(ctx, &sparcl__schema_attn_merge, &prob, &none, 1, &name, out);
}

sparcl_status sparcl__merge_stacked_kernel(sparcl_ctx *ctx, int dtype, cl_kernel *out)
{
    return merge_kernel(ctx, "attn_merge_stacked", dtype, out);
}

/* Global size of a merge: one work-item per row. */
static void merge_global(size_t global[3], int batch, int heads, int q_len)
{
    global[0] = (size_t)q_len;
    global[1] = (size_t)heads;
    global[2] = (size_t)batch;
}

sparcl_status sparcl__merge_stacked_enqueue(sparcl_ctx *ctx, cl_command_queue queue, cl_kernel kn,
                                            const sparcl__merge_stacked *m, cl_mem out,
                                            sparcl_strides os, cl_mem lse, cl_uint num_wait,
                                            const cl_event *wait, cl_event *event)
{
    const cl_long rows = (cl_long)m->batch * m->heads * m->q_len;
    const cl_long part_stride = rows * m->head_dim;
    const cl_int write_lse = lse != NULL;
    const cl_long strides[3] = {os.batch, os.head, os.seq};
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &m->parts);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &m->lses);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &m->n);
    err |= clSetKernelArg(kn, a++, sizeof(cl_long), &part_stride);
    err |= clSetKernelArg(kn, a++, sizeof(cl_long), &rows);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), lse ? &lse : &out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &write_lse);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &m->q_len);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &m->heads);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &m->head_dim);
    for (int s = 0; s < 3; ++s)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[s]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(ctx, err, "clSetKernelArg(attn_merge_stacked)");
    size_t global[3];
    merge_global(global, m->batch, m->heads, m->q_len);
    err = clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, NULL, num_wait, wait, event);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(ctx, err, "clEnqueueNDRangeKernel(attn_merge_stacked)");
    return SPARCL_OK;
}

/* ---- sparcl_merge ------------------------------------------------------ */

typedef struct merge_shape {
    int batch, heads, q_len, head_dim;
} merge_shape;

/* Strides resolved (zeros: contiguous) and checked as a plan checks its
 * tensors: none negative, the span addressable, and for the output no two
 * rows sharing an element. */
static sparcl_status check_strides(sparcl_ctx *ctx, const merge_shape *s, const char *name,
                                   sparcl_strides *st, int written, int64_t *span)
{
    if (st->batch < 0 || st->head < 0 || st->seq < 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s strides (batch %lld, head %lld, seq %lld) must be >= 0", name,
                            (long long)st->batch, (long long)st->head, (long long)st->seq);
    sparcl_plan_desc d;
    memset(&d, 0, sizeof d);
    d.head_dim = s->head_dim;
    *st = sparcl__plan_resolve(*st, &d, s->heads, s->q_len);
    *span = sparcl__plan_span(*st, s->batch, s->heads, s->q_len, s->head_dim);
    if (*span == INT64_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s strides over batch %d x heads %d x q_len %d x head_dim %d span "
                            "more than 2^63 bytes",
                            name, s->batch, s->heads, s->q_len, s->head_dim);
    if (written && !sparcl__plan_strides_injective(*st, s->batch, s->heads, s->q_len, s->head_dim))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s strides (batch %lld, head %lld, seq %lld) overlap: two rows would "
                            "share an element",
                            name, (long long)st->batch, (long long)st->head, (long long)st->seq);
    return SPARCL_OK;
}

static sparcl_status check_call(sparcl_ctx *ctx, const merge_shape *s, int parts,
                                const cl_mem *part_out, const cl_mem *part_lse, sparcl_strides *ps,
                                cl_mem out, sparcl_strides *os, cl_mem lse, cl_uint num_wait,
                                const cl_event *wait)
{
#define BAD(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    if (s->batch < 1 || s->heads < 1 || s->q_len < 1)
        return BAD("batch %d, heads %d and q_len %d must be >= 1", s->batch, s->heads, s->q_len);
    if (s->head_dim < 1 || s->head_dim > SPARCL_MAX_HEAD_DIM)
        return BAD("head_dim %d must be in [1, %d]", s->head_dim, SPARCL_MAX_HEAD_DIM);
    if (parts < 1)
        return BAD("parts %d must be >= 1", parts);
    if (!part_out || !part_lse)
        return BAD("%s is NULL", !part_out ? "part_out" : "part_lse");
    int64_t rows, pspan, ospan;
    if (!sparcl__mul3_i64(s->batch, s->heads, s->q_len, &rows) ||
        !sparcl__mul_i64(rows, (int64_t)sizeof(float), &pspan))
        return BAD("batch %d x heads %d x q_len %d rows overflow 64-bit sizes", s->batch, s->heads,
                   s->q_len);
    sparcl_status st;
    if ((st = check_strides(ctx, s, "part", ps, 0, &pspan)) != SPARCL_OK ||
        (st = check_strides(ctx, s, "out", os, 1, &ospan)) != SPARCL_OK)
        return st;
    if ((num_wait == 0) != (wait == NULL))
        return BAD("num_wait %u does not match wait list %p", num_wait, (void *)wait);
    for (int p = 0; p < parts; ++p) {
        char name[48];
        snprintf(name, sizeof name, "part_out[%d]", p);
        if ((st = sparcl__check_float_buffer(ctx, part_out[p], name, pspan)) != SPARCL_OK)
            return st;
        snprintf(name, sizeof name, "part_lse[%d]", p);
        if ((st = sparcl__check_float_buffer(ctx, part_lse[p], name, rows)) != SPARCL_OK)
            return st;
        if (part_out[p] == out || part_lse[p] == out ||
            (lse && (part_out[p] == lse || part_lse[p] == lse)))
            return BAD("part %d aliases out or lse", p);
    }
    if ((st = sparcl__check_float_buffer(ctx, out, "out", ospan)) != SPARCL_OK)
        return st;
    if (lse && (st = sparcl__check_float_buffer(ctx, lse, "lse", rows)) != SPARCL_OK)
        return st;
    if (lse == out)
        return BAD("lse aliases out");
    return SPARCL_OK;
#undef BAD
}

/* One attn_merge launch: parts [first, first + n) of the call, plus the
 * running result in out/lse when `accumulate`. */
static cl_int set_launch_args(cl_kernel kn, const merge_shape *s, const cl_mem *part_out,
                              const cl_mem *part_lse, int n, int accumulate,
                              const sparcl_strides *ps, cl_mem out, const sparcl_strides *os,
                              cl_mem lse, int write_lse)
{
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    for (int p = 0; p < MERGE_ARGS; ++p) /* unused slots repeat part 0 */
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &part_out[p < n ? p : 0]);
    for (int p = 0; p < MERGE_ARGS; ++p)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &part_lse[p < n ? p : 0]);
    const cl_int nn = n, acc = accumulate, wl = write_lse;
    const cl_long strides[6] = {ps->batch, ps->head, ps->seq, os->batch, os->head, os->seq};
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &nn);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &acc);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), lse ? &lse : &out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &wl);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &s->q_len);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &s->heads);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &s->head_dim);
    for (int k = 0; k < 6; ++k)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[k]);
    return err;
}

SPARCL_API sparcl_status sparcl_merge(sparcl_ctx *ctx, cl_command_queue queue, int batch, int heads,
                                      int q_len, int head_dim, int parts, const cl_mem *part_out,
                                      const cl_mem *part_lse, sparcl_strides part_strides,
                                      cl_mem out, sparcl_strides o_strides, cl_mem lse,
                                      cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    const merge_shape s = {batch, heads, q_len, head_dim};
    sparcl_status st = sparcl__check_queue(ctx, queue, "merge's");
    if (st == SPARCL_OK)
        st = check_call(ctx, &s, parts, part_out, part_lse, &part_strides, out, &o_strides, lse,
                        num_wait, wait);
    if (st != SPARCL_OK)
        return st;
    if (!queue)
        queue = ctx->queue;
    /* Launches after the first accumulate into out and a running lse: the
     * caller's, or a temporary one. */
    const int launches =
        parts <= MERGE_ARGS ? 1 : 1 + (int)sparcl__ceil_div_i64(parts - MERGE_ARGS, MERGE_ARGS - 1);
    cl_mem run_lse = lse;
    cl_int err = CL_SUCCESS;
    if (launches > 1 && !lse) {
        run_lse = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE,
                                 (size_t)batch * (size_t)heads * (size_t)q_len * sizeof(float),
                                 NULL, &err);
        if (!run_lse)
            return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                "cannot allocate the running lse of a %d-part merge (%s)", parts,
                                sparcl__cl_error_name(err));
    }
    cl_kernel kn = NULL;
    if ((st = merge_kernel(ctx, "attn_merge", SPARCL_DTYPE_F32, &kn)) != SPARCL_OK) {
        if (run_lse && run_lse != lse)
            clReleaseMemObject(run_lse);
        return st;
    }
    size_t global[3];
    merge_global(global, batch, heads, q_len);
    cl_event prev = NULL;
    int first = 0;
    for (int l = 0; l < launches && st == SPARCL_OK; ++l) {
        const int n = l == 0 ? (parts < MERGE_ARGS ? parts : MERGE_ARGS)
                             : (parts - first < MERGE_ARGS - 1 ? parts - first : MERGE_ARGS - 1);
        err = set_launch_args(kn, &s, part_out + first, part_lse + first, n, l > 0, &part_strides,
                              out, &o_strides, run_lse, run_lse != NULL);
        if (err != CL_SUCCESS) {
            st = sparcl__fail_cl(ctx, err, "clSetKernelArg(attn_merge)");
            break;
        }
        cl_event ev = NULL;
        err = l == 0 ? clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, NULL, num_wait, wait, &ev)
                     : clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, NULL, 1, &prev, &ev);
        if (prev)
            clReleaseEvent(prev);
        prev = ev;
        if (err != CL_SUCCESS)
            st = sparcl__fail_cl(ctx, err, "clEnqueueNDRangeKernel(attn_merge)");
        first += n;
    }
    clReleaseKernel(kn);
    if (run_lse && run_lse != lse)
        clReleaseMemObject(run_lse); /* kept alive by the enqueued kernels */
    if (prev && event && st == SPARCL_OK)
        *event = prev;
    else if (prev)
        clReleaseEvent(prev);
    return st;
}
