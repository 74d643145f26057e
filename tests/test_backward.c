/*
 * test_backward.c -- the backward kernels (dQ, dK, dV) against a
 * double-precision reference written here: the softmax Jacobian applied
 * explicitly per row (dS = J dP with J = diag(P) - P P^T), a formulation
 * the kernels do not use.  The reference itself is checked by central
 * finite differences of its own double forward, and that forward against
 * the shared brute-force oracle.  Masks come from sparcl_layout_attends()
 * plus the plan's causal rule (layouts are tested against their definitions
 * in test_layout.c), never from the tiling the kernels walk.
 * Tolerance: max abs error <= 1e-4 x max(1, largest reference gradient)
 * on inputs in [-1, 1], for every case and 4 parameter sets.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backward_check.h"
#include "oracle.h"
#include "sparcl.h"

#define TOL 1e-4

typedef struct shape {
    int batch, hq, hkv, lq, lk, dim;
    double scale;
    int causal;
    const sparcl_layout *layout; /* NULL: dense */
} shape;

static int attends(const shape *s, int h, int i, int j)
{
    if (s->causal && j > i + s->lk - s->lq)
        return 0;
    return !s->layout ||
           sparcl_layout_attends(s->layout, sparcl_layout_heads(s->layout) == 1 ? 0 : h, i, j);
}

static int oracle_pred_shape(const void *self, int h, int i, int j)
{
    return attends(self, h, i, j);
}

/* The probabilities of row i of head h (p[j] = 0 where not attended);
 * returns the row's LSE (-inf when it attends to nothing). */
static double row_probs(const shape *s, int b, int h, int i, const double *q, const double *k,
                        double *p)
{
    const int d = s->dim, g = s->hq / s->hkv;
    const double *qi = q + (((size_t)b * s->hq + h) * s->lq + i) * d;
    const double *kb = k + ((size_t)b * s->hkv + h / g) * s->lk * d;
    double mx = -INFINITY;
    for (int j = 0; j < s->lk; ++j) {
        p[j] = -INFINITY;
        if (!attends(s, h, i, j))
            continue;
        double x = 0;
        for (int c = 0; c < d; ++c)
            x += qi[c] * kb[(size_t)j * d + c];
        p[j] = x * s->scale;
        mx = fmax(mx, p[j]);
    }
    if (mx == -INFINITY) {
        for (int j = 0; j < s->lk; ++j)
            p[j] = 0;
        return -INFINITY;
    }
    double sum = 0;
    for (int j = 0; j < s->lk; ++j)
        sum += p[j] == -INFINITY ? 0 : exp(p[j] - mx);
    for (int j = 0; j < s->lk; ++j)
        p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - mx) / sum;
    return mx + log(sum);
}

/* out = P v (and lse) in double, for the finite differences. */
static void ref_forward(const shape *s, const double *q, const double *k, const double *v,
                        double *out, double *lse)
{
    const int d = s->dim, g = s->hq / s->hkv;
    double *p = malloc(sizeof *p * s->lk);
    for (int b = 0; b < s->batch; ++b)
        for (int h = 0; h < s->hq; ++h)
            for (int i = 0; i < s->lq; ++i) {
                size_t row = ((size_t)b * s->hq + h) * s->lq + i;
                double l = row_probs(s, b, h, i, q, k, p);
                if (lse)
                    lse[row] = l;
                const double *vb = v + ((size_t)b * s->hkv + h / g) * s->lk * d;
                for (int c = 0; c < d; ++c) {
                    double x = 0;
                    for (int j = 0; j < s->lk; ++j)
                        x += p[j] * vb[(size_t)j * d + c];
                    out[row * d + c] = x;
                }
            }
    free(p);
}

/* The reference backward: dP = dO v^T, dS = J dP with the explicit
 * Jacobian J[j][l] = P[j] (delta_jl - P[l]), then the three products. */
