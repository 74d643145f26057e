/*
 * plan_tiles.c -- the tiled layout shared by the kinds that walk a layout
 * (see plan_tiles.h).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layout/layout.h"
#include "layout/tiling.h"
#include "plan/plan.h"
#include "plan/plan_tiles.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/memory.h"

/* A read-only buffer of `bytes` of `data`: in place (CL_MEM_USE_HOST_PTR)
 * when `in_place` is non-NULL, the device shares host memory and data is
 * aligned for it (then *in_place = 1 and data must outlive the buffer),
 * else a copy (*in_place = 0). */
static sparcl_status upload(sparcl_ctx *ctx, cl_mem *out, const void *data, size_t bytes,
                            size_t *counted, int *in_place)
{
    static const int32_t zero = 0;
    if (bytes == 0) { /* OpenCL forbids empty buffers; keep a valid dummy */
        data = &zero;
        bytes = sizeof zero;
    }
    const size_t align = ctx->limits.base_align > 0 ? ctx->limits.base_align : 128;
    const int share = in_place && data != (const void *)&zero && ctx->limits.host_unified &&
                      (uintptr_t)data % align == 0;
    if (in_place)
        *in_place = share;
    if (bytes > ctx->limits.max_alloc)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "the tiled layout needs %zu bytes; the device's largest allocation "
                            "is %llu",
                            bytes, (unsigned long long)ctx->limits.max_alloc);
    sparcl_status st = sparcl__mem_check_device(ctx, "the plan's tiled layout",
                                                sparcl__sat_add(*counted, bytes));
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    *out = clCreateBuffer(ctx->context,
                          CL_MEM_READ_ONLY | (share ? CL_MEM_USE_HOST_PTR : CL_MEM_COPY_HOST_PTR),
                          bytes, (void *)data, &err);
    if (!*out)
        return err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
                       err == CL_OUT_OF_HOST_MEMORY
                   ? sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                  "cannot allocate %zu bytes for the layout on the device", bytes)
                   : sparcl__fail_cl(ctx, err, "clCreateBuffer");
    *counted += bytes;
    return SPARCL_OK;
}

sparcl_status sparcl__upload(sparcl_ctx *ctx, cl_mem *out, const void *data, size_t bytes,
                             size_t *counted)
{
    return upload(ctx, out, data, bytes, counted, NULL);
}

/* o's tile arrays on the host, into *view: those o keeps in place, the
 * others read back from its buffers into *held (the caller frees held).
 * 0 when o has no host layout to compare with, or a read fails (then
 * nothing is copied: the build starts from scratch). */
static int prev_arrays(sparcl_ctx *ctx, const sparcl__tiled *o, sparcl__tiling *view,
                       sparcl__tiling *held)
{
    const sparcl__tiling *k = &o->in_place;
    *view = *k;
    memset(held, 0, sizeof *held);
    if (!o->layout)
        return 0;
    void **in_view[4] = {(void **)&view->ptr, (void **)&view->col, (void **)&view->mask,
                         (void **)&view->bits};
    void **read[4] = {(void **)&held->ptr, (void **)&held->col, (void **)&held->mask,
                      (void **)&held->bits};
    const cl_mem bufs[4] = {o->tile_ptr, o->tile_col, o->tile_mask, o->mask_bits};
    const size_t bytes[4] = {sizeof *k->ptr * (size_t)k->heads * (size_t)(k->ntr + 1),
                             sizeof *k->col * (size_t)k->nnz, sizeof *k->mask * (size_t)k->nnz,
                             sizeof *k->bits * (size_t)k->n_masks * (size_t)k->tm * (size_t)k->mw};
    for (int i = 0; i < 4; ++i) {
        if (*in_view[i] || bytes[i] == 0)
            continue; /* kept in place, or empty */
        if (!(*read[i] = malloc(bytes[i])) ||
            clEnqueueReadBuffer(ctx->queue, bufs[i], CL_TRUE, 0, bytes[i], *read[i], 0, NULL,
                                NULL) != CL_SUCCESS)
            return 0;
        *in_view[i] = *read[i];
    }
    return 1;
}

