/*
 * test_faults.c -- failure paths and numerical extremes: a kernel build
 * failure forced through the override API, shapes too large for the device,
 * huge scores, fully masked rows, a single key, a single query.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "sparcl.h"

static sparcl_ctx *ctx;
static void setup(void) { cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK); }
static void teardown(void) { sparcl_ctx_free(ctx); }

static sparcl_plan_desc shape(int lq, int lk, int dim)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = lq;
    d.kv_len = lk;
    d.head_dim = dim;
    return d;
}

Test(faults, forced_bad_parameter_gives_build_error_with_log, .init = setup, .fini = teardown)
{
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "VEC", 3); /* the kernel accepts 1, 2, 4, 8, 16 only */
    sparcl_plan_desc d = shape(17, 17, 24);
    d.params = &p;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_INVALID_ARGUMENT,
                 "checked parameters must be refused before building");
    cr_assert_str_eq(sparcl_ctx_build_log(ctx), "");
    d.unchecked_params = 1;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_BUILD, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_null(plan);
    cr_assert(strstr(sparcl_ctx_build_log(ctx), "VEC must be"), "log: %s",
              sparcl_ctx_build_log(ctx));
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "VEC=3"), "%s", sparcl_ctx_errmsg(ctx));
    /* The host-side guards stay on. */
    sparcl_params_set(&p, "BLOCK_M", 0);
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "BLOCK_M 0"));
    /* A good plan still builds afterwards on the same context. */
    d.params = NULL;
    d.unchecked_params = 0;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK);
    sparcl_plan_free(plan);
}

Test(faults, too_large_for_the_device, .init = setup, .fini = teardown)
{
    /* Dense 2^30 x 2^30 cannot even be tiled. */
    sparcl_plan_desc d = shape(1 << 30, 1 << 30, 64);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "tiles"), "%s", sparcl_ctx_errmsg(ctx));
    /* A sliding window over 2^21 tokens with heads of 256 plans fine (O(N)
     * layout), but with enough heads its tensors exceed the device's
     * largest allocation (8 heads, 16 GiB, on POCL; an H200 allows about
     * 35 GiB in one buffer): refused before anything is allocated or
     * enqueued, so the one-float host arrays below are never read. */
    int n = 1 << 21;
    cl_ulong max_alloc = 0;
    cr_assert_eq(clGetDeviceInfo(sparcl_ctx_cl_device(ctx), CL_DEVICE_MAX_MEM_ALLOC_SIZE,
                                 sizeof max_alloc, &max_alloc, NULL),
                 CL_SUCCESS);
    int heads = 8;
    while ((cl_ulong)heads * (cl_ulong)n * 256u * sizeof(float) <= max_alloc && heads < 4096)
        heads *= 2;
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_window(ctx, &l, 1, n, n, 64, 16, 0), SPARCL_OK);
    d = shape(n, n, 256);
    d.q_heads = d.kv_heads = heads;
    d.layout = l;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float dummy = 0;
    cr_assert_eq(sparcl_plan_forward_host(plan, &dummy, &dummy, &dummy, &dummy, NULL),
                 SPARCL_ERR_OUT_OF_MEMORY);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "largest allocation"), "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
}

static int mask_pred(const void *self, int h, int i, int j)
{
    (void)h;
    const int *w = self; /* block, nbc, then the mask */
    return w[2 + (i / w[0]) * w[1] + j / w[0]] != 0;
}

