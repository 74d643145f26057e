/*
 * favor_backward.c -- the backward pass of FAVOR+ plans (dQ, dK, dV), the
 * features held fixed.  Per batch and head, with Phi = phi(Q), Psi =
 * phi(K), Va = [V 1], S = Psi^T Va and oaug = Phi S (favor.c):
 *   G     = d oaug = [dout / z, -(dout . n) / z^2]        favor_bwd_out
 *   R     = Phi^T G (m x (D+1)), summed over the q heads of a kv head
 *   dPhi  = G S^T,   dPsi = Va R^T,   dV = Psi R[:, :D]
 * Causal: S and R per chunk of 64 rows, S an exclusive prefix over chunks
 * (the forward's), R an exclusive suffix, plus inside each chunk, with
 * B = mask(G Va_c^T) and A = mask(Phi_c Psi_c^T) (i >= j):
 *   dPhi_c += B Psi_c,  dPsi_c += B^T Phi_c,  dV_c += A^T G_c[:, :D].
 * Then through the features (favor_bwd_chain, favor_bwd_key_stab):
 * du = dphi * (phi - eps / sqrt(m)) minus the stabilizers' share, and
 * dx = sqrt(scale) du W - scale (sum_f du_f) x (favor_bwd_norm, then a
 * product with beta 1).  Every product is CLBlast's; memory is
 * O(N (m + D)) per call (scratch released when the work is done), never
 * N x N.  The forward's intermediate products are recomputed, so a
 * backward needs no state from its forward.
 */
#include <math.h>
#include <stdlib.h>

#include "plan/favor.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"

typedef sparcl__favor_arg arg;
#define ARG SPARCL__FAVOR_ARG
#define CHUNK SPARCL__FAVOR_CHUNK

sparcl_status sparcl__favor_prepare_backward(void *state, const sparcl_params *override,
                                             sparcl_params *params, sparcl_param_source *source)
{
    struct sparcl__favor *f = state;
    if (override && override->count > 0)
        return sparcl__fail(f->view->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "the FAVOR+ backward has no kernel parameters (given %d; its products "
                            "are CLBlast's)",
                            override->count);
    pthread_mutex_lock(&f->lock);
    sparcl_status st = SPARCL_OK;
    if (!f->bwd_built) {
        st = sparcl__favor_kernels(f, SPARCL__FAVOR_BWD_OUT,
                                   SPARCL__FAVOR_KERNEL_COUNT - SPARCL__FAVOR_BWD_OUT);
        f->bwd_built = st == SPARCL_OK;
    }
    pthread_mutex_unlock(&f->lock);
    if (st == SPARCL_OK && params)
        sparcl_params_clear(params);
    if (st == SPARCL_OK && source)
        *source = SPARCL_PARAMS_DEFAULT;
    return st;
}

/* A row block of a contiguous scratch of `width` floats per row. */
static sparcl__mat rows(cl_mem buf, size_t row, size_t width, int trans)
{
    return (sparcl__mat){buf, row * width, width, trans};
}

/* R = sum over the q heads of each kv head of Phi_c^T G_c per chunk, then
 * (causal) the exclusive suffix over chunks. */
static sparcl_status query_states(struct sparcl__favor *f, cl_command_queue queue,
                                  const sparcl__favor_scratch *w)
{
    const sparcl_plan_desc *d = &f->view->desc;
    sparcl_ctx *ctx = f->view->ctx;
    const size_t m = (size_t)d->features, da = (size_t)d->head_dim + 1;
    const int g = d->q_heads / d->kv_heads, nq = d->q_len;
    const int chunk = d->causal ? CHUNK : nq, n_chunks = (nq + chunk - 1) / chunk;
    sparcl_status st = SPARCL_OK;
    for (int bk = 0; bk < d->batch * d->kv_heads && !st; ++bk)
        for (int c = 0; c < n_chunks && !st; ++c) {
            const int i0 = c * chunk, len = c + 1 < n_chunks ? chunk : nq - i0;
            const size_t state = ((size_t)bk * (size_t)n_chunks + (size_t)c) * m * da;
            for (int h = 0; h < g && !st; ++h) {
                const int bq = bk / d->kv_heads * d->q_heads + bk % d->kv_heads * g + h;
                const size_t row = (size_t)bq * (size_t)nq + (size_t)i0;
                st = sparcl__gemm(ctx, queue, m, da, (size_t)len, 1.0f, rows(w->qf, row, m, 1),
                                  rows(w->g, row, da, 0), h ? 1.0f : 0.0f,
                                  (sparcl__mat){w->rstate, state, da, 0});
            }
        }
    if (st || !d->causal)
        return st;
    const cl_int n_heads = d->batch * d->kv_heads, cn = n_chunks, width = (cl_int)(m * da);
    const cl_int reverse = 1;
    const arg a[] = {ARG(w->rstate), ARG(n_heads), ARG(cn), ARG(width), ARG(reverse)};
    return sparcl__favor_launch(f, queue, SPARCL__FAVOR_PREFIX, a, 5, (size_t)width,
                                (size_t)n_heads, 1);
}

