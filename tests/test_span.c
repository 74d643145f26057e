/*
 * test_span.c -- adaptive attention span (SPARCL_ATTENTION_SPAN).  The
 * library's double reference is checked against this file's own oracle of
 * the forward (written in the log domain, s + log m, over j <= pos(i)) and
 * against central finite differences of that oracle in q, k, v and the
 * spans; then the plans' out, lse, dq, dk, dv and dspans are checked
 * against the reference on odd shapes (q_len 1, 17, 113, one 1023; head
 * dims 72 and 100; GQA; q_len != kv_len both ways), spans of 0, fractional
 * and beyond the sequence, and three parameter sets; dspans against finite
 * differences of the plan's own forward (spans replaced with
 * sparcl_plan_write_spans); keys beyond a span are never read (NaN there
 * changes nothing); bad spans and ramps are refused naming the field.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "inputs.h"
#include "oracle.h"
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

#define MAX_HEADS 4

/* A problem: shapes, the ramp, the spans of up to MAX_HEADS q heads. */
typedef struct scase {
    int batch, hq, hkv, n, kv, dim;
    float ramp;
    float spans[MAX_HEADS];
} scase;

typedef struct problem {
    sparcl_plan_desc d;
    size_t nq, nk, nl;
    float *q, *k, *v, *dout;
} problem;

static problem make_problem(const scase *c, uint64_t seed)
{
    problem p;
    memset(&p, 0, sizeof p);
    inputs_desc(&p.d, c->batch, c->hq, c->hkv, c->n, c->kv, c->dim);
    p.d.causal = 1;
    p.d.attention = SPARCL_ATTENTION_SPAN;
    p.d.span_ramp = c->ramp;
    p.d.spans = c->spans;
    p.nl = (size_t)c->batch * c->hq * c->n;
    p.nq = p.nl * c->dim;
    p.nk = (size_t)c->batch * c->hkv * c->kv * c->dim;
    p.q = inputs_filled(p.nq, seed + 1), p.k = inputs_filled(p.nk, seed + 2);
    p.v = inputs_filled(p.nk, seed + 3), p.dout = inputs_filled(p.nq, seed + 4);
    return p;
}

static void free_problem(problem *p)
{
    free(p->q), free(p->k), free(p->v), free(p->dout);
}

/* The oracle: out = sum_j softmax_j(s_j + log m_j) v_j over j <= pos(i)
 * with m_j > 0, spans in double (so that finite differences in z need no
 * float step); returns sum(dout * out), the loss of the gradient tests. */
static double oracle_loss(const problem *p, const double *z, double *out)
{
    const sparcl_plan_desc *d = &p->d;
    const int D = d->head_dim, g = d->q_heads / d->kv_heads;
    const double scale = 1.0 / sqrt((double)D), R = d->span_ramp;
    double *t = malloc(sizeof *t * (size_t)d->kv_len), loss = 0.0;
    for (int b = 0; b < d->batch; ++b)
        for (int h = 0; h < d->q_heads; ++h)
            for (int i = 0; i < d->q_len; ++i) {
                const size_t row = ((size_t)b * d->q_heads + h) * d->q_len + i;
                const size_t kvh = ((size_t)b * d->kv_heads + h / g) * d->kv_len * D;
                const long pos = (long)i + d->kv_len - d->q_len;
                double mx = -INFINITY, sum = 0.0;
                for (long j = 0; j <= pos && j < d->kv_len; ++j) {
                    const double m = fmin(1.0, (R + z[h] - (double)(pos - j)) / R);
                    t[j] = -INFINITY;
                    if (m <= 0.0)
                        continue;
                    double s = 0.0;
                    for (int x = 0; x < D; ++x)
                        s += (double)p->q[row * D + x] * p->k[kvh + j * D + x];
                    t[j] = s * scale + log(m);
                    mx = fmax(mx, t[j]);
                }
                for (long j = 0; j <= pos && j < d->kv_len; ++j)
                    sum += t[j] == -INFINITY ? 0.0 : exp(t[j] - mx);
                for (int x = 0; x < D; ++x) {
                    double o = 0.0;
                    for (long j = 0; j <= pos && j < d->kv_len; ++j)
                        if (t[j] != -INFINITY)
                            o += exp(t[j] - mx) / sum * p->v[kvh + j * D + x];
                    if (out)
                        out[row * D + x] = o;
                    loss += o * p->dout[row * D + x];
                }
            }
    free(t);
    return loss;
}

