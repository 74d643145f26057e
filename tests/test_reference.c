/*
 * test_reference.c -- the library's CPU reference against hand-computed
 * values and against the brute-force test oracle.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "oracle.h"
#include "sparcl.h"

static sparcl_plan_desc shape(int hq, int hkv, int lq, int lk, int d)
{
    sparcl_plan_desc desc;
    sparcl_plan_desc_init(&desc);
    desc.q_heads = hq;
    desc.kv_heads = hkv;
    desc.q_len = lq;
    desc.kv_len = lk;
    desc.head_dim = d;
    return desc;
}

Test(reference, two_keys_by_hand)
{
    /* q = 1, keys 0 and 1, values 1 and 3, scale 1:
     * weights 1/(1+e), e/(1+e) -> out = (1 + 3e) / (1 + e), lse = log(1 + e). */
    sparcl_plan_desc d = shape(1, 1, 1, 2, 1);
    d.scale = 1.0f;
    float q[1] = {1}, k[2] = {0, 1}, v[2] = {1, 3};
    double out[1], lse[1];
    cr_assert_eq(sparcl_reference_forward(NULL, &d, q, k, v, out, lse), SPARCL_OK);
    double e = exp(1.0);
    cr_assert_float_eq(out[0], (1 + 3 * e) / (1 + e), 1e-12);
    cr_assert_float_eq(lse[0], log(1 + e), 1e-12);
}

Test(reference, causal_by_hand)
{
    /* 2 x 2 causal: row 0 sees key 0 only (out = v0, lse = s00); row 1 sees
     * both with equal scores (q1 = 0): out = mean, lse = log 2. */
    sparcl_plan_desc d = shape(1, 1, 2, 2, 1);
    d.causal = 1;
    d.scale = 1.0f;
    float q[2] = {2, 0}, k[2] = {0.5f, -1}, v[2] = {4, 8};
    double out[2], lse[2];
    cr_assert_eq(sparcl_reference_forward(NULL, &d, q, k, v, out, lse), SPARCL_OK);
    cr_assert_float_eq(out[0], 4.0, 1e-12);
    cr_assert_float_eq(lse[0], 1.0, 1e-12);
    cr_assert_float_eq(out[1], 6.0, 1e-12);
    cr_assert_float_eq(lse[1], log(2.0), 1e-12);
}

Test(reference, fully_masked_row_is_zero_with_minus_inf_lse)
{
    /* causal with kv_len < q_len: query 0 sits before key 0. */
    sparcl_plan_desc d = shape(1, 1, 3, 2, 2);
    d.causal = 1;
    float q[6] = {1, 1, 1, 1, 1, 1}, k[4] = {1, 2, 3, 4}, v[4] = {5, 6, 7, 8};
    double out[6], lse[3];
    cr_assert_eq(sparcl_reference_forward(NULL, &d, q, k, v, out, lse), SPARCL_OK);
    cr_assert_eq(out[0], 0.0);
    cr_assert_eq(out[1], 0.0);
    cr_assert(isinf(lse[0]) && lse[0] < 0);
    cr_assert(isfinite(lse[1]));
    cr_assert_float_eq(out[2], 5.0, 1e-12); /* query 1 sees only key 0 */
}

static int window_pred(const void *self, int h, int i, int j)
{
    (void)h;
    const int *w = self; /* q_len, kv_len, left, right */
    int pos = i + w[1] - w[0];
    return j >= pos - w[2] && j <= pos + w[3];
}

Test(reference, matches_oracle_on_window_gqa)
{
    int hq = 4, hkv = 2, lq = 23, lk = 31, dim = 7;
    sparcl_plan_desc d = shape(hq, hkv, lq, lk, dim);
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_window(NULL, &l, 1, lq, lk, 5, 3, 2), SPARCL_OK);
    d.layout = l;
    size_t nq = (size_t)hq * lq * dim, nk = (size_t)hkv * lk * dim;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
    oracle_fill(q, nq, 1);
    oracle_fill(k, nk, 2);
    oracle_fill(v, nk, 3);
    double *a = malloc(nq * 8), *b = malloc(nq * 8), la[92], lb[92];
    cr_assert_eq(sparcl_reference_forward(NULL, &d, q, k, v, a, la), SPARCL_OK);
    int w[4] = {lq, lk, 3, 2};
    oracle_attention(1, hq, hkv, lq, lk, dim, 1.0 / sqrt(dim), window_pred, w, q, k, v, b, lb);
    for (size_t i = 0; i < nq; ++i)
        cr_assert_float_eq(a[i], b[i], 1e-12, "element %zu", i);
    for (int i = 0; i < hq * lq; ++i)
        cr_assert_float_eq(la[i], lb[i], 1e-12);
    sparcl_layout_free(l);
    free(q), free(k), free(v), free(a), free(b);
}
