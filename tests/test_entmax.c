/*
 * test_entmax.c -- sparsemax, 1.5-entmax and alpha-entmax plans against the
 * tests' sort-based (alpha = 2, 1.5) and bisection (other alphas) oracle on
 * odd shapes and several layouts, with parameter sets that take both the
 * first-pass path (support within TOPK) and the grid passes (TOPK = 4);
 * properties read off one-hot values (weights sum to 1, exact zeros where
 * the oracle has zeros, invariance to a constant added to a row's scores);
 * fully masked rows; the library's reference; bad alphas.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "oracle_kinds.h"
#include "sparcl.h"

enum { L_DENSE, L_CAUSAL, L_WINDOW, L_MASK };

typedef struct ecase {
    int batch, hq, hkv, n, kv, dim, layout;
    int norm;      /* sparcl_normalization */
    int alpha100;  /* alpha * 100 for SPARCL_NORMALIZATION_ENTMAX */
    int topk, bm, bn, wg, vec; /* topk == 0: defaults */
} ecase;

#define BLK 8
#define WIN_L 9
#define WIN_R 4

/* Block row 1 is empty in every head: its queries attend to nothing. */
static int mask_block(int h, int r, int c)
{
    return r != 1 && (r * 7 + c * 3 + h) % 4 != 0;
}

static int pred(const void *self, int h, int i, int j)
{
    const ecase *e = self;
    const int pos = i + (e->kv - e->n);
    switch (e->layout) {
    case L_CAUSAL:
        return j <= pos;
    case L_WINDOW:
        return j - pos >= -WIN_L && j - pos <= WIN_R;
    case L_MASK:
        return mask_block(h, i / BLK, j / BLK);
    default:
        return 1;
    }
}

static sparcl_layout *make_layout(sparcl_ctx *ctx, const ecase *e)
{
    sparcl_layout *l = NULL;
    sparcl_status st = SPARCL_OK;
    if (e->layout == L_CAUSAL)
        st = sparcl_layout_init_causal(ctx, &l, 1, e->n, e->kv, 4);
    else if (e->layout == L_WINDOW) /* block 4: PARTIAL blocks on both edges */
        st = sparcl_layout_init_window(ctx, &l, 1, e->n, e->kv, 4, WIN_L, WIN_R);
    else if (e->layout == L_MASK) {
        const int nbr = (e->n + BLK - 1) / BLK, nbc = (e->kv + BLK - 1) / BLK;
        uint8_t *m = malloc((size_t)e->hq * nbr * nbc);
        for (int h = 0; h < e->hq; ++h)
            for (int r = 0; r < nbr; ++r)
                for (int c = 0; c < nbc; ++c)
                    m[((size_t)h * nbr + r) * nbc + c] = (uint8_t)mask_block(h, r, c);
        st = sparcl_layout_init_block_mask(ctx, &l, e->hq, e->n, e->kv, BLK, m);
        free(m);
    }
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    return l;
}

/* The alpha the plan sees: a float. */
static double alpha_of(const ecase *e)
{
    return e->norm == SPARCL_NORMALIZATION_SPARSEMAX  ? 2.0
           : e->norm == SPARCL_NORMALIZATION_ENTMAX15 ? 1.5
                                                      : (double)(float)(e->alpha100 / 100.0);
}

static sparcl_plan_desc make_desc(const ecase *e, const sparcl_layout *l, sparcl_params *p)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = e->batch;
    d.q_heads = e->hq;
    d.kv_heads = e->hkv;
    d.q_len = e->n;
    d.kv_len = e->kv;
    d.head_dim = e->dim;
    d.layout = l;
    d.normalization = e->norm;
    d.alpha = (float)(e->alpha100 / 100.0);
    sparcl_params_clear(p);
    if (e->topk) {
        sparcl_params_set(p, "TOPK", e->topk);
        sparcl_params_set(p, "BLOCK_M", e->bm);
        sparcl_params_set(p, "BLOCK_N", e->bn);
        sparcl_params_set(p, "WG_SIZE", e->wg);
        sparcl_params_set(p, "VEC", e->vec);
        d.params = p;
    }
    return d;
}

