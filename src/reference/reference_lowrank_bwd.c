/*
 * reference_lowrank_bwd.c -- the double-precision CPU reference for the
 * backward of FAVOR+ and Linformer plans (sparcl_reference_backward() and
 * sparcl_reference_backward_proj()), with the random matrices a plan of
 * the same descriptor draws (runtime/lowrank_draw.h).
 *
 * Written pair by pair, not in the plans' factorized form, so that it
 * checks the factorization as well as the arithmetic.  FAVOR+: with
 * A[i,j] = phi(q_i) . phi(k_j) over the attended pairs and oaug_i =
 * sum_j A[i,j] [v_j 1], out_i = oaug_i[:D] / oaug_i[D]; the gradient of
 * every phi comes from dA[i,j] = g_i . [v_j 1], then through the exponent
 * u - scale |x|^2 / 2 - stab, stab being the maximum the forward
 * subtracts (row-wise for queries, head-wise for keys; its gradient goes
 * to the projection that attains it, the first on ties).  Linformer:
 * project in double, softmax attention backward over the projected keys,
 * then back through E and F.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reference/reference.h"
#include "runtime/checked.h"
#include "runtime/error.h"
#include "runtime/lowrank_draw.h"
#include "runtime/struct_size.h"

/* Added to every feature by the forward (cl/favor.cl FAVOR_EPS). */
#define FEATURE_EPS 1e-6

/* Bytes of n doubles, 0 when n overflows (the caller refuses it). */
static size_t doubles(size_t n)
{
    size_t b;
    return sparcl__mul_size(n, sizeof(double), &b) ? b : 0;
}

/* The features of `len` rows x (contiguous, D floats each): u = sqrt(scale)
 * x . w_f, then ex = exp(u - scale |x|^2 / 2 - stab) / sqrt(m) and phi =
 * ex + eps / sqrt(m).  stab: each row's own maximum (per_row; arg[i] its
 * feature), else the maximum over all rows (arg[0] its index i * m + f). */
static void features(const float *x, size_t len, size_t D, size_t m, const float *omega,
                     double scale, int per_row, double *ex, double *phi, size_t *arg)
{
    const double root = sqrt(scale), norm = 1.0 / sqrt((double)m);
    double all_max = -INFINITY;
    for (size_t i = 0; i < len; ++i) {
        double *u = ex + i * m;
        for (size_t f = 0; f < m; ++f) {
            double dot = 0.0;
            for (size_t c = 0; c < D; ++c)
                dot += (double)x[i * D + c] * omega[f * D + c];
            u[f] = root * dot;
            if (!per_row && u[f] > all_max)
                all_max = u[f], arg[0] = i * m + f;
        }
    }
    for (size_t i = 0; i < len; ++i) {
        double *u = ex + i * m, n2 = 0.0, stab = all_max;
        for (size_t c = 0; c < D; ++c)
            n2 += (double)x[i * D + c] * x[i * D + c];
        if (per_row) {
            stab = -INFINITY;
            for (size_t f = 0; f < m; ++f)
                if (u[f] > stab)
                    stab = u[f], arg[i] = f;
        }
        for (size_t f = 0; f < m; ++f) {
            u[f] = norm * exp(u[f] - 0.5 * scale * n2 - stab);
            phi[i * m + f] = u[f] + norm * FEATURE_EPS;
        }
    }
}

/* From dphi (in place: becomes du) to dx for `len` rows: du = dphi * ex,
 * r_i = sum_f du; the stabilizer's projection loses r_i (per_row) or the
 * sum of all r_i (arg[0]); dx = sqrt(scale) du W - scale r_i x_i. */
static void through_features(const float *x, size_t len, size_t D, size_t m, const float *omega,
                             double scale, int per_row, const double *ex, double *dphi,
                             const size_t *arg, double *dx)
{
    const double root = sqrt(scale);
    double total = 0.0;
    for (size_t i = 0; i < len; ++i) {
        double *du = dphi + i * m, r = 0.0;
        for (size_t f = 0; f < m; ++f) {
            du[f] *= ex[i * m + f];
            r += du[f];
        }
        if (per_row)
            du[arg[i]] -= r;
        total += r;
        for (size_t c = 0; c < D; ++c)
            dx[i * D + c] = -scale * r * x[i * D + c];
    }
    if (!per_row)
        dphi[arg[0]] -= total;
    for (size_t i = 0; i < len; ++i)
        for (size_t f = 0; f < m; ++f) {
            const double t = root * dphi[i * m + f];
            for (size_t c = 0; c < D; ++c)
                dx[i * D + c] += t * omega[f * D + c];
        }
}

/* Host scratch of the FAVOR+ reference. */
typedef struct favor_work {
    double *kex, *kphi, *dkphi, *qex, *qphi, *dqphi, *a, *oaug, *grad;
    size_t *qarg;
} favor_work;

