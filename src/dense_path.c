/*
 * dense_path.c -- the dense algorithm of the forward pass (ALGO=1), see
 * dense_path.h.  It materializes scores, so it exists only for the density
 * range where two well-tuned GEMMs beat the fused kernel; it keeps the
 * layout's semantics exactly by running the plan's own tile lists through
 * the masked softmax kernel.
 *
 * Heads are processed in chunks that fit the workspace.  For GQA, query
 * head hk * group + r uses KV head hk, so each GEMM batches the KV heads of
 * a chunk for one r: query heads at a stride of group heads.
 */
#include <clblast_c.h>
#include <math.h>
#include <stdlib.h>

#include "checked.h"
#include "ctx.h"
#include "dense_path.h"
#include "error.h"
#include "memory.h"
#include "program.h"

size_t sparcl__dense_head_bytes(int q_len, int kv_len, int block_n)
{
    size_t ld = ((size_t)kv_len + (size_t)block_n - 1) / (size_t)block_n * (size_t)block_n;
    return sparcl__sat_mul(sparcl__sat_mul((size_t)q_len, ld),
                           sizeof(float)); /* SIZE_MAX: never fits */
}

sparcl_status sparcl__dense_init(sparcl_plan *p, const char *options, int *applies)
{
    sparcl_ctx *ctx = p->ctx;
    const sparcl_plan_desc *d = &p->desc;
    *applies = 0;
    cl_command_queue_properties props = 0;
    clGetCommandQueueInfo(ctx->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) {
        /* CLBlast takes no wait lists: it needs the queue's order. */
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "ALGO=1 needs an in-order queue; using the fused kernel");
        return SPARCL_OK;
    }
    const int64_t ss[4] = {p->qs.seq, p->ks.seq, p->vs.seq, p->os.seq};
    for (int t = 0; t < 4; ++t)
        if (ss[t] < d->head_dim) {
            sparcl__log(ctx, SPARCL_LOG_WARNING,
                        "ALGO=1 needs row strides >= head_dim for SGEMM; using the fused kernel");
            return SPARCL_OK;
        }
    const size_t head = sparcl__dense_head_bytes(d->q_len, d->kv_len, p->block_n);
    size_t budget = sparcl__mem_device_limit(ctx) / 4; /* default: global memory / 4 */
    if (ctx->limits.max_alloc && ctx->limits.max_alloc < budget)
        budget = (size_t)ctx->limits.max_alloc;
    size_t chunk = head ? budget / head : 0;
    if (chunk < 1) {
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "ALGO=1 needs %zu bytes of scores per head, more than the device allows "
                    "(%zu); using the fused kernel",
                    head, budget);
        return SPARCL_OK;
    }
    if (chunk > (size_t)d->kv_heads)
        chunk = (size_t)d->kv_heads;

    cl_program prog;
    sparcl_status st = sparcl__program_get(ctx, "attn_dense_softmax.cl", options, &prog);
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    p->softmax_kernel = clCreateKernel(prog, "attn_dense_softmax", &err);
    if (!p->softmax_kernel)
        return sparcl__fail_cl(ctx, err, "clCreateKernel(attn_dense_softmax)");
    p->scores = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, chunk * head, NULL, &err);
    if (!p->scores)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate the %zu-byte score workspace of ALGO=1: %s",
                            chunk * head, sparcl__cl_error_name(err));
    p->device_bytes += chunk * head;
    p->dense_chunk = (int)chunk;
    p->dense_ld = (int64_t)(head / sizeof(float) / (size_t)d->q_len);
    *applies = 1;
    return SPARCL_OK;
}

static sparcl_status blast_fail(sparcl_ctx *ctx, CLBlastStatusCode status, const char *what)
{
    if (status > -1000) /* CLBlast passes OpenCL errors through unchanged */
        return sparcl__fail_cl(ctx, (cl_int)status, what);
    return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED, "%s failed: CLBlast status %d", what,
                        (int)status);
}

