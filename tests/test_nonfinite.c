/*
 * test_nonfinite.c -- NaN and infinities in q, k and v reach exactly the
 * rows whose attended scores (or, for softmax, attended values) hold them,
 * in every forward family (fused softmax with several parameter sets incl.
 * USE_LOCAL=1 and KT=0/1, the dense path ALGO=1, sparsemax, 1.5-entmax and
 * alpha-entmax) and in the backward; a NaN in an element the layout masks
 * out reaches nothing; only a row that attends to no key gives 0 and -inf.
 *
 * Expectations come from a double-precision row oracle written here: a row
 * is undefined (NaN) when one of its attended scores is NaN or +inf
 * (inf - inf in the softmax) or all of them are -inf (-inf - -inf); empty
 * rows are 0 with LSE -inf; otherwise the softmax (or, through
 * oracle_entmax, the entmax weights) with -inf scores weighing 0.  Values:
 * softmax reads every attended value (a NaN there is the row's), a sparse
 * normalization only those in its support.  Each element must match: NaN
 * where the oracle is NaN, else within 1e-4.  The library's own reference
 * (the tuner's oracle) is held to the same expectations.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oracle_kinds.h"
#include "sparcl.h"

#define TOL 1e-4
enum { B = 1, HQ = 2, HKV = 1, N = 40, D = 16 };
enum { NQ = B * HQ * N * D, NK = B * HKV * N * D, NL = B * HQ * N };

/* Causal, with block row 8..15 attending to nothing and key MASKED_KEY
 * attended by no row (it still sits in a PARTIAL tile next to attended
 * keys); block 8 so the rows of one tile mix masked and attended keys. */
#define MASKED_KEY 37
static int attends(int h, int i, int j)
{
    (void)h;
    return j <= i && !(i >= 8 && i < 16) && j != MASKED_KEY;
}

static int layout_pred(void *user, int h, int i, int j)
{
    (void)user;
    return attends(h, i, j);
}

/* Inputs with one kind of non-finite value placed. */
enum {
    S_NONE,
    S_NAN_Q,      /* NaN in a q row (and in a row that attends nothing) */
    S_MINF_Q,     /* -inf in a q row: scores +-inf and NaN */
    S_PINF_K,     /* +inf in a key: +inf scores where q > 0, -inf where q < 0 */
    S_NAN_V,      /* NaN in a value: the rows reading it */
    S_NAN_MASKED, /* NaN in k and v of the key no row attends */
    S_ALL_MINF,   /* a row whose attended scores are all -inf */
    S_COUNT
};
static const char *scenario_name[S_COUNT] = {"none",  "nan-q",         "-inf-q",  "+inf-k",
                                             "nan-v", "nan-masked-kv", "all--inf"};

static void make_inputs(int sc, float *q, float *k, float *v)
{
    oracle_fill(q, NQ, 11), oracle_fill(k, NK, 12), oracle_fill(v, NK, 13);
#define QAT(h, i, d) q[((size_t)(h)*N + (i)) * D + (d)]
#define KAT(j, d) k[(size_t)(j)*D + (d)]
#define VAT(j, d) v[(size_t)(j)*D + (d)]
    switch (sc) {
    case S_NAN_Q:
        QAT(0, 20, 3) = NAN;
        QAT(1, 10, 0) = NAN; /* an empty row: still 0 and -inf */
        break;
    case S_MINF_Q: QAT(1, 25, 5) = -INFINITY; break;
    case S_PINF_K: KAT(10, 2) = INFINITY; break;
    case S_NAN_V:
        for (int d = 0; d < D; ++d)
            VAT(30, d) = NAN;
        break;
    case S_NAN_MASKED:
        for (int d = 0; d < D; ++d)
            KAT(MASKED_KEY, d) = VAT(MASKED_KEY, d) = NAN;
        break;
    case S_ALL_MINF: /* row 3 attends keys 0..3, each with k[.][0] > 0 */
        QAT(0, 3, 0) = -INFINITY;
        for (int j = 0; j <= 3; ++j)
            KAT(j, 0) = 0.5f;
        break;
    default: break;
    }
#undef QAT
#undef KAT
#undef VAT
}

