/*
 * linformer_backward.c -- the backward pass of Linformer plans.  The
 * forward is K' = E K, V' = F V, then the inner plan's attention of q over
 * (K', V'); so the inner plan's backward (whatever its kind, through the
 * plan API) gives dQ, dK', dV', and CLBlast products finish the chain per
 * batch and kv head:
 *   dK = E^T dK',  dV = F^T dV',
 *   dE = sum over (batch, kv head) of dK' K^T,  dF = sum of dV' V^T
 * (the sums in a fixed order, beta 1 after the first).  K' and V' are
 * recomputed; dK' and dV' are per-call scratch of B x kv_heads x proj_len
 * x D floats each.
 */
#include "plan/linformer.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"

sparcl_status sparcl__linformer_prepare_backward(void *state, const sparcl_params *override,
                                                 sparcl_params *params, sparcl_param_source *source)
{
    struct sparcl__linformer *l = state;
    sparcl_status st = SPARCL_OK;
    if (override)
        st = sparcl_plan_prepare_backward(l->inner, override);
    if (st == SPARCL_OK)
        st = sparcl_plan_backward_params(l->inner, params, source);
    return st;
}

/* dK = E^T dK' and dV = F^T dV' into the caller's strided dk and dv; dE and
 * dF (when wanted) summed over batch and kv heads. */
static sparcl_status chain(struct sparcl__linformer *l, const sparcl__bwd_call *c, cl_mem dkp,
                           cl_mem dvp)
{
    const sparcl_plan_desc *d = &l->view->desc;
    sparcl_ctx *ctx = l->view->ctx;
    const size_t proj = (size_t)d->proj_len, dim = (size_t)d->head_dim, kv = (size_t)d->kv_len;
    const size_t kd = proj * dim;
    const sparcl_strides *ts = c->ts;
    sparcl_status st = SPARCL_OK;
    for (int b = 0; b < d->batch && st == SPARCL_OK; ++b)
        for (int h = 0; h < d->kv_heads && st == SPARCL_OK; ++h) {
            const int first = b == 0 && h == 0;
            const size_t src = ((size_t)b * (size_t)d->kv_heads + (size_t)h) * kd;
            const size_t koff = (size_t)(b * ts[1].batch + h * ts[1].head);
            const size_t voff = (size_t)(b * ts[2].batch + h * ts[2].head);
            const sparcl__mat dk_p = {dkp, src, dim, 0}, dv_p = {dvp, src, dim, 0};
            st = sparcl__gemm(ctx, c->queue, kv, dim, proj, 1.0f, (sparcl__mat){l->e, 0, kv, 1},
                              dk_p, 0.0f, (sparcl__mat){c->dk, koff, (size_t)ts[1].seq, 0});
            if (st == SPARCL_OK)
                st = sparcl__gemm(ctx, c->queue, kv, dim, proj, 1.0f, (sparcl__mat){l->f, 0, kv, 1},
                                  dv_p, 0.0f, (sparcl__mat){c->dv, voff, (size_t)ts[2].seq, 0});
            if (st == SPARCL_OK && c->dproj_e)
                st = sparcl__gemm(ctx, c->queue, proj, kv, dim, 1.0f, dk_p,
                                  (sparcl__mat){c->k, koff, (size_t)ts[1].seq, 1},
                                  first ? 0.0f : 1.0f, (sparcl__mat){c->dproj_e, 0, kv, 0});
            if (st == SPARCL_OK && c->dproj_f)
                st = sparcl__gemm(ctx, c->queue, proj, kv, dim, 1.0f, dv_p,
                                  (sparcl__mat){c->v, voff, (size_t)ts[2].seq, 1},
                                  first ? 0.0f : 1.0f, (sparcl__mat){c->dproj_f, 0, kv, 0});
        }
    return st;
}

sparcl_status sparcl__linformer_backward(void *state, const sparcl__bwd_call *c)
{
    struct sparcl__linformer *l = state;
    sparcl_ctx *ctx = l->view->ctx;
    const sparcl_plan_desc *d = &l->view->desc;
    cl_mem kp = NULL, vp = NULL, dkp = NULL, dvp = NULL;
    sparcl_strides packed;
    /* The same saturating size as the projections (linformer.c). */
    const size_t bytes =
        sparcl__sat_mul(sparcl__sat_mul(sizeof(float) * (size_t)d->proj_len * (size_t)d->head_dim,
                                        (size_t)d->batch),
                        (size_t)d->kv_heads);
    sparcl_status st;
    if ((st = sparcl__queue_wait(ctx, c->queue, c->num_wait, c->wait)) != SPARCL_OK ||
        (st = sparcl__linformer_project(l, c->queue, c->ts, c->k, c->v, &kp, &vp, &packed)) !=
            SPARCL_OK ||
        (st = sparcl__scratch(ctx, &dkp, bytes, "gradient of the projected keys")) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, &dvp, bytes, "gradient of the projected values")) != SPARCL_OK)
        goto done;
    const sparcl_strides inner_ts[4] = {c->ts[0], packed, packed, c->ts[3]};
    if ((st = sparcl__plan_backward_strided(l->inner, c->queue, inner_ts, c->q, kp, vp, c->out,
                                            c->lse, c->dout, c->dq, dkp, dvp, 0, NULL, NULL)) !=
            SPARCL_OK ||
        (st = chain(l, c, dkp, dvp)) != SPARCL_OK)
        goto done;
    if (c->event) {
        /* On the in-order queue a marker completes after everything above. */
        cl_int err = clEnqueueMarkerWithWaitList(c->queue, 0, NULL, c->event);
        if (err != CL_SUCCESS)
            st = sparcl__fail_cl(ctx, err, "clEnqueueMarkerWithWaitList");
    }
done:
    if (kp)
        clReleaseMemObject(kp);
    if (vp)
        clReleaseMemObject(vp);
    if (dkp)
        clReleaseMemObject(dkp);
    if (dvp)
        clReleaseMemObject(dvp);
    return st;
}
