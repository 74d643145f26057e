/*
 * oracle.c -- see oracle.h.  Deliberately naive: two passes over all keys
 * of every query, no blocking, no online softmax.
 */
#include "oracle.h"

#include <math.h>
#include <stdlib.h>

void oracle_attention(int batch, int q_heads, int kv_heads, int q_len, int kv_len, int dim,
                      double scale, oracle_pred pred, const void *self, const float *q,
                      const float *k, const float *v, double *out, double *lse)
{
    double *w = malloc(sizeof *w * (size_t)kv_len);
    int group = q_heads / kv_heads;
    for (int b = 0; b < batch; ++b)
        for (int h = 0; h < q_heads; ++h)
            for (int i = 0; i < q_len; ++i) {
                size_t row = ((size_t)b * q_heads + h) * q_len + i;
                const float *qi = q + row * dim;
                size_t kvbase = ((size_t)b * kv_heads + h / group) * kv_len;
                double mx = -INFINITY;
                for (int j = 0; j < kv_len; ++j) {
                    w[j] = -INFINITY;
                    if (!pred(self, h, i, j))
                        continue;
                    double s = 0;
                    for (int d = 0; d < dim; ++d)
                        s += (double)qi[d] * (double)k[(kvbase + j) * dim + d];
                    w[j] = s * scale;
                    if (w[j] > mx)
                        mx = w[j];
                }
                double sum = 0;
                for (int j = 0; j < kv_len; ++j)
                    if (w[j] != -INFINITY)
                        sum += exp(w[j] - mx);
                for (int d = 0; d < dim; ++d) {
                    double acc = 0;
                    for (int j = 0; j < kv_len; ++j)
                        if (w[j] != -INFINITY)
                            acc += exp(w[j] - mx) * (double)v[(kvbase + j) * dim + d];
                    out[row * dim + d] = sum > 0 ? acc / sum : 0.0;
                }
                if (lse)
                    lse[row] = sum > 0 ? mx + log(sum) : -INFINITY;
            }
    free(w);
}

void oracle_fill(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; ++i) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

double oracle_max_abs_diff_f(const float *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; ++i) {
        if (isinf(a[i]) && isinf(b[i]) && (a[i] < 0) == (b[i] < 0))
            continue;
        double d = fabs((double)a[i] - b[i]);
        if (isnan(d))
            return INFINITY;
        if (d > m)
            m = d;
    }
    return m;
}