sparcl_status sparcl__tiled_init(sparcl__tiled *t, const sparcl__plan_view *v,
                                 const sparcl_layout *layout, const struct sparcl_plan *previous,
                                 const sparcl__pset *p)
{
    sparcl_ctx *ctx = v->ctx;
    const sparcl_plan_desc *d = &v->desc;
    t->view = v;
    pthread_mutex_init(&t->lock, NULL);
    t->block_m = p->v[SPARCL__P_BLOCK_M];
    t->block_n = p->v[SPARCL__P_BLOCK_N];
    t->wg_size = p->v[SPARCL__P_WG_SIZE];
    sparcl__tiling g, view, held = {0};
    const sparcl__tiled *o = sparcl__plan_tiled(previous);
    const sparcl__tiling *prev_tiling =
        o && layout && o->block_m == t->block_m && o->block_n == t->block_n &&
                prev_arrays(ctx, o, &view, &held)
            ? &view
            : NULL;
    const sparcl_plan_desc *od = o ? &o->view->desc : NULL;
    const sparcl__tiling_prev prev = {o ? o->layout : NULL, od ? od->q_len : 0, od ? od->kv_len : 0,
                                      od ? od->causal : 0, prev_tiling};
    sparcl_status st =
        sparcl__tiling_build_from(ctx, layout, d->q_len, d->kv_len, d->causal, t->block_m,
                                  t->block_n, prev_tiling ? &prev : NULL, &g);
    sparcl__tiling_free(&held);
    if (st != SPARCL_OK)
        return st;
    t->layout_heads = g.heads;
    t->n_tile_rows = g.ntr;
    size_t *n = &t->bytes;
    /* The built tiling's counts: non-negative, sizes of arrays it holds.
     * An array the device takes in place stays, the others are freed. */
    const size_t row_ptrs = (size_t)g.heads * (size_t)(g.ntr + 1);
    void **arrays[4] = {(void **)&g.ptr, (void **)&g.col, (void **)&g.mask, (void **)&g.bits};
    const size_t bytes[4] = {sizeof *g.ptr * row_ptrs, sizeof *g.col * (size_t)g.nnz,
                             sizeof *g.mask * (size_t)g.nnz,
                             sizeof *g.bits * (size_t)g.n_masks * (size_t)g.tm * (size_t)g.mw};
    cl_mem *bufs[4] = {&t->tile_ptr, &t->tile_col, &t->tile_mask, &t->mask_bits};
    for (int i = 0; i < 4; ++i) {
        int kept = 0;
        st = upload(ctx, bufs[i], *arrays[i], bytes[i], n, &kept);
        if (st != SPARCL_OK) {
            sparcl__tiling_free(&g);
            return st;
        }
        if (!kept) {
            free(*arrays[i]);
            *arrays[i] = NULL;
        }
    }
    t->in_place = g; /* what is left: the arrays the buffers use */
    return layout ? sparcl__layout_copy(ctx, layout, &t->layout) : SPARCL_OK;
}

void sparcl__tiled_init_external(sparcl__tiled *t, const sparcl__plan_view *v,
                                 const sparcl__pset *p, const cl_mem bufs[4], int layout_heads,
                                 int n_tile_rows)
{
    t->view = v;
    pthread_mutex_init(&t->lock, NULL);
    t->block_m = p->v[SPARCL__P_BLOCK_M];
    t->block_n = p->v[SPARCL__P_BLOCK_N];
    t->wg_size = p->v[SPARCL__P_WG_SIZE];
    t->layout_heads = layout_heads;
    t->n_tile_rows = n_tile_rows;
    cl_mem *mine[4] = {&t->tile_ptr, &t->tile_col, &t->tile_mask, &t->mask_bits};
    for (int i = 0; i < 4; ++i) {
        clRetainMemObject(bufs[i]);
        *mine[i] = bufs[i];
    }
}

void sparcl__tiled_release(sparcl__tiled *t)
{
    if (!t->view)
        return;
    if (t->last)
        clReleaseEvent(t->last);
    cl_mem mems[4] = {t->tile_ptr, t->tile_col, t->tile_mask, t->mask_bits};
    for (int i = 0; i < 4; ++i)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    sparcl__plan_bwd_free(t->bwd);
    sparcl__entmax_bwd_free(t->entmax_bwd);
    sparcl__tiling_free(&t->in_place); /* after the buffers that use it */
    sparcl_layout_free(t->layout);
    pthread_mutex_destroy(&t->lock);
}

size_t sparcl__tiled_bytes(const sparcl__tiled *t)
{
    return t->bytes + t->bwd_bytes;
}

cl_int sparcl__tiled_set_layout_args(const sparcl__tiled *t, cl_kernel kn, cl_uint *a)
{
    const sparcl_plan_desc *d = &t->view->desc;
    const cl_int group = d->q_heads / d->kv_heads;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &t->tile_ptr);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &t->tile_col);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &t->tile_mask);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_mem), &t->mask_bits);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &d->q_len);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &d->kv_len);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &d->q_heads);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &group);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &t->layout_heads);
    err |= clSetKernelArg(kn, (*a)++, sizeof(cl_int), &t->n_tile_rows);
    return err;
}

cl_event *sparcl__tiled_wait_list(const sparcl__tiled *t, cl_uint num_wait, const cl_event *wait,
                                  cl_uint *n)
{
    cl_event *all = malloc(sizeof *all * (num_wait + 1));
    if (!all)
        return NULL;
    for (*n = 0; *n < num_wait; ++*n)
        all[*n] = wait[*n];
    if (t->last)
        all[(*n)++] = t->last;
    return all;
}

void sparcl__tiled_set_last(sparcl__tiled *t, cl_event ev)
{
    if (t->last)
        clReleaseEvent(t->last);
    if (ev)
        clRetainEvent(ev);
    t->last = ev;
}
