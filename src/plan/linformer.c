/*
 * linformer.c -- Linformer-style low-rank attention: keys and values are
 * projected along the sequence (K' = E K, V' = F V, E and F of proj_len x
 * kv_len) by CLBlast, then an inner plan runs ordinary dense attention with
 * the plan's normalization over the proj_len projected keys.  Reusing the
 * tiled kernels for that second step keeps one attention code path.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "plan/attention_kinds.h"
#include "plan/linformer.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "runtime/lowrank_draw.h"
#include "runtime/memory.h"

static void linformer_free(void *state)
{
    struct sparcl__linformer *l = state;
    if (!l)
        return;
    if (l->e)
        clReleaseMemObject(l->e);
    if (l->f)
        clReleaseMemObject(l->f);
    sparcl_plan_free(l->inner);
    free(l);
}

static size_t linformer_bytes(const void *state)
{
    const struct sparcl__linformer *l = state;
    return l->bytes + sparcl_plan_device_bytes(l->inner);
}

/* Writes host E and F (either may be NULL: kept) into the plan's buffers
 * (blocking). */
static sparcl_status write_projections(struct sparcl__linformer *l, const float *e, const float *f)
{
    sparcl_ctx *ctx = l->view->ctx;
    const size_t bytes = l->bytes / 2;
    cl_int err = CL_SUCCESS;
    if (e)
        err = clEnqueueWriteBuffer(ctx->queue, l->e, CL_TRUE, 0, bytes, e, 0, NULL, NULL);
    if (f && err == CL_SUCCESS)
        err = clEnqueueWriteBuffer(ctx->queue, l->f, CL_TRUE, 0, bytes, f, 0, NULL, NULL);
    return err == CL_SUCCESS ? SPARCL_OK : sparcl__fail_cl(ctx, err, "clEnqueueWriteBuffer");
}

SPARCL_API sparcl_status sparcl_plan_write_projections(sparcl_plan *p, const float *e,
                                                       const float *f)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    struct sparcl__linformer *l = sparcl__plan_state(p, &sparcl__kind_linformer);
    if (!l)
        return sparcl__fail(sparcl__plan_view_of(p)->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "not a Linformer plan");
    return write_projections(l, e, f);
}

static sparcl_status linformer_redraw(void *state, uint64_t seed)
{
    struct sparcl__linformer *l = state;
    const sparcl_plan_desc *d = &l->view->desc;
    const size_t n = (size_t)d->proj_len * (size_t)d->kv_len;
    float *e = malloc(sizeof *e * n), *f = malloc(sizeof *f * n);
    sparcl_status st;
    if (!e || !f) {
        st = sparcl__fail(l->view->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                          "cannot allocate %zu floats for E, F", 2 * n);
    } else {
        sparcl__linformer_draw(e, f, n, d->proj_len, seed);
        st = write_projections(l, e, f);
    }
    free(e);
    free(f);
    return st;
}

static sparcl_status linformer_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                      sparcl__pset *params, sparcl__plan_report *report,
                                      void **state)
{
    (void)params;
    sparcl_ctx *ctx = v->ctx;
    struct sparcl__linformer *l = calloc(1, sizeof *l);
    if (!l)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a Linformer plan");
    l->view = v;
    /* E and F, on the device and (seeded) drawn on the host first. */
    const size_t ef = sparcl__sat_mul(sparcl__sat_mul(2 * sizeof(float), (size_t)desc->proj_len),
                                      (size_t)desc->kv_len);
    sparcl_status st;
    if ((st = sparcl__mem_check_host(ctx, "the Linformer projections E and F", ef)) != SPARCL_OK ||
        (st = sparcl__mem_check_device(ctx, "the Linformer projections E and F", ef)) != SPARCL_OK)
        goto fail;
    sparcl_plan_desc in = *desc;
    in.attention = SPARCL_ATTENTION_EXACT;
    in.kv_len = desc->proj_len;
    in.k_strides = in.v_strides = (sparcl_strides){0, 0, 0};
    in.proj_e = in.proj_f = NULL;
    if ((st = sparcl_plan_init(ctx, &l->inner, &in)) != SPARCL_OK)
        goto fail;
    sparcl_plan_params(l->inner, &report->params, &report->source);
    snprintf(report->origin, sizeof report->origin, "%s", sparcl_plan_params_origin(l->inner));
    const size_t bytes = sizeof(float) * (size_t)desc->proj_len * (size_t)desc->kv_len;
    if ((st = sparcl__scratch(ctx, &l->e, bytes, "Linformer E")) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, &l->f, bytes, "Linformer F")) != SPARCL_OK)
        goto fail;
    l->bytes = 2 * bytes;
    if (desc->proj_e && desc->proj_f)
        st = write_projections(l, desc->proj_e, desc->proj_f);
    else if (desc->proj_e || desc->proj_f)
        st = sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                          "give both proj_e and proj_f, or neither for seeded ones");
    else
        st = linformer_redraw(l, desc->seed);
    if (st != SPARCL_OK)
        goto fail;
    sparcl__gemm_note_use(ctx);
    *state = l;
    return SPARCL_OK;
