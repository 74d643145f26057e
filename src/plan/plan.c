/*
 * plan.c -- plan creation and the forward call: validates the descriptor,
 * chooses the attention kind (attention_kinds.c) and, for a kind with a
 * tuned family, its parameters (kernel_build.h), then calls through the
 * kind's table of operations (plan_api.h).  No kind is known here by more
 * than its table.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/attention_kinds.h"
#include "plan/dtype_stage.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "plan/kernel_build.h"
#include "layout/layout.h"
#include "runtime/memory.h"
#include "kernels/params.h"
#include "plan/plan.h"
#include "runtime/struct_size.h"
#include "tuning/tuning_lookup.h"


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

const struct sparcl__tiled *sparcl__plan_tiled(const sparcl_plan *p)
{
    return p && p->ops && p->ops->tiled && p->state ? (const struct sparcl__tiled *)p->state : NULL;
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
    if (d->page_size < 0)
        return BAD("page_size %d must be >= 0", d->page_size);
    if (!(d->scale >= 0.0f) || isinf(d->scale))
        return BAD("scale %g must be finite and >= 0 (0 means 1/sqrt(head_dim))",
                   (double)d->scale);
    if (sparcl_dtype_size(d->dtype) == 0)
        return BAD("dtype %d is not a sparcl_dtype (SPARCL_DTYPE_F32 0, F16 1, BF16 2)",
                   d->dtype);
    sparcl_status st = check_tensors(ctx, d);
    if (st != SPARCL_OK)
        return st;
    if (d->params && (st = sparcl__params_valid(ctx, d->params, "desc.params")) != SPARCL_OK)
        return st;
    if (d->previous && d->previous->ctx != ctx)
        return BAD("desc.previous is a plan of another context");
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

/* A zeroed plan with the descriptor's shapes, scale and resolved strides,
 * before any kind is chosen. */
static sparcl_status alloc(sparcl_ctx *ctx, const sparcl_plan_desc *desc, sparcl_plan **out)
{
    sparcl_plan *p = calloc(1, sizeof *p);
    *out = p;
    if (!p)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a plan");
    p->ctx = ctx;
    p->desc = *desc;
    p->desc.layout = NULL;
    p->desc.params = NULL;
    p->desc.proj_e = NULL;
    p->desc.proj_f = NULL;
    p->desc.spans = NULL; /* borrowed during init only; the span kind keeps a copy */
    p->desc.previous = NULL;
    sparcl__plan_view *v = &p->view;
    v->ctx = ctx;
    v->desc = p->desc;
    v->scale = desc->scale > 0.0f ? desc->scale : 1.0f / sqrtf((float)desc->head_dim);
    v->qs = resolve(desc->q_strides, desc, desc->q_heads, desc->q_len);
    /* A paged cache's tensors are pools of pages of page_size tokens. */
    const int klen = desc->page_size > 0 ? desc->page_size : desc->kv_len;
    v->ks = resolve(desc->k_strides, desc, desc->kv_heads, klen);
    v->vs = resolve(desc->v_strides, desc, desc->kv_heads, klen);
    v->os = resolve(desc->o_strides, desc, desc->q_heads, desc->q_len);
    return SPARCL_OK;
}

/* Creates the state of the kind the descriptor and `params` (the checked
 * choice of the first kind's family, or NULL) select.  A kind that declines
 * has adjusted `params`; the kind they select then is tried. */
static sparcl_status create_kind(sparcl_plan *p, const sparcl_plan_desc *desc,
                                 sparcl__pset *params)
{
    for (int tries = 0; tries < SPARCL__KIND_COUNT; ++tries) {
        const sparcl__kind_ops *kind = sparcl__kind_select(desc, params);
        void *state = NULL;
        const sparcl__plan_view *v = p->stage ? sparcl__stage_kind_view(p->stage) : &p->view;
        sparcl_status st = kind->create(v, desc, params, &p->report, &state);
        if (st != SPARCL_OK)
            return st;
        if (state && p->stage && sparcl__stage_forwards(p->stage) == kind->half_forward) {
            /* The kind's view was chosen for the first kind's storage. */
            kind->free(state);
            return sparcl__fail(p->ctx, SPARCL_ERR_INTERNAL,
                                "%s was chosen after a kind with other half storage", kind->name);
        }
        if (state) {
            if (kind->family && params)
                sparcl__pset_to_params(kind->family, params, &p->report.params);
            p->ops = kind;
            p->state = state;
            return SPARCL_OK;
        }
    }
    return sparcl__fail(p->ctx, SPARCL_ERR_INTERNAL, "every attention kind declined the plan");
}