/* The oracle for alpha (1: softmax) on contiguous arrays. */
static void expect(double alpha, const float *q, const float *k, const float *v, double *out,
                   double *lse)
{
    const double scale = 1.0 / sqrt((double)D);
    double s[N], p[N];
    for (int h = 0; h < HQ; ++h)
        for (int i = 0; i < N; ++i) {
            const size_t row = (size_t)h * N + i;
            const float *qi = q + row * D;
            int n = 0, undefined = 0, finite = 0, keys[N];
            for (int j = 0; j < N; ++j) {
                if (!attends(h, i, j))
                    continue;
                double x = 0;
                for (int d = 0; d < D; ++d)
                    x += (double)qi[d] * k[(size_t)j * D + d];
                s[n] = x * scale;
                undefined |= isnan(s[n]) || s[n] == INFINITY;
                finite |= isfinite(s[n]);
                keys[n++] = j;
            }
            double *o = out + row * D;
            if (n == 0 || undefined || !finite) {
                for (int d = 0; d < D; ++d)
                    o[d] = n == 0 ? 0.0 : NAN;
                lse[row] = n == 0 ? -INFINITY : NAN;
                continue;
            }
            if (alpha == 1.0) {
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t < n; ++t)
                    mx = s[t] > mx ? s[t] : mx;
                for (int t = 0; t < n; ++t)
                    sum += p[t] = exp(s[t] - mx);
                for (int t = 0; t < n; ++t)
                    p[t] /= sum;
                lse[row] = mx + log(sum);
            } else {
                lse[row] = oracle_entmax(s, n, alpha, p);
            }
            for (int d = 0; d < D; ++d) {
                double acc = 0;
                for (int t = 0; t < n; ++t)
                    if (alpha == 1.0 || p[t] != 0.0)
                        acc += p[t] * v[(size_t)keys[t] * D + d];
                o[d] = acc;
            }
        }
}

/* Element-wise: NaN where expected NaN, else within TOL (-inf == -inf). */
static void check(const char *what, const float *got, const double *want, size_t n, int width)
{
    for (size_t x = 0; x < n; ++x) {
        const double g = got[x], w = want[x];
        if (isnan(w)) {
            cr_assert(isnan(g), "%s: row %zu [%zu]: got %g, want NaN", what, x / width, x % width,
                      g);
            continue;
        }
        cr_assert(!isnan(g), "%s: row %zu [%zu]: got NaN, want %g", what, x / width, x % width, w);
        if (isinf(w)) {
            cr_assert_eq(g, w, "%s: row %zu: got %g, want %g", what, x / width, g, w);
            continue;
        }
        cr_assert(fabs(g - w) <= TOL * fmax(1.0, fabs(w)), "%s: row %zu [%zu]: got %g, want %g",
                  what, x / width, x % width, g, w);
    }
}

static void check_d(const char *what, const double *got, const double *want, size_t n, int width)
{
    float *f = malloc(sizeof *f * n);
    for (size_t x = 0; x < n; ++x)
        f[x] = (float)got[x];
    check(what, f, want, n, width);
    free(f);
}

/* The expectations must exercise what they claim: sanity of the oracle. */
Test(nonfinite, oracle_marks_the_intended_rows)
{
    float q[NQ], k[NK], v[NK];
    double out[NQ], lse[NL];
    make_inputs(S_NAN_Q, q, k, v);
    expect(1.0, q, k, v, out, lse);
    cr_assert(isnan(lse[20]) && isfinite(lse[19]) && isfinite(lse[N + 20]));
    cr_assert(lse[N + 10] == -INFINITY && out[(N + 10) * D] == 0.0);
    make_inputs(S_ALL_MINF, q, k, v);
    expect(1.0, q, k, v, out, lse);
    cr_assert(isnan(lse[3]) && isfinite(lse[4]));
    make_inputs(S_PINF_K, q, k, v);
    expect(1.0, q, k, v, out, lse);
    int nan_rows = 0, finite_rows = 0;
    for (int i = 10; i < N; ++i)
        if (!(i >= 8 && i < 16))
            isnan(lse[i]) ? ++nan_rows : ++finite_rows;
    cr_assert(nan_rows > 0 && finite_rows > 0, "+inf-k: %d NaN rows, %d finite", nan_rows,
              finite_rows);
    make_inputs(S_NAN_V, q, k, v);
    expect(1.0, q, k, v, out, lse);
    cr_assert(isnan(out[30 * D]) && !isnan(out[29 * D]) && isfinite(lse[30]));
}

