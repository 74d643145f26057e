/*
 * test_layout_combine.c -- combinators (union, intersection, per-head
 * assembly, across block sizes), user-defined layouts (BSR, CSR,
 * predicate), introspection (statistics, BSR view), and the fused forward
 * kernel on every pattern, a per-head mix and a union against the
 * brute-force oracle (fp32 max abs error <= 1e-4 on inputs in [-1, 1]).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "pattern_defs.h"
#include "sparcl.h"

#define TOL 1e-4

/* ---- Combinators ------------------------------------------------------- */

typedef struct combo {
    const pdef *a, *b;
    int mode; /* 0 union, 1 intersection, 2 per head (a's heads, then b's) */
} combo;

static int combo_attends(const void *self, int h, int i, int j)
{
    const combo *c = self;
    if (c->mode == 2)
        return h < c->a->heads ? pdef_attends(c->a, h, i, j)
                               : pdef_attends(c->b, h - c->a->heads, i, j);
    int x = pdef_attends(c->a, c->a->heads == 1 ? 0 : h, i, j);
    int y = pdef_attends(c->b, c->b->heads == 1 ? 0 : h, i, j);
    return c->mode == 0 ? x || y : x && y;
}

static void check_pred(const sparcl_layout *l, int heads, int lq, int lk, oracle_pred pred,
                       const void *self, const char *what)
{
    long pairs = 0;
    cr_assert_eq(sparcl_layout_heads(l), heads, "%s: heads", what);
    for (int h = 0; h < heads; ++h)
        for (int i = 0; i < lq; ++i)
            for (int j = 0; j < lk; ++j) {
                int want = pred(self, h, i, j);
                pairs += want;
                if (sparcl_layout_attends(l, h, i, j) != want)
                    cr_assert_fail("%s: head %d (%d, %d) should be %d", what, h, i, j, want);
            }
    cr_assert_eq(sparcl_layout_pairs(l), pairs, "%s: pairs", what);
}

Test(layout_combine, union_intersection_per_head_match_definitions)
{
    static const int lens[][2] = {{17, 17}, {113, 239}, {239, 113}, {1023, 1023}};
    for (int s = 0; s < 4; ++s)
        for (int seed = 0; seed < 3; ++seed) {
            int lq = lens[s][0], lk = lens[s][1];
            pdef a, b;
            pdef_random(&a, (seed * 3 + s) % K_COUNT, 2, lq, lk, 500 + seed * 11 + s);
            pdef_random(&b, (seed * 5 + s + 4) % K_COUNT, seed == 1 ? 1 : 2, lq, lk, 900 + seed);
            if (a.kind == K_BIGBIRD)
                a.random = 0; /* the predicate knows no random blocks */
            if (b.kind == K_BIGBIRD)
                b.random = 0;
            if (b.kind == K_DILATED)
                b.dil[0] = b.dil[1] = 1; /* a one-head b broadcasts dilation[0] */
            sparcl_layout *la = NULL, *lb = NULL;
            cr_assert_eq(pdef_build(NULL, &a, &la), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
            cr_assert_eq(pdef_build(NULL, &b, &lb), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
            const sparcl_layout *both[2] = {la, lb};
            for (int mode = 0; mode < 3; ++mode) {
                combo c = {&a, &b, mode};
                sparcl_layout *l = NULL;
                sparcl_status st = mode == 0   ? sparcl_layout_init_union(NULL, &l, both, 2)
                                   : mode == 1 ? sparcl_layout_init_intersection(NULL, &l, both, 2)
                                               : sparcl_layout_init_per_head(NULL, &l, both, 2);
                cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
                char what[700], da[300], db[300];
                pdef_describe(&a, da, sizeof da);
                pdef_describe(&b, db, sizeof db);
                snprintf(what, sizeof what, "mode %d of [%s] and [%s]", mode, da, db);
                cr_assert_eq(sparcl_layout_block(l), a.block);
                check_pred(l, mode == 2 ? a.heads + b.heads : 2, lq, lk, combo_attends, &c, what);
                sparcl_layout_free(l);
            }
            sparcl_layout_free(la);
            sparcl_layout_free(lb);
        }
}

Test(layout_combine, invalid_combinations)
{
    sparcl_layout *a = NULL, *b = NULL, *c = NULL, *out = (sparcl_layout *)1;
    cr_assert_eq(sparcl_layout_init_window(NULL, &a, 2, 20, 20, 4, 3, 0), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_window(NULL, &b, 2, 20, 21, 4, 3, 0), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_window(NULL, &c, 3, 20, 20, 4, 3, 0), SPARCL_OK);
    const sparcl_layout *ab[2] = {a, b}, *ac[2] = {a, c}, *an[2] = {a, NULL};
    cr_assert_eq(sparcl_layout_init_union(NULL, &out, ab, 2), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "layouts[1] is 20 x 21"), "%s",
              sparcl_ctx_errmsg(NULL));
    cr_assert_null(out);
    cr_assert_eq(sparcl_layout_init_intersection(NULL, &out, ac, 2), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "layouts[1] has 3 heads"));
    cr_assert_eq(sparcl_layout_init_per_head(NULL, &out, an, 2), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "layouts[1] is NULL"));
    cr_assert_eq(sparcl_layout_init_union(NULL, &out, ab, 0), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "count 0"));
    cr_assert_eq(sparcl_layout_init_union(NULL, &out, NULL, 1), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "layouts is NULL"));
    /* Per-head assembly accepts differing head counts. */
    cr_assert_eq(sparcl_layout_init_per_head(NULL, &out, ac, 2), SPARCL_OK);
    cr_assert_eq(sparcl_layout_heads(out), 5);
    sparcl_layout_free(out);
    sparcl_layout_free(a);
    sparcl_layout_free(b);
    sparcl_layout_free(c);
}

