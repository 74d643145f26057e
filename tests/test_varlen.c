/*
 * test_varlen.c -- packed variable-length batches
 * (sparcl_layout_init_varlen): the packed layout element by element
 * against a definition written here (each sequence's pattern from the
 * paper definitions of pattern_defs.c, causal and dense, nothing across
 * sequences); the fused forward, the split-KV decoding path and the
 * backward over packed batches mixing lengths 1, 17, 113, 300 and 2000
 * (empty sequences, q_len != kv_len per sequence, GQA, head dims 72, 100
 * and 128, two block sizes, a GPU-style parameter set) against the
 * double-precision oracle; refused arguments.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backward_check.h"
#include "expect_status.h"
#include "oracle.h"
#include "pattern_defs.h"
#include "sparcl.h"

#define MAX_SEQS 8
#define DENSE (-1)
#define CAUSAL (-2)
#define WINDOW (-3) /* left 64, right 0 */

/* A packed batch as the test defines it: offsets and each sequence's kind
 * (DENSE, CAUSAL, WINDOW or a pattern_defs kind with its parameters). */
typedef struct batch {
    int count;
    int32_t cu_q[MAX_SEQS + 1], cu_k[MAX_SEQS + 1];
    int kind[MAX_SEQS];
    pdef p[MAX_SEQS];
} batch;

static int batch_attends(const void *self, int h, int i, int j)
{
    const batch *b = self;
    for (int s = 0; s < b->count; ++s) {
        if (i < b->cu_q[s] || i >= b->cu_q[s + 1])
            continue;
        if (j < b->cu_k[s] || j >= b->cu_k[s + 1])
            return 0;
        const int a = i - b->cu_q[s], c = j - b->cu_k[s];
        const int pos = a + (b->cu_k[s + 1] - b->cu_k[s]) - (b->cu_q[s + 1] - b->cu_q[s]);
        switch (b->kind[s]) {
        case DENSE: return 1;
        case CAUSAL: return c <= pos;
        case WINDOW: return c <= pos && c >= pos - 64;
        default: return pdef_attends(&b->p[s], b->p[s].heads == 1 ? 0 : h, a, c);
        }
    }
    return 0;
}

/* Sets up sequence lengths (ql[s], kl[s]) and kinds; pattern parameters
 * are drawn with `heads` heads from a seed per sequence. */
static void batch_init(batch *b, int count, const int *ql, const int *kl, const int *kind,
                       int heads)
{
    memset(b, 0, sizeof *b);
    b->count = count;
    for (int s = 0; s < count; ++s) {
        b->cu_q[s + 1] = b->cu_q[s] + ql[s];
        b->cu_k[s + 1] = b->cu_k[s] + kl[s];
        b->kind[s] = kind[s];
        if (kind[s] >= 0)
            pdef_random(&b->p[s], kind[s], heads, ql[s], kl[s], 100 + 7 * s + kind[s]);
    }
}

/* The library's packed layout of b at `block` (0: the first sequence
 * layout's); causal and window sequences at block 16, so that packed
 * blocks straddle theirs. */
static sparcl_layout *batch_layout(const batch *b, int block)
{
    sparcl_layout *seq[MAX_SEQS] = {NULL};
    for (int s = 0; s < b->count; ++s) {
        const int ql = b->cu_q[s + 1] - b->cu_q[s], kl = b->cu_k[s + 1] - b->cu_k[s];
        sparcl_status st = SPARCL_OK;
        if (ql == 0 || kl == 0 || b->kind[s] == DENSE)
            continue;
        if (b->kind[s] == CAUSAL)
            st = sparcl_layout_init_causal(NULL, &seq[s], 1, ql, kl, 16);
        else if (b->kind[s] == WINDOW)
            st = sparcl_layout_init_window(NULL, &seq[s], 1, ql, kl, 16, 64, 0);
        else
            st = pdef_build(NULL, &b->p[s], &seq[s]);
        cr_assert_eq(st, SPARCL_OK, "sequence %d: %s", s, sparcl_ctx_errmsg(NULL));
    }
    sparcl_layout *l = NULL;
    sparcl_status st = sparcl_layout_init_varlen(NULL, &l, b->count, b->cu_q, b->cu_k,
                                                 (const sparcl_layout *const *)seq, block);
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    for (int s = 0; s < b->count; ++s)
        sparcl_layout_free(seq[s]);
    return l;
}

