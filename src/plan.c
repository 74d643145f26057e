/*
 * plan.c -- plan creation (validation, parameter choice, re-blocking,
 * program build, layout upload) and dispatch of the forward kernel.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_kinds.h"
#include "checked.h"
#include "ctx.h"
#include "dense_path.h"
#include "error.h"
#include "kernel_registry.h"
#include "layout.h"
#include "memory.h"
#include "params.h"
#include "plan.h"
#include "program.h"
#include "tiling.h"
#include "tuning_lookup.h"


SPARCL_API void sparcl_plan_desc_init(sparcl_plan_desc *d)
{
    if (!d)
        return;
    memset(d, 0, sizeof *d);
    d->batch = 1;
    d->q_heads = 1;
    d->kv_heads = 1;
}

/* Contiguous [B, H, S, D] strides for all-zero ones.  The products are
 * checked: 0 (and *s untouched) when they do not fit in int64. */
static int resolve_checked(sparcl_strides *s, const sparcl_plan_desc *d, int heads, int len)
{
    if (s->batch != 0 || s->head != 0 || s->seq != 0)
        return 1;
    int64_t head, batch;
    if (!sparcl__mul_i64(len, d->head_dim, &head) || !sparcl__mul_i64(heads, head, &batch))
        return 0;
    *s = (sparcl_strides){batch, head, d->head_dim};
    return 1;
}

/* For descriptors that passed sparcl__plan_desc_check(), which proved the
 * products fit. */
static sparcl_strides resolve(sparcl_strides s, const sparcl_plan_desc *d, int heads, int len)
{
    resolve_checked(&s, d, heads, len);
    return s;
}

/* Elements a tensor with these strides spans, max offset + 1, in checked
 * arithmetic: 0 if any product, the sum, or the span in bytes does not fit
 * in int64 (the kernels index with 64-bit `long` offsets; host code turns
 * spans into byte counts).  Every extent times its stride must fit too
 * (the dense path forms group * head-stride offsets). */
static int span_checked(sparcl_strides s, int batch, int heads, int len, int dim, int64_t *out)
{
    const int64_t n[3] = {batch, heads, len}, st[3] = {s.batch, s.head, s.seq};
    int64_t total = dim, t;
    for (int k = 0; k < 3; ++k)
        if (!sparcl__mul_i64(n[k], st[k], &t) || !sparcl__mul_i64(n[k] - 1, st[k], &t) ||
            !sparcl__add_i64(total, t, &total))
            return 0;
    if (!sparcl__mul_i64(total, (int64_t)sizeof(float), &t))
        return 0;
    *out = total;
    return 1;
}

/* Elements a tensor spans; INT64_MAX (which no buffer satisfies) when the
 * span does not fit. */
static int64_t span(sparcl_strides s, int batch, int heads, int len, int dim)
{
    int64_t n;
    return span_checked(s, batch, heads, len, dim, &n) ? n : INT64_MAX;
}

/* A sound, sufficient test that offsets b*sb + h*sh + i*ss + x (x < dim,
 * dim stride 1) are distinct for distinct (b, h, i, x): sort the axes of
 * extent > 1 by stride; each stride must be at least the span of the axes
 * below it (1 + the largest offset they reach).  Returns the index (0
 * batch, 1 head, 2 seq) of the first axis that breaks it, or -1.  Layouts
 * such as [B, S, H, D] pass; a zero stride on an axis of extent > 1 or two
 * axes sharing a stride fail.  Spans must have been checked. */
static int first_overlap(sparcl_strides s, int batch, int heads, int len, int dim, int64_t *need)
{
    int64_t n[3] = {batch, heads, len}, st[3] = {s.batch, s.head, s.seq};
    int order[3] = {0, 1, 2};
    for (int a = 1; a < 3; ++a) /* insertion sort by stride, ties by position */
        for (int b = a; b > 0 && st[order[b]] < st[order[b - 1]]; --b) {
            int x = order[b];
            order[b] = order[b - 1];
            order[b - 1] = x;
        }
    int64_t covered = dim; /* the dim axis: stride 1, offsets [0, dim) */
    for (int k = 0; k < 3; ++k) {
        int a = order[k];
        if (n[a] <= 1)
            continue;
        if (st[a] < covered) {
            *need = covered;
            return a;
        }
        covered += (n[a] - 1) * st[a];
    }
    return -1;
}

