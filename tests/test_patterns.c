/*
 * test_patterns.c -- every literature pattern generator against the
 * brute-force predicates of pattern_defs.c, token by token, on random
 * parameters (fixed seeds), odd lengths and block sizes; BigBird's random
 * blocks checked for structure and determinism; nnz growing linearly with
 * the sequence; invalid arguments naming the parameter.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "pattern_defs.h"
#include "sparcl.h"

/* Every (h, i, j) of the layout against the definition, and the pair
 * count. */
static void check_exact(const sparcl_layout *l, const pdef *p)
{
    char what[400];
    pdef_describe(p, what, sizeof what);
    long pairs = 0;
    cr_assert_eq(sparcl_layout_heads(l), p->heads, "%s", what);
    for (int h = 0; h < p->heads; ++h)
        for (int i = 0; i < p->lq; ++i)
            for (int j = 0; j < p->lk; ++j) {
                int want = pdef_attends(p, h, i, j);
                pairs += want;
                if (sparcl_layout_attends(l, h, i, j) != want)
                    cr_assert_fail("%s: head %d (%d, %d) should be %d", what, h, i, j, want);
            }
    cr_assert_eq(sparcl_layout_pairs(l), pairs, "%s: pairs %lld, want %ld", what,
                 (long long)sparcl_layout_pairs(l), pairs);
}

typedef struct gcase {
    int kind, lq, lk;
} gcase;

#define SHAPES(k)                                                                              \
    {k, 1, 1}, {k, 17, 17}, {k, 113, 239}, {k, 239, 113}, {k, 17, 1023}, {k, 1023, 17},      \
        {k, 1023, 1023}