typedef struct fcase {
    int norm;        /* sparcl_normalization */
    int alpha100;    /* SPARCL_NORMALIZATION_ENTMAX */
    char params[96]; /* "NAME=V NAME=V", "" for the defaults (no pointers: workers re-exec) */
} fcase;

static void parse_params(const char *text, sparcl_params *p)
{
    sparcl_params_clear(p);
    char buf[256], *save = NULL;
    strncpy(buf, text, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(t, '=');
        cr_assert_not_null(eq);
        *eq = 0;
        cr_assert_eq(sparcl_params_set(p, t, atoi(eq + 1)), SPARCL_OK);
    }
}

static sparcl_ctx *new_ctx(void)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    return ctx;
}

static void finish(sparcl_plan *plan, sparcl_layout *l, sparcl_ctx *ctx)
{
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

static sparcl_layout *make_layout(sparcl_ctx *ctx)
{
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_predicate(ctx, &l, 1, N, N, 8, layout_pred, NULL), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(ctx));
    return l;
}

static sparcl_plan_desc make_desc(const sparcl_layout *l, int norm, int alpha100)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = B, d.q_heads = HQ, d.kv_heads = HKV, d.q_len = d.kv_len = N, d.head_dim = D;
    d.layout = l;
    d.normalization = norm;
    d.alpha = (float)(alpha100 / 100.0);
    return d;
}