/* ---- User-defined layouts ---------------------------------------------- */

static int user_pred(void *user, int h, int i, int j)
{
    int m = *(const int *)user;
    return (i * 7 + j * 3 + h) % m == 0 || j == i;
}

static int user_pred_c(const void *self, int h, int i, int j)
{
    return user_pred((void *)self, h, i, j);
}

Test(layout_combine, predicate_and_csr_layouts)
{
    int m = 5, H = 2, lq = 113, lk = 239;
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_predicate(NULL, &l, H, lq, lk, 16, user_pred, &m), SPARCL_OK);
    check_pred(l, H, lq, lk, user_pred_c, &m, "predicate");
    sparcl_layout_free(l);
    /* The same pattern as CSR, rows shuffled and with duplicates. */
    int64_t *rp = malloc(sizeof *rp * (size_t)(H * lq + 1));
    int32_t *ci = malloc(sizeof *ci * (size_t)H * lq * (lk + 1));
    int64_t n = 0;
    rp[0] = 0;
    for (int h = 0; h < H; ++h)
        for (int i = 0; i < lq; ++i) {
            for (int j = lk - 1; j >= 0; --j)
                if (user_pred(&m, h, i, j))
                    ci[n++] = j;
            ci[n] = ci[n - 1]; /* a duplicate */
            ++n;
            rp[h * lq + i + 1] = n;
        }
    cr_assert_eq(sparcl_layout_init_csr(NULL, &l, H, lq, lk, 7, rp, ci), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(NULL));
    check_pred(l, H, lq, lk, user_pred_c, &m, "csr");
    sparcl_layout_free(l);
    ci[3] = lk;
    cr_assert_eq(sparcl_layout_init_csr(NULL, &l, H, lq, lk, 7, rp, ci),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "csr col_idx[3] 239 must be in [0, 239)"), "%s",
              sparcl_ctx_errmsg(NULL));
    memset(rp, 0, sizeof *rp * (size_t)(H * lq + 1));
    cr_assert_eq(sparcl_layout_init_csr(NULL, &l, H, lq, lk, 7, rp, ci),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "csr has no entry"));
    rp[5] = 3;
    cr_assert_eq(sparcl_layout_init_csr(NULL, &l, H, lq, lk, 7, rp, ci),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "csr row_ptr[6] 0 is below row_ptr[5] 3"), "%s",
              sparcl_ctx_errmsg(NULL));
    m = 1 << 30; /* about j == i only: tiny shapes still attend something */
    cr_assert_eq(sparcl_layout_init_predicate(NULL, &l, 1, 3, 1, 4, user_pred, &m), SPARCL_OK);
    sparcl_layout_free(l);
    cr_assert_eq(sparcl_layout_init_predicate(NULL, &l, 1, 1, 5, 4, user_pred, &m), SPARCL_OK);
    sparcl_layout_free(l);
    cr_assert_eq(sparcl_layout_init_predicate(NULL, &l, 1, 4, 4, 4, NULL, &m),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "predicate fn is NULL"));
    free(rp);
    free(ci);
}