static void spans_double(const scase *c, double *z)
{
    for (int h = 0; h < MAX_HEADS; ++h)
        z[h] = c->spans[h];
}

/* Largest |a - b| (a float or double) relative to max(1, largest |b|). */
static double rel_err_f(const float *a, const double *b, size_t n)
{
    double e = 0.0, r = 1.0;
    for (size_t i = 0; i < n; ++i) {
        const double d = fabs((double)a[i] - b[i]);
        e = d <= e ? e : d; /* NaN wins */
        r = fmax(r, fabs(b[i]));
    }
    return e / r;
}

static double rel_err_d(const double *a, const double *b, size_t n)
{
    double e = 0.0, r = 1.0;
    for (size_t i = 0; i < n; ++i) {
        e = fmax(e, fabs(a[i] - b[i]));
        r = fmax(r, fabs(b[i]));
    }
    return e / r;
}

Test(span, reference_matches_oracle_and_finite_differences, .init = setup, .fini = teardown)
{
    /* GQA, q_len < kv_len, a span of 0, fractional spans, one past the
     * sequence; spans and ramp chosen so that no distance sits on a kink
     * (x = z or z + R) within the finite-difference steps. */
    static const scase c = {2, 4, 2, 6, 9, 5, 2.5f, {0.0f, 1.3f, 3.7f, 20.0f}};
    problem p = make_problem(&c, 3);
    double z[MAX_HEADS];
    spans_double(&c, z);
    double *oo = malloc(p.nq * 8), *ro = malloc(p.nq * 8), *lse = malloc(p.nl * 8);
    oracle_loss(&p, z, oo);
    cr_assert_eq(sparcl_reference_forward(ctx, &p.d, p.q, p.k, p.v, ro, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_expect_leq(rel_err_d(ro, oo, p.nq), 1e-12, "reference forward vs oracle: %g",
                  rel_err_d(ro, oo, p.nq));
    double *g[4] = {malloc(p.nq * 8), malloc(p.nk * 8), malloc(p.nk * 8), malloc(MAX_HEADS * 8)};
    cr_assert_eq(
        sparcl_reference_backward_span(ctx, &p.d, p.q, p.k, p.v, p.dout, g[0], g[1], g[2], g[3]),
        SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float *x[3] = {p.q, p.k, p.v};
    const size_t n[3] = {p.nq, p.nk, p.nk};
    static const char *names[3] = {"dq", "dk", "dv"};
    for (int t = 0; t < 3; ++t) {
        double e = 0.0;
        for (size_t i = 0; i < n[t]; ++i) {
            const float x0 = x[t][i], h = 1.0f / 256.0f;
            x[t][i] = x0 + h;
            const double up = oracle_loss(&p, z, NULL), xu = x[t][i];
            x[t][i] = x0 - h;
            const double down = oracle_loss(&p, z, NULL), xd = x[t][i];
            x[t][i] = x0;
            e = fmax(e, fabs((up - down) / (xu - xd) - g[t][i]));
        }
        cr_expect_leq(e, 2e-4, "%s: reference vs finite differences: %g", names[t], e);
    }
    for (int h = 0; h < MAX_HEADS; ++h) {
        double zz[MAX_HEADS];
        memcpy(zz, z, sizeof zz);
        const double step = 1e-5;
        zz[h] = z[h] + step;
        const double up = oracle_loss(&p, zz, NULL);
        zz[h] = z[h] - step;
        const double down = h == 0 ? oracle_loss(&p, z, NULL) : oracle_loss(&p, zz, NULL);
        /* z = 0 is the lowest span: a one-sided difference there */
        const double fd = (up - down) / (h == 0 ? step : 2 * step);
        cr_expect_leq(fabs(fd - g[3][h]), 1e-5 + 1e-4 * fabs(fd),
                      "dspans[%d]: reference %.9g vs finite differences %.9g", h, g[3][h], fd);
    }
    /* The span beyond the sequence reaches no ramp: exactly 0. */
    cr_expect_eq(g[3][3], 0.0);
    cr_expect_neq(g[3][1], 0.0);
    free(oo), free(ro), free(lse);
    for (int t = 0; t < 4; ++t)
        free(g[t]);
    free_problem(&p);
}

/* A problem and a parameter set (0 defaults, 1 GPU-style with local
 * memory, 2 one row and one lane). */
typedef struct pcase {
    scase s;
    int params;
} pcase;

static void set_params(sparcl_params *ps, int which)
{
    sparcl_params_clear(ps);
    if (which == 1) {
        sparcl_params_set(ps, "BLOCK_M", 8);
        sparcl_params_set(ps, "BLOCK_N", 8);
        sparcl_params_set(ps, "WG_SIZE", 4);
        sparcl_params_set(ps, "VEC", 4);
        sparcl_params_set(ps, "USE_LOCAL", 1);
    } else if (which == 2) {
        sparcl_params_set(ps, "BLOCK_M", 1);
        sparcl_params_set(ps, "BLOCK_N", 16);
        sparcl_params_set(ps, "WG_SIZE", 1);
        sparcl_params_set(ps, "VEC", 1);
        sparcl_params_set(ps, "USE_LOCAL", 0);
    }
}

ParameterizedTestParameters(span, matches_reference)
{
    static pcase cases[] = {
        /* one query over 17 keys, span 0: only its own key */
        {{1, 1, 1, 1, 17, 72, 1.0f, {0.0f}}, 0},
        {{1, 1, 1, 1, 17, 72, 3.5f, {6.25f}}, 1},
        /* GQA 4/2, d 100, spans 0, fractional, beyond the sequence */
        {{1, 4, 2, 17, 17, 100, 3.0f, {0.0f, 2.5f, 5.75f, 40.0f}}, 0},
        {{2, 4, 2, 17, 17, 100, 3.0f, {0.0f, 2.5f, 5.75f, 40.0f}}, 1},
        {{1, 4, 2, 17, 17, 100, 3.0f, {0.0f, 2.5f, 5.75f, 40.0f}}, 2},
        /* 113 rows, MQA */
        {{1, 2, 1, 113, 113, 72, 4.5f, {7.3f, 200.0f}}, 0},
        {{1, 2, 1, 113, 113, 72, 4.5f, {7.3f, 200.0f}}, 1},
        {{1, 2, 1, 113, 113, 72, 0.25f, {0.6f, 31.1f}}, 2},
        /* q_len < kv_len (a chunk at the end of the keys) and q_len >
         * kv_len (the first rows reach no key) */
        {{1, 2, 2, 17, 113, 72, 8.0f, {12.5f, 0.0f}}, 1},
        {{1, 1, 1, 113, 17, 100, 2.0f, {3.0f}}, 0},
        /* one long sequence: the work follows the span */
        {{1, 1, 1, 1023, 1023, 72, 16.0f, {24.5f}}, 0},
    };
    return cr_make_param_array(pcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(pcase *c, span, matches_reference, .init = setup, .fini = teardown,
                  .timeout = 300)
{
    problem p = make_problem(&c->s, 100 + (uint64_t)c->params);
    sparcl_params ps;
    set_params(&ps, c->params);
    p.d.params = c->params ? &ps : NULL;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &p.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    if (c->params)
        cr_assert_eq(sparcl_plan_prepare_backward(plan, &ps), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
    const int hq = c->s.hq;
    float *out = malloc(p.nq * 4), *lse = malloc(p.nl * 4);
    double *ro = malloc(p.nq * 8), *rl = malloc(p.nl * 8);
    cr_assert_eq(sparcl_plan_forward_host(plan, p.q, p.k, p.v, out, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_reference_forward(ctx, &p.d, p.q, p.k, p.v, ro, rl), SPARCL_OK);
    cr_expect_leq(rel_err_f(out, ro, p.nq), 1e-4, "out: %g", rel_err_f(out, ro, p.nq));
    cr_expect_leq(oracle_max_abs_diff_f(lse, rl, p.nl), 1e-4, "lse: %g",
                  oracle_max_abs_diff_f(lse, rl, p.nl));
    /* The backward from the reference's own outputs, as the tuner checks. */
    float *fo = malloc(p.nq * 4), *fl = malloc(p.nl * 4);
    for (size_t i = 0; i < p.nq; ++i)
        fo[i] = (float)ro[i];
    for (size_t i = 0; i < p.nl; ++i)
        fl[i] = (float)rl[i];
    float *g[4] = {malloc(p.nq * 4), malloc(p.nk * 4), malloc(p.nk * 4), malloc(MAX_HEADS * 4)};
    float *g2[4] = {malloc(p.nq * 4), malloc(p.nk * 4), malloc(p.nk * 4), malloc(MAX_HEADS * 4)};
    double *r[4] = {malloc(p.nq * 8), malloc(p.nk * 8), malloc(p.nk * 8), malloc(MAX_HEADS * 8)};
    cr_assert_eq(
        sparcl_plan_backward_span_host(plan, p.q, p.k, p.v, fo, fl, p.dout, g[0], g[1], g[2], g[3]),
        SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(
        sparcl_reference_backward_span(ctx, &p.d, p.q, p.k, p.v, p.dout, r[0], r[1], r[2], r[3]),
        SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    static const char *names[4] = {"dq", "dk", "dv", "dspans"};
    const size_t n[4] = {p.nq, p.nk, p.nk, (size_t)hq};
    for (int t = 0; t < 4; ++t)
        cr_expect_leq(rel_err_f(g[t], r[t], n[t]), t == 3 ? 1e-3 : 1e-4, "%s: %g", names[t],
                      rel_err_f(g[t], r[t], n[t]));
    /* No atomics: a second run is bit-identical. */
    cr_assert_eq(sparcl_plan_backward_span_host(plan, p.q, p.k, p.v, fo, fl, p.dout, g2[0], g2[1],
                                                g2[2], g2[3]),
                 SPARCL_OK);
    for (int t = 0; t < 4; ++t)
        cr_expect_eq(memcmp(g[t], g2[t], n[t] * 4), 0, "%s differs between runs", names[t]);
    /* The plain backward gives the same dq, dk, dv. */
    cr_assert_eq(
        sparcl_plan_backward_host(plan, p.q, p.k, p.v, fo, fl, p.dout, g2[0], g2[1], g2[2]),
        SPARCL_OK);
    for (int t = 0; t < 3; ++t)
        cr_expect_eq(memcmp(g[t], g2[t], n[t] * 4), 0, "%s differs without dspans", names[t]);
    for (int t = 0; t < 4; ++t)
        free(g[t]), free(g2[t]), free(r[t]);
    free(out), free(lse), free(ro), free(rl), free(fo), free(fl);
    sparcl_plan_free(plan);
    free_problem(&p);
}

/* sum(dout * out) of the plan's forward, in double. */
static double plan_loss(sparcl_plan *plan, const problem *p, float *out)
{
    cr_assert_eq(sparcl_plan_forward_host(plan, p->q, p->k, p->v, out, NULL), SPARCL_OK);
    double l = 0.0;
    for (size_t i = 0; i < p->nq; ++i)
        l += (double)out[i] * p->dout[i];
    return l;
}

Test(span, dspans_match_finite_differences_of_the_plan, .init = setup, .fini = teardown)
{
    static const scase c = {2, 2, 1, 40, 40, 8, 2.5f, {2.3f, 6.6f}};
    problem p = make_problem(&c, 41);
    p.d.spans = NULL; /* all 0, replaced below */
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &p.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float read[2] = {-1.0f, -1.0f};
    cr_assert_eq(sparcl_plan_read_spans(plan, read), SPARCL_OK);
    cr_expect(read[0] == 0.0f && read[1] == 0.0f, "NULL spans read back as %g %g", read[0],
              read[1]);
    cr_assert_eq(sparcl_plan_write_spans(plan, c.spans), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float *out = malloc(p.nq * 4), *lse = malloc(p.nl * 4);
    float *g[4] = {malloc(p.nq * 4), malloc(p.nk * 4), malloc(p.nk * 4), malloc(2 * 4)};
    cr_assert_eq(sparcl_plan_forward_host(plan, p.q, p.k, p.v, out, lse), SPARCL_OK);
    cr_assert_eq(sparcl_plan_backward_span_host(plan, p.q, p.k, p.v, out, lse, p.dout, g[0], g[1],
                                                g[2], g[3]),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    for (int h = 0; h < 2; ++h) {
        const float step = 0.05f; /* no distance crosses a kink: z +- step, z + R +- step */
        float z[2] = {c.spans[0], c.spans[1]};
        z[h] = c.spans[h] + step;
        cr_assert_eq(sparcl_plan_write_spans(plan, z), SPARCL_OK);
        const double up = plan_loss(plan, &p, out);
        z[h] = c.spans[h] - step;
        cr_assert_eq(sparcl_plan_write_spans(plan, z), SPARCL_OK);
        const double down = plan_loss(plan, &p, out);
        const double fd = (up - down) / (2.0 * step);
        cr_expect_leq(fabs(fd - g[3][h]), 2e-3 + 1e-2 * fabs(fd),
                      "dspans[%d]: plan %.6g vs finite differences of its forward %.6g", h,
                      (double)g[3][h], fd);
        cr_expect_gt(fabs(fd), 1e-2, "the loss should move with span %d", h);
    }
    for (int t = 0; t < 4; ++t)
        free(g[t]);
    free(out), free(lse);
    sparcl_plan_free(plan);
    free_problem(&p);
}

Test(span, keys_beyond_the_span_are_never_read, .init = setup, .fini = teardown)
{
    /* One query at position 39 with z = 3, R = 2: distances 0 .. 4 only
     * (keys 35 .. 39); every other key is NaN. */
    static const scase c = {1, 1, 1, 1, 40, 8, 2.0f, {3.0f}};
    problem p = make_problem(&c, 7);
    for (size_t i = 0; i < 35 * 8; ++i)
        p.k[i] = p.v[i] = NAN;
    sparcl_params ps;
    for (int which = 0; which < 3; ++which) {
        set_params(&ps, which);
        p.d.params = which ? &ps : NULL;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &p.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        float out[8], lse[1], dq[8], dk[40 * 8], dv[40 * 8], dz[1];
        double ro[8], rl[1];
        cr_assert_eq(sparcl_plan_forward_host(plan, p.q, p.k, p.v, out, lse), SPARCL_OK);
        cr_assert_eq(sparcl_reference_forward(ctx, &p.d, p.q, p.k, p.v, ro, rl), SPARCL_OK);
        cr_expect_leq(rel_err_f(out, ro, 8), 1e-5, "params %d: out %g", which,
                      rel_err_f(out, ro, 8));
        cr_expect(isfinite(lse[0]));
        cr_assert_eq(
            sparcl_plan_backward_span_host(plan, p.q, p.k, p.v, out, lse, p.dout, dq, dk, dv, dz),
            SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        for (int i = 0; i < 40 * 8; ++i) {
            cr_assert(i >= 35 * 8 || (dk[i] == 0.0f && dv[i] == 0.0f),
                      "params %d: key %d outside the span got dk %g dv %g", which, i / 8,
                      (double)dk[i], (double)dv[i]);
            cr_assert(isfinite(dk[i]) && isfinite(dv[i]));
        }
        cr_expect(isfinite(dz[0]) && dz[0] != 0.0f, "dz %g", (double)dz[0]);
        sparcl_plan_free(plan);
    }
    free_problem(&p);
}

/* sparcl_plan_init() on `d`: the status, and the message must contain
 * `needle`. */
static void expect_refused(const sparcl_plan_desc *d, sparcl_status want, const char *needle)
{
    sparcl_plan *plan = NULL;
    const sparcl_status st = sparcl_plan_init(ctx, &plan, d);
    cr_expect_eq(st, want, "status %d (%s), want %d", st, sparcl_ctx_errmsg(ctx), want);
    cr_expect_null(plan);
    cr_expect(strstr(sparcl_ctx_errmsg(ctx), needle) != NULL, "message \"%s\" lacks \"%s\"",
              sparcl_ctx_errmsg(ctx), needle);
    sparcl_plan_free(plan);
}

Test(span, bad_input_is_refused_by_name, .init = setup, .fini = teardown)
{
    static const scase c = {1, 3, 1, 5, 5, 8, 2.0f, {1.0f, 2.0f, 3.0f}};
    problem p = make_problem(&c, 5);
    float spans[3] = {1.0f, -0.5f, 3.0f};
    p.d.spans = spans;
    expect_refused(&p.d, SPARCL_ERR_INVALID_ARGUMENT, "spans[1]");
    spans[1] = 2.0f, spans[0] = NAN;
    expect_refused(&p.d, SPARCL_ERR_INVALID_ARGUMENT, "spans[0]");
    spans[0] = INFINITY;
    expect_refused(&p.d, SPARCL_ERR_INVALID_ARGUMENT, "spans[0]");
    spans[0] = 1.0f;
    const float ramps[3] = {0.0f, -1.0f, NAN};
    for (int i = 0; i < 3; ++i) {
        p.d.span_ramp = ramps[i];
        expect_refused(&p.d, SPARCL_ERR_INVALID_ARGUMENT, "span_ramp");
    }
    p.d.span_ramp = 2.0f;
    p.d.causal = 0;
    expect_refused(&p.d, SPARCL_ERR_NOT_SUPPORTED, "causal");
    p.d.causal = 1;
    p.d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    expect_refused(&p.d, SPARCL_ERR_NOT_SUPPORTED, "normalization");
    p.d.normalization = SPARCL_NORMALIZATION_SOFTMAX;
    sparcl_layout *layout = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &layout, 1, 5, 5, 4), SPARCL_OK);
    p.d.layout = layout;
    expect_refused(&p.d, SPARCL_ERR_NOT_SUPPORTED, "layout");
    p.d.layout = NULL;
    sparcl_layout_free(layout);

    /* The reference checks the same fields. */
    double out[3 * 5 * 8];
    spans[2] = -1.0f;
    cr_expect_eq(sparcl_reference_forward(ctx, &p.d, p.q, p.k, p.v, out, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(sparcl_ctx_errmsg(ctx), "spans[2]") != NULL, "%s", sparcl_ctx_errmsg(ctx));
    spans[2] = 3.0f;

    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &p.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const float bad[3] = {1.0f, 2.0f, NAN};
    cr_expect_eq(sparcl_plan_write_spans(plan, bad), SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(sparcl_ctx_errmsg(ctx), "spans[2]") != NULL, "%s", sparcl_ctx_errmsg(ctx));
    float back[3];
    cr_assert_eq(sparcl_plan_read_spans(plan, back), SPARCL_OK);
    cr_expect(back[0] == 1.0f && back[1] == 2.0f && back[2] == 3.0f,
              "a refused write changed the spans");
    cr_expect_eq(sparcl_plan_write_spans(plan, NULL), SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect_eq(sparcl_plan_write_spans(NULL, spans), SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect_eq(sparcl_plan_read_spans(plan, NULL), SPARCL_ERR_INVALID_ARGUMENT);

    /* dspans: too small, aliasing, or for another kind of plan. */
    cl_context cl = sparcl_ctx_cl_context(ctx);
    cl_int err;
    cl_mem m[10];
    const size_t sizes[10] = {p.nq, p.nk, p.nk, p.nq, p.nl, p.nq, p.nq, p.nk, p.nk, 2};
    for (int i = 0; i < 10; ++i) {
        m[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE, sizes[i] * 4, NULL, &err);
        cr_assert_not_null(m[i]);
    }
    cr_expect_eq(sparcl_plan_backward_span(plan, NULL, m[0], m[1], m[2], m[3], m[4], m[5], m[6],
                                           m[7], m[8], m[9], 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(sparcl_ctx_errmsg(ctx), "dspans") != NULL, "%s", sparcl_ctx_errmsg(ctx));
    cr_expect_eq(sparcl_plan_backward_span(plan, NULL, m[0], m[1], m[2], m[3], m[4], m[5], m[6],
                                           m[7], m[8], m[4], 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(sparcl_ctx_errmsg(ctx), "dspans aliases") != NULL, "%s",
              sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);

    sparcl_plan_desc dense = p.d;
    dense.attention = SPARCL_ATTENTION_EXACT;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &dense), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_expect_eq(sparcl_plan_write_spans(plan, spans), SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(sparcl_ctx_errmsg(ctx), "adaptive-span") != NULL, "%s",
              sparcl_ctx_errmsg(ctx));
    cr_expect_eq(sparcl_plan_backward_span(plan, NULL, m[0], m[1], m[2], m[3], m[4], m[5], m[6],
                                           m[7], m[8], m[9], 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(sparcl_ctx_errmsg(ctx), "dspans is only") != NULL, "%s",
              sparcl_ctx_errmsg(ctx));
    double dd[3];
    cr_expect_eq(
        sparcl_reference_backward_span(ctx, &dense, p.q, p.k, p.v, p.dout, out, out, out, dd),
        SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_plan_free(plan);
    for (int i = 0; i < 10; ++i)
        clReleaseMemObject(m[i]);
    free_problem(&p);
}