/* dPsi = Va R^T and dV = Psi R[:, :D] per kv head and chunk (beta 0: these
 * come first), dPhi = G S^T per q head and chunk, and the causal chunks'
 * own terms. */
static sparcl_status feature_grads(struct sparcl__favor *f, cl_command_queue queue,
                                   const sparcl_strides *ts, cl_mem dv,
                                   const sparcl__favor_scratch *w)
{
    const sparcl_plan_desc *d = &f->view->desc;
    sparcl_ctx *ctx = f->view->ctx;
    const size_t m = (size_t)d->features, dim = (size_t)d->head_dim, da = dim + 1;
    const int g = d->q_heads / d->kv_heads, nq = d->q_len, nk = d->kv_len;
    const int chunk = d->causal ? CHUNK : (nq > nk ? nq : nk);
    const int n_chunks = d->causal ? (nk + chunk - 1) / chunk : 1;
    const sparcl_strides vs = ts[2];
    sparcl_status st = SPARCL_OK;
    for (int bk = 0; bk < d->batch * d->kv_heads && !st; ++bk)
        for (int c = 0; c < n_chunks && !st; ++c) {
            const int j0 = c * chunk, len = c + 1 < n_chunks ? chunk : nk - j0;
            const size_t row = (size_t)bk * (size_t)nk + (size_t)j0, ulen = (size_t)len;
            const size_t state = ((size_t)bk * (size_t)n_chunks + (size_t)c) * m * da;
            const int b = bk / d->kv_heads, h = bk % d->kv_heads;
            const sparcl__mat dvc = {dv, (size_t)(b * vs.batch + h * vs.head + j0 * vs.seq),
                                     (size_t)vs.seq, 0};
            st =
                sparcl__gemm(ctx, queue, ulen, m, da, 1.0f, rows(w->vaug, row, da, 0),
                             (sparcl__mat){w->rstate, state, da, 1}, 0.0f, rows(w->dkf, row, m, 0));
            if (!st)
                st = sparcl__gemm(ctx, queue, ulen, dim, m, 1.0f, rows(w->kf, row, m, 0),
                                  (sparcl__mat){w->rstate, state, da, 0}, 0.0f, dvc);
        }
    for (int bq = 0; bq < d->batch * d->q_heads && !st; ++bq) {
        const int bk = bq / d->q_heads * d->kv_heads + bq % d->q_heads / g;
        for (int c = 0; c < n_chunks && !st; ++c) {
            const int i0 = c * chunk, len = c + 1 < n_chunks ? chunk : nq - i0;
            const size_t ulen = (size_t)len;
            const size_t qrow = (size_t)bq * (size_t)nq + (size_t)i0;
            const size_t krow = (size_t)bk * (size_t)nk + (size_t)i0;
            const size_t state = ((size_t)bk * (size_t)n_chunks + (size_t)c) * m * da;
            st =
                sparcl__gemm(ctx, queue, ulen, m, da, 1.0f, rows(w->g, qrow, da, 0),
                             (sparcl__mat){w->state, state, da, 1}, 0.0f, rows(w->dqf, qrow, m, 0));
            if (st || !d->causal)
                continue;
            const int b = bk / d->kv_heads, h = bk % d->kv_heads;
            const sparcl__mat dvc = {dv, (size_t)(b * vs.batch + h * vs.head + i0 * vs.seq),
                                     (size_t)vs.seq, 0};
            const sparcl__mat a = {w->a, 0, CHUNK, 0}, at = {w->a, 0, CHUNK, 1};
            const cl_int cl_len = len, ld = CHUNK;
            const arg ma[] = {ARG(w->a), ARG(cl_len), ARG(ld)};
            /* B = mask(G_c Va_c^T): into dPhi_c and dPsi_c. */
            st = sparcl__gemm(ctx, queue, ulen, ulen, da, 1.0f, rows(w->g, qrow, da, 0),
                              rows(w->vaug, krow, da, 1), 0.0f, a);
            if (!st)
                st = sparcl__favor_launch(f, queue, SPARCL__FAVOR_MASK, ma, 3, ulen, ulen, 1);
            if (!st)
                st = sparcl__gemm(ctx, queue, ulen, m, ulen, 1.0f, a, rows(w->kf, krow, m, 0), 1.0f,
                                  rows(w->dqf, qrow, m, 0));
            if (!st)
                st = sparcl__gemm(ctx, queue, ulen, m, ulen, 1.0f, at, rows(w->qf, qrow, m, 0),
                                  1.0f, rows(w->dkf, krow, m, 0));
            /* A = mask(Phi_c Psi_c^T): into dV_c. */
            if (!st)
                st = sparcl__gemm(ctx, queue, ulen, ulen, m, 1.0f, rows(w->qf, qrow, m, 0),
                                  rows(w->kf, krow, m, 1), 0.0f, a);
            if (!st)
                st = sparcl__favor_launch(f, queue, SPARCL__FAVOR_MASK, ma, 3, ulen, ulen, 1);
            if (!st)
                st = sparcl__gemm(ctx, queue, ulen, dim, ulen, 1.0f, at, rows(w->g, qrow, da, 0),
                                  1.0f, dvc);
        }
    }
    return st;
}