fail:
    linformer_free(l);
    return st;
}

SPARCL_API sparcl_status sparcl_plan_read_projections(sparcl_plan *p, float *e, float *f)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "plan is NULL");
    sparcl_ctx *ctx = sparcl__plan_view_of(p)->ctx;
    const struct sparcl__linformer *l = sparcl__plan_state(p, &sparcl__kind_linformer);
    if (!l)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "not a Linformer plan");
    const size_t bytes = l->bytes / 2;
    cl_int err = CL_SUCCESS;
    if (e)
        err = clEnqueueReadBuffer(ctx->queue, l->e, CL_TRUE, 0, bytes, e, 0, NULL, NULL);
    if (f && err == CL_SUCCESS)
        err = clEnqueueReadBuffer(ctx->queue, l->f, CL_TRUE, 0, bytes, f, 0, NULL, NULL);
    return err == CL_SUCCESS ? SPARCL_OK : sparcl__fail_cl(ctx, err, "clEnqueueReadBuffer");
}

sparcl_status sparcl__linformer_project(struct sparcl__linformer *l, cl_command_queue queue,
                                        const sparcl_strides *ts, cl_mem k, cl_mem v, cl_mem *kp,
                                        cl_mem *vp, sparcl_strides *packed)
{
    const sparcl_plan_desc *d = &l->view->desc;
    sparcl_ctx *ctx = l->view->ctx;
    /* The plan validated every extent positive.  The scratch size
     * saturates, so a shape too large to address is refused by
     * sparcl__scratch and the offsets below stay inside the buffers. */
    const size_t proj = (size_t)d->proj_len, dim = (size_t)d->head_dim, kv = (size_t)d->kv_len;
    const size_t kv_heads = (size_t)d->kv_heads;
    const size_t kd = proj * dim;
    const size_t bytes =
        sparcl__sat_mul(sparcl__sat_mul(sizeof(float) * kd, (size_t)d->batch), kv_heads);
    *packed = (sparcl_strides){(int64_t)d->kv_heads * (int64_t)kd, (int64_t)kd, d->head_dim};
    sparcl_status st;
    if ((st = sparcl__scratch(ctx, kp, bytes, "projected keys")) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, vp, bytes, "projected values")) != SPARCL_OK)
        return st;
    for (int b = 0; b < d->batch && st == SPARCL_OK; ++b)
        for (int h = 0; h < d->kv_heads && st == SPARCL_OK; ++h) {
            const size_t dst = ((size_t)b * kv_heads + (size_t)h) * kd;
            const sparcl__mat e = {l->e, 0, kv, 0};
            const sparcl__mat f = {l->f, 0, kv, 0};
            const sparcl__mat kin = {k, (size_t)(b * ts[1].batch + h * ts[1].head),
                                     (size_t)ts[1].seq, 0};
            const sparcl__mat vin = {v, (size_t)(b * ts[2].batch + h * ts[2].head),
                                     (size_t)ts[2].seq, 0};
            const sparcl__mat kout = {*kp, dst, dim, 0};
            const sparcl__mat vout = {*vp, dst, dim, 0};
            st = sparcl__gemm(ctx, queue, proj, dim, kv, 1.0f, e, kin, 0.0f, kout);
            if (st == SPARCL_OK)
                st = sparcl__gemm(ctx, queue, proj, dim, kv, 1.0f, f, vin, 0.0f, vout);
        }
    return st;
}

static sparcl_status linformer_forward(void *state, const sparcl__fwd_call *c)
{
    struct sparcl__linformer *l = state;
    const sparcl_strides *ts = c->ts;
    cl_mem kp = NULL, vp = NULL;
    sparcl_strides packed;
    sparcl_status st;
    if ((st = sparcl__queue_wait(l->view->ctx, c->queue, c->num_wait, c->wait)) != SPARCL_OK ||
        (st = sparcl__linformer_project(l, c->queue, ts, c->k, c->v, &kp, &vp, &packed)) !=
            SPARCL_OK)
        goto done;
    const sparcl_strides inner_ts[4] = {ts[0], packed, packed, ts[3]};
    st = sparcl__plan_forward_strided(l->inner, c->queue, inner_ts, c->q, kp, vp, c->out, c->lse, 0,
                                      NULL, c->event);
done:
    if (kp)
        clReleaseMemObject(kp);
    if (vp)
        clReleaseMemObject(vp);
    return st;
}

const sparcl__kind_ops sparcl__kind_linformer = {
    .name = "Linformer",
    .create = linformer_create,
    .forward = linformer_forward,
    .prepare_backward = sparcl__linformer_prepare_backward,
    .backward = sparcl__linformer_backward,
    .proj_grads = 1,
    .redraw = linformer_redraw,
    .device_bytes = linformer_bytes,
    .free = linformer_free,
};