/* One kv head of FAVOR+ and its group of q heads.  q, dout, dq: the
 * group's g heads; k, v, dk, dv: the kv head's rows. */
static void favor_head(const sparcl_plan_desc *d, const float *omega, const float *q,
                       const float *k, const float *v, const float *dout, double *dq, double *dk,
                       double *dv, const favor_work *w)
{
    const size_t D = (size_t)d->head_dim, m = (size_t)d->features;
    const size_t nq = (size_t)d->q_len, nk = (size_t)d->kv_len;
    const size_t g = (size_t)(d->q_heads / d->kv_heads);
    const double scale = sparcl__reference_scale(d);
    size_t karg = 0;
    features(k, nk, D, m, omega, scale, 0, w->kex, w->kphi, &karg);
    memset(w->dkphi, 0, doubles(nk * m));
    for (size_t h = 0; h < g; ++h) {
        const size_t qo = h * nq * D;
        features(q + qo, nq, D, m, omega, scale, 1, w->qex, w->qphi, w->qarg);
        memset(w->dqphi, 0, doubles(nq * m));
        for (size_t i = 0; i < nq; ++i) {
            const size_t end = d->causal ? i + 1 : nk; /* causal: q_len == kv_len */
            double *oa = w->oaug;
            memset(oa, 0, doubles(D + 1));
            for (size_t j = 0; j < end; ++j) {
                double s = 0.0;
                for (size_t f = 0; f < m; ++f)
                    s += w->qphi[i * m + f] * w->kphi[j * m + f];
                w->a[j] = s;
                for (size_t c = 0; c < D; ++c)
                    oa[c] += s * v[j * D + c];
                oa[D] += s;
            }
            /* g_i = d oaug_i for out_i = oaug_i[:D] / oaug_i[D]. */
            const float *doi = dout + qo + i * D;
            double dot = 0.0;
            for (size_t c = 0; c < D; ++c) {
                w->grad[c] = doi[c] / oa[D];
                dot += doi[c] * oa[c];
            }
            w->grad[D] = -dot / (oa[D] * oa[D]);
            for (size_t j = 0; j < end; ++j) {
                double da_ij = w->grad[D];
                for (size_t c = 0; c < D; ++c) {
                    da_ij += w->grad[c] * v[j * D + c];
                    dv[j * D + c] += w->a[j] * w->grad[c];
                }
                for (size_t f = 0; f < m; ++f) {
                    w->dqphi[i * m + f] += da_ij * w->kphi[j * m + f];
                    w->dkphi[j * m + f] += da_ij * w->qphi[i * m + f];
                }
            }
        }
        through_features(q + qo, nq, D, m, omega, scale, 1, w->qex, w->dqphi, w->qarg, dq + qo);
    }
    through_features(k, nk, D, m, omega, scale, 0, w->kex, w->dkphi, &karg, dk);
}

