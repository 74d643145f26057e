/*
 * test_lowrank.c -- FAVOR+ and Linformer plans.  FAVOR+: the algebra is
 * exact for the plan's own features (read back and fed to a double oracle
 * with the same stabilization), causal and not, with GQA and batches; the
 * approximation of exact softmax attention improves from m = 16 to m = 256
 * averaged over seeds; features are orthogonal per block, seeded, and
 * redrawn on demand.  Linformer: against a double oracle with given and
 * with seeded projections.  Bad descriptors are refused at plan creation.
 * CLBlast builds its kernels on first use (cached by POCL afterwards), so
 * shapes stay small.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "oracle_kinds.h"
#include "sparcl.h"

static sparcl_ctx *ctx;

static void setup(void)
{
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
}

static void teardown(void)
{
    sparcl_ctx_free(ctx);
}

typedef struct shape {
    int batch, hq, hkv, n, kv, dim, causal, m; /* m: features or proj_len */
} shape;

typedef struct tensors {
    size_t nq, nk;
    float *q, *k, *v, *o;
    double *ro;
} tensors;

static tensors make_tensors(const shape *s, uint64_t seed)
{
    tensors t;
    t.nq = (size_t)s->batch * s->hq * s->n * s->dim;
    t.nk = (size_t)s->batch * s->hkv * s->kv * s->dim;
    t.q = malloc(t.nq * 4), t.k = malloc(t.nk * 4), t.v = malloc(t.nk * 4);
    t.o = malloc(t.nq * 4), t.ro = malloc(t.nq * 8);
    oracle_fill(t.q, t.nq, seed);
    oracle_fill(t.k, t.nk, seed + 1);
    oracle_fill(t.v, t.nk, seed + 2);
    return t;
}

static void free_tensors(tensors *t)
{
    free(t->q), free(t->k), free(t->v), free(t->o), free(t->ro);
}

static sparcl_plan_desc make_desc(const shape *s, int attention, uint64_t seed)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = s->batch;
    d.q_heads = s->hq;
    d.kv_heads = s->hkv;
    d.q_len = s->n;
    d.kv_len = s->kv;
    d.head_dim = s->dim;
    d.causal = s->causal;
    d.attention = attention;
    d.seed = seed;
    if (attention == SPARCL_ATTENTION_FAVOR)
        d.features = s->m;
    else
        d.proj_len = s->m;
    return d;
}