static void ref_backward(const shape *s, const double *q, const double *k, const double *v,
                         const double *dout, double *dq, double *dk, double *dv)
{
    const int d = s->dim, g = s->hq / s->hkv, n = s->lk;
    const size_t nq = (size_t)s->batch * s->hq * s->lq * d;
    const size_t nk = (size_t)s->batch * s->hkv * s->lk * d;
    memset(dq, 0, sizeof *dq * nq);
    memset(dk, 0, sizeof *dk * nk);
    memset(dv, 0, sizeof *dv * nk);
    double *p = malloc(sizeof *p * n), *dp = malloc(sizeof *dp * n), *ds = malloc(sizeof *ds * n);
    for (int b = 0; b < s->batch; ++b)
        for (int h = 0; h < s->hq; ++h)
            for (int i = 0; i < s->lq; ++i) {
                size_t row = ((size_t)b * s->hq + h) * s->lq + i;
                size_t kvb = ((size_t)b * s->hkv + h / g) * s->lk * d;
                row_probs(s, b, h, i, q, k, p);
                const double *doi = dout + row * d, *qi = q + row * d;
                for (int j = 0; j < n; ++j) {
                    dp[j] = 0;
                    for (int c = 0; c < d; ++c)
                        dp[j] += doi[c] * v[kvb + (size_t)j * d + c];
                }
                for (int j = 0; j < n; ++j) {
                    ds[j] = 0;
                    for (int l = 0; l < n; ++l)
                        ds[j] += p[j] * ((j == l) - p[l]) * dp[l];
                }
                for (int j = 0; j < n; ++j)
                    for (int c = 0; c < d; ++c) {
                        dv[kvb + (size_t)j * d + c] += p[j] * doi[c];
                        dk[kvb + (size_t)j * d + c] += s->scale * ds[j] * qi[c];
                        dq[row * d + c] += s->scale * ds[j] * k[kvb + (size_t)j * d + c];
                    }
            }
    free(p), free(dp), free(ds);
}

static double *to_double(const float *x, size_t n)
{
    double *y = malloc(sizeof *y * n);
    for (size_t i = 0; i < n; ++i)
        y[i] = x[i];
    return y;
}

static double max_abs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; ++i)
        m = fmax(m, fabs(x[i]));
    return m;
}

/* L = sum(dout * out(q, k, v)) in double. */
static double loss(const shape *s, const double *q, const double *k, const double *v,
                   const double *dout, double *scratch)
{
    ref_forward(s, q, k, v, scratch, NULL);
    size_t n = (size_t)s->batch * s->hq * s->lq * s->dim;
    double x = 0;
    for (size_t i = 0; i < n; ++i)
        x += dout[i] * scratch[i];
    return x;
}

/* ---- the reference checks itself --------------------------------------- */

Test(backward, reference_matches_finite_differences)
{
    /* GQA, causal with q_len > kv_len (row 0 attends to nothing), and a
     * layout with a hole, on a shape small enough for every partial. */
    uint8_t mask[2 * 2 * 2] = {1, 1, 0, 1, 1, 0, 1, 1};
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_block_mask(NULL, &l, 2, 4, 3, 2, mask), SPARCL_OK);
    shape s = {1, 2, 1, 4, 3, 3, 0.7, 1, l};
    size_t nq = 2 * 4 * 3, nk = 1 * 3 * 3;
    float fq[24], fk[9], fv[9], fo[24];
    oracle_fill(fq, nq, 1), oracle_fill(fk, nk, 2), oracle_fill(fv, nk, 3), oracle_fill(fo, nq, 4);
    double *q = to_double(fq, nq), *k = to_double(fk, nk), *v = to_double(fv, nk);
    double *dout = to_double(fo, nq), scratch[24], dq[24], dk[9], dv[9];
    ref_backward(&s, q, k, v, dout, dq, dk, dv);

    /* Its forward is the shared oracle's. */
    double out[24], lse[8], oo[24], ol[8];
    ref_forward(&s, q, k, v, out, lse);
    oracle_attention(1, 2, 1, 4, 3, 3, 0.7, oracle_pred_shape, &s, fq, fk, fv, oo, ol);
    for (size_t i = 0; i < nq; ++i)
        cr_assert_float_eq(out[i], oo[i], 1e-12);
    cr_assert(isinf(lse[0]) && isinf(ol[0]), "row 0 must attend to nothing");

    double *xs[3] = {q, k, v}, *gs[3] = {dq, dk, dv};
    size_t ns[3] = {nq, nk, nk};
    const double h = 1e-6;
    int nonzero = 0;
    for (int t = 0; t < 3; ++t)
        for (size_t i = 0; i < ns[t]; ++i) {
            double keep = xs[t][i];
            xs[t][i] = keep + h;
            double up = loss(&s, q, k, v, dout, scratch);
            xs[t][i] = keep - h;
            double down = loss(&s, q, k, v, dout, scratch);
            xs[t][i] = keep;
            double fd = (up - down) / (2 * h);
            cr_assert(fabs(fd - gs[t][i]) <= 1e-7, "tensor %d element %zu: fd %.10f ref %.10f",
                      t, i, fd, gs[t][i]);
            nonzero += fabs(gs[t][i]) > 1e-3;
        }
    cr_assert_gt(nonzero, 20, "the check must exercise real gradients");
    for (int c = 0; c < 3; ++c) /* the empty row */
        cr_assert_eq(dq[c], 0.0);
    free(q), free(k), free(v), free(dout);
    sparcl_layout_free(l);
}

