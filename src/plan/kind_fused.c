/*
 * kind_fused.c -- the attention kinds run by one fused kernel over the tiled
 * layout: softmax (attn_fwd, with its K packing kernel when KT=1) and the
 * sparse normalizations sparsemax / alpha-entmax (attn_entmax).  They share
 * the state and the launch; they differ in family, in entmax's alpha
 * argument, and in the backward (backward.c for softmax, backward_entmax.c
 * for the sparse normalizations).
 */
#include <stdlib.h>

#include "plan/attention_kinds.h"
#include "kernels/params.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "plan/kernel_build.h"
#include "kernels/kernel_registry.h"
#include "runtime/memory.h"
#include "plan/kind_fused.h"
#include "plan/plan_tiles.h"

typedef struct fused {
    sparcl__tiled t; /* first: the backward entries take the state as one */
    cl_kernel kernel;
    /* KT=1: attn_fwd_pack_k fills `workspace` with K packed per tile before
     * each call.  Calls share the workspace, so each one's pack waits for
     * the previous call (t.last), whatever the queue's ordering. */
    cl_kernel pack_kernel;
    cl_mem workspace;
    size_t workspace_bytes;
    int norm;    /* attn_entmax's NORM; 0 for softmax */
    float alpha; /* entmax alpha when norm != 0 */
} fused;

static void fused_free(void *state)
{
    fused *f = state;
    if (!f)
        return;
    if (f->kernel)
        clReleaseKernel(f->kernel);
    if (f->pack_kernel)
        clReleaseKernel(f->pack_kernel);
    if (f->workspace)
        clReleaseMemObject(f->workspace);
    sparcl__tiled_release(&f->t);
    free(f);
}

static size_t fused_bytes(const void *state)
{
    const fused *f = state;
    return sparcl__tiled_bytes(&f->t) + f->workspace_bytes;
}

/* The tiled layout, the family's kernel and, for attn_fwd with KT=1, the K
 * packing kernel and its workspace. */
static sparcl_status create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                            const sparcl__kernel_schema *family, const sparcl__pset *params,
                            const sparcl__fused_tiles *ext, void **state)
{
    sparcl_ctx *ctx = v->ctx;
    fused *f = calloc(1, sizeof *f);
    if (!f)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a plan");
    f->norm = sparcl__entmax_norm(desc, &f->alpha);
    const sparcl__problem prob = sparcl__problem_from_desc(desc);
    const size_t ws =
        family == &sparcl__schema_attn_fwd ? sparcl__attn_fwd_workspace_bytes(params, &prob) : 0;
    const char *names[2] = {family->programs[0].kernels[0].name, "attn_fwd_pack_k"};
    cl_kernel ks[2] = {NULL, NULL};
    sparcl_status st = SPARCL_OK;
    if (ext)
        sparcl__tiled_init_external(&f->t, v, params, ext->bufs, ext->layout_heads,
                                    ext->n_tile_rows);
    else
        st = sparcl__tiled_init(&f->t, v, desc->layout, desc->previous, params);
    if (st == SPARCL_OK && ws)
        st = sparcl__mem_check_device(ctx, "the plan with its packed-K workspace (KT=1)",
                                      sparcl__sat_add(sparcl__tiled_bytes(&f->t), ws));
    if (st == SPARCL_OK)
        st = sparcl__family_kernels(ctx, family, &prob, params, ws ? 2 : 1, names, ks);
    f->kernel = ks[0];
    f->pack_kernel = ks[1];
    if (st == SPARCL_OK && ws) {
        cl_int err;
        f->workspace = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, ws, NULL, &err);
        if (!f->workspace)
            st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                              "cannot allocate the %zu-byte packed-K workspace (KT=1): %s", ws,
                              sparcl__cl_error_name(err));
        else
            f->workspace_bytes = ws;
    }
    if (st != SPARCL_OK) {
        fused_free(f);
        return st;
    }
    *state = f;
    return SPARCL_OK;
}

/* Softmax builds attn_fwd, the sparse normalizations attn_entmax. */
static sparcl_status fused_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                  sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    (void)report;
    float alpha;
    const sparcl__kernel_schema *family =
        sparcl__entmax_norm(desc, &alpha) ? &sparcl__schema_attn_entmax : &sparcl__schema_attn_fwd;
    return create(v, desc, family, params, NULL, state);
}

sparcl_status sparcl__fused_create_external(const sparcl__plan_view *v, const sparcl__pset *params,
                                           const sparcl__fused_tiles *tiles, void **state)
{
    return create(v, &v->desc, &sparcl__schema_attn_fwd, params, tiles, state);
}

/* Enqueues attn_fwd_pack_k (KT=1): K into the workspace, after the caller's
 * wait list and the previous call that read the workspace (on whichever
 * queue it ran).  Called with the lock held. */