int sparcl__plan_strides_injective(sparcl_strides s, int batch, int heads, int len, int dim)
{
    int64_t need;
    return first_overlap(s, batch, heads, len, dim, &need) < 0;
}

/* The tensor checks of sparcl__plan_desc_check(). */
static sparcl_status check_tensors(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
#define BAD(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    const sparcl_strides *all[4] = {&d->q_strides, &d->k_strides, &d->v_strides, &d->o_strides};
    static const char *names[4] = {"q", "k", "v", "out"};
    static const char *axes[3] = {"batch", "head", "seq"};
    for (int t = 0; t < 4; ++t) {
        const int heads = t == 0 || t == 3 ? d->q_heads : d->kv_heads;
        const int len = t == 0 || t == 3 ? d->q_len : d->kv_len;
        const int64_t given[3] = {all[t]->batch, all[t]->head, all[t]->seq};
        for (int a = 0; a < 3; ++a)
            if (given[a] < 0)
                return BAD("%s strides: the %s stride %lld must be >= 0 (negative strides "
                           "are not supported)",
                           names[t], axes[a], (long long)given[a]);
        /* The host calls copy contiguous tensors whatever the strides. */
        sparcl_strides contiguous = {0, 0, 0}, s = *all[t];
        int64_t n;
        if (!resolve_checked(&contiguous, d, heads, len) ||
            !span_checked(contiguous, d->batch, heads, len, d->head_dim, &n))
            return BAD("%s: batch %d x heads %d x len %d x head_dim %d floats overflow 64-bit "
                       "sizes",
                       names[t], d->batch, heads, len, d->head_dim);
        resolve_checked(&s, d, heads, len);
        if (!span_checked(s, d->batch, heads, len, d->head_dim, &n))
            return BAD("%s strides (batch %lld, head %lld, seq %lld) over batch %d x heads %d x "
                       "len %d x head_dim %d span more than 2^63 bytes",
                       names[t], (long long)s.batch, (long long)s.head, (long long)s.seq, d->batch,
                       heads, len, d->head_dim);
        int64_t need;
        int a = t == 3 ? first_overlap(s, d->batch, heads, len, d->head_dim, &need) : -1;
        if (a >= 0)
            return BAD("out strides (batch %lld, head %lld, seq %lld) overlap: the %s stride "
                       "%lld is below the %lld elements the smaller axes span, so two outputs "
                       "would share an element",
                       (long long)s.batch, (long long)s.head, (long long)s.seq, axes[a],
                       (long long)(a == 0   ? s.batch
                                   : a == 1 ? s.head
                                            : s.seq),
                       (long long)need);
    }
    int64_t lse;
    if (!sparcl__mul3_i64(d->batch, d->q_heads, d->q_len, &lse) ||
        !sparcl__mul_i64(lse, (int64_t)sizeof(float), &lse))
        return BAD("lse: batch %d x q_heads %d x q_len %d floats overflow 64-bit sizes", d->batch,
                   d->q_heads, d->q_len);
    return SPARCL_OK;
#undef BAD
}

