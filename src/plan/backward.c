/*
 * backward.c -- the backward pass of softmax attention over a tiled layout
 * (the fused softmax and dense path kinds): its lazily built resources
 * (parameters from the attn_bwd family, the tiling at the backward's own
 * tile and its column view, three kernels) and the dispatch of
 * attn_bwd_pre -> attn_bwd_dq, attn_bwd_dkv (ALGO=0) or
 * attn_bwd_pre -> attn_bwd_fused [-> attn_bwd_reduce when it adds into
 * partial buffers: uses_partials] (ALGO=1) (cl/attn_bwd.cl).
 *
 * The kernels read and write the plan's dtype (DTYPE, a build parameter
 * from the problem), so a half plan's backward runs without fp32 staging
 * (the kinds' half_backward, plan_api.h).
 *
 * The resources live in the kind's sparcl__tiled (t->bwd), created on the
 * first backward call or by sparcl_plan_prepare_backward(), under its lock.  Per call the
 * only allocations are the D workspace (one float per query row) and, for
 * ALGO=1 with SPLIT > 1, half storage or a write-only dq, the SPLIT
 * partial dQ buffers (fp32: the one pass adds into dQ across key tiles, a
 * half dq would be rounded at every addition, and a write-only one may not
 * be read), released right after
 * enqueueing: OpenCL keeps it alive until the kernels finish,
 * and a per-call buffer lets several threads run one plan at once.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_registry.h"
#include "plan/bwd_tiles.h"
#include "plan/kernel_build.h"
#include "plan/plan_tiles.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "tuning/tuning_lookup.h"

struct sparcl__plan_bwd {
    sparcl_params params;
    sparcl_param_source source;
    cl_kernel pre, dq, dkv; /* ALGO=1: dq is attn_bwd_fused, dkv attn_bwd_reduce */
    /* Row lists (dq), column lists (dkv), and the mask bits both index. */
    sparcl__bwd_tiles tiles;
    int wg_size, algo, split;
};

void sparcl__plan_bwd_free(struct sparcl__plan_bwd *b)
{
    if (!b)
        return;
    cl_kernel ks[3] = {b->pre, b->dq, b->dkv};
    for (int i = 0; i < 3; ++i)
        if (ks[i])
            clReleaseKernel(ks[i]);
    sparcl__bwd_tiles_release(&b->tiles);
    free(b);
}

size_t sparcl__plan_bwd_bytes(const struct sparcl__plan_bwd *b)
{
    return b ? b->tiles.bytes : 0;
}

void sparcl__plan_bwd_report(const struct sparcl__plan_bwd *b, sparcl_params *params,
                             sparcl_param_source *source)
{
    if (params)
        *params = b->params;
    if (source)
        *source = b->source;
}

sparcl_status sparcl__plan_bwd_create(const sparcl__plan_view *v, const sparcl__pset *ps,
                                      sparcl_param_source source, sparcl__bwd_tiles *tiles,
                                      struct sparcl__plan_bwd **out)
{
    *out = NULL;
    sparcl_ctx *ctx = v->ctx;
    const sparcl__kernel_schema *schema = &sparcl__schema_attn_bwd;
    const sparcl__problem prob = sparcl__problem_from_desc(&v->desc);
    struct sparcl__plan_bwd *b = calloc(1, sizeof *b);
    if (!b) {
        sparcl__bwd_tiles_release(tiles);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the backward");
    }
    b->tiles = *tiles;
    memset(tiles, 0, sizeof *tiles);
    sparcl__pset_to_params(schema, ps, &b->params);
    b->source = source;
    b->wg_size = ps->v[SPARCL__P_WG_SIZE];
    b->algo = ps->v[SPARCL__P_ALGO];
    b->split = ps->v[SPARCL__P_SPLIT];
    static const char *const names[2][3] = {{"attn_bwd_pre", "attn_bwd_dq", "attn_bwd_dkv"},
                                            {"attn_bwd_pre", "attn_bwd_fused", "attn_bwd_reduce"}};
    cl_kernel ks[3] = {NULL, NULL, NULL};
    sparcl_status st = sparcl__family_kernels(ctx, schema, &prob, ps, 3, names[b->algo == 1], ks);
    b->pre = ks[0];
    b->dq = ks[1];
    b->dkv = ks[2];
    if (st != SPARCL_OK) {
        sparcl__plan_bwd_free(b);
        return st;
    }
    *out = b;
    return SPARCL_OK;
}

