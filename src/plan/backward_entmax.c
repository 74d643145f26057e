/*
 * backward_entmax.c -- the backward pass of sparsemax / alpha-entmax
 * attention over a tiled layout (the entmax kind): its lazily built
 * resources (parameters from the attn_entmax_bwd family, the tile lists at
 * the backward's own tile, two kernels) and the dispatch of
 * attn_entmax_bwd_dq -> attn_entmax_bwd_dkv (cl/attn_entmax_bwd.cl).
 *
 * The resources live in the kind's sparcl__tiled (t->entmax_bwd), created
 * on the first backward call or by sparcl_plan_prepare_backward(), under
 * its lock.  Per call the only allocation is the row statistics the dQ
 * kernel hands to the dK/dV kernel (three floats per query row), released
 * right after enqueueing: OpenCL keeps it alive until the kernels finish,
 * and a per-call buffer lets several threads run one plan at once.
 */
#include <stdlib.h>

#include "kernels/kernel_registry.h"
#include "plan/bwd_tiles.h"
#include "plan/kernel_build.h"
#include "plan/plan_tiles.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "tuning/tuning_lookup.h"

struct sparcl__entmax_bwd {
    sparcl_params params;
    sparcl_param_source source;
    cl_kernel dq, dkv;
    sparcl__bwd_tiles tiles;
    int wg_size;
};

void sparcl__entmax_bwd_free(struct sparcl__entmax_bwd *b)
{
    if (!b)
        return;
    if (b->dq)
        clReleaseKernel(b->dq);
    if (b->dkv)
        clReleaseKernel(b->dkv);
    sparcl__bwd_tiles_release(&b->tiles);
    free(b);
}

/* Builds the resources from the checked parameters `ps`.  Caller holds
 * t->lock. */
static sparcl_status build_with(sparcl__tiled *t, const sparcl__pset *ps,
                                sparcl_param_source source, struct sparcl__entmax_bwd **out)
{
    *out = NULL;
    const sparcl__plan_view *v = t->view;
    const sparcl__kernel_schema *schema = &sparcl__schema_attn_entmax_bwd;
    struct sparcl__entmax_bwd *b = calloc(1, sizeof *b);
    if (!b)
        return sparcl__fail(v->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the backward");
    sparcl__pset_to_params(schema, ps, &b->params);
    b->source = source;
    b->wg_size = ps->v[SPARCL__P_WG_SIZE];
    sparcl_status st = sparcl__bwd_tiles_init(v->ctx, t->layout, &v->desc, ps->v[SPARCL__P_BLOCK_M],
                                              ps->v[SPARCL__P_BLOCK_N], &b->tiles);
    static const char *const names[2] = {"attn_entmax_bwd_dq", "attn_entmax_bwd_dkv"};
    cl_kernel ks[2] = {NULL, NULL};
    const sparcl__problem prob = sparcl__problem_from_desc(&v->desc); /* with its dtype */
    if (st == SPARCL_OK)
        st = sparcl__family_kernels(v->ctx, schema, &prob, ps, 2, names, ks);
    b->dq = ks[0];
    b->dkv = ks[1];
    if (st != SPARCL_OK) {
        sparcl__entmax_bwd_free(b);
        return st;
    }
    *out = b;
    return SPARCL_OK;
}

typedef struct entmax_build {
    sparcl__tiled *t;
    struct sparcl__entmax_bwd **out;
} entmax_build;

static sparcl_status build_set(void *user, const sparcl__pset *ps, sparcl_param_source source)
{
    entmax_build *b = user;
    return build_with(b->t, ps, source, b->out);
}

/* Chooses the parameters as plans do (override, tuning databases, built-in
 * defaults; a tuned row that cannot run here falls back to the defaults)
 * and builds.  Caller holds t->lock. */
static sparcl_status build(sparcl__tiled *t, const sparcl_params *override,
                           struct sparcl__entmax_bwd **out)
{
    sparcl_ctx *ctx = t->view->ctx;
    sparcl_plan_desc d = t->view->desc;
    d.layout = t->layout; /* the lookup keys rows by pattern and density */
    d.params = override;
    entmax_build b = {t, out};
    return sparcl__family_choose_build(ctx, &sparcl__schema_attn_entmax_bwd, &d, "entmax backward",
                                       build_set, &b);
}

sparcl_status sparcl__entmax_prepare_backward(void *state, const sparcl_params *override,
                                              sparcl_params *params, sparcl_param_source *source)
{
    sparcl__tiled *t = state;
    pthread_mutex_lock(&t->lock);
    sparcl_status st = SPARCL_OK;
    if (override || !t->entmax_bwd) {
        struct sparcl__entmax_bwd *b;
        st = build(t, override, &b);
        if (st == SPARCL_OK) {
            sparcl__entmax_bwd_free(t->entmax_bwd);
            t->entmax_bwd = b;
            t->bwd_bytes = b->tiles.bytes;
        }
    }
    if (st == SPARCL_OK && params)
        *params = t->entmax_bwd->params;
    if (st == SPARCL_OK && source)
        *source = t->entmax_bwd->source;
    pthread_mutex_unlock(&t->lock);
    return st;
}

/* The arguments of either kernel: the tensors (dq, or dk and dv), the tile
 * lists of its view, the shapes, scale, strides, alpha and the row count
 * of the statistics. */
static cl_int set_args(const sparcl__tiled *t, cl_kernel kn, const sparcl__bwd_call *a,
                       cl_mem stats, int dkv)
{
    const struct sparcl__entmax_bwd *b = t->entmax_bwd;
    const sparcl__bwd_tiles *tl = &b->tiles;
    const sparcl_plan_desc *d = &t->view->desc;
    float alpha;
    sparcl__entmax_norm(d, &alpha);
    const cl_int group = d->q_heads / d->kv_heads;
    const cl_int n_tiles = dkv ? tl->ntc : tl->ntr;
    const cl_float scale = t->view->scale;
    const cl_long n_rows = (cl_long)d->batch * d->q_heads * d->q_len;
    /* The inputs, the outputs (dq, or dk and dv), the view's tile lists. */
    const cl_mem mems[12] = {a->q,
                             a->k,
                             a->v,
                             a->dout,
                             a->lse,
                             stats,
                             dkv ? a->dk : a->dq,
                             dkv ? a->dv : tl->row_ptr,
                             dkv ? tl->col_ptr : tl->row_col,
                             dkv ? tl->col_row : tl->row_mask,
                             dkv ? tl->col_mask : tl->mask_bits,
                             tl->mask_bits};
    const int n_mems = dkv ? 12 : 11;
    cl_uint at = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < n_mems; ++i)
        err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &mems[i]);
    const cl_int ints[6] = {d->q_len, d->kv_len, d->q_heads, group, tl->layout_heads, n_tiles};
    for (int i = 0; i < 6; ++i)
        err |= clSetKernelArg(kn, at++, sizeof(cl_int), &ints[i]);
    err |= clSetKernelArg(kn, at++, sizeof(cl_float), &scale);
    for (int i = 0; i < 4; ++i) {
        const cl_long s[3] = {a->ts[i].batch, a->ts[i].head, a->ts[i].seq};
        for (int x = 0; x < 3; ++x)
            err |= clSetKernelArg(kn, at++, sizeof(cl_long), &s[x]);
    }
    err |= clSetKernelArg(kn, at++, sizeof(cl_float), &alpha);
    err |= clSetKernelArg(kn, at++, sizeof(cl_long), &n_rows);
    return err;
}

