/*
 * test_entmax_bwd.c -- the backward of sparsemax, 1.5-entmax and
 * alpha-entmax plans (cl/attn_entmax_bwd.cl) against the library's
 * double-precision reference backward, and that reference against central
 * finite differences of a double forward written here from the tests'
 * sort-based / bisection entmax oracle (oracle_kinds.h), so neither the
 * kernels' formulation nor the reference's reaches the check of the other.
 * Cases: odd shapes (lengths 1, 17, 113; head dims 72, 100), GQA, dense,
 * causal, window, per-head block masks with empty rows, q_len != kv_len, a
 * forward that needed its grid passes (TOPK 4), and four backward parameter
 * sets (scalar and 16-lane keys, 1 to 16 rows per work-item, VEC 1 to 16).
 * Tolerance: max abs error <= 1e-4 x max(1, largest reference gradient) on
 * inputs in [-1, 1] (the issue asks 1e-3).  Also: exact zeros where nothing
 * flows, bit-identical reruns, and named refusals.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "oracle_kinds.h"
#include "sparcl.h"

#define TOL 1e-4

enum { L_DENSE, L_WINDOW, L_MASK, L_CAUSAL_LAYOUT };

typedef struct bcase {
    int batch, hq, hkv, lq, lk, dim;
    int layout, causal; /* causal: the plan flag, on top of the layout */
    int norm, alpha100; /* sparcl_normalization; alpha * 100 for ENTMAX */
    int topk;           /* forward TOPK; 0: default */
    double scale;       /* 0: 1 / sqrt(dim) */
} bcase;

static sparcl_layout *make_layout(sparcl_ctx *ctx, const bcase *c)
{
    sparcl_layout *l = NULL;
    sparcl_status st = SPARCL_OK;
    if (c->layout == L_WINDOW)
        st = sparcl_layout_init_window(ctx, &l, 1, c->lq, c->lk, 8, 21, 6);
    else if (c->layout == L_CAUSAL_LAYOUT)
        st = sparcl_layout_init_causal(ctx, &l, 1, c->lq, c->lk, 16);
    else if (c->layout == L_MASK) {
        /* Per head; block row 1 empty in every head (rows that attend to
         * nothing), about a third of the other blocks off. */
        const int b = 8, nbr = (c->lq + b - 1) / b, nbc = (c->lk + b - 1) / b;
        uint8_t *m = malloc((size_t)c->hq * nbr * nbc);
        for (int h = 0; h < c->hq; ++h)
            for (int r = 0; r < nbr; ++r)
                for (int x = 0; x < nbc; ++x)
                    m[((size_t)h * nbr + r) * nbc + x] = r != 1 && (r * 5 + x * 3 + h) % 3 != 0;
        m[0] = 1;
        st = sparcl_layout_init_block_mask(ctx, &l, c->hq, c->lq, c->lk, b, m);
        free(m);
    }
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    return l;
}

static sparcl_plan_desc case_desc(const bcase *c, const sparcl_layout *l, sparcl_params *fwd)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = c->batch, d.q_heads = c->hq, d.kv_heads = c->hkv;
    d.q_len = c->lq, d.kv_len = c->lk, d.head_dim = c->dim;
    d.causal = c->causal, d.layout = l;
    d.normalization = c->norm;
    d.alpha = (float)(c->alpha100 / 100.0);
    d.scale = (float)c->scale;
    if (c->topk) {
        sparcl_params_clear(fwd);
        sparcl_params_set(fwd, "TOPK", c->topk);
        d.params = fwd;
    }
    return d;
}

/* Backward parameter set 0 is the device default; the others cover several
 * work-items per group, 1 to 16 rows and keys per work-item (scalar and
 * 16-lane keys) and every VEC class (1, a divisor, wider than some dims). */
static const sparcl_params *bwd_params(int set, sparcl_params *p)
{
    static const int32_t table[4][4] = {
        /* WG_SIZE BLOCK_M BLOCK_N VEC */
        {0, 0, 0, 0},
        {4, 8, 16, 4},
        {1, 16, 1, 1},
        {2, 2, 32, 16},
    };
    if (set == 0)
        return NULL;
    sparcl_params_clear(p);
    sparcl_params_set(p, "WG_SIZE", table[set][0]);
    sparcl_params_set(p, "BLOCK_M", table[set][1]);
    sparcl_params_set(p, "BLOCK_N", table[set][2]);
    sparcl_params_set(p, "VEC", table[set][3]);
    return p;
}