/* ---- the kernels against the reference --------------------------------- */

enum pattern { P_DENSE, P_CAUSAL_LAYOUT, P_WINDOW, P_MASK, P_MASK_PER_HEAD };

typedef struct bcase {
    int batch, hq, hkv, lq, lk, dim;
    int pattern, causal; /* causal: the plan flag, on top of the layout */
    int left, right, block;
} bcase;

static sparcl_layout *make_layout(sparcl_ctx *ctx, const bcase *c)
{
    sparcl_layout *l = NULL;
    sparcl_status st = SPARCL_OK;
    if (c->pattern == P_CAUSAL_LAYOUT)
        st = sparcl_layout_init_causal(ctx, &l, 1, c->lq, c->lk, c->block);
    else if (c->pattern == P_WINDOW)
        st = sparcl_layout_init_window(ctx, &l, 1, c->lq, c->lk, c->block, c->left, c->right);
    else if (c->pattern == P_MASK || c->pattern == P_MASK_PER_HEAD) {
        int heads = c->pattern == P_MASK ? 1 : c->hq;
        int nbr = (c->lq + c->block - 1) / c->block, nbc = (c->lk + c->block - 1) / c->block;
        size_t n = (size_t)heads * nbr * nbc;
        uint8_t *m = calloc(n, 1);
        float *r = malloc(sizeof *r * n);
        oracle_fill(r, n, 77 + c->lq);
        for (size_t x = 0; x < n; ++x)
            m[x] = r[x] < -0.4f; /* about 30%: some block rows and columns empty */
        m[0] = 1;
        st = sparcl_layout_init_block_mask(ctx, &l, heads, c->lq, c->lk, c->block, m);
        free(m), free(r);
    }
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    return l;
}

/* Parameter set 0 is the device default; the others cover local memory,
 * several work-items per group, lane counts (rows and keys per work-item:
 * 2/1, 2/8, 1/4) and tile shapes. */
static const sparcl_params *bwd_params(int set, sparcl_params *p)
{
    static const int32_t table[4][4] = {
        /* WG_SIZE BLOCK_M BLOCK_N USE_LOCAL */
        {0, 0, 0, 0},
        {16, 32, 16, 1},
        {4, 8, 32, 0},
        {1, 1, 4, 1},
    };
    if (set == 0)
        return NULL;
    sparcl_params_clear(p);
    sparcl_params_set(p, "WG_SIZE", table[set][0]);
    sparcl_params_set(p, "BLOCK_M", table[set][1]);
    sparcl_params_set(p, "BLOCK_N", table[set][2]);
    sparcl_params_set(p, "USE_LOCAL", table[set][3]);
    return p;
}

static sparcl_plan_desc case_desc(const bcase *c, const sparcl_layout *layout)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = c->batch, d.q_heads = c->hq, d.kv_heads = c->hkv;
    d.q_len = c->lq, d.kv_len = c->lk, d.head_dim = c->dim;
    d.causal = c->causal, d.layout = layout;
    return d;
}

static double max_err(const float *x, const double *ref, size_t n)
{
    return oracle_max_abs_diff_f(x, ref, n) / fmax(1.0, max_abs(ref, n));
}

/* The parameter sets one run checks: set i of `n`, NULL for the defaults. */
typedef const sparcl_params *(*param_sets)(int set, sparcl_params *p);