/* Builds the backward resources from the checked parameters `ps` over the
 * plan's layout.  Caller holds t->lock. */
static sparcl_status build_with(sparcl__tiled *t, const sparcl__pset *ps,
                                sparcl_param_source source, struct sparcl__plan_bwd **out)
{
    *out = NULL;
    const sparcl__plan_view *v = t->view;
    sparcl__bwd_tiles tiles;
    sparcl_status st = sparcl__bwd_tiles_init(v->ctx, t->layout, &v->desc, ps->v[SPARCL__P_BLOCK_M],
                                              ps->v[SPARCL__P_BLOCK_N], &tiles);
    if (st != SPARCL_OK) {
        sparcl__bwd_tiles_release(&tiles);
        return st;
    }
    return sparcl__plan_bwd_create(v, ps, source, &tiles, out);
}

/* A built-in default with USE_LOCAL=1 that the device refused after all
 * (its compiler may count local memory beyond the schema's formula, or
 * report less than it allows) is built again without local memory; `st` is
 * the first build's status.  Forced and tuned parameters are not changed
 * here.  Caller holds t->lock. */
static sparcl_status refit(sparcl__tiled *t, sparcl__pset *ps, sparcl_param_source source,
                           sparcl_status st, struct sparcl__plan_bwd **out)
{
    if ((st != SPARCL_ERR_BUILD && st != SPARCL_ERR_NOT_SUPPORTED) ||
        source != SPARCL_PARAMS_DEFAULT || !ps->v[SPARCL__P_USE_LOCAL])
        return st;
    sparcl__log(t->view->ctx, SPARCL_LOG_WARNING,
                "the default backward parameters failed on this device (%s); retrying with "
                "USE_LOCAL=0",
                sparcl_ctx_errmsg(t->view->ctx));
    ps->v[SPARCL__P_USE_LOCAL] = 0;
    return build_with(t, ps, source, out);
}

/* Chooses the parameters as plans do (override, tuning databases, built-in
 * defaults; kernel_build.h) and builds.  Caller holds t->lock. */
static sparcl_status build(sparcl__tiled *t, const sparcl_params *override,
                           struct sparcl__plan_bwd **out)
{
    sparcl_ctx *ctx = t->view->ctx;
    sparcl_plan_desc d = t->view->desc;
    d.layout = t->layout; /* the lookup keys rows by pattern and density */
    d.params = override;
    sparcl__pset ps;
    sparcl_param_source source;
    char origin[SPARCL__ORIGIN_MAX];
    sparcl_status st = sparcl__family_choose(ctx, &sparcl__schema_attn_bwd, &d, 0, &ps, &source,
                                             origin, sizeof origin);
    if (st == SPARCL_OK)
        st = build_with(t, &ps, source, out);
    st = refit(t, &ps, source, st, out);
    if (st != SPARCL_OK && source == SPARCL_PARAMS_DATABASE) {
        /* A tuned row is a hint: if it cannot run here, the defaults can. */
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "tuned backward parameters from %s failed (%s); using the built-in defaults",
                    origin, sparcl_ctx_errmsg(ctx));
        st = sparcl__family_choose(ctx, &sparcl__schema_attn_bwd, &d, 1, &ps, &source, origin,
                                   sizeof origin);
        if (st == SPARCL_OK)
            st = build_with(t, &ps, SPARCL_PARAMS_DEFAULT, out);
        st = refit(t, &ps, SPARCL_PARAMS_DEFAULT, st, out);
    }
    return st;
}