sparcl_status sparcl__plan_desc_check(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
#define BAD(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    if (d->batch < 1)
        return BAD("batch %d must be >= 1", d->batch);
    if (d->q_heads < 1)
        return BAD("q_heads %d must be >= 1", d->q_heads);
    if (d->kv_heads < 1)
        return BAD("kv_heads %d must be >= 1", d->kv_heads);
    if (d->q_heads % d->kv_heads != 0)
        return BAD("q_heads %d is not a multiple of kv_heads %d", d->q_heads, d->kv_heads);
    if (d->q_len < 1)
        return BAD("q_len %d must be >= 1", d->q_len);
    if (d->kv_len < 1)
        return BAD("kv_len %d must be >= 1", d->kv_len);
    if (d->head_dim < 1)
        return BAD("head_dim %d must be >= 1", d->head_dim);
    if (d->head_dim > SPARCL_MAX_HEAD_DIM)
        return BAD("head_dim %d exceeds %d", d->head_dim, SPARCL_MAX_HEAD_DIM);
    if (!(d->scale >= 0.0f) || isinf(d->scale))
        return BAD("scale %g must be finite and >= 0 (0 means 1/sqrt(head_dim))",
                   (double)d->scale);
    sparcl_status st = check_tensors(ctx, d);
    if (st != SPARCL_OK)
        return st;
    if (d->params && (st = sparcl__params_valid(ctx, d->params, "desc.params")) != SPARCL_OK)
        return st;
    const sparcl_layout *l = d->layout;
    if (l) {
        if (l->heads != 1 && l->heads != d->q_heads)
            return BAD("layout has %d heads; the plan needs 1 or q_heads %d", l->heads,
                       d->q_heads);
        if (l->q_len != d->q_len || l->kv_len != d->kv_len)
            return BAD("layout is %d x %d but the plan is q_len %d x kv_len %d", l->q_len,
                       l->kv_len, d->q_len, d->kv_len);
    }
    return sparcl__kind_check(ctx, d);
#undef BAD
}

static sparcl_status upload(sparcl_plan *p, cl_mem *out, const void *data, size_t bytes)
{
    static const int32_t zero = 0;
    if (bytes == 0) { /* OpenCL forbids empty buffers; keep a valid dummy */
        data = &zero;
        bytes = sizeof zero;
    }
    if (bytes > p->ctx->limits.max_alloc)
        return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "the tiled layout needs %zu bytes; the device's largest allocation "
                            "is %llu",
                            bytes, (unsigned long long)p->ctx->limits.max_alloc);
    sparcl_status st = sparcl__mem_check_device(p->ctx, "the plan's tiled layout",
                                                sparcl__sat_add(p->device_bytes, bytes));
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    *out = clCreateBuffer(p->ctx->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes,
                          (void *)data, &err);
    if (!*out)
        return err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
                       err == CL_OUT_OF_HOST_MEMORY
                   ? sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                  "cannot allocate %zu bytes for the layout on the device", bytes)
                   : sparcl__fail_cl(p->ctx, err, "clCreateBuffer");
    p->device_bytes += bytes;
    return SPARCL_OK;
}

/* Builds the schema's fused kernel (and, for attn_fwd with KT=1, the K
 * packing kernel and its workspace) for a plan whose tile arrays are
 * uploaded. */
static sparcl_status fused_init(sparcl_plan *p, const sparcl__kernel_schema *schema,
                                const sparcl__problem *prob, const char *options)
{
    sparcl_ctx *ctx = p->ctx;
    cl_program prog;
    sparcl_status st = sparcl__program_get(ctx, schema->file, options, &prog);
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    p->kernel = clCreateKernel(prog, schema->name, &err);
    if (!p->kernel) {
        char what[64];
        snprintf(what, sizeof what, "clCreateKernel(%s)", schema->name);
        return sparcl__fail_cl(ctx, err, what);
    }
    size_t kwg = 0;
    clGetKernelWorkGroupInfo(p->kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kwg, &kwg,
                             NULL);
    if (kwg && (size_t)p->wg_size > kwg)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "WG_SIZE %d exceeds this kernel's work-group limit %zu on the device",
                            p->wg_size, kwg);
    size_t ws = sparcl__attn_fwd_workspace_bytes(&p->params, prob);
    if (!ws)
        return SPARCL_OK;
    st = sparcl__mem_check_device(ctx, "the plan with its packed-K workspace (KT=1)",
                                  sparcl__sat_add(p->device_bytes, ws));
    if (st != SPARCL_OK)
        return st;
    p->pack_kernel = clCreateKernel(prog, "attn_fwd_pack_k", &err);
    if (!p->pack_kernel)
        return sparcl__fail_cl(ctx, err, "clCreateKernel(attn_fwd_pack_k)");
    p->workspace = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, ws, NULL, &err);
    if (!p->workspace)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate the %zu-byte packed-K workspace (KT=1): %s", ws,
                            sparcl__cl_error_name(err));
    p->device_bytes += ws;
    return SPARCL_OK;
}

