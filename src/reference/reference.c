/*
 * reference.c -- the double-precision CPU reference for masked softmax
 * attention.  It is the oracle of the tuner's verification and the demo; it
 * shares no code with the kernels or the tiling, reading the layout only
 * through its stored blocks.  The per-row softmax is shared with the
 * reference backward (reference_bwd.c) through reference.h.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels/params.h"
#include "runtime/error.h"
#include "layout/layout.h"
#include "reference/reference.h"
#include "runtime/struct_size.h"

/* Writes the keys query i of layout head h attends to (before the causal
 * rule) into keys[], ascending; returns their number. */
static int64_t row_keys(const sparcl_layout *l, int h, int i, int kv_len, int *keys)
{
    int64_t n = 0;
    if (!l) {
        for (int j = 0; j < kv_len; ++j)
            keys[n++] = j;
        return n;
    }
    int B = l->block, br = i / B;
    const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + br;
    for (int64_t e = rp[0]; e < rp[1]; ++e) {
        int j0 = l->col[e] * B, j1 = j0 + B < kv_len ? j0 + B : kv_len;
        for (int j = j0; j < j1; ++j)
            if (sparcl__layout_entry_bit(l, e, i - br * B, j - j0))
                keys[n++] = j;
    }
    return n;
}

sparcl_status sparcl__reference_check(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
    if (d->batch < 1 || d->q_heads < 1 || d->kv_heads < 1 || d->q_heads % d->kv_heads ||
        d->q_len < 1 || d->kv_len < 1 || d->head_dim < 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: invalid shape (batch %d, heads %d/%d, len %d/%d, dim %d)",
                            d->batch, d->q_heads, d->kv_heads, d->q_len, d->kv_len, d->head_dim);
    const sparcl_layout *l = d->layout;
    if (l && ((l->heads != 1 && l->heads != d->q_heads) || l->q_len != d->q_len ||
              l->kv_len != d->kv_len))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "reference: layout shape does not match the descriptor");
    return SPARCL_OK;
}

double sparcl__reference_scale(const sparcl_plan_desc *d)
{
    return d->scale > 0.0f ? d->scale : 1.0 / sqrt((double)d->head_dim);
}

double sparcl__reference_row(const sparcl_plan_desc *d, int h, int i, const float *qi,
                             const float *kh, int *keys, double *p, int64_t *n_out)
{
    const sparcl_layout *l = d->layout;
    const int D = d->head_dim;
    const double scale = sparcl__reference_scale(d);
    const int64_t off = (int64_t)d->kv_len - d->q_len;
    int64_t n = row_keys(l, l && l->heads > 1 ? h : 0, i, d->kv_len, keys);
    if (d->causal)
        while (n > 0 && keys[n - 1] > i + off)
            --n;
    *n_out = n;
    double mx = -INFINITY;
    for (int64_t t = 0; t < n; ++t) {
        const float *kj = kh + (int64_t)keys[t] * D;
        double dot = 0.0;
        for (int x = 0; x < D; ++x)
            dot += (double)qi[x] * kj[x];
        p[t] = dot * scale;
        mx = p[t] > mx ? p[t] : mx;
    }
    float alpha; /* sparse normalizations: weights and threshold in reference_entmax.c */
    if (sparcl__entmax_norm(d, &alpha))
        return sparcl__reference_entmax_row(p, n, alpha, p);
    double sum = 0.0;
    for (int64_t t = 0; t < n; ++t)
        sum += p[t] = exp(p[t] - mx);
    for (int64_t t = 0; t < n; ++t)
        p[t] /= sum;
    return n > 0 ? mx + log(sum) : -INFINITY;
}

SPARCL_API sparcl_status sparcl_reference_forward(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                                  const float *q, const float *k, const float *v,
                                                  double *out, double *lse)
{
    if (!d || !q || !k || !v || !out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !d ? "desc" : !q ? "q" : !k ? "k" : !v ? "v" : "out");
    sparcl_plan_desc copy; /* only the fields of the caller's struct_size */
    sparcl_status st = sparcl__plan_desc_read(ctx, d, &copy);
    if (st != SPARCL_OK || (st = sparcl__reference_check(ctx, d = &copy)) != SPARCL_OK)
        return st;
    if (d->attention == SPARCL_ATTENTION_SPAN) /* reference_span.c */
        return sparcl__reference_span_forward(ctx, d, q, k, v, out, lse);
    if (d->attention == SPARCL_ATTENTION_LSH) /* reference_lsh.c */
        return sparcl__reference_lsh_forward(ctx, d, q, v, out, lse);
    if (d->attention != SPARCL_ATTENTION_EXACT)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "reference: FAVOR+ and Linformer have no reference here (their "
                            "random matrices live in the plan)");
    int *keys = malloc(sizeof *keys * (size_t)d->kv_len);
    double *p = malloc(sizeof *p * (size_t)d->kv_len);
    if (!keys || !p) {
        free(keys);
        free(p);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory");
    }
    const int D = d->head_dim, g = d->q_heads / d->kv_heads;
    float alpha;
    /* A key outside a sparse normalization's support (weight exactly 0) is
     * not read, so a NaN in its value stays out of the row; a softmax
     * weight is never 0 in exact arithmetic, so it always reads. */
    const int sparse = sparcl__entmax_norm(d, &alpha) != 0;
    for (int b = 0; b < d->batch; ++b)
        for (int h = 0; h < d->q_heads; ++h) {
            const float *kh = k + ((int64_t)b * d->kv_heads + h / g) * d->kv_len * D;
            const float *vh = v + ((int64_t)b * d->kv_heads + h / g) * d->kv_len * D;
            for (int i = 0; i < d->q_len; ++i) {
                const int64_t row = ((int64_t)b * d->q_heads + h) * d->q_len + i;
                double *oi = out + row * D;
                int64_t n;
                double l = sparcl__reference_row(d, h, i, q + row * D, kh, keys, p, &n);
                for (int x = 0; x < D; ++x)
                    oi[x] = 0.0;
                for (int64_t t = 0; t < n; ++t) {
                    if (sparse && p[t] == 0.0)
                        continue;
                    const float *vj = vh + (int64_t)keys[t] * D;
                    for (int x = 0; x < D; ++x)
                        oi[x] += p[t] * vj[x];
                }
                if (lse)
                    lse[row] = l;
            }
        }
    free(keys);
    free(p);
    return SPARCL_OK;
}
