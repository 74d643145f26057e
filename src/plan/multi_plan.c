/*
 * multi_plan.c -- one attention call over several devices of one host:
 * the public sparcl_multi_plan_* calls.  multi_shards.c decides the shares;
 * here each share becomes an ordinary plan on its context, and a call
 * copies each device its rectangle of the host arrays, enqueues every
 * device before waiting for any, and assembles the result: the shares'
 * rectangles of out (heads, queries), a merge by LSE on contexts[0]
 * (keys), or gradients added on the host in shard order (backward).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/multi_plan.h"
#include "plan/plan.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/struct_size.h"

/* ---- Rectangles of contiguous host tensors ------------------------------ */

/* What a tensor of the call is shaped like. */
enum { T_QUERY, T_KEY, T_LSE };

/* A share's part of a contiguous [B, H, S, D] host tensor, in the terms of
 * clEnqueue{Read,Write}BufferRect: x runs along one head's rows (bytes), y
 * over heads, z over the batch.  The device buffer holds it contiguous. */
typedef struct rect {
    size_t host_origin[3], region[3];
    size_t host_row, host_slice; /* host pitches: one head, one batch entry */
    size_t dev_row, dev_slice;
    size_t bytes; /* the device buffer */
} rect;

static rect rect_of(const sparcl_plan_desc *d, const sparcl__shard *s, int kind)
{
    const int query = kind != T_KEY;
    const size_t f = sizeof(float), dim = kind == T_LSE ? 1 : (size_t)d->head_dim;
    const size_t heads = (size_t)(query ? d->q_heads : d->kv_heads);
    const size_t len = (size_t)(query ? d->q_len : d->kv_len);
    const size_t h0 = (size_t)(query ? s->h0 : s->kh0), nh = (size_t)(query ? s->nh : s->nkh);
    const size_t r0 = (size_t)(query ? s->i0 : s->j0), nr = (size_t)(query ? s->ni : s->nj);
    rect r = {{r0 * dim * f, h0, 0},
              {nr * dim * f, nh, (size_t)d->batch},
              len * dim * f,
              heads * len * dim * f,
              nr * dim * f,
              nh * nr * dim * f,
              (size_t)d->batch * nh * nr * dim * f};
    return r;
}

/* Adds `src` (the rectangle, contiguous) into the host tensor, or with src
 * NULL fills the rectangle with `fill`. */
static void host_rect(const rect *r, float *host, const float *src, float fill)
{
    const size_t n = r->region[0] / sizeof(float);
    for (size_t z = 0; z < r->region[2]; ++z)
        for (size_t y = 0; y < r->region[1]; ++y) {
            float *dst =
                (float *)(void *)((char *)host + z * r->host_slice +
                                  (r->host_origin[1] + y) * r->host_row + r->host_origin[0]);
            if (src) {
                const float *a = src + (z * r->region[1] + y) * n;
                for (size_t x = 0; x < n; ++x)
                    dst[x] += a[x];
            } else {
                for (size_t x = 0; x < n; ++x)
                    dst[x] = fill;
            }
        }
}

/* ---- Errors ---------------------------------------------------------------- */

/* Records a share's failure (its message on its own context) on
 * contexts[0], keeping the OpenCL code and the build log. */
static sparcl_status share_fail(sparcl_multi_plan *mp, int s, sparcl_status st)
{
    sparcl_ctx *own = mp->ctx[mp->shards[s].context], *lead = mp->ctx[0];
    char msg[SPARCL_MSG_MAX];
    snprintf(msg, sizeof msg, "%s", sparcl_ctx_errmsg(own));
    const int c = mp->shards[s].context;
    if (st == SPARCL_ERR_BUILD && own != lead)
        return sparcl__fail_build(lead, sparcl_ctx_build_log(own), "shard %d (contexts[%d]): %s", s,
                                  c, msg);
    if (st == SPARCL_ERR_OPENCL && own != lead) {
        const cl_int err = sparcl_ctx_cl_error(own);
        pthread_mutex_lock(&lead->lock);
        lead->cl_error = err;
        pthread_mutex_unlock(&lead->lock);
    }
    return sparcl__fail(lead, st, "shard %d (contexts[%d]): %.900s", s, c, msg);
}