static sparcl_status enqueue_pack(fused *f, const sparcl__fwd_call *c, cl_event *out)
{
    const sparcl__plan_view *v = f->t.view;
    const sparcl_plan_desc *d = &v->desc;
    const cl_int n_tiles = (d->kv_len + f->t.block_n - 1) / f->t.block_n;
    const cl_long strides[3] = {c->ts[1].batch, c->ts[1].head, c->ts[1].seq};
    cl_kernel kn = f->pack_kernel;
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &c->k);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &f->workspace);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &d->kv_len);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &d->kv_heads);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &n_tiles);
    for (int s = 0; s < 3; ++s)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[s]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(v->ctx, err, "clSetKernelArg(attn_fwd_pack_k)");
    cl_uint n;
    cl_event *all = sparcl__tiled_wait_list(&f->t, c->num_wait, c->wait, &n);
    if (!all)
        return sparcl__fail(v->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
    size_t global[3] = {(size_t)n_tiles, (size_t)d->kv_heads, (size_t)d->batch};
    err = clEnqueueNDRangeKernel(c->queue, kn, 3, NULL, global, NULL, n, n ? all : NULL, out);
    free(all);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(v->ctx, err, "clEnqueueNDRangeKernel(attn_fwd_pack_k)");
    return SPARCL_OK;
}

/* The fused kernel's arguments: tensors, tiled layout, scale, strides and,
 * for attn_entmax, alpha last. */
static cl_int set_args(const fused *f, const sparcl__fwd_call *c, cl_mem kin)
{
    const sparcl__plan_view *v = f->t.view;
    const cl_int write_lse = c->lse != NULL;
    const cl_float scale_log2 = v->scale * (cl_float)CL_M_LOG2E;
    cl_long strides[12];
    for (int t = 0; t < 4; ++t) {
        strides[3 * t] = c->ts[t].batch;
        strides[3 * t + 1] = c->ts[t].head;
        strides[3 * t + 2] = c->ts[t].seq;
    }
    cl_kernel kn = f->kernel;
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &c->q);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &kin);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &c->v);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &c->out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), c->lse ? &c->lse : &c->out);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &write_lse);
    err |= sparcl__tiled_set_layout_args(&f->t, kn, &a);
    err |= clSetKernelArg(kn, a++, sizeof(cl_float), &scale_log2);
    for (int s = 0; s < 12; ++s)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[s]);
    if (f->norm)
        err |= clSetKernelArg(kn, a++, sizeof(cl_float), &f->alpha);
    return err;
}

static sparcl_status fused_forward(void *state, const sparcl__fwd_call *c)
{
    fused *f = state;
    const sparcl__plan_view *v = f->t.view;
    const sparcl_plan_desc *d = &v->desc;
    sparcl_status st = SPARCL_OK;
    pthread_mutex_lock(&f->t.lock);
    cl_event pack_ev = NULL;
    if (f->pack_kernel && (st = enqueue_pack(f, c, &pack_ev)) != SPARCL_OK) {
        pthread_mutex_unlock(&f->t.lock);
        return st;
    }
    cl_int err = set_args(f, c, f->pack_kernel ? f->workspace : c->k);
    cl_event ev = NULL;
    if (err == CL_SUCCESS) {
        const size_t wg = (size_t)f->t.wg_size;
        size_t local[3] = {wg, 1, 1};
        size_t global[3] = {(size_t)f->t.n_tile_rows * wg, (size_t)d->q_heads, (size_t)d->batch};
        err = pack_ev ? clEnqueueNDRangeKernel(c->queue, f->kernel, 3, NULL, global, local, 1,
                                               &pack_ev, &ev)
                      : clEnqueueNDRangeKernel(c->queue, f->kernel, 3, NULL, global, local,
                                               c->num_wait, c->wait, &ev);
        if (err != CL_SUCCESS)
            st = sparcl__fail_cl(v->ctx, err, "clEnqueueNDRangeKernel(attn_fwd)");
    } else {
        st = sparcl__fail_cl(v->ctx, err, "clSetKernelArg(attn_fwd)");
    }
    if (pack_ev)
        clReleaseEvent(pack_ev);
    if (ev && f->pack_kernel)
        sparcl__tiled_set_last(&f->t, ev);
    pthread_mutex_unlock(&f->t.lock);
    if (ev && c->event)
        *c->event = ev;
    else if (ev)
        clReleaseEvent(ev);
    return st;
}

const sparcl__kind_ops sparcl__kind_fused = {
    .name = "fused softmax",
    .family = &sparcl__schema_attn_fwd,
    .create = fused_create,
    .forward = fused_forward,
    .prepare_backward = sparcl__tiled_prepare_backward,
    .backward = sparcl__tiled_backward,
    .half_forward = 1,
    .half_backward = 1,
    .tiled = 1,
    .device_bytes = fused_bytes,
    .free = fused_free,
};

/* The normalization's name, for messages. */
static const char *entmax_label(const void *state)
{
    const fused *f = state;
    return f->norm == 1 ? "sparsemax" : f->norm == 2 ? "1.5-entmax" : "alpha-entmax";
}

const sparcl__kind_ops sparcl__kind_entmax = {
    .name = "sparse normalization (entmax)",
    .label = entmax_label,
    .family = &sparcl__schema_attn_entmax,
    .create = fused_create,
    .forward = fused_forward,
    .prepare_backward = sparcl__entmax_prepare_backward,
    .backward = sparcl__entmax_backward,
    .half_forward = 1,
    .half_backward = 1, /* attn_entmax_bwd reads and writes DTYPE */
    .tiled = 1,
    .device_bytes = fused_bytes,
    .free = fused_free,
};
