/*
 * test_lsh.c -- LSH attention plans (Reformer; sparcl.h, "LSH attention").
 *
 * The plan's buckets and sorted order equal the double reference's token
 * for token (both hash with the same float fma chain and the same seeded
 * rotations; the reference sorts by comparison, the device by counting),
 * the order is a stable sort of the buckets, and scaled copies of a token
 * share its buckets.  Outputs and LSEs match the reference on odd shapes
 * (lengths 1, 17, 113; head dims 72, 100), several (rounds, buckets,
 * chunk) sets and parameter sets (work-groups of several items too),
 * causal and not, GQA.  One round is also
 * checked against the brute-force oracle with keys q / ||q|| and the chunk
 * windows as a predicate, independently of the reference's attention.  Bad
 * fields are refused naming the field; the backward is refused.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

TestSuite(lsh, .init = setup, .fini = teardown, .timeout = 300);

typedef struct lcase {
    int batch, hq, hkv, n, dim, rounds, buckets, chunk, causal;
    char params[40]; /* "BLOCK_M=.. BLOCK_N=.. VEC=.." or "" for the plan's choice (an array:
                      * parameterized cases are copied into the test process) */
} lcase;

static sparcl_plan_desc make_desc(const lcase *c, uint64_t seed)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = c->batch;
    d.q_heads = c->hq;
    d.kv_heads = c->hkv;
    d.q_len = d.kv_len = c->n;
    d.head_dim = c->dim;
    d.causal = c->causal;
    d.attention = SPARCL_ATTENTION_LSH;
    d.lsh_rounds = c->rounds;
    d.lsh_buckets = c->buckets;
    d.lsh_chunk = c->chunk;
    d.seed = seed;
    return d;
}

static void parse(const char *text, sparcl_params *p)
{
    sparcl_params_clear(p);
    char buf[128], *save = NULL;
    snprintf(buf, sizeof buf, "%s", text);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(t, '=');
        cr_assert_not_null(eq);
        *eq = 0;
        cr_assert_eq(sparcl_params_set(p, t, atoi(eq + 1)), SPARCL_OK);
    }
}

static size_t q_elems(const lcase *c)
{
    return (size_t)c->batch * c->hq * c->n * c->dim;
}

static size_t v_elems(const lcase *c)
{
    return (size_t)c->batch * c->hkv * c->n * c->dim;
}

/* Runs the plan of `c` on host q, v into out, lse. */
static void run_plan(const lcase *c, uint64_t seed, const float *q, const float *v, float *out,
                     float *lse)
{
    sparcl_plan_desc d = make_desc(c, seed);
    sparcl_params p;
    parse(c->params, &p);
    d.params = p.count ? &p : NULL;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    /* Shared QK: k is not read; q stands in when the shapes agree. */
    const float *k = c->hq == c->hkv ? q : v;
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, out, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
}