static int never(void *user, int h, int i, int j)
{
    (void)user, (void)h, (void)i, (void)j;
    return 0;
}

Test(layout_combine, empty_user_layouts_are_rejected)
{
    sparcl_layout *l = (sparcl_layout *)1;
    cr_assert_eq(sparcl_layout_init_predicate(NULL, &l, 1, 9, 9, 4, never, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "predicate attends no pair"));
    cr_assert_null(l);
    int64_t rp[4] = {0, 0, 0, 0};
    int32_t col[1] = {0};
    cr_assert_eq(sparcl_layout_init_bsr(NULL, &l, 1, 9, 9, 4, rp, col),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "bsr has no entry"));
    int64_t rp2[4] = {0, 1, 1, 1};
    col[0] = 3;
    cr_assert_eq(sparcl_layout_init_bsr(NULL, &l, 1, 9, 9, 4, rp2, col),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "bsr col_idx[0] 3 must be in [0, 3)"));
    cr_assert_eq(sparcl_layout_init_bsr(NULL, &l, 1, 9, 9, 4, NULL, col),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "bsr row_ptr is NULL"));
}

/* ---- Introspection ----------------------------------------------------- */

Test(layout_combine, stats_and_bsr_round_trip)
{
    pdef p;
    pdef_random(&p, K_BIGBIRD, 3, 239, 239, 77);
    p.block = 16;
    p.random = 2;
    sparcl_layout *l = NULL, *back = NULL;
    cr_assert_eq(pdef_build(NULL, &p, &l), SPARCL_OK);
    sparcl_layout_stats s;
    sparcl_layout_bsr v;
    cr_assert_eq(sparcl_layout_get_stats(l, &s), SPARCL_OK);
    cr_assert_eq(sparcl_layout_get_bsr(l, &v), SPARCL_OK);
    /* Recount everything from the view, independently of the stats. */
    int64_t mn = INT64_MAX, mx = 0, partial = 0, pairs = 0;
    for (int h = 0; h < v.heads; ++h)
        for (int r = 0; r < v.block_rows; ++r) {
            const int64_t *rp = v.row_ptr + (int64_t)h * (v.block_rows + 1) + r;
            mn = rp[1] - rp[0] < mn ? rp[1] - rp[0] : mn;
            mx = rp[1] - rp[0] > mx ? rp[1] - rp[0] : mx;
            for (int64_t e = rp[0]; e < rp[1]; ++e) {
                if (e > rp[0])
                    cr_assert_lt(v.col[e - 1], v.col[e], "columns ascend");
                partial += v.mask[e] >= 0;
                for (int i = r * 16; i < (r + 1) * 16 && i < 239; ++i)
                    for (int j = v.col[e] * 16; j < (v.col[e] + 1) * 16 && j < 239; ++j) {
                        int bit = 1;
                        if (v.mask[e] >= 0) {
                            int64_t b = (int64_t)(i - r * 16) * 16 + (j - v.col[e] * 16);
                            bit = (v.bits[v.mask[e] * v.words_per_mask + b / 64] >> (b % 64)) & 1;
                        }
                        pairs += bit;
                        cr_assert_eq(bit, sparcl_layout_attends(l, h, i, j));
                    }
            }
        }
    cr_assert_eq(s.heads, 3);
    cr_assert_eq(s.block_rows, 15);
    cr_assert_eq(s.nnz_blocks, v.nnz);
    cr_assert_eq(s.partial_blocks, partial);
    cr_assert_eq(s.full_blocks, v.nnz - partial);
    cr_assert_eq(s.pairs, pairs);
    cr_assert_float_eq(s.density, (double)pairs / (3.0 * 239 * 239), 1e-12);
    cr_assert_eq(s.row_blocks_min, mn);
    cr_assert_eq(s.row_blocks_max, mx);
    cr_assert_float_eq(s.row_blocks_mean, (double)v.nnz / (3 * 15), 1e-12);
    cr_assert_geq(s.bytes, (size_t)v.nnz * 12);
    /* Back through the BSR constructor: blocks are all FULL here when
     * q_len == kv_len, so the rebuilt layout is identical. */
    cr_assert_eq(partial, 0, "bigbird on equal lengths is block-aligned");
    int64_t *rp = malloc(sizeof *rp * (size_t)(3 * 15 + 1));
    rp[0] = 0;
    for (int h = 0; h < 3; ++h)
        for (int r = 0; r < 15; ++r)
            rp[h * 15 + r + 1] = v.row_ptr[h * 16 + r + 1]; /* 16 = block rows + 1 */
    cr_assert_eq(sparcl_layout_init_bsr(NULL, &back, 3, 239, 239, 16, rp, v.col), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_layout_pairs(back), pairs);
    for (int h = 0; h < 3; ++h)
        for (int i = 0; i < 239; i += 3)
            for (int j = 0; j < 239; ++j)
                cr_assert_eq(sparcl_layout_attends(back, h, i, j),
                             sparcl_layout_attends(l, h, i, j));
    cr_assert_eq(sparcl_layout_get_stats(NULL, &s), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "layout is NULL"));
    free(rp);
    sparcl_layout_free(l);
    sparcl_layout_free(back);
}