ParameterizedTestParameters(nonfinite, forward_matches_oracle)
{
    static fcase cases[] = {
        {SPARCL_NORMALIZATION_SOFTMAX, 0, ""},
        {SPARCL_NORMALIZATION_SOFTMAX, 0,
         "ALGO=0 KT=0 USE_LOCAL=1 BLOCK_M=8 BLOCK_N=16 WG_SIZE=4 VEC=4 EXP=0"},
        {SPARCL_NORMALIZATION_SOFTMAX, 0,
         "ALGO=0 KT=1 USE_LOCAL=0 BLOCK_M=8 BLOCK_N=32 WG_SIZE=2 VEC=8 EXP=2"},
        {SPARCL_NORMALIZATION_SOFTMAX, 0,
         "ALGO=0 KT=1 USE_LOCAL=1 BLOCK_M=4 BLOCK_N=8 WG_SIZE=4 VEC=1 EXP=1"},
        {SPARCL_NORMALIZATION_SOFTMAX, 0, "ALGO=1"},
        {SPARCL_NORMALIZATION_SPARSEMAX, 0, ""},
        {SPARCL_NORMALIZATION_ENTMAX15, 0, ""},
        {SPARCL_NORMALIZATION_ENTMAX, 130, ""},
        {SPARCL_NORMALIZATION_SPARSEMAX, 0, "TOPK=4 BLOCK_M=4 BLOCK_N=8 WG_SIZE=2 VEC=4"},
    };
    return cr_make_param_array(fcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(fcase *c, nonfinite, forward_matches_oracle, .timeout = 300)
{
    sparcl_ctx *ctx = new_ctx();
    sparcl_layout *l = make_layout(ctx);
    sparcl_plan_desc d = make_desc(l, c->norm, c->alpha100);
    sparcl_params p;
    parse_params(c->params, &p);
    d.params = p.count ? &p : NULL;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const double alpha = c->norm == SPARCL_NORMALIZATION_SOFTMAX     ? 1.0
                         : c->norm == SPARCL_NORMALIZATION_SPARSEMAX ? 2.0
                         : c->norm == SPARCL_NORMALIZATION_ENTMAX15  ? 1.5
                                                                     : (double)d.alpha;
    const int dense_path = strstr(c->params, "ALGO=1") != NULL;
    static float q[NQ], k[NK], v[NK], out[NQ], lse[NL];
    static double want[NQ], wlse[NL], ref[NQ], rlse[NL];
    for (int sc = 0; sc < S_COUNT; ++sc) {
        /* ALGO=1 multiplies P V as one GEMM over all keys: a NaN value
         * reaches every row of its head there (documented in sparcl.h;
         * dense_path_nan_value below). */
        if (dense_path && (sc == S_NAN_MASKED || sc == S_NAN_V))
            continue;
        make_inputs(sc, q, k, v);
        expect(alpha, q, k, v, want, wlse);
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, lse), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        char what[160];
        snprintf(what, sizeof what, "%s [%s] out", scenario_name[sc], c->params);
        check(what, out, want, NQ, D);
        snprintf(what, sizeof what, "%s [%s] lse", scenario_name[sc], c->params);
        check(what, lse, wlse, NL, 1);
        /* the library's reference, the tuner's oracle, agrees */
        cr_assert_eq(sparcl_reference_forward(ctx, &d, q, k, v, ref, rlse), SPARCL_OK);
        snprintf(what, sizeof what, "%s reference out", scenario_name[sc]);
        check_d(what, ref, want, NQ, D);
        snprintf(what, sizeof what, "%s reference lse", scenario_name[sc]);
        check_d(what, rlse, wlse, NL, 1);
    }
    finish(plan, l, ctx);
}

/* The dense path: NaN scores of a masked key reach no row (they are
 * selected away before the softmax); NaN values reach the rows that read
 * them (and, through P V's GEMM, the others of the head, documented). */
Test(nonfinite, dense_path_nan_value)
{
    sparcl_ctx *ctx = new_ctx();
    sparcl_layout *l = make_layout(ctx);
    sparcl_plan_desc d = make_desc(l, SPARCL_NORMALIZATION_SOFTMAX, 0);
    sparcl_params p;
    parse_params("ALGO=1", &p);
    d.params = &p;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    static float q[NQ], k[NK], v[NK], out[NQ], lse[NL];
    make_inputs(S_NAN_MASKED, q, k, v);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, lse), SPARCL_OK);
    for (int x = 0; x < NL; ++x) /* the scores of the masked key never enter */
        cr_assert(!isnan(lse[x]), "row %d lse NaN", x);
    make_inputs(S_NAN_V, q, k, v);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, lse), SPARCL_OK);
    for (int i = 30; i < N; ++i)
        cr_assert(i == MASKED_KEY || isnan(out[i * D]) || isnan(out[(i + 1) * D - 1]),
                  "row %d reads the NaN value: %g", i, out[i * D]);
    finish(plan, l, ctx);
}

/* Backward: gradients against the library's double reference fed the same
 * inputs (whose NaN semantics the forward test pins down), with the
 * kernel's own forward O and LSE; plus the facts stated directly. */
