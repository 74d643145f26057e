/*
 * plan_backward.c -- the public backward calls of a plan: argument checks,
 * host copies, and dispatch through the kind's table of operations (the
 * backward itself is the kind's; for softmax over a layout, backward.c; for
 * the sparse normalizations, backward_entmax.c).
 */
#include <stdlib.h>

#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "kernels/params.h"
#include "plan/dtype_stage.h"
#include "plan/plan.h"

/* The tensors of one backward call; strides: q, k, v, out (= dout).  de,
 * df: the gradients of Linformer's E and F, or NULL; dz: the gradient of
 * an adaptive-span plan's spans, or NULL. */
typedef struct bwd_args {
    cl_mem q, k, v, out, lse, dout, dq, dk, dv, de, df, dz;
} bwd_args;

/* A half plan's backward runs in the plan's dtype (kind->half_backward) or
 * is staged through fp32 (dtype_stage.h), except where the kind cannot be
 * staged: refused before the buffers are checked. */
static sparcl_status dtype_refused(sparcl_plan *p, const char *label)
{
    if (p->view.desc.dtype == SPARCL_DTYPE_F32 || !p->ops->half_no_backward)
        return SPARCL_OK;
    return sparcl__fail(p->view.ctx, SPARCL_ERR_NOT_SUPPORTED,
                        "the backward of %s plans does not support dtype %s (it chooses its "
                        "blocks again from q and k as stored; use SPARCL_DTYPE_F32)",
                        label, sparcl_dtype_name(p->view.desc.dtype));
}

/* The backward pass of p's kind, or NULL with the message. */

static const sparcl__kind_ops *kind_with_backward(sparcl_plan *p)
{
    const char *label = p->ops->label ? p->ops->label(p->state) : p->ops->name;
    if (dtype_refused(p, label) != SPARCL_OK)
        return NULL;
    if (p->ops->backward && p->ops->prepare_backward)
        return p->ops;
    sparcl__fail(p->view.ctx, SPARCL_ERR_NOT_SUPPORTED,
                 "the backward of %s plans is not implemented (kind: %s); supported: exact "
                 "softmax attention over a layout (fused and dense path), and sparsemax, "
                 "1.5-entmax and alpha-entmax over a layout",
                 label, p->ops->name);
    return NULL;
}

SPARCL_API sparcl_status sparcl_plan_prepare_backward(sparcl_plan *p, const sparcl_params *params)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    if (params && sparcl__params_valid(p->view.ctx, params, "params") != SPARCL_OK)
        return SPARCL_ERR_INVALID_ARGUMENT;
    const sparcl__kind_ops *kind = kind_with_backward(p);
    if (!kind)
        return SPARCL_ERR_NOT_SUPPORTED;
    sparcl_status st = kind->prepare_backward(p->state, params, NULL, NULL);
    if (st == SPARCL_OK && p->stage && !kind->half_backward) /* the backward's staging */
        st = sparcl__stage_prepare_backward(p->stage, kind->name, kind->device_bytes(p->state));
    return st;
}

SPARCL_API sparcl_status sparcl_plan_backward_params(sparcl_plan *p, sparcl_params *params,
                                                     sparcl_param_source *source)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    const sparcl__kind_ops *kind = kind_with_backward(p);
    return kind ? kind->prepare_backward(p->state, NULL, params, source) : SPARCL_ERR_NOT_SUPPORTED;
}

/* Low-rank kinds: the lse FAVOR+ lacks and the projection gradients only
 * Linformer has (sparcl_plan_backward_proj). */
static sparcl_status check_lowrank_args(sparcl_plan *p, const bwd_args *a)
{
    const sparcl_plan_desc *d = &p->view.desc;
    if (p->ops->no_lse && a->lse)
        return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s plans write no lse; pass NULL as lse", p->ops->name);
    if (!p->ops->no_lse && !a->lse)
        return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "lse buffer is NULL; the backward needs the forward's LSE");
    if ((a->de || a->df) && !p->ops->proj_grads)
        return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s is only for Linformer plans (this plan: %s); pass NULL",
                            a->de ? "dproj_e" : "dproj_f", p->ops->name);
    const int64_t ne = (int64_t)d->proj_len * d->kv_len;
    sparcl_status st;
    if ((a->de && (st = sparcl__plan_check_buffer(p, a->de, "dproj_e", ne))) ||
        (a->df && (st = sparcl__plan_check_buffer(p, a->df, "dproj_f", ne))))
        return st;
    if (a->dz && !p->ops->span_grads)
        return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "dspans is only for adaptive-span plans (this plan: %s); pass NULL",
                            p->ops->name);
    if (a->dz && (st = sparcl__plan_check_buffer(p, a->dz, "dspans", d->q_heads)))
        return st;
    const cl_mem all[12] = {a->q,  a->k,  a->v,  a->out, a->lse, a->dout,
                            a->dq, a->dk, a->dv, a->de,  a->df,  a->dz};
    static const char *const names[12] = {"q",  "k",  "v",  "out",     "lse",     "dout",
                                          "dq", "dk", "dv", "dproj_e", "dproj_f", "dspans"};
    for (int i = 9; i < 12; ++i)
        for (int j = 0; j < 12 && all[i]; ++j)
            if (i != j && all[i] == all[j])
                return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s aliases %s",
                                    names[i], names[j]);
    return SPARCL_OK;
}

