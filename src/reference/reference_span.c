/*
 * reference_span.c -- the double-precision CPU reference of adaptive
 * attention span: forward (out, lse) and backward (dq, dk, dv and the
 * gradient of the spans), straight from the definitions in sparcl.h.
 * Every causal pair (i, j) is visited and its soft mask evaluated; nothing
 * here knows how far a span reaches, so the kernels' band bounds are
 * tested, not assumed.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels/params.h"
#include "reference/reference.h"
#include "runtime/error.h"
#include "runtime/struct_size.h"

/* m(x) = clamp((R + z - x) / R, 0, 1) for x >= 0, else 0. */
static double soft_mask(int64_t x, double z, double ramp)
{
    if (x < 0)
        return 0.0;
    const double m = (ramp + z - (double)x) / ramp;
    return m < 0.0 ? 0.0 : m > 1.0 ? 1.0 : m;
}

/* One row's weights: m[j] and P[j] = exp(s_j - lse) for all kv_len keys
 * (0 where m = 0); returns lse, -inf when the row reaches no key. */
static double row_weights(const sparcl_plan_desc *d, double z, int i, const float *qi,
                          const float *kh, double *m, double *p)
{
    const int D = d->head_dim;
    const double scale = sparcl__reference_scale(d), ramp = d->span_ramp;
    const int64_t pos = (int64_t)i + d->kv_len - d->q_len;
    double mx = -INFINITY;
    for (int j = 0; j < d->kv_len; ++j) {
        m[j] = soft_mask(pos - j, z, ramp);
        p[j] = 0.0;
        if (m[j] == 0.0)
            continue;
        double dot = 0.0;
        for (int x = 0; x < D; ++x)
            dot += (double)qi[x] * kh[(int64_t)j * D + x];
        p[j] = dot * scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    if (mx == -INFINITY)
        return -INFINITY;
    double sum = 0.0;
    for (int j = 0; j < d->kv_len; ++j)
        if (m[j] > 0.0)
            sum += m[j] * exp(p[j] - mx);
    const double lse = mx + log(sum);
    for (int j = 0; j < d->kv_len; ++j)
        if (m[j] > 0.0)
            p[j] = exp(p[j] - lse);
    return lse;
}

/* The checks every entry point makes; *copy receives the caller's struct
 * (by its struct_size). */
static sparcl_status read_desc(sparcl_ctx *ctx, const sparcl_plan_desc *in, sparcl_plan_desc *copy)
{
    sparcl_status st = sparcl__plan_desc_read(ctx, in, copy);
    if (st == SPARCL_OK)
        st = sparcl__reference_check(ctx, copy);
    if (st == SPARCL_OK)
        st = sparcl__span_desc_check(ctx, copy);
    return st;
}

static double span_of(const sparcl_plan_desc *d, int h)
{
    return d->spans ? (double)d->spans[h] : 0.0;
}

sparcl_status sparcl__reference_span_forward(sparcl_ctx *ctx, const sparcl_plan_desc *in,
                                             const float *q, const float *k, const float *v,
                                             double *out, double *lse)
{
    sparcl_plan_desc copy;
    sparcl_status st = read_desc(ctx, in, &copy);
    if (st != SPARCL_OK)
        return st;
    const sparcl_plan_desc *d = &copy;
    double *m = malloc(sizeof *m * (size_t)d->kv_len), *p = malloc(sizeof *p * (size_t)d->kv_len);
    if (!m || !p) {
        free(m);
        free(p);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory");
    }
    const int D = d->head_dim, g = d->q_heads / d->kv_heads;
    for (int b = 0; b < d->batch; ++b)
        for (int h = 0; h < d->q_heads; ++h) {
            const int64_t kvh = ((int64_t)b * d->kv_heads + h / g) * d->kv_len * D;
            for (int i = 0; i < d->q_len; ++i) {
                const int64_t row = ((int64_t)b * d->q_heads + h) * d->q_len + i;
                const double l = row_weights(d, span_of(d, h), i, q + row * D, k + kvh, m, p);
                double *oi = out + row * D;
                for (int x = 0; x < D; ++x)
                    oi[x] = 0.0;
                for (int j = 0; j < d->kv_len; ++j)
                    if (m[j] > 0.0)
                        for (int x = 0; x < D; ++x)
                            oi[x] += m[j] * p[j] * v[kvh + (int64_t)j * D + x];
                if (lse)
                    lse[row] = l;
            }
        }
    free(m);
    free(p);
    return SPARCL_OK;
}

sparcl_status sparcl__reference_span_backward(sparcl_ctx *ctx, const sparcl_plan_desc *in,
                                              const float *q, const float *k, const float *v,
                                              const float *dout, double *dq, double *dk, double *dv,
                                              double *dspans)
{
    sparcl_plan_desc copy;
    sparcl_status st = read_desc(ctx, in, &copy);
    if (st != SPARCL_OK)
        return st;
    const sparcl_plan_desc *d = &copy;
    const int D = d->head_dim, g = d->q_heads / d->kv_heads, n = d->kv_len;
    double *m = malloc(sizeof *m * (size_t)n), *p = malloc(sizeof *p * (size_t)n);
    double *o = malloc(sizeof *o * (size_t)D);
    if (!m || !p || !o) {
        free(m);
        free(p);
        free(o);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory");
    }
    const double scale = sparcl__reference_scale(d), ramp = d->span_ramp;
    const int64_t nk = (int64_t)d->batch * d->kv_heads * n * D;
    for (int64_t x = 0; x < nk; ++x)
        dk[x] = dv[x] = 0.0;
    for (int h = 0; dspans && h < d->q_heads; ++h)
        dspans[h] = 0.0;
    for (int b = 0; b < d->batch; ++b)
        for (int h = 0; h < d->q_heads; ++h) {
            const int64_t kvh = ((int64_t)b * d->kv_heads + h / g) * n * D;
            const double z = span_of(d, h);
            for (int i = 0; i < d->q_len; ++i) {
                const int64_t row = ((int64_t)b * d->q_heads + h) * d->q_len + i;
                const float *qi = q + row * D, *gi = dout + row * D;
                const int64_t pos = (int64_t)i + d->kv_len - d->q_len;
                row_weights(d, z, i, qi, k + kvh, m, p);
                /* out_i, then D_i = dout_i . out_i */
                for (int x = 0; x < D; ++x)
                    o[x] = 0.0;
                for (int j = 0; j < n; ++j)
                    if (m[j] > 0.0)
                        for (int x = 0; x < D; ++x)
                            o[x] += m[j] * p[j] * v[kvh + (int64_t)j * D + x];
                double di = 0.0;
                for (int x = 0; x < D; ++x)
                    di += gi[x] * o[x];
                double *dqi = dq + row * D;
                for (int x = 0; x < D; ++x)
                    dqi[x] = 0.0;
                for (int j = 0; j < n; ++j) {
                    if (m[j] == 0.0)
                        continue;
                    const float *vj = v + kvh + (int64_t)j * D, *kj = k + kvh + (int64_t)j * D;
                    double dp = 0.0;
                    for (int x = 0; x < D; ++x)
                        dp += gi[x] * vj[x];
                    const double a = m[j] * p[j], ds = a * (dp - di);
                    for (int x = 0; x < D; ++x) {
                        dqi[x] += scale * ds * kj[x];
                        dk[kvh + (int64_t)j * D + x] += scale * ds * qi[x];
                        dv[kvh + (int64_t)j * D + x] += a * gi[x];
                    }
                    /* dm/dz = 1 / R on the open ramp z < x < z + R. */
                    const double dist = (double)(pos - j);
                    if (dspans && dist > z && dist < z + ramp)
                        dspans[h] += p[j] * (dp - di) / ramp;
                }
            }
        }
    free(m);
    free(p);
    free(o);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_reference_backward_span(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                                        const float *q, const float *k,
                                                        const float *v, const float *dout,
                                                        double *dq, double *dk, double *dv,
                                                        double *dspans)
{
    if (!d)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "desc is NULL");
    sparcl_plan_desc copy;
    sparcl_status st = sparcl__plan_desc_read(ctx, d, &copy);
    if (st != SPARCL_OK)
        return st;
    if (copy.attention != SPARCL_ATTENTION_SPAN) {
        if (dspans)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "dspans is only for adaptive-span descriptors; pass NULL");
        return sparcl_reference_backward(ctx, d, q, k, v, dout, dq, dk, dv);
    }
    const void *const given[7] = {q, k, v, dout, dq, dk, dv};
    static const char *const names[7] = {"q", "k", "v", "dout", "dq", "dk", "dv"};
    for (int i = 0; i < 7; ++i)
        if (!given[i])
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", names[i]);
    return sparcl__reference_span_backward(ctx, d, q, k, v, dout, dq, dk, dv, dspans);
}