ParameterizedTestParameters(nonfinite, backward_matches_reference)
{
    static fcase cases[] = {
        {SPARCL_NORMALIZATION_SOFTMAX, 0, ""},
        {SPARCL_NORMALIZATION_SOFTMAX, 0, "USE_LOCAL=1 BLOCK_M=8 BLOCK_N=16 WG_SIZE=4"},
        {SPARCL_NORMALIZATION_SPARSEMAX, 0, ""},
        {SPARCL_NORMALIZATION_ENTMAX15, 0, "BLOCK_M=8 BLOCK_N=16 WG_SIZE=4 VEC=4"},
        {SPARCL_NORMALIZATION_ENTMAX, 130, "BLOCK_M=16 BLOCK_N=1 WG_SIZE=1 VEC=1"},
    };
    return cr_make_param_array(fcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(fcase *c, nonfinite, backward_matches_reference, .timeout = 300)
{
    sparcl_ctx *ctx = new_ctx();
    sparcl_layout *l = make_layout(ctx);
    sparcl_plan_desc d = make_desc(l, c->norm, c->alpha100);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_params p;
    parse_params(c->params, &p);
    cr_assert_eq(sparcl_plan_prepare_backward(plan, p.count ? &p : NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    static float q[NQ], k[NK], v[NK], out[NQ], lse[NL], dout[NQ], dq[NQ], dk[NK], dv[NK];
    static double rq[NQ], rk[NK], rv[NK];
    oracle_fill(dout, NQ, 14);
    for (int sc = 0; sc < S_COUNT; ++sc) {
        make_inputs(sc, q, k, v);
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, lse), SPARCL_OK);
        cr_assert_eq(sparcl_plan_backward_host(plan, q, k, v, out, lse, dout, dq, dk, dv),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_reference_backward(ctx, &d, q, k, v, dout, rq, rk, rv), SPARCL_OK);
        double mx = 1.0; /* tolerance relative to the largest gradient */
        for (int x = 0; x < NQ; ++x)
            mx = isfinite(rq[x]) ? fmax(mx, fabs(rq[x])) : mx;
        for (int x = 0; x < NK; ++x)
            mx = isfinite(rk[x]) ? fmax(mx, fmax(fabs(rk[x]), fabs(rv[x]))) : mx;
        for (int x = 0; x < NQ; ++x)
            rq[x] /= mx, dq[x] /= (float)mx;
        for (int x = 0; x < NK; ++x)
            rk[x] /= mx, dk[x] /= (float)mx, rv[x] /= mx, dv[x] /= (float)mx;
        char what[160];
        snprintf(what, sizeof what, "%s [%s] dq", scenario_name[sc], c->params);
        check(what, dq, rq, NQ, D);
        snprintf(what, sizeof what, "%s [%s] dk", scenario_name[sc], c->params);
        check(what, dk, rk, NK, D);
        snprintf(what, sizeof what, "%s [%s] dv", scenario_name[sc], c->params);
        check(what, dv, rv, NK, D);
        if (sc == S_NAN_Q) { /* row (0, 20) NaN; the rows of head 1 are not */
            cr_assert(isnan(dq[20 * D]) && !isnan(dq[19 * D]) && !isnan(dq[(N + 20) * D]));
            cr_assert(isnan(dk[0]) && !isnan(dk[21 * D]));
        }
        if (sc == S_NAN_MASKED) /* nothing reads the masked key */
            for (int x = 0; x < NK; ++x)
                cr_assert(!isnan(dk[x]) && !isnan(dv[x]) && (x / D != MASKED_KEY || !dk[x]),
                          "dk/dv[%d] = %g %g", x, dk[x], dv[x]);
    }
    finish(plan, l, ctx);
}

/* FAVOR+ and Linformer mix every key into every row by construction (the
 * features' sums, the projections): a NaN in one q row stays in that row,
 * as in their oracles; a NaN in v reaches every row of the head. */
Test(nonfinite, lowrank_kinds_propagate_like_their_math)
{
    sparcl_ctx *ctx = new_ctx();
    const int kinds[2] = {SPARCL_ATTENTION_FAVOR, SPARCL_ATTENTION_LINFORMER};
    static float q[NQ], k[NK], v[NK], out[NQ];
    for (int t = 0; t < 2; ++t) {
        sparcl_plan_desc d = make_desc(NULL, SPARCL_NORMALIZATION_SOFTMAX, 0);
        d.attention = kinds[t];
        d.features = 16;
        d.proj_len = 8;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        make_inputs(S_NAN_Q, q, k, v);
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, NULL), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        for (int r = 0; r < HQ * N; ++r)
            for (int x = 0; x < D; ++x)
                cr_assert_eq(isnan(out[r * D + x]) != 0, r == 20 || r == N + 10,
                             "kind %d row %d [%d] = %g", kinds[t], r, x, out[r * D + x]);
        make_inputs(S_NAN_V, q, k, v);
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, NULL), SPARCL_OK);
        for (int r = 0; r < HQ * N; ++r)
            cr_assert(isnan(out[r * D]), "kind %d row %d = %g", kinds[t], r, out[r * D]);
        sparcl_plan_free(plan);
    }
    sparcl_ctx_free(ctx);
}