sparcl_status sparcl__tiled_prepare_backward(void *state, const sparcl_params *override,
                                             sparcl_params *params, sparcl_param_source *source)
{
    sparcl__tiled *t = state;
    pthread_mutex_lock(&t->lock);
    sparcl_status st = SPARCL_OK;
    if (override || !t->bwd) {
        struct sparcl__plan_bwd *b;
        st = build(t, override, &b);
        if (st == SPARCL_OK) {
            sparcl__plan_bwd_free(t->bwd);
            t->bwd = b;
            t->bwd_bytes = sparcl__plan_bwd_bytes(b);
        }
    }
    if (st == SPARCL_OK && params)
        *params = t->bwd->params;
    if (st == SPARCL_OK && source)
        *source = t->bwd->source;
    pthread_mutex_unlock(&t->lock);
    return st;
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

/* Arguments of the main kernels: the tensors, the tile lists, the shapes,
 * the scale and the strides, then for attn_bwd_fused its dQ targets.  Only
 * the tensor list and the tile lists differ between attn_bwd_dq and the
 * key-tile kernels (attn_bwd_dkv, attn_bwd_fused). */
static cl_int set_main_args(const sparcl__plan_view *v, const struct sparcl__plan_bwd *b,
                            cl_kernel kn, const sparcl__bwd_call *a, cl_mem dsum,
                            const cl_mem *lists, int n_tiles, const cl_long *strides, int dkv)
{
    const sparcl_plan_desc *d = &v->desc;
    const cl_int group = d->q_heads / d->kv_heads;
    const cl_float scale = v->scale;
    const cl_mem mems[8] = {a->q, a->k, a->v, a->dout, a->lse, dsum, dkv ? a->dk : a->dq, a->dv};
    const int n_out = dkv ? 8 : 7;
    cl_uint at = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < n_out; ++i)
        err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &mems[i]);
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &lists[i]);
    err |= clSetKernelArg(kn, at++, sizeof(cl_mem), &b->tiles.mask_bits);
    const size_t sizes[7] = {sizeof(cl_int), sizeof(cl_int), sizeof(cl_int),  sizeof(cl_int),
                             sizeof(cl_int), sizeof(cl_int), sizeof(cl_float)};
    const void *const values[7] = {
        &d->q_len, &d->kv_len, &d->q_heads, &group, &b->tiles.layout_heads, &n_tiles, &scale};
    err |= set_args(kn, &at, 7, sizes, values);
    for (int s = 0; s < 12; ++s)
        err |= clSetKernelArg(kn, at++, sizeof(cl_long), &strides[s]);
    return err;
}

/* Whether kernels may read buffer m: not created CL_MEM_WRITE_ONLY (a
 * kernel's read of such a buffer is undefined; POCL allows it, oclgrind
 * reports it, GPUs may return anything). */
static int kernels_read(cl_mem m)
{
    cl_mem_flags f = 0;
    return clGetMemObjectInfo(m, CL_MEM_FLAGS, sizeof f, &f, NULL) == CL_SUCCESS &&
           !(f & CL_MEM_WRITE_ONLY);
}

/* Whether ALGO=1 adds dQ into fp32 partial buffers that attn_bwd_reduce
 * sums and rounds into dq: with SPLIT > 1, with half storage, and when
 * the caller's dq is write-only (adding in place reads it). */
static int uses_partials(const struct sparcl__plan_bwd *b, const sparcl_plan_desc *d, cl_mem dq)
{
    return b->algo == 1 && (b->split > 1 || d->dtype != SPARCL_DTYPE_F32 || !kernels_read(dq));
}

/* Where ALGO=1 adds dQ: dq itself (with q's strides) or, when the call
 * allocated them (`part`, uses_partials), the contiguous partial buffers,
 * `split` floats apart. */
typedef struct dq_target {
    cl_mem mem;
    cl_int n; /* targets the pre kernel zeroes */
    cl_long sb, sh, ss, split;
} dq_target;

static dq_target target_of(const struct sparcl__plan_bwd *b, const sparcl_plan_desc *d,
                           const sparcl__bwd_call *a, cl_mem part)
{
    dq_target z = {a->dq, 1, a->ts[0].batch, a->ts[0].head, a->ts[0].seq, 0};
    if (b->algo != 1)
        z.n = 0;
    else if (part) {
        z.mem = part;
        z.n = b->split;
        z.ss = d->head_dim;
        z.sh = z.ss * d->q_len;
        z.sb = z.sh * d->q_heads;
        z.split = z.sb * d->batch;
    }
    return z;
}

