/*
 * dtype_stage.c -- half storage for the kinds whose kernels are fp32 only
 * (see dtype_stage.h): the fp32 workspaces, the conversion launches
 * (cl/dtype_convert.cl, built through kernel_build.h) and the ordering of
 * staged calls on one plan.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/params.h"
#include "plan/dtype_stage.h"
#include "plan/kernel_build.h"
#include "plan/plan.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "runtime/memory.h"

/* The workspaces: the forward's four, then the backward's. */
enum { WS_Q, WS_K, WS_V, WS_O, WS_DO, WS_DQ, WS_DK, WS_DV, WS_COUNT };
static const char *const ws_names[WS_COUNT] = {
    "fp32 staging of q",    "fp32 staging of k",  "fp32 staging of v",  "fp32 staging of out",
    "fp32 staging of dout", "fp32 staging of dq", "fp32 staging of dk", "fp32 staging of dv"};

/* Events one staged call enqueues at most: five conversions in, the
 * kind's call, three conversions out, a marker. */
#define MAX_PENDING 10

struct sparcl__dtype_stage {
    const sparcl__plan_view *outer; /* the plan's: the caller's dtype and strides */
    sparcl__plan_view inner;        /* fp32, contiguous */
    int forward;                    /* the forward is staged */
    pthread_mutex_t lock;           /* everything below */
    cl_kernel to_float, from_float; /* NULL until first needed */
    cl_mem ws[WS_COUNT];
    size_t bytes;  /* of the workspaces allocated */
    cl_event last; /* the previous staged call's last event, or NULL */
};

sparcl_plan_desc sparcl__stage_desc(const sparcl_plan_desc *d)
{
    sparcl_plan_desc f = *d;
    f.dtype = SPARCL_DTYPE_F32;
    const sparcl_strides zero = {0, 0, 0};
    f.q_strides = f.k_strides = f.v_strides = f.o_strides = zero;
    return f;
}

/* Floats of workspace `w`: q-shaped or k-shaped. */
static size_t ws_floats(const sparcl__plan_view *v, int w)
{
    const sparcl_plan_desc *d = &v->desc;
    const int q_shaped = w == WS_Q || w == WS_O || w == WS_DO || w == WS_DQ;
    const size_t heads = (size_t)(q_shaped ? d->q_heads : d->kv_heads);
    const size_t len = (size_t)(q_shaped ? d->q_len : d->kv_len);
    return sparcl__sat_mul(sparcl__sat_mul(sparcl__sat_mul((size_t)d->batch, heads), len),
                           (size_t)d->head_dim);
}

static size_t ws_bytes(const sparcl__plan_view *v, int w)
{
    return sparcl__sat_mul(ws_floats(v, w), sizeof(float));
}

/* Caller holds the lock. */
static sparcl_status build_kernels(sparcl__dtype_stage *s)
{
    if (s->to_float)
        return SPARCL_OK;
    sparcl__problem prob = {0};
    prob.dtype = s->outer->desc.dtype;
    const sparcl__pset none = {{0}, 0};
    static const char *const names[2] = {"dtype_to_float", "float_to_dtype"};
    cl_kernel k[2];
    sparcl_status st = sparcl__family_kernels(s->outer->ctx, &sparcl__schema_dtype_convert, &prob,
                                              &none, 2, names, k);
    if (st == SPARCL_OK) {
        s->to_float = k[0];
        s->from_float = k[1];
    }
    return st;
}

/* The message's name for a plan: "<kind> plan of dtype <dtype>". */
static sparcl_status check_total(sparcl__dtype_stage *s, const char *kind, size_t ws,
                                 size_t kind_bytes)
{
    char what[160];
    snprintf(what, sizeof what, "a %s plan of dtype %s with its fp32 staging workspaces",
             kind ? kind : "half-storage", sparcl_dtype_name(s->outer->desc.dtype));
    size_t total;
    if (!sparcl__add_size(ws, kind_bytes, &total))
        total = SIZE_MAX;
    return sparcl__mem_check_device(s->outer->ctx, what, total);
}

/* Allocates workspaces [first, last] that are missing, after checking the
 * resulting total.  Caller holds the lock. */