sparcl_status sparcl__plan_alloc(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                 sparcl_plan **out)
{
    sparcl_plan *p = calloc(1, sizeof *p);
    *out = p;
    if (!p)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a plan");
    pthread_mutex_init(&p->lock, NULL);
    p->ctx = ctx;
    p->desc = *desc;
    p->desc.layout = NULL;
    p->desc.params = NULL;
    p->desc.proj_e = NULL;
    p->desc.proj_f = NULL;
    p->scale = desc->scale > 0.0f ? desc->scale : 1.0f / sqrtf((float)desc->head_dim);
    p->qs = resolve(desc->q_strides, desc, desc->q_heads, desc->q_len);
    p->ks = resolve(desc->k_strides, desc, desc->kv_heads, desc->kv_len);
    p->vs = resolve(desc->v_strides, desc, desc->kv_heads, desc->kv_len);
    p->os = resolve(desc->o_strides, desc, desc->q_heads, desc->q_len);
    return SPARCL_OK;
}

/* Everything after the choice of parameters; on failure nothing is kept. */
static sparcl_status create(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                            const sparcl__kernel_schema *schema, const sparcl__problem *pprob,
                            sparcl_params params, sparcl_param_source source, const char *origin,
                            sparcl_plan **out)
{
    sparcl__problem prob = *pprob;
    sparcl_plan *p;
    sparcl_status st = sparcl__plan_alloc(ctx, desc, &p);
    if (st != SPARCL_OK)
        return st;
    const int norm = p->norm = sparcl__entmax_norm(desc, &p->alpha);
    p->params = params;
    p->source = source;
    snprintf(p->origin, sizeof p->origin, "%s", origin);
    int32_t bm = 0, bn = 0, wg = 0;
    sparcl_params_get(&params, "BLOCK_M", &bm);
    sparcl_params_get(&params, "BLOCK_N", &bn);
    sparcl_params_get(&params, "WG_SIZE", &wg);
    p->block_m = bm;
    p->block_n = bn;
    p->wg_size = wg;

    sparcl__tiling t;
    st = sparcl__tiling_build(ctx, desc->layout, desc->q_len, desc->kv_len, desc->causal, bm, bn,
                              &t);
    if (st != SPARCL_OK)
        goto fail;
    p->layout_heads = t.heads;
    p->n_tile_rows = t.ntr;
    if ((st = upload(p, &p->tile_ptr, t.ptr, sizeof *t.ptr * (size_t)t.heads * (t.ntr + 1))) ||
        (st = upload(p, &p->tile_col, t.col, sizeof *t.col * (size_t)t.nnz)) ||
        (st = upload(p, &p->tile_mask, t.mask, sizeof *t.mask * (size_t)t.nnz)) ||
        (st = upload(p, &p->mask_bits, t.bits,
                     sizeof *t.bits * (size_t)t.n_masks * (size_t)t.tm * (size_t)t.mw))) {
        sparcl__tiling_free(&t);
        goto fail;
    }
    sparcl__tiling_free(&t);
    if (desc->layout && (st = sparcl__layout_copy(ctx, desc->layout, &p->layout)) != SPARCL_OK)
        goto fail;

    char options[1024];
    sparcl__params_build_options(schema, &params, &prob, options, sizeof options);
    if (norm) /* which entmax solver attn_entmax compiles */
        snprintf(options + strlen(options), sizeof options - strlen(options), " -DNORM=%d",
                 norm);
    int dense = 0;
    int32_t algo = 0;
    sparcl_params_get(&params, "ALGO", &algo);
    if (algo == 1) {
        if ((st = sparcl__dense_init(p, options, &dense)) != SPARCL_OK)
            goto fail;
        if (!dense) { /* it does not apply here: the fused kernel, and say so */
            sparcl_params_set(&p->params, "ALGO", 0);
            sparcl__params_build_options(schema, &p->params, &prob, options, sizeof options);
        }
    }
    if (!dense && (st = fused_init(p, schema, &prob, options)) != SPARCL_OK)
        goto fail;
    *out = p;
    return SPARCL_OK;
fail:
    sparcl_plan_free(p);
    return st;
}

