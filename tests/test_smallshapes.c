/*
 * test_smallshapes.c -- every kernel family on small odd shapes (N = 17 and
 * 33, head_dim 24, a PARTIAL-block pattern, GQA) with CPU- and GPU-style
 * parameter sets: the forward, and the backward (dQ, dK, dV).  Small enough to run under oclgrind, which CTest does as
 * the `oclgrind` test (memory, uninitialized-value and data-race checks);
 * on the default device it is an ordinary correctness suite.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>

#include "backward_check.h"
#include "oracle.h"
#include "oracle_kinds.h"
#include "sparcl.h"

enum { HQ = 4, HKV = 2, DIM = 24 };

typedef struct small {
    int n, causal;
    int wg, bm, bn, vec, use_local; /* wg == 0: device defaults */
} small;

static int window_pred(const void *self, int h, int i, int j)
{
    (void)h;
    const small *s = self;
    return j >= i - 5 && j <= i + 3 && (!s->causal || j <= i);
}

/* CPU- and GPU-style sets valid for both the forward and the backward
 * schema (the backward also needs BLOCK_N / WG_SIZE <= 16). */
static small cases[] = {
    {17, 0, 0, 0, 0, 0, 0},    {33, 1, 0, 0, 0, 0, 0},  {17, 1, 16, 32, 16, 4, 1},
    {33, 0, 8, 8, 8, 8, 1},    {33, 0, 4, 8, 32, 2, 0}, {17, 0, 1, 1, 8, 1, 1},
    {33, 1, 16, 16, 16, 1, 1}, {17, 0, 2, 8, 32, 1, 0},
};

ParameterizedTestParameters(smallshapes, forward_window_gqa)
{
    return cr_make_param_array(small, cases, sizeof cases / sizeof cases[0]);
}

/* Skips vector configurations under SPARCL_TEST_SCALAR_ONLY, then makes a
 * context and a window plan (block 4: PARTIAL blocks on both band edges)
 * with the case's parameters for the forward and, when bwd, the backward
 * (the forward feeds the backward, so both honour SCALAR_ONLY). */
