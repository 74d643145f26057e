/*
 * backward_check.c -- see backward_check.h.
 */
#include "backward_check.h"

#include <math.h>
#include <stdlib.h>

#include "oracle.h"

enum { T_Q, T_K, T_V, T_OUT, T_LSE, T_DOUT, T_DQ, T_DK, T_DV, N_T };

double backward_check(sparcl_ctx *ctx, sparcl_plan *plan, const sparcl_plan_desc *d,
                      uint64_t seed)
{
    const size_t nq = (size_t)d->batch * d->q_heads * d->q_len * d->head_dim;
    const size_t nk = (size_t)d->batch * d->kv_heads * d->kv_len * d->head_dim;
    const size_t nl = (size_t)d->batch * d->q_heads * d->q_len;
    const size_t n[N_T] = {nq, nk, nk, nq, nl, nq, nq, nk, nk};
    float *x[N_T];
    for (int t = 0; t < N_T; ++t) {
        x[t] = malloc(n[t] * sizeof(float));
        oracle_fill(x[t], n[t], seed + (uint64_t)t);
    }
    double *ref[3] = {malloc(nq * sizeof(double)), malloc(nk * sizeof(double)),
                      malloc(nk * sizeof(double))};
    double worst = -1;
    if (sparcl_plan_forward_host(plan, x[T_Q], x[T_K], x[T_V], x[T_OUT], x[T_LSE]) ==
            SPARCL_OK &&
        sparcl_plan_backward_host(plan, x[T_Q], x[T_K], x[T_V], x[T_OUT], x[T_LSE], x[T_DOUT],
                                  x[T_DQ], x[T_DK], x[T_DV]) == SPARCL_OK &&
        sparcl_reference_backward(ctx, d, x[T_Q], x[T_K], x[T_V], x[T_DOUT], ref[0], ref[1],
                                  ref[2]) == SPARCL_OK) {
        worst = 0;
        for (int g = 0; g < 3; ++g) {
            double scale = 1;
            for (size_t i = 0; i < n[T_DQ + g]; ++i)
                scale = fmax(scale, fabs(ref[g][i]));
            worst = fmax(worst, oracle_max_abs_diff_f(x[T_DQ + g], ref[g], n[T_DQ + g]) / scale);
        }
    }
    for (int t = 0; t < N_T; ++t)
        free(x[t]);
    for (int g = 0; g < 3; ++g)
        free(ref[g]);
    return worst;
}
