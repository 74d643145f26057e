/*
 * kind_span.c -- the adaptive-span kind (Sukhbaatar et al., 2019): causal
 * softmax attention whose weights a per-head soft mask of the distance
 * multiplies (cl/attn_span.cl).  This file owns the kind's state (the spans
 * on the device, the ramp, the kernels), its creation, the forward call and
 * the public calls that read and replace the spans; the backward is in
 * span_backward.c.
 *
 * The spans live in a device buffer the kernels read at every call, so a
 * training step replaces them with one small write instead of a new plan,
 * and the kernels bound their key walks by them on the device.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_registry.h"
#include "kernels/params.h"
#include "plan/attention_kinds.h"
#include "plan/kernel_build.h"
#include "plan/span.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/memory.h"

sparcl_status sparcl__span_kernels_build(const sparcl__span *s, const sparcl__pset *ps,
                                         sparcl_param_source source, int n,
                                         const char *const *names, sparcl__span_kernels *out)
{
    const sparcl__plan_view *v = s->view;
    const sparcl__kernel_schema *schema = &sparcl__schema_attn_span;
    memset(out, 0, sizeof *out);
    const sparcl__problem prob = sparcl__problem_from_desc(&v->desc);
    sparcl_status st = sparcl__family_kernels(v->ctx, schema, &prob, ps, n, names, out->k);
    if (st != SPARCL_OK)
        return st;
    out->wg_size = ps->v[SPARCL__P_WG_SIZE];
    out->block_m = ps->v[SPARCL__P_BLOCK_M];
    out->block_n = ps->v[SPARCL__P_BLOCK_N];
    sparcl__pset_to_params(schema, ps, &out->params);
    out->source = source;
    return SPARCL_OK;
}

void sparcl__span_kernels_release(sparcl__span_kernels *k)
{
    for (int i = 0; i < 3; ++i)
        if (k->k[i]) {
            clReleaseKernel(k->k[i]);
            k->k[i] = NULL;
        }
}

cl_int sparcl__span_tail_args(const sparcl__span *s, cl_kernel kn, cl_uint *at,
                              const sparcl_strides *ts)
{
    const sparcl_plan_desc *d = &s->view->desc;
    const cl_float scale = s->view->scale;
    cl_int err = clSetKernelArg(kn, (*at)++, sizeof(cl_mem), &s->spans);
    err |= clSetKernelArg(kn, (*at)++, sizeof(cl_float), &s->ramp);
    err |= clSetKernelArg(kn, (*at)++, sizeof(cl_float), &scale);
    for (int t = 0; t < 4; ++t) {
        const cl_long st[3] = {ts[t].batch, ts[t].head, ts[t].seq};
        for (int x = 0; x < 3; ++x)
            err |= clSetKernelArg(kn, (*at)++, sizeof(cl_long), &st[x]);
    }
    const cl_int ints[3] = {d->q_len, d->kv_len, d->q_heads / d->kv_heads};
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, (*at)++, sizeof(cl_int), &ints[i]);
    return err;
}

static void span_free(void *state)
{
    sparcl__span *s = state;
    if (!s)
        return;
    sparcl__span_kernels_release(&s->fwd);
    sparcl__span_kernels_release(&s->bwd);
    if (s->spans)
        clReleaseMemObject(s->spans);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static size_t span_bytes(const void *state)
{
    const sparcl__span *s = state;
    return sizeof(float) * (size_t)s->view->desc.q_heads;
}

/* Writes q_heads spans (checked by the caller) with a blocking write. */
static sparcl_status write_spans(sparcl__span *s, const float *spans)
{
    const cl_int err =
        clEnqueueWriteBuffer(s->view->ctx->queue, s->spans, CL_TRUE, 0,
                             sizeof(float) * (size_t)s->view->desc.q_heads, spans, 0, NULL, NULL);
    return err == CL_SUCCESS ? SPARCL_OK
                             : sparcl__fail_cl(s->view->ctx, err, "clEnqueueWriteBuffer");
}