static sparcl_status ensure_ws(sparcl__dtype_stage *s, int first, int last, const char *kind,
                               size_t kind_bytes)
{
    size_t want = s->bytes;
    for (int w = first; w <= last; ++w)
        if (!s->ws[w] && !sparcl__add_size(want, ws_bytes(s->outer, w), &want))
            want = SIZE_MAX;
    if (want == s->bytes)
        return SPARCL_OK;
    sparcl_status st = check_total(s, kind, want, kind_bytes);
    for (int w = first; w <= last && st == SPARCL_OK; ++w)
        if (!s->ws[w] && (st = sparcl__scratch(s->outer->ctx, &s->ws[w], ws_bytes(s->outer, w),
                                               ws_names[w])) == SPARCL_OK)
            s->bytes += ws_bytes(s->outer, w);
    return st;
}

sparcl_status sparcl__stage_create(const sparcl__plan_view *outer, int forward,
                                   sparcl__dtype_stage **out)
{
    *out = NULL;
    sparcl__dtype_stage *s = calloc(1, sizeof *s);
    if (!s)
        return sparcl__fail(outer->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate the fp32 staging of a half plan");
    s->outer = outer;
    s->forward = forward;
    s->inner = *outer;
    s->inner.desc = sparcl__stage_desc(&outer->desc);
    const sparcl_plan_desc *d = &s->inner.desc;
    const sparcl_strides zero = {0, 0, 0};
    s->inner.qs = sparcl__plan_resolve(zero, d, d->q_heads, d->q_len);
    s->inner.ks = sparcl__plan_resolve(zero, d, d->kv_heads, d->kv_len);
    s->inner.vs = s->inner.ks;
    s->inner.os = s->inner.qs;
    pthread_mutex_init(&s->lock, NULL);
    sparcl_status st = SPARCL_OK;
    if (forward && (st = build_kernels(s)) == SPARCL_OK)
        st = ensure_ws(s, WS_Q, WS_O, NULL, 0);
    if (st != SPARCL_OK) {
        sparcl__stage_free(s);
        return st;
    }
    *out = s;
    return SPARCL_OK;
}

int sparcl__stage_forwards(const sparcl__dtype_stage *s)
{
    return s->forward;
}

const sparcl__plan_view *sparcl__stage_kind_view(const sparcl__dtype_stage *s)
{
    return s->forward ? &s->inner : s->outer;
}

sparcl_status sparcl__stage_check(sparcl__dtype_stage *s, const char *kind, size_t kind_bytes)
{
    pthread_mutex_lock(&s->lock);
    sparcl_status st = check_total(s, kind, s->bytes, kind_bytes);
    pthread_mutex_unlock(&s->lock);
    return st;
}

sparcl_status sparcl__stage_prepare_backward(sparcl__dtype_stage *s, const char *kind,
                                             size_t kind_bytes)
{
    pthread_mutex_lock(&s->lock);
    sparcl_status st = build_kernels(s);
    if (st == SPARCL_OK)
        st = ensure_ws(s, WS_Q, WS_DV, kind, kind_bytes);
    pthread_mutex_unlock(&s->lock);
    return st;
}

size_t sparcl__stage_bytes(sparcl__dtype_stage *s)
{
    pthread_mutex_lock(&s->lock);
    const size_t b = s->bytes;
    pthread_mutex_unlock(&s->lock);
    return b;
}

/* One conversion launch: `half` (the caller's, strides st) to or from the
 * contiguous fp32 `f32`, heads x len rows per batch.  Caller holds the
 * lock (the kernels' arguments are shared). */
static sparcl_status convert(sparcl__dtype_stage *s, cl_command_queue queue, int to_float,
                             cl_mem half, sparcl_strides st, cl_mem f32, int heads, int len,
                             cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    const sparcl_plan_desc *d = &s->outer->desc;
    cl_kernel kn = to_float ? s->to_float : s->from_float;
    const cl_long strides[3] = {st.batch, st.head, st.seq};
    const cl_int shape[3] = {len, heads, d->head_dim};
    cl_uint a = 0;
    cl_int err = clSetKernelArg(kn, a++, sizeof(cl_mem), to_float ? &half : &f32);
    if (!to_float)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &half);
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[i]);
    if (to_float)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &f32);
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_int), &shape[i]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->outer->ctx, err,
                               to_float ? "clSetKernelArg(dtype_to_float)"
                                        : "clSetKernelArg(float_to_dtype)");
    const size_t global[3] = {(size_t)len, (size_t)heads, (size_t)d->batch};
    err = clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, NULL, num_wait, wait, event);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->outer->ctx, err,
                               to_float ? "clEnqueueNDRangeKernel(dtype_to_float)"
                                        : "clEnqueueNDRangeKernel(float_to_dtype)");
    return SPARCL_OK;
}