static void check_run(const sparcl_plan_desc *d, float amp, const int *maskinfo, double tol_out)
{
    size_t nq = (size_t)d->q_len * d->head_dim, nk = (size_t)d->kv_len * d->head_dim;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4);
    float *lse = malloc((size_t)d->q_len * 4);
    double *ro = malloc(nq * 8), *rl = malloc((size_t)d->q_len * 8);
    oracle_fill(q, nq, 5);
    oracle_fill(k, nk, 6);
    oracle_fill(v, nk, 7);
    for (size_t i = 0; i < nq; ++i)
        q[i] *= amp;
    for (size_t i = 0; i < nk; ++i)
        k[i] *= amp;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, lse), SPARCL_OK);
    double scale = d->scale > 0 ? d->scale : 1.0 / sqrt(d->head_dim);
    oracle_attention(1, 1, 1, d->q_len, d->kv_len, d->head_dim, scale, mask_pred, maskinfo, q, k,
                     v, ro, rl);
    for (size_t i = 0; i < nq; ++i) {
        cr_assert(isfinite(o[i]), "out[%zu] = %g", i, o[i]);
        cr_assert_float_eq(o[i], ro[i], tol_out, "out[%zu]", i);
    }
    for (int r = 0; r < d->q_len; ++r) {
        if (isinf(rl[r])) {
            cr_assert(isinf(lse[r]) && lse[r] < 0, "row %d lse %g", r, lse[r]);
            for (int x = 0; x < d->head_dim; ++x)
                cr_assert_eq(o[(size_t)r * d->head_dim + x], 0.0f);
        } else {
            cr_assert(fabs(lse[r] - rl[r]) <= 1e-4 + 1e-6 * fabs(rl[r]), "lse[%d] %g vs %g", r,
                      lse[r], rl[r]);
        }
    }
    sparcl_plan_free(plan);
    free(q), free(k), free(v), free(o), free(lse), free(ro), free(rl);
}

Test(faults, huge_scores_and_masked_rows, .init = setup, .fini = teardown)
{
    /* |scores| up to ~1e4: amplitude 25 in q and k, dim 16, scale 1. */
    enum { LQ = 37, LK = 29, B = 8, NBR = 5, NBC = 4 };
    int info[2 + NBR * NBC] = {B, NBC};
    uint8_t mask[NBR * NBC] = {0};
    for (int r = 0; r < NBR; ++r)
        for (int c = 0; c < NBC; ++c)
            mask[r * NBC + c] = info[2 + r * NBC + c] = r != 2 && (r + c) % 2 == 0;
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_block_mask(ctx, &l, 1, LQ, LK, B, mask), SPARCL_OK);
    sparcl_plan_desc d = shape(LQ, LK, 16);
    d.layout = l;
    d.scale = 1.0f;
    /* Near one-hot weights: a score error of 1 ulp of 1e4 moves a weight by
     * ~1e-3 when two scores tie, hence the looser output bound here. */
    check_run(&d, 25.0f, info, 5e-3);
    sparcl_layout_free(l);
}

static int all_pred(const void *self, int h, int i, int j)
{
    (void)self, (void)h, (void)i, (void)j;
    return 1;
}

Test(faults, single_key_and_single_query, .init = setup, .fini = teardown)
{
    int dims[] = {1, 7, 64, 256};
    for (int t = 0; t < 4; ++t) {
        sparcl_plan_desc d = shape(17, 1, dims[t]);
        size_t nq = (size_t)17 * dims[t];
        float *q = malloc(nq * 4), *k = malloc(dims[t] * 4), *v = malloc(dims[t] * 4);
        float *o = malloc(nq * 4), lse[17];
        double *ro = malloc(nq * 8), rl[17];
        oracle_fill(q, nq, 1), oracle_fill(k, dims[t], 2), oracle_fill(v, dims[t], 3);
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK);
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, lse), SPARCL_OK);
        oracle_attention(1, 1, 1, 17, 1, dims[t], 1.0 / sqrt(dims[t]), all_pred, NULL, q, k, v,
                         ro, rl);
        cr_assert_leq(oracle_max_abs_diff_f(o, ro, nq), 1e-4);
        cr_assert_leq(oracle_max_abs_diff_f(lse, rl, 17), 1e-4);
        sparcl_plan_free(plan);
        free(q), free(k), free(v), free(o), free(ro);
    }
    /* one query against many keys */
    sparcl_plan_desc d = shape(1, 1023, 100);
    int info[2 + 1 * 1] = {4096, 1, 1};
    check_run(&d, 1.0f, info, 1e-4);
}