/* Enqueues dq then dkv (which reads dq's row statistics); caller holds
 * t->lock and t->entmax_bwd is built. */
static sparcl_status enqueue(const sparcl__tiled *t, const sparcl__bwd_call *a, cl_mem stats)
{
    const struct sparcl__entmax_bwd *b = t->entmax_bwd;
    const sparcl_plan_desc *d = &t->view->desc;
    cl_int err = set_args(t, b->dq, a, stats, 0);
    err |= set_args(t, b->dkv, a, stats, 1);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(t->view->ctx, err, "clSetKernelArg(attn_entmax_bwd)");
    const size_t wg = (size_t)b->wg_size;
    const size_t dq_global[3] = {(size_t)b->tiles.ntr * wg, (size_t)d->q_heads, (size_t)d->batch};
    const size_t dkv_global[3] = {(size_t)b->tiles.ntc * wg, (size_t)d->kv_heads, (size_t)d->batch};
    const size_t local[3] = {wg, 1, 1};
    cl_event ev_dq = NULL;
    /* An explicit dependency keeps the order on out-of-order queues; the
     * dkv event then marks the end of both. */
    err = clEnqueueNDRangeKernel(a->queue, b->dq, 3, NULL, dq_global, local, a->num_wait, a->wait,
                                 &ev_dq);
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(a->queue, b->dkv, 3, NULL, dkv_global, local, 1, &ev_dq,
                                     a->event);
    if (ev_dq)
        clReleaseEvent(ev_dq);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(t->view->ctx, err, "clEnqueueNDRangeKernel(attn_entmax_bwd)");
    return SPARCL_OK;
}

sparcl_status sparcl__entmax_backward(void *state, const sparcl__bwd_call *c)
{
    sparcl__tiled *t = state;
    const sparcl_plan_desc *d = &t->view->desc;
    sparcl_ctx *ctx = t->view->ctx;
    /* Validated positive extents; an unaddressable size saturates to
     * SIZE_MAX, which clCreateBuffer refuses. */
    const size_t rows =
        sparcl__sat_mul(sparcl__sat_mul((size_t)d->batch, (size_t)d->q_heads), (size_t)d->q_len);
    cl_int err;
    cl_mem stats = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE,
                                  sparcl__sat_mul(3 * sizeof(cl_float), rows), NULL, &err);
    if (!stats)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate the backward's row statistics (%s)",
                            sparcl__cl_error_name(err));
    sparcl_status st = SPARCL_OK;
    pthread_mutex_lock(&t->lock);
    if (!t->entmax_bwd && (st = build(t, NULL, &t->entmax_bwd)) == SPARCL_OK)
        t->bwd_bytes = t->entmax_bwd->tiles.bytes;
    if (st == SPARCL_OK)
        st = enqueue(t, c, stats);
    pthread_mutex_unlock(&t->lock);
    clReleaseMemObject(stats); /* deferred by OpenCL until the kernels are done */
    return st;
}