/* ---- Forward on every pattern ------------------------------------------ */

typedef struct fwd {
    int kind; /* K_*, or K_COUNT: per-head mix, K_COUNT + 1: union */
    int hq, hkv, lq, lk, dim;
} fwd;

/* The oracle's view: the definition, or for BigBird's random blocks (whose
 * structure test_patterns checks) the layout itself. */
typedef struct fview {
    const pdef *p;
    int per_head; /* p is an array, one 1-head pattern per head */
    const sparcl_layout *l;
    combo c;
} fview;

static int fview_attends(const void *self, int h, int i, int j)
{
    const fview *v = self;
    if (v->l)
        return sparcl_layout_attends(v->l, h, i, j);
    if (v->c.a)
        return combo_attends(&v->c, h, i, j);
    if (v->per_head)
        return pdef_attends(&v->p[h], 0, i, j);
    return pdef_attends(v->p, h, i, j);
}

ParameterizedTestParameters(layout_combine, forward_matches_oracle)
{
    static fwd cases[] = {
        {K_DILATED, 2, 1, 113, 239, 72},      {K_GLOBAL, 2, 2, 239, 113, 16},
        {K_GLOBAL_BLOCKS, 2, 1, 17, 239, 100}, {K_STRIDED, 2, 2, 239, 239, 16},
        {K_FIXED, 2, 1, 113, 113, 72},        {K_BIGBIRD, 2, 2, 239, 239, 16},
        {K_LONGFORMER, 2, 1, 239, 113, 100},  {K_STREAMING, 2, 2, 113, 239, 256},
        {K_VSLASH, 2, 1, 239, 239, 72},       {K_COUNT, 4, 2, 113, 239, 16},
        {K_COUNT + 1, 2, 2, 239, 113, 72},    {K_DILATED, 2, 2, 1023, 1023, 16},
    };
    return cr_make_param_array(fwd, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(fwd *c, layout_combine, forward_matches_oracle, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    pdef p, q;
    fview view;
    memset(&view, 0, sizeof view);
    sparcl_layout *l = NULL, *parts[4] = {NULL, NULL, NULL, NULL};
    if (c->kind < K_COUNT) {
        pdef_random(&p, c->kind, c->hq, c->lq, c->lk, 31 + c->kind);
        cr_assert_eq(pdef_build(ctx, &p, &l), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        view.p = &p;
        view.l = c->kind == K_BIGBIRD ? l : NULL;
    } else if (c->kind == K_COUNT) { /* per head: streaming, vslash, fixed, strided */
        static const int kinds[4] = {K_STREAMING, K_VSLASH, K_FIXED, K_STRIDED};
        static pdef each[4];
        for (int h = 0; h < 4; ++h) {
            pdef_random(&each[h], kinds[h], 1, c->lq, c->lk, 7 + h);
            cr_assert_eq(pdef_build(ctx, &each[h], &parts[h]), SPARCL_OK);
        }
        cr_assert_eq(sparcl_layout_init_per_head(ctx, &l, (const sparcl_layout *const *)parts, 4),
                     SPARCL_OK);
        view.p = each; /* head h of the result is each[h]'s only head */
        view.per_head = 1;
    } else { /* union of a Longformer and a vertical-slash */
        pdef_random(&p, K_LONGFORMER, c->hq, c->lq, c->lk, 5);
        pdef_random(&q, K_VSLASH, c->hq, c->lq, c->lk, 6);
        cr_assert_eq(pdef_build(ctx, &p, &parts[0]), SPARCL_OK);
        cr_assert_eq(pdef_build(ctx, &q, &parts[1]), SPARCL_OK);
        cr_assert_eq(sparcl_layout_init_union(ctx, &l, (const sparcl_layout *const *)parts, 2),
                     SPARCL_OK);
        view.c = (combo){&p, &q, 0};
    }

    size_t nq = (size_t)c->hq * c->lq * c->dim, nk = (size_t)c->hkv * c->lk * c->dim;
    size_t nl = (size_t)c->hq * c->lq;
    float *qx = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
    float *o = malloc(nq * 4), *lse = malloc(nl * 4);
    double *ro = malloc(nq * 8), *rl = malloc(nl * 8);
    oracle_fill(qx, nq, 1 + c->lq);
    oracle_fill(k, nk, 2 + c->lk);
    oracle_fill(v, nk, 3 + c->dim);
    oracle_attention(1, c->hq, c->hkv, c->lq, c->lk, c->dim, 1.0 / sqrt(c->dim), fview_attends,
                     &view, qx, k, v, ro, rl);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = c->hq;
    d.kv_heads = c->hkv;
    d.q_len = c->lq;
    d.kv_len = c->lk;
    d.head_dim = c->dim;
    d.layout = l;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    memset(o, 0xff, nq * 4);
    cr_assert_eq(sparcl_plan_forward_host(plan, qx, k, v, o, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    double eo = oracle_max_abs_diff_f(o, ro, nq), el = oracle_max_abs_diff_f(lse, rl, nl);
    cr_assert_leq(eo, TOL, "kind %d: out error %g", c->kind, eo);
    cr_assert_leq(el, TOL, "kind %d: lse error %g", c->kind, el);
    sparcl_plan_free(plan);
    free(qx), free(k), free(v), free(o), free(lse), free(ro), free(rl);
    for (int x = 0; x < 4; ++x)
        sparcl_layout_free(parts[x]);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}