/* The softmax over the chunk's scores (query heads hq0, hq0 + group, ...). */
static sparcl_status enqueue_softmax(sparcl_plan *p, cl_command_queue queue, cl_mem lse, int b,
                                     int hq0, int count)
{
    const sparcl_plan_desc *d = &p->desc;
    const cl_int write_lse = lse != NULL;
    const cl_long ld = p->dense_ld;
    cl_mem lse_arg = lse ? lse : p->scores;
    cl_kernel kn = p->softmax_kernel;
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &p->scores);
    err |= clSetKernelArg(kn, a++, sizeof(cl_long), &ld);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &lse_arg);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &write_lse);
    err |= sparcl__plan_set_layout_args(p, kn, &a);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &b);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &hq0);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(p->ctx, err, "clSetKernelArg(attn_dense_softmax)");
    size_t global[2] = {(size_t)d->q_len, (size_t)count};
    err = clEnqueueNDRangeKernel(queue, kn, 2, NULL, global, NULL, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(p->ctx, err, "clEnqueueNDRangeKernel(attn_dense_softmax)");
    return SPARCL_OK;
}

sparcl_status sparcl__dense_forward(sparcl_plan *p, cl_command_queue queue,
                                    const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                    cl_mem out, cl_mem lse, cl_uint num_wait, const cl_event *wait,
                                    cl_event *event)
{
    const sparcl_plan_desc *d = &p->desc;
    cl_command_queue_properties props = 0;
    clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return sparcl__fail(p->ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "ALGO=1 needs an in-order queue (CLBlast takes no wait lists)");
    if (num_wait || p->last) { /* the in-order queue holds everything after this marker */
        cl_uint n;
        cl_event *all = sparcl__plan_wait_list(p, num_wait, wait, &n);
        if (!all)
            return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
        cl_int err = clEnqueueMarkerWithWaitList(queue, n, all, NULL);
        free(all);
        if (err != CL_SUCCESS)
            return sparcl__fail_cl(p->ctx, err, "clEnqueueMarkerWithWaitList");
    }
    const int group = d->q_heads / d->kv_heads;
    const float alpha = p->scale * (float)CL_M_LOG2E; /* scores in log2 units for exp2 */
    const size_t head = (size_t)d->q_len * (size_t)p->dense_ld;
    cl_event ev = NULL;
    const sparcl_strides qs = ts[0], ks = ts[1], vs = ts[2], os = ts[3];
    for (int b = 0; b < d->batch; ++b)
        for (int r = 0; r < group; ++r)
            for (int hk0 = 0; hk0 < d->kv_heads; hk0 += p->dense_chunk) {
                const int count =
                    d->kv_heads - hk0 < p->dense_chunk ? d->kv_heads - hk0 : p->dense_chunk;
                const int hq0 = hk0 * group + r;
                const int last =
                    b == d->batch - 1 && r == group - 1 && hk0 + p->dense_chunk >= d->kv_heads;
                CLBlastStatusCode bs = CLBlastSgemmStridedBatched(
                    CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes,
                    (size_t)d->q_len, (size_t)d->kv_len, (size_t)d->head_dim, alpha, q,
                    (size_t)(b * qs.batch + hq0 * qs.head), (size_t)qs.seq,
                    (size_t)(group * qs.head), k, (size_t)(b * ks.batch + hk0 * ks.head),
                    (size_t)ks.seq, (size_t)ks.head, 0.0f, p->scores, 0, (size_t)p->dense_ld, head,
                    (size_t)count, &queue, NULL);
                if (bs != CLBlastSuccess)
                    return blast_fail(p->ctx, bs, "CLBlastSgemmStridedBatched(Q K^T)");
                sparcl_status st = enqueue_softmax(p, queue, lse, b, hq0, count);
                if (st != SPARCL_OK)
                    return st;
                bs = CLBlastSgemmStridedBatched(
                    CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)d->q_len,
                    (size_t)d->head_dim, (size_t)d->kv_len, 1.0f, p->scores, 0, (size_t)p->dense_ld,
                    head, v, (size_t)(b * vs.batch + hk0 * vs.head), (size_t)vs.seq,
                    (size_t)vs.head, 0.0f, out, (size_t)(b * os.batch + hq0 * os.head),
                    (size_t)os.seq, (size_t)(group * os.head), (size_t)count, &queue,
                    last ? &ev : NULL);
                if (bs != CLBlastSuccess)
                    return blast_fail(p->ctx, bs, "CLBlastSgemmStridedBatched(P V)");
            }
    if (p->last)
        clReleaseEvent(p->last);
    p->last = ev;
    if (event) {
        clRetainEvent(ev);
        *event = ev;
    }
    return SPARCL_OK;
}