static void run_case_with(const bcase *c, param_sets sets, int n_sets)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *layout = make_layout(ctx, c);
    shape s = {c->batch, c->hq, c->hkv, c->lq, c->lk, c->dim, 1.0 / sqrt(c->dim), c->causal,
               layout};
    const size_t nq = (size_t)c->batch * c->hq * c->lq * c->dim;
    const size_t nk = (size_t)c->batch * c->hkv * c->lk * c->dim;
    const size_t nl = (size_t)c->batch * c->hq * c->lq;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4);
    float *out = malloc(nq * 4), *lse = malloc(nl * 4);
    float *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    float *dq2 = malloc(nq * 4), *dk2 = malloc(nk * 4), *dv2 = malloc(nk * 4);
    oracle_fill(q, nq, 11 + c->lq), oracle_fill(k, nk, 22 + c->lk);
    oracle_fill(v, nk, 33 + c->dim), oracle_fill(dout, nq, 44 + c->hq);
    double *ro = malloc(nq * 8), *rl = malloc(nl * 8);
    oracle_attention(c->batch, c->hq, c->hkv, c->lq, c->lk, c->dim, s.scale, oracle_pred_shape,
                     &s, q, k, v, ro, rl);
    for (size_t i = 0; i < nq; ++i)
        out[i] = (float)ro[i];
    for (size_t i = 0; i < nl; ++i)
        lse[i] = (float)rl[i];
    double *xq = to_double(q, nq), *xk = to_double(k, nk), *xv = to_double(v, nk);
    double *xo = to_double(dout, nq);
    double *gq = malloc(nq * 8), *gk = malloc(nk * 8), *gv = malloc(nk * 8);
    ref_backward(&s, xq, xk, xv, xo, gq, gk, gv);

    /* The library's own reference backward (the tuner's oracle) agrees. */
    {
        const sparcl_plan_desc d = case_desc(c, layout);
        double *lq = malloc(nq * 8), *lk = malloc(nk * 8), *lv = malloc(nk * 8);
        cr_assert_eq(sparcl_reference_backward(ctx, &d, q, k, v, dout, lq, lk, lv), SPARCL_OK);
        double *pairs[3][2] = {{lq, gq}, {lk, gk}, {lv, gv}};
        size_t ns[3] = {nq, nk, nk};
        for (int t = 0; t < 3; ++t)
            for (size_t x = 0; x < ns[t]; ++x)
                cr_assert(fabs(pairs[t][0][x] - pairs[t][1][x]) <= 1e-10,
                          "sparcl_reference_backward tensor %d element %zu: %g vs %g", t, x,
                          pairs[t][0][x], pairs[t][1][x]);
        free(lq), free(lk), free(lv);
    }

    for (int set = 0; set < n_sets; ++set) {
        sparcl_params params;
        const sparcl_plan_desc d = case_desc(c, layout);
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        sparcl_status st = sparcl_plan_prepare_backward(plan, sets(set, &params));
        if (set > 0 && st == SPARCL_ERR_NOT_SUPPORTED &&
            strstr(sparcl_ctx_errmsg(ctx), "local memory")) {
            /* An explicit set whose tiles exceed this device's local memory
             * (head_dim 256 at BLOCK_M 32 needs 65,792 bytes; an H200 has
             * 49,152): refused with a clear status, as it must be. */
            sparcl_plan_free(plan);
            continue;
        }
        cr_assert_eq(st, SPARCL_OK, "set %d: %s", set, sparcl_ctx_errmsg(ctx));
        char ptext[200];
        cr_assert_eq(sparcl_plan_backward_params(plan, &params, NULL), SPARCL_OK);
        sparcl_params_format(&params, ptext, sizeof ptext);
        memset(dq, 0xff, nq * 4), memset(dk, 0xff, nk * 4), memset(dv, 0xff, nk * 4);
        cr_assert_eq(sparcl_plan_backward_host(plan, q, k, v, out, lse, dout, dq, dk, dv),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        double eq = max_err(dq, gq, nq), ek = max_err(dk, gk, nk), ev = max_err(dv, gv, nk);
        cr_assert(eq <= TOL && ek <= TOL && ev <= TOL,
                  "errors dq %g dk %g dv %g: b%d h%d/%d lq %d lk %d d %d pattern %d causal %d [%s]",
                  eq, ek, ev, c->batch, c->hq, c->hkv, c->lq, c->lk, c->dim, c->pattern,
                  c->causal, ptext);
        /* Exact zeros where nothing flows: rows that attend to nothing,
         * keys nobody attends to. */
        for (size_t r = 0; r < nl; ++r)
            if (isinf(rl[r]))
                for (int x = 0; x < c->dim; ++x)
                    cr_assert_eq(dq[r * c->dim + x], 0.0f, "empty row %zu [%s]", r, ptext);
        for (size_t x = 0; x < nk; ++x)
            if (gk[x] == 0.0 && gv[x] == 0.0)
                cr_assert(dk[x] == 0.0f && dv[x] == 0.0f, "unattended key element %zu [%s]", x,
                          ptext);
        /* Deterministic: a second run is bit-identical. */
        cr_assert_eq(sparcl_plan_backward_host(plan, q, k, v, out, lse, dout, dq2, dk2, dv2),
                     SPARCL_OK);
        cr_assert(!memcmp(dq, dq2, nq * 4) && !memcmp(dk, dk2, nk * 4) &&
                      !memcmp(dv, dv2, nk * 4),
                  "two runs differ [%s]", ptext);
        sparcl_plan_free(plan);
    }
    free(q), free(k), free(v), free(dout), free(out), free(lse);
    free(dq), free(dk), free(dv), free(dq2), free(dk2), free(dv2);
    free(ro), free(rl), free(xq), free(xk), free(xv), free(xo), free(gq), free(gk), free(gv);
    sparcl_layout_free(layout);
    sparcl_ctx_free(ctx);
}

