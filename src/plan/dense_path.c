/*
 * dense_path.c -- the CLBlast dense path, the attention kind of attn_fwd's
 * ALGO=1: S = Q K^T by CLBlast's strided-batched SGEMM into an N^2
 * workspace, our masked row softmax (cl/attn_dense_softmax.cl), then O = P V
 * by SGEMM.  It materializes scores, so it exists only for the density
 * range where two well-tuned GEMMs beat the fused kernel (the tuner
 * measures the crossover per device); it keeps the layout's semantics
 * exactly by running the plan's own tile lists through the masked softmax
 * kernel.  When it does not apply (see heads_at_once) it declines, and the
 * plan takes the fused kernel with ALGO=0.
 *
 * Heads are processed in chunks that fit the workspace.  For GQA, query
 * head hk * group + r uses KV head hk, so each GEMM batches the KV heads of
 * a chunk for one r: query heads at a stride of group heads.
 */
#include <clblast_c.h>
#include <math.h>
#include <stdlib.h>

#include "plan/attention_kinds.h"
#include "plan/gemm_params.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "plan/kernel_build.h"
#include "kernels/kernel_registry.h"
#include "plan/plan_tiles.h"
#include "runtime/memory.h"

typedef struct dense {
    sparcl__tiled t; /* first: the backward entries take the state as one */
    /* Scores of `chunk` heads, each q_len rows of ld floats (kv_len padded
     * to whole tiles), and the masked softmax kernel that runs between the
     * two CLBlast GEMMs. */
    cl_kernel softmax;
    cl_mem scores;
    size_t scores_bytes;
    int chunk;
    int64_t ld;
} dense;

static void dense_free(void *state)
{
    dense *s = state;
    if (!s)
        return;
    if (s->softmax)
        clReleaseKernel(s->softmax);
    if (s->scores)
        clReleaseMemObject(s->scores);
    sparcl__tiled_release(&s->t);
    free(s);
}

static size_t dense_bytes(const void *state)
{
    const dense *s = state;
    return sparcl__tiled_bytes(&s->t) + s->scores_bytes;
}

/* Bytes of score workspace one head needs at tile width block_n. */
static size_t head_bytes(int q_len, int kv_len, int block_n)
{
    size_t ld = ((size_t)kv_len + (size_t)block_n - 1) / (size_t)block_n * (size_t)block_n;
    return sparcl__sat_mul(sparcl__sat_mul((size_t)q_len, ld),
                           sizeof(float)); /* SIZE_MAX: never fits */
}

/* Heads whose scores fit at once, or 0 (with the reason in the log) when
 * the path does not apply: it needs an in-order queue, row strides of at
 * least head_dim, and one head's scores within the device's allocation
 * limit and a quarter of its memory. */
static size_t heads_at_once(const sparcl__plan_view *v, int block_n)
{
    sparcl_ctx *ctx = v->ctx;
    const sparcl_plan_desc *d = &v->desc;
    cl_command_queue_properties props = 0;
    clGetCommandQueueInfo(ctx->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) {
        /* CLBlast takes no wait lists: it needs the queue's order. */
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "ALGO=1 needs an in-order queue; using the fused kernel");
        return 0;
    }
    const int64_t ss[4] = {v->qs.seq, v->ks.seq, v->vs.seq, v->os.seq};
    for (int t = 0; t < 4; ++t)
        if (ss[t] < d->head_dim) {
            sparcl__log(ctx, SPARCL_LOG_WARNING,
                        "ALGO=1 needs row strides >= head_dim for SGEMM; using the fused kernel");
            return 0;
        }
    const size_t head = head_bytes(d->q_len, d->kv_len, block_n);
    size_t budget = sparcl__mem_device_limit(ctx) / 4; /* default: global memory / 4 */
    if (ctx->limits.max_alloc && ctx->limits.max_alloc < budget)
        budget = (size_t)ctx->limits.max_alloc;
    size_t chunk = head ? budget / head : 0;
    if (chunk < 1) {
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "ALGO=1 needs %zu bytes of scores per head, more than the device allows "
                    "(%zu); using the fused kernel",
                    head, budget);
        return 0;
    }
    return chunk > (size_t)d->kv_heads ? (size_t)d->kv_heads : chunk;
}