static double max_abs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; ++i)
        m = fmax(m, fabs(x[i]));
    return m;
}

static double rel_err(const float *x, const double *ref, size_t n)
{
    return oracle_max_abs_diff_f(x, ref, n) / fmax(1.0, max_abs(ref, n));
}

static void run_case(const bcase *c)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *layout = make_layout(ctx, c);
    const size_t nq = (size_t)c->batch * c->hq * c->lq * c->dim;
    const size_t nk = (size_t)c->batch * c->hkv * c->lk * c->dim;
    const size_t nl = (size_t)c->batch * c->hq * c->lq;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4);
    float *out = malloc(nq * 4), *tau = malloc(nl * 4);
    float *g[3] = {malloc(nq * 4), malloc(nk * 4), malloc(nk * 4)};
    float *g2[3] = {malloc(nq * 4), malloc(nk * 4), malloc(nk * 4)};
    double *ref[3] = {malloc(nq * 8), malloc(nk * 8), malloc(nk * 8)};
    const size_t n[3] = {nq, nk, nk};
    oracle_fill(q, nq, 11 + c->lq), oracle_fill(k, nk, 22 + c->lk);
    oracle_fill(v, nk, 33 + c->dim), oracle_fill(dout, nq, 44 + c->hq);
    sparcl_params fwd;
    const sparcl_plan_desc d = case_desc(c, layout, &fwd);
    cr_assert_eq(sparcl_reference_backward(ctx, &d, q, k, v, dout, ref[0], ref[1], ref[2]),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    /* A row with one key has P = 1 whatever its score: only dv flows. */
    for (int t = c->lk == 1 ? 2 : 0; t < 3; ++t)
        cr_assert_gt(max_abs(ref[t], n[t]), 1e-3, "gradient %d must not vanish", t);

    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, tau), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    for (int set = 0; set < 4; ++set) {
        sparcl_params params;
        cr_assert_eq(sparcl_plan_prepare_backward(plan, bwd_params(set, &params)), SPARCL_OK,
                     "set %d: %s", set, sparcl_ctx_errmsg(ctx));
        char ptext[200];
        cr_assert_eq(sparcl_plan_backward_params(plan, &params, NULL), SPARCL_OK);
        sparcl_params_format(&params, ptext, sizeof ptext);
        for (int t = 0; t < 3; ++t)
            memset(g[t], 0xff, n[t] * 4); /* NaN: every element must be written */
        cr_assert_eq(sparcl_plan_backward_host(plan, q, k, v, out, tau, dout, g[0], g[1], g[2]),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        const double e[3] = {rel_err(g[0], ref[0], nq), rel_err(g[1], ref[1], nk),
                             rel_err(g[2], ref[2], nk)};
        cr_log_info("norm %d alpha %d b%d h%d/%d lq %d lk %d d %d layout %d causal %d [%s]: "
                    "dq %.1e dk %.1e dv %.1e",
                    c->norm, c->alpha100, c->batch, c->hq, c->hkv, c->lq, c->lk, c->dim, c->layout,
                    c->causal, ptext, e[0], e[1], e[2]);
        cr_assert(e[0] <= TOL && e[1] <= TOL && e[2] <= TOL,
                  "errors dq %g dk %g dv %g: norm %d alpha %d lq %d lk %d d %d layout %d "
                  "causal %d [%s]",
                  e[0], e[1], e[2], c->norm, c->alpha100, c->lq, c->lk, c->dim, c->layout,
                  c->causal, ptext);
        /* Exact zeros where nothing flows: rows that attend to nothing (tau
         * -inf), and wherever the reference is exactly 0 (keys nobody
         * attends to or on nobody's support). */
        for (size_t r = 0; r < nl; ++r)
            if (isinf(tau[r]))
                for (int x = 0; x < c->dim; ++x)
                    cr_assert_eq(g[0][r * c->dim + x], 0.0f, "empty row %zu [%s]", r, ptext);
        for (size_t x = 0; x < nk; ++x)
            if (ref[1][x] == 0.0 && ref[2][x] == 0.0)
                cr_assert(g[1][x] == 0.0f && g[2][x] == 0.0f, "key element %zu: %g %g [%s]", x,
                          g[1][x], g[2][x], ptext);
        /* Deterministic: a second run is bit-identical. */
        cr_assert_eq(sparcl_plan_backward_host(plan, q, k, v, out, tau, dout, g2[0], g2[1], g2[2]),
                     SPARCL_OK);
        for (int t = 0; t < 3; ++t)
            cr_assert(!memcmp(g[t], g2[t], n[t] * 4), "two runs differ in %d [%s]", t, ptext);
    }
    sparcl_plan_free(plan);
    for (int t = 0; t < 3; ++t)
        free(g[t]), free(g2[t]), free(ref[t]);
    free(q), free(k), free(v), free(dout), free(out), free(tau);
    sparcl_layout_free(layout);
    sparcl_ctx_free(ctx);
}