static const bcase reference_cases[] = {
    /* b  hq hkv  lq   lk  dim  pattern          causal left right block */
    {1, 1, 1, 1, 1, 16, P_DENSE, 0, 0, 0, 0},
    {1, 2, 1, 1, 113, 72, P_DENSE, 1, 0, 0, 0},
    {2, 4, 2, 17, 17, 100, P_DENSE, 0, 0, 0, 0},
    {1, 2, 2, 239, 113, 16, P_DENSE, 1, 0, 0, 0},
    {1, 3, 1, 113, 239, 72, P_CAUSAL_LAYOUT, 0, 0, 0, 16},
    {1, 2, 1, 239, 239, 16, P_WINDOW, 0, 37, 11, 24},
    {1, 2, 2, 113, 17, 100, P_WINDOW, 1, 5, 9, 8},
    {1, 4, 2, 113, 239, 16, P_MASK, 0, 0, 0, 16},
    {1, 2, 1, 239, 113, 72, P_MASK, 1, 0, 0, 24},
    {1, 3, 1, 113, 113, 16, P_MASK_PER_HEAD, 0, 0, 0, 7},
    {2, 2, 2, 17, 17, 100, P_MASK_PER_HEAD, 1, 0, 0, 5},
    {1, 2, 1, 17, 33, 256, P_WINDOW, 1, 4, 4, 8},
};