static sparcl_status span_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                 sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    (void)report;
    sparcl_ctx *ctx = v->ctx;
    sparcl__span *s = calloc(1, sizeof *s);
    if (!s)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate an adaptive-span plan");
    pthread_mutex_init(&s->lock, NULL);
    s->view = v;
    s->ramp = desc->span_ramp;
    const size_t heads = (size_t)desc->q_heads;
    float *host = calloc(heads, sizeof *host); /* NULL spans: all 0 */
    sparcl_status st =
        host ? SPARCL_OK : sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate spans");
    cl_int err = CL_SUCCESS;
    if (st == SPARCL_OK &&
        (st = sparcl__mem_check_device(ctx, "the spans", heads * sizeof(float))) == SPARCL_OK) {
        if (desc->spans)
            memcpy(host, desc->spans, heads * sizeof *host);
        s->spans = clCreateBuffer(ctx->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                  heads * sizeof(float), host, &err);
        if (!s->spans)
            st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the spans (%s)",
                              sparcl__cl_error_name(err));
    }
    free(host);
    static const char *const names[1] = {"attn_span_fwd"};
    if (st == SPARCL_OK)
        st = sparcl__span_kernels_build(s, params, SPARCL_PARAMS_DEFAULT, 1, names, &s->fwd);
    if (st != SPARCL_OK) {
        span_free(s);
        return st;
    }
    *state = s;
    return SPARCL_OK;
}

static sparcl_status span_forward(void *state, const sparcl__fwd_call *c)
{
    sparcl__span *s = state;
    const sparcl_plan_desc *d = &s->view->desc;
    const cl_int has_lse = c->lse != NULL;
    cl_kernel kn = s->fwd.k[0];
    pthread_mutex_lock(&s->lock);
    cl_uint at = 0;
    const cl_mem mems[5] = {c->q, c->k, c->v, c->out, c->lse ? c->lse : c->out};
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < 5; ++i)
        err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &mems[i]);
    err |= clSetKernelArg(kn, at++, sizeof(cl_int), &has_lse);
    err |= sparcl__span_tail_args(s, kn, &at, c->ts);
    sparcl_status st = SPARCL_OK;
    if (err != CL_SUCCESS) {
        st = sparcl__fail_cl(s->view->ctx, err, "clSetKernelArg(attn_span_fwd)");
    } else {
        const size_t wg = (size_t)s->fwd.wg_size, bm = (size_t)s->fwd.block_m;
        const size_t global[3] = {((size_t)d->q_len + bm - 1) / bm * wg, (size_t)d->q_heads,
                                  (size_t)d->batch};
        const size_t local[3] = {wg, 1, 1};
        err = clEnqueueNDRangeKernel(c->queue, kn, 3, NULL, global, local, c->num_wait, c->wait,
                                     c->event);
        if (err != CL_SUCCESS)
            st = sparcl__fail_cl(s->view->ctx, err, "clEnqueueNDRangeKernel(attn_span_fwd)");
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* The span state of `p`, or NULL with the message. */
static sparcl__span *span_of(sparcl_plan *p)
{
    if (!p) {
        sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
        return NULL;
    }
    sparcl__span *s = sparcl__plan_state(p, &sparcl__kind_span);
    if (!s)
        sparcl__fail(sparcl__plan_view_of(p)->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                     "not an adaptive-span plan");
    return s;
}

SPARCL_API sparcl_status sparcl_plan_write_spans(sparcl_plan *p, const float *spans)
{
    sparcl__span *s = span_of(p);
    if (!s)
        return SPARCL_ERR_INVALID_ARGUMENT;
    if (!spans)
        return sparcl__fail(s->view->ctx, SPARCL_ERR_INVALID_ARGUMENT, "spans is NULL");
    sparcl_status st =
        sparcl__span_values_check(s->view->ctx, spans, s->view->desc.q_heads, "spans");
    return st == SPARCL_OK ? write_spans(s, spans) : st;
}

SPARCL_API sparcl_status sparcl_plan_read_spans(sparcl_plan *p, float *spans)
{
    sparcl__span *s = span_of(p);
    if (!s)
        return SPARCL_ERR_INVALID_ARGUMENT;
    if (!spans)
        return sparcl__fail(s->view->ctx, SPARCL_ERR_INVALID_ARGUMENT, "spans is NULL");
    const cl_int err =
        clEnqueueReadBuffer(s->view->ctx->queue, s->spans, CL_TRUE, 0,
                            sizeof(float) * (size_t)s->view->desc.q_heads, spans, 0, NULL, NULL);
    return err == CL_SUCCESS ? SPARCL_OK
                             : sparcl__fail_cl(s->view->ctx, err, "clEnqueueReadBuffer");
}

const sparcl__kind_ops sparcl__kind_span = {
    .name = "adaptive span",
    .family = &sparcl__schema_attn_span,
    .create = span_create,
    .forward = span_forward,
    .prepare_backward = sparcl__span_prepare_backward,
    .backward = sparcl__span_backward,
    .span_grads = 1,
    .half_forward = 1, /* attn_span.cl reads and writes DTYPE, backward included */
    .half_backward = 1,
    .device_bytes = span_bytes,
    .free = span_free,
};