/* Chooses the family's parameters (or only its defaults) into the report
 * and creates the kind; *chosen says whether the choice passed its checks. */
static sparcl_status choose_and_create(sparcl_plan *p, const sparcl_plan_desc *desc,
                                       const sparcl__kernel_schema *family, int defaults_only,
                                       int *chosen)
{
    *chosen = 1;
    if (!family)
        return create_kind(p, desc, NULL);
    sparcl__pset params;
    char origin[SPARCL__ORIGIN_MAX];
    sparcl_status st = sparcl__family_choose(p->ctx, family, desc, defaults_only, &params,
                                             &p->report.source, origin, sizeof origin);
    *chosen = st == SPARCL_OK;
    if (st != SPARCL_OK)
        return st;
    if (!defaults_only)
        snprintf(p->report.origin, sizeof p->report.origin, "%s", origin);
    return create_kind(p, desc, &params);
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
    sparcl_plan_desc copy; /* only the fields of the caller's struct_size */
    sparcl_status st = sparcl__plan_desc_read(ctx, desc, &copy);
    if (st != SPARCL_OK)
        return st;
    desc = &copy;
    st = sparcl__plan_desc_check(ctx, desc);
    if (st != SPARCL_OK)
        return st;
    sparcl_plan *p;
    if ((st = alloc(ctx, desc, &p)) != SPARCL_OK)
        return st;
    const sparcl__kind_ops *first = sparcl__kind_select(desc, NULL);
    const sparcl__kernel_schema *family = first->family;
    /* Half storage: kinds without a half forward are created for fp32 and
     * staged (dtype_stage.h); their parameters are the fp32 ones. */
    sparcl_plan_desc staged;
    if (desc->dtype != SPARCL_DTYPE_F32) {
        if ((st = sparcl__stage_create(&p->view, !first->half_forward, &p->stage)) != SPARCL_OK) {
            sparcl_plan_free(p);
            return st;
        }
        if (!first->half_forward) {
            staged = sparcl__stage_desc(desc);
            desc = &staged;
        }
    }
    int chosen;
    st = choose_and_create(p, desc, family, 0, &chosen);
    if (st != SPARCL_OK && chosen && family && p->report.source == SPARCL_PARAMS_DATABASE) {
        /* A tuned row is a hint: if it cannot run here, the defaults can. */
        char origin[SPARCL__ORIGIN_MAX];
        snprintf(origin, sizeof origin, "%.*s", (int)sizeof origin - 1, p->report.origin);
        snprintf(p->report.origin, sizeof p->report.origin,
                 "built-in defaults (tuned row failed: %s)", origin);
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "tuned parameters from %s failed (%s); using the built-in defaults", origin,
                    sparcl_ctx_errmsg(ctx));
        st = choose_and_create(p, desc, family, 1, &chosen);
    }
    if (st == SPARCL_OK && p->stage)
        st = sparcl__stage_check(p->stage, p->ops->name, p->ops->device_bytes(p->state));
    if (st != SPARCL_OK) {
        sparcl_plan_free(p);
        return st;
    }
    *out = p;
    return SPARCL_OK;
}

SPARCL_API void sparcl_plan_free(sparcl_plan *p)
{
    if (!p)
        return;
    if (p->ops)
        p->ops->free(p->state);
    sparcl__stage_free(p->stage);
    free(p);
}

/* Whether buffer m belongs to ctx's cl_context and holds `elems`
 * elements of `esize` bytes.  A buffer of another context is undefined
 * behaviour in a kernel launch (POCL's CPU device even runs it, on memory
 * the plan's context does not own), so it is refused here. */
static sparcl_status check_sized(sparcl_ctx *ctx, cl_mem m, const char *name, int64_t elems,
                                 size_t esize)
{
    if (!m)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s buffer is NULL", name);
    size_t size = 0;
    cl_context owner = NULL;
    cl_int err = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err != CL_SUCCESS)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is not a valid buffer (%s)",
                            name, sparcl__cl_error_name(err));
    if (owner != ctx->context)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s buffer belongs to another cl_context than the context's", name);
    uint64_t need = (uint64_t)elems * esize;
    if ((uint64_t)size < need)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s buffer has %zu bytes; the shape needs %llu (%lld elements of "
                            "%zu bytes)",
                            name, size, (unsigned long long)need, (long long)elems, esize);
    return SPARCL_OK;
}