static sparcl_status dense_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                  sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    sparcl_ctx *ctx = v->ctx;
    const sparcl_plan_desc *d = &v->desc;
    /* Reached with unchecked parameters too, which skip the schema's
     * refusal: the SGEMMs would read half buffers as floats. */
    if (d->dtype != SPARCL_DTYPE_F32)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "the dense CLBlast path (ALGO=1) does not support dtype %s",
                            sparcl_dtype_name(d->dtype));
    const size_t chunk = heads_at_once(v, params->v[SPARCL__P_BLOCK_N]);
    if (!chunk) { /* declined: the fused kernel, and the parameters say so */
        sparcl__pset_put(params, SPARCL__P_ALGO, 0);
        return SPARCL_OK;
    }
    dense *s = calloc(1, sizeof *s);
    if (!s)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a plan");
    const size_t head = head_bytes(d->q_len, d->kv_len, params->v[SPARCL__P_BLOCK_N]);
    const sparcl__problem prob = sparcl__problem_from_desc(desc);
    static const char *const names[1] = {"attn_dense_softmax"};
    /* Before any GEMM runs: CLBlast compiles with what is set then. */
    sparcl_status st = sparcl__gemm_params_apply(ctx, desc, report);
    if (st == SPARCL_OK)
        st = sparcl__tiled_init(&s->t, v, desc->layout, desc->previous, params);
    if (st == SPARCL_OK)
        st = sparcl__family_kernels(ctx, &sparcl__schema_attn_fwd, &prob, params, 1, names,
                                    &s->softmax);
    if (st == SPARCL_OK) {
        cl_int err;
        s->scores = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, chunk * head, NULL, &err);
        if (!s->scores)
            st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                              "cannot allocate the %zu-byte score workspace of ALGO=1: %s",
                              chunk * head, sparcl__cl_error_name(err));
    }
    if (st != SPARCL_OK) {
        dense_free(s);
        return st;
    }
    s->scores_bytes = chunk * head;
    s->chunk = (int)chunk;
    s->ld = (int64_t)(head / sizeof(float) / (size_t)d->q_len);
    *state = s;
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
static sparcl_status enqueue_softmax(dense *s, cl_command_queue queue, cl_mem lse, int b, int hq0,
                                     int count)
{
    const sparcl__plan_view *v = s->t.view;
    const cl_int write_lse = lse != NULL;
    const cl_long ld = s->ld;
    cl_mem lse_arg = lse ? lse : s->scores;
    cl_kernel kn = s->softmax;
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->scores);
    err |= clSetKernelArg(kn, a++, sizeof(cl_long), &ld);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &lse_arg);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &write_lse);
    err |= sparcl__tiled_set_layout_args(&s->t, kn, &a);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &b);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &hq0);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(v->ctx, err, "clSetKernelArg(attn_dense_softmax)");
    size_t global[2] = {(size_t)v->desc.q_len, (size_t)count};
    err = clEnqueueNDRangeKernel(queue, kn, 2, NULL, global, NULL, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(v->ctx, err, "clEnqueueNDRangeKernel(attn_dense_softmax)");
    return SPARCL_OK;
}

/* The GEMMs and softmaxes of every chunk; *ev receives the last command's
 * event.  The queue is in-order and the caller's waits are queued. */
