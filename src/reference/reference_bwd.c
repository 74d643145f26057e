/*
 * reference_bwd.c -- the double-precision CPU reference for the backward
 * pass (dQ, dK, dV), for the tuner's verification and applications that
 * check the kernels.  Row by row: the weights P from the shared reference
 * row (reference.h: softmax, or alpha-entmax for the sparse
 * normalizations), dP = dO v, then dS = J dP with the normalization's
 * Jacobian J = diag(w) - w w^T / sum w, where w = P for softmax and
 * w = P^(2 - alpha) on the support (0 off it) for alpha-entmax
 * (1 on the support for sparsemax): dS = w (dP - sum w dP / sum w).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/params.h"
#include "reference/reference.h"
#include "runtime/checked.h"
#include "runtime/error.h"
#include "runtime/struct_size.h"

SPARCL_API sparcl_status sparcl_reference_backward(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                                   const float *q, const float *k, const float *v,
                                                   const float *dout, double *dq, double *dk,
                                                   double *dv)
{
    if (!d || !q || !k || !v || !dout || !dq || !dk || !dv)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !d      ? "desc"
                            : !q    ? "q"
                            : !k    ? "k"
                            : !v    ? "v"
                            : !dout ? "dout"
                            : !dq   ? "dq"
                            : !dk   ? "dk"
                                    : "dv");
    sparcl_plan_desc copy; /* only the fields of the caller's struct_size */
    sparcl_status st = sparcl__plan_desc_read(ctx, d, &copy);
    if (st != SPARCL_OK || (st = sparcl__reference_check(ctx, d = &copy)) != SPARCL_OK)
        return st;
    if (d->attention == SPARCL_ATTENTION_SPAN) /* reference_span.c */
        return sparcl__reference_span_backward(ctx, d, q, k, v, dout, dq, dk, dv, NULL);
    if (d->attention == SPARCL_ATTENTION_LSH)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "reference backward: LSH attention has no backward");
    if (d->attention != SPARCL_ATTENTION_EXACT) /* reference_lowrank_bwd.c */
        return sparcl__reference_backward_lowrank(ctx, d, q, k, v, dout, dq, dk, dv, NULL, NULL);
    if (d->attention != SPARCL_ATTENTION_EXACT)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "reference backward: exact attention over a layout only (softmax, "
                            "sparsemax, entmax)");
    float alpha_f;
    const int sparse = sparcl__entmax_norm(d, &alpha_f) != 0;
    const double alpha = alpha_f;
    /* sparcl__reference_check made every extent positive.  dq, dk and dv
     * hold these many bytes, so a shape whose sizes overflow cannot
     * describe real arrays: refuse it instead of clearing a wrapped size. */
    const size_t row_bytes = sizeof *dq * (size_t)d->head_dim;
    size_t q_bytes, kv_bytes;
    if (!sparcl__mul3_size((size_t)d->batch, (size_t)d->q_heads, (size_t)d->q_len, &q_bytes) ||
        !sparcl__mul_size(q_bytes, row_bytes, &q_bytes) ||
        !sparcl__mul3_size((size_t)d->batch, (size_t)d->kv_heads, (size_t)d->kv_len, &kv_bytes) ||
        !sparcl__mul_size(kv_bytes, row_bytes, &kv_bytes))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: shape too large to address");
    int *keys = malloc(sizeof *keys * (size_t)d->kv_len);
    double *p = malloc(sizeof *p * (size_t)d->kv_len);
    double *dp = malloc(sizeof *dp * (size_t)d->kv_len);
    double *w = malloc(sizeof *w * (size_t)d->kv_len);
    if (!keys || !p || !dp || !w) {
        free(keys), free(p), free(dp), free(w);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory");
    }
    const int D = d->head_dim, g = d->q_heads / d->kv_heads;
    const double scale = sparcl__reference_scale(d);
    memset(dq, 0, q_bytes);
    memset(dk, 0, kv_bytes);
    memset(dv, 0, kv_bytes);
    for (int b = 0; b < d->batch; ++b)
        for (int h = 0; h < d->q_heads; ++h) {
            const int64_t kvh = ((int64_t)b * d->kv_heads + h / g) * d->kv_len * D;
            for (int i = 0; i < d->q_len; ++i) {
                const int64_t row = ((int64_t)b * d->q_heads + h) * d->q_len + i;
                const float *qi = q + row * D, *doi = dout + row * D;
                int64_t n;
                sparcl__reference_row(d, h, i, qi, k + kvh, keys, p, &n);
                /* dp[t] = dO.v and the Jacobian weights w[t].  Keys off a
                 * sparse support (w = 0) are not read, so a NaN in their v
                 * stays out, as in the forward. */
                double wsum = 0.0, wdp = 0.0;
                for (int64_t t = 0; t < n; ++t) {
                    w[t] = !sparse       ? p[t]
                           : p[t] == 0.0 ? 0.0
                           : isnan(p[t]) ? NAN
                                         : pow(p[t], 2.0 - alpha);
                    if (sparse && w[t] == 0.0)
                        continue;
                    const float *vj = v + kvh + (int64_t)keys[t] * D;
                    double x = 0.0;
                    for (int c = 0; c < D; ++c)
                        x += (double)doi[c] * vj[c];
                    dp[t] = x;
                    wsum += w[t];
                    wdp += w[t] * x;
                }
                const double mean = wdp / wsum; /* softmax: P . dP = rowsum(dO * O) */
                for (int64_t t = 0; t < n; ++t) {
                    if (sparse && w[t] == 0.0)
                        continue;
                    const int64_t j = kvh + (int64_t)keys[t] * D;
                    const double ds = scale * w[t] * (dp[t] - mean);
                    for (int c = 0; c < D; ++c) {
                        dq[row * D + c] += ds * k[j + c];
                        dk[j + c] += ds * qi[c];
                        dv[j + c] += p[t] * doi[c];
                    }
                }
            }
        }
    free(keys), free(p), free(dp), free(w);
    return SPARCL_OK;
}
