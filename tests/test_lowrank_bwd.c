/*
 * test_lowrank_bwd.c -- the backward of FAVOR+ and Linformer plans.  The
 * library's double reference (sparcl_reference_backward_proj) is checked
 * against central finite differences of the tests' own forward oracles
 * (oracle_favor, oracle_linformer) with the plan's features or
 * projections, including inputs large enough that the stabilizers and the
 * 1e-6 floor of the features change the result; then the plans' gradients
 * (dq, dk, dv, and Linformer's dE, dF) are checked against that reference
 * on odd shapes, GQA, causal FAVOR+ across several chunks, and two
 * parameter sets of each kind, and are bit-identical across runs.  Bad
 * arguments get clear statuses.  Shapes stay small: CLBlast builds its
 * kernels on first use.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "inputs.h"
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

/* attention: SPARCL_ATTENTION_FAVOR or _LINFORMER; m: features or
 * proj_len; amp: inputs uniform in [-amp, amp]; scale: 0 for 1/sqrt(dim). */
typedef struct bcase {
    int attention, batch, hq, hkv, n, kv, dim, causal, m;
    float amp, scale;
} bcase;

typedef struct problem {
    sparcl_plan_desc d;
    size_t nq, nk, ne;
    float *q, *k, *v, *dout, *e, *f;
} problem;

static problem make_problem(const bcase *c, uint64_t seed)
{
    problem p;
    memset(&p, 0, sizeof p);
    inputs_desc(&p.d, c->batch, c->hq, c->hkv, c->n, c->kv, c->dim);
    p.d.causal = c->causal;
    p.d.scale = c->scale;
    p.d.attention = c->attention;
    p.d.seed = seed;
    if (c->attention == SPARCL_ATTENTION_FAVOR)
        p.d.features = c->m;
    else
        p.d.proj_len = c->m;
    p.nq = (size_t)c->batch * c->hq * c->n * c->dim;
    p.nk = (size_t)c->batch * c->hkv * c->kv * c->dim;
    p.ne = (size_t)c->m * c->kv;
    p.q = inputs_filled(p.nq, seed + 1), p.k = inputs_filled(p.nk, seed + 2);
    p.v = inputs_filled(p.nk, seed + 3), p.dout = inputs_filled(p.nq, seed + 4);
    for (size_t i = 0; i < p.nq; ++i)
        p.q[i] *= c->amp;
    for (size_t i = 0; i < p.nk; ++i)
        p.k[i] *= c->amp;
    if (c->attention == SPARCL_ATTENTION_LINFORMER) {
        /* Given projections, so the reference and the oracle share them. */
        p.e = inputs_filled(p.ne, seed + 5), p.f = inputs_filled(p.ne, seed + 6);
        for (size_t i = 0; i < p.ne; ++i)
            p.e[i] /= sqrtf((float)c->kv), p.f[i] /= sqrtf((float)c->kv);
        p.d.proj_e = p.e;
        p.d.proj_f = p.f;
    }
    return p;
}

static void free_problem(problem *p)
{
    free(p->q), free(p->k), free(p->v), free(p->dout), free(p->e), free(p->f);
}

static double scale_of(const problem *p)
{
    return p->d.scale > 0.0f ? p->d.scale : 1.0 / sqrt((double)p->d.head_dim);
}

/* sum(dout * out) by the tests' oracle: the loss whose gradients the
 * backward computes.  omega: the FAVOR+ features. */
static double loss(const problem *p, const float *omega)
{
    const sparcl_plan_desc *d = &p->d;
    double *out = malloc(p->nq * 8);
    if (d->attention == SPARCL_ATTENTION_FAVOR)
        oracle_favor(d->batch, d->q_heads, d->kv_heads, d->q_len, d->kv_len, d->head_dim,
                     scale_of(p), d->causal, d->features, omega, p->q, p->k, p->v, out);
    else
        oracle_linformer(d->batch, d->q_heads, d->kv_heads, d->q_len, d->kv_len, d->head_dim,
                         scale_of(p), d->proj_len, p->e, p->f, p->q, p->k, p->v, out, NULL);
    double l = 0.0;
    for (size_t i = 0; i < p->nq; ++i)
        l += out[i] * p->dout[i];
    free(out);
    return l;
}