SPARCL_API sparcl_status sparcl_plan_init(sparcl_ctx *ctx, sparcl_plan **out,
                                          const sparcl_plan_desc *desc)
{
    if (!out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    if (!desc)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "desc is NULL");
    sparcl_status st = sparcl__plan_desc_check(ctx, desc);
    if (st != SPARCL_OK)
        return st;

    if (desc->attention == SPARCL_ATTENTION_FAVOR)
        return sparcl__favor_plan_init(ctx, out, desc);
    if (desc->attention == SPARCL_ATTENTION_LINFORMER)
        return sparcl__linformer_plan_init(ctx, out, desc);

    float alpha;
    const sparcl__kernel_schema *schema =
        sparcl__entmax_norm(desc, &alpha) ? &sparcl__schema_attn_entmax : &sparcl__schema_attn_fwd;
    sparcl__problem prob = sparcl__problem_from_desc(desc);
    sparcl_params params;
    sparcl_param_source source;
    char origin[SPARCL__ORIGIN_MAX];
    sparcl__tuning_choose(ctx, schema, desc, &params, &source, origin, sizeof origin);
    sparcl__params_fill_defaults(schema, &params, &prob, &ctx->limits);
    if (desc->unchecked_params)
        st = sparcl__params_check_minimal(ctx, &params);
    else
        st = sparcl__params_check(ctx, schema, &params, &prob, &ctx->limits);
    if (st != SPARCL_OK)
        return st;
    st = create(ctx, desc, schema, &prob, params, source, origin, out);
    if (st != SPARCL_OK && source == SPARCL_PARAMS_DATABASE) {
        /* A tuned row is a hint: if it cannot run here, the defaults can. */
        char fallback[SPARCL__ORIGIN_MAX + 64];
        snprintf(fallback, sizeof fallback, "built-in defaults (tuned row failed: %s)", origin);
        sparcl__log(ctx, SPARCL_LOG_WARNING, "tuned parameters from %s failed (%s); using the "
                    "built-in defaults", origin, sparcl_ctx_errmsg(ctx));
        sparcl_params_clear(&params);
        sparcl__params_fill_defaults(schema, &params, &prob, &ctx->limits);
        st = create(ctx, desc, schema, &prob, params, SPARCL_PARAMS_DEFAULT, fallback, out);
    }
    return st;
}

SPARCL_API void sparcl_plan_free(sparcl_plan *p)
{
    if (!p)
        return;
    if (p->kernel)
        clReleaseKernel(p->kernel);
    if (p->pack_kernel)
        clReleaseKernel(p->pack_kernel);
    if (p->softmax_kernel)
        clReleaseKernel(p->softmax_kernel);
    if (p->last)
        clReleaseEvent(p->last);
    cl_mem *mems[6] = {&p->tile_ptr,  &p->tile_col,  &p->tile_mask,
                       &p->mask_bits, &p->workspace, &p->scores};
    for (int i = 0; i < 6; ++i)
        if (*mems[i])
            clReleaseMemObject(*mems[i]);
    sparcl__plan_bwd_free(p->bwd);
    sparcl_layout_free(p->layout);
    sparcl__favor_free(p->favor);
    sparcl__linformer_free(p->linformer);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static sparcl_status check_buffer(sparcl_plan *p, cl_mem m, const char *name, int64_t elems)
{
    if (!m)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s buffer is NULL", name);
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s is not a valid buffer (%s)", name, sparcl__cl_error_name(err));
    uint64_t need = (uint64_t)elems * sizeof(float);
    if ((uint64_t)size < need)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s buffer has %zu bytes; the shape needs %llu", name, size,
                            (unsigned long long)need);
    return SPARCL_OK;
}

cl_int sparcl__plan_set_layout_args(const sparcl_plan *p, cl_kernel kn, cl_uint *a)
{
    const sparcl_plan_desc *d = &p->desc;
    const cl_int group = d->q_heads / d->kv_heads;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &p->tile_ptr);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &p->tile_col);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &p->tile_mask);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &p->mask_bits);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &d->q_len);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &d->kv_len);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &d->q_heads);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &group);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &p->layout_heads);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &p->n_tile_rows);
    return err;
}

