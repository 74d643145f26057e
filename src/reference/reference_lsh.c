/*
 * reference_lsh.c -- the double-precision reference of LSH attention
 * (sparcl.h, "LSH attention").  It shares only the rotations with the
 * plan (runtime/lsh_draw.c, one seeded draw for both) and does the rest on
 * its own: the buckets with the float fma chain the definition names, a
 * comparison sort by (bucket, position) instead of the device's counting
 * sort, the chunk windows token by token, softmax over each round's keys in
 * double with keys q_j / ||q_j|| normalized in double, and the merge of the
 * rounds by LSE.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reference/reference.h"
#include "runtime/error.h"
#include "runtime/lsh_draw.h"
#include "runtime/struct_size.h"

/* The fields an LSH descriptor needs (the plan refuses the same ones). */
static sparcl_status check(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
#define BAD(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    if (d->attention != SPARCL_ATTENTION_LSH)
        return BAD("reference: attention %d is not SPARCL_ATTENTION_LSH", d->attention);
    if (d->lsh_rounds < 1 || d->lsh_rounds > SPARCL_LSH_MAX_ROUNDS)
        return BAD("reference: lsh_rounds %d must be in [1, %d]", d->lsh_rounds,
                   SPARCL_LSH_MAX_ROUNDS);
    if (d->lsh_buckets < 2 || d->lsh_buckets > SPARCL_LSH_MAX_BUCKETS || d->lsh_buckets % 2)
        return BAD("reference: lsh_buckets %d must be even and in [2, %d]", d->lsh_buckets,
                   SPARCL_LSH_MAX_BUCKETS);
    if (d->lsh_chunk < 1)
        return BAD("reference: lsh_chunk %d must be >= 1", d->lsh_chunk);
    if (d->q_len != d->kv_len || d->layout)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "reference: LSH attention needs q_len == kv_len and no layout");
    if (d->normalization != SPARCL_NORMALIZATION_SOFTMAX)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "reference: LSH attention is softmax "
                            "only");
    return SPARCL_OK;
#undef BAD
}

/* The bucket of row x in the round whose rotation is rot (dim x half):
 * the argmax of [x R; -x R] in float, each column one fmaf chain over
 * t = 0 .. dim-1, the smallest index on ties, NaN never winning. */
static int bucket_of(const float *x, int dim, const float *rot, int half)
{
    float best = -INFINITY;
    int at = 0;
    for (int c = 0; c < 2 * half; ++c) {
        const int col = c < half ? c : c - half;
        float acc = 0.0f;
        for (int t = 0; t < dim; ++t)
            acc = fmaf(x[t], rot[(size_t)t * (size_t)half + (size_t)col], acc);
        const float y = c < half ? acc : -acc;
        if (y > best) { /* in index order, so a tie keeps the earlier one */
            best = y;
            at = c;
        }
    }
    return at;
}

typedef struct keyed {
    int bucket, pos;
} keyed;