/* ---- Creation ------------------------------------------------------------ */

static sparcl_status check_contexts(sparcl_ctx *const *contexts, int count)
{
    if (!contexts)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "contexts is NULL");
    if (count < 1 || count > SPARCL_MULTI_MAX_DEVICES)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                            "count %d of contexts is not in [1, %d]", count,
                            SPARCL_MULTI_MAX_DEVICES);
    if (!contexts[0])
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "contexts[0] is NULL");
    for (int k = 1; k < count; ++k) {
        if (!contexts[k])
            return sparcl__fail(contexts[0], SPARCL_ERR_INVALID_ARGUMENT, "contexts[%d] is NULL",
                                k);
        for (int m = 0; m < k; ++m)
            if (contexts[m] == contexts[k])
                return sparcl__fail(contexts[0], SPARCL_ERR_INVALID_ARGUMENT,
                                    "contexts[%d] repeats contexts[%d]: each share needs its own "
                                    "context (one per device)",
                                    k, m);
    }
    return SPARCL_OK;
}

/* What sparcl_multi_plan_init() accepts beyond sparcl_plan_init(). */
static sparcl_status check_desc(sparcl_ctx *ctx, const sparcl_plan_desc *d, int mode)
{
    if (mode != SPARCL_SHARD_HEADS && mode != SPARCL_SHARD_QUERIES && mode != SPARCL_SHARD_KEYS)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "mode %d is not a sparcl_shard_mode (HEADS 0, QUERIES 1, KEYS 2)",
                            mode);
    /* With selection a share would choose its blocks among its own keys
     * and rows, and keep the causal cut folded into a pinned layout (which
     * selection adds to, never cuts by): not the single-device call. */
    if (d->attention != SPARCL_ATTENTION_EXACT || d->select != SPARCL_SELECT_NONE)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "multi-device plans run exact attention only, over the layout as "
                            "given (desc.attention %d, desc.select %d)",
                            d->attention, d->select);
    if (d->dtype != SPARCL_DTYPE_F32)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "multi-device plans take f32 only (desc.dtype %s)",
                            sparcl_dtype_name(d->dtype));
    if (d->page_size > 0)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "multi-device plans take no paged KV cache (desc.page_size %d)",
                            d->page_size);
    /* Every share's attended pairs (sparcl_shard_info.pairs) are at most
     * this product, so counting them cannot overflow once it fits. */
    int64_t pairs;
    if (!sparcl__mul3_i64(d->q_heads, d->q_len, d->kv_len, &pairs))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "q_heads %d x q_len %d x kv_len %d (query, key) pairs exceed int64",
                            d->q_heads, d->q_len, d->kv_len);
    if (mode == SPARCL_SHARD_KEYS && d->normalization != SPARCL_NORMALIZATION_SOFTMAX)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "a cut by keys merges softmax parts by their LSE; normalization %d "
                            "needs a cut by heads or queries",
                            d->normalization);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_multi_plan_init(sparcl_ctx *const *contexts, int count,
                                                sparcl_multi_plan **out,
                                                const sparcl_plan_desc *desc, int mode)
{
    if (!out)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    sparcl_status st = check_contexts(contexts, count);
    if (st != SPARCL_OK)
        return st;
    sparcl_ctx *lead = contexts[0];
    if (!desc)
        return sparcl__fail(lead, SPARCL_ERR_INVALID_ARGUMENT, "desc is NULL");
    sparcl_plan_desc d;
    if ((st = sparcl__plan_desc_read(lead, desc, &d)) != SPARCL_OK ||
        (st = sparcl__plan_desc_check(lead, &d)) != SPARCL_OK ||
        (st = check_desc(lead, &d, mode)) != SPARCL_OK)
        return st;
    sparcl_multi_plan *mp = calloc(1, sizeof *mp);
    if (!mp || !(mp->ctx = malloc(sizeof *mp->ctx * (size_t)count))) {
        free(mp);
        return sparcl__fail(lead, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a multi-device plan");
    }
    memcpy(mp->ctx, contexts, sizeof *mp->ctx * (size_t)count);
    mp->count = count;
    mp->mode = mode;
    sparcl_layout **slices = NULL;
    st = sparcl__multi_shards(lead, &d, count, mode, &mp->shards, &mp->n_shards, &slices);
    const sparcl_strides contiguous = {0, 0, 0};
    for (int s = 0; s < mp->n_shards && st == SPARCL_OK; ++s) {
        sparcl__shard *sh = &mp->shards[s];
        if (sh->pairs == 0)
            continue;
        sparcl_plan_desc sd = d; /* params stay borrowed for this call */
        sd.q_heads = sh->nh;
        sd.kv_heads = sh->nkh;
        sd.q_len = sh->ni;
        sd.kv_len = sh->nj;
        sd.layout = slices[s];
        sd.causal = 0; /* folded into the slice, or a dense call */
        sd.q_strides = sd.k_strides = sd.v_strides = sd.o_strides = contiguous;
        if ((st = sparcl_plan_init(contexts[sh->context], &sh->plan, &sd)) != SPARCL_OK)
            st = share_fail(mp, s, st);
    }
    for (int s = 0; slices && s < mp->n_shards; ++s)
        sparcl_layout_free(slices[s]);
    free(slices);
    if (st != SPARCL_OK) {
        sparcl_multi_plan_free(mp);
        return st;
    }
    mp->desc = d;
    mp->desc.layout = NULL;
    mp->desc.params = NULL;
    mp->desc.proj_e = mp->desc.proj_f = NULL;
    *out = mp;
    return SPARCL_OK;
}

SPARCL_API void sparcl_multi_plan_free(sparcl_multi_plan *mp)
{
    if (!mp)
        return;
    for (int s = 0; mp->shards && s < mp->n_shards; ++s)
        sparcl_plan_free(mp->shards[s].plan);
    free(mp->shards);
    free(mp->ctx);
    free(mp);
}

/* ---- Calls --------------------------------------------------------------- */

#define CALL_IN 6  /* q, k, v, and for the backward out, lse, dout */
#define CALL_OUT 3 /* out, lse; dq, dk, dv */

/* One call: the host tensors and their shapes. */
typedef struct call {
    int backward;
    int n_in, n_out;
    const float *in[CALL_IN];
    float *out[CALL_OUT];
    int in_kind[CALL_IN], out_kind[CALL_OUT];
} call;

/* One share's part of a call. */
typedef struct share_run {
    cl_mem in[CALL_IN], out[CALL_OUT];
    float *stage[CALL_OUT]; /* results read back for the host to add or merge */
    cl_event ev[CALL_IN + 1 + CALL_OUT];
    cl_uint n_ev;
} share_run;

/* Forward results go straight into the caller's rectangles when the
 * shares' rectangles do not overlap (heads, queries); cut by keys, they
 * are parts to merge, kept on contexts[0] or staged on the host. */
static int stages_output(const sparcl_multi_plan *mp, const call *c, int s)
{
    if (c->backward)
        return 1;
    return mp->mode == SPARCL_SHARD_KEYS && mp->shards[s].context != 0;
}

/* A device buffer of `bytes` on share s's context. */
static sparcl_status share_buffer(sparcl_multi_plan *mp, int s, cl_mem_flags flags, size_t bytes,
                                  cl_mem *out)
{
    const int c = mp->shards[s].context;
    cl_int err = CL_SUCCESS;
    *out = clCreateBuffer(mp->ctx[c]->context, flags, bytes, NULL, &err);
    if (*out)
        return SPARCL_OK;
    return sparcl__fail(mp->ctx[0], SPARCL_ERR_OUT_OF_MEMORY,
                        "shard %d: cannot allocate %zu bytes on contexts[%d] (%s)", s, bytes, c,
                        sparcl__cl_error_name(err));
}

/* Creates the share's buffers, enqueues the copies in, its plan's pass and
 * the copies out; r->ev collects every event to wait for. */
static sparcl_status enqueue_share(sparcl_multi_plan *mp, const call *c, int s, share_run *r)
{
    const sparcl__shard *sh = &mp->shards[s];
    sparcl_ctx *ctx = mp->ctx[sh->context], *lead = mp->ctx[0];
    cl_command_queue q = ctx->queue;
    const size_t zero[3] = {0, 0, 0};
    cl_int err = CL_SUCCESS;
    char what[96];
    for (int t = 0; t < c->n_in; ++t) {
        const rect rc = rect_of(&mp->desc, sh, c->in_kind[t]);
        sparcl_status st = share_buffer(mp, s, CL_MEM_READ_ONLY, rc.bytes, &r->in[t]);
        if (st != SPARCL_OK)
            return st;
        err = clEnqueueWriteBufferRect(q, r->in[t], CL_FALSE, zero, rc.host_origin, rc.region,
                                       rc.dev_row, rc.dev_slice, rc.host_row, rc.host_slice,
                                       c->in[t], 0, NULL, &r->ev[r->n_ev]);
        if (err != CL_SUCCESS) {
            snprintf(what, sizeof what, "clEnqueueWriteBufferRect (shard %d)", s);
            return sparcl__fail_cl(lead, err, what);
        }
        ++r->n_ev;
    }
    for (int t = 0; t < c->n_out; ++t) {
        if (!c->backward && t == 1 && !c->out[1] && mp->mode != SPARCL_SHARD_KEYS)
            continue; /* no lse wanted, none needed to merge */
        const rect rc = rect_of(&mp->desc, sh, c->out_kind[t]);
        sparcl_status st = share_buffer(mp, s, CL_MEM_READ_WRITE, rc.bytes, &r->out[t]);
        if (st != SPARCL_OK)
            return st;
        if (stages_output(mp, c, s) && !(r->stage[t] = malloc(rc.bytes)))
            return sparcl__fail(lead, SPARCL_ERR_OUT_OF_MEMORY,
                                "shard %d: cannot allocate %zu bytes of host staging", s, rc.bytes);
    }
    cl_event done = NULL;
    const cl_uint n_in = r->n_ev;
    sparcl_status st =
        c->backward ? sparcl_plan_backward_on_queue(sh->plan, NULL, r->in[0], r->in[1], r->in[2],
                                                    r->in[3], r->in[4], r->in[5], r->out[0],
                                                    r->out[1], r->out[2], n_in, r->ev, &done)
                    : sparcl_plan_forward_on_queue(sh->plan, NULL, r->in[0], r->in[1], r->in[2],
                                                   r->out[0], r->out[1], n_in, r->ev, &done);
    if (st != SPARCL_OK)
        return share_fail(mp, s, st);
    r->ev[r->n_ev++] = done;
    for (int t = 0; t < c->n_out; ++t) {
        if (!r->out[t] || (!r->stage[t] && mp->mode == SPARCL_SHARD_KEYS && !c->backward))
            continue; /* kept on contexts[0] for the merge */
        const rect rc = rect_of(&mp->desc, sh, c->out_kind[t]);
        if (r->stage[t])
            err = clEnqueueReadBuffer(q, r->out[t], CL_FALSE, 0, rc.bytes, r->stage[t], 1, &done,
                                      &r->ev[r->n_ev]);
        else
            err = clEnqueueReadBufferRect(q, r->out[t], CL_FALSE, zero, rc.host_origin, rc.region,
                                          rc.dev_row, rc.dev_slice, rc.host_row, rc.host_slice,
                                          c->out[t], 1, &done, &r->ev[r->n_ev]);
        if (err != CL_SUCCESS) {
            snprintf(what, sizeof what, "clEnqueueRead (shard %d)", s);
            return sparcl__fail_cl(lead, err, what);
        }
        ++r->n_ev;
    }
    if ((err = clFlush(q)) != CL_SUCCESS) {
        snprintf(what, sizeof what, "clFlush (shard %d)", s);
        return sparcl__fail_cl(lead, err, what);
    }
    return SPARCL_OK;
}

/* Waits for everything a share enqueued; reports the first failure. */
static sparcl_status wait_share(sparcl_multi_plan *mp, int s, share_run *r)
{
    if (r->n_ev == 0)
        return SPARCL_OK;
    cl_int err = clWaitForEvents(r->n_ev, r->ev);
    if (err == CL_SUCCESS)
        return SPARCL_OK;
    char what[64];
    snprintf(what, sizeof what, "clWaitForEvents (shard %d)", s);
    return sparcl__fail_cl(mp->ctx[0], err, what);
}

static void release_share(share_run *r)
{
    for (cl_uint e = 0; e < r->n_ev; ++e)
        clReleaseEvent(r->ev[e]);
    for (int t = 0; t < CALL_IN; ++t)
        if (r->in[t])
            clReleaseMemObject(r->in[t]);
    for (int t = 0; t < CALL_OUT; ++t) {
        if (r->out[t])
            clReleaseMemObject(r->out[t]);
        free(r->stage[t]);
    }
}

/* Cut by keys: merges the shares' parts by their LSE on contexts[0] into
 * the caller's out and lse. */
static sparcl_status merge_parts(sparcl_multi_plan *mp, const call *c, share_run *runs)
{
    const sparcl_plan_desc *d = &mp->desc;
    sparcl_ctx *lead = mp->ctx[0];
    const sparcl__shard whole = {.nh = d->q_heads, .nkh = d->kv_heads, .ni = d->q_len};
    const rect ro = rect_of(d, &whole, T_QUERY), rl = rect_of(d, &whole, T_LSE);
    cl_mem part_out[SPARCL_MULTI_MAX_DEVICES], part_lse[SPARCL_MULTI_MAX_DEVICES];
    cl_mem own[2 * SPARCL_MULTI_MAX_DEVICES], mo = NULL, ml = NULL;
    int parts = 0, owned = 0;
    cl_int err = CL_SUCCESS;
    sparcl_status st = SPARCL_OK;
    for (int s = 0; s < mp->n_shards && st == SPARCL_OK; ++s) {
        if (!mp->shards[s].plan)
            continue;
        for (int t = 0; t < 2 && st == SPARCL_OK; ++t) {
            cl_mem m = runs[s].out[t];
            if (runs[s].stage[t]) { /* computed elsewhere: upload to contexts[0] */
                m = clCreateBuffer(lead->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                   t ? rl.bytes : ro.bytes, runs[s].stage[t], &err);
                if (!m)
                    st = sparcl__fail(lead, SPARCL_ERR_OUT_OF_MEMORY,
                                      "cannot allocate a part to merge on contexts[0] (%s)",
                                      sparcl__cl_error_name(err));
                else
                    own[owned++] = m;
            }
            (t ? part_lse : part_out)[parts] = m;
        }
        ++parts;
    }
    if (st == SPARCL_OK && parts == 0) { /* no share attends anything */
        host_rect(&ro, c->out[0], NULL, 0.0f);
        if (c->out[1])
            host_rect(&rl, c->out[1], NULL, -INFINITY);
    } else if (st == SPARCL_OK) {
        mo = clCreateBuffer(lead->context, CL_MEM_WRITE_ONLY, ro.bytes, NULL, &err);
        if (mo && c->out[1])
            ml = clCreateBuffer(lead->context, CL_MEM_WRITE_ONLY, rl.bytes, NULL, &err);
        if (!mo || (c->out[1] && !ml))
            st = sparcl__fail(lead, SPARCL_ERR_OUT_OF_MEMORY,
                              "cannot allocate the merged result on contexts[0] (%s)",
                              sparcl__cl_error_name(err));
    }
    if (st == SPARCL_OK && parts > 0) {
        const sparcl_strides contiguous = {0, 0, 0};
        cl_event ev = NULL;
        st = sparcl_merge(lead, NULL, d->batch, d->q_heads, d->q_len, d->head_dim, parts, part_out,
                          part_lse, contiguous, mo, contiguous, ml, 0, NULL, &ev);
        if (st == SPARCL_OK) {
            err =
                clEnqueueReadBuffer(lead->queue, mo, CL_TRUE, 0, ro.bytes, c->out[0], 1, &ev, NULL);
            if (err == CL_SUCCESS && ml)
                err = clEnqueueReadBuffer(lead->queue, ml, CL_TRUE, 0, rl.bytes, c->out[1], 1, &ev,
                                          NULL);
            clReleaseEvent(ev);
            if (err != CL_SUCCESS)
                st = sparcl__fail_cl(lead, err, "clEnqueueReadBuffer (merged result)");
        }
    }
    for (int k = 0; k < owned; ++k)
        clReleaseMemObject(own[k]);
    if (mo)
        clReleaseMemObject(mo);
    if (ml)
        clReleaseMemObject(ml);
    return st;
}

/* The host's part once every share has finished. */
static sparcl_status assemble(sparcl_multi_plan *mp, const call *c, share_run *runs)
{
    const sparcl_plan_desc *d = &mp->desc;
    if (!c->backward && mp->mode == SPARCL_SHARD_KEYS)
        return merge_parts(mp, c, runs);
    if (!c->backward) { /* shares that attend nothing: out 0, lse -inf */
        for (int s = 0; s < mp->n_shards; ++s) {
            if (mp->shards[s].plan)
                continue;
            const rect ro = rect_of(d, &mp->shards[s], T_QUERY);
            host_rect(&ro, c->out[0], NULL, 0.0f);
            if (c->out[1]) {
                const rect rl = rect_of(d, &mp->shards[s], T_LSE);
                host_rect(&rl, c->out[1], NULL, -INFINITY);
            }
        }
        return SPARCL_OK;
    }
    const sparcl__shard whole = {
        .nh = d->q_heads, .nkh = d->kv_heads, .ni = d->q_len, .nj = d->kv_len};
    for (int t = 0; t < c->n_out; ++t) {
        const rect all = rect_of(d, &whole, c->out_kind[t]);
        host_rect(&all, c->out[t], NULL, 0.0f);
    }
    for (int s = 0; s < mp->n_shards; ++s)
        for (int t = 0; t < c->n_out && mp->shards[s].plan; ++t) {
            const rect r = rect_of(d, &mp->shards[s], c->out_kind[t]);
            host_rect(&r, c->out[t], runs[s].stage[t], 0.0f);
        }
    return SPARCL_OK;
}

static sparcl_status run_call(sparcl_multi_plan *mp, const call *c)
{
    share_run runs[SPARCL_MULTI_MAX_DEVICES];
    memset(runs, 0, sizeof runs);
    sparcl_status st = SPARCL_OK;
    for (int s = 0; s < mp->n_shards && st == SPARCL_OK; ++s)
        if (mp->shards[s].plan)
            st = enqueue_share(mp, c, s, &runs[s]);
    /* Every share waits, also after a failure: reads may still write into
     * the caller's arrays or the staging. */
    for (int s = 0; s < mp->n_shards; ++s) {
        sparcl_status w = wait_share(mp, s, &runs[s]);
        st = st == SPARCL_OK ? w : st;
    }
    if (st == SPARCL_OK)
        st = assemble(mp, c, runs);
    for (int s = 0; s < mp->n_shards; ++s)
        release_share(&runs[s]);
    return st;
}

SPARCL_API sparcl_status sparcl_multi_plan_forward_host(sparcl_multi_plan *mp, const float *q,
                                                        const float *k, const float *v, float *out,
                                                        float *lse)
{
    if (!mp)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    if (!q || !k || !v || !out)
        return sparcl__fail(mp->ctx[0], SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !q   ? "q"
                            : !k ? "k"
                            : !v ? "v"
                                 : "out");
    const call c = {0,
                    3,
                    2,
                    {q, k, v, NULL, NULL, NULL},
                    {out, lse, NULL},
                    {T_QUERY, T_KEY, T_KEY, 0, 0, 0},
                    {T_QUERY, T_LSE, 0}};
    return run_call(mp, &c);
}

SPARCL_API sparcl_status sparcl_multi_plan_backward_host(sparcl_multi_plan *mp, const float *q,
                                                         const float *k, const float *v,
                                                         const float *out, const float *lse,
                                                         const float *dout, float *dq, float *dk,
                                                         float *dv)
{
    if (!mp)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    const void *const need[9] = {q, k, v, out, lse, dout, dq, dk, dv};
    static const char *const names[9] = {"q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv"};
    for (int t = 0; t < 9; ++t)
        if (!need[t])
            return sparcl__fail(mp->ctx[0], SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", names[t]);
    const call c = {1,
                    6,
                    3,
                    {q, k, v, out, lse, dout},
                    {dq, dk, dv},
                    {T_QUERY, T_KEY, T_KEY, T_QUERY, T_LSE, T_QUERY},
                    {T_QUERY, T_KEY, T_KEY}};
    return run_call(mp, &c);
}

SPARCL_API sparcl_status sparcl_multi_plan_prepare_backward(sparcl_multi_plan *mp)
{
    if (!mp)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    for (int s = 0; s < mp->n_shards; ++s) {
        if (!mp->shards[s].plan)
            continue;
        sparcl_status st = sparcl_plan_prepare_backward(mp->shards[s].plan, NULL);
        if (st != SPARCL_OK)
            return share_fail(mp, s, st);
    }
    return SPARCL_OK;
}

/* ---- Introspection --------------------------------------------------------- */

SPARCL_API int sparcl_multi_plan_shard_count(const sparcl_multi_plan *mp)
{
    return mp ? mp->n_shards : 0;
}

SPARCL_API sparcl_status sparcl_multi_plan_shard(const sparcl_multi_plan *mp, int index,
                                                 sparcl_shard_info *info)
{
    if (!mp)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    sparcl_ctx *lead = mp->ctx[0]; /* where a multi-plan's errors go */
    if (!info)
        return sparcl__fail(lead, SPARCL_ERR_INVALID_ARGUMENT, "info is NULL");
    if (index < 0 || index >= mp->n_shards)
        return sparcl__fail(lead, SPARCL_ERR_INVALID_ARGUMENT, "shard %d is not in [0, %d)", index,
                            mp->n_shards);
    const size_t size = info->struct_size;
    if (size < offsetof(sparcl_shard_info, pairs) + sizeof info->pairs || size > sizeof *info)
        return sparcl__fail(lead, SPARCL_ERR_INVALID_ARGUMENT,
                            "info->struct_size %zu is not a sparcl_shard_info size (set it with "
                            "sparcl_shard_info_init())",
                            size);
    const sparcl__shard *sh = &mp->shards[index];
    sparcl_shard_info all = {
        size,    sh->context, sh->h0,    sh->nh,
        sh->kh0, sh->nkh,     sh->i0,    sh->ni,
        sh->j0,  sh->nj,      sh->pairs, sh->plan ? sparcl_plan_device_bytes(sh->plan) : 0};
    memcpy(info, &all, size); /* only what the caller's struct holds */
    return SPARCL_OK;
}