/* Enqueues the kernels.  `part`: the partial dQ buffers (uses_partials),
 * else NULL. */
static sparcl_status enqueue(const sparcl__plan_view *v, const struct sparcl__plan_bwd *b,
                             const sparcl__bwd_call *a, cl_mem dsum, cl_mem part)
{
    const sparcl_plan_desc *d = &v->desc;
    const sparcl__bwd_tiles *tl = &b->tiles;
    const sparcl_strides *ts = a->ts;
    cl_command_queue queue = a->queue;
    cl_long strides[12];
    for (int t = 0; t < 4; ++t) {
        strides[3 * t] = ts[t].batch;
        strides[3 * t + 1] = ts[t].head;
        strides[3 * t + 2] = ts[t].seq;
    }
    const int fused = b->algo == 1;
    const dq_target z = target_of(b, d, a, part);
    cl_uint at = 0;
    const size_t pre_sizes[14] = {
        sizeof(cl_mem),  sizeof(cl_mem),  sizeof(cl_mem),  sizeof(cl_mem),  sizeof(cl_int),
        sizeof(cl_int),  sizeof(cl_int),  sizeof(cl_long), sizeof(cl_long), sizeof(cl_long),
        sizeof(cl_long), sizeof(cl_long), sizeof(cl_long), sizeof(cl_long)};
    const void *const pre_values[14] = {
        &a->out,     &a->dout,     &dsum,        &z.mem, &z.n,  &d->q_len, &d->q_heads,
        &strides[9], &strides[10], &strides[11], &z.sb,  &z.sh, &z.ss,     &z.split};
    const cl_mem row_lists[3] = {tl->row_ptr, tl->row_col, tl->row_mask};
    const cl_mem col_lists[3] = {tl->col_ptr, tl->col_row, tl->col_mask};
    cl_int err = set_args(b->pre, &at, 14, pre_sizes, pre_values);
    if (!fused) {
        err |= set_main_args(v, b, b->dq, a, dsum, row_lists, tl->ntr, strides, 0);
        err |= set_main_args(v, b, b->dkv, a, dsum, col_lists, tl->ntc, strides, 1);
    } else {
        err |= set_main_args(v, b, b->dq, a, dsum, col_lists, tl->ntc, strides, 1);
        at = 31;
        const size_t sizes[5] = {sizeof(cl_mem), sizeof(cl_long), sizeof(cl_long), sizeof(cl_long),
                                 sizeof(cl_long)};
        const void *const values[5] = {&z.mem, &z.sb, &z.sh, &z.ss, &z.split};
        err |= set_args(b->dq, &at, 5, sizes, values);
        if (part) {
            at = 0;
            const cl_int nsplit = b->split;
            const size_t rsizes[9] = {sizeof(cl_mem),  sizeof(cl_mem),  sizeof(cl_int),
                                      sizeof(cl_int),  sizeof(cl_int),  sizeof(cl_long),
                                      sizeof(cl_long), sizeof(cl_long), sizeof(cl_long)};
            const void *const rvalues[9] = {&part,       &a->dq,      &nsplit,
                                            &d->q_len,   &d->q_heads, &z.split,
                                            &strides[0], &strides[1], &strides[2]};
            err |= set_args(b->dkv, &at, 9, rsizes, rvalues);
        }
    }
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(v->ctx, err, "clSetKernelArg(attn_bwd)");

    const size_t wg = (size_t)b->wg_size;
    const size_t rows_global[3] = {(size_t)d->q_len, (size_t)d->q_heads, (size_t)d->batch};
    const size_t dq_global[3] = {(size_t)tl->ntr * wg, (size_t)d->q_heads, (size_t)d->batch};
    const size_t dkv_global[3] = {(size_t)tl->ntc * wg, (size_t)d->kv_heads, (size_t)d->batch};
    const size_t fused_global[3] = {(size_t)b->split, (size_t)d->kv_heads, (size_t)d->batch};
    const size_t local[3] = {wg, 1, 1};
    cl_event ev_pre = NULL, ev_main[2] = {NULL, NULL};
    /* Explicit dependencies keep the order right on out-of-order queues. */
    err = clEnqueueNDRangeKernel(queue, b->pre, 3, NULL, rows_global, NULL, a->num_wait, a->wait,
                                 &ev_pre);
    int n_main = 0;
    if (err == CL_SUCCESS && !fused) {
        err = clEnqueueNDRangeKernel(queue, b->dq, 3, NULL, dq_global, local, 1, &ev_pre,
                                     &ev_main[n_main++]);
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(queue, b->dkv, 3, NULL, dkv_global, local, 1, &ev_pre,
                                         &ev_main[n_main++]);
    } else if (err == CL_SUCCESS) {
        err = clEnqueueNDRangeKernel(queue, b->dq, 3, NULL, fused_global, local, 1, &ev_pre,
                                     &ev_main[n_main++]);
        if (err == CL_SUCCESS && part) {
            cl_event ev_fused = ev_main[0];
            err = clEnqueueNDRangeKernel(queue, b->dkv, 3, NULL, rows_global, NULL, 1, &ev_fused,
                                         &ev_main[0]);
            clReleaseEvent(ev_fused);
            if (err != CL_SUCCESS)
                ev_main[0] = NULL;
        }
    }
    if (err == CL_SUCCESS && a->event)
        err = clEnqueueMarkerWithWaitList(queue, (cl_uint)n_main, ev_main, a->event);
    if (ev_pre)
        clReleaseEvent(ev_pre);
    for (int i = 0; i < 2; ++i)
        if (ev_main[i])
            clReleaseEvent(ev_main[i]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(v->ctx, err, "clEnqueueNDRangeKernel(attn_bwd)");
    return SPARCL_OK;
}

/* A per-call device buffer of `floats` floats; NULL with the failure on the
 * context. */
static cl_mem workspace(sparcl_ctx *ctx, size_t floats, const char *what)
{
    cl_int err;
    cl_mem m = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE,
                              sparcl__sat_mul(sizeof(cl_float), floats), NULL, &err);
    if (!m)
        sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the backward's %s (%s)", what,
                     sparcl__cl_error_name(err));
    return m;
}