static sparcl_plan *make_plan(const small *s, int bwd, sparcl_ctx **ctx, sparcl_layout **l)
{
    /* oclgrind 21.10's uninitialized-value plugin crashes on vector-typed
     * private arrays, so run_oclgrind.sh runs that check on scalar
     * configurations only: VEC = 1, and for the backward (whose lanes run
     * across rows and keys) one row and one key per work-item. */
    if (getenv("SPARCL_TEST_SCALAR_ONLY") &&
        (s->vec != 1 || (bwd && (s->bm != s->wg || s->bn != s->wg))))
        cr_skip_test("vector configuration skipped (SPARCL_TEST_SCALAR_ONLY)");
    cr_assert_eq(sparcl_ctx_init(ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_log_info("device: %s", sparcl_ctx_device_string(*ctx));
    cr_assert_eq(sparcl_layout_init_window(*ctx, l, 1, s->n, s->n, 4, 5, 3), SPARCL_OK);
    sparcl_params p; /* the backward's; the forward's adds VEC */
    sparcl_params_clear(&p);
    if (s->wg) {
        sparcl_params_set(&p, "WG_SIZE", s->wg);
        sparcl_params_set(&p, "BLOCK_M", s->bm);
        sparcl_params_set(&p, "BLOCK_N", s->bn);
        sparcl_params_set(&p, "USE_LOCAL", s->use_local);
    }
    sparcl_params fp = p;
    if (s->wg)
        sparcl_params_set(&fp, "VEC", s->vec);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = HQ;
    d.kv_heads = HKV;
    d.q_len = d.kv_len = s->n;
    d.head_dim = DIM;
    d.causal = s->causal;
    d.layout = *l;
    d.params = s->wg ? &fp : NULL;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(*ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(*ctx));
    if (bwd)
        cr_assert_eq(sparcl_plan_prepare_backward(plan, s->wg ? &p : NULL), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(*ctx));
    return plan;
}

ParameterizedTest(small *s, smallshapes, forward_window_gqa)
{
    const int hq = HQ, hkv = HKV, D = DIM, n = s->n;
    sparcl_ctx *ctx = NULL;
    sparcl_layout *l = NULL;
    sparcl_plan *plan = make_plan(s, 0, &ctx, &l);
    size_t nq = (size_t)hq * n * D, nk = (size_t)hkv * n * D, nl = (size_t)hq * n;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4);
    float *lse = malloc(nl * 4);
    double *ro = malloc(nq * 8), *rl = malloc(nl * 8);
    oracle_fill(q, nq, 1);
    oracle_fill(k, nk, 2);
    oracle_fill(v, nk, 3);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    oracle_attention(1, hq, hkv, n, n, D, 1.0 / sqrt(D), window_pred, s, q, k, v, ro, rl);
    cr_assert_leq(oracle_max_abs_diff_f(o, ro, nq), 1e-4);
    cr_assert_leq(oracle_max_abs_diff_f(lse, rl, nl), 1e-4);
    free(q), free(k), free(v), free(o), free(lse), free(ro), free(rl);
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

/* Four of them keep the oclgrind run short: the default, and three
 * local-memory sets (vector lanes with 16 work-items, 8 keys per
 * work-item, and the scalar one the uninitialized-value pass runs). */
ParameterizedTestParameters(smallshapes, backward_window_gqa)
{
    static small bwd_cases[4];
    const int pick[4] = {1, 2, 5, 6};
    for (int i = 0; i < 4; ++i)
        bwd_cases[i] = cases[pick[i]];
    return cr_make_param_array(small, bwd_cases, 4);
}

/* The backward against the library's reference backward (itself checked
 * against an explicit-Jacobian oracle in test_backward.c). */
ParameterizedTest(small *s, smallshapes, backward_window_gqa)
{
    sparcl_ctx *ctx = NULL;
    sparcl_layout *l = NULL;
    sparcl_plan *plan = make_plan(s, 1, &ctx, &l);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = HQ, d.kv_heads = HKV, d.q_len = d.kv_len = s->n, d.head_dim = DIM;
    d.causal = s->causal, d.layout = l;
    double err = backward_check(ctx, plan, &d, 40);
    cr_assert(err >= 0 && err <= 1e-4, "error %g: %s", err, sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

/* The sparse normalizations' backward (attn_entmax_bwd) on the same window:
 * 1.5-entmax with vector lanes (8 rows, 16 keys, VEC 4 over 4 work-items)
 * and sparsemax with the scalar set the uninitialized-value pass runs. */
typedef struct small_entmax_bwd {
    int norm, wg, bm, bn, vec;
} small_entmax_bwd;

ParameterizedTestParameters(smallshapes, entmax_backward_window_gqa)
{
    static small_entmax_bwd ecases[] = {
        {SPARCL_NORMALIZATION_ENTMAX15, 4, 8, 16, 4},
        {SPARCL_NORMALIZATION_SPARSEMAX, 1, 1, 1, 1},
    };
    return cr_make_param_array(small_entmax_bwd, ecases, 2);
}

ParameterizedTest(small_entmax_bwd *e, smallshapes, entmax_backward_window_gqa)
{
    if (getenv("SPARCL_TEST_SCALAR_ONLY") && e->vec != 1)
        cr_skip_test("vector configuration skipped (SPARCL_TEST_SCALAR_ONLY)");
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_window(ctx, &l, 1, 17, 17, 4, 5, 3), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = HQ, d.kv_heads = HKV, d.q_len = d.kv_len = 17, d.head_dim = DIM;
    d.layout = l, d.causal = 1, d.normalization = e->norm;
    sparcl_params fp, bp;
    sparcl_params_clear(&fp);
    sparcl_params_set(&fp, "VEC", 1); /* the forward feeds the backward */
    d.params = &fp;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_params_clear(&bp);
    sparcl_params_set(&bp, "WG_SIZE", e->wg);
    sparcl_params_set(&bp, "BLOCK_M", e->bm);
    sparcl_params_set(&bp, "BLOCK_N", e->bn);
    sparcl_params_set(&bp, "VEC", e->vec);
    cr_assert_eq(sparcl_plan_prepare_backward(plan, &bp), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    d.params = NULL;
    double err = backward_check(ctx, plan, &d, 50);
    cr_assert(err >= 0 && err <= 1e-4, "error %g: %s", err, sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

/* Sparse normalizations: both solver paths (TOPK 4 forces grid passes). */
typedef struct small_entmax {
    int n, causal, norm, alpha100;
    int wg, bm, bn, vec, topk; /* wg == 0: device defaults */
} small_entmax;

ParameterizedTestParameters(smallshapes, entmax_window_gqa)
{
    static small_entmax cases[] = {
        {17, 0, SPARCL_NORMALIZATION_SPARSEMAX, 0, 0, 0, 0, 0, 0},
        {33, 1, SPARCL_NORMALIZATION_ENTMAX15, 0, 4, 8, 16, 1, 4},
        {17, 0, SPARCL_NORMALIZATION_ENTMAX, 140, 2, 4, 8, 1, 4},
        {33, 0, SPARCL_NORMALIZATION_SPARSEMAX, 0, 1, 2, 32, 8, 8},
    };
    return cr_make_param_array(small_entmax, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(small_entmax *s, smallshapes, entmax_window_gqa)
{
    const int hq = 4, hkv = 2, D = 24, n = s->n;
    if (getenv("SPARCL_TEST_SCALAR_ONLY") && s->vec != 1)
        cr_skip_test("vector configuration skipped (SPARCL_TEST_SCALAR_ONLY)");
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_window(ctx, &l, 1, n, n, 4, 5, 3), SPARCL_OK);
    sparcl_params p;
    sparcl_params_clear(&p);
    if (s->wg) {
        sparcl_params_set(&p, "WG_SIZE", s->wg);
        sparcl_params_set(&p, "BLOCK_M", s->bm);
        sparcl_params_set(&p, "BLOCK_N", s->bn);
        sparcl_params_set(&p, "VEC", s->vec);
        sparcl_params_set(&p, "TOPK", s->topk);
    }
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = hq;
    d.kv_heads = hkv;
    d.q_len = d.kv_len = n;
    d.head_dim = D;
    d.causal = s->causal;
    d.layout = l;
    d.params = s->wg ? &p : NULL;
    d.normalization = s->norm;
    d.alpha = s->alpha100 / 100.0f;
    const double alpha = s->norm == SPARCL_NORMALIZATION_SPARSEMAX  ? 2.0
                         : s->norm == SPARCL_NORMALIZATION_ENTMAX15 ? 1.5
                                                                    : (double)d.alpha;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    size_t nq = (size_t)hq * n * D, nk = (size_t)hkv * n * D, nl = (size_t)hq * n;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4);
    float *tau = malloc(nl * 4);
    double *ro = malloc(nq * 8), *rt = malloc(nl * 8);
    oracle_fill(q, nq, 4);
    oracle_fill(k, nk, 5);
    oracle_fill(v, nk, 6);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, tau), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    small ws = {n, s->causal, 0, 0, 0, 0, 0};
    oracle_entmax_attention(1, hq, hkv, n, n, D, 1.0 / sqrt(D), alpha, window_pred, &ws, q, k, v,
                            ro, rt);
    cr_assert_leq(oracle_max_abs_diff_f(o, ro, nq), 1e-4);
    cr_assert_leq(oracle_max_abs_diff_f(tau, rt, nl), 1e-4);
    free(q), free(k), free(v), free(o), free(tau), free(ro), free(rt);
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

/* FAVOR+ (against its own features) and Linformer (given projections):
 * the small kernels of cl/favor.cl, the inner dense plan, CLBlast. */
typedef struct small_lowrank {
    int attention, n, kv, causal, m;
} small_lowrank;

ParameterizedTestParameters(smallshapes, lowrank_gqa)
{
    static small_lowrank cases[] = {
        {SPARCL_ATTENTION_FAVOR, 17, 17, 0, 24},
        {SPARCL_ATTENTION_FAVOR, 33, 33, 1, 8},
        {SPARCL_ATTENTION_LINFORMER, 17, 33, 0, 5},
    };
    return cr_make_param_array(small_lowrank, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(small_lowrank *s, smallshapes, lowrank_gqa)
{
    const int hq = 4, hkv = 2, D = 24;
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = hq;
    d.kv_heads = hkv;
    d.q_len = s->n;
    d.kv_len = s->kv;
    d.head_dim = D;
    d.causal = s->causal;
    d.attention = s->attention;
    d.features = d.proj_len = s->m;
    const size_t ne = (size_t)s->m * (size_t)(s->kv > D ? s->kv : D);
    float *e = malloc(ne * 4), *f = malloc(ne * 4);
    oracle_fill(e, ne, 7);
    oracle_fill(f, ne, 8);
    /* The inner attention plan of Linformer takes the parameters; VEC = 1
     * keeps it inside what oclgrind's uninitialized-value check handles. */
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "VEC", 1);
    if (s->attention == SPARCL_ATTENTION_LINFORMER)
        d.proj_e = e, d.proj_f = f, d.params = &p;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    size_t nq = (size_t)hq * s->n * D, nk = (size_t)hkv * s->kv * D;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4);
    double *ro = malloc(nq * 8);
    oracle_fill(q, nq, 9);
    oracle_fill(k, nk, 10);
    oracle_fill(v, nk, 11);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    if (s->attention == SPARCL_ATTENTION_FAVOR) {
        cr_assert_eq(sparcl_plan_read_features(plan, e), SPARCL_OK);
        oracle_favor(1, hq, hkv, s->n, s->kv, D, 1.0 / sqrt(D), s->causal, s->m, e, q, k, v, ro);
    } else {
        oracle_linformer(1, hq, hkv, s->n, s->kv, D, 1.0 / sqrt(D), s->m, e, f, q, k, v, ro,
                         NULL);
    }
    cr_assert_leq(oracle_max_abs_diff_f(o, ro, nq), 1e-4);
    free(e), free(f), free(q), free(k), free(v), free(o), free(ro);
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
}

/* Split-KV decoding (attn_decode): q_len 1 and 3 over 33 keys of a window
 * layout, 2 splits, the CPU shape (one work-item per group) and GPU shapes
 * (WG_SIZE lanes across the head dimension, local-memory sums and
 * barriers; 24 dimensions over 16 lanes leave some lanes one vector
 * short). */
typedef struct small_decode {
    int q_len, wg, vec;
} small_decode;

static int decode_pred(const void *self, int h, int i, int j)
{
    (void)h;
    const int pos = i + 33 - ((const small_decode *)self)->q_len;
    return j >= pos - 5 && j <= pos + 3;
}

ParameterizedTestParameters(smallshapes, decode_window_gqa)
{
    static small_decode cases[] = {{1, 1, 1}, {3, 16, 1}, {1, 4, 2}, {3, 8, 1}};
    return cr_make_param_array(small_decode, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(small_decode *s, smallshapes, decode_window_gqa)
{
    /* The data-race and memory pass runs every set; the uninitialized-value
     * pass (SCALAR_ONLY) none: oclgrind 21.10's plugin stops with
     * "Unsupported instruction: freeze" on the freeze LLVM emits for
     * attn_decode's row arithmetic, and the merge then reads what the
     * stopped kernel never wrote. */
    if (getenv("SPARCL_TEST_SCALAR_ONLY"))
        cr_skip_test("attn_decode skipped in oclgrind's uninitialized-value pass");
    const int hq = HQ, hkv = HKV, D = DIM, n = 33;
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_window(ctx, &l, 1, s->q_len, n, 4, 5, 3), SPARCL_OK);
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "SPLITS", 2);
    sparcl_params_set(&p, "BLOCK_N", 8);
    sparcl_params_set(&p, "WG_SIZE", s->wg);
    sparcl_params_set(&p, "VEC", s->vec);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = hq;
    d.kv_heads = hkv;
    d.q_len = s->q_len;
    d.kv_len = n;
    d.head_dim = D;
    d.layout = l;
    d.params = &p;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    size_t nq = (size_t)hq * s->q_len * D, nk = (size_t)hkv * n * D, nl = (size_t)hq * s->q_len;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4);
    float *lse = malloc(nl * 4);
    double *ro = malloc(nq * 8), *rl = malloc(nl * 8);
    oracle_fill(q, nq, 4);
    oracle_fill(k, nk, 5);
    oracle_fill(v, nk, 6);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    oracle_attention(1, hq, hkv, s->q_len, n, D, 1.0 / sqrt(D), decode_pred, s, q, k, v, ro, rl);
    cr_assert_leq(oracle_max_abs_diff_f(o, ro, nq), 1e-4);
    cr_assert_leq(oracle_max_abs_diff_f(lse, rl, nl), 1e-4);
    free(q), free(k), free(v), free(o), free(lse), free(ro), free(rl);
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}