ParameterizedTestParameters(backward, matches_reference)
{
    static bcase cases[sizeof reference_cases / sizeof reference_cases[0]];
    memcpy(cases, reference_cases, sizeof cases);
    return cr_make_param_array(bcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(bcase *c, backward, matches_reference, .timeout = 600)
{
    run_case_with(c, bwd_params, 4);
}

/* The tuned parameters beyond the tile: the one-pass kernel (ALGO=1) with
 * every SPLIT (partial dQ buffers), VEC (dQ update width, with and without
 * a scalar tail) and EXP, tiles from 1 x 1 to 16 x 16 keys and rows, and
 * the two-kernel path with the other exponentials and several rows per
 * pass of its dK/dV walk. */
static const sparcl_params *more_params(int set, sparcl_params *p)
{
    static const int32_t table[][8] = {
        /* ALGO SPLIT VEC EXP BLOCK_M BLOCK_N WG_SIZE USE_LOCAL */
        {1, 1, 8, 2, 4, 16, 1, 0},
        {1, 2, 4, 0, 8, 8, 1, 0},
        {1, 4, 16, 1, 16, 16, 1, 0},
        {1, 8, 1, 2, 1, 1, 1, 0},
        {1, 2, 2, 2, 2, 4, 1, 0},
        {1, 1, 8, 2, 16, 1, 1, 0},
        {0, 1, 4, 2, 16, 16, 1, 0},
        {0, 1, 1, 1, 32, 8, 4, 1},
    };
    static const char *const names[8] = {"ALGO",    "SPLIT",   "VEC",     "EXP",
                                         "BLOCK_M", "BLOCK_N", "WG_SIZE", "USE_LOCAL"};
    sparcl_params_clear(p);
    for (int i = 0; i < 8; ++i)
        sparcl_params_set(p, names[i], table[set][i]);
    return p;
}

ParameterizedTestParameters(backward, variants_match_reference)
{
    /* Odd shapes, GQA, causal, window, per-head masks, a single element. */
    static const int pick[] = {2, 3, 4, 5, 9, 0};
    static bcase cases[sizeof pick / sizeof pick[0]];
    for (size_t i = 0; i < sizeof pick / sizeof pick[0]; ++i)
        cases[i] = reference_cases[pick[i]];
    return cr_make_param_array(bcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(bcase *c, backward, variants_match_reference, .timeout = 900)
{
    run_case_with(c, more_params, 8);
}

/* ---- bad input and edge rows ------------------------------------------- */

static sparcl_ctx *mctx;
static sparcl_plan *mplan;

static void misuse_setup(void)
{
    cr_assert_eq(sparcl_ctx_init(&mctx), SPARCL_OK);
    /* No tuning database: these tests reason about the built-in defaults. */
    cr_assert_eq(sparcl_ctx_set_tuning_db(mctx, SPARCL_TUNING_DB_USER, ""), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(mctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = 2, d.kv_heads = 1, d.q_len = 17, d.kv_len = 9, d.head_dim = 16;
    cr_assert_eq(sparcl_plan_init(mctx, &mplan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(mctx));
}

static void misuse_teardown(void)
{
    sparcl_plan_free(mplan);
    sparcl_ctx_free(mctx);
}

#define EXPECT(call, status, word)                                                           \
    do {                                                                                     \
        sparcl_status s_ = (call);                                                           \
        cr_assert_eq(s_, status, #call " gave %d: %s", s_, sparcl_ctx_errmsg(mctx));         \
        cr_assert(strstr(sparcl_ctx_errmsg(mctx), word), "message \"%s\" lacks \"%s\"",      \
                  sparcl_ctx_errmsg(mctx), word);                                            \
    } while (0)

static cl_mem buffer(size_t floats)
{
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(mctx), CL_MEM_READ_WRITE, floats * 4, NULL,
                              &err);
    cr_assert_not_null(m);
    return m;
}

Test(backward, bad_buffers_are_invalid_arguments, .init = misuse_setup, .fini = misuse_teardown)
{
    const size_t nq = 2 * 17 * 16, nk = 9 * 16, nl = 2 * 17;
    cl_mem q = buffer(nq), k = buffer(nk), v = buffer(nk), o = buffer(nq), l = buffer(nl);
    cl_mem d_o = buffer(nq), dq = buffer(nq), dk = buffer(nk), dv = buffer(nk);
    cl_mem small = buffer(nk - 1), small_l = buffer(nl - 1);
    EXPECT(sparcl_plan_backward(mplan, q, k, v, o, NULL, d_o, dq, dk, dv, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "needs the forward's LSE");
    EXPECT(sparcl_plan_backward(mplan, q, k, v, o, l, NULL, dq, dk, dv, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "dout buffer is NULL");
    EXPECT(sparcl_plan_backward(mplan, q, k, v, o, l, d_o, dq, small, dv, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "dk buffer has 572 bytes; the shape needs 576");
    EXPECT(sparcl_plan_backward(mplan, q, k, v, o, small_l, d_o, dq, dk, dv, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "lse buffer has 132 bytes; the shape needs 136");
    EXPECT(sparcl_plan_backward(mplan, q, k, v, o, l, d_o, dq, dk, dk, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "dk aliases dv");
    EXPECT(sparcl_plan_backward(mplan, q, k, v, o, l, d_o, q, dk, dv, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "dq aliases q");
    EXPECT(sparcl_plan_backward(mplan, q, k, v, o, l, d_o, dq, dk, dv, 1, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "num_wait 1");
    cr_assert_eq(sparcl_plan_backward(NULL, q, k, v, o, l, d_o, dq, dk, dv, 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "plan is NULL"));
    cl_mem all[11] = {q, k, v, o, l, d_o, dq, dk, dv, small, small_l};
    for (int i = 0; i < 11; ++i)
        clReleaseMemObject(all[i]);
    float h[nq];
    EXPECT(sparcl_plan_backward_host(mplan, h, h, h, h, NULL, h, h, h, h),
           SPARCL_ERR_INVALID_ARGUMENT, "lse is NULL");
    EXPECT(sparcl_plan_backward_host(mplan, h, h, h, h, h, h, h, h, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "dv is NULL");
}

Test(backward, bad_parameters_are_named, .init = misuse_setup, .fini = misuse_teardown)
{
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "WG_SIZE", 8);
    sparcl_params_set(&p, "BLOCK_M", 8);
    sparcl_params_set(&p, "BLOCK_N", 4);
    EXPECT(sparcl_plan_prepare_backward(mplan, &p), SPARCL_ERR_INVALID_ARGUMENT,
           "BLOCK_N 4 must be multiples of WG_SIZE 8");
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "BLOCK_M", 3);
    EXPECT(sparcl_plan_prepare_backward(mplan, &p), SPARCL_ERR_INVALID_ARGUMENT,
           "BLOCK_M 3 is not one of");
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "ROWS", 2);
    EXPECT(sparcl_plan_prepare_backward(mplan, &p), SPARCL_ERR_INVALID_ARGUMENT,
           "unknown parameter ROWS for kernel attn_bwd");
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "BLOCK_N", 128);
    sparcl_params_set(&p, "WG_SIZE", 1); /* a GPU's default of 64 would make it 2 keys */
    EXPECT(sparcl_plan_prepare_backward(mplan, &p), SPARCL_ERR_INVALID_ARGUMENT,
           "keys 128 per work-item");
    /* A failed preparation leaves the plan usable with its defaults. */
    sparcl_param_source src;
    cr_assert_eq(sparcl_plan_backward_params(mplan, &p, &src), SPARCL_OK);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
}

/* A row whose LSE is -inf contributes nothing, even where the layout says
 * it attends (inconsistent input must not turn into NaN or inf). */
Test(backward, minus_inf_lse_rows_contribute_nothing, .init = misuse_setup,
     .fini = misuse_teardown)
{
    enum { NQ = 2 * 17 * 16, NK = 9 * 16, NL = 2 * 17 };
    float q[NQ], k[NK], v[NK], o[NQ], l[NL], dout[NQ], dq[NQ], dk[NK], dv[NK];
    oracle_fill(q, NQ, 5), oracle_fill(k, NK, 6), oracle_fill(v, NK, 7);
    oracle_fill(o, NQ, 8), oracle_fill(dout, NQ, 9);
    for (int i = 0; i < NL; ++i)
        l[i] = -INFINITY;
    cr_assert_eq(sparcl_plan_backward_host(mplan, q, k, v, o, l, dout, dq, dk, dv), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(mctx));
    for (int i = 0; i < NQ; ++i)
        cr_assert_eq(dq[i], 0.0f, "dq[%d] = %g", i, dq[i]);
    for (int i = 0; i < NK; ++i)
        cr_assert(dk[i] == 0.0f && dv[i] == 0.0f, "dk/dv[%d] = %g %g", i, dk[i], dv[i]);
}

/* [B, H, S, D] -> [B, S, H, D] */
static float *to_bshd(const float *x, int b, int h, int n, int d)
{
    float *y = malloc(sizeof *y * (size_t)b * h * n * d);
    for (int ib = 0; ib < b; ++ib)
        for (int ih = 0; ih < h; ++ih)
            for (int i = 0; i < n; ++i)
                memcpy(y + (((size_t)ib * n + i) * h + ih) * d,
                       x + (((size_t)ib * h + ih) * n + i) * d, sizeof *y * d);
    return y;
}

/* A plan for [B, S, H, D] q, k, v (out contiguous) gives the gradients of
 * the contiguous plan, each in its tensor's layout (dout like out, dq like
 * q, dk/dv like k/v). */
Test(backward, strided_tensors)
{
    enum { B = 2, HQ = 2, HKV = 1, N = 17, D = 16 };
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = B, d.q_heads = HQ, d.kv_heads = HKV, d.q_len = d.kv_len = N, d.head_dim = D;
    d.causal = 1;
    sparcl_plan *flat = NULL, *strided = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &flat, &d), SPARCL_OK);
    const sparcl_strides sq = {(int64_t)N * HQ * D, D, HQ * D}, sk = {(int64_t)N * HKV * D, D, HKV * D};
    d.q_strides = sq; /* out (and so dout) stays contiguous */
    d.k_strides = d.v_strides = sk;
    cr_assert_eq(sparcl_plan_init(ctx, &strided, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nq = (size_t)B * HQ * N * D, nk = (size_t)B * HKV * N * D, nl = (size_t)B * HQ * N;
    const size_t sizes[9] = {nq, nk, nk, nq, nl, nq, nq, nk, nk};
    const int heads[9] = {HQ, HKV, HKV, 0, 0, 0, HQ, HKV, HKV}; /* 0: not permuted */
    float *x[9]; /* q k v out lse dout dq dk dv, contiguous */
    for (int t = 0; t < 9; ++t) {
        x[t] = malloc(sizes[t] * 4);
        oracle_fill(x[t], sizes[t], 90 + t);
    }
    cr_assert_eq(sparcl_plan_forward_host(flat, x[0], x[1], x[2], x[3], x[4]), SPARCL_OK);
    cr_assert_eq(sparcl_plan_backward_host(flat, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7],
                                           x[8]),
                 SPARCL_OK);
    cl_mem m[9];
    for (int t = 0; t < 9; ++t) {
        float *y = heads[t] ? to_bshd(x[t], B, heads[t], N, D) : x[t];
        m[t] = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              sizes[t] * 4, y, NULL);
        if (heads[t])
            free(y);
    }
    cl_event ev;
    cr_assert_eq(sparcl_plan_backward(strided, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7],
                                      m[8], 0, NULL, &ev),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    clWaitForEvents(1, &ev);
    clReleaseEvent(ev);
    for (int t = 6; t < 9; ++t) {
        float *got = malloc(sizes[t] * 4), *want = to_bshd(x[t], B, heads[t], N, D);
        clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m[t], CL_TRUE, 0, sizes[t] * 4, got, 0,
                            NULL, NULL);
        for (size_t i = 0; i < sizes[t]; ++i)
            cr_assert_float_eq(got[i], want[i], 1e-6, "tensor %d element %zu", t, i);
        free(got), free(want);
    }
    for (int t = 0; t < 9; ++t) {
        clReleaseMemObject(m[t]);
        free(x[t]);
    }
    sparcl_plan_free(flat);
    sparcl_plan_free(strided);
    sparcl_ctx_free(ctx);
}

/* The descriptor's unchecked_params reaches the backward: a value the
 * schema refuses goes to the compiler, whose #error comes back as a build
 * error with its log. */
Test(backward, unchecked_parameters_give_build_errors, .init = misuse_setup,
     .fini = misuse_teardown)
{
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "BLOCK_N", 24);
    EXPECT(sparcl_plan_prepare_backward(mplan, &p), SPARCL_ERR_INVALID_ARGUMENT,
           "BLOCK_N 24 is not one of");
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = 9, d.head_dim = 8, d.unchecked_params = 1;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(mctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(mctx));
    EXPECT(sparcl_plan_prepare_backward(plan, &p), SPARCL_ERR_BUILD, "BLOCK_N=24");
    cr_assert(strstr(sparcl_ctx_build_log(mctx), "BLOCK_N / WG_SIZE must be"), "log: %s",
              sparcl_ctx_build_log(mctx));
    sparcl_plan_free(plan);
}

/* A tuning-database row of kernel family attn_bwd chooses the backward's
 * parameters (and only the backward's), and those parameters compute the
 * gradients of the reference. */
Test(backward, uses_tuned_rows)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/sparcl-test-backward-%d.db", (int)getpid());
    unlink(path);
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_USER, path), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = 2, d.kv_heads = 1, d.q_len = d.kv_len = 33, d.head_dim = 24, d.causal = 1;
    sparcl_device_info dev;
    sparcl_tuning_problem prob;
    cr_assert_eq(sparcl_ctx_device_info(ctx, &dev), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_problem_init(ctx, &prob, "attn_bwd", &d, NULL), SPARCL_OK);
    sparcl_tuning_result r;
    memset(&r, 0, sizeof r);
    sparcl_params_set(&r.params, "BLOCK_M", 4);
    sparcl_params_set(&r.params, "BLOCK_N", 2);
    sparcl_params_set(&r.params, "USE_LOCAL", 1);
    sparcl_params_set(&r.params, "WG_SIZE", 2);
    r.status = SPARCL_TUNING_OK;
    r.median_ms = r.min_ms = r.max_ms = 1.0;
    r.runs = 3;
    sparcl_tuning_db *db = NULL;
    cr_assert_eq(sparcl_tuning_db_init(ctx, &db, path, SPARCL_TUNING_DB_WRITE), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    sparcl_tuning_db_free(db);

    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_param_source src;
    sparcl_params got;
    sparcl_plan_params(plan, NULL, &src);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT, "the forward has no row");
    cr_assert_eq(sparcl_plan_backward_params(plan, &got, &src), SPARCL_OK);
    cr_assert_eq(src, SPARCL_PARAMS_DATABASE);
    int32_t bn = 0, wg = 0;
    cr_assert(sparcl_params_get(&got, "BLOCK_N", &bn) && bn == 2);
    cr_assert(sparcl_params_get(&got, "WG_SIZE", &wg) && wg == 2);

    double err = backward_check(ctx, plan, &d, 60);
    cr_assert(err >= 0 && err <= TOL, "error %g: %s", err, sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
    static const char *suffix[3] = {"", "-wal", "-shm"}; /* SQLite's WAL files too */
    for (int i = 0; i < 3; ++i) {
        char f[80];
        snprintf(f, sizeof f, "%s%s", path, suffix[i]);
        unlink(f);
    }
}