/* Central difference of the loss in x[i], divided by the step actually
 * taken in float. */
static double central(problem *p, const float *omega, float *x, size_t i)
{
    const float x0 = x[i], h = 1.0f / 256.0f;
    x[i] = x0 + h;
    const float up = x[i];
    const double lu = loss(p, omega);
    x[i] = x0 - h;
    const float down = x[i];
    const double ld = loss(p, omega);
    x[i] = x0;
    return (lu - ld) / ((double)up - (double)down);
}

/* Largest |a - b| over n, a float (af) or double (ad) results, b the
 * reference; *ref_max receives the largest |b| (for relative errors). */
static double max_diff(const float *af, const double *ad, const double *b, size_t n,
                       double *ref_max)
{
    double e = 0.0, r = 0.0;
    for (size_t i = 0; i < n; ++i) {
        e = fmax(e, fabs((af ? (double)af[i] : ad[i]) - b[i]));
        r = fmax(r, fabs(b[i]));
    }
    *ref_max = r;
    return e;
}

/* err relative to the largest reference value, floored at 0.01: a
 * gradient that is exactly 0 (one key: out = v whatever q and k) is
 * computed as float rounding noise of cancelling terms. */
static double relative(double err, double ref_max)
{
    return err / fmax(ref_max, 0.01);
}