sparcl_status sparcl__check_float_buffer(sparcl_ctx *ctx, cl_mem m, const char *name,
                                         int64_t elems)
{
    return check_sized(ctx, m, name, elems, sizeof(float));
}

static sparcl_status check_buffer(sparcl_plan *p, cl_mem m, const char *name, int64_t elems,
                                  size_t esize)
{
    return check_sized(p->ctx, m, name, elems, esize);
}

/* The buffer checks of a forward call: sizes by the strides, with K and V
 * spanning kv_batch x kv_heads x kv_len rows (the sequences, or a paged
 * cache's pool), no output aliasing an input, a consistent wait list. */
static sparcl_status check_fwd_buffers(sparcl_plan *p, const sparcl_strides *ts, cl_mem q, cl_mem k,
                                       cl_mem v, cl_mem out, cl_mem lse, cl_uint num_wait,
                                       const cl_event *wait, int kv_batch, int kv_len)
{
    const sparcl_plan_desc *d = &p->desc;
    const size_t es = sparcl_dtype_size(d->dtype); /* q, k, v, out; lse is float */
    sparcl_status st;
    if ((st = check_buffer(p, q, "q", span(ts[0], d->batch, d->q_heads, d->q_len, d->head_dim),
                           es)) ||
        (st = check_buffer(p, k, "k", span(ts[1], kv_batch, d->kv_heads, kv_len, d->head_dim),
                           es)) ||
        (st = check_buffer(p, v, "v", span(ts[2], kv_batch, d->kv_heads, kv_len, d->head_dim),
                           es)) ||
        (st = check_buffer(p, out, "out",
                           span(ts[3], d->batch, d->q_heads, d->q_len, d->head_dim), es)))
        return st;
    if (lse && (st = check_buffer(p, lse, "lse", (int64_t)d->batch * d->q_heads * d->q_len,
                                  sizeof(float))))
        return st;
    if (out == q || out == k || out == v)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, "out aliases an input");
    if ((num_wait == 0) != (wait == NULL))
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "num_wait %u does not match wait list %p", num_wait, (void *)wait);
    return SPARCL_OK;
}

/* The kind's forward, staged through fp32 workspaces where the kind has
 * no half path (dtype_stage.h). */
static sparcl_status dispatch_forward(sparcl_plan *p, const sparcl__fwd_call *c)
{
    if (p->stage && sparcl__stage_forwards(p->stage))
        return sparcl__stage_forward(p->stage, p->ops, p->state, c);
    return p->ops->forward(p->state, c);
}

/* The forward call with explicit tensor strides (q, k, v, out). */
static sparcl_status forward_strided(sparcl_plan *p, cl_command_queue queue,
                                     const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                     cl_mem out, cl_mem lse, cl_uint num_wait, const cl_event *wait,
                                     cl_event *event)
{
    const sparcl_plan_desc *d = &p->desc;
    sparcl_status st =
        check_fwd_buffers(p, ts, q, k, v, out, lse, num_wait, wait, d->batch, d->kv_len);
    if (st != SPARCL_OK)
        return st;
    const sparcl__fwd_call c = {
        queue ? queue : p->ctx->queue, ts, q, k, v, out, lse, num_wait, wait, event, NULL, NULL, 0};
    return dispatch_forward(p, &c);
}

sparcl_status sparcl__plan_forward_strided(sparcl_plan *p, cl_command_queue queue,
                                          const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                          cl_mem out, cl_mem lse, cl_uint num_wait,
                                          const cl_event *wait, cl_event *event)
{
    return forward_strided(p, queue, ts, q, k, v, out, lse, num_wait, wait, event);
}

sparcl_status sparcl__check_queue(sparcl_ctx *ctx, cl_command_queue queue, const char *owner)
{
    if (!queue)
        return SPARCL_OK;
    cl_context qc = NULL;
    cl_device_id qd = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qc, &qc, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qd, &qd, NULL);
    if (err != CL_SUCCESS || qc != ctx->context || qd != ctx->device)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "queue does not belong to the %s context and device", owner);
    return SPARCL_OK;
}

sparcl_status sparcl__plan_check_queue(sparcl_plan *p, cl_command_queue queue)
{
    return sparcl__check_queue(p->ctx, queue, "plan's");
}