cl_event *sparcl__plan_wait_list(const sparcl_plan *p, cl_uint num_wait, const cl_event *wait,
                                 cl_uint *n)
{
    cl_event *all = malloc(sizeof *all * (num_wait + 1));
    if (!all)
        return NULL;
    for (*n = 0; *n < num_wait; ++*n)
        all[*n] = wait[*n];
    if (p->last)
        all[(*n)++] = p->last;
    return all;
}

/* Enqueues attn_fwd_pack_k (KT=1) on `queue`: K into the plan's workspace,
 * after the caller's wait list and the previous call that read the
 * workspace (on whichever queue it ran).  Called with p->lock held. */
static sparcl_status enqueue_pack(sparcl_plan *p, cl_command_queue queue,
                                  const sparcl_strides *ks, cl_mem k, cl_uint num_wait,
                                  const cl_event *wait, cl_event *out)
{
    const sparcl_plan_desc *d = &p->desc;
    const cl_int n_tiles = (d->kv_len + p->block_n - 1) / p->block_n;
    const cl_long strides[3] = {ks->batch, ks->head, ks->seq};
    cl_kernel kn = p->pack_kernel;
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &k);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &p->workspace);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &d->kv_len);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &d->kv_heads);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &n_tiles);
    for (int s = 0; s < 3; ++s)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[s]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(p->ctx, err, "clSetKernelArg(attn_fwd_pack_k)");
    cl_uint n;
    cl_event *all = sparcl__plan_wait_list(p, num_wait, wait, &n);
    if (!all)
        return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
    size_t global[3] = {(size_t)n_tiles, (size_t)d->kv_heads, (size_t)d->batch};
    err = clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, NULL, n, n ? all : NULL, out);
    free(all);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(p->ctx, err, "clEnqueueNDRangeKernel(attn_fwd_pack_k)");
    return SPARCL_OK;
}

/* The forward call with explicit tensor strides (q, k, v, out). */
static sparcl_status forward_strided(sparcl_plan *p, cl_command_queue queue,
                                     const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                     cl_mem out, cl_mem lse, cl_uint num_wait,
                                     const cl_event *wait, cl_event *event)
{
    const sparcl_plan_desc *d = &p->desc;
    sparcl_status st;
    if ((st = check_buffer(p, q, "q", span(ts[0], d->batch, d->q_heads, d->q_len, d->head_dim))) ||
        (st = check_buffer(p, k, "k", span(ts[1], d->batch, d->kv_heads, d->kv_len, d->head_dim))) ||
        (st = check_buffer(p, v, "v", span(ts[2], d->batch, d->kv_heads, d->kv_len, d->head_dim))) ||
        (st = check_buffer(p, out, "out",
                           span(ts[3], d->batch, d->q_heads, d->q_len, d->head_dim))))
        return st;
    if (lse && (st = check_buffer(p, lse, "lse", (int64_t)d->batch * d->q_heads * d->q_len)))
        return st;
    if (out == q || out == k || out == v)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, "out aliases an input");
    if ((num_wait == 0) != (wait == NULL))
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "num_wait %u does not match wait list %p", num_wait, (void *)wait);
    if (p->favor)
        return sparcl__favor_forward(p, queue, ts, q, k, v, out, lse, num_wait, wait, event);
    if (p->linformer)
        return sparcl__linformer_forward(p, queue, ts, q, k, v, out, lse, num_wait, wait, event);

    const cl_int write_lse = lse != NULL;
    const cl_float scale_log2 = p->scale * (cl_float)CL_M_LOG2E;
    cl_long strides[12];
    for (int t = 0; t < 4; ++t) {
        strides[3 * t] = ts[t].batch;
        strides[3 * t + 1] = ts[t].head;
        strides[3 * t + 2] = ts[t].seq;
    }
    cl_command_queue cq = queue ? queue : p->ctx->queue;
    pthread_mutex_lock(&p->lock);
    if (p->softmax_kernel) {
        st = sparcl__dense_forward(p, cq, ts, q, k, v, out, lse, num_wait, wait, event);
        pthread_mutex_unlock(&p->lock);
        return st;
    }
    cl_event pack_ev = NULL;
    if (p->pack_kernel &&
        (st = enqueue_pack(p, cq, &ts[1], k, num_wait, wait, &pack_ev)) != SPARCL_OK) {
        pthread_mutex_unlock(&p->lock);
        return st;
    }
    cl_mem kin = p->pack_kernel ? p->workspace : k;
    cl_kernel kn = p->kernel;
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &q);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &kin);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &v);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), lse ? &lse : &out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &write_lse);
    err |= sparcl__plan_set_layout_args(p, kn, &a);
    err |= clSetKernelArg(kn, a++, sizeof(cl_float), &scale_log2);
    for (int s = 0; s < 12; ++s)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[s]);
    if (p->norm) /* attn_entmax takes alpha last */
        err |= clSetKernelArg(kn, a++, sizeof(cl_float), &p->alpha);
    cl_event ev = NULL;
    if (err == CL_SUCCESS) {
        size_t local[3] = {(size_t)p->wg_size, 1, 1};
        size_t global[3] = {(size_t)p->n_tile_rows * (size_t)p->wg_size, (size_t)d->q_heads,
                            (size_t)d->batch};
        err = pack_ev ? clEnqueueNDRangeKernel(cq, kn, 3, NULL, global, local, 1, &pack_ev, &ev)
                      : clEnqueueNDRangeKernel(cq, kn, 3, NULL, global, local, num_wait, wait,
                                               &ev);
        if (err != CL_SUCCESS)
            st = sparcl__fail_cl(p->ctx, err, "clEnqueueNDRangeKernel(attn_fwd)");
    } else {
        st = sparcl__fail_cl(p->ctx, err, "clSetKernelArg(attn_fwd)");
    }
    if (pack_ev)
        clReleaseEvent(pack_ev);
    if (ev && p->pack_kernel) {
        if (p->last)
            clReleaseEvent(p->last);
        clRetainEvent(ev);
        p->last = ev;
    }
    pthread_mutex_unlock(&p->lock);
    if (ev && event)
        *event = ev;
    else if (ev)
        clReleaseEvent(ev);
    return st;
}