static int by_bucket_then_pos(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Buckets and sorted order of one (batch, head)'s n rows qh for every
 * round: bk and ord receive rounds x n entries.  tmp: n entries. */
static void order_head(const sparcl_plan_desc *d, const float *rot, const float *qh, int32_t *bk,
                       int32_t *ord, keyed *tmp)
{
    const int n = d->q_len, D = d->head_dim, half = d->lsh_buckets / 2;
    for (int r = 0; r < d->lsh_rounds; ++r) {
        const float *rr = rot + (size_t)r * (size_t)D * (size_t)half;
        for (int i = 0; i < n; ++i) {
            tmp[i].bucket = bucket_of(qh + (size_t)i * (size_t)D, D, rr, half);
            tmp[i].pos = i;
            bk[(size_t)r * (size_t)n + (size_t)i] = tmp[i].bucket;
        }
        qsort(tmp, (size_t)n, sizeof *tmp, by_bucket_then_pos);
        for (int p = 0; p < n; ++p)
            ord[(size_t)r * (size_t)n + (size_t)p] = tmp[p].pos;
    }
}

/* The rotations, and host arrays for one head's buckets and order. */
typedef struct scratch {
    float *rot;
    int32_t *bk, *ord;
    keyed *tmp;
} scratch;

static void scratch_free(scratch *s)
{
    free(s->rot);
    free(s->bk);
    free(s->ord);
    free(s->tmp);
}

static sparcl_status scratch_init(sparcl_ctx *ctx, const sparcl_plan_desc *d, scratch *s)
{
    memset(s, 0, sizeof *s);
    const int half = d->lsh_buckets / 2;
    const size_t rn = (size_t)d->lsh_rounds * (size_t)d->q_len;
    s->rot = malloc(sizeof *s->rot * sparcl__lsh_rotation_floats(d->lsh_rounds, d->head_dim, half));
    s->bk = malloc(sizeof *s->bk * rn);
    s->ord = malloc(sizeof *s->ord * rn);
    s->tmp = malloc(sizeof *s->tmp * (size_t)d->q_len);
    if (!s->rot || !s->bk || !s->ord || !s->tmp) {
        scratch_free(s);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory for LSH");
    }
    sparcl__lsh_draw(s->rot, d->lsh_rounds, d->head_dim, half, d->seed);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_reference_lsh_order(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                                    const float *q, int32_t *buckets,
                                                    int32_t *order)
{
    if (!desc || !q)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", !desc ? "desc" : "q");
    sparcl_plan_desc copy; /* only the fields of the caller's struct_size */
    sparcl_status st = sparcl__plan_desc_read(ctx, desc, &copy);
    const sparcl_plan_desc *d = &copy;
    if (st != SPARCL_OK || (st = sparcl__reference_check(ctx, d)) != SPARCL_OK ||
        (st = check(ctx, d)) != SPARCL_OK)
        return st;
    scratch s;
    if ((st = scratch_init(ctx, d, &s)) != SPARCL_OK)
        return st;
    const size_t n = (size_t)d->q_len, D = (size_t)d->head_dim, rn = (size_t)d->lsh_rounds * n;
    for (size_t bh = 0; bh < (size_t)d->batch * (size_t)d->q_heads; ++bh) {
        order_head(d, s.rot, q + bh * n * D, s.bk, s.ord, s.tmp);
        if (buckets)
            memcpy(buckets + bh * rn, s.bk, sizeof *s.bk * rn);
        if (order)
            memcpy(order + bh * rn, s.ord, sizeof *s.ord * rn);
    }
    scratch_free(&s);
    return SPARCL_OK;
}

/* Softmax attention of token i over the keys at sorted positions of its
 * window (round order ord, p its sorted position) into o (D doubles);
 * returns the lse.  qh, vh: the head's rows; knorm: 1/||q_j|| (0 for 0). */
static double attend(const sparcl_plan_desc *d, double scale, const float *qh, const float *vh,
                     const double *knorm, const int32_t *ord, int p, double *w, int32_t *keys,
                     double *o)
{
    const int n = d->q_len, D = d->head_dim, C = d->lsh_chunk, i = ord[p];
    const long c = p / C;
    const long lo = c > 0 ? (c - 1) * C : 0, hi = c * C + C < n ? c * C + C : n;
    int k = 0;
    for (long x = lo; x < hi; ++x) {
        const int j = ord[x];
        if (j != i && (!d->causal || j <= i))
            keys[k++] = j;
    }
    if (k == 0) /* nothing else: the token itself */
        keys[k++] = i;
    double mx = -INFINITY;
    for (int t = 0; t < k; ++t) {
        const float *qi = qh + (size_t)i * (size_t)D, *qj = qh + (size_t)keys[t] * (size_t)D;
        double dot = 0.0;
        for (int x = 0; x < D; ++x)
            dot += (double)qi[x] * (double)qj[x];
        w[t] = scale * dot * knorm[keys[t]];
        mx = w[t] > mx ? w[t] : mx;
    }
    double sum = 0.0;
    for (int t = 0; t < k; ++t)
        sum += w[t] = exp(w[t] - mx);
    for (int x = 0; x < D; ++x)
        o[x] = 0.0;
    for (int t = 0; t < k; ++t) {
        const float *vj = vh + (size_t)keys[t] * (size_t)D;
        for (int x = 0; x < D; ++x)
            o[x] += w[t] / sum * vj[x];
    }
    return mx + log(sum);
}

sparcl_status sparcl__reference_lsh_forward(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                            const float *q, const float *v, double *out,
                                            double *lse)
{
    sparcl_status st = check(ctx, d);
    scratch s;
    if (st != SPARCL_OK || (st = scratch_init(ctx, d, &s)) != SPARCL_OK)
        return st;
    const int n = d->q_len, D = d->head_dim, g = d->q_heads / d->kv_heads;
    const size_t un = (size_t)n, uD = (size_t)D;
    /* Per token: the running max and sum of the rounds' exp(lse), and the
     * weighted outputs (the LSE merge, done online over the rounds). */
    double *m = malloc(sizeof *m * un), *sw = malloc(sizeof *sw * un);
    double *knorm = malloc(sizeof *knorm * un), *w = malloc(sizeof *w * 2 * un);
    double *o = malloc(sizeof *o * uD);
    int32_t *keys = malloc(sizeof *keys * 2 * un);
    if (!m || !sw || !knorm || !w || !o || !keys) {
        st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "reference: no memory for LSH");
        goto done;
    }
    const double scale = sparcl__reference_scale(d);
    for (int b = 0; b < d->batch; ++b)
        for (int h = 0; h < d->q_heads; ++h) {
            const size_t bh = (size_t)b * (size_t)d->q_heads + (size_t)h;
            const float *qh = q + bh * un * uD;
            const float *vh = v + ((size_t)b * (size_t)d->kv_heads + (size_t)(h / g)) * un * uD;
            double *oh = out + bh * un * uD;
            for (int j = 0; j < n; ++j) {
                const float *qj = qh + (size_t)j * uD;
                double n2 = 0.0;
                for (int x = 0; x < D; ++x)
                    n2 += (double)qj[x] * qj[x];
                knorm[j] = n2 > 0.0 ? 1.0 / sqrt(n2) : 0.0;
                m[j] = -INFINITY;
                sw[j] = 0.0;
            }
            memset(oh, 0, sizeof *oh * un * uD);
            order_head(d, s.rot, qh, s.bk, s.ord, s.tmp);
            for (int r = 0; r < d->lsh_rounds; ++r) {
                const int32_t *ord = s.ord + (size_t)r * un;
                for (int p = 0; p < n; ++p) {
                    const int i = ord[p];
                    const double l = attend(d, scale, qh, vh, knorm, ord, p, w, keys, o);
                    double *oi = oh + (size_t)i * uD;
                    const double mn = l > m[i] ? l : m[i];
                    const double old = exp(m[i] - mn), add = exp(l - mn);
                    sw[i] = sw[i] * old + add;
                    for (int x = 0; x < D; ++x)
                        oi[x] = oi[x] * old + add * o[x];
                    m[i] = mn;
                }
            }
            for (int i = 0; i < n; ++i) {
                double *oi = oh + (size_t)i * uD;
                for (int x = 0; x < D; ++x)
                    oi[x] /= sw[i];
                if (lse)
                    lse[bh * un + (size_t)i] = m[i] + log(sw[i]);
            }
        }
done:
    free(m);
    free(sw);
    free(knorm);
    free(w);
    free(o);
    free(keys);
    scratch_free(&s);
    return st;
}