sparcl_status sparcl__plan_call_begin(sparcl_plan *p, cl_command_queue queue,
                                      sparcl_strides ts[4])
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    sparcl_status st = sparcl__plan_check_queue(p, queue);
    if (st != SPARCL_OK)
        return st;
    ts[0] = p->view.qs;
    ts[1] = p->view.ks;
    ts[2] = p->view.vs;
    ts[3] = p->view.os;
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_plan_forward_on_queue(sparcl_plan *p, cl_command_queue queue,
                                                      cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                      cl_mem lse, cl_uint num_wait,
                                                      const cl_event *wait, cl_event *event)
{
    sparcl_strides ts[4];
    sparcl_status st = sparcl__plan_call_begin(p, queue, ts);
    if (st != SPARCL_OK)
        return st;
    return forward_strided(p, queue, ts, q, k, v, out, lse, num_wait, wait, event);
}

/* The host-side checks of a cache call: lengths within the capacity,
 * block table entries the lengths reach within the pool. */
static sparcl_status check_cache(sparcl_plan *p, const int32_t *kv_lens, int page_size,
                                 const int32_t *block_table, int pool_pages)
{
#define BAD(...) sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    const sparcl_plan_desc *d = &p->desc;
    if (!p->ops->takes_lengths)
        return sparcl__fail(p->ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "a %s plan takes no KV cache lengths; cache calls need a decoding "
                            "plan (exact softmax, q_len <= 16, chosen for long kv_len or by the "
                            "SPLITS parameter)",
                            p->ops->name);
    if (page_size != d->page_size)
        return BAD("page_size %d: the plan was made for page_size %d", page_size, d->page_size);
    if (!kv_lens)
        return BAD("kv_lens is NULL");
    if (page_size > 0 && !block_table)
        return BAD("block_table is NULL for a paged cache");
    if (page_size > 0 && pool_pages < 1)
        return BAD("pool_pages %d must be >= 1 for a paged cache", pool_pages);
    if (page_size == 0 && (block_table || pool_pages))
        return BAD("a contiguous cache takes no block_table and pool_pages 0 (got %d)", pool_pages);
    const int max_pages = page_size > 0 ? (int)sparcl__ceil_div_i64(d->kv_len, page_size) : 0;
    for (int b = 0; b < d->batch; ++b) {
        if (kv_lens[b] < 0 || kv_lens[b] > d->kv_len)
            return BAD("kv_lens[%d] = %d is outside [0, %d], the plan's capacity kv_len", b,
                       kv_lens[b], d->kv_len);
        const int used = page_size > 0 ? (int)sparcl__ceil_div_i64(kv_lens[b], page_size) : 0;
        for (int pg = 0; pg < used; ++pg) {
            const int32_t e = block_table[(int64_t)b * max_pages + pg];
            if (e < 0 || e >= pool_pages)
                return BAD("block_table[%d][%d] = %d is outside the pool of %d pages", b, pg, e,
                           pool_pages);
        }
    }
    return SPARCL_OK;
#undef BAD
}

SPARCL_API sparcl_status sparcl_plan_forward_cache(sparcl_plan *p, cl_command_queue queue, cl_mem q,
                                                   cl_mem k, cl_mem v, const int32_t *kv_lens,
                                                   int page_size, const int32_t *block_table,
                                                   int pool_pages, cl_mem out, cl_mem lse,
                                                   cl_uint num_wait, const cl_event *wait,
                                                   cl_event *event)
{
    sparcl_strides ts[4];
    sparcl_status st = sparcl__plan_call_begin(p, queue, ts);
    if (st != SPARCL_OK || (st = check_cache(p, kv_lens, page_size, block_table, pool_pages)))
        return st;
    const sparcl_plan_desc *d = &p->desc;
    /* K and V hold the capacity per sequence, or the pool's pages. */
    st = page_size > 0
             ? check_fwd_buffers(p, ts, q, k, v, out, lse, num_wait, wait, pool_pages, page_size)
             : check_fwd_buffers(p, ts, q, k, v, out, lse, num_wait, wait, d->batch, d->kv_len);
    if (st != SPARCL_OK)
        return st;
    const sparcl__fwd_call c = {queue ? queue : p->ctx->queue,
                                ts,
                                q,
                                k,
                                v,
                                out,
                                lse,
                                num_wait,
                                wait,
                                event,
                                kv_lens,
                                block_table,
                                pool_pages};
    return dispatch_forward(p, &c);
}

SPARCL_API sparcl_status sparcl_plan_forward(sparcl_plan *p, cl_mem q, cl_mem k, cl_mem v,
                                             cl_mem out, cl_mem lse, cl_uint num_wait,
                                             const cl_event *wait, cl_event *event)
{
    return sparcl_plan_forward_on_queue(p, NULL, q, k, v, out, lse, num_wait, wait, event);
}