/* The device's buckets and order for host q (contiguous). */
static void plan_order(const lcase *c, uint64_t seed, const float *q, int32_t *bk, int32_t *ord)
{
    sparcl_plan_desc d = make_desc(c, seed);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_int err;
    cl_mem qb = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                               sizeof(float) * q_elems(c), (void *)q, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cr_assert_eq(sparcl_plan_lsh_order(plan, NULL, qb, bk, ord), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    clReleaseMemObject(qb);
    sparcl_plan_free(plan);
}

static lcase forward_cases[] = {
    {1, 1, 1, 1, 72, 1, 2, 4, 0, ""},
    {1, 1, 1, 1, 100, 3, 4, 1, 1, ""},
    {1, 2, 2, 17, 100, 2, 4, 5, 0, ""},
    {2, 2, 1, 17, 72, 3, 8, 4, 1, ""},
    {1, 4, 2, 113, 72, 2, 16, 16, 1, ""},
    {1, 2, 2, 113, 100, 4, 6, 13, 0, ""},
    {1, 1, 1, 113, 72, 1, 2, 200, 0, ""},
    {1, 2, 1, 113, 100, 2, 8, 7, 1, "BLOCK_M=1 BLOCK_N=4 VEC=1"},
    {1, 2, 2, 113, 72, 3, 10, 9, 0, "BLOCK_M=16 BLOCK_N=64 VEC=16"},
    {2, 1, 1, 113, 100, 2, 32, 3, 1, "BLOCK_M=8 BLOCK_N=8 VEC=4"},
    /* GPU-style groups: several work-items per group, the last groups
     * partly past the end (17 / 4 rows, 113 / 2 rows, the tiles). */
    {1, 2, 2, 17, 100, 2, 4, 5, 0, "BLOCK_M=4 BLOCK_N=16 VEC=8 WG_SIZE=8"},
    {1, 2, 1, 113, 72, 2, 8, 16, 1, "BLOCK_M=2 BLOCK_N=8 VEC=4 WG_SIZE=4"},
};

ParameterizedTestParameters(lsh, forward_matches_reference)
{
    return cr_make_param_array(lcase, forward_cases,
                               sizeof forward_cases / sizeof forward_cases[0]);
}

ParameterizedTest(lcase *c, lsh, forward_matches_reference)
{
    const size_t nq = q_elems(c), nv = v_elems(c), rows = nq / (size_t)c->dim;
    float *q = malloc(4 * nq), *v = malloc(4 * nv), *o = malloc(4 * nq), *l = malloc(4 * rows);
    double *ro = malloc(8 * nq), *rl = malloc(8 * rows);
    oracle_fill(q, nq, 11);
    oracle_fill(v, nv, 12);
    run_plan(c, 5, q, v, o, l);
    sparcl_plan_desc d = make_desc(c, 5);
    cr_assert_eq(sparcl_reference_forward(ctx, &d, q, q, v, ro, rl), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    const double eo = oracle_max_abs_diff_f(o, ro, nq), el = oracle_max_abs_diff_f(l, rl, rows);
    cr_assert_leq(eo, 1e-4, "n %d dim %d rounds %d buckets %d chunk %d causal %d: out err %g", c->n,
                  c->dim, c->rounds, c->buckets, c->chunk, c->causal, eo);
    cr_assert_leq(el, 1e-4, "n %d: lse err %g", c->n, el);
    free(q), free(v), free(o), free(l), free(ro), free(rl);
}

/* Buckets and order: device == reference, token for token; the order is a
 * stable sort of the buckets; rounds differ. */
Test(lsh, order_matches_reference_token_exactly)
{
    const lcase c = {2, 3, 3, 113, 100, 4, 40, 8, 0, ""}; /* 20 columns: VEC 16 and a tail */
    const size_t nq = q_elems(&c), per = (size_t)c.batch * c.hq * c.rounds * c.n;
    float *q = malloc(4 * nq);
    int32_t *bk = malloc(4 * per), *ord = malloc(4 * per), *rb = malloc(4 * per),
            *ro = malloc(4 * per);
    oracle_fill(q, nq, 21);
    plan_order(&c, 77, q, bk, ord);
    sparcl_plan_desc d = make_desc(&c, 77);
    cr_assert_eq(sparcl_reference_lsh_order(ctx, &d, q, rb, ro), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    for (size_t x = 0; x < per; ++x) {
        cr_assert_eq(bk[x], rb[x], "bucket %zu: device %d, reference %d", x, bk[x], rb[x]);
        cr_assert_eq(ord[x], ro[x], "order %zu: device %d, reference %d", x, ord[x], ro[x]);
    }
    int rounds_differ = 0, used = 0;
    for (size_t s = 0; s < per / (size_t)c.n; ++s) {
        const int32_t *b = bk + s * (size_t)c.n, *o = ord + s * (size_t)c.n;
        char seen[113] = {0};
        for (int p = 0; p < c.n; ++p) {
            cr_assert(o[p] >= 0 && o[p] < c.n && !seen[o[p]], "not a permutation");
            seen[o[p]] = 1;
            cr_assert(b[o[p]] >= 0 && b[o[p]] < c.buckets);
            if (p > 0) {
                cr_assert_leq(b[o[p - 1]], b[o[p]], "not sorted by bucket");
                if (b[o[p - 1]] == b[o[p]])
                    cr_assert_lt(o[p - 1], o[p], "equal buckets out of position order");
            }
        }
        if (s % (size_t)c.rounds)
            rounds_differ |= memcmp(b, b - c.n, sizeof *b * (size_t)c.n) != 0;
        used |= b[0] != b[1];
    }
    cr_assert(rounds_differ, "every round hashed alike");
    cr_assert(used);
    free(q), free(bk), free(ord), free(rb), free(ro);
}

/* Angular hashing ignores length: 2^k x q_i hashes exactly as q_i (the
 * float chain scales exactly), and a new seed draws new rotations. */
Test(lsh, scaled_copies_share_buckets_and_seeds_matter)
{
    const lcase c = {1, 1, 1, 17, 72, 3, 8, 4, 0, ""};
    const size_t nq = q_elems(&c), per = (size_t)c.rounds * c.n;
    float *q = malloc(4 * nq);
    int32_t *bk = malloc(4 * per), *b2 = malloc(4 * per);
    oracle_fill(q, nq, 31);
    for (int x = 0; x < c.dim; ++x) {
        q[5 * c.dim + x] = 4.0f * q[2 * c.dim + x];
        q[9 * c.dim + x] = 0.5f * q[2 * c.dim + x];
    }
    plan_order(&c, 1, q, bk, NULL);
    for (int r = 0; r < c.rounds; ++r) {
        cr_assert_eq(bk[r * c.n + 5], bk[r * c.n + 2]);
        cr_assert_eq(bk[r * c.n + 9], bk[r * c.n + 2]);
    }
    plan_order(&c, 2, q, b2, NULL);
    cr_assert(memcmp(bk, b2, sizeof *bk * per) != 0, "seed 2 hashed as seed 1");
    free(q), free(bk), free(b2);
}

/* One round against the brute-force oracle: keys q_j / ||q_j||, and the
 * predicate "j is in i's chunk or the chunk before in the sorted order,
 * j <= i when causal, j != i unless nothing else". */
typedef struct window_pred {
    const int32_t *ord; /* per head, n entries */
    const int32_t *pos; /* sorted position of each token, per head */
    int n, chunk, causal;
} window_pred;

static int in_window(const window_pred *w, int h, int i, int j)
{
    const int32_t *pos = w->pos + (size_t)h * w->n;
    const int ci = pos[i] / w->chunk, cj = pos[j] / w->chunk;
    return (cj == ci || cj == ci - 1) && (!w->causal || j <= i);
}

static int pred(const void *self, int h, int i, int j)
{
    const window_pred *w = self;
    if (!in_window(w, h, i, j))
        return 0;
    if (j != i)
        return 1;
    for (int x = 0; x < w->n; ++x)
        if (x != i && in_window(w, h, i, x))
            return 0;
    return 1;
}

Test(lsh, one_round_matches_brute_force_oracle)
{
    for (int causal = 0; causal < 2; ++causal) {
        const lcase c = {1, 2, 1, 113, 72, 1, 12, 10, causal, ""};
        const size_t nq = q_elems(&c), nv = v_elems(&c), rows = nq / (size_t)c.dim;
        float *q = malloc(4 * nq), *k = malloc(4 * nq), *v = malloc(4 * nv);
        float *o = malloc(4 * nq), *l = malloc(4 * rows);
        double *ro = malloc(8 * nq), *rl = malloc(8 * rows);
        int32_t *ord = malloc(4 * rows), *pos = malloc(4 * rows);
        oracle_fill(q, nq, 41);
        oracle_fill(v, nv, 42);
        for (size_t r = 0; r < rows; ++r) {
            double n2 = 0;
            for (int x = 0; x < c.dim; ++x)
                n2 += (double)q[r * c.dim + x] * q[r * c.dim + x];
            for (int x = 0; x < c.dim; ++x)
                k[r * c.dim + x] = (float)(q[r * c.dim + x] / sqrt(n2));
        }
        plan_order(&c, 9, q, NULL, ord);
        for (int h = 0; h < c.hq; ++h)
            for (int p = 0; p < c.n; ++p)
                pos[h * c.n + ord[h * c.n + p]] = p;
        run_plan(&c, 9, q, v, o, l);
        const window_pred w = {ord, pos, c.n, c.chunk, causal};
        /* GQA in the oracle: keys per q head, values per kv head, so run it
         * per q head with its own keys. */
        for (int h = 0; h < c.hq; ++h) {
            const window_pred wh = {ord + h * c.n, pos + h * c.n, c.n, c.chunk, causal};
            (void)w;
            oracle_attention(1, 1, 1, c.n, c.n, c.dim, 1.0 / sqrt(c.dim), pred, &wh,
                             q + (size_t)h * c.n * c.dim, k + (size_t)h * c.n * c.dim, v,
                             ro + (size_t)h * c.n * c.dim, rl + (size_t)h * c.n);
        }
        const double eo = oracle_max_abs_diff_f(o, ro, nq), el = oracle_max_abs_diff_f(l, rl, rows);
        cr_assert_leq(eo, 1e-4, "causal %d: out err %g", causal, eo);
        cr_assert_leq(el, 1e-4, "causal %d: lse err %g", causal, el);
        /* Causal: token 0 sees only itself in every round. */
        if (causal)
            for (int x = 0; x < c.dim; ++x)
                cr_assert_float_eq(o[x], v[x], 1e-6);
        free(q), free(k), free(v), free(o), free(l), free(ro), free(rl), free(ord), free(pos);
    }
}

static void expect_refused(sparcl_plan_desc *d, sparcl_status want, const char *field)
{
    sparcl_plan *plan = (sparcl_plan *)1;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, d), want, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_null(plan);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), field), "message \"%s\" lacks \"%s\"",
              sparcl_ctx_errmsg(ctx), field);
}

