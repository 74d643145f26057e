/*
 * backward.c -- the backward pass of a plan: its lazily built resources
 * (parameters from the attn_bwd schema, the tiling at the backward's own
 * tile and its column view, three kernels) and the dispatch of
 * attn_bwd_pre -> attn_bwd_dq, attn_bwd_dkv (cl/attn_bwd.cl).
 *
 * The resources live in plan->bwd, created on the first backward call or by
 * sparcl_plan_prepare_backward(), under the plan's mutex.  Per call the
 * only allocation is the D workspace (one float per query row), released
 * right after enqueueing: OpenCL keeps it alive until the kernels finish,
 * and a per-call buffer lets several threads run one plan at once.
 */
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "error.h"
#include "kernel_registry.h"
#include "params.h"
#include "plan.h"
#include "program.h"
#include "tiling_transpose.h"
#include "tuning_lookup.h"

struct sparcl__plan_bwd {
    sparcl_params params;
    sparcl_param_source source;
    cl_kernel pre, dq, dkv;
    /* Row lists (dq), column lists (dkv), and the mask bits both index. */
    cl_mem row_ptr, row_col, row_mask, col_ptr, col_row, col_mask, mask_bits;
    int layout_heads, ntr, ntc, wg_size;
    size_t bytes; /* device bytes of the arrays above, counted in the plan's */
    sparcl_plan *plan;
};

void sparcl__plan_bwd_free(struct sparcl__plan_bwd *b)
{
    if (!b)
        return;
    cl_kernel ks[3] = {b->pre, b->dq, b->dkv};
    for (int i = 0; i < 3; ++i)
        if (ks[i])
            clReleaseKernel(ks[i]);
    cl_mem ms[7] = {b->row_ptr, b->row_col,  b->row_mask, b->col_ptr,
                    b->col_row, b->col_mask, b->mask_bits};
    for (int i = 0; i < 7; ++i)
        if (ms[i])
            clReleaseMemObject(ms[i]);
    if (b->plan)
        b->plan->device_bytes -= b->bytes;
    free(b);
}

/* Uploads the tile lists of both views and the mask bits. */
static sparcl_status upload_tiling(sparcl_plan *p, struct sparcl__plan_bwd *b,
                                   const sparcl__tiling *t, const sparcl__tiling_cols *c)
{
    const size_t before = p->device_bytes;
    const size_t nnz = (size_t)t->nnz;
    const struct {
        cl_mem *m;
        const void *data;
        size_t bytes;
    } arrays[7] = {
        {&b->row_ptr, t->ptr, sizeof *t->ptr * (size_t)t->heads * (t->ntr + 1)},
        {&b->row_col, t->col, sizeof *t->col * nnz},
        {&b->row_mask, t->mask, sizeof *t->mask * nnz},
        {&b->col_ptr, c->ptr, sizeof *c->ptr * (size_t)c->heads * (c->ntc + 1)},
        {&b->col_row, c->row, sizeof *c->row * nnz},
        {&b->col_mask, c->mask, sizeof *c->mask * nnz},
        {&b->mask_bits, t->bits, sizeof *t->bits * (size_t)t->n_masks * t->tm * t->mw},
    };
    sparcl_status st = SPARCL_OK;
    for (int i = 0; i < 7 && st == SPARCL_OK; ++i)
        st = sparcl__plan_upload(p, arrays[i].m, arrays[i].data, arrays[i].bytes);
    /* Counted even on failure, so that freeing b gives it back. */
    b->bytes = p->device_bytes - before;
    return st;
}

static sparcl_status create_kernels(sparcl_plan *p, struct sparcl__plan_bwd *b,
                                    const sparcl__problem *prob)
{
    char options[1024];
    sparcl__params_build_options(&sparcl__schema_attn_bwd, &b->params, prob, options,
                                 sizeof options);
    cl_program prog;
    sparcl_status st = sparcl__program_get(p->ctx, sparcl__schema_attn_bwd.file, options, &prog);
    if (st != SPARCL_OK)
        return st;
    static const char *names[3] = {"attn_bwd_pre", "attn_bwd_dq", "attn_bwd_dkv"};
    cl_kernel *ks[3] = {&b->pre, &b->dq, &b->dkv};
    for (int i = 0; i < 3; ++i) {
        cl_int err;
        *ks[i] = clCreateKernel(prog, names[i], &err);
        if (!*ks[i])
            return sparcl__fail_cl(p->ctx, err, names[i]);
        size_t kwg = 0;
        clGetKernelWorkGroupInfo(*ks[i], p->ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kwg,
                                 &kwg, NULL);
        if (i > 0 && kwg && (size_t)b->wg_size > kwg)
            return sparcl__fail(p->ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "WG_SIZE %d exceeds %s's work-group limit %zu on the device",
                                b->wg_size, names[i], kwg);
    }
    return SPARCL_OK;
}

