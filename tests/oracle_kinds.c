/*
 * oracle_kinds.c -- see oracle_kinds.h.  Naive on purpose: every row sorts
 * or bisects all its scores, FAVOR+ forms every (query, key) feature
 * product, Linformer projects in double.
 */
#include "oracle_kinds.h"

#include <math.h>
#include <stdlib.h>

static int desc_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

double oracle_entmax(const double *s, int n, double alpha, double *p)
{
    double *z = malloc(sizeof *z * (size_t)(n > 0 ? n : 1));
    int cnt = 0;
    for (int j = 0; j < n; ++j)
        if (s[j] != -INFINITY)
            z[cnt++] = (alpha - 1.0) * s[j];
    double tau = -INFINITY;
    if (cnt > 0) {
        qsort(z, (size_t)cnt, sizeof *z, desc_cmp);
        if (alpha == 2.0) {
            /* Sparsemax (Martins & Astudillo 2016): support = the largest k
             * with 1 + k z_k > z_1 + ... + z_k. */
            double cs = 0.0;
            for (int k = 1; k <= cnt; ++k) {
                cs += z[k - 1];
                if (1.0 + k * z[k - 1] > cs)
                    tau = (cs - 1.0) / k;
            }
        } else if (alpha == 1.5) {
            /* 1.5-entmax (Peters et al. 2019), exact sort-based form. */
            double s1 = 0.0, s2 = 0.0;
            for (int k = 1; k <= cnt; ++k) {
                s1 += z[k - 1];
                s2 += z[k - 1] * z[k - 1];
                double mean = s1 / k, ss = k * (s2 / k - mean * mean);
                double delta = (1.0 - ss) / k;
                double t = mean - sqrt(delta > 0.0 ? delta : 0.0);
                if (t <= z[k - 1])
                    tau = t;
            }
        } else {
            double lo = z[0] - 1.0, hi = z[0];
            for (int it = 0; it < 200; ++it) {
                double mid = 0.5 * (lo + hi), f = 0.0;
                for (int k = 0; k < cnt; ++k)
                    if (z[k] > mid)
                        f += pow(z[k] - mid, 1.0 / (alpha - 1.0));
                if (f >= 1.0)
                    lo = mid;
                else
                    hi = mid;
            }
            tau = 0.5 * (lo + hi);
        }
    }
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
        double x = s[j] == -INFINITY ? 0.0 : (alpha - 1.0) * s[j] - tau;
        p[j] = x > 0.0 ? pow(x, 1.0 / (alpha - 1.0)) : 0.0;
        sum += p[j];
    }
    /* Exact already for alpha = 2 and 1.5; bisection leaves a rounding. */
    if (sum > 0.0)
        for (int j = 0; j < n; ++j)
            p[j] /= sum;
    free(z);
    return tau;
}

void oracle_entmax_attention(int batch, int q_heads, int kv_heads, int q_len, int kv_len,
                             int dim, double scale, double alpha, oracle_pred pred,
                             const void *self, const float *q, const float *k, const float *v,
                             double *out, double *tau)
{
    double *s = malloc(sizeof *s * (size_t)kv_len), *p = malloc(sizeof *p * (size_t)kv_len);
    const int group = q_heads / kv_heads;
    for (int b = 0; b < batch; ++b)
        for (int h = 0; h < q_heads; ++h)
            for (int i = 0; i < q_len; ++i) {
                const size_t row = ((size_t)b * q_heads + h) * q_len + i;
                const size_t kv0 = ((size_t)b * kv_heads + h / group) * kv_len;
                for (int j = 0; j < kv_len; ++j) {
                    s[j] = -INFINITY;
                    if (!pred(self, h, i, j))
                        continue;
                    double dot = 0.0;
                    for (int d = 0; d < dim; ++d)
                        dot += (double)q[row * dim + d] * k[(kv0 + j) * dim + d];
                    s[j] = dot * scale;
                }
                double t = oracle_entmax(s, kv_len, alpha, p);
                for (int d = 0; d < dim; ++d) {
                    double acc = 0.0;
                    for (int j = 0; j < kv_len; ++j)
                        acc += p[j] * v[(kv0 + j) * dim + d];
                    out[row * dim + d] = acc;
                }
                if (tau)
                    tau[row] = t;
            }
    free(s);
    free(p);
}

/* Positive features of one row x: (exp(w.x' - |x'|^2/2 - stab) + 1e-6) / sqrt(m)
 * with x' = sqrt(scale) x; stab < 0 asks for the row's own maximum. */
static void phi_row(const float *x, int dim, double scale, int m, const float *omega,
                    double stab, int own_max, double *out)
{
    double n2 = 0.0;
    for (int d = 0; d < dim; ++d)
        n2 += scale * x[d] * x[d];
    double mx = -INFINITY;
    for (int f = 0; f < m; ++f) {
        double dot = 0.0;
        for (int d = 0; d < dim; ++d)
            dot += (double)omega[(size_t)f * dim + d] * x[d];
        out[f] = sqrt(scale) * dot;
        mx = out[f] > mx ? out[f] : mx;
    }
    if (own_max)
        stab = mx;
    for (int f = 0; f < m; ++f)
        out[f] = (exp(out[f] - n2 / 2 - stab) + 1e-6) / sqrt((double)m);
}