SPARCL_API sparcl_status sparcl_plan_forward_host(sparcl_plan *p, const void *q,
                                                  const void *k, const void *v, void *out,
                                                  float *lse)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    if (!q || !k || !v || !out)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !q ? "q" : !k ? "k" : !v ? "v" : "out");
    const sparcl_plan_desc *d = &p->desc;
    const size_t es = sparcl_dtype_size(d->dtype);
    /* Host arrays are contiguous whatever strides the plan was made for.
     * The plan validated every extent positive; the counts saturate, so a
     * shape too large to address fails the max_alloc check below instead
     * of wrapping past it. */
    const size_t batch = (size_t)d->batch, dim = (size_t)d->head_dim;
    size_t nl = sparcl__sat_mul(sparcl__sat_mul(batch, (size_t)d->q_heads), (size_t)d->q_len);
    size_t nq = sparcl__sat_mul(nl, dim);
    size_t nk = sparcl__sat_mul(
        sparcl__sat_mul(sparcl__sat_mul(batch, (size_t)d->kv_heads), (size_t)d->kv_len), dim);
    const size_t sizes[3] = {sparcl__sat_mul(nq, es), sparcl__sat_mul(nk, es),
                             lse ? sparcl__sat_mul(nl, sizeof(float)) : 0};
    static const char *what[3] = {"q/out", "k/v", "lse"};
    for (int t = 0; t < 3; ++t)
        if (sizes[t] > p->ctx->limits.max_alloc)
            return sparcl__fail(p->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                "%s needs %zu bytes; the device's largest allocation is %llu",
                                what[t], sizes[t], (unsigned long long)p->ctx->limits.max_alloc);
    cl_int err;
    cl_context c = p->ctx->context;
    const cl_mem_flags in = CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR;
    cl_mem bq = clCreateBuffer(c, in, sizes[0], (void *)q, &err);
    cl_mem bk = bq ? clCreateBuffer(c, in, sizes[1], (void *)k, &err) : NULL;
    cl_mem bv = bk ? clCreateBuffer(c, in, sizes[1], (void *)v, &err) : NULL;
    cl_mem bo = bv ? clCreateBuffer(c, CL_MEM_WRITE_ONLY, sizes[0], NULL, &err) : NULL;
    cl_mem bl = bo && lse ? clCreateBuffer(c, CL_MEM_WRITE_ONLY, sizes[2], NULL, &err) : NULL;
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
    err = clEnqueueReadBuffer(p->ctx->queue, bo, CL_TRUE, 0, sizes[0], out, 1, &ev, NULL);
    if (err == CL_SUCCESS && bl)
        err = clEnqueueReadBuffer(p->ctx->queue, bl, CL_TRUE, 0, sizes[2], lse, 0, NULL, NULL);
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
        *params = p->report.params;
    if (source)
        *source = p->report.source;
}

SPARCL_API const char *sparcl_plan_gemm_params(const sparcl_plan *p, sparcl_params *params)
{
    if (params) {
        if (p)
            *params = p->report.gemm;
        else
            sparcl_params_clear(params);
    }
    return p ? p->report.gemm_origin : "";
}

SPARCL_API const char *sparcl_plan_params_origin(const sparcl_plan *p)
{
    return p ? p->report.origin : "";
}

SPARCL_API size_t sparcl_plan_device_bytes(const sparcl_plan *p)
{
    if (!p)
        return 0;
    const size_t kind = p->ops->device_bytes(p->state);
    return p->stage ? sparcl__sat_add(kind, sparcl__stage_bytes(p->stage)) : kind;
}

SPARCL_API sparcl_status sparcl_plan_redraw(sparcl_plan *p, uint64_t seed)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    if (!p->ops->redraw)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "only FAVOR+ and Linformer plans have random matrices to redraw");
    return p->ops->redraw(p->state, seed);
}

const sparcl__plan_view *sparcl__plan_view_of(const sparcl_plan *p)
{
    return p ? &p->view : NULL;
}

void *sparcl__plan_state(const sparcl_plan *p, const sparcl__kind_ops *kind)
{
    return p && p->ops == kind ? p->state : NULL;
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
    return check_buffer(p, m, name, elems, sizeof(float));
}

sparcl_status sparcl__plan_check_stored(sparcl_plan *p, cl_mem m, const char *name, int64_t elems)
{
    return check_buffer(p, m, name, elems, sparcl_dtype_size(p->desc.dtype));
}