/* Builds the backward resources from `chosen` (possibly partial) filled
 * with the defaults.  Caller holds p->lock. */
static sparcl_status build_with(sparcl_plan *p, const sparcl_params *chosen,
                                sparcl_param_source source, struct sparcl__plan_bwd **out)
{
    *out = NULL;
    const sparcl__kernel_schema *schema = &sparcl__schema_attn_bwd;
    const sparcl__problem prob = sparcl__problem_from_desc(&p->desc);
    struct sparcl__plan_bwd *b = calloc(1, sizeof *b);
    if (!b)
        return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the backward");
    b->params = *chosen;
    b->source = source;
    sparcl__params_fill_defaults(schema, &b->params, &prob, &p->ctx->limits);
    /* The descriptor's unchecked_params covers the backward too. */
    sparcl_status st = p->desc.unchecked_params
                           ? sparcl__params_check_minimal(p->ctx, &b->params)
                           : sparcl__params_check(p->ctx, schema, &b->params, &prob,
                                                  &p->ctx->limits);
    if (st != SPARCL_OK) {
        free(b);
        return st;
    }
    b->plan = p;
    int32_t bm = 0, bn = 0, wg = 0;
    sparcl_params_get(&b->params, "BLOCK_M", &bm);
    sparcl_params_get(&b->params, "BLOCK_N", &bn);
    sparcl_params_get(&b->params, "WG_SIZE", &wg);
    b->wg_size = wg;

    sparcl__tiling t;
    sparcl__tiling_cols c;
    st = sparcl__tiling_build(p->ctx, p->layout, p->desc.q_len, p->desc.kv_len, p->desc.causal,
                              bm, bn, &t);
    if (st == SPARCL_OK) {
        st = sparcl__tiling_transpose(p->ctx, &t, &c);
        if (st == SPARCL_OK) {
            b->layout_heads = t.heads;
            b->ntr = t.ntr;
            b->ntc = t.ntc;
            st = upload_tiling(p, b, &t, &c);
            sparcl__tiling_cols_free(&c);
        }
        sparcl__tiling_free(&t);
    }
    if (st == SPARCL_OK)
        st = create_kernels(p, b, &prob);
    if (st != SPARCL_OK) {
        sparcl__plan_bwd_free(b);
        return st;
    }
    *out = b;
    return SPARCL_OK;
}

/* Chooses the parameters as plans do (override, tuning databases, built-in
 * defaults; tuning_lookup.h) and builds.  Caller holds p->lock. */
static sparcl_status build(sparcl_plan *p, const sparcl_params *override,
                           struct sparcl__plan_bwd **out)
{
    if (p->norm || p->favor || p->linformer) /* attention_kinds.h */
        return sparcl__fail(p->ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "the backward pass exists for softmax attention over a layout only");
    sparcl_plan_desc d = p->desc;
    d.layout = p->layout; /* the lookup keys rows by pattern and density */
    d.params = override;
    sparcl_params chosen;
    sparcl_param_source source;
    char origin[SPARCL__ORIGIN_MAX];
    sparcl__tuning_choose(p->ctx, &sparcl__schema_attn_bwd, &d, &chosen, &source, origin,
                          sizeof origin);
    sparcl_status st = build_with(p, &chosen, source, out);
    if (st != SPARCL_OK && source == SPARCL_PARAMS_DATABASE) {
        /* A tuned row is a hint: if it cannot run here, the defaults can. */
        sparcl__log(p->ctx, SPARCL_LOG_WARNING,
                    "tuned backward parameters from %s failed (%s); using the built-in defaults",
                    origin, sparcl_ctx_errmsg(p->ctx));
        sparcl_params_clear(&chosen);
        st = build_with(p, &chosen, SPARCL_PARAMS_DEFAULT, out);
    }
    return st;
}