ParameterizedTestParameters(lowrank_bwd, reference_matches_finite_differences)
{
    static bcase cases[] = {
        {SPARCL_ATTENTION_FAVOR, 1, 2, 1, 5, 9, 6, 0, 8, 1.0f, 0.0f},
        {SPARCL_ATTENTION_FAVOR, 1, 2, 1, 7, 7, 6, 1, 5, 1.0f, 0.0f},
        /* large inputs: the features fall towards their 1e-6 floor, so the
         * stabilizers' share of the gradient is not negligible */
        {SPARCL_ATTENTION_FAVOR, 1, 1, 1, 6, 6, 4, 1, 7, 3.0f, 1.0f},
        {SPARCL_ATTENTION_LINFORMER, 2, 2, 1, 5, 8, 6, 0, 3, 1.0f, 0.0f},
    };
    return cr_make_param_array(bcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(bcase *c, lowrank_bwd, reference_matches_finite_differences, .init = setup,
                  .fini = teardown)
{
    problem p = make_problem(c, 11);
    float *omega = NULL;
    if (c->attention == SPARCL_ATTENTION_FAVOR) {
        /* The plan of this descriptor holds the features the reference
         * draws from the same seed. */
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &p.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        omega = malloc(sizeof *omega * (size_t)c->m * c->dim);
        cr_assert_eq(sparcl_plan_read_features(plan, omega), SPARCL_OK);
        sparcl_plan_free(plan);
    }
    double *g[5] = {malloc(p.nq * 8), malloc(p.nk * 8), malloc(p.nk * 8), NULL, NULL};
    const int lin = c->attention == SPARCL_ATTENTION_LINFORMER;
    if (lin)
        g[3] = malloc(p.ne * 8), g[4] = malloc(p.ne * 8);
    cr_assert_eq(sparcl_reference_backward_proj(ctx, &p.d, p.q, p.k, p.v, p.dout, g[0], g[1], g[2],
                                                g[3], g[4]),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float *x[5] = {p.q, p.k, p.v, p.e, p.f};
    const size_t n[5] = {p.nq, p.nk, p.nk, p.ne, p.ne};
    static const char *names[5] = {"dq", "dk", "dv", "dE", "dF"};
    for (int t = 0; t < (lin ? 5 : 3); ++t) {
        double *fd = malloc(n[t] * 8);
        for (size_t i = 0; i < n[t]; ++i)
            fd[i] = central(&p, omega, x[t], i);
        double ref_max;
        const double err = max_diff(NULL, g[t], fd, n[t], &ref_max);
        cr_log_info("%s n %d causal %d amp %g: %s error %.2e of %.2e", lin ? "Linformer" : "FAVOR+",
                    c->n, c->causal, (double)c->amp, names[t], err, ref_max);
        cr_assert_gt(ref_max, 1e-3, "%s: finite differences all ~0", names[t]);
        cr_assert_leq(relative(err, ref_max), 1e-3, "%s: reference vs finite differences %g of %g",
                      names[t], err, ref_max);
        free(fd);
    }
    for (int t = 0; t < 5; ++t)
        free(g[t]);
    free(omega);
    free_problem(&p);
}

ParameterizedTestParameters(lowrank_bwd, plan_matches_reference)
{
    static bcase cases[] = {
        /* FAVOR+: lengths 1, 17, 113 (two causal chunks), GQA, q_len !=
         * kv_len, features 16 / 33 / 100 / 128 */
        {SPARCL_ATTENTION_FAVOR, 1, 1, 1, 1, 1, 72, 1, 16, 1.0f, 0.0f},
        {SPARCL_ATTENTION_FAVOR, 1, 2, 1, 17, 17, 100, 0, 33, 1.0f, 0.0f},
        {SPARCL_ATTENTION_FAVOR, 2, 2, 2, 113, 113, 72, 1, 100, 1.0f, 0.0f},
        {SPARCL_ATTENTION_FAVOR, 1, 4, 2, 113, 113, 100, 1, 16, 1.0f, 0.0f},
        {SPARCL_ATTENTION_FAVOR, 1, 1, 1, 17, 113, 72, 0, 128, 1.0f, 0.0f},
        /* Linformer: projections 1 / 17 / 64, GQA, lengths 1, 17, 113 */
        {SPARCL_ATTENTION_LINFORMER, 1, 4, 2, 113, 113, 72, 0, 17, 1.0f, 0.0f},
        {SPARCL_ATTENTION_LINFORMER, 2, 1, 1, 17, 113, 100, 0, 64, 1.0f, 0.0f},
        {SPARCL_ATTENTION_LINFORMER, 1, 2, 2, 1, 17, 72, 0, 17, 1.0f, 0.0f},
        {SPARCL_ATTENTION_LINFORMER, 1, 1, 1, 1, 1, 100, 0, 1, 1.0f, 0.0f},
    };
    return cr_make_param_array(bcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(bcase *c, lowrank_bwd, plan_matches_reference, .init = setup, .fini = teardown)
{
    problem p = make_problem(c, 21);
    const int lin = c->attention == SPARCL_ATTENTION_LINFORMER;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &p.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nl = (size_t)c->batch * c->hq * c->n;
    float *out = malloc(p.nq * 4), *lse = lin ? malloc(nl * 4) : NULL;
    cr_assert_eq(sparcl_plan_forward_host(plan, p.q, p.k, p.v, out, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    const size_t n[5] = {p.nq, p.nk, p.nk, lin ? p.ne : 0, lin ? p.ne : 0};
    float *got[2][5];
    double *ref[5];
    for (int t = 0; t < 5; ++t) {
        got[0][t] = n[t] ? malloc(n[t] * 4) : NULL;
        got[1][t] = n[t] ? malloc(n[t] * 4) : NULL;
        ref[t] = n[t] ? malloc(n[t] * 8) : NULL;
    }
    for (int run = 0; run < 2; ++run)
        cr_assert_eq(sparcl_plan_backward_proj_host(plan, p.q, p.k, p.v, out, lse, p.dout,
                                                    got[run][0], got[run][1], got[run][2],
                                                    got[run][3], got[run][4]),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_reference_backward_proj(ctx, &p.d, p.q, p.k, p.v, p.dout, ref[0], ref[1],
                                                ref[2], ref[3], ref[4]),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    static const char *names[5] = {"dq", "dk", "dv", "dE", "dF"};
    for (int t = 0; t < (lin ? 5 : 3); ++t) {
        double r;
        const double e = max_diff(got[0][t], NULL, ref[t], n[t], &r);
        cr_log_info("%s b %d h %d/%d n %d kv %d dim %d causal %d m %d: %s error %.2e of %.2e",
                    lin ? "Linformer" : "FAVOR+", c->batch, c->hq, c->hkv, c->n, c->kv, c->dim,
                    c->causal, c->m, names[t], e, r);
        cr_assert(isfinite(e), "%s: not finite", names[t]);
        cr_assert_leq(relative(e, r), 1e-3, "%s: error %g of %g", names[t], e, r);
        cr_assert_eq(memcmp(got[0][t], got[1][t], n[t] * 4), 0, "%s differs between runs",
                     names[t]);
    }
    for (int t = 0; t < 5; ++t)
        free(got[0][t]), free(got[1][t]), free(ref[t]);
    free(out), free(lse);
    sparcl_plan_free(plan);
    free_problem(&p);
}

/* Seeded Linformer projections: the reference draws what the plan draws;
 * sparcl_plan_write_projections() replaces them and the backward follows. */
Test(lowrank_bwd, linformer_seeded_and_written_projections, .init = setup, .fini = teardown)
{
    const bcase c = {SPARCL_ATTENTION_LINFORMER, 1, 2, 1, 17, 17, 72, 0, 5, 1.0f, 0.0f};
    problem p = make_problem(&c, 31);
    p.d.proj_e = p.d.proj_f = NULL; /* seeded */
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &p.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nl = (size_t)c.hq * c.n;
    float *out = malloc(p.nq * 4), *lse = malloc(nl * 4);
    float *dq = malloc(p.nq * 4), *dk = malloc(p.nk * 4), *dv = malloc(p.nk * 4);
    float *de = malloc(p.ne * 4);
    double *rq = malloc(p.nq * 8), *rk = malloc(p.nk * 8), *rv = malloc(p.nk * 8);
    double *re = malloc(p.ne * 8);
    for (int written = 0; written < 2; ++written) {
        if (written) { /* new E (p.e, unit scale), F kept */
            cr_assert_eq(sparcl_plan_write_projections(plan, p.e, NULL), SPARCL_OK, "%s",
                         sparcl_ctx_errmsg(ctx));
            float *back = malloc(p.ne * 4);
            cr_assert_eq(sparcl_plan_read_projections(plan, back, p.f), SPARCL_OK);
            cr_assert_eq(memcmp(back, p.e, p.ne * 4), 0, "E not written");
            free(back);
            p.d.proj_e = p.e;
            p.d.proj_f = p.f;
        }
        cr_assert_eq(sparcl_plan_forward_host(plan, p.q, p.k, p.v, out, lse), SPARCL_OK);
        cr_assert_eq(sparcl_plan_backward_proj_host(plan, p.q, p.k, p.v, out, lse, p.dout, dq, dk,
                                                    dv, de, NULL),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        cr_assert_eq(
            sparcl_reference_backward_proj(ctx, &p.d, p.q, p.k, p.v, p.dout, rq, rk, rv, re, NULL),
            SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        const float *got[4] = {dq, dk, dv, de};
        const double *want[4] = {rq, rk, rv, re};
        const size_t n[4] = {p.nq, p.nk, p.nk, p.ne};
        for (int t = 0; t < 4; ++t) {
            double r;
            const double e = max_diff(got[t], NULL, want[t], n[t], &r);
            cr_assert_leq(relative(e, r), 1e-3, "written %d tensor %d: error %g of %g", written, t,
                          e, r);
        }
    }
    free(out), free(lse), free(dq), free(dk), free(dv), free(de);
    free(rq), free(rk), free(rv), free(re);
    sparcl_plan_free(plan);
    free_problem(&p);
}

static cl_mem buffer(size_t floats)
{
    cl_int err;
    cl_mem m =
        clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE, floats * 4, NULL, &err);
    cr_assert_not_null(m, "clCreateBuffer %d", err);
    return m;
}

static void expect(sparcl_status got, sparcl_status want, const char *text)
{
    cr_assert_eq(got, want, "status %d, want %d: %s", got, want, sparcl_ctx_errmsg(ctx));
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), text), "message \"%s\" lacks \"%s\"",
              sparcl_ctx_errmsg(ctx), text);
}

Test(lowrank_bwd, bad_arguments, .init = setup, .fini = teardown)
{
    const bcase fc = {SPARCL_ATTENTION_FAVOR, 1, 1, 1, 17, 17, 8, 0, 16, 1.0f, 0.0f};
    const bcase lc = {SPARCL_ATTENTION_LINFORMER, 1, 1, 1, 17, 17, 8, 0, 5, 1.0f, 0.0f};
    problem fp = make_problem(&fc, 41), lp = make_problem(&lc, 42);
    sparcl_plan *favor = NULL, *lin = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &favor, &fp.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_init(ctx, &lin, &lp.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nt = 17 * 8;
    cl_mem q = buffer(nt), k = buffer(nt), v = buffer(nt), o = buffer(nt), lse = buffer(17);
    cl_mem dout = buffer(nt), dq = buffer(nt), dk = buffer(nt), dv = buffer(nt);
    cl_mem de = buffer(5 * 17), small = buffer(5 * 17 - 1);

    /* FAVOR+ writes no lse, takes no parameters and has no projections. */
    expect(sparcl_plan_backward(favor, q, k, v, o, lse, dout, dq, dk, dv, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "pass NULL as lse");
    expect(sparcl_plan_backward_proj(favor, NULL, q, k, v, o, NULL, dout, dq, dk, dv, de, NULL, 0,
                                     NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "only for Linformer");
    sparcl_params params;
    sparcl_params_clear(&params);
    cr_assert_eq(sparcl_params_set(&params, "BLOCK_M", 16), SPARCL_OK);
    expect(sparcl_plan_prepare_backward(favor, &params), SPARCL_ERR_INVALID_ARGUMENT,
           "no kernel parameters");
    sparcl_param_source source = SPARCL_PARAMS_OVERRIDE;
    cr_assert_eq(sparcl_plan_backward_params(favor, &params, &source), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(params.count, 0);
    cr_assert_eq(source, SPARCL_PARAMS_DEFAULT);

    /* Linformer needs its lse; dE must be big enough and not alias. */
    expect(sparcl_plan_backward_proj(lin, NULL, q, k, v, o, NULL, dout, dq, dk, dv, de, NULL, 0,
                                     NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "needs the forward's LSE");
    expect(sparcl_plan_backward_proj(lin, NULL, q, k, v, o, lse, dout, dq, dk, dv, small, NULL, 0,
                                     NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "dproj_e");
    expect(sparcl_plan_backward_proj(lin, NULL, q, k, v, o, lse, dout, dq, dk, dv, de, de, 0, NULL,
                                     NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "aliases");
    expect(sparcl_plan_write_projections(favor, fp.q, NULL), SPARCL_ERR_INVALID_ARGUMENT,
           "not a Linformer plan");

    /* The reference refuses what the plans refuse. */
    double *r = malloc(nt * 8 * 3), *re = malloc(5 * 17 * 8);
    expect(sparcl_reference_backward_proj(ctx, &fp.d, fp.q, fp.k, fp.v, fp.dout, r, r + nt,
                                          r + 2 * nt, re, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "Linformer only");
    sparcl_plan_desc bad = fp.d;
    bad.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    expect(sparcl_reference_backward(ctx, &bad, fp.q, fp.k, fp.v, fp.dout, r, r + nt, r + 2 * nt),
           SPARCL_ERR_NOT_SUPPORTED, "softmax only");
    bad = fp.d;
    bad.features = 0;
    expect(sparcl_reference_backward(ctx, &bad, fp.q, fp.k, fp.v, fp.dout, r, r + nt, r + 2 * nt),
           SPARCL_ERR_INVALID_ARGUMENT, "features 0");
    bad = lp.d;
    bad.proj_len = 18;
    expect(sparcl_reference_backward(ctx, &bad, lp.q, lp.k, lp.v, lp.dout, r, r + nt, r + 2 * nt),
           SPARCL_ERR_INVALID_ARGUMENT, "proj_len 18");
    free(r), free(re);

    cl_mem all[] = {q, k, v, o, lse, dout, dq, dk, dv, de, small};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        clReleaseMemObject(all[i]);
    sparcl_plan_free(favor);
    sparcl_plan_free(lin);
    free_problem(&fp);
    free_problem(&lp);
}
