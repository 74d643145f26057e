/*
 * test_select.c -- dynamic block selection (desc.select) against a double
 * host reference of the rule sparcl.h states: pooled means, scores, the
 * candidates under causal, top-k and mass prefixes, the union with the
 * pinned layout.  Checks (a) the chosen pairs token by token through
 * sparcl_plan_read_selection(), (b) the forward against
 * sparcl_reference_forward() over that layout, (c) pinned pairs always
 * kept, (d) odd shapes (17, 113; head dims 72 and 100), GQA, batches, a
 * second call on new data with the same plan, and bad input.  The inputs
 * are block-structured (each block's rows are its centre plus small noise),
 * and every case asserts its own margins: no two ranked scores and no mass
 * prefix lie within 1e-3 of a decision, so float and double agree.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device_io.h"
#include "oracle.h"
#include "sparcl.h"

#define TOL 1e-4
#define MARGIN 1e-3

/* Rows of [B, H, len, D]: the centre of the row's block (uniform in
 * [-1, 1], one per (b, h, block)) plus noise in [-0.1, 0.1]. */
static float *blocky(int b, int h, int len, int d, int block, uint64_t seed)
{
    const int nb = (len + block - 1) / block;
    const size_t n = (size_t)b * h * len * d;
    float *x = malloc(n * sizeof *x), *c = malloc((size_t)b * h * nb * d * sizeof *c);
    cr_assert(x && c);
    oracle_fill(x, n, seed);
    oracle_fill(c, (size_t)b * h * nb * d, seed + 1);
    for (size_t bh = 0; bh < (size_t)b * h; ++bh)
        for (int i = 0; i < len; ++i)
            for (int k = 0; k < d; ++k) {
                float *e = x + (bh * len + i) * d + k;
                *e = c[(bh * nb + i / block) * d + k] + 0.1f * *e;
            }
    free(c);
    return x;
}

/* ---- the host reference of the selection ------------------------------- */

typedef struct shape {
    int batch, q_heads, kv_heads, q_len, kv_len, dim, causal, block;
    int rule, k;
    float tau;
    int pin; /* 0 none, 1 sinks + local window (1 head), 2 a per-head window */
} shape;

/* Mean of rows [r0, r1) of head (b, h) of x ([B, H, len, D]). */
static void pool(const float *x, int h_count, int len, int d, int b, int h, int r0, int r1,
                 double *out)
{
    for (int k = 0; k < d; ++k) {
        double s = 0;
        for (int i = r0; i < r1; ++i)
            s += x[(((size_t)b * h_count + h) * len + i) * d + k];
        out[k] = s / (r1 - r0);
    }
}

/* sel[((b * H + h) * nqb + r) * nkb + c]: the rule of sparcl.h in double,
 * asserting the decision margins. */