SPARCL_API sparcl_status sparcl_plan_prepare_backward(sparcl_plan *p, const sparcl_params *params)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    if (params && sparcl__params_valid(p->ctx, params, "params") != SPARCL_OK)
        return SPARCL_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&p->lock);
    sparcl_status st = SPARCL_OK;
    if (params || !p->bwd) {
        struct sparcl__plan_bwd *b;
        st = build(p, params, &b);
        if (st == SPARCL_OK) {
            sparcl__plan_bwd_free(p->bwd);
            p->bwd = b;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return st;
}

SPARCL_API sparcl_status sparcl_plan_backward_params(sparcl_plan *p, sparcl_params *params,
                                                     sparcl_param_source *source)
{
    sparcl_status st = sparcl_plan_prepare_backward(p, NULL);
    if (st != SPARCL_OK)
        return st;
    pthread_mutex_lock(&p->lock);
    if (params)
        *params = p->bwd->params;
    if (source)
        *source = p->bwd->source;
    pthread_mutex_unlock(&p->lock);
    return SPARCL_OK;
}

/* The tensors of one backward call; strides: q, k, v, out (= dout). */
typedef struct bwd_args {
    cl_mem q, k, v, out, lse, dout, dq, dk, dv;
} bwd_args;

static sparcl_status check_args(sparcl_plan *p, const sparcl_strides *ts, const bwd_args *a,
                                cl_uint num_wait, const cl_event *wait)
{
    const sparcl_plan_desc *d = &p->desc;
    const int64_t nq = sparcl__plan_span(ts[0], d->batch, d->q_heads, d->q_len, d->head_dim);
    const int64_t nk = sparcl__plan_span(ts[1], d->batch, d->kv_heads, d->kv_len, d->head_dim);
    const int64_t nv = sparcl__plan_span(ts[2], d->batch, d->kv_heads, d->kv_len, d->head_dim);
    const int64_t no = sparcl__plan_span(ts[3], d->batch, d->q_heads, d->q_len, d->head_dim);
    const int64_t nl = (int64_t)d->batch * d->q_heads * d->q_len;
    if (!a->lse)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "lse buffer is NULL; the backward needs the forward's LSE");
    const struct {
        cl_mem m;
        const char *name;
        int64_t elems;
    } all[9] = {{a->q, "q", nq},     {a->k, "k", nk},       {a->v, "v", nv},
                {a->out, "out", no}, {a->lse, "lse", nl},   {a->dout, "dout", no},
                {a->dq, "dq", nq},   {a->dk, "dk", nk},     {a->dv, "dv", nv}};
    sparcl_status st;
    for (int i = 0; i < 9; ++i)
        if ((st = sparcl__plan_check_buffer(p, all[i].m, all[i].name, all[i].elems)))
            return st;
    /* The outputs are written while every input is read. */
    for (int i = 6; i < 9; ++i)
        for (int j = 0; j < 9; ++j)
            if (i != j && all[i].m == all[j].m)
                return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s aliases %s",
                                    all[i].name, all[j].name);
    if ((num_wait == 0) != (wait == NULL))
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "num_wait %u does not match wait list %p", num_wait, (void *)wait);
    /* dq, dk and dv are written with q's, k's and v's strides. */
    const int heads[3] = {d->q_heads, d->kv_heads, d->kv_heads};
    const int lens[3] = {d->q_len, d->kv_len, d->kv_len};
    for (int t = 0; t < 3; ++t)
        if (!sparcl__plan_strides_injective(ts[t], d->batch, heads[t], lens[t], d->head_dim))
            return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s strides (batch %lld, head %lld, seq %lld) overlap, so %s "
                                "cannot be written with them",
                                all[t].name, (long long)ts[t].batch, (long long)ts[t].head,
                                (long long)ts[t].seq, all[6 + t].name);
    return SPARCL_OK;
}

/* Sets `n` arguments from `sizes`/`values` starting at index *at. */
static cl_int set_args(cl_kernel k, cl_uint *at, int n, const size_t *sizes,
                       const void *const *values)
{
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < n; ++i)
        err |= clSetKernelArg(k, (*at)++, sizes[i], values[i]);
    return err;
}

/* Arguments of the two main kernels: the tensors, the tile lists, the
 * shapes, the scale and the strides.  Only the tensor list and the tile
 * lists differ between attn_bwd_dq and attn_bwd_dkv. */