ParameterizedTestParameters(patterns, generators_are_token_exact)
{
    static gcase cases[] = {SHAPES(K_DILATED),   SHAPES(K_GLOBAL),     SHAPES(K_GLOBAL_BLOCKS),
                            SHAPES(K_STRIDED),   SHAPES(K_FIXED),      SHAPES(K_LONGFORMER),
                            SHAPES(K_STREAMING), SHAPES(K_VSLASH)};
    return cr_make_param_array(gcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(gcase *c, patterns, generators_are_token_exact, .timeout = 120)
{
    int big = (long)c->lq * c->lk > 100000;
    for (int seed = 1; seed <= (big ? 2 : 6); ++seed) {
        pdef p;
        pdef_random(&p, c->kind, big ? 2 : 3, c->lq, c->lk, (uint64_t)seed * 7919 + c->kind);
        sparcl_layout *l = NULL;
        char what[400];
        pdef_describe(&p, what, sizeof what);
        cr_assert_eq(pdef_build(NULL, &p, &l), SPARCL_OK, "%s: %s", what, sparcl_ctx_errmsg(NULL));
        check_exact(l, &p);
        sparcl_layout_free(l);
    }
}

/* ---- BigBird: exact outside the random blocks, structure inside -------- */

/* Checks one head of a BigBird layout and writes its random blocks per
 * query block into rnd[qb * nb + kb] (1 = random). */
static void check_bigbird_head(const sparcl_layout *l, const pdef *p, int h, uint8_t *rnd)
{
    int B = p->block, nb = (p->lk + B - 1) / B, off = p->lk - p->lq;
    char what[400];
    pdef_describe(p, what, sizeof what);
    memset(rnd, 0, (size_t)nb * nb);
    for (int i = 0; i < p->lq; ++i) {
        long pos = (long)i + off;
        int qb = pos >= 0 ? (int)(pos / B) : -1;
        uint8_t seen[4096] = {0};
        for (int j = 0; j < p->lk; ++j) {
            int base = pdef_attends(p, h, i, j), got = sparcl_layout_attends(l, h, i, j);
            if (base && !got)
                cr_assert_fail("%s: head %d (%d, %d) misses the window/global part", what, h, i,
                               j);
            if (got && !base)
                seen[j / B] = 1;
        }
        for (int kb = 0; kb < nb; ++kb) {
            if (!seen[kb])
                continue;
            cr_assert(qb >= 0, "%s: query %d before the keys has random block %d", what, i, kb);
            for (int j = kb * B; j < (kb + 1) * B && j < p->lk; ++j)
                if (!p->causal || j <= pos)
                    cr_assert(sparcl_layout_attends(l, h, i, j),
                              "%s: random block %d of query %d not whole at key %d", what, kb, i,
                              j);
            rnd[(size_t)qb * nb + kb] = 1;
        }
    }
    /* Per query block: min(r, A) random blocks, none excluded. */
    for (int qb = 0; qb < nb; ++qb) {
        int avail = 0, count = 0;
        for (int kb = 0; kb < nb; ++kb) {
            int excluded = (kb >= qb - p->window && kb <= qb + p->window) || kb < p->first ||
                           kb >= nb - p->last || (p->causal && kb > qb - p->window - 1);
            avail += !excluded;
            count += rnd[(size_t)qb * nb + kb];
            if (rnd[(size_t)qb * nb + kb])
                cr_assert(!excluded, "%s: query block %d drew excluded block %d", what, qb, kb);
        }
        /* Only query blocks that hold a query and are not global rows
         * (which see everything anyway) show their draw. */
        int has_query = (long)(qb + 1) * B - 1 >= off && qb * B < p->lk && qb >= p->first &&
                        qb < nb - p->last;
        int want = p->random < avail ? p->random : avail;
        if (has_query)
            cr_assert_eq(count, want, "%s: head %d query block %d has %d random blocks, want %d",
                         what, h, qb, count, want);
    }
}

ParameterizedTestParameters(patterns, bigbird_structure)
{
    static gcase cases[] = {SHAPES(K_BIGBIRD)};
    return cr_make_param_array(gcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(gcase *c, patterns, bigbird_structure, .timeout = 120)
{
    int big = (long)c->lq * c->lk > 100000;
    for (int seed = 1; seed <= (big ? 2 : 6); ++seed) {
        pdef p;
        pdef_random(&p, K_BIGBIRD, 3, c->lq, c->lk, (uint64_t)seed * 104729);
        if (big)
            p.block = 64; /* 16 x 16 blocks: the 4096-entry table holds */
        int nb = (p.lk + p.block - 1) / p.block;
        if (nb > 64)
            p.block = (p.lk + 63) / 64, nb = (p.lk + p.block - 1) / p.block;
        sparcl_layout *l = NULL, *again = NULL;
        cr_assert_eq(pdef_build(NULL, &p, &l), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
        cr_assert_eq(pdef_build(NULL, &p, &again), SPARCL_OK);
        uint8_t *rnd = malloc((size_t)nb * nb * p.heads);
        for (int h = 0; h < p.heads; ++h)
            check_bigbird_head(l, &p, h, rnd + (size_t)h * nb * nb);
        if (!p.per_head)
            for (int h = 1; h < p.heads; ++h)
                cr_assert(!memcmp(rnd, rnd + (size_t)h * nb * nb, (size_t)nb * nb),
                          "heads must share random blocks without per_head");
        cr_assert_eq(sparcl_layout_pairs(l), sparcl_layout_pairs(again));
        for (int h = 0; h < p.heads; ++h) /* same seed, same layout */
            for (int i = 0; i < p.lq; i += 7)
                for (int j = 0; j < p.lk; ++j)
                    cr_assert_eq(sparcl_layout_attends(l, h, i, j),
                                 sparcl_layout_attends(again, h, i, j));
        free(rnd);
        sparcl_layout_free(l);
        sparcl_layout_free(again);
    }
}

/* Seeds and heads change the draw (many blocks, so a collision is
 * practically impossible). */
Test(patterns, bigbird_seed_and_head_vary)
{
    sparcl_bigbird_desc d;
    sparcl_bigbird_desc_init(&d);
    d.seed = 42;
    d.random = 2;
    sparcl_layout *a = NULL, *b = NULL, *shared = NULL;
    cr_assert_eq(sparcl_layout_init_bigbird(NULL, &a, 2, 1024, 1024, 16, &d), SPARCL_OK);
    d.seed = 43;
    cr_assert_eq(sparcl_layout_init_bigbird(NULL, &b, 2, 1024, 1024, 16, &d), SPARCL_OK);
    d.per_head = 0;
    cr_assert_eq(sparcl_layout_init_bigbird(NULL, &shared, 2, 1024, 1024, 16, &d), SPARCL_OK);
    int diff_seed = 0, diff_head = 0, diff_shared = 0;
    for (int i = 0; i < 1024; i += 16)
        for (int j = 0; j < 1024; j += 16) {
            diff_seed += sparcl_layout_attends(a, 0, i, j) != sparcl_layout_attends(b, 0, i, j);
            diff_head += sparcl_layout_attends(a, 0, i, j) != sparcl_layout_attends(a, 1, i, j);
            diff_shared += sparcl_layout_attends(shared, 0, i, j) !=
                           sparcl_layout_attends(shared, 1, i, j);
        }
    cr_assert_gt(diff_seed, 20);
    cr_assert_gt(diff_head, 20);
    cr_assert_eq(diff_shared, 0);
    sparcl_layout_free(a);
    sparcl_layout_free(b);
    sparcl_layout_free(shared);
}

/* ---- Hand-checked instances (the definitions on tiny cases) ------------ */

Test(patterns, small_cases_by_hand)
{
    sparcl_layout *l = NULL;
    /* Strided, causal, l = 3, 10 tokens: query 9 sees 6..9 and 0, 3. */
    cr_assert_eq(sparcl_layout_init_strided(NULL, &l, 1, 10, 10, 4, 3, 1), SPARCL_OK);
    const int want9[10] = {1, 0, 0, 1, 0, 0, 1, 1, 1, 1};
    for (int j = 0; j < 10; ++j)
        cr_assert_eq(sparcl_layout_attends(l, 0, 9, j), want9[j], "strided key %d", j);
    sparcl_layout_free(l);
    /* Streaming, sink 2, local 1: query 6 sees 0, 1, 5, 6. */
    cr_assert_eq(sparcl_layout_init_streaming(NULL, &l, 1, 8, 8, 3, 2, 1), SPARCL_OK);
    const int want6[8] = {1, 1, 0, 0, 0, 1, 1, 0};
    for (int j = 0; j < 8; ++j)
        cr_assert_eq(sparcl_layout_attends(l, 0, 6, j), want6[j], "streaming key %d", j);
    sparcl_layout_free(l);
    /* Dilated window left 4 dilation 2: query 8 sees 4, 6, 8. */
    int dil = 2;
    cr_assert_eq(sparcl_layout_init_dilated_window(NULL, &l, 1, 10, 10, 4, 4, 0, &dil), SPARCL_OK);
    for (int j = 0; j < 10; ++j)
        cr_assert_eq(sparcl_layout_attends(l, 0, 8, j), j == 4 || j == 6 || j == 8, "key %d", j);
    sparcl_layout_free(l);
}

/* ---- Scale: stored blocks grow linearly ------------------------------- */

static int64_t nnz_of(int kind, int n)
{
    sparcl_layout *l = NULL;
    sparcl_status st;
    if (kind == 0) {
        st = sparcl_layout_init_window(NULL, &l, 1, n, n, 64, 256, 0);
    } else {
        sparcl_bigbird_desc d;
        sparcl_bigbird_desc_init(&d);
        st = sparcl_layout_init_bigbird(NULL, &l, 1, n, n, 64, &d);
    }
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    int64_t nnz = sparcl_layout_nnz_blocks(l);
    sparcl_layout_free(l);
    return nnz;
}

Test(patterns, nnz_blocks_are_linear_in_length)
{
    for (int kind = 0; kind < 2; ++kind) {
        int64_t a = nnz_of(kind, 1 << 15), b = nnz_of(kind, 1 << 17);
        /* window: <= 6 blocks per row; BigBird: 3 window + 3 random + 2
         * global columns per row, plus 2 global rows of nb blocks. */
        int64_t rows = (1 << 17) / 64, cap = kind == 0 ? 6 * rows : 8 * rows + 2 * rows;
        cr_assert_leq(b, cap, "kind %d: %lld blocks at 2^17", kind, (long long)b);
        cr_assert_leq(b, 4 * a + 64, "kind %d: %lld at 2^15 vs %lld at 2^17", kind, (long long)a,
                      (long long)b);
        cr_assert_geq(b, 4 * a - 64, "kind %d grows slower than linear?", kind);
    }
}

/* ---- Invalid arguments ------------------------------------------------- */

#define EXPECT_INVALID(call, word)                                                             \
    do {                                                                                       \
        sparcl_layout *l_ = (sparcl_layout *)1;                                                \
        sparcl_layout **o_ = &l_;                                                              \
        (void)o_;                                                                              \
        sparcl_status s_ = (call);                                                             \
        cr_assert_eq(s_, SPARCL_ERR_INVALID_ARGUMENT, #call " gave %d", s_);                   \
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), word), #call ": message \"%s\" lacks \"%s\"", \
                  sparcl_ctx_errmsg(ctx), word);                                               \
        cr_assert_null(l_, #call " left *out set");                                            \
    } while (0)

Test(patterns, invalid_arguments_name_the_parameter)
{
    sparcl_ctx *ctx = NULL; /* messages go to the thread slot */
    int dil_bad[2] = {1, 0}, pos_bad[2] = {3, 100}, neg[1] = {-1};
    EXPECT_INVALID(sparcl_layout_init_dilated_window(ctx, o_, 1, 10, 10, 4, -1, 0, NULL),
                   "window left -1 must be >= 0");
    EXPECT_INVALID(sparcl_layout_init_dilated_window(ctx, o_, 2, 10, 10, 4, 1, 1, dil_bad),
                   "dilation[1] 0");
    EXPECT_INVALID(sparcl_layout_init_dilated_window(ctx, o_, 0, 10, 10, 4, 1, 1, NULL),
                   "heads 0");
    EXPECT_INVALID(sparcl_layout_init_strided(ctx, o_, 1, 10, 10, 0, 2, 1), "block 0");
    EXPECT_INVALID(sparcl_layout_init_strided(ctx, o_, 1, 10, 10, 4, 0, 1), "stride 0");
    EXPECT_INVALID(sparcl_layout_init_global(ctx, o_, 1, 10, 100, 4, pos_bad, 2, 0),
                   "global position 100");
    EXPECT_INVALID(sparcl_layout_init_global(ctx, o_, 1, 10, 10, 4, neg, 1, 0),
                   "global position -1");
    EXPECT_INVALID(sparcl_layout_init_global(ctx, o_, 1, 10, 10, 4, NULL, 2, 0),
                   "global position is NULL");
    EXPECT_INVALID(sparcl_layout_init_global_blocks(ctx, o_, 1, 10, 10, 4, -2, 0, 0),
                   "global first -2");
    EXPECT_INVALID(sparcl_layout_init_streaming(ctx, o_, 1, 10, 10, 4, -1, 3), "sink -1");
    EXPECT_INVALID(sparcl_layout_init_streaming(ctx, o_, 1, -10, 10, 4, 1, 3), "q_len -10");

    sparcl_fixed_desc f;
    sparcl_fixed_desc_init(&f);
    EXPECT_INVALID(sparcl_layout_init_fixed(ctx, o_, 1, 10, 10, 4, NULL), "desc is NULL");
    f.summary = 200;
    EXPECT_INVALID(sparcl_layout_init_fixed(ctx, o_, 1, 10, 10, 4, &f), "fixed summary 200");
    sparcl_fixed_desc_init(&f);
    f.patterns = 9;
    EXPECT_INVALID(sparcl_layout_init_fixed(ctx, o_, 1, 10, 10, 4, &f),
                   "fixed patterns 9 x summary 16 exceeds stride 128");

    sparcl_bigbird_desc b;
    sparcl_bigbird_desc_init(&b);
    b.random = -3;
    EXPECT_INVALID(sparcl_layout_init_bigbird(ctx, o_, 1, 10, 10, 4, &b), "bigbird random -3");
    sparcl_bigbird_desc_init(&b);
    b.window = -1;
    EXPECT_INVALID(sparcl_layout_init_bigbird(ctx, o_, 1, 10, 10, 4, &b), "bigbird window -1");
    sparcl_bigbird_desc_init(&b);
    b.random = 1 << 16; /* 4 heads x 2^16 blocks x 2^16 entries: too many to table */
    EXPECT_INVALID(sparcl_layout_init_bigbird(ctx, o_, 4, 1 << 20, 1 << 20, 16, &b),
                   "bigbird random 65536 x 4 heads");
    EXPECT_INVALID(sparcl_layout_init_bigbird(ctx, o_, 1 << 24, 1 << 26, 1 << 26, 64, &b),
                   "overflows");

    sparcl_longformer_desc lf;
    sparcl_longformer_desc_init(&lf);
    lf.global = pos_bad;
    lf.n_global = 2;
    EXPECT_INVALID(sparcl_layout_init_longformer(ctx, o_, 1, 10, 50, 4, &lf),
                   "global position 100 (entry 1) must be in [0, 49]");

    sparcl_vertical_slash_desc v;
    sparcl_vertical_slash_desc_init(&v);
    v.columns = pos_bad;
    v.n_columns = 2;
    EXPECT_INVALID(sparcl_layout_init_vertical_slash(ctx, o_, 1, 10, 10, 4, &v),
                   "vertical column 100");
    sparcl_vertical_slash_desc_init(&v);
    v.offsets = pos_bad;
    v.n_offsets = 2;
    EXPECT_INVALID(sparcl_layout_init_vertical_slash(ctx, o_, 1, 10, 10, 4, &v),
                   "slash offset 100");
    int counts[2] = {1, -4};
    v.offset_counts = counts;
    EXPECT_INVALID(sparcl_layout_init_vertical_slash(ctx, o_, 2, 10, 10, 4, &v),
                   "slash offset count -4");
    cr_assert_eq(sparcl_layout_init_strided(ctx, NULL, 1, 10, 10, 4, 2, 1),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(sparcl_ctx_errmsg(ctx), "out is NULL");
}