Test(lsh, bad_fields_are_refused_by_name)
{
    const lcase c = {1, 1, 1, 17, 72, 2, 8, 4, 0, ""};
    const sparcl_status BAD = SPARCL_ERR_INVALID_ARGUMENT, NS = SPARCL_ERR_NOT_SUPPORTED;
    sparcl_plan_desc d = make_desc(&c, 1);
    d.lsh_rounds = 0;
    expect_refused(&d, BAD, "lsh_rounds 0");
    d.lsh_rounds = SPARCL_LSH_MAX_ROUNDS + 1;
    expect_refused(&d, BAD, "lsh_rounds");
    d = make_desc(&c, 1);
    d.lsh_buckets = 0;
    expect_refused(&d, BAD, "lsh_buckets 0");
    d.lsh_buckets = 7;
    expect_refused(&d, BAD, "lsh_buckets 7 must be even");
    d.lsh_buckets = SPARCL_LSH_MAX_BUCKETS + 2;
    expect_refused(&d, BAD, "lsh_buckets");
    d = make_desc(&c, 1);
    d.lsh_chunk = 0;
    expect_refused(&d, BAD, "lsh_chunk 0");
    d.lsh_chunk = -3;
    expect_refused(&d, BAD, "lsh_chunk -3");
    d = make_desc(&c, 1);
    d.kv_len = 18;
    expect_refused(&d, NS, "q_len 17 must equal kv_len 18");
    d = make_desc(&c, 1);
    d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    expect_refused(&d, NS, "softmax only");
    sparcl_layout *lay = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &lay, 1, 17, 17, 8), SPARCL_OK);
    d = make_desc(&c, 1);
    d.layout = lay;
    expect_refused(&d, NS, "layout");
    sparcl_layout_free(lay);
    /* The reference refuses the same fields. */
    d = make_desc(&c, 1);
    d.lsh_chunk = 0;
    float x[17 * 72] = {0};
    double out[17 * 72];
    cr_assert_eq(sparcl_reference_forward(ctx, &d, x, x, x, out, NULL), BAD);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "lsh_chunk"));
}