static cl_int set_main_args(sparcl_plan *p, cl_kernel kn, const bwd_args *a, cl_mem dsum,
                            const cl_mem *lists, int n_tiles, const cl_long *strides, int dkv)
{
    const struct sparcl__plan_bwd *b = p->bwd;
    const sparcl_plan_desc *d = &p->desc;
    const cl_int group = d->q_heads / d->kv_heads;
    const cl_float scale = p->scale;
    const cl_mem mems[8] = {a->q, a->k, a->v, a->dout, a->lse, dsum, dkv ? a->dk : a->dq, a->dv};
    const int n_out = dkv ? 8 : 7;
    cl_uint at = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < n_out; ++i)
        err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &mems[i]);
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &lists[i]);
    err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &b->mask_bits);
    const size_t sizes[7] = {sizeof(cl_int), sizeof(cl_int), sizeof(cl_int), sizeof(cl_int),
                             sizeof(cl_int), sizeof(cl_int), sizeof(cl_float)};
    const void *const values[7] = {&d->q_len, &d->kv_len,  &d->q_heads, &group,
                                   &b->layout_heads, &n_tiles, &scale};
    err |= set_args(kn, &at, 7, sizes, values);
    for (int s = 0; s < 12; ++s)
        err |= clSetKernelArg(kn, at++, sizeof(cl_long), &strides[s]);
    return err;
}

/* Enqueues the three kernels; caller holds p->lock and p->bwd is built. */
static sparcl_status enqueue(sparcl_plan *p, cl_command_queue queue, const sparcl_strides *ts,
                             const bwd_args *a, cl_mem dsum, cl_uint num_wait,
                             const cl_event *wait, cl_event *event)
{
    const struct sparcl__plan_bwd *b = p->bwd;
    const sparcl_plan_desc *d = &p->desc;
    cl_long strides[12];
    for (int t = 0; t < 4; ++t) {
        strides[3 * t] = ts[t].batch;
        strides[3 * t + 1] = ts[t].head;
        strides[3 * t + 2] = ts[t].seq;
    }
    cl_uint at = 0;
    const size_t pre_sizes[8] = {sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_int),
                                 sizeof(cl_int), sizeof(cl_long), sizeof(cl_long),
                                 sizeof(cl_long)};
    const void *const pre_values[8] = {&a->out,      &a->dout,     &dsum,        &d->q_len,
                                       &d->q_heads,  &strides[9],  &strides[10], &strides[11]};
    const cl_mem row_lists[3] = {b->row_ptr, b->row_col, b->row_mask};
    const cl_mem col_lists[3] = {b->col_ptr, b->col_row, b->col_mask};
    cl_int err = set_args(b->pre, &at, 8, pre_sizes, pre_values);
    err |= set_main_args(p, b->dq, a, dsum, row_lists, b->ntr, strides, 0);
    err |= set_main_args(p, b->dkv, a, dsum, col_lists, b->ntc, strides, 1);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(p->ctx, err, "clSetKernelArg(attn_bwd)");

    const size_t wg = (size_t)b->wg_size;
    const size_t pre_global[3] = {(size_t)d->q_len, (size_t)d->q_heads, (size_t)d->batch};
    const size_t dq_global[3] = {(size_t)b->ntr * wg, (size_t)d->q_heads, (size_t)d->batch};
    const size_t dkv_global[3] = {(size_t)b->ntc * wg, (size_t)d->kv_heads, (size_t)d->batch};
    const size_t local[3] = {wg, 1, 1};
    cl_event ev_pre = NULL, ev_main[2] = {NULL, NULL};
    /* Explicit dependencies keep the order right on out-of-order queues. */
    err = clEnqueueNDRangeKernel(queue, b->pre, 3, NULL, pre_global, NULL, num_wait, wait,
                                 &ev_pre);
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(queue, b->dq, 3, NULL, dq_global, local, 1, &ev_pre,
                                     &ev_main[0]);
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(queue, b->dkv, 3, NULL, dkv_global, local, 1, &ev_pre,
                                     &ev_main[1]);
    if (err == CL_SUCCESS && event)
        err = clEnqueueMarkerWithWaitList(queue, 2, ev_main, event);
    if (ev_pre)
        clReleaseEvent(ev_pre);
    for (int i = 0; i < 2; ++i)
        if (ev_main[i])
            clReleaseEvent(ev_main[i]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(p->ctx, err, "clEnqueueNDRangeKernel(attn_bwd)");
    return SPARCL_OK;
}