sparcl_status sparcl__stage_to_float(sparcl__dtype_stage *s, cl_command_queue queue, cl_mem src,
                                     sparcl_strides st, int heads, int len, cl_mem dst,
                                     cl_event *event)
{
    pthread_mutex_lock(&s->lock);
    sparcl_status r = build_kernels(s);
    if (r == SPARCL_OK)
        r = convert(s, queue, 1, src, st, dst, heads, len, 0, NULL, event);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* The events of one staged call, in the order enqueued. */
typedef struct pending {
    cl_event ev[MAX_PENDING];
    cl_uint n;
} pending;

/* The wait list of a call's first launches: the caller's plus the previous
 * staged call's last event.  *list is malloc'd when needed (else points to
 * `wait`); free it with free_waits. */
static sparcl_status first_waits(sparcl__dtype_stage *s, cl_uint num_wait, const cl_event *wait,
                                 const cl_event **list, cl_uint *n)
{
    *list = wait;
    *n = num_wait;
    if (!s->last)
        return SPARCL_OK;
    cl_event *all = malloc(sizeof *all * ((size_t)num_wait + 1));
    if (!all)
        return sparcl__fail(s->outer->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
    for (cl_uint i = 0; i < num_wait; ++i)
        all[i] = wait[i];
    all[num_wait] = s->last;
    *list = all;
    *n = num_wait + 1;
    return SPARCL_OK;
}

static void free_waits(const cl_event *list, const cl_event *wait)
{
    if (list != wait)
        free((void *)list);
}

/* Ends a staged call: the previous call's last event becomes the newest of
 * this one's (a marker after all of them where some launch failed midway,
 * so the next call never overwrites a workspace still in use); on success
 * the caller's event gets the final event.  Caller holds the lock. */
static sparcl_status finish(sparcl__dtype_stage *s, cl_command_queue queue, pending *p,
                            sparcl_status st, cl_event *event)
{
    cl_event newest = NULL;
    if (p->n > 0 && st == SPARCL_OK) {
        newest = p->ev[p->n - 1];
        clRetainEvent(newest);
    } else if (p->n > 0) {
        cl_int err = clEnqueueMarkerWithWaitList(queue, p->n, p->ev, &newest);
        if (err != CL_SUCCESS) { /* cannot order the next call after this one: wait here */
            clWaitForEvents(p->n, p->ev);
            newest = NULL;
        }
    }
    if (newest) {
        if (s->last)
            clReleaseEvent(s->last);
        s->last = newest;
    }
    if (st == SPARCL_OK && event) {
        *event = p->ev[p->n - 1];
        clRetainEvent(*event);
    }
    for (cl_uint i = 0; i < p->n; ++i)
        clReleaseEvent(p->ev[i]);
    return st;
}

/* Converts `n` of the caller's tensors into workspaces, each waiting on
 * the call's first wait list. */
typedef struct stage_in {
    cl_mem half;
    sparcl_strides st;
    int ws, q_shaped;
} stage_in;

static sparcl_status convert_in(sparcl__dtype_stage *s, cl_command_queue queue, const stage_in *in,
                                int n, cl_uint num_wait, const cl_event *wait, pending *p)
{
    const sparcl_plan_desc *d = &s->outer->desc;
    const cl_event *list;
    cl_uint nl;
    sparcl_status st = first_waits(s, num_wait, wait, &list, &nl);
    for (int i = 0; i < n && st == SPARCL_OK; ++i) {
        st = convert(s, queue, 1, in[i].half, in[i].st, s->ws[in[i].ws],
                     in[i].q_shaped ? d->q_heads : d->kv_heads,
                     in[i].q_shaped ? d->q_len : d->kv_len, nl, list, &p->ev[p->n]);
        if (st == SPARCL_OK)
            ++p->n;
    }
    free_waits(list, wait);
    return st;
}

sparcl_status sparcl__stage_forward(sparcl__dtype_stage *s, const sparcl__kind_ops *kind,
                                    void *state, const sparcl__fwd_call *c)
{
    const sparcl_plan_desc *d = &s->outer->desc;
    pending p = {{NULL}, 0};
    pthread_mutex_lock(&s->lock);
    const stage_in in[3] = {
        {c->q, c->ts[0], WS_Q, 1}, {c->k, c->ts[1], WS_K, 0}, {c->v, c->ts[2], WS_V, 0}};
    sparcl_status st = convert_in(s, c->queue, in, 3, c->num_wait, c->wait, &p);
    if (st == SPARCL_OK) {
        const sparcl_strides ts[4] = {s->inner.qs, s->inner.ks, s->inner.vs, s->inner.os};
        cl_event in_events[3] = {p.ev[0], p.ev[1], p.ev[2]};
        sparcl__fwd_call inner = *c;
        inner.ts = ts;
        inner.q = s->ws[WS_Q];
        inner.k = s->ws[WS_K];
        inner.v = s->ws[WS_V];
        inner.out = s->ws[WS_O];
        inner.num_wait = 3;
        inner.wait = in_events;
        inner.event = &p.ev[p.n];
        if ((st = kind->forward(state, &inner)) == SPARCL_OK)
            ++p.n;
    }
    if (st == SPARCL_OK && (st = convert(s, c->queue, 0, c->out, c->ts[3], s->ws[WS_O], d->q_heads,
                                         d->q_len, 1, &p.ev[p.n - 1], &p.ev[p.n])) == SPARCL_OK)
        ++p.n;
    st = finish(s, c->queue, &p, st, c->event);
    pthread_mutex_unlock(&s->lock);
    return st;
}

sparcl_status sparcl__stage_backward(sparcl__dtype_stage *s, const sparcl__kind_ops *kind,
                                     void *state, const sparcl__bwd_call *c, size_t kind_bytes)
{
    const sparcl_plan_desc *d = &s->outer->desc;
    pending p = {{NULL}, 0};
    pthread_mutex_lock(&s->lock);
    sparcl_status st = build_kernels(s);
    if (st == SPARCL_OK)
        st = ensure_ws(s, WS_Q, WS_DV, kind->name, kind_bytes);
    const stage_in in[5] = {{c->q, c->ts[0], WS_Q, 1},
                            {c->k, c->ts[1], WS_K, 0},
                            {c->v, c->ts[2], WS_V, 0},
                            {c->out, c->ts[3], WS_O, 1},
                            {c->dout, c->ts[3], WS_DO, 1}};
    if (st == SPARCL_OK)
        st = convert_in(s, c->queue, in, 5, c->num_wait, c->wait, &p);
    if (st == SPARCL_OK) {
        const sparcl_strides ts[4] = {s->inner.qs, s->inner.ks, s->inner.vs, s->inner.os};
        cl_event in_events[5];
        for (int i = 0; i < 5; ++i)
            in_events[i] = p.ev[i];
        sparcl__bwd_call inner = *c;
        inner.ts = ts;
        inner.q = s->ws[WS_Q];
        inner.k = s->ws[WS_K];
        inner.v = s->ws[WS_V];
        inner.out = s->ws[WS_O];
        inner.dout = s->ws[WS_DO];
        inner.dq = s->ws[WS_DQ];
        inner.dk = s->ws[WS_DK];
        inner.dv = s->ws[WS_DV];
        inner.num_wait = 5;
        inner.wait = in_events;
        inner.event = &p.ev[p.n];
        if ((st = kind->backward(state, &inner)) == SPARCL_OK)
            ++p.n;
    }
    const cl_mem outs[3] = {c->dq, c->dk, c->dv};
    const int from[3] = {WS_DQ, WS_DK, WS_DV};
    const cl_event done = st == SPARCL_OK ? p.ev[p.n - 1] : NULL;
    for (int i = 0; i < 3 && st == SPARCL_OK; ++i)
        if ((st = convert(s, c->queue, 0, outs[i], c->ts[i], s->ws[from[i]],
                          i == 0 ? d->q_heads : d->kv_heads, i == 0 ? d->q_len : d->kv_len, 1,
                          &done, &p.ev[p.n])) == SPARCL_OK)
            ++p.n;
    if (st == SPARCL_OK) { /* one event for the three conversions */
        cl_int err = clEnqueueMarkerWithWaitList(c->queue, 3, &p.ev[p.n - 3], &p.ev[p.n]);
        if (err == CL_SUCCESS)
            ++p.n;
        else
            st = sparcl__fail_cl(s->outer->ctx, err, "clEnqueueMarkerWithWaitList");
    }
    st = finish(s, c->queue, &p, st, c->event);
    pthread_mutex_unlock(&s->lock);
    return st;
}

void sparcl__stage_free(sparcl__dtype_stage *s)
{
    if (!s)
        return;
    if (s->to_float)
        clReleaseKernel(s->to_float);
    if (s->from_float)
        clReleaseKernel(s->from_float);
    for (int w = 0; w < WS_COUNT; ++w)
        if (s->ws[w])
            clReleaseMemObject(s->ws[w]);
    if (s->last)
        clReleaseEvent(s->last);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