static sparcl_status favor(sparcl_ctx *ctx, const sparcl_plan_desc *d, const float *q,
                           const float *k, const float *v, const float *dout, double *dq,
                           double *dk, double *dv)
{
    const size_t m = (size_t)d->features, D = (size_t)d->head_dim;
    const size_t nq = (size_t)d->q_len, nk = (size_t)d->kv_len;
    const size_t big = nq > nk ? nq : nk;
    float *omega = malloc(sizeof *omega * m * D);
    favor_work w = {0};
    size_t nqm, nkm;
    int ok = omega && sparcl__mul_size(nq, m, &nqm) && sparcl__mul_size(nk, m, &nkm) &&
             doubles(nqm) && doubles(nkm);
    if (ok) {
        w.kex = malloc(doubles(nkm)), w.kphi = malloc(doubles(nkm));
        w.dkphi = malloc(doubles(nkm)), w.qex = malloc(doubles(nqm));
        w.qphi = malloc(doubles(nqm)), w.dqphi = malloc(doubles(nqm));
        w.a = malloc(doubles(big)), w.oaug = malloc(doubles(D + 1));
        w.grad = malloc(doubles(D + 1)), w.qarg = malloc(sizeof *w.qarg * nq);
        ok = w.kex && w.kphi && w.dkphi && w.qex && w.qphi && w.dqphi && w.a && w.oaug && w.grad &&
             w.qarg && sparcl__favor_draw(omega, d->features, d->head_dim, d->seed);
    }
    if (ok) {
        const size_t g = (size_t)(d->q_heads / d->kv_heads), kvh = (size_t)d->kv_heads;
        for (size_t b = 0; b < (size_t)d->batch; ++b)
            for (size_t h = 0; h < kvh; ++h) {
                const size_t ko = (b * kvh + h) * nk * D;
                const size_t qo = (b * (size_t)d->q_heads + h * g) * nq * D;
                favor_head(d, omega, q + qo, k + ko, v + ko, dout + qo, dq + qo, dk + ko, dv + ko,
                           &w);
            }
    }
    free(omega);
    double *all[] = {w.kex, w.kphi, w.dkphi, w.qex, w.qphi, w.dqphi, w.a, w.oaug, w.grad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        free(all[i]);
    free(w.qarg);
    return ok ? SPARCL_OK
              : sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory for FAVOR+");
}

/* Softmax attention backward of one q head over the projected keys kp and
 * values vp (P x D doubles), accumulating dq, dkp and dvp. */
static void projected_head(const sparcl_plan_desc *d, const float *q, const double *kp,
                           const double *vp, const float *dout, double *dq, double *dkp,
                           double *dvp, double *p, double *dp)
{
    const size_t D = (size_t)d->head_dim, P = (size_t)d->proj_len;
    const double scale = sparcl__reference_scale(d);
    for (size_t i = 0; i < (size_t)d->q_len; ++i) {
        const float *qi = q + i * D, *doi = dout + i * D;
        double mx = -INFINITY, sum = 0.0, pdp = 0.0;
        for (size_t j = 0; j < P; ++j) {
            double s = 0.0;
            for (size_t c = 0; c < D; ++c)
                s += qi[c] * kp[j * D + c];
            p[j] = scale * s;
            mx = p[j] > mx ? p[j] : mx;
        }
        for (size_t j = 0; j < P; ++j)
            sum += p[j] = exp(p[j] - mx);
        for (size_t j = 0; j < P; ++j) {
            p[j] /= sum;
            double x = 0.0;
            for (size_t c = 0; c < D; ++c)
                x += doi[c] * vp[j * D + c];
            dp[j] = x;
            pdp += p[j] * x;
        }
        for (size_t j = 0; j < P; ++j) {
            const double ds = scale * p[j] * (dp[j] - pdp);
            for (size_t c = 0; c < D; ++c) {
                dq[i * D + c] += ds * kp[j * D + c];
                dkp[j * D + c] += ds * qi[c];
                dvp[j * D + c] += p[j] * doi[c];
            }
        }
    }
}

/* With x: out (P x D) = proj x, proj P x N, x N x D floats.  Without:
 * out (N x D) = proj^T grad, grad P x D doubles. */
static void project(const float *proj, size_t P, size_t N, size_t D, const float *x,
                    const double *grad, double *out)
{
    memset(out, 0, doubles((x ? P : N) * D));
    for (size_t r = 0; r < P; ++r)
        for (size_t t = 0; t < N; ++t) {
            const double e = proj[r * N + t];
            for (size_t c = 0; c < D; ++c) {
                if (x)
                    out[r * D + c] += e * x[t * D + c];
                else
                    out[t * D + c] += e * grad[r * D + c];
            }
        }
}

/* dproj (P x N) += grad (P x D) x^T (x: N x D floats). */
static void proj_grad(const double *grad, const float *x, size_t P, size_t N, size_t D,
                      double *dproj)
{
    for (size_t r = 0; r < P; ++r)
        for (size_t t = 0; t < N; ++t) {
            double s = 0.0;
            for (size_t c = 0; c < D; ++c)
                s += grad[r * D + c] * x[t * D + c];
            dproj[r * N + t] += s;
        }
}

static sparcl_status linformer(sparcl_ctx *ctx, const sparcl_plan_desc *d, const float *q,
                               const float *k, const float *v, const float *dout, double *dq,
                               double *dk, double *dv, double *de, double *df)
{
    const size_t D = (size_t)d->head_dim, P = (size_t)d->proj_len, N = (size_t)d->kv_len;
    const size_t pd = P * D, pn = P * N, nq = (size_t)d->q_len;
    float *own = NULL;
    const float *e = d->proj_e, *f = d->proj_f;
    if (!e || !f) {
        own = malloc(sizeof *own * 2 * pn);
        if (own)
            sparcl__linformer_draw(own, own + pn, pn, d->proj_len, d->seed);
        e = own, f = own ? own + pn : NULL;
    }
    double *kp = malloc(doubles(pd)), *vp = malloc(doubles(pd));
    double *dkp = malloc(doubles(pd)), *dvp = malloc(doubles(pd));
    double *p = malloc(doubles(P)), *dp = malloc(doubles(P));
    const int ok = e && kp && vp && dkp && dvp && p && dp;
    if (ok) {
        if (de)
            memset(de, 0, doubles(pn));
        if (df)
            memset(df, 0, doubles(pn));
        const size_t g = (size_t)(d->q_heads / d->kv_heads), kvh = (size_t)d->kv_heads;
        for (size_t b = 0; b < (size_t)d->batch; ++b)
            for (size_t h = 0; h < kvh; ++h) {
                const size_t ko = (b * kvh + h) * N * D;
                project(e, P, N, D, k + ko, NULL, kp);
                project(f, P, N, D, v + ko, NULL, vp);
                memset(dkp, 0, doubles(pd));
                memset(dvp, 0, doubles(pd));
                for (size_t t = 0; t < g; ++t) {
                    const size_t qo = (b * (size_t)d->q_heads + h * g + t) * nq * D;
                    projected_head(d, q + qo, kp, vp, dout + qo, dq + qo, dkp, dvp, p, dp);
                }
                project(e, P, N, D, NULL, dkp, dk + ko);
                project(f, P, N, D, NULL, dvp, dv + ko);
                if (de)
                    proj_grad(dkp, k + ko, P, N, D, de);
                if (df)
                    proj_grad(dvp, v + ko, P, N, D, df);
            }
    }
    free(own), free(kp), free(vp), free(dkp), free(dvp), free(p), free(dp);
    return ok ? SPARCL_OK
              : sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory for Linformer");
}

sparcl_status sparcl__reference_backward_lowrank(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                                 const float *q, const float *k, const float *v,
                                                 const float *dout, double *dq, double *dk,
                                                 double *dv, double *de, double *df)
{
    const int favor_kind = d->attention == SPARCL_ATTENTION_FAVOR;
    if (!favor_kind && d->attention != SPARCL_ATTENTION_LINFORMER)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: attention %d is not a low-rank kind", d->attention);
    if (d->normalization != SPARCL_NORMALIZATION_SOFTMAX)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "reference backward: %s with normalization %d is not covered "
                            "(softmax only)",
                            favor_kind ? "FAVOR+" : "Linformer", d->normalization);
    if (d->layout)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: FAVOR+ and Linformer take no layout");
    if (favor_kind && (de || df))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: dproj_e and dproj_f are for Linformer only");
    if (favor_kind && (d->features < 1 || d->features > SPARCL_MAX_FEATURES))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: features %d must be in [1, %d]", d->features,
                            SPARCL_MAX_FEATURES);
    if (favor_kind && d->causal && d->q_len != d->kv_len)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: causal FAVOR+ needs q_len %d == kv_len %d", d->q_len,
                            d->kv_len);
    if (!favor_kind && (d->proj_len < 1 || d->proj_len > d->kv_len || d->causal))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: Linformer needs proj_len %d in [1, kv_len %d] and no "
                            "causal mask",
                            d->proj_len, d->kv_len);
    /* dq, dk and dv hold these many doubles; a shape whose sizes overflow
     * cannot describe real arrays (all extents are positive here). */
    size_t nq, nk;
    if (!sparcl__mul3_size((size_t)d->batch, (size_t)d->q_heads, (size_t)d->q_len, &nq) ||
        !sparcl__mul_size(nq, (size_t)d->head_dim, &nq) || !doubles(nq) ||
        !sparcl__mul3_size((size_t)d->batch, (size_t)d->kv_heads, (size_t)d->kv_len, &nk) ||
        !sparcl__mul_size(nk, (size_t)d->head_dim, &nk) || !doubles(nk))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: shape too large to address");
    /* Everything below accumulates. */
    memset(dq, 0, doubles(nq));
    memset(dv, 0, doubles(nk));
    memset(dk, 0, doubles(nk));
    return favor_kind ? favor(ctx, d, q, k, v, dout, dq, dk, dv)
                      : linformer(ctx, d, q, k, v, dout, dq, dk, dv, de, df);
}

SPARCL_API sparcl_status sparcl_reference_backward_proj(
    sparcl_ctx *ctx, const sparcl_plan_desc *desc, const float *q, const float *k, const float *v,
    const float *dout, double *dq, double *dk, double *dv, double *dproj_e, double *dproj_f)
{
    sparcl_plan_desc copy; /* only the fields of the caller's struct_size */
    sparcl_status st;
    if (desc && (dproj_e || dproj_f)) {
        if ((st = sparcl__plan_desc_read(ctx, desc, &copy)) != SPARCL_OK)
            return st;
        if (copy.attention != SPARCL_ATTENTION_LINFORMER)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "reference: dproj_e and dproj_f are for Linformer only");
    }
    /* Every check (pointers, shapes, the kind's fields) and dq, dk, dv. */
    st = sparcl_reference_backward(ctx, desc, q, k, v, dout, dq, dk, dv);
    if (st != SPARCL_OK || (!dproj_e && !dproj_f))
        return st;
    /* A reference favours simplicity: the pass again, with dE and dF. */
    return sparcl__reference_backward_lowrank(ctx, &copy, q, k, v, dout, dq, dk, dv, dproj_e,
                                              dproj_f);
}
