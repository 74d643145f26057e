/*
 * span_backward.c -- the backward pass of the adaptive-span kind: its
 * lazily built kernels (attn_span family parameters chosen as plans choose
 * theirs) and the dispatch attn_span_bwd_dq -> attn_span_bwd_dkv ->
 * attn_span_bwd_dz (cl/attn_span.cl).
 *
 * Per call the only allocation is the workspace the dQ kernel hands on:
 * D = dO.out and the dz term of every query row (two floats per row),
 * released right after enqueueing (OpenCL keeps it alive until the kernels
 * finish), so that several threads may run one plan at once.
 */
#include <stdlib.h>

#include "kernels/kernel_registry.h"
#include "plan/kernel_build.h"
#include "plan/span.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "tuning/tuning_lookup.h"

static const char *const bwd_names[3] = {"attn_span_bwd_dq", "attn_span_bwd_dkv",
                                         "attn_span_bwd_dz"};

typedef struct span_build {
    const sparcl__span *s;
    sparcl__span_kernels *out;
} span_build;

static sparcl_status build_set(void *user, const sparcl__pset *ps, sparcl_param_source source)
{
    span_build *b = user;
    return sparcl__span_kernels_build(b->s, ps, source, 3, bwd_names, b->out);
}

/* Chooses the parameters (override, tuning databases, defaults; a tuned
 * row that cannot run falls back to the defaults) and builds into *out.
 * Caller holds s->lock. */
static sparcl_status build(const sparcl__span *s, const sparcl_params *override,
                           sparcl__span_kernels *out)
{
    sparcl_ctx *ctx = s->view->ctx;
    sparcl_plan_desc d = s->view->desc;
    d.params = override;
    span_build b = {s, out};
    return sparcl__family_choose_build(ctx, &sparcl__schema_attn_span, &d, "adaptive-span backward",
                                       build_set, &b);
}

sparcl_status sparcl__span_prepare_backward(void *state, const sparcl_params *override,
                                            sparcl_params *params, sparcl_param_source *source)
{
    sparcl__span *s = state;
    pthread_mutex_lock(&s->lock);
    sparcl_status st = SPARCL_OK;
    if (override || !s->bwd.k[0]) {
        sparcl__span_kernels b;
        st = build(s, override, &b);
        if (st == SPARCL_OK) {
            sparcl__span_kernels_release(&s->bwd);
            s->bwd = b;
        }
    }
    if (st == SPARCL_OK && params)
        *params = s->bwd.params;
    if (st == SPARCL_OK && source)
        *source = s->bwd.source;
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* The arguments of the three kernels.  Caller holds s->lock. */
static cl_int set_args(const sparcl__span *s, const sparcl__bwd_call *c, cl_mem ws)
{
    const sparcl_plan_desc *d = &s->view->desc;
    cl_kernel dq = s->bwd.k[0], dkv = s->bwd.k[1], dz = s->bwd.k[2];
    const cl_mem dq_mems[8] = {c->q, c->k, c->v, c->out, c->lse, c->dout, c->dq, ws};
    const cl_mem dkv_mems[8] = {c->q, c->k, c->v, c->lse, c->dout, c->dk, c->dv, ws};
    cl_uint a = 0, b = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < 8; ++i) {
        err |= clSetKernelArg(dq, a++, sizeof(cl_mem), &dq_mems[i]);
        err |= clSetKernelArg(dkv, b++, sizeof(cl_mem), &dkv_mems[i]);
    }
    err |= sparcl__span_tail_args(s, dq, &a, c->ts);
    err |= sparcl__span_tail_args(s, dkv, &b, c->ts);
    if (c->dspans) {
        const cl_int ints[2] = {d->batch, d->q_len};
        err |= clSetKernelArg(dz, 0, sizeof(cl_mem), &ws);
        err |= clSetKernelArg(dz, 1, sizeof(cl_mem), &c->dspans);
        err |= clSetKernelArg(dz, 2, sizeof(cl_int), &ints[0]);
        err |= clSetKernelArg(dz, 3, sizeof(cl_int), &ints[1]);
        err |= clSetKernelArg(dz, 4, sizeof(cl_float), &s->ramp);
    }
    return err;
}

/* Enqueues dq, then dkv and (with dspans) dz, which read its workspace;
 * explicit dependencies keep the order on out-of-order queues, and the
 * returned event is a marker after all of them.  Caller holds s->lock. */
static sparcl_status enqueue(const sparcl__span *s, const sparcl__bwd_call *c, cl_mem ws)
{
    sparcl_ctx *ctx = s->view->ctx;
    const sparcl_plan_desc *d = &s->view->desc;
    cl_int err = set_args(s, c, ws);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(ctx, err, "clSetKernelArg(attn_span_bwd)");
    const size_t wg = (size_t)s->bwd.wg_size;
    const size_t bm = (size_t)s->bwd.block_m, bn = (size_t)s->bwd.block_n;
    const size_t dq_global[3] = {((size_t)d->q_len + bm - 1) / bm * wg, (size_t)d->q_heads,
                                 (size_t)d->batch};
    const size_t dkv_global[3] = {((size_t)d->kv_len + bn - 1) / bn * wg, (size_t)d->kv_heads,
                                  (size_t)d->batch};
    const size_t local[3] = {wg, 1, 1};
    const size_t dz_global = (size_t)d->q_heads;
    cl_event ev[3] = {NULL, NULL, NULL};
    err = clEnqueueNDRangeKernel(c->queue, s->bwd.k[0], 3, NULL, dq_global, local, c->num_wait,
                                 c->wait, &ev[0]);
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(c->queue, s->bwd.k[1], 3, NULL, dkv_global, local, 1, &ev[0],
                                     &ev[1]);
    if (err == CL_SUCCESS && c->dspans)
        err = clEnqueueNDRangeKernel(c->queue, s->bwd.k[2], 1, NULL, &dz_global, NULL, 1, &ev[0],
                                     &ev[2]);
    if (err == CL_SUCCESS && c->event)
        err = clEnqueueMarkerWithWaitList(c->queue, c->dspans ? 2 : 1, &ev[1], c->event);
    for (int i = 0; i < 3; ++i)
        if (ev[i])
            clReleaseEvent(ev[i]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(ctx, err, "clEnqueueNDRangeKernel(attn_span_bwd)");
    return SPARCL_OK;
}

sparcl_status sparcl__span_backward(void *state, const sparcl__bwd_call *c)
{
    sparcl__span *s = state;
    const sparcl_plan_desc *d = &s->view->desc;
    /* Validated positive extents; an unaddressable size saturates, and
     * sparcl__scratch refuses it. */
    const size_t rows =
        sparcl__sat_mul(sparcl__sat_mul((size_t)d->batch, (size_t)d->q_heads), (size_t)d->q_len);
    cl_mem ws;
    sparcl_status st =
        sparcl__scratch(s->view->ctx, &ws, sparcl__sat_mul(2 * sizeof(cl_float), rows),
                        "the backward's row workspace");
    if (st != SPARCL_OK)
        return st;
    pthread_mutex_lock(&s->lock);
    if (!s->bwd.k[0])
        st = build(s, NULL, &s->bwd);
    if (st == SPARCL_OK)
        st = enqueue(s, c, ws);
    pthread_mutex_unlock(&s->lock);
    clReleaseMemObject(ws); /* deferred by OpenCL until the kernels are done */
    return st;
}
