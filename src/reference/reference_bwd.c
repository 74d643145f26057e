/*
 * reference_bwd.c -- the double-precision CPU reference for the backward
 * pass (dQ, dK, dV), for the tuner's verification and applications that
 * check the kernels.  Row by row: the probabilities from the shared
 * reference row (reference.h), then dP = dO v, dS = P (dP - P.dP).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/checked.h"
#include "runtime/error.h"
#include "reference/reference.h"
#include "runtime/struct_size.h"

SPARCL_API sparcl_status sparcl_reference_backward(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                                   const float *q, const float *k,
                                                   const float *v, const float *dout,
                                                   double *dq, double *dk, double *dv)
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
    if (d->attention != SPARCL_ATTENTION_EXACT) /* reference_lowrank_bwd.c */
        return sparcl__reference_backward_lowrank(ctx, d, q, k, v, dout, dq, dk, dv, NULL, NULL);
    if (d->normalization != SPARCL_NORMALIZATION_SOFTMAX || d->attention != SPARCL_ATTENTION_EXACT)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "reference backward: softmax attention over a layout only");
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
    if (!keys || !p || !dp) {
        free(keys), free(p), free(dp);
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
                double pdp = 0.0; /* P . dP = rowsum(dO * O) */
                for (int64_t t = 0; t < n; ++t) {
                    const float *vj = v + kvh + (int64_t)keys[t] * D;
                    double x = 0.0;
                    for (int c = 0; c < D; ++c)
                        x += (double)doi[c] * vj[c];
                    dp[t] = x;
                    pdp += p[t] * x;
                }
                for (int64_t t = 0; t < n; ++t) {
                    const int64_t j = kvh + (int64_t)keys[t] * D;
                    const double ds = scale * p[t] * (dp[t] - pdp);
                    for (int c = 0; c < D; ++c) {
                        dq[row * D + c] += ds * k[j + c];
                        dk[j + c] += ds * qi[c];
                        dv[j + c] += p[t] * doi[c];
                    }
                }
            }
        }
    free(keys), free(p), free(dp);
    return SPARCL_OK;
}