#define SMAX SPARCL_NORMALIZATION_SPARSEMAX
#define E15 SPARCL_NORMALIZATION_ENTMAX15
#define EA SPARCL_NORMALIZATION_ENTMAX

ParameterizedTestParameters(entmax_bwd, matches_reference)
{
    static bcase cases[] = {
        /* b  hq hkv  lq   lk  dim  layout causal norm alpha topk scale */
        {1, 1, 1, 1, 1, 16, L_DENSE, 0, SMAX, 0, 0, 0},
        {1, 2, 1, 1, 113, 72, L_DENSE, 1, E15, 0, 0, 0},
        {2, 4, 2, 17, 17, 100, L_DENSE, 0, EA, 130, 0, 0},
        {1, 2, 2, 113, 113, 72, L_DENSE, 1, SMAX, 0, 0, 0},
        {1, 4, 2, 113, 113, 16, L_DENSE, 1, E15, 0, 0, 2.0},
        {1, 3, 1, 113, 17, 100, L_WINDOW, 0, EA, 130, 0, 0},
        {1, 2, 1, 113, 113, 72, L_WINDOW, 1, SMAX, 0, 4, 0},
        {1, 4, 2, 113, 113, 16, L_MASK, 0, EA, 175, 0, 0},
        {1, 2, 2, 17, 113, 100, L_MASK, 1, E15, 0, 4, 0},
        {2, 2, 1, 113, 17, 72, L_CAUSAL_LAYOUT, 0, SMAX, 0, 0, 4.0},
        {1, 2, 1, 113, 113, 16, L_DENSE, 0, EA, 200, 0, 0},
    };
    return cr_make_param_array(bcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(bcase *c, entmax_bwd, matches_reference, .timeout = 600)
{
    run_case(c);
}

/* ---- the reference against finite differences ------------------------- */

typedef struct fd_shape {
    int hq, hkv, lq, lk, dim, causal;
    double scale, alpha;
    const sparcl_layout *layout;
} fd_shape;

/* out = entmax(scale q k^T) v over the attended keys, in double, from the
 * tests' own oracle. */
static void fd_forward(const fd_shape *s, const double *q, const double *k, const double *v,
                       double *out)
{
    const int d = s->dim, g = s->hq / s->hkv;
    double *sc = malloc(sizeof *sc * s->lk), *p = malloc(sizeof *p * s->lk);
    for (int h = 0; h < s->hq; ++h)
        for (int i = 0; i < s->lq; ++i) {
            const double *qi = q + ((size_t)h * s->lq + i) * d;
            const double *kh = k + (size_t)(h / g) * s->lk * d,
                         *vh = v + (size_t)(h / g) * s->lk * d;
            for (int j = 0; j < s->lk; ++j) {
                int on = !(s->causal && j > i + s->lk - s->lq);
                if (on && s->layout)
                    on = sparcl_layout_attends(s->layout, 0, i, j);
                double x = 0;
                for (int c = 0; on && c < d; ++c)
                    x += qi[c] * kh[(size_t)j * d + c];
                sc[j] = on ? x * s->scale : -INFINITY;
            }
            double t = oracle_entmax(sc, s->lk, s->alpha, p);
            for (int c = 0; c < d; ++c) {
                double o = 0;
                for (int j = 0; j < s->lk && t != -INFINITY; ++j)
                    o += p[j] * vh[(size_t)j * d + c];
                out[((size_t)h * s->lq + i) * d + c] = o;
            }
        }
    free(sc), free(p);
}

Test(entmax_bwd, reference_matches_finite_differences)
{
    /* GQA, causal with q_len > kv_len (row 0 attends to nothing), a layout
     * with a hole; a scale wide enough for supports of a few keys. */
    uint8_t mask[2 * 2] = {1, 1, 0, 1};
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_block_mask(NULL, &l, 1, 5, 4, 3, mask), SPARCL_OK);
    enum { HQ = 2, HKV = 1, LQ = 5, LK = 4, D = 3 };
    const size_t nq = HQ * LQ * D, nk = HKV * LK * D;
    const double alphas[3] = {2.0, 1.5, (double)1.3f};
    const int norms[3] = {SMAX, E15, EA};
    for (int a = 0; a < 3; ++a) {
        fd_shape s = {HQ, HKV, LQ, LK, D, 1, 1.7, alphas[a], l};
        float fq[HQ * LQ * D], fk[HKV * LK * D], fv[HKV * LK * D], fo[HQ * LQ * D];
        oracle_fill(fq, nq, 1 + a), oracle_fill(fk, nk, 2), oracle_fill(fv, nk, 3);
        oracle_fill(fo, nq, 4);
        sparcl_plan_desc desc;
        sparcl_plan_desc_init(&desc);
        desc.q_heads = HQ, desc.kv_heads = HKV, desc.q_len = LQ, desc.kv_len = LK;
        desc.head_dim = D, desc.causal = 1, desc.scale = 1.7f, desc.layout = l;
        desc.normalization = norms[a], desc.alpha = 1.3f;
        double dq[HQ * LQ * D], dk[HKV * LK * D], dv[HKV * LK * D];
        cr_assert_eq(sparcl_reference_backward(NULL, &desc, fq, fk, fv, fo, dq, dk, dv), SPARCL_OK,
                     "%s", sparcl_ctx_errmsg(NULL));
        double q[HQ * LQ * D], k[HKV * LK * D], v[HKV * LK * D], out[HQ * LQ * D];
        for (size_t i = 0; i < nq; ++i)
            q[i] = fq[i];
        for (size_t i = 0; i < nk; ++i)
            k[i] = fk[i], v[i] = fv[i];
        double *xs[3] = {q, k, v}, *gs[3] = {dq, dk, dv};
        const size_t ns[3] = {nq, nk, nk};
        const double h = 1e-6;
        int nonzero = 0;
        for (int t = 0; t < 3; ++t)
            for (size_t i = 0; i < ns[t]; ++i) {
                const double keep = xs[t][i];
                double loss[2];
                for (int side = 0; side < 2; ++side) {
                    xs[t][i] = keep + (side ? -h : h);
                    fd_forward(&s, q, k, v, out);
                    loss[side] = 0;
                    for (size_t x = 0; x < nq; ++x)
                        loss[side] += fo[x] * out[x];
                }
                xs[t][i] = keep;
                const double fd = (loss[0] - loss[1]) / (2 * h);
                cr_assert(fabs(fd - gs[t][i]) <= 1e-7,
                          "alpha %g tensor %d element %zu: fd %.10f ref %.10f", alphas[a], t, i, fd,
                          gs[t][i]);
                nonzero += fabs(gs[t][i]) > 1e-3;
            }
        cr_assert_gt(nonzero, 15, "alpha %g: the check must exercise real gradients (%d)",
                     alphas[a], nonzero);
        for (int c = 0; c < D; ++c) /* row 0 of each head attends to nothing */
            cr_assert(dq[c] == 0.0 && dq[LQ * D + c] == 0.0);
    }
    sparcl_layout_free(l);
}

/* ---- bad input --------------------------------------------------------- */

/* Linformer plans with a sparse normalization have no backward: refused
 * with a message naming the kind and what is supported. */
/* Linformer over sparsemax: its backward is the inner plan's sparsemax
 * backward on K' = E K and V' = F V, chained through E and F.  Checked
 * against that composition built here from the reference backward of an
 * exact sparsemax problem over the projected keys. */
Test(entmax_bwd, linformer_over_sparsemax_chains_the_inner_backward)
{
    enum { L = 17, D = 16, P = 5 };
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = L, d.head_dim = D, d.proj_len = P;
    d.attention = SPARCL_ATTENTION_LINFORMER;
    d.normalization = SMAX;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    static float q[L * D], k[L * D], v[L * D], dout[L * D], out[L * D], lse[L];
    static float dq[L * D], dk[L * D], dv[L * D], e[P * L], f[P * L], kp[P * D], vp[P * D];
    oracle_fill(q, L * D, 71), oracle_fill(k, L * D, 72), oracle_fill(v, L * D, 73);
    oracle_fill(dout, L * D, 74);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_backward_host(plan, q, k, v, out, lse, dout, dq, dk, dv), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_read_projections(plan, e, f), SPARCL_OK);
    for (int p = 0; p < P; ++p)
        for (int c = 0; c < D; ++c) {
            double sk = 0, sv = 0;
            for (int j = 0; j < L; ++j) {
                sk += (double)e[p * L + j] * k[j * D + c];
                sv += (double)f[p * L + j] * v[j * D + c];
            }
            kp[p * D + c] = (float)sk, vp[p * D + c] = (float)sv;
        }
    sparcl_plan_desc inner;
    sparcl_plan_desc_init(&inner);
    inner.q_len = L, inner.kv_len = P, inner.head_dim = D;
    inner.normalization = SMAX;
    static double rq[L * D], rkp[P * D], rvp[P * D];
    cr_assert_eq(sparcl_reference_backward(ctx, &inner, q, kp, vp, dout, rq, rkp, rvp), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(ctx));
    double big = 1, worst = 0;
    for (int i = 0; i < L * D; ++i)
        big = fmax(big, fabs(rq[i])), worst = fmax(worst, fabs(dq[i] - rq[i]));
    for (int j = 0; j < L; ++j)
        for (int c = 0; c < D; ++c) {
            double rk = 0, rv = 0;
            for (int p = 0; p < P; ++p) {
                rk += (double)e[p * L + j] * rkp[p * D + c];
                rv += (double)f[p * L + j] * rvp[p * D + c];
            }
            big = fmax(big, fmax(fabs(rk), fabs(rv)));
            worst = fmax(worst, fmax(fabs(dk[j * D + c] - rk), fabs(dv[j * D + c] - rv)));
        }
    cr_assert(worst <= TOL * big, "max error %g (largest gradient %g)", worst, big);
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
}