static sparcl_status check_args(sparcl_plan *p, const sparcl_strides *ts, const bwd_args *a,
                                cl_uint num_wait, const cl_event *wait)
{
    const sparcl_plan_desc *d = &p->view.desc;
    const int64_t nq = sparcl__plan_span(ts[0], d->batch, d->q_heads, d->q_len, d->head_dim);
    const int64_t nk = sparcl__plan_span(ts[1], d->batch, d->kv_heads, d->kv_len, d->head_dim);
    const int64_t nv = sparcl__plan_span(ts[2], d->batch, d->kv_heads, d->kv_len, d->head_dim);
    const int64_t no = sparcl__plan_span(ts[3], d->batch, d->q_heads, d->q_len, d->head_dim);
    const int64_t nl = (int64_t)d->batch * d->q_heads * d->q_len;
    sparcl_status st = check_lowrank_args(p, a);
    if (st != SPARCL_OK)
        return st;
    const struct {
        cl_mem m;
        const char *name;
        int64_t elems;
    } all[9] = {{a->q, "q", nq},     {a->k, "k", nk},     {a->v, "v", nv},
                {a->out, "out", no}, {a->lse, "lse", nl}, {a->dout, "dout", no},
                {a->dq, "dq", nq},   {a->dk, "dk", nk},   {a->dv, "dv", nv}};
    for (int i = 0; i < 9; ++i) /* lse is float, the tensors the plan's dtype */
        if ((i != 4 || all[i].m) &&
            (st = i == 4 ? sparcl__plan_check_buffer(p, all[i].m, all[i].name, all[i].elems)
                         : sparcl__plan_check_stored(p, all[i].m, all[i].name, all[i].elems)))
            return st;
    /* The outputs are written while every input is read. */
    for (int i = 6; i < 9; ++i)
        for (int j = 0; j < 9; ++j)
            if (i != j && all[i].m == all[j].m)
                return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s aliases %s",
                                    all[i].name, all[j].name);
    if ((num_wait == 0) != (wait == NULL))
        return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "num_wait %u does not match wait list %p", num_wait, (void *)wait);
    /* dq, dk and dv are written with q's, k's and v's strides. */
    const int heads[3] = {d->q_heads, d->kv_heads, d->kv_heads};
    const int lens[3] = {d->q_len, d->kv_len, d->kv_len};
    for (int t = 0; t < 3; ++t)
        if (!sparcl__plan_strides_injective(ts[t], d->batch, heads[t], lens[t], d->head_dim))
            return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s strides (batch %lld, head %lld, seq %lld) overlap, so %s "
                                "cannot be written with them",
                                all[t].name, (long long)ts[t].batch, (long long)ts[t].head,
                                (long long)ts[t].seq, all[6 + t].name);
    return SPARCL_OK;
}

/* queue: where the kernels go (never NULL here). */
static sparcl_status backward_strided(sparcl_plan *p, cl_command_queue queue,
                                      const sparcl_strides *ts, const bwd_args *a, cl_uint num_wait,
                                      const cl_event *wait, cl_event *event)
{
    sparcl_status st = dtype_refused(p, p->ops->label ? p->ops->label(p->state) : p->ops->name);
    if (st == SPARCL_OK)
        st = check_args(p, ts, a, num_wait, wait);
    if (st != SPARCL_OK)
        return st;
    const sparcl__kind_ops *kind = kind_with_backward(p);
    if (!kind)
        return SPARCL_ERR_NOT_SUPPORTED;
    const sparcl__bwd_call c = {queue, ts,    a->q,     a->k, a->v,  a->out, a->lse, a->dout, a->dq,
                                a->dk, a->dv, num_wait, wait, event, a->de,  a->df,  a->dz};
    if (p->stage && !kind->half_backward)
        return sparcl__stage_backward(p->stage, kind, p->state, &c, kind->device_bytes(p->state));
    return kind->backward(p->state, &c);
}