ParameterizedTestParameters(lowrank, favor_exact_for_its_features)
{
    static shape cases[] = {
        {1, 2, 1, 17, 17, 16, 0, 16},  {2, 2, 2, 113, 113, 72, 0, 100},
        {1, 1, 1, 239, 239, 16, 1, 64}, {1, 4, 2, 113, 113, 100, 1, 33},
        {1, 1, 1, 17, 113, 16, 0, 24},  {1, 1, 1, 1, 1, 256, 1, 8},
    };
    return cr_make_param_array(shape, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(shape *s, lowrank, favor_exact_for_its_features, .init = setup,
                  .fini = teardown)
{
    sparcl_plan_desc d = make_desc(s, SPARCL_ATTENTION_FAVOR, 7);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float *omega = malloc(sizeof *omega * (size_t)s->m * s->dim);
    cr_assert_eq(sparcl_plan_read_features(plan, omega), SPARCL_OK);
    tensors t = make_tensors(s, 40);
    cr_assert_eq(sparcl_plan_forward_host(plan, t.q, t.k, t.v, t.o, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    oracle_favor(s->batch, s->hq, s->hkv, s->n, s->kv, s->dim, 1.0 / sqrt(s->dim), s->causal,
                 s->m, omega, t.q, t.k, t.v, t.ro);
    const double err = oracle_max_abs_diff_f(t.o, t.ro, t.nq);
    cr_log_info("FAVOR+ n %d dim %d m %d causal %d: error %.2e", s->n, s->dim, s->m, s->causal,
                err);
    cr_assert_leq(err, 1e-4, "error %g", err);
    free_tensors(&t);
    free(omega);
    sparcl_plan_free(plan);
}

static int all_pred(const void *self, int h, int i, int j)
{
    (void)self, (void)h, (void)i, (void)j;
    return 1;
}

static int causal_pred(const void *self, int h, int i, int j)
{
    (void)self, (void)h;
    return j <= i;
}

Test(lowrank, favor_error_falls_with_features, .init = setup, .fini = teardown)
{
    for (int causal = 0; causal < 2; ++causal) {
        shape s = {1, 2, 2, 64, 64, 16, causal, 0};
        tensors t = make_tensors(&s, 50);
        oracle_attention(1, 2, 2, 64, 64, 16, 0.25, causal ? causal_pred : all_pred, NULL, t.q,
                         t.k, t.v, t.ro, NULL);
        const int ms[2] = {16, 256};
        double mean[2] = {0, 0};
        enum { SEEDS = 4 };
        for (int a = 0; a < 2; ++a)
            for (uint64_t seed = 1; seed <= SEEDS; ++seed) {
                s.m = ms[a];
                sparcl_plan_desc d = make_desc(&s, SPARCL_ATTENTION_FAVOR, seed);
                sparcl_plan *plan = NULL;
                cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s",
                             sparcl_ctx_errmsg(ctx));
                cr_assert_eq(sparcl_plan_forward_host(plan, t.q, t.k, t.v, t.o, NULL), SPARCL_OK);
                double e = 0.0;
                for (size_t x = 0; x < t.nq; ++x)
                    e += fabs(t.o[x] - t.ro[x]);
                mean[a] += e / (double)t.nq / SEEDS;
                sparcl_plan_free(plan);
            }
        cr_log_info("causal %d: mean abs error m=16 %.4f, m=256 %.4f", causal, mean[0], mean[1]);
        cr_assert_lt(mean[1], 0.5 * mean[0], "m=256 error %g is not well below m=16 error %g",
                     mean[1], mean[0]);
        cr_assert_lt(mean[1], 0.05, "m=256 error %g is not small", mean[1]);
        free_tensors(&t);
    }
}

Test(lowrank, favor_features_orthogonal_seeded_redrawn, .init = setup, .fini = teardown)
{
    shape s = {1, 1, 1, 17, 17, 16, 0, 40}; /* two full blocks of 16 and one of 8 */
    sparcl_plan_desc d = make_desc(&s, SPARCL_ATTENTION_FAVOR, 99);
    sparcl_plan *a = NULL, *b = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &a, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_init(ctx, &b, &d), SPARCL_OK);
    float wa[40 * 16], wb[40 * 16], wc[40 * 16];
    cr_assert_eq(sparcl_plan_read_features(a, wa), SPARCL_OK);
    cr_assert_eq(sparcl_plan_read_features(b, wb), SPARCL_OK);
    cr_assert_eq(memcmp(wa, wb, sizeof wa), 0, "same seed, different features");
    for (int i = 0; i < 40; ++i)
        for (int j = i + 1; j < 40 && j / 16 == i / 16; ++j) {
            double dot = 0, ni = 0, nj = 0;
            for (int x = 0; x < 16; ++x) {
                dot += wa[i * 16 + x] * wa[j * 16 + x];
                ni += wa[i * 16 + x] * wa[i * 16 + x];
                nj += wa[j * 16 + x] * wa[j * 16 + x];
            }
            cr_assert_leq(fabs(dot) / sqrt(ni * nj), 1e-5, "rows %d and %d not orthogonal", i, j);
        }
    tensors t = make_tensors(&s, 60);
    float *o2 = malloc(t.nq * 4);
    cr_assert_eq(sparcl_plan_forward_host(a, t.q, t.k, t.v, t.o, NULL), SPARCL_OK);
    cr_assert_eq(sparcl_plan_redraw(a, 100), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_read_features(a, wc), SPARCL_OK);
    cr_assert_neq(memcmp(wa, wc, sizeof wa), 0, "redraw kept the features");
    cr_assert_eq(sparcl_plan_forward_host(a, t.q, t.k, t.v, o2, NULL), SPARCL_OK);
    cr_assert_neq(memcmp(t.o, o2, t.nq * 4), 0, "redraw did not change the output");
    oracle_favor(1, 1, 1, 17, 17, 16, 0.25, 0, 40, wc, t.q, t.k, t.v, t.ro);
    cr_assert_leq(oracle_max_abs_diff_f(o2, t.ro, t.nq), 1e-4, "redrawn features not used");
    free(o2);
    free_tensors(&t);
    sparcl_plan_free(a);
    sparcl_plan_free(b);
}

ParameterizedTestParameters(lowrank, linformer_matches_oracle)
{
    static shape cases[] = {
        {1, 4, 2, 113, 113, 72, 0, 17},
        {2, 1, 1, 17, 239, 16, 0, 64},
        {1, 2, 2, 1, 17, 100, 0, 17},
        {1, 1, 1, 239, 239, 256, 0, 1},
    };
    return cr_make_param_array(shape, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(shape *s, lowrank, linformer_matches_oracle, .init = setup, .fini = teardown)
{
    const size_t ne = (size_t)s->m * s->kv;
    float *e = malloc(ne * 4), *f = malloc(ne * 4);
    tensors t = make_tensors(s, 70);
    const size_t nl = (size_t)s->batch * s->hq * s->n;
    float *lse = malloc(nl * 4);
    double *rl = malloc(nl * 8);
    for (int given = 0; given < 2; ++given) {
        sparcl_plan_desc d = make_desc(s, SPARCL_ATTENTION_LINFORMER, 5);
        if (given) { /* unit-scale projections of our own */
            oracle_fill(e, ne, 80);
            oracle_fill(f, ne, 81);
            for (size_t x = 0; x < ne; ++x)
                e[x] /= sqrtf((float)s->kv), f[x] /= sqrtf((float)s->kv);
            d.proj_e = e;
            d.proj_f = f;
        }
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        if (!given)
            cr_assert_eq(sparcl_plan_read_projections(plan, e, f), SPARCL_OK);
        cr_assert_eq(sparcl_plan_forward_host(plan, t.q, t.k, t.v, t.o, lse), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        oracle_linformer(s->batch, s->hq, s->hkv, s->n, s->kv, s->dim, 1.0 / sqrt(s->dim), s->m, e,
                         f, t.q, t.k, t.v, t.ro, rl);
        const double eo = oracle_max_abs_diff_f(t.o, t.ro, t.nq);
        const double el = oracle_max_abs_diff_f(lse, rl, nl);
        cr_log_info("Linformer n %d kv %d k %d given %d: out %.2e lse %.2e", s->n, s->kv, s->m,
                    given, eo, el);
        cr_assert_leq(eo, 1e-4, "out error %g", eo);
        cr_assert_leq(el, 1e-4, "lse error %g", el);
        sparcl_plan_free(plan);
    }
    free(e), free(f), free(lse), free(rl);
    free_tensors(&t);
}

#define EXPECT(d, status, word)                                                              \
    do {                                                                                     \
        sparcl_plan *p_ = (sparcl_plan *)1;                                                  \
        sparcl_status s_ = sparcl_plan_init(ctx, &p_, &(d));                                 \
        cr_assert_eq(s_, status, "gave %d: %s", s_, sparcl_ctx_errmsg(ctx));                 \
        cr_assert_null(p_);                                                                  \
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), word), "message \"%s\" lacks \"%s\"",       \
                  sparcl_ctx_errmsg(ctx), word);                                             \
    } while (0)

Test(lowrank, bad_descriptors_are_refused, .init = setup, .fini = teardown)
{
    const shape s = {1, 2, 1, 17, 17, 16, 0, 8};
    sparcl_plan_desc d = make_desc(&s, SPARCL_ATTENTION_FAVOR, 1);
    d.features = 0;
    EXPECT(d, SPARCL_ERR_INVALID_ARGUMENT, "features 0");
    d.features = SPARCL_MAX_FEATURES + 1;
    EXPECT(d, SPARCL_ERR_INVALID_ARGUMENT, "features");
    d = make_desc(&s, SPARCL_ATTENTION_FAVOR, 1);
    d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    EXPECT(d, SPARCL_ERR_NOT_SUPPORTED, "FAVOR+");
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &l, 1, 17, 17, 4), SPARCL_OK);
    d = make_desc(&s, SPARCL_ATTENTION_FAVOR, 1);
    d.layout = l;
    EXPECT(d, SPARCL_ERR_NOT_SUPPORTED, "layout");
    d = make_desc(&s, SPARCL_ATTENTION_LINFORMER, 1);
    d.layout = l;
    EXPECT(d, SPARCL_ERR_NOT_SUPPORTED, "layout");
    sparcl_layout_free(l);
    d = make_desc(&s, SPARCL_ATTENTION_LINFORMER, 1);
    d.causal = 1;
    EXPECT(d, SPARCL_ERR_NOT_SUPPORTED, "causal Linformer");
    d.causal = 0;
    d.proj_len = 18;
    EXPECT(d, SPARCL_ERR_INVALID_ARGUMENT, "proj_len 18");
    d.proj_len = 0;
    EXPECT(d, SPARCL_ERR_INVALID_ARGUMENT, "proj_len 0");
    d.proj_len = 4;
    const float e[4 * 17] = {0};
    d.proj_e = e;
    EXPECT(d, SPARCL_ERR_INVALID_ARGUMENT, "proj_f");
    d = make_desc(&s, SPARCL_ATTENTION_FAVOR, 1);
    d.causal = 1;
    d.kv_len = 33;
    EXPECT(d, SPARCL_ERR_NOT_SUPPORTED, "q_len 17 == kv_len 33");
    d = make_desc(&s, 5, 1);
    EXPECT(d, SPARCL_ERR_INVALID_ARGUMENT, "attention 5");

    /* A FAVOR+ plan refuses an lse buffer; a softmax plan has nothing to redraw. */
    d = make_desc(&s, SPARCL_ATTENTION_FAVOR, 1);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float q[2 * 17 * 16] = {0}, kv[17 * 16] = {0}, o[2 * 17 * 16], lse[2 * 17];
    cr_assert_eq(sparcl_plan_forward_host(plan, q, kv, kv, o, lse), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "lse"), "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_read_projections(plan, NULL, NULL), SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_plan_free(plan);
    d = make_desc(&s, SPARCL_ATTENTION_EXACT, 1);
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK);
    cr_assert_eq(sparcl_plan_redraw(plan, 3), SPARCL_ERR_INVALID_ARGUMENT);
    float w[8 * 16];
    cr_assert_eq(sparcl_plan_read_features(plan, w), SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_plan_free(plan);
}