ParameterizedTestParameters(entmax, matches_oracle)
{
    static ecase cases[] = {
        {1, 1, 1, 17, 17, 16, L_DENSE, SPARCL_NORMALIZATION_SPARSEMAX, 0, 0, 0, 0, 0, 0},
        {1, 4, 2, 113, 113, 72, L_CAUSAL, SPARCL_NORMALIZATION_ENTMAX15, 0, 0, 0, 0, 0, 0},
        {1, 2, 1, 239, 239, 100, L_WINDOW, SPARCL_NORMALIZATION_ENTMAX, 130, 0, 0, 0, 0, 0},
        {2, 2, 2, 1, 17, 256, L_DENSE, SPARCL_NORMALIZATION_SPARSEMAX, 0, 0, 0, 0, 0, 0},
        {1, 2, 1, 17, 113, 16, L_MASK, SPARCL_NORMALIZATION_SPARSEMAX, 0, 4, 4, 8, 1, 4},
        {1, 1, 1, 113, 113, 16, L_DENSE, SPARCL_NORMALIZATION_ENTMAX15, 0, 4, 2, 16, 1, 8},
        {1, 2, 2, 239, 239, 72, L_CAUSAL, SPARCL_NORMALIZATION_ENTMAX, 175, 8, 4, 32, 2, 2},
        {1, 1, 1, 1023, 1023, 16, L_CAUSAL, SPARCL_NORMALIZATION_SPARSEMAX, 0, 0, 0, 0, 0, 0},
        {1, 2, 2, 113, 239, 100, L_MASK, SPARCL_NORMALIZATION_ENTMAX15, 0, 16, 8, 64, 4, 1},
        {1, 1, 1, 17, 239, 256, L_WINDOW, SPARCL_NORMALIZATION_ENTMAX, 200, 0, 0, 0, 0, 0},
        {1, 1, 1, 113, 113, 16, L_DENSE, SPARCL_NORMALIZATION_ENTMAX, 120, 4, 4, 8, 1, 16},
        {1, 4, 1, 17, 17, 72, L_DENSE, SPARCL_NORMALIZATION_ENTMAX, 150, 64, 16, 16, 16, 4},
    };
    return cr_make_param_array(ecase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(ecase *e, entmax, matches_oracle)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = make_layout(ctx, e);
    sparcl_params p;
    sparcl_plan_desc d = make_desc(e, l, &p);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nq = (size_t)e->batch * e->hq * e->n * e->dim;
    const size_t nk = (size_t)e->batch * e->hkv * e->kv * e->dim;
    const size_t nl = (size_t)e->batch * e->hq * e->n;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4);
    float *tau = malloc(nl * 4);
    double *ro = malloc(nq * 8), *rt = malloc(nl * 8), *lo = malloc(nq * 8), *lt = malloc(nl * 8);
    oracle_fill(q, nq, 11);
    oracle_fill(k, nk, 12);
    oracle_fill(v, nk, 13);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, tau), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    oracle_entmax_attention(e->batch, e->hq, e->hkv, e->n, e->kv, e->dim, 1.0 / sqrt(e->dim),
                            alpha_of(e), pred, e, q, k, v, ro, rt);
    const double eo = oracle_max_abs_diff_f(o, ro, nq), et = oracle_max_abs_diff_f(tau, rt, nl);
    cr_log_info("n %d kv %d dim %d alpha %.2f: out err %.2e, tau err %.2e", e->n, e->kv, e->dim,
                alpha_of(e), eo, et);
    cr_expect_leq(eo, 1e-4, "out error %g", eo);
    cr_expect_leq(et, 1e-4, "tau error %g", et);
    /* The library's own reference agrees with the oracle too. */
    cr_assert_eq(sparcl_reference_forward(ctx, &d, q, k, v, lo, lt), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    for (size_t x = 0; x < nq; ++x)
        cr_assert_leq(fabs(lo[x] - ro[x]), 1e-9, "reference out[%zu] %.17g vs %.17g", x, lo[x], ro[x]);
    for (size_t x = 0; x < nl; ++x)
        cr_assert(lt[x] == rt[x] || fabs(lt[x] - rt[x]) <= 1e-9, "reference tau[%zu]", x);
    free(q), free(k), free(v), free(o), free(tau), free(ro), free(rt), free(lo), free(lt);
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

/* With one-hot values (v_j = e_j) the output row is the weight vector. */
typedef struct pcase {
    int layout, norm, alpha100, topk;
} pcase;

ParameterizedTestParameters(entmax, properties)
{
    static pcase cases[] = {
        {L_DENSE, SPARCL_NORMALIZATION_SPARSEMAX, 0, 0},
        {L_WINDOW, SPARCL_NORMALIZATION_SPARSEMAX, 0, 4},
        {L_DENSE, SPARCL_NORMALIZATION_ENTMAX15, 0, 4},
        {L_CAUSAL, SPARCL_NORMALIZATION_ENTMAX15, 0, 0},
        {L_DENSE, SPARCL_NORMALIZATION_ENTMAX, 130, 4},
        {L_WINDOW, SPARCL_NORMALIZATION_ENTMAX, 180, 0},
    };
    return cr_make_param_array(pcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(pcase *c, entmax, properties)
{
    enum { N = 23, D = 24 };
    ecase e = {1, 1, 1, N, N, D, c->layout, c->norm, c->alpha100, c->topk, 2, 8, 1, 4};
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = make_layout(ctx, &e);
    sparcl_params p;
    sparcl_plan_desc d = make_desc(&e, l, &p);
    d.scale = 3.0f; /* wide score spread: small supports */
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float q[N * D], k[N * D], v[N * D] = {0}, o[N * D], o2[N * D];
    double ro[N * D];
    oracle_fill(q, N * D, 21);
    oracle_fill(k, N * D, 22);
    for (int j = 0; j < N; ++j) {
        v[j * D + j] = 1.0f;
        k[j * D + D - 1] = 1.0f; /* q[.][D-1] then shifts every score of a row */
        q[j * D + D - 1] = 0.0f;
    }
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    oracle_entmax_attention(1, 1, 1, N, N, D, 3.0, alpha_of(&e), pred, &e, q, k, v, ro, NULL);
    int zeros = 0, support = 0;
    for (int i = 0; i < N; ++i) {
        double sum = 0.0;
        for (int j = 0; j < N; ++j) {
            const float w = o[i * D + j];
            cr_assert_geq(w, 0.0f, "row %d weight %d is %g", i, j, w);
            sum += w;
            if (ro[i * D + j] == 0.0) {
                cr_assert_eq(w, 0.0f, "row %d key %d: oracle weight 0, kernel %g", i, j, w);
                ++zeros;
            } else {
                cr_assert_gt(w, 0.0f, "row %d key %d: oracle weight %g, kernel 0", i, j,
                             ro[i * D + j]);
                ++support;
            }
            cr_assert_leq(fabs(w - ro[i * D + j]), 1e-4);
        }
        cr_assert_leq(fabs(sum - 1.0), 1e-5, "row %d sums to %.8f", i, sum);
    }
    cr_log_info("%d zeros, %d in support", zeros, support);
    cr_assert_gt(zeros, 0, "the case should produce sparse rows");
    /* Adding 0.9 * 3 to every score of a row changes nothing. */
    for (int i = 0; i < N; ++i)
        q[i * D + D - 1] = 0.9f;
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o2, NULL), SPARCL_OK);
    for (int x = 0; x < N * D; ++x)
        cr_assert_leq(fabsf(o2[x] - o[x]), 1e-5, "shift changed element %d: %g vs %g", x, o2[x],
                      o[x]);
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

Test(entmax, masked_rows_give_zero_and_minus_inf_tau)
{
    ecase e = {1, 2, 1, 24, 24, 16, L_MASK, SPARCL_NORMALIZATION_SPARSEMAX, 0, 0, 0, 0, 0, 0};
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = make_layout(ctx, &e);
    sparcl_params p;
    sparcl_plan_desc d = make_desc(&e, l, &p);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float q[2 * 24 * 16], k[24 * 16], v[24 * 16], o[2 * 24 * 16], tau[2 * 24];
    oracle_fill(q, sizeof q / 4, 31);
    oracle_fill(k, sizeof k / 4, 32);
    oracle_fill(v, sizeof v / 4, 33);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, tau), SPARCL_OK);
    for (int h = 0; h < 2; ++h)
        for (int i = 0; i < 24; ++i) {
            const int empty = i / BLK == 1;
            cr_assert_eq(isinf(tau[h * 24 + i]) && tau[h * 24 + i] < 0, empty, "row %d tau %g", i,
                         tau[h * 24 + i]);
            for (int x = 0; x < 16 && empty; ++x)
                cr_assert_eq(o[(h * 24 + i) * 16 + x], 0.0f);
        }
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

Test(entmax, bad_alpha_and_normalization_are_rejected)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = 17;
    d.head_dim = 16;
    d.normalization = SPARCL_NORMALIZATION_ENTMAX;
    const float bad[] = {1.0f, 0.5f, 2.01f, -1.0f, NAN, INFINITY};
    sparcl_plan *plan = (sparcl_plan *)1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        d.alpha = bad[i];
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_INVALID_ARGUMENT,
                     "alpha %g accepted", (double)bad[i]);
        cr_assert_null(plan);
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), "alpha"), "%s", sparcl_ctx_errmsg(ctx));
    }
    d.normalization = 9;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "normalization 9"), "%s", sparcl_ctx_errmsg(ctx));
    /* TOPK is checked against its schema. */
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "TOPK", 5);
    d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    d.params = &p;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "TOPK 5"), "%s", sparcl_ctx_errmsg(ctx));
    /* The backward's parameters are checked against their own schema
     * (test_entmax_bwd.c has the backward itself). */
    d.params = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_prepare_backward(plan, &p), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "unknown parameter TOPK for kernel attn_entmax_bwd"),
              "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
}