/* queue: where the kernels go (never NULL here). */
static sparcl_status backward_strided(sparcl_plan *p, cl_command_queue queue,
                                      const sparcl_strides *ts, const bwd_args *a,
                                      cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    sparcl_status st = check_args(p, ts, a, num_wait, wait);
    if (st != SPARCL_OK)
        return st;
    const sparcl_plan_desc *d = &p->desc;
    cl_int err;
    cl_mem dsum = clCreateBuffer(p->ctx->context, CL_MEM_READ_WRITE,
                                 sizeof(cl_float) * (size_t)d->batch * d->q_heads * d->q_len,
                                 NULL, &err);
    if (!dsum)
        return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate the backward's row workspace (%s)",
                            sparcl__cl_error_name(err));
    pthread_mutex_lock(&p->lock);
    if (!p->bwd)
        st = build(p, NULL, &p->bwd);
    if (st == SPARCL_OK)
        st = enqueue(p, queue, ts, a, dsum, num_wait, wait, event);
    pthread_mutex_unlock(&p->lock);
    clReleaseMemObject(dsum); /* deferred by OpenCL until the kernels are done */
    return st;
}

SPARCL_API sparcl_status sparcl_plan_backward_on_queue(sparcl_plan *p, cl_command_queue queue,
                                                       cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                       cl_mem lse, cl_mem dout, cl_mem dq,
                                                       cl_mem dk, cl_mem dv, cl_uint num_wait,
                                                       const cl_event *wait, cl_event *event)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    sparcl_status st = sparcl__plan_check_queue(p, queue);
    if (st != SPARCL_OK)
        return st;
    const sparcl_strides ts[4] = {p->qs, p->ks, p->vs, p->os};
    const bwd_args a = {q, k, v, out, lse, dout, dq, dk, dv};
    return backward_strided(p, queue ? queue : p->ctx->queue, ts, &a, num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_backward(sparcl_plan *p, cl_mem q, cl_mem k, cl_mem v,
                                              cl_mem out, cl_mem lse, cl_mem dout, cl_mem dq,
                                              cl_mem dk, cl_mem dv, cl_uint num_wait,
                                              const cl_event *wait, cl_event *event)
{
    return sparcl_plan_backward_on_queue(p, NULL, q, k, v, out, lse, dout, dq, dk, dv, num_wait,
                                         wait, event);
}

SPARCL_API sparcl_status sparcl_plan_backward_host(sparcl_plan *p, const float *q,
                                                   const float *k, const float *v,
                                                   const float *out, const float *lse,
                                                   const float *dout, float *dq, float *dk,
                                                   float *dv)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    const sparcl_plan_desc *d = &p->desc;
    const size_t nq = (size_t)d->batch * d->q_heads * d->q_len * d->head_dim;
    const size_t nk = (size_t)d->batch * d->kv_heads * d->kv_len * d->head_dim;
    const size_t nl = (size_t)d->batch * d->q_heads * d->q_len;
    /* Inputs then outputs, in bwd_args order. */
    const void *host[9] = {q, k, v, out, lse, dout, dq, dk, dv};
    static const char *names[9] = {"q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv"};
    const size_t elems[9] = {nq, nk, nk, nq, nl, nq, nq, nk, nk};
    for (int i = 0; i < 9; ++i)
        if (!host[i])
            return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL%s", names[i],
                                i == 4 ? "; the backward needs the forward's LSE" : "");
    for (int i = 0; i < 9; ++i)
        if (elems[i] * sizeof(float) > p->ctx->limits.max_alloc)
            return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                "%s needs %zu bytes; the device's largest allocation is %llu",
                                names[i], elems[i] * sizeof(float),
                                (unsigned long long)p->ctx->limits.max_alloc);
    cl_mem m[9] = {NULL};
    sparcl_status st = SPARCL_OK;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < 9 && st == SPARCL_OK; ++i) {
        m[i] = clCreateBuffer(p->ctx->context,
                              i < 6 ? CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR : CL_MEM_WRITE_ONLY,
                              elems[i] * sizeof(float), i < 6 ? (void *)host[i] : NULL, &err);
        if (!m[i])
            st = sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
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
        const bwd_args a = {m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8]};
        cl_event ev = NULL;
        st = backward_strided(p, p->ctx->queue, ts, &a, 0, NULL, &ev);
        for (int i = 6; i < 9 && st == SPARCL_OK; ++i) {
            err = clEnqueueReadBuffer(p->ctx->queue, m[i], CL_TRUE, 0, elems[i] * sizeof(float),
                                      (void *)host[i], 1, &ev, NULL);
            if (err != CL_SUCCESS)
                st = sparcl__fail_cl(p->ctx, err, "clEnqueueReadBuffer");
        }
        if (ev)
            clReleaseEvent(ev);
    }
    for (int i = 0; i < 9; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
    return st;
}
