/*
 * favor.c -- Performer FAVOR+ plans: softmax attention approximated with
 * positive orthogonal random features, in O(N m D) instead of O(N^2 D).
 *
 * The plan owns the features (m x D, drawn from a seed, redrawn on demand)
 * and the small kernels of cl/favor.cl; every product runs in CLBlast.  A
 * forward call, per batch and head:
 *   phi(Q), phi(K)   CLBlast x . W^T, then favor_phi (exp, stabilization)
 *   [V 1]            favor_augment: the ones column makes the normalizer
 *                    phi(Q) . sum_j phi(k_j) ride along with the values
 *   non-causal       S = phi(K)^T [V 1] (m x (D+1)), O = phi(Q) S
 *   causal           chunks of CHUNK rows: chunk states phi(K_c)^T [V_c 1],
 *                    exclusive prefix over chunks (favor_prefix), then
 *                    O_c = phi(Q_c) S_<c + mask(phi(Q_c) phi(K_c)^T) [V_c 1]
 *   out              favor_finish divides by the last column.
 * Scratch buffers are allocated per call (released once the work is done),
 * so calls never share state; the kernels' arguments are guarded by the
 * plan's lock.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_registry.h"
#include "plan/attention_kinds.h"
#include "plan/favor.h"
#include "plan/kernel_build.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "runtime/lowrank_draw.h"

#define CHUNK SPARCL__FAVOR_CHUNK
enum {
    K_PHI = SPARCL__FAVOR_PHI,
    K_HEAD_MAX = SPARCL__FAVOR_HEAD_MAX,
    K_AUGMENT = SPARCL__FAVOR_AUGMENT,
    K_PREFIX = SPARCL__FAVOR_PREFIX,
    K_MASK = SPARCL__FAVOR_MASK,
    K_FINISH = SPARCL__FAVOR_FINISH,
    K_COUNT = SPARCL__FAVOR_KERNEL_COUNT
};
/* The family: fixed kernels, no tuned parameters (every product is
 * CLBlast's); the forward's kernels, then the backward's. */
static const sparcl__kernel_decl kernels[K_COUNT] = {
    {"favor_phi", 0},          {"favor_head_max", 0}, {"favor_augment", 0}, {"favor_prefix", 0},
    {"favor_causal_mask", 0},  {"favor_finish", 0},   {"favor_bwd_out", 0}, {"favor_bwd_chain", 0},
    {"favor_bwd_key_stab", 0}, {"favor_bwd_norm", 0}};
static const sparcl__program_decl programs[] = {{"favor.cl", kernels, K_COUNT}};
const sparcl__kernel_schema sparcl__schema_favor = {
    .name = "favor",
    .programs = programs,
    .n_programs = 1,
};