static void check_layout(const batch *b, const sparcl_layout *l, int heads)
{
    const int tq = b->cu_q[b->count], tk = b->cu_k[b->count];
    cr_assert_eq(sparcl_layout_q_len(l), tq);
    cr_assert_eq(sparcl_layout_kv_len(l), tk);
    int64_t pairs = 0;
    for (int h = 0; h < heads; ++h)
        for (int i = 0; i < tq; ++i)
            for (int j = 0; j < tk; ++j) {
                const int want = batch_attends(b, h, i, j);
                pairs += want;
                if (sparcl_layout_attends(l, sparcl_layout_heads(l) == 1 ? 0 : h, i, j) != want)
                    cr_assert_fail("head %d (%d, %d) should be %d", h, i, j, want);
            }
    cr_assert_eq(sparcl_layout_pairs(l) * (sparcl_layout_heads(l) == 1 ? heads : 1), pairs);
}

Test(varlen, layout_matches_definition)
{
    /* self-attention, an empty sequence and a dense one among patterns */
    static const int ql[] = {1, 17, 300, 0, 113, 1023};
    static const int kind[] = {CAUSAL, K_STREAMING, K_LONGFORMER, DENSE, DENSE, K_DILATED};
    batch b;
    batch_init(&b, 6, ql, ql, kind, 2);
    for (int block = 16; block <= 64; block *= 4) {
        sparcl_layout *l = batch_layout(&b, block);
        cr_assert_eq(sparcl_layout_heads(l), 2);
        cr_assert_eq(sparcl_layout_block(l), block);
        check_layout(&b, l, 2);
        sparcl_layout_free(l);
    }
    /* fewer queries than keys per sequence: each keeps its own alignment */
    static const int cq[] = {1, 17, 113}, ck[] = {5, 17, 500};
    static const int ckind[] = {CAUSAL, K_VSLASH, K_STRIDED};
    batch_init(&b, 3, cq, ck, ckind, 1);
    sparcl_layout *l = batch_layout(&b, 0);
    cr_assert_eq(sparcl_layout_block(l), 16, "block 0 takes the first sequence layout's");
    check_layout(&b, l, 1);
    sparcl_layout_free(l);
}

/* Forward over the packed batch against the oracle; out and lse. */
static void check_forward(const batch *b, int hq, int hkv, int dim, int block,
                          const sparcl_params *params, int want_decode)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = batch_layout(b, block);
    const int tq = b->cu_q[b->count], tk = b->cu_k[b->count];
    const size_t nq = (size_t)hq * tq * dim, nk = (size_t)hkv * tk * dim, nl = (size_t)hq * tq;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
    float *o = malloc(nq * 4), *lse = malloc(nl * 4);
    double *ro = malloc(nq * 8), *rl = malloc(nl * 8);
    cr_assert(q && k && v && o && lse && ro && rl);
    oracle_fill(q, nq, 11 + tq);
    oracle_fill(k, nk, 12 + tk);
    oracle_fill(v, nk, 13 + dim);
    oracle_attention(1, hq, hkv, tq, tk, dim, 1.0 / sqrt(dim), batch_attends, b, q, k, v, ro, rl);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = hq;
    d.kv_heads = hkv;
    d.q_len = tq;
    d.kv_len = tk;
    d.head_dim = dim;
    d.layout = l;
    d.params = params;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_params used;
    sparcl_plan_params(plan, &used, NULL);
    int32_t splits;
    cr_assert_eq(sparcl_params_get(&used, "SPLITS", &splits), want_decode,
                 "the plan %s the decoding path", want_decode ? "did not take" : "took");
    memset(o, 0xff, nq * 4);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    const double eo = oracle_max_abs_diff_f(o, ro, nq), el = oracle_max_abs_diff_f(lse, rl, nl);
    cr_assert_leq(eo, 1e-4, "out error %g (%d x %d, d %d)", eo, tq, tk, dim);
    cr_assert_leq(el, 1e-4, "lse error %g", el);
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    free(q), free(k), free(v), free(o), free(lse), free(ro), free(rl);
    sparcl_ctx_free(ctx);
}

Test(varlen, forward_mixed_lengths_gqa, .timeout = 300)
{
    static const int ql[] = {1, 17, 300, 0, 113, 2000};
    static const int kind[] = {CAUSAL, K_STREAMING, K_LONGFORMER, DENSE, DENSE, CAUSAL};
    batch b;
    batch_init(&b, 6, ql, ql, kind, 1);
    check_forward(&b, 4, 2, 72, 64, NULL, 0);
}