sparcl_status sparcl__plan_backward_strided(sparcl_plan *p, cl_command_queue queue,
                                            const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                            cl_mem out, cl_mem lse, cl_mem dout, cl_mem dq,
                                            cl_mem dk, cl_mem dv, cl_uint num_wait,
                                            const cl_event *wait, cl_event *event)
{
    const bwd_args a = {q, k, v, out, lse, dout, dq, dk, dv, NULL, NULL, NULL};
    return backward_strided(p, queue ? queue : p->view.ctx->queue, ts, &a, num_wait, wait, event);
}

/* The public device calls: the plan and queue checked, the plan's strides. */
static sparcl_status backward_public(sparcl_plan *p, cl_command_queue queue, const bwd_args *a,
                                     cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    sparcl_strides ts[4];
    sparcl_status st = sparcl__plan_call_begin(p, queue, ts);
    if (st != SPARCL_OK)
        return st;
    return backward_strided(p, queue ? queue : p->view.ctx->queue, ts, a, num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_backward_span(sparcl_plan *p, cl_command_queue queue, cl_mem q,
                                                   cl_mem k, cl_mem v, cl_mem out, cl_mem lse,
                                                   cl_mem dout, cl_mem dq, cl_mem dk, cl_mem dv,
                                                   cl_mem dspans, cl_uint num_wait,
                                                   const cl_event *wait, cl_event *event)
{
    const bwd_args a = {q, k, v, out, lse, dout, dq, dk, dv, NULL, NULL, dspans};
    return backward_public(p, queue, &a, num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_backward_proj(sparcl_plan *p, cl_command_queue queue, cl_mem q,
                                                   cl_mem k, cl_mem v, cl_mem out, cl_mem lse,
                                                   cl_mem dout, cl_mem dq, cl_mem dk, cl_mem dv,
                                                   cl_mem dproj_e, cl_mem dproj_f, cl_uint num_wait,
                                                   const cl_event *wait, cl_event *event)
{
    const bwd_args a = {q, k, v, out, lse, dout, dq, dk, dv, dproj_e, dproj_f, NULL};
    return backward_public(p, queue, &a, num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_backward_on_queue(sparcl_plan *p, cl_command_queue queue,
                                                       cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                       cl_mem lse, cl_mem dout, cl_mem dq,
                                                       cl_mem dk, cl_mem dv, cl_uint num_wait,
                                                       const cl_event *wait, cl_event *event)
{
    return sparcl_plan_backward_proj(p, queue, q, k, v, out, lse, dout, dq, dk, dv, NULL, NULL,
                                     num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_backward(sparcl_plan *p, cl_mem q, cl_mem k, cl_mem v,
                                              cl_mem out, cl_mem lse, cl_mem dout, cl_mem dq,
                                              cl_mem dk, cl_mem dv, cl_uint num_wait,
                                              const cl_event *wait, cl_event *event)
{
    return sparcl_plan_backward_on_queue(p, NULL, q, k, v, out, lse, dout, dq, dk, dv, num_wait,
                                         wait, event);
}

/* The host calls: host[] holds q, k, v, out, lse, dout (inputs) then dq,
 * dk, dv, dproj_e, dproj_f, dspans (outputs), in bwd_args order; lse may
 * be NULL for a kind without one, the last three whenever not wanted. */
static sparcl_status backward_host(sparcl_plan *p, const void *const host[12])
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    const sparcl_plan_desc *d = &p->view.desc;
    /* The plan validated every extent positive; the element counts and
     * byte sizes saturate, so a shape too large to address fails the
     * max_alloc check below instead of wrapping past it. */
    const size_t batch = (size_t)d->batch, dim = (size_t)d->head_dim;
    const size_t nl = sparcl__sat_mul(sparcl__sat_mul(batch, (size_t)d->q_heads), (size_t)d->q_len);
    const size_t nq = sparcl__sat_mul(nl, dim);
    const size_t nk = sparcl__sat_mul(
        sparcl__sat_mul(sparcl__sat_mul(batch, (size_t)d->kv_heads), (size_t)d->kv_len), dim);
    const size_t ne = sparcl__sat_mul((size_t)d->proj_len, (size_t)d->kv_len);
    static const char *names[12] = {"q",  "k",  "v",  "out",     "lse",     "dout",
                                    "dq", "dk", "dv", "dproj_e", "dproj_f", "dspans"};
    const size_t elems[12] = {nq, nk, nk, nq, nl, nq, nq, nk, nk, ne, ne, (size_t)d->q_heads};
    /* The tensors hold the plan's dtype; lse and the kinds' own parameter
     * gradients are float. */
    const size_t es = sparcl_dtype_size(d->dtype);
    size_t bytes[12];
    for (int i = 0; i < 12; ++i)
        bytes[i] = sparcl__sat_mul(elems[i], i == 4 || i >= 9 ? sizeof(float) : es);
    for (int i = 0; i < 9; ++i)
        if (!host[i] && (i != 4 || !p->ops->no_lse))
            return sparcl__fail(p->view.ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL%s", names[i],
                                i == 4 ? "; the backward needs the forward's LSE" : "");
    for (int i = 0; i < 12; ++i)
        if (host[i] && bytes[i] > p->view.ctx->limits.max_alloc)
            return sparcl__fail(p->view.ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                "%s needs %zu bytes; the device's largest allocation is %llu",
                                names[i], bytes[i],
                                (unsigned long long)p->view.ctx->limits.max_alloc);
    cl_mem m[12] = {NULL};
    sparcl_status st = SPARCL_OK;
    cl_int err = CL_SUCCESS;
    /* The gradients read-write: the softmax's ALGO=1 adds into an fp32 dq
     * in place (a write-only dq would cost it a partial buffer). */
    for (int i = 0; i < 12 && st == SPARCL_OK; ++i) {
        if (!host[i])
            continue;
        m[i] = clCreateBuffer(p->view.ctx->context,
                              i < 6 ? CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                              bytes[i], i < 6 ? (void *)host[i] : NULL, &err);
        if (!m[i])
            st = sparcl__fail(p->view.ctx, SPARCL_ERR_OUT_OF_MEMORY,
                              "cannot allocate device buffers for the host call (%s)",
                              sparcl__cl_error_name(err));
    }
    if (st == SPARCL_OK) {
        /* Host arrays are contiguous whatever strides the plan was made for. */
        const sparcl_strides z = {0, 0, 0};
        const sparcl_strides ts[4] = {sparcl__plan_resolve(z, d, d->q_heads, d->q_len),
                                      sparcl__plan_resolve(z, d, d->kv_heads, d->kv_len),
                                      sparcl__plan_resolve(z, d, d->kv_heads, d->kv_len),
                                      sparcl__plan_resolve(z, d, d->q_heads, d->q_len)};
        const bwd_args a = {m[0], m[1], m[2], m[3], m[4],  m[5],
                            m[6], m[7], m[8], m[9], m[10], m[11]};
        cl_event ev = NULL;
        st = backward_strided(p, p->view.ctx->queue, ts, &a, 0, NULL, &ev);
        for (int i = 6; i < 12 && st == SPARCL_OK; ++i) {
            if (!m[i])
                continue;
            err = clEnqueueReadBuffer(p->view.ctx->queue, m[i], CL_TRUE, 0, bytes[i],
                                      (void *)host[i], 1, &ev, NULL);
            if (err != CL_SUCCESS)
                st = sparcl__fail_cl(p->view.ctx, err, "clEnqueueReadBuffer");
        }
        if (ev)
            clReleaseEvent(ev);
    }
    for (int i = 0; i < 12; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
    return st;
}

SPARCL_API sparcl_status sparcl_plan_backward_host(sparcl_plan *p, const void *q, const void *k,
                                                   const void *v, const void *out, const float *lse,
                                                   const void *dout, void *dq, void *dk, void *dv)
{
    const void *const host[12] = {q, k, v, out, lse, dout, dq, dk, dv, NULL, NULL, NULL};
    return backward_host(p, host);
}

SPARCL_API sparcl_status sparcl_plan_backward_proj_host(sparcl_plan *p, const void *q,
                                                        const void *k, const void *v,
                                                        const void *out, const float *lse,
                                                        const void *dout, void *dq, void *dk,
                                                        void *dv, float *dproj_e, float *dproj_f)
{
    const void *const host[12] = {q, k, v, out, lse, dout, dq, dk, dv, dproj_e, dproj_f, NULL};
    return backward_host(p, host);
}

SPARCL_API sparcl_status sparcl_plan_backward_span_host(sparcl_plan *p, const void *q,
                                                        const void *k, const void *v,
                                                        const void *out, const float *lse,
                                                        const void *dout, void *dq, void *dk,
                                                        void *dv, float *dspans)
{
    const void *const host[12] = {q, k, v, out, lse, dout, dq, dk, dv, NULL, NULL, dspans};
    return backward_host(p, host);
}