/* From d phi of one tensor (q or k: `heads`, `len`, strides xs) to dx:
 * the chain through the exponential and the stabilizers, the |x|^2 term,
 * then dx += sqrt(scale) du W per head. */
static sparcl_status through_features(struct sparcl__favor *f, cl_command_queue queue, cl_mem x,
                                      cl_mem dx, sparcl_strides xs, int heads, int len, cl_mem dphi,
                                      cl_mem phi, cl_mem rsum, cl_mem row_arg, cl_mem head_arg)
{
    const sparcl_plan_desc *d = &f->view->desc;
    const size_t m = (size_t)d->features, dim = (size_t)d->head_dim;
    const float scale = f->view->scale;
    const cl_int cm = d->features, cdim = d->head_dim, n_heads = d->batch * heads, clen = len;
    const cl_long n_rows = (cl_long)n_heads * len;
    const arg chain[] = {ARG(dphi), ARG(phi), ARG(rsum), ARG(row_arg), ARG(cm), ARG(n_rows)};
    sparcl_status st =
        sparcl__favor_launch(f, queue, SPARCL__FAVOR_BWD_CHAIN, chain, 6, (size_t)n_rows, 1, 1);
    if (!st && head_arg) {
        const arg a[] = {ARG(dphi), ARG(rsum), ARG(head_arg), ARG(n_heads), ARG(clen), ARG(cm)};
        st =
            sparcl__favor_launch(f, queue, SPARCL__FAVOR_BWD_KEY_STAB, a, 6, (size_t)n_heads, 1, 1);
    }
    const cl_long sb = xs.batch, sh = xs.head, ss = xs.seq;
    const cl_float cscale = scale;
    const arg norm[] = {ARG(x),  ARG(dx), ARG(rsum), ARG(cdim),
                        ARG(sb), ARG(sh), ARG(ss),   ARG(cscale)};
    if (!st)
        st = sparcl__favor_launch(f, queue, SPARCL__FAVOR_BWD_NORM, norm, 8, (size_t)len,
                                  (size_t)heads, (size_t)d->batch);
    for (int b = 0; b < d->batch && !st; ++b)
        for (int h = 0; h < heads && !st; ++h) {
            const size_t r0 = ((size_t)b * (size_t)heads + (size_t)h) * (size_t)len;
            st = sparcl__gemm(
                f->view->ctx, queue, (size_t)len, dim, m, sqrtf(scale), rows(dphi, r0, m, 0),
                (sparcl__mat){f->omega, 0, dim, 0}, 1.0f,
                (sparcl__mat){dx, (size_t)(b * xs.batch + h * xs.head), (size_t)xs.seq, 0});
        }
    return st;
}

sparcl_status sparcl__favor_backward(void *state, const sparcl__bwd_call *c)
{
    struct sparcl__favor *f = state;
    sparcl_status st = sparcl__favor_prepare_backward(f, NULL, NULL, NULL);
    if (st != SPARCL_OK)
        return st;
    const sparcl_plan_desc *d = &f->view->desc;
    sparcl_ctx *ctx = f->view->ctx;
    cl_command_queue queue = c->queue;
    sparcl__favor_scratch w = {0};
    pthread_mutex_lock(&f->lock);
    if ((st = sparcl__favor_scratch_alloc(f, &w, 1)) ||
        (st = sparcl__queue_wait(ctx, queue, c->num_wait, c->wait)) ||
        (st = sparcl__favor_numerators(f, queue, c->ts, c->q, c->k, c->v, &w)))
        goto done;
    {
        const cl_int dim = d->head_dim;
        const cl_long sb = c->ts[3].batch, sh = c->ts[3].head, ss = c->ts[3].seq;
        const arg a[] = {ARG(w.oaug), ARG(c->dout), ARG(w.g), ARG(dim), ARG(sb), ARG(sh), ARG(ss)};
        if ((st = sparcl__favor_launch(f, queue, SPARCL__FAVOR_BWD_OUT, a, 7, (size_t)d->q_len,
                                       (size_t)d->q_heads, (size_t)d->batch)))
            goto done;
    }
    const cl_mem none = NULL;
    if (!(st = query_states(f, queue, &w)) && !(st = feature_grads(f, queue, c->ts, c->dv, &w)) &&
        !(st = through_features(f, queue, c->q, c->dq, c->ts[0], d->q_heads, d->q_len, w.dqf, w.qf,
                                w.qsum, w.qarg, none)))
        st = through_features(f, queue, c->k, c->dk, c->ts[1], d->kv_heads, d->kv_len, w.dkf, w.kf,
                              w.ksum, none, w.karg);
done:
    return sparcl__favor_end_call(f, queue, st, c->event, &w);
}