static uint8_t *reference_select(const shape *s, const float *q, const float *k)
{
    const int S = s->block, nqb = (s->q_len + S - 1) / S, nkb = (s->kv_len + S - 1) / S;
    const int g = s->q_heads / s->kv_heads, off = s->kv_len - s->q_len;
    const double scale = 1.0 / sqrt((double)s->dim);
    uint8_t *sel = calloc((size_t)s->batch * s->q_heads * nqb * nkb, 1);
    double *pq = malloc(sizeof *pq * s->dim), *pk = malloc(sizeof *pk * s->dim);
    double *sc = malloc(sizeof *sc * nkb), *w = malloc(sizeof *w * nkb);
    int *order = malloc(sizeof *order * nkb);
    cr_assert(sel && pq && pk && sc && w && order);
    for (int b = 0; b < s->batch; ++b)
        for (int h = 0; h < s->q_heads; ++h)
            for (int r = 0; r < nqb; ++r) {
                const int r1 = (r + 1) * S < s->q_len ? (r + 1) * S : s->q_len;
                pool(q, s->q_heads, s->q_len, s->dim, b, h, r * S, r1, pq);
                const int last = r1 - 1 + off;
                int nc = !s->causal ? nkb
                         : last < 0 ? 0
                                    : (last / S + 1 < nkb ? last / S + 1 : nkb);
                double mx = -INFINITY, total = 0;
                for (int c = 0; c < nc; ++c) {
                    const int c1 = (c + 1) * S < s->kv_len ? (c + 1) * S : s->kv_len;
                    pool(k, s->kv_heads, s->kv_len, s->dim, b, h / g, c * S, c1, pk);
                    double dot = 0;
                    for (int x = 0; x < s->dim; ++x)
                        dot += pq[x] * pk[x];
                    sc[c] = dot * scale;
                    mx = sc[c] > mx ? sc[c] : mx;
                    order[c] = c;
                }
                for (int c = 0; c < nc; ++c) {
                    const int c1 = (c + 1) * S < s->kv_len ? (c + 1) * S : s->kv_len;
                    w[c] = (c1 - c * S) * exp(sc[c] - mx);
                    total += w[c];
                }
                /* insertion sort: higher score first, ties to lower index */
                for (int a = 1; a < nc; ++a)
                    for (int z = a; z > 0 && sc[order[z]] > sc[order[z - 1]]; --z) {
                        int t = order[z];
                        order[z] = order[z - 1];
                        order[z - 1] = t;
                    }
                int keep = 0;
                if (s->rule == SPARCL_SELECT_TOPK) {
                    keep = s->k < nc ? s->k : nc;
                    if (keep > 0 && keep < nc)
                        cr_assert_gt(sc[order[keep - 1]] - sc[order[keep]], MARGIN,
                                     "no margin at the top-k boundary (b %d h %d r %d)", b, h, r);
                } else if (nc > 0) {
                    const double goal = s->tau * total;
                    double cum = 0;
                    while (keep < nc && cum < goal)
                        cum += w[order[keep++]];
                    cr_assert_gt(goal - (cum - w[order[keep - 1]]), MARGIN * total,
                                 "no margin below the mass boundary (b %d h %d r %d)", b, h, r);
                    if (s->tau < 1.0f)
                        cr_assert_gt(cum - goal, MARGIN * total,
                                     "no margin above the mass boundary (b %d h %d r %d)", b, h, r);
                }
                for (int a = 0; a < keep; ++a)
                    sel[(((size_t)b * s->q_heads + h) * nqb + r) * nkb + order[a]] = 1;
            }
    free(pq);
    free(pk);
    free(sc);
    free(w);
    free(order);
    return sel;
}