sparcl_status sparcl__plan_forward_strided(sparcl_plan *p, cl_command_queue queue,
                                          const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                          cl_mem out, cl_mem lse, cl_uint num_wait,
                                          const cl_event *wait, cl_event *event)
{
    return forward_strided(p, queue, ts, q, k, v, out, lse, num_wait, wait, event);
}

sparcl_status sparcl__plan_check_queue(sparcl_plan *p, cl_command_queue queue)
{
    if (!queue)
        return SPARCL_OK;
    cl_context qc = NULL;
    cl_device_id qd = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qc, &qc, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qd, &qd, NULL);
    if (err != CL_SUCCESS || qc != p->ctx->context || qd != p->ctx->device)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "queue does not belong to the plan's context and device");
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_plan_forward_on_queue(sparcl_plan *p, cl_command_queue queue,
                                                      cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                      cl_mem lse, cl_uint num_wait,
                                                      const cl_event *wait, cl_event *event)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    sparcl_status st = sparcl__plan_check_queue(p, queue);
    if (st != SPARCL_OK)
        return st;
    const sparcl_strides ts[4] = {p->qs, p->ks, p->vs, p->os};
    return forward_strided(p, queue, ts, q, k, v, out, lse, num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_forward(sparcl_plan *p, cl_mem q, cl_mem k, cl_mem v,
                                             cl_mem out, cl_mem lse, cl_uint num_wait,
                                             const cl_event *wait, cl_event *event)
{
    return sparcl_plan_forward_on_queue(p, NULL, q, k, v, out, lse, num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_forward_host(sparcl_plan *p, const float *q,
                                                  const float *k, const float *v, float *out,
                                                  float *lse)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    if (!q || !k || !v || !out)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !q ? "q" : !k ? "k" : !v ? "v" : "out");
    const sparcl_plan_desc *d = &p->desc;
    /* Host arrays are contiguous whatever strides the plan was made for. */
    size_t nq = (size_t)d->batch * d->q_heads * d->q_len * d->head_dim;
    size_t nk = (size_t)d->batch * d->kv_heads * d->kv_len * d->head_dim;
    size_t nl = (size_t)d->batch * d->q_heads * d->q_len;
    const size_t sizes[3] = {nq * 4, nk * 4, lse ? nl * 4 : 0};
    static const char *what[3] = {"q/out", "k/v", "lse"};
    for (int t = 0; t < 3; ++t)
        if (sizes[t] > p->ctx->limits.max_alloc)
            return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                "%s needs %zu bytes; the device's largest allocation is %llu",
                                what[t], sizes[t], (unsigned long long)p->ctx->limits.max_alloc);
    cl_int err;
    cl_context c = p->ctx->context;
    cl_mem bq = clCreateBuffer(c, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nq * 4, (void *)q, &err);
    cl_mem bk = bq ? clCreateBuffer(c, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nk * 4, (void *)k, &err) : NULL;
    cl_mem bv = bk ? clCreateBuffer(c, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nk * 4, (void *)v, &err) : NULL;
    cl_mem bo = bv ? clCreateBuffer(c, CL_MEM_WRITE_ONLY, nq * 4, NULL, &err) : NULL;
    cl_mem bl = bo && lse ? clCreateBuffer(c, CL_MEM_WRITE_ONLY, nl * 4, NULL, &err) : NULL;
    sparcl_status st = SPARCL_OK;
    if (!bo || (lse && !bl)) {
        st = sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                          "cannot allocate device buffers for the host call (%s)",
                          sparcl__cl_error_name(err));
        goto done;
    }
    const sparcl_strides zero = {0, 0, 0};
    const sparcl_strides ts[4] = {resolve(zero, d, d->q_heads, d->q_len),
                                  resolve(zero, d, d->kv_heads, d->kv_len),
                                  resolve(zero, d, d->kv_heads, d->kv_len),
                                  resolve(zero, d, d->q_heads, d->q_len)};
    cl_event ev = NULL;
    st = forward_strided(p, NULL, ts, bq, bk, bv, bo, bl, 0, NULL, &ev);
    if (st != SPARCL_OK)
        goto done;
    err = clEnqueueReadBuffer(p->ctx->queue, bo, CL_TRUE, 0, nq * 4, out, 1, &ev, NULL);
    if (err == CL_SUCCESS && bl)
        err = clEnqueueReadBuffer(p->ctx->queue, bl, CL_TRUE, 0, nl * 4, lse, 0, NULL, NULL);
    clReleaseEvent(ev);
    if (err != CL_SUCCESS)
        st = sparcl__fail_cl(p->ctx, err, "clEnqueueReadBuffer");