sparcl_status sparcl__plan_bwd_enqueue(const sparcl__plan_view *v, const struct sparcl__plan_bwd *b,
                                       const sparcl__bwd_call *c)
{
    const sparcl_plan_desc *d = &v->desc;
    sparcl_ctx *ctx = v->ctx;
    /* Validated positive extents; an unaddressable size saturates to
     * SIZE_MAX, which clCreateBuffer refuses. */
    const size_t rows =
        sparcl__sat_mul(sparcl__sat_mul((size_t)d->batch, (size_t)d->q_heads), (size_t)d->q_len);
    cl_mem dsum = workspace(ctx, rows, "row workspace"), part = NULL;
    if (!dsum)
        return SPARCL_ERR_OUT_OF_MEMORY;
    sparcl_status st = SPARCL_OK;
    if (uses_partials(b, d, c->dq)) {
        size_t n = sparcl__sat_mul(sparcl__sat_mul(rows, (size_t)d->head_dim), (size_t)b->split);
        if (!(part = workspace(ctx, n, "partial dQ buffers")))
            st = SPARCL_ERR_OUT_OF_MEMORY;
    }
    if (st == SPARCL_OK)
        st = enqueue(v, b, c, dsum, part);
    clReleaseMemObject(dsum); /* deferred by OpenCL until the kernels are done */
    if (part)
        clReleaseMemObject(part);
    return st;
}

sparcl_status sparcl__tiled_backward(void *state, const sparcl__bwd_call *c)
{
    sparcl__tiled *t = state;
    sparcl_status st = SPARCL_OK;
    pthread_mutex_lock(&t->lock);
    if (!t->bwd && (st = build(t, NULL, &t->bwd)) == SPARCL_OK)
        t->bwd_bytes = sparcl__plan_bwd_bytes(t->bwd);
    if (st == SPARCL_OK)
        st = sparcl__plan_bwd_enqueue(t->view, t->bwd, c);
    pthread_mutex_unlock(&t->lock);
    return st;
}
