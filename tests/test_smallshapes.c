/*
 * test_smallshapes.c -- every kernel family on small odd shapes (N = 17 and
 * 33, head_dim 24, a PARTIAL-block pattern, GQA) with CPU- and GPU-style
 * parameter sets.  Small enough to run under oclgrind, which CTest does as
 * the `oclgrind` test (memory, uninitialized-value and data-race checks);
 * on the default device it is an ordinary correctness suite.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>

#include "oracle.h"
#include "sparcl.h"

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

ParameterizedTestParameters(smallshapes, forward_window_gqa)
{
    static small cases[] = {
        {17, 0, 0, 0, 0, 0, 0},  {33, 1, 0, 0, 0, 0, 0},  {17, 1, 16, 32, 16, 4, 1},
        {33, 0, 8, 8, 8, 8, 1},  {33, 0, 4, 8, 32, 2, 0}, {17, 0, 1, 1, 8, 1, 1},
        {33, 1, 16, 16, 16, 1, 1}, {17, 0, 2, 8, 64, 1, 0},
    };
    return cr_make_param_array(small, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(small *s, smallshapes, forward_window_gqa)
{
    const int hq = 4, hkv = 2, D = 24, n = s->n;
    /* oclgrind 21.10's uninitialized-value plugin crashes on vector-typed
     * private arrays, so run_oclgrind.sh runs that check on VEC = 1 only. */
    if (getenv("SPARCL_TEST_SCALAR_ONLY") && s->vec != 1)
        cr_skip_test("vector configuration skipped (SPARCL_TEST_SCALAR_ONLY)");
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_log_info("device: %s", sparcl_ctx_device_string(ctx));
    sparcl_layout *l = NULL;
    /* block 4 makes PARTIAL blocks on both band edges */
    cr_assert_eq(sparcl_layout_init_window(ctx, &l, 1, n, n, 4, 5, 3), SPARCL_OK);
    sparcl_params p;
    sparcl_params_clear(&p);
    if (s->wg) {
        sparcl_params_set(&p, "WG_SIZE", s->wg);
        sparcl_params_set(&p, "BLOCK_M", s->bm);
        sparcl_params_set(&p, "BLOCK_N", s->bn);
        sparcl_params_set(&p, "VEC", s->vec);
        sparcl_params_set(&p, "USE_LOCAL", s->use_local);
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
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
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