done:
    if (bq) clReleaseMemObject(bq);
    if (bk) clReleaseMemObject(bk);
    if (bv) clReleaseMemObject(bv);
    if (bo) clReleaseMemObject(bo);
    if (bl) clReleaseMemObject(bl);
    return st;
}

SPARCL_API void sparcl_plan_params(const sparcl_plan *p, sparcl_params *params,
                                   sparcl_param_source *source)
{
    if (!p)
        return;
    if (params)
        *params = p->params;
    if (source)
        *source = p->source;
}

SPARCL_API const char *sparcl_plan_params_origin(const sparcl_plan *p)
{
    return p ? p->origin : "";
}

SPARCL_API size_t sparcl_plan_device_bytes(const sparcl_plan *p)
{
    return p ? p->device_bytes : 0;
}

/* The helpers above, for the other passes (plan.h). */
sparcl_strides sparcl__plan_resolve(sparcl_strides s, const sparcl_plan_desc *d, int heads,
                                    int len)
{
    return resolve(s, d, heads, len);
}

int64_t sparcl__plan_span(sparcl_strides s, int batch, int heads, int len, int dim)
{
    return span(s, batch, heads, len, dim);
}

sparcl_status sparcl__plan_check_buffer(sparcl_plan *p, cl_mem m, const char *name,
                                        int64_t elems)
{
    return check_buffer(p, m, name, elems);
}

sparcl_status sparcl__plan_upload(sparcl_plan *p, cl_mem *out, const void *data, size_t bytes)
{
    return upload(p, out, data, bytes);
}