static void favor_free(void *state)
{
    struct sparcl__favor *f = state;
    if (!f)
        return;
    if (f->omega)
        clReleaseMemObject(f->omega);
    for (int i = 0; i < K_COUNT; ++i)
        if (f->kernel[i])
            clReleaseKernel(f->kernel[i]);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static size_t favor_bytes(const void *state)
{
    return ((const struct sparcl__favor *)state)->bytes;
}

static sparcl_status favor_redraw(void *state, uint64_t seed)
{
    struct sparcl__favor *f = state;
    const size_t n = (size_t)f->view->desc.features * (size_t)f->view->desc.head_dim;
    float *w = malloc(sizeof *w * n);
    sparcl_status st = SPARCL_OK;
    if (!w || !sparcl__favor_draw(w, f->view->desc.features, f->view->desc.head_dim, seed)) {
        st =
            sparcl__fail(f->view->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate %zu features", n);
    } else {
        cl_int err = clEnqueueWriteBuffer(f->view->ctx->queue, f->omega, CL_TRUE, 0, sizeof *w * n,
                                          w, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            st = sparcl__fail_cl(f->view->ctx, err, "clEnqueueWriteBuffer");
    }
    free(w);
    return st;
}

SPARCL_API sparcl_status sparcl_plan_read_features(sparcl_plan *p, float *omega)
{
    const sparcl__plan_view *v = sparcl__plan_view_of(p);
    if (!p || !omega)
        return sparcl__fail(p ? v->ctx : NULL, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            p ? "omega" : "plan");
    struct sparcl__favor *f = sparcl__plan_state(p, &sparcl__kind_favor);
    if (!f)
        return sparcl__fail(v->ctx, SPARCL_ERR_INVALID_ARGUMENT, "not a FAVOR+ plan");
    const size_t bytes =
        sizeof(float) * (size_t)f->view->desc.features * (size_t)f->view->desc.head_dim;
    cl_int err =
        clEnqueueReadBuffer(f->view->ctx->queue, f->omega, CL_TRUE, 0, bytes, omega, 0, NULL, NULL);
    return err == CL_SUCCESS ? SPARCL_OK
                             : sparcl__fail_cl(f->view->ctx, err, "clEnqueueReadBuffer");
}

sparcl_status sparcl__favor_kernels(struct sparcl__favor *f, int first, int n)
{
    const sparcl__problem prob = sparcl__problem_from_desc(&f->view->desc);
    sparcl__pset none;
    memset(&none, 0, sizeof none);
    const char *names[K_COUNT];
    for (int i = 0; i < n; ++i)
        names[i] = kernels[first + i].name;
    return sparcl__family_kernels(f->view->ctx, &sparcl__schema_favor, &prob, &none, n, names,
                                  f->kernel + first);
}

static sparcl_status favor_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                  sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    (void)params;
    sparcl_ctx *ctx = v->ctx;
    struct sparcl__favor *f = calloc(1, sizeof *f);
    if (!f)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a FAVOR+ plan");
    f->view = v;
    pthread_mutex_init(&f->lock, NULL);
    const size_t bytes = sizeof(float) * (size_t)desc->features * (size_t)desc->head_dim;
    sparcl_status st = sparcl__favor_kernels(f, 0, SPARCL__FAVOR_FWD_COUNT);
    if (st == SPARCL_OK &&
        (st = sparcl__scratch(ctx, &f->omega, bytes, "FAVOR+ features")) == SPARCL_OK)
        st = favor_redraw(f, desc->seed);
    if (st != SPARCL_OK) {
        favor_free(f);
        return st;
    }
    f->bytes = bytes;
    snprintf(report->origin, sizeof report->origin,
             "FAVOR+ (CLBlast and fixed kernels, no parameters)");
    sparcl__gemm_note_use(ctx);
    *state = f;
    return SPARCL_OK;
}

typedef sparcl__favor_arg arg;
#define ARG SPARCL__FAVOR_ARG
#define launch sparcl__favor_launch

sparcl_status sparcl__favor_launch(struct sparcl__favor *f, cl_command_queue queue, int which,
                                   const arg *args, int n_args, size_t g0, size_t g1, size_t g2)
{
    cl_kernel kn = f->kernel[which];
    cl_int err = CL_SUCCESS;
    for (int a = 0; a < n_args; ++a)
        err |= clSetKernelArg(kn, (cl_uint)a, args[a].size, args[a].value);
    const size_t global[3] = {g0, g1, g2};
    if (err == CL_SUCCESS && g0 && g1 && g2)
        err = clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, NULL, 0, NULL, NULL);
    return err == CL_SUCCESS ? SPARCL_OK : sparcl__fail_cl(f->view->ctx, err, kernels[which].name);
}

typedef sparcl__favor_scratch scratch;

void sparcl__favor_scratch_free(scratch *s)
{
    cl_mem *all[] = {&s->qf,   &s->kf, &s->kmax, &s->vaug, &s->state,  &s->oaug, &s->a,   &s->qarg,
                     &s->karg, &s->g,  &s->dqf,  &s->dkf,  &s->rstate, &s->qsum, &s->ksum};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        if (*all[i])
            clReleaseMemObject(*all[i]);
}

/* phi of one tensor (q or k) into `dst`, rows of `m` features.  argmax:
 * NULL, or receives where each stabilizer's maximum lies (per row for
 * queries, per head for keys). */
static sparcl_status features(struct sparcl__favor *f, cl_command_queue queue, cl_mem x,
                              sparcl_strides s, int heads, int len, cl_mem dst, cl_mem head_max,
                              cl_mem argmax)
{
    const sparcl_plan_desc *d = &f->view->desc;
    const int m = d->features, dim = d->head_dim;
    /* Extents the plan validated positive, as sizes for the products. */
    const size_t um = (size_t)m, udim = (size_t)dim, ulen = (size_t)len, uheads = (size_t)heads;
    const float scale = f->view->scale;
    sparcl_status st = SPARCL_OK;
    for (int b = 0; b < d->batch && !st; ++b)
        for (int h = 0; h < heads && !st; ++h) {
            const size_t r0 = ((size_t)b * uheads + (size_t)h) * ulen;
            st = sparcl__gemm(
                f->view->ctx, queue, ulen, um, udim, sqrtf(scale),
                (sparcl__mat){x, (size_t)(b * s.batch + h * s.head), (size_t)s.seq, 0},
                (sparcl__mat){f->omega, 0, udim, 1}, 0.0f, (sparcl__mat){dst, r0 * um, um, 0});
        }
    if (st)
        return st;
    const cl_int per_row = head_max == NULL, n_heads = d->batch * heads;
    const cl_long per_head = (cl_long)len * m;
    const cl_mem no_arg = NULL, row_arg = per_row ? argmax : no_arg;
    if (head_max) {
        const arg a[] = {ARG(dst), ARG(head_max), ARG(argmax), ARG(n_heads), ARG(per_head)};
        if ((st = launch(f, queue, K_HEAD_MAX, a, 5, (size_t)n_heads, 1, 1)))
            return st;
    }
    const cl_int cm = m, cdim = dim;
    const cl_long sb = s.batch, sh = s.head, ss = s.seq;
    const cl_float cscale = scale;
    const arg a[] = {ARG(dst),  ARG(x),  ARG(head_max), ARG(row_arg), ARG(per_row), ARG(cm),
                     ARG(cdim), ARG(sb), ARG(sh),       ARG(ss),      ARG(cscale)};
    return launch(f, queue, K_PHI, a, 11, (size_t)len, (size_t)heads, (size_t)d->batch);
}

/* oaug = phi(Q) times the states, chunk by chunk when causal. */
static sparcl_status products(struct sparcl__favor *f, cl_command_queue queue, const scratch *w)
{
    const sparcl_plan_desc *d = &f->view->desc;
    const size_t m = (size_t)d->features, da = (size_t)d->head_dim + 1;
    const int g = d->q_heads / d->kv_heads, nk = d->kv_len, nq = d->q_len;
    const int chunk = d->causal ? CHUNK : nk, n_chunks = (nk + chunk - 1) / chunk;
    /* All positive (validated lengths); every offset below lies inside a
     * scratch buffer whose size favor_forward computed without overflow. */
    const size_t unq = (size_t)nq, unk = (size_t)nk, uchunk = (size_t)chunk;
    const size_t un_chunks = (size_t)n_chunks;
    sparcl_status st = SPARCL_OK;
    /* States: phi(K_c)^T [V_c 1] per kv head and chunk. */
    for (int bh = 0; bh < d->batch * d->kv_heads && !st; ++bh)
        for (int c = 0; c < n_chunks && !st; ++c) {
            const size_t j0 = (size_t)bh * unk + (size_t)c * uchunk;
            const size_t len = (size_t)(c + 1 < n_chunks ? chunk : nk - c * chunk);
            st = sparcl__gemm(
                f->view->ctx, queue, m, da, len, 1.0f, (sparcl__mat){w->kf, j0 * m, m, 1},
                (sparcl__mat){w->vaug, j0 * da, da, 0}, 0.0f,
                (sparcl__mat){w->state, ((size_t)bh * un_chunks + (size_t)c) * m * da, da, 0});
        }
    if (st)
        return st;
    if (d->causal) {
        const cl_int n_heads = d->batch * d->kv_heads, cn = n_chunks, width = (cl_int)(m * da);
        const cl_int forward = 0;
        const arg a[] = {ARG(w->state), ARG(n_heads), ARG(cn), ARG(width), ARG(forward)};
        if ((st = launch(f, queue, K_PREFIX, a, 5, (size_t)width, (size_t)n_heads, 1)))
            return st;
    }
    for (int bq = 0; bq < d->batch * d->q_heads && !st; ++bq) {
        const int bk = bq / d->q_heads * d->kv_heads + bq % d->q_heads / g;
        for (int c = 0; c < n_chunks && !st; ++c) {
            const int i0 = c * chunk, len = c + 1 < n_chunks ? chunk : nq - i0;
            const size_t ulen = (size_t)len;
            const size_t qrow = (size_t)bq * unq + (size_t)i0, krow = (size_t)bk * unk + (size_t)i0;
            const sparcl__mat qf = {w->qf, qrow * m, m, 0};
            const sparcl__mat oaug = {w->oaug, qrow * da, da, 0};
            st = sparcl__gemm(
                f->view->ctx, queue, ulen, da, m, 1.0f, qf,
                (sparcl__mat){w->state, ((size_t)bk * un_chunks + (size_t)c) * m * da, da, 0}, 0.0f,
                oaug);
            if (st || !d->causal)
                continue;
            /* The chunk's own keys, masked to j <= i. */
            st = sparcl__gemm(f->view->ctx, queue, ulen, ulen, m, 1.0f, qf,
                              (sparcl__mat){w->kf, krow * m, m, 1}, 0.0f,
                              (sparcl__mat){w->a, 0, CHUNK, 0});
            const cl_int cl_len = len, ld = CHUNK;
            const arg a[] = {ARG(w->a), ARG(cl_len), ARG(ld)};
            if (!st)
                st = launch(f, queue, K_MASK, a, 3, ulen, ulen, 1);
            if (!st)
                st = sparcl__gemm(f->view->ctx, queue, ulen, da, ulen, 1.0f,
                                  (sparcl__mat){w->a, 0, CHUNK, 0},
                                  (sparcl__mat){w->vaug, krow * da, da, 0}, 1.0f, oaug);
        }
    }
    return st;
}

sparcl_status sparcl__favor_scratch_alloc(struct sparcl__favor *f, scratch *w, int backward)
{
    const sparcl_plan_desc *d = &f->view->desc;
    sparcl_ctx *ctx = f->view->ctx;
    /* The plan validated every extent positive.  The scratch sizes saturate:
     * a shape whose buffers cannot be addressed asks for SIZE_MAX bytes,
     * which sparcl__scratch refuses, so no size or offset below wraps. */
    const size_t m = (size_t)d->features, da = (size_t)d->head_dim + 1, f4 = sizeof(float);
    const size_t batch = (size_t)d->batch, kv_heads = (size_t)d->kv_heads;
    const size_t rq = sparcl__sat_mul(sparcl__sat_mul(batch, (size_t)d->q_heads), (size_t)d->q_len);
    const size_t rk = sparcl__sat_mul(sparcl__sat_mul(batch, kv_heads), (size_t)d->kv_len);
    const size_t n_chunks = d->causal ? ((size_t)d->kv_len + CHUNK - 1) / CHUNK : 1;
    const size_t states =
        sparcl__sat_mul(sparcl__sat_mul(sparcl__sat_mul(batch, kv_heads), n_chunks), m * da);
    sparcl_status st;
    if ((st = sparcl__scratch(ctx, &w->qf, sparcl__sat_mul(f4 * m, rq), "phi(Q)")) ||
        (st = sparcl__scratch(ctx, &w->kf, sparcl__sat_mul(f4 * m, rk), "phi(K)")) ||
        (st =
             sparcl__scratch(ctx, &w->kmax, sparcl__sat_mul(f4, batch * kv_heads), "key maxima")) ||
        (st = sparcl__scratch(ctx, &w->vaug, sparcl__sat_mul(f4 * da, rk), "[V 1]")) ||
        (st = sparcl__scratch(ctx, &w->state, sparcl__sat_mul(f4, states), "FAVOR+ states")) ||
        (st = sparcl__scratch(ctx, &w->oaug, sparcl__sat_mul(f4 * da, rq), "FAVOR+ numerators")) ||
        (st = sparcl__scratch(ctx, &w->a, f4 * CHUNK * CHUNK, "chunk scores")))
        return st;
    if (backward &&
        ((st = sparcl__scratch(ctx, &w->qarg, sparcl__sat_mul(sizeof(cl_int), rq),
                               "query stabilizer positions")) ||
         (st = sparcl__scratch(ctx, &w->karg, sparcl__sat_mul(sizeof(cl_long), batch * kv_heads),
                               "key stabilizer positions")) ||
         (st = sparcl__scratch(ctx, &w->g, sparcl__sat_mul(f4 * da, rq), "d(numerators)")) ||
         (st = sparcl__scratch(ctx, &w->dqf, sparcl__sat_mul(f4 * m, rq), "d phi(Q)")) ||
         (st = sparcl__scratch(ctx, &w->dkf, sparcl__sat_mul(f4 * m, rk), "d phi(K)")) ||
         (st = sparcl__scratch(ctx, &w->rstate, sparcl__sat_mul(f4, states), "query states")) ||
         (st = sparcl__scratch(ctx, &w->qsum, sparcl__sat_mul(f4, rq), "query row sums")) ||
         (st = sparcl__scratch(ctx, &w->ksum, sparcl__sat_mul(f4, rk), "key row sums"))))
        return st;
    return SPARCL_OK;
}

sparcl_status sparcl__favor_numerators(struct sparcl__favor *f, cl_command_queue queue,
                                       const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                       const scratch *w)
{
    const sparcl_plan_desc *d = &f->view->desc;
    sparcl_status st;
    if ((st = features(f, queue, q, ts[0], d->q_heads, d->q_len, w->qf, NULL, w->qarg)) ||
        (st = features(f, queue, k, ts[1], d->kv_heads, d->kv_len, w->kf, w->kmax, w->karg)))
        return st;
    const cl_int dim = d->head_dim;
    const cl_long sb = ts[2].batch, sh = ts[2].head, ss = ts[2].seq;
    const arg a[] = {ARG(v), ARG(w->vaug), ARG(dim), ARG(sb), ARG(sh), ARG(ss)};
    if ((st = launch(f, queue, K_AUGMENT, a, 6, (size_t)d->kv_len, (size_t)d->kv_heads,
                     (size_t)d->batch)))
        return st;
    return products(f, queue, w);
}

sparcl_status sparcl__favor_end_call(struct sparcl__favor *f, cl_command_queue queue,
                                     sparcl_status st, cl_event *event, scratch *w)
{
    if (st == SPARCL_OK && event) {
        /* On the in-order queue a marker completes after everything above. */
        cl_int err = clEnqueueMarkerWithWaitList(queue, 0, NULL, event);
        if (err != CL_SUCCESS)
            st = sparcl__fail_cl(f->view->ctx, err, "clEnqueueMarkerWithWaitList");
    }
    pthread_mutex_unlock(&f->lock);
    sparcl__favor_scratch_free(w);
    return st;
}

static sparcl_status favor_forward(void *state, const sparcl__fwd_call *c)
{
    struct sparcl__favor *f = state;
    cl_command_queue queue = c->queue;
    const sparcl_plan_desc *d = &f->view->desc;
    sparcl_ctx *ctx = f->view->ctx;
    if (c->lse)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "FAVOR+ produces no lse; pass NULL");
    scratch w = {0};
    sparcl_status st;
    pthread_mutex_lock(&f->lock);
    if ((st = sparcl__favor_scratch_alloc(f, &w, 0)) ||
        (st = sparcl__queue_wait(ctx, queue, c->num_wait, c->wait)) ||
        (st = sparcl__favor_numerators(f, queue, c->ts, c->q, c->k, c->v, &w)))
        goto done;
    {
        const cl_int dim = d->head_dim;
        const cl_long sb = c->ts[3].batch, sh = c->ts[3].head, ss = c->ts[3].seq;
        const arg a[] = {ARG(w.oaug), ARG(c->out), ARG(dim), ARG(sb), ARG(sh), ARG(ss)};
        if ((st = launch(f, queue, K_FINISH, a, 6, (size_t)d->q_len, (size_t)d->q_heads,
                         (size_t)d->batch)))
            goto done;
    }
done:
    return sparcl__favor_end_call(f, queue, st, c->event, &w);
}

const sparcl__kind_ops sparcl__kind_favor = {
    .name = "FAVOR+",
    .create = favor_create,
    .forward = favor_forward,
    .prepare_backward = sparcl__favor_prepare_backward,
    .backward = sparcl__favor_backward,
    .no_lse = 1,
    .redraw = favor_redraw,
    .device_bytes = favor_bytes,
    .free = favor_free,
};