static sparcl_status enqueue_chunks(dense *s, const sparcl__fwd_call *c, cl_event *ev)
{
    const sparcl__plan_view *v = s->t.view;
    const sparcl_plan_desc *d = &v->desc;
    cl_command_queue queue = c->queue;
    const int group = d->q_heads / d->kv_heads, chunk = s->chunk;
    const float alpha = v->scale * (float)CL_M_LOG2E; /* scores in log2 units for exp2 */
    const size_t head = (size_t)d->q_len * (size_t)s->ld, ld = (size_t)s->ld;
    const sparcl_strides qs = c->ts[0], ks = c->ts[1], vs = c->ts[2], os = c->ts[3];
    for (int b = 0; b < d->batch; ++b)
        for (int r = 0; r < group; ++r)
            for (int hk0 = 0; hk0 < d->kv_heads; hk0 += chunk) {
                const int count = d->kv_heads - hk0 < chunk ? d->kv_heads - hk0 : chunk;
                const int hq0 = hk0 * group + r;
                const int last = b == d->batch - 1 && r == group - 1 && hk0 + chunk >= d->kv_heads;
                CLBlastStatusCode bs = CLBlastSgemmStridedBatched(
                    CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes,
                    (size_t)d->q_len, (size_t)d->kv_len, (size_t)d->head_dim, alpha, c->q,
                    (size_t)(b * qs.batch + hq0 * qs.head), (size_t)qs.seq,
                    (size_t)(group * qs.head), c->k, (size_t)(b * ks.batch + hk0 * ks.head),
                    (size_t)ks.seq, (size_t)ks.head, 0.0f, s->scores, 0, ld, head, (size_t)count,
                    &queue, NULL);
                if (bs != CLBlastSuccess)
                    return blast_fail(v->ctx, bs, "CLBlastSgemmStridedBatched(Q K^T)");
                sparcl_status st = enqueue_softmax(s, queue, c->lse, b, hq0, count);
                if (st != SPARCL_OK)
                    return st;
                bs = CLBlastSgemmStridedBatched(
                    CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)d->q_len,
                    (size_t)d->head_dim, (size_t)d->kv_len, 1.0f, s->scores, 0, ld, head, c->v,
                    (size_t)(b * vs.batch + hk0 * vs.head), (size_t)vs.seq, (size_t)vs.head, 0.0f,
                    c->out, (size_t)(b * os.batch + hq0 * os.head), (size_t)os.seq,
                    (size_t)(group * os.head), (size_t)count, &queue, last ? ev : NULL);
                if (bs != CLBlastSuccess)
                    return blast_fail(v->ctx, bs, "CLBlastSgemmStridedBatched(P V)");
            }
    return SPARCL_OK;
}

/* The queue must be in-order (CLBlast takes no wait lists); the first
 * command waits for the caller's list and for the plan's previous call
 * (t.last, which this call replaces), so calls on different queues never
 * share the workspace at once. */
static sparcl_status dense_forward_locked(dense *s, const sparcl__fwd_call *c)
{
    sparcl_ctx *ctx = s->t.view->ctx;
    cl_command_queue_properties props = 0;
    clGetCommandQueueInfo(c->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "ALGO=1 needs an in-order queue (CLBlast takes no wait lists)");
    if (c->num_wait || s->t.last) { /* the in-order queue holds everything after this marker */
        cl_uint n;
        cl_event *all = sparcl__tiled_wait_list(&s->t, c->num_wait, c->wait, &n);
        if (!all)
            return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
        cl_int err = clEnqueueMarkerWithWaitList(c->queue, n, all, NULL);
        free(all);
        if (err != CL_SUCCESS)
            return sparcl__fail_cl(ctx, err, "clEnqueueMarkerWithWaitList");
    }
    cl_event ev = NULL;
    sparcl_status st = enqueue_chunks(s, c, &ev);
    if (st != SPARCL_OK)
        return st;
    sparcl__tiled_set_last(&s->t, ev);
    if (c->event)
        *c->event = ev;
    else if (ev)
        clReleaseEvent(ev);
    return SPARCL_OK;
}

static sparcl_status dense_forward(void *state, const sparcl__fwd_call *c)
{
    dense *s = state;
    pthread_mutex_lock(&s->t.lock);
    sparcl_status st = dense_forward_locked(s, c);
    pthread_mutex_unlock(&s->t.lock);
    return st;
}

const sparcl__kind_ops sparcl__kind_dense = {
    .name = "CLBlast dense path",
    .family = &sparcl__schema_attn_fwd,
    .create = dense_create,
    .forward = dense_forward,
    .prepare_backward = sparcl__tiled_prepare_backward,
    .backward = sparcl__tiled_backward,
    .tiled = 1,
    .device_bytes = dense_bytes,
    .free = dense_free,
};