static sparcl_layout *make_pin(sparcl_ctx *ctx, const shape *s)
{
    sparcl_layout *l = NULL;
    if (s->pin == 1) { /* StreamingLLM: 3 sink keys and a local window of 5 */
        cr_assert_eq(sparcl_layout_init_streaming(ctx, &l, 1, s->q_len, s->kv_len, 16, 3, 5),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    } else if (s->pin == 2) {
        cr_assert_eq(sparcl_layout_init_window(ctx, &l, s->q_heads, s->q_len, s->kv_len, 8, 2, 1),
                     SPARCL_OK);
    }
    return l;
}

static void desc_of(const shape *s, sparcl_plan_desc *d)
{
    sparcl_plan_desc_init(d);
    d->batch = s->batch;
    d->q_heads = s->q_heads;
    d->kv_heads = s->kv_heads;
    d->q_len = s->q_len;
    d->kv_len = s->kv_len;
    d->head_dim = s->dim;
    d->causal = s->causal;
    d->select = s->rule;
    d->select_k = s->k;
    d->select_tau = s->tau;
    d->select_block = s->block;
}

/* One call on (q, k, v) seeded `seed`: (a) the read-back equals the
 * reference's pairs, (b) out equals the reference forward over them, (c)
 * every pinned pair is among them. */
static void check_call(sparcl_ctx *ctx, sparcl_plan *plan, const shape *s, const sparcl_layout *pin,
                       uint64_t seed)
{
    const size_t nq = (size_t)s->batch * s->q_heads * s->q_len * s->dim;
    const size_t nk = (size_t)s->batch * s->kv_heads * s->kv_len * s->dim;
    float *q = blocky(s->batch, s->q_heads, s->q_len, s->dim, s->block, seed);
    float *k = blocky(s->batch, s->kv_heads, s->kv_len, s->dim, s->block, seed + 7);
    float *v = malloc(nk * sizeof *v), *out = malloc(nq * sizeof *out);
    double *ref = malloc(nq * sizeof *ref);
    cr_assert(v && out && ref);
    oracle_fill(v, nk, seed + 9);
    cl_mem bq = dev_upload(ctx, q, nq), bk = dev_upload(ctx, k, nk), bv = dev_upload(ctx, v, nk);
    cl_mem bo = dev_upload(ctx, out, nq);
    cr_assert_eq(sparcl_plan_forward(plan, bq, bk, bv, bo, NULL, 0, NULL, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), bo, CL_TRUE, 0, nq * sizeof *out,
                                     out, 0, NULL, NULL),
                 CL_SUCCESS);
    uint8_t *sel = reference_select(s, q, k);
    const int S = s->block, nqb = (s->q_len + S - 1) / S, nkb = (s->kv_len + S - 1) / S;
    const int off = s->kv_len - s->q_len;
    const int ph = pin ? sparcl_layout_heads(pin) : 0;
    for (int b = 0; b < s->batch; ++b) {
        sparcl_layout *got = NULL;
        cr_assert_eq(sparcl_plan_read_selection(plan, b, &got), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        int64_t wrong = 0, pinned_lost = 0;
        for (int h = 0; h < s->q_heads; ++h)
            for (int i = 0; i < s->q_len; ++i)
                for (int j = 0; j < s->kv_len; ++j) {
                    const int vis = !s->causal || j <= i + off;
                    const int p = pin && sparcl_layout_attends(pin, ph == 1 ? 0 : h, i, j);
                    const int want =
                        vis &&
                        (p || sel[(((size_t)b * s->q_heads + h) * nqb + i / S) * nkb + j / S]);
                    const int has = sparcl_layout_attends(got, h, i, j);
                    wrong += want != has;
                    pinned_lost += p && vis && !has;
                }
        cr_assert_eq(wrong, 0, "batch %d: %lld pairs differ from the reference selection", b,
                     (long long)wrong);
        cr_assert_eq(pinned_lost, 0, "batch %d: %lld pinned pairs dropped", b,
                     (long long)pinned_lost);
        /* (b): the reference forward of this batch entry over `got` */
        sparcl_plan_desc rd;
        desc_of(s, &rd);
        rd.batch = 1;
        rd.select = SPARCL_SELECT_NONE;
        rd.layout = got;
        const size_t oq = (size_t)b * s->q_heads * s->q_len * s->dim;
        const size_t ok = (size_t)b * s->kv_heads * s->kv_len * s->dim;
        cr_assert_eq(sparcl_reference_forward(ctx, &rd, q + oq, k + ok, v + ok, ref + oq, NULL),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        sparcl_layout_free(got);
    }
    const double err = oracle_max_abs_diff_f(out, ref, nq);
    cr_assert_leq(err, TOL, "forward differs from the reference over the selection by %g", err);
    free(sel);
    clReleaseMemObject(bq);
    clReleaseMemObject(bk);
    clReleaseMemObject(bv);
    clReleaseMemObject(bo);
    free(q);
    free(k);
    free(v);
    free(out);
    free(ref);
}

static void run_shape(const shape *s, int calls)
{
    sparcl_ctx *ctx = dev_ctx();
    sparcl_layout *pin = make_pin(ctx, s);
    sparcl_plan_desc d;
    desc_of(s, &d);
    d.layout = pin;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    for (int c = 0; c < calls; ++c)
        check_call(ctx, plan, s, pin, 1000 + 31 * (uint64_t)c);
    sparcl_plan_free(plan);
    sparcl_layout_free(pin);
    sparcl_ctx_free(ctx);
}

/* ---- cases ------------------------------------------------------------- */

ParameterizedTestParameters(select, matches_reference)
{
    static shape cases[] = {
        /* batch qh kvh  q    kv  dim caus blk  rule                k  tau  pin */
        {1, 1, 1, 17, 17, 72, 0, 32, SPARCL_SELECT_TOPK, 1, 0, 0},
        {1, 2, 2, 113, 113, 72, 1, 32, SPARCL_SELECT_TOPK, 2, 0, 0},
        {1, 2, 1, 113, 200, 100, 0, 32, SPARCL_SELECT_TOPK, 3, 0, 0},
        {2, 4, 2, 96, 160, 64, 1, 32, SPARCL_SELECT_TOPK, 2, 0, 1},
        {1, 2, 2, 113, 113, 100, 1, 64, SPARCL_SELECT_MASS, 0, 0.5f, 0},
        {2, 2, 1, 150, 150, 72, 0, 32, SPARCL_SELECT_MASS, 0, 0.8f, 2},
        {1, 1, 1, 100, 100, 64, 1, 32, SPARCL_SELECT_MASS, 0, 1.0f, 1},
        {1, 3, 3, 64, 17, 64, 1, 32, SPARCL_SELECT_TOPK, 1, 0, 0},
        {1, 2, 2, 113, 113, 72, 1, 48, SPARCL_SELECT_TOPK, 2, 0, 1}, /* the tile shrinks */
    };
    return cr_make_param_array(shape, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(shape *s, select, matches_reference)
{
    run_shape(s, 1);
}

/* The same plan on new data chooses again: no rebuild, a new selection. */
Test(select, follows_the_data)
{
    const shape s = {1, 2, 2, 128, 128, 64, 1, 32, SPARCL_SELECT_TOPK, 1, 0, 1};
    run_shape(&s, 2);
}

/* A pinned layout far from what the scores prefer is still attended. */
Test(select, pinned_blocks_kept)
{
    const shape s = {1, 2, 1, 113, 113, 72, 1, 32, SPARCL_SELECT_TOPK, 1, 0, 1};
    run_shape(&s, 1);
}

/* ---- bad input --------------------------------------------------------- */

static sparcl_status init_with(sparcl_ctx *ctx, void (*edit)(sparcl_plan_desc *))
{
    const shape s = {1, 1, 1, 64, 64, 64, 0, 32, SPARCL_SELECT_TOPK, 1, 0, 0};
    sparcl_plan_desc d;
    desc_of(&s, &d);
    edit(&d);
    sparcl_plan *p = NULL;
    sparcl_status st = sparcl_plan_init(ctx, &p, &d);
    cr_assert_eq(st == SPARCL_OK, p != NULL);
    sparcl_plan_free(p);
    return st;
}

static void k_zero(sparcl_plan_desc *d)
{
    d->select_k = 0;
}
static void k_negative(sparcl_plan_desc *d)
{
    d->select_k = -3;
}
static void tau_zero(sparcl_plan_desc *d)
{
    d->select = SPARCL_SELECT_MASS, d->select_tau = 0;
}
static void tau_big(sparcl_plan_desc *d)
{
    d->select = SPARCL_SELECT_MASS, d->select_tau = 1.5f;
}
static void tau_nan(sparcl_plan_desc *d)
{
    d->select = SPARCL_SELECT_MASS, d->select_tau = NAN;
}
static void rule_bad(sparcl_plan_desc *d)
{
    d->select = 7;
}
static void block_negative(sparcl_plan_desc *d)
{
    d->select_block = -1;
}
static void block_off_tile(sparcl_plan_desc *d)
{
    d->select_block = 20;
}
static void entmax(sparcl_plan_desc *d)
{
    d->normalization = SPARCL_NORMALIZATION_SPARSEMAX;
}
static void paged(sparcl_plan_desc *d)
{
    d->page_size = 16;
}

Test(select, bad_input_names_the_field)
{
    sparcl_ctx *ctx = dev_ctx();
    struct {
        void (*edit)(sparcl_plan_desc *);
        sparcl_status st;
        const char *field;
    } cases[] = {
        {k_zero, SPARCL_ERR_INVALID_ARGUMENT, "select_k"},
        {k_negative, SPARCL_ERR_INVALID_ARGUMENT, "select_k"},
        {tau_zero, SPARCL_ERR_INVALID_ARGUMENT, "select_tau"},
        {tau_big, SPARCL_ERR_INVALID_ARGUMENT, "select_tau"},
        {tau_nan, SPARCL_ERR_INVALID_ARGUMENT, "select_tau"},
        {rule_bad, SPARCL_ERR_INVALID_ARGUMENT, "select 7"},
        {block_negative, SPARCL_ERR_INVALID_ARGUMENT, "select_block"},
        {block_off_tile, SPARCL_ERR_INVALID_ARGUMENT, "select_block"},
        {entmax, SPARCL_ERR_NOT_SUPPORTED, "dynamic block selection"},
        {paged, SPARCL_ERR_NOT_SUPPORTED, "page_size"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        cr_expect_eq(init_with(ctx, cases[i].edit), cases[i].st, "case %zu: %s", i,
                     sparcl_ctx_errmsg(ctx));
        cr_expect_not_null(strstr(sparcl_ctx_errmsg(ctx), cases[i].field), "case %zu: %s", i,
                           sparcl_ctx_errmsg(ctx));
    }
    sparcl_ctx_free(ctx);
}

/* Reading back before any call, or from a plan that does not select, and
 * a backward tile that is no power of two: refused with a message. */
Test(select, refusals)
{
    sparcl_ctx *ctx = dev_ctx();
    const shape s = {1, 1, 1, 64, 64, 64, 1, 32, SPARCL_SELECT_TOPK, 1, 0, 0};
    sparcl_plan_desc d;
    desc_of(&s, &d);
    sparcl_plan *p = NULL, *plain = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_layout *l = (sparcl_layout *)1;
    cr_expect_eq(sparcl_plan_read_selection(p, 0, &l), SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect_null(l);
    cr_expect_not_null(strstr(sparcl_ctx_errmsg(ctx), "no forward call"));
    cr_expect_eq(sparcl_plan_read_selection(p, 1, &l), SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect_eq(sparcl_plan_read_selection(NULL, 0, &l), SPARCL_ERR_INVALID_ARGUMENT);
    /* A backward tile that cannot divide the selection block is named. */
    sparcl_params odd;
    sparcl_params_clear(&odd);
    cr_assert_eq(sparcl_params_set(&odd, "BLOCK_M", 1), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&odd, "BLOCK_N", 3), SPARCL_OK);
    cr_expect_neq(sparcl_plan_prepare_backward(p, &odd), SPARCL_OK);
    cr_expect_not_null(strstr(sparcl_ctx_errmsg(ctx), "BLOCK_N"), "%s", sparcl_ctx_errmsg(ctx));
    d.select = SPARCL_SELECT_NONE;
    cr_assert_eq(sparcl_plan_init(ctx, &plain, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_expect_eq(sparcl_plan_read_selection(plain, 0, &l), SPARCL_ERR_INVALID_ARGUMENT);
    cr_expect_not_null(strstr(sparcl_ctx_errmsg(ctx), "select"));
    sparcl_plan_free(plain);
    sparcl_plan_free(p);
    sparcl_ctx_free(ctx);
}

/* ---- the backward ------------------------------------------------------ */

/* Forward then backward on one plan (parameters `force` for the backward
 * when given): dq, dk and dv equal the double reference backward over the
 * pairs the call chose, read back per batch entry (which the forward cases
 * above check against the reference selection). */
static void check_backward(const shape *s, const sparcl_params *force)
{
    sparcl_ctx *ctx = dev_ctx();
    sparcl_layout *pin = make_pin(ctx, s);
    sparcl_plan_desc d;
    desc_of(s, &d);
    d.layout = pin;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    if (force)
        cr_assert_eq(sparcl_plan_prepare_backward(plan, force), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
    const size_t nq = (size_t)s->batch * s->q_heads * s->q_len * s->dim;
    const size_t nk = (size_t)s->batch * s->kv_heads * s->kv_len * s->dim;
    const size_t nl = (size_t)s->batch * s->q_heads * s->q_len;
    float *q = blocky(s->batch, s->q_heads, s->q_len, s->dim, s->block, 77);
    float *k = blocky(s->batch, s->kv_heads, s->kv_len, s->dim, s->block, 78);
    float *v = malloc(nk * sizeof *v), *dout = malloc(nq * sizeof *dout);
    float *out = malloc(nq * sizeof *out), *lse = malloc(nl * sizeof *lse);
    float *g[3] = {malloc(nq * sizeof(float)), malloc(nk * sizeof(float)),
                   malloc(nk * sizeof(float))};
    double *r[3] = {malloc(nq * sizeof(double)), malloc(nk * sizeof(double)),
                    malloc(nk * sizeof(double))};
    cr_assert(v && dout && out && lse && g[0] && g[1] && g[2] && r[0] && r[1] && r[2]);
    oracle_fill(v, nk, 79);
    oracle_fill(dout, nq, 80);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_backward_host(plan, q, k, v, out, lse, dout, g[0], g[1], g[2]),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    for (int b = 0; b < s->batch; ++b) {
        sparcl_layout *got = NULL;
        cr_assert_eq(sparcl_plan_read_selection(plan, b, &got), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        sparcl_plan_desc rd;
        desc_of(s, &rd);
        rd.batch = 1;
        rd.select = SPARCL_SELECT_NONE;
        rd.layout = got;
        const size_t oq = (size_t)b * s->q_heads * s->q_len * s->dim;
        const size_t ok = (size_t)b * s->kv_heads * s->kv_len * s->dim;
        cr_assert_eq(sparcl_reference_backward(ctx, &rd, q + oq, k + ok, v + ok, dout + oq,
                                               r[0] + oq, r[1] + ok, r[2] + ok),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        sparcl_layout_free(got);
    }
    static const char *const names[3] = {"dq", "dk", "dv"};
    const size_t n[3] = {nq, nk, nk};
    for (int t = 0; t < 3; ++t) {
        double scale = 1.0;
        for (size_t i = 0; i < n[t]; ++i)
            scale = fmax(scale, fabs(r[t][i]));
        const double err = oracle_max_abs_diff_f(g[t], r[t], n[t]) / scale;
        cr_assert_leq(err, TOL, "%s differs from the reference backward by %g (relative)", names[t],
                      err);
    }
    for (int t = 0; t < 3; ++t) {
        free(g[t]);
        free(r[t]);
    }
    free(q);
    free(k);
    free(v);
    free(dout);
    free(out);
    free(lse);
    sparcl_plan_free(plan);
    sparcl_layout_free(pin);
    sparcl_ctx_free(ctx);
}

ParameterizedTestParameters(select, backward_matches_reference)
{
    static shape cases[] = {
        /* batch qh kvh  q    kv  dim caus blk  rule                k  tau  pin */
        {1, 1, 1, 17, 17, 72, 0, 32, SPARCL_SELECT_TOPK, 1, 0, 0},
        {1, 2, 1, 113, 200, 100, 0, 32, SPARCL_SELECT_TOPK, 3, 0, 0},
        {2, 4, 2, 96, 160, 64, 1, 32, SPARCL_SELECT_TOPK, 2, 0, 1},
        {2, 2, 1, 150, 150, 72, 0, 32, SPARCL_SELECT_MASS, 0, 0.8f, 2},
        {1, 2, 2, 113, 113, 72, 1, 48, SPARCL_SELECT_TOPK, 2, 0, 1},
    };
    return cr_make_param_array(shape, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(shape *s, select, backward_matches_reference)
{
    check_backward(s, NULL);
}

/* Both backward algorithms and a GPU-shaped tile (many work-items per
 * group, local memory, barriers) that the plan must halve to divide a
 * 48-token block. */
Test(select, backward_parameter_sets)
{
    const shape s = {2, 2, 1, 113, 130, 72, 1, 48, SPARCL_SELECT_TOPK, 2, 0, 1};
    static const struct {
        const char *name[5];
        int32_t value[5];
    } sets[] = {
        {{"ALGO", "BLOCK_M", "BLOCK_N", "WG_SIZE", "USE_LOCAL"}, {0, 32, 32, 16, 1}},
        {{"ALGO", "BLOCK_M", "BLOCK_N", "WG_SIZE", "SPLIT"}, {1, 4, 16, 1, 2}},
        {{"ALGO", "BLOCK_M", "BLOCK_N", "WG_SIZE", "USE_LOCAL"}, {0, 8, 8, 8, 0}},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; ++i) {
        sparcl_params p;
        sparcl_params_clear(&p);
        for (int j = 0; j < 5; ++j)
            cr_assert_eq(sparcl_params_set(&p, sets[i].name[j], sets[i].value[j]), SPARCL_OK);
        check_backward(&s, &p);
    }
}

/* ---- half storage ------------------------------------------------------ */

typedef struct half_case {
    shape s;
    int dtype;
} half_case;

/* q, k, v and out stored as fp16 or bf16: the selection pools the stored
 * values, so the reference rule and forward run on the inputs rounded to
 * the storage type; out is within the storage's rounding of the reference
 * (lse stays fp32). */
static void check_half(const shape *s, int dtype)
{
    sparcl_status (*enc)(const float *, uint16_t *, size_t) =
        dtype == SPARCL_DTYPE_F16 ? sparcl_convert_f32_to_f16 : sparcl_convert_f32_to_bf16;
    sparcl_status (*dec)(const uint16_t *, float *, size_t) =
        dtype == SPARCL_DTYPE_F16 ? sparcl_convert_f16_to_f32 : sparcl_convert_bf16_to_f32;
    sparcl_ctx *ctx = dev_ctx();
    sparcl_layout *pin = make_pin(ctx, s);
    sparcl_plan_desc d;
    desc_of(s, &d);
    d.layout = pin;
    d.dtype = dtype;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nq = (size_t)s->batch * s->q_heads * s->q_len * s->dim;
    const size_t nk = (size_t)s->batch * s->kv_heads * s->kv_len * s->dim;
    float *x[3] = {blocky(s->batch, s->q_heads, s->q_len, s->dim, s->block, 41),
                   blocky(s->batch, s->kv_heads, s->kv_len, s->dim, s->block, 42),
                   malloc(nk * sizeof(float))};
    cr_assert(x[2]);
    oracle_fill(x[2], nk, 43);
    const size_t n[3] = {nq, nk, nk};
    uint16_t *bits[3];
    for (int t = 0; t < 3; ++t) { /* round the inputs to the storage type */
        bits[t] = malloc(n[t] * sizeof(uint16_t));
        cr_assert(bits[t]);
        cr_assert_eq(enc(x[t], bits[t], n[t]), SPARCL_OK);
        cr_assert_eq(dec(bits[t], x[t], n[t]), SPARCL_OK);
    }
    uint16_t *ob = malloc(nq * sizeof *ob);
    float *out = malloc(nq * sizeof *out), *lse = malloc(nq / s->dim * sizeof *lse);
    double *ref = malloc(nq * sizeof *ref);
    cr_assert(ob && out && lse && ref);
    cr_assert_eq(sparcl_plan_forward_host(plan, bits[0], bits[1], bits[2], ob, lse), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(dec(ob, out, nq), SPARCL_OK);
    uint8_t *sel = reference_select(s, x[0], x[1]);
    const int S = s->block, nqb = (s->q_len + S - 1) / S, nkb = (s->kv_len + S - 1) / S;
    const int off = s->kv_len - s->q_len;
    const int ph = pin ? sparcl_layout_heads(pin) : 0;
    for (int b = 0; b < s->batch; ++b) {
        sparcl_layout *got = NULL;
        cr_assert_eq(sparcl_plan_read_selection(plan, b, &got), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        int64_t wrong = 0;
        for (int h = 0; h < s->q_heads; ++h)
            for (int i = 0; i < s->q_len; ++i)
                for (int j = 0; j < s->kv_len; ++j) {
                    const int vis = !s->causal || j <= i + off;
                    const int p = pin && sparcl_layout_attends(pin, ph == 1 ? 0 : h, i, j);
                    const int want =
                        vis &&
                        (p || sel[(((size_t)b * s->q_heads + h) * nqb + i / S) * nkb + j / S]);
                    wrong += want != sparcl_layout_attends(got, h, i, j);
                }
        cr_assert_eq(wrong, 0, "%s batch %d: %lld pairs differ from the reference selection",
                     sparcl_dtype_name(dtype), b, (long long)wrong);
        sparcl_plan_desc rd;
        desc_of(s, &rd);
        rd.batch = 1;
        rd.select = SPARCL_SELECT_NONE;
        rd.layout = got;
        const size_t oq = (size_t)b * s->q_heads * s->q_len * s->dim;
        const size_t ok = (size_t)b * s->kv_heads * s->kv_len * s->dim;
        cr_assert_eq(
            sparcl_reference_forward(ctx, &rd, x[0] + oq, x[1] + ok, x[2] + ok, ref + oq, NULL),
            SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        sparcl_layout_free(got);
    }
    /* |out| <= 1: half rounds at 2^-11, bfloat16 at 2^-8, plus fp32 error. */
    const double tol = dtype == SPARCL_DTYPE_F16 ? 1e-3 : 8e-3;
    const double err = oracle_max_abs_diff_f(out, ref, nq);
    cr_assert_leq(err, tol, "%s: out differs from the reference by %g", sparcl_dtype_name(dtype),
                  err);
    free(sel);
    for (int t = 0; t < 3; ++t) {
        free(x[t]);
        free(bits[t]);
    }
    free(ob);
    free(out);
    free(lse);
    free(ref);
    sparcl_plan_free(plan);
    sparcl_layout_free(pin);
    sparcl_ctx_free(ctx);
}

ParameterizedTestParameters(select, half_storage)
{
    static half_case cases[] = {
        {{1, 2, 1, 113, 200, 72, 1, 32, SPARCL_SELECT_TOPK, 2, 0, 1}, SPARCL_DTYPE_F16},
        {{2, 2, 2, 96, 96, 100, 0, 32, SPARCL_SELECT_MASS, 0, 0.8f, 0}, SPARCL_DTYPE_BF16},
        {{1, 4, 2, 1, 300, 72, 1, 32, SPARCL_SELECT_TOPK, 2, 0, 0}, SPARCL_DTYPE_F16},
        {{1, 2, 2, 3, 500, 64, 1, 64, SPARCL_SELECT_TOPK, 3, 0, 1}, SPARCL_DTYPE_BF16},
    };
    return cr_make_param_array(half_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(half_case *c, select, half_storage)
{
    check_half(&c->s, c->dtype);
}