void oracle_favor(int batch, int q_heads, int kv_heads, int q_len, int kv_len, int dim,
                  double scale, int causal, int m, const float *omega, const float *q,
                  const float *k, const float *v, double *out)
{
    double *kf = malloc(sizeof *kf * (size_t)kv_len * m), *qf = malloc(sizeof *qf * (size_t)m);
    const int group = q_heads / kv_heads;
    for (int b = 0; b < batch; ++b)
        for (int hk = 0; hk < kv_heads; ++hk) {
            const float *kh = k + ((size_t)b * kv_heads + hk) * kv_len * dim;
            const float *vh = v + ((size_t)b * kv_heads + hk) * kv_len * dim;
            double kmax = -INFINITY;
            for (int j = 0; j < kv_len; ++j)
                for (int f = 0; f < m; ++f) {
                    double dot = 0.0;
                    for (int d = 0; d < dim; ++d)
                        dot += (double)omega[(size_t)f * dim + d] * kh[(size_t)j * dim + d];
                    dot *= sqrt(scale);
                    kmax = dot > kmax ? dot : kmax;
                }
            for (int j = 0; j < kv_len; ++j)
                phi_row(kh + (size_t)j * dim, dim, scale, m, omega, kmax, 0, kf + (size_t)j * m);
            for (int h = hk * group; h < (hk + 1) * group; ++h)
                for (int i = 0; i < q_len; ++i) {
                    const size_t row = ((size_t)b * q_heads + h) * q_len + i;
                    phi_row(q + row * dim, dim, scale, m, omega, 0.0, 1, qf);
                    double den = 0.0;
                    double *o = out + row * dim;
                    for (int d = 0; d < dim; ++d)
                        o[d] = 0.0;
                    for (int j = 0; j < kv_len && (!causal || j <= i); ++j) {
                        double a = 0.0;
                        for (int f = 0; f < m; ++f)
                            a += qf[f] * kf[(size_t)j * m + f];
                        den += a;
                        for (int d = 0; d < dim; ++d)
                            o[d] += a * vh[(size_t)j * dim + d];
                    }
                    for (int d = 0; d < dim; ++d)
                        o[d] /= den;
                }
        }
    free(kf);
    free(qf);
}

void oracle_linformer(int batch, int q_heads, int kv_heads, int q_len, int kv_len, int dim,
                      double scale, int proj, const float *e, const float *f, const float *q,
                      const float *k, const float *v, double *out, double *lse)
{
    double *kp = malloc(sizeof *kp * (size_t)proj * dim), *vp = malloc(sizeof *vp * (size_t)proj * dim);
    double *s = malloc(sizeof *s * (size_t)proj);
    const int group = q_heads / kv_heads;
    for (int b = 0; b < batch; ++b)
        for (int hk = 0; hk < kv_heads; ++hk) {
            const float *kh = k + ((size_t)b * kv_heads + hk) * kv_len * dim;
            const float *vh = v + ((size_t)b * kv_heads + hk) * kv_len * dim;
            for (int r = 0; r < proj; ++r)
                for (int d = 0; d < dim; ++d) {
                    double a = 0.0, c = 0.0;
                    for (int j = 0; j < kv_len; ++j) {
                        a += (double)e[(size_t)r * kv_len + j] * kh[(size_t)j * dim + d];
                        c += (double)f[(size_t)r * kv_len + j] * vh[(size_t)j * dim + d];
                    }
                    kp[(size_t)r * dim + d] = a;
                    vp[(size_t)r * dim + d] = c;
                }
            for (int h = hk * group; h < (hk + 1) * group; ++h)
                for (int i = 0; i < q_len; ++i) {
                    const size_t row = ((size_t)b * q_heads + h) * q_len + i;
                    double mx = -INFINITY, sum = 0.0;
                    for (int r = 0; r < proj; ++r) {
                        double dot = 0.0;
                        for (int d = 0; d < dim; ++d)
                            dot += q[row * dim + d] * kp[(size_t)r * dim + d];
                        s[r] = dot * scale;
                        mx = s[r] > mx ? s[r] : mx;
                    }
                    for (int r = 0; r < proj; ++r)
                        sum += s[r] = exp(s[r] - mx);
                    for (int d = 0; d < dim; ++d) {
                        double a = 0.0;
                        for (int r = 0; r < proj; ++r)
                            a += s[r] * vp[(size_t)r * dim + d];
                        out[row * dim + d] = a / sum;
                    }
                    if (lse)
                        lse[row] = mx + log(sum);
                }
        }
    free(kp);
    free(vp);
    free(s);
}