Test(varlen, forward_cross_lengths_gpu_style_params, .timeout = 300)
{
    static const int cq[] = {1, 17, 113, 300}, ck[] = {5, 17, 500, 300};
    static const int kind[] = {CAUSAL, K_VSLASH, K_STRIDED, WINDOW};
    batch b;
    batch_init(&b, 4, cq, ck, kind, 2);
    check_forward(&b, 2, 1, 100, 16, NULL, 0);
    sparcl_params p; /* many work-items per group, local memory, barriers */
    sparcl_params_clear(&p);
    sparcl_params_set(&p, "ALGO", 0);
    sparcl_params_set(&p, "BLOCK_M", 16);
    sparcl_params_set(&p, "BLOCK_N", 16);
    sparcl_params_set(&p, "USE_LOCAL", 1);
    sparcl_params_set(&p, "WG_SIZE", 16);
    sparcl_params_set(&p, "VEC", 4);
    check_forward(&b, 2, 1, 100, 16, &p, 0);
}

Test(varlen, decoding_one_row_per_sequence, .timeout = 300)
{
    /* one new token per sequence over caches of 17 .. 2000 keys */
    static const int cq[] = {1, 1, 1, 1, 1}, ck[] = {17, 300, 1023, 0, 2000};
    static const int kind[] = {CAUSAL, WINDOW, K_STREAMING, DENSE, DENSE};
    batch b;
    batch_init(&b, 5, cq, ck, kind, 1);
    check_forward(&b, 8, 2, 128, 64, NULL, 1);
}

Test(varlen, backward_matches_reference, .timeout = 300)
{
    static const int ql[] = {1, 17, 113, 300};
    static const int kind[] = {CAUSAL, K_STREAMING, DENSE, CAUSAL};
    batch b;
    batch_init(&b, 4, ql, ql, kind, 1);
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *l = batch_layout(&b, 32);
    const int total = b.cu_q[b.count];
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = 2;
    d.kv_heads = 1;
    d.q_len = d.kv_len = total;
    d.head_dim = 72;
    d.layout = l;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const double err = backward_check(ctx, plan, &d, 77);
    cr_assert(err >= 0, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_leq(err, 1e-3, "gradient error %g", err);
    sparcl_plan_free(plan);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

Test(varlen, refuses_bad_arguments)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_layout *c17 = NULL, *c4 = NULL, *l = NULL, *h3 = NULL, *h2 = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &c17, 1, 17, 17, 16), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_causal(ctx, &c4, 1, 4, 4, 16), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_dense(ctx, &h3, 3, 4, 4, 16), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_dense(ctx, &h2, 2, 17, 17, 16), SPARCL_OK);
    const sparcl_layout *two[2] = {c17, c4};
    const int32_t cu[3] = {0, 17, 21};
    EXPECT(sparcl_layout_init_varlen(ctx, NULL, 2, cu, cu, two, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "out");
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 0, cu, cu, two, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "count");
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, NULL, cu, two, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "cu_q");
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, cu, NULL, two, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "cu_k");
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, cu, cu, NULL, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "seqs");
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, cu, cu, two, -1), SPARCL_ERR_INVALID_ARGUMENT,
           "block");
    const int32_t from1[3] = {1, 17, 21}, down[3] = {0, 17, 9}, none[3] = {0, 0, 0};
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, from1, cu, two, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "cu_q[0]");
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, cu, down, two, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "cu_k decreases at sequence 1");
    const sparcl_layout *nulls[2] = {NULL, NULL};
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, none, cu, nulls, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "no query");
    const sparcl_layout *swapped[2] = {c4, c17};
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, cu, cu, swapped, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "seqs[0] is 4 x 4");
    const sparcl_layout *heads[2] = {h2, h3};
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, cu, cu, heads, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "seqs[1] has 3 heads");
    /* queries without keys and keys without queries: nothing attends */
    const int32_t noq[3] = {0, 4, 4}, nok[3] = {0, 0, 5};
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, noq, nok, nulls, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "no pair");
    /* an empty sequence must have a NULL layout */
    const int32_t gap_q[3] = {0, 0, 4};
    const sparcl_layout *gap[2] = {c17, c4};
    EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, gap_q, gap_q, gap, 0), SPARCL_ERR_INVALID_ARGUMENT,
           "seqs[0]");
    cr_assert_null(l, "*out stays NULL on failure");
    const sparcl_layout *ok[2] = {NULL, c4};
    cr_assert_eq(sparcl_layout_init_varlen(ctx, &l, 2, gap_q, gap_q, ok, 0), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_layout_pairs(l), 10);
    sparcl_layout_free(l);
    sparcl_layout_free(c17), sparcl_layout_free(c4), sparcl_layout_free(h3);
    sparcl_layout_free(h2);
    sparcl_ctx_free(ctx);
}