Test(entmax_bwd, bad_parameters_are_named)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    /* Built-in defaults only: the shipped rows would answer the lookup. */
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_USER, ""), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = 17, d.head_dim = 16, d.normalization = E15;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    static const struct {
        const char *name;
        int32_t value;
        const char *word;
        const char *name2; /* a second parameter, NULL: the device's default */
        int32_t value2;
    } bad[] = {
        {"USE_LOCAL", 1, "unknown parameter USE_LOCAL for kernel attn_entmax_bwd", NULL, 0},
        {"BLOCK_M", 3, "BLOCK_M 3 is not one of", NULL, 0},
        {"VEC", 32, "VEC 32 is not one of", NULL, 0},
        /* BLOCK_M pinned: a GPU's default BLOCK_M is a multiple of 64 */
        {"WG_SIZE", 64, "multiples of WG_SIZE 64", "BLOCK_M", 32},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        sparcl_params p;
        sparcl_params_clear(&p);
        sparcl_params_set(&p, bad[i].name, bad[i].value);
        if (bad[i].name2)
            sparcl_params_set(&p, bad[i].name2, bad[i].value2);
        cr_assert_eq(sparcl_plan_prepare_backward(plan, &p), SPARCL_ERR_INVALID_ARGUMENT, "%s",
                     bad[i].name);
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), bad[i].word), "\"%s\" lacks \"%s\"",
                  sparcl_ctx_errmsg(ctx), bad[i].word);
    }
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "VEC", 16);
    sparcl_params_set(&p, "BLOCK_M", 1);
    sparcl_params_set(&p, "WG_SIZE", 1);
    d.head_dim = 8;
    sparcl_plan *narrow = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &narrow, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_prepare_backward(narrow, &p), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "VEC 16 exceeds head_dim 8"), "%s",
              sparcl_ctx_errmsg(ctx));
    /* A failed preparation leaves the plan usable with its defaults. */
    sparcl_param_source src;
    cr_assert_eq(sparcl_plan_backward_params(plan, &p, &src), SPARCL_OK);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
    sparcl_plan_free(narrow);
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
}