Test(lsh, backward_and_other_kinds_are_refused)
{
    const lcase c = {1, 1, 1, 17, 72, 2, 8, 4, 0, ""};
    sparcl_plan_desc d = make_desc(&c, 1);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_prepare_backward(plan, NULL), SPARCL_ERR_NOT_SUPPORTED);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "LSH attention"), "%s", sparcl_ctx_errmsg(ctx));
    static float x[17 * 72], y[17 * 72], z[17 * 72], dq[17 * 72], dk[17 * 72], dv[17 * 72];
    static float l[17];
    cr_assert_eq(sparcl_plan_backward_host(plan, x, x, x, y, l, z, dq, dk, dv),
                 SPARCL_ERR_NOT_SUPPORTED);
    /* The rotations are the plan's only device memory. */
    cr_assert_eq(sparcl_plan_device_bytes(plan), sizeof(float) * 2 * 72 * 4);
    sparcl_params p;
    sparcl_param_source src;
    sparcl_plan_params(plan, &p, &src);
    int32_t vec = 0;
    cr_assert(sparcl_params_get(&p, "VEC", &vec) && vec >= 1, "attn_lsh parameters reported");
    sparcl_plan_free(plan);
    static double ddq[17 * 72], ddk[17 * 72], ddv[17 * 72];
    cr_assert_eq(sparcl_reference_backward(ctx, &d, x, x, x, z, ddq, ddk, ddv),
                 SPARCL_ERR_NOT_SUPPORTED);
    /* The inspection call refuses plans of other kinds. */
    d.attention = SPARCL_ATTENTION_EXACT;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK);
    cl_int err;
    cl_mem qb = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE, sizeof x, NULL, &err);
    int32_t bk[2 * 17];
    cr_assert_eq(sparcl_plan_lsh_order(plan, NULL, qb, bk, NULL), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "not an LSH"));
    clReleaseMemObject(qb);
    sparcl_plan_free(plan);
}