/* The library's reference (the tuner's oracle) stays finite for scores
 * around 1e30, where m - 1 == m in double: with one key far above the
 * others, sparsemax and 1.5-entmax put all the weight on it, as the kernel
 * does. */
Test(entmax, reference_is_finite_at_huge_scores)
{
    enum { N = 17, D = 16 };
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    static float q[N * D], k[N * D], v[N * D], o[N * D], tau[N];
    static double ref[N * D], rtau[N];
    oracle_fill(v, N * D, 41);
    for (int i = 0; i < N * D; ++i) {
        q[i] = 1e15f;
        k[i] = 1e14f * (float)(1 + (i / D) % 7); /* key scores 4e30 x (1..7), ties */
    }
    for (int d = 0; d < D; ++d)
        k[5 * D + d] = 2e15f; /* key 5 alone on top */
    const int norms[2] = {SPARCL_NORMALIZATION_SPARSEMAX, SPARCL_NORMALIZATION_ENTMAX15};
    for (int t = 0; t < 2; ++t) {
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_len = d.kv_len = N;
        d.head_dim = D;
        d.normalization = norms[t];
        cr_assert_eq(sparcl_reference_forward(ctx, &d, q, k, v, ref, rtau), SPARCL_OK);
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, tau), SPARCL_OK);
        for (int i = 0; i < N; ++i) {
            cr_assert(isfinite(rtau[i]), "norm %d row %d: reference tau %g", norms[t], i,
                      rtau[i]);
            for (int x = 0; x < D; ++x) {
                const double want = v[5 * D + x];
                cr_assert(isfinite(ref[i * D + x]) && fabs(ref[i * D + x] - want) <= 1e-6,
                          "norm %d row %d: reference %g, want %g", norms[t], i, ref[i * D + x],
                          want);
                cr_assert(fabs(o[i * D + x] - want) <= 1e-4, "norm %d row %d: kernel %g", norms[t],
                          i, o[i * D + x]);
            }
        }
        sparcl_plan_free(plan);
    }
    sparcl_ctx_free(ctx);
}
