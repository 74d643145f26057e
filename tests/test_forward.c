/*
 * test_forward.c -- the fused forward kernel against the brute-force oracle
 * on odd shapes (q_len != kv_len, head_dim 16..256, GQA, batch), every
 * foundation layout kind, causal, and five kernel parameter sets per case
 * (the device default, a GPU-style group sharing K/V in local memory, a
 * multi-item group without local memory, scalar 1-row tiles, and many rows
 * per item with wide tiles), which together take every value of KT, EXP and
 * USE_LOCAL.
 * Tolerance: fp32 max abs error <= 1e-4 on inputs in [-1, 1], LSE included.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "sparcl.h"

#define TOL 1e-4

enum pattern { P_DENSE, P_CAUSAL_LAYOUT, P_WINDOW, P_MASK, P_MASK_PER_HEAD };

typedef struct fcase {
    int batch, hq, hkv, lq, lk, dim;
    int pattern, causal; /* causal: the plan flag, on top of the layout */
    int left, right, block;
} fcase;

typedef struct pinfo {
    const fcase *c;
    const uint8_t *mask;
    int nbr, nbc;
} pinfo;

/* Pattern predicates from the definitions (the plan's causal flag too). */
static int pred(const void *self, int h, int i, int j)
{
    const pinfo *p = self;
    const fcase *c = p->c;
    long pos = (long)i + c->lk - c->lq;
    if (c->causal && j > pos)
        return 0;
    switch (c->pattern) {
    case P_CAUSAL_LAYOUT: return j <= pos;
    case P_WINDOW: return j >= pos - c->left && j <= pos + c->right;
    case P_MASK: return p->mask[(i / c->block) * p->nbc + j / c->block] != 0;
    case P_MASK_PER_HEAD:
        return p->mask[((long)h * p->nbr + i / c->block) * p->nbc + j / c->block] != 0;
    default: return 1;
    }
}

static uint8_t *make_mask(const fcase *c, int heads, int *nbr, int *nbc)
{
    *nbr = (c->lq + c->block - 1) / c->block;
    *nbc = (c->lk + c->block - 1) / c->block;
    uint8_t *m = calloc((size_t)heads * *nbr * *nbc, 1);
    uint64_t s = 12345;
    for (long x = 0; x < (long)heads * *nbr * *nbc; ++x) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        m[x] = (s >> 33) % 3 == 0; /* about a third, some rows empty */
    }
    m[0] = 1;
    return m;
}

/* Sets 0 .. N_FUSED_SETS - 1 run the fused kernel; set N_FUSED_SETS the
 * dense algorithm. */
#define N_FUSED_SETS 5

static void set_params(sparcl_params *p, int set, int dim)
{
    sparcl_params_clear(p);
    int vec = 1;
    switch (set) {
    case 1: /* GPU style: 16 work-items x 2 rows, K/V tiles in local memory,
             * dot products along the head dimension, library exp2 */
        sparcl_params_set(p, "WG_SIZE", 16);
        sparcl_params_set(p, "BLOCK_M", 32);
        sparcl_params_set(p, "BLOCK_N", 16);
        sparcl_params_set(p, "USE_LOCAL", 1);
        sparcl_params_set(p, "KT", 0);
        sparcl_params_set(p, "EXP", 0);
        vec = 4;
        break;
    case 2: /* 4 work-items, 1 row each, wide key tiles, global loads, dot
             * products along the head dimension, native_exp2 */
        sparcl_params_set(p, "WG_SIZE", 4);
        sparcl_params_set(p, "BLOCK_M", 4);
        sparcl_params_set(p, "BLOCK_N", 64);
        sparcl_params_set(p, "USE_LOCAL", 0);
        sparcl_params_set(p, "KT", 0);
        sparcl_params_set(p, "EXP", 1);
        vec = 8;
        break;
    case 3: /* scalar, single-row tiles, narrow key tiles, packed K staged in
             * local memory, the polynomial exp2 */
        sparcl_params_set(p, "WG_SIZE", 1);
        sparcl_params_set(p, "BLOCK_M", 1);
        sparcl_params_set(p, "BLOCK_N", 8);
        sparcl_params_set(p, "USE_LOCAL", 1);
        sparcl_params_set(p, "KT", 1);
        sparcl_params_set(p, "EXP", 2);
        vec = 1;
        break;
    case 5: /* the dense algorithm (ALGO=1) with 16-key tiles for its mask */
        sparcl_params_set(p, "ALGO", 1);
        sparcl_params_set(p, "BLOCK_N", 16);
        vec = 8;
        break;
    case 4: /* 16 rows per work-item (8 for the widest heads, to stay within
             * private memory), 128-key tiles, packed K from global memory:
             * the CPU default's shape, stretched */
        sparcl_params_set(p, "WG_SIZE", 1);
        sparcl_params_set(p, "BLOCK_M", dim > 128 ? 8 : 16);
        sparcl_params_set(p, "BLOCK_N", 128);
        sparcl_params_set(p, "USE_LOCAL", 0);
        sparcl_params_set(p, "KT", 1);
        sparcl_params_set(p, "EXP", 2);
        vec = 16;
        break;
    }
    while (vec > dim)
        vec /= 2;
    sparcl_params_set(p, "VEC", vec);
}

/* Runs case c on ctx with parameter sets [set0, set1) against the oracle. */
static void run_case(sparcl_ctx *ctx, const fcase *c, int set0, int set1)
{
    pinfo info = {c, NULL, 0, 0};
    sparcl_layout *layout = NULL;
    sparcl_status st = SPARCL_OK;
    int lheads = c->pattern == P_MASK_PER_HEAD ? c->hq : 1;
    switch (c->pattern) {
    case P_CAUSAL_LAYOUT:
        st = sparcl_layout_init_causal(ctx, &layout, 1, c->lq, c->lk, c->block);
        break;
    case P_WINDOW:
        st = sparcl_layout_init_window(ctx, &layout, 1, c->lq, c->lk, c->block, c->left, c->right);
        break;
    case P_MASK:
    case P_MASK_PER_HEAD:
        info.mask = make_mask(c, lheads, &info.nbr, &info.nbc);
        st = sparcl_layout_init_block_mask(ctx, &layout, lheads, c->lq, c->lk, c->block, info.mask);
        break;
    }
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));

    size_t nq = (size_t)c->batch * c->hq * c->lq * c->dim;
    size_t nk = (size_t)c->batch * c->hkv * c->lk * c->dim;
    size_t nl = (size_t)c->batch * c->hq * c->lq;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
    float *o = malloc(nq * 4), *lse = malloc(nl * 4);
    double *ro = malloc(nq * 8), *rl = malloc(nl * 8);
    oracle_fill(q, nq, 11 + c->lq);
    oracle_fill(k, nk, 22 + c->lk);
    oracle_fill(v, nk, 33 + c->dim);
    oracle_attention(c->batch, c->hq, c->hkv, c->lq, c->lk, c->dim, 1.0 / sqrt(c->dim), pred,
                     &info, q, k, v, ro, rl);

    for (int set = set0; set < set1; ++set) {
        sparcl_params params;
        set_params(&params, set, c->dim);
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.batch = c->batch;
        d.q_heads = c->hq;
        d.kv_heads = c->hkv;
        d.q_len = c->lq;
        d.kv_len = c->lk;
        d.head_dim = c->dim;
        d.causal = c->causal;
        d.layout = layout;
        d.params = set ? &params : NULL;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "set %d: %s", set,
                     sparcl_ctx_errmsg(ctx));
        memset(o, 0xff, nq * 4); /* NaN: every element must be written */
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, lse), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        char ptext[200];
        sparcl_plan_params(plan, &params, NULL);
        int32_t algo = -1;
        sparcl_params_get(&params, "ALGO", &algo);
        cr_assert_eq(algo, set == N_FUSED_SETS, "set %d ran ALGO=%d", set, (int)algo);
        sparcl_params_format(&params, ptext, sizeof ptext);
        double eo = oracle_max_abs_diff_f(o, ro, nq), el = oracle_max_abs_diff_f(lse, rl, nl);
        cr_assert_leq(eo, TOL, "out error %g: b%d h%d/%d lq %d lk %d d %d pattern %d causal %d [%s]",
                      eo, c->batch, c->hq, c->hkv, c->lq, c->lk, c->dim, c->pattern, c->causal,
                      ptext);
        cr_assert_leq(el, TOL, "lse error %g [%s]", el, ptext);
        for (size_t r = 0; r < nl; ++r)
            if (isinf(rl[r])) { /* fully masked row: zeros and -inf */
                cr_assert(isinf(lse[r]) && lse[r] < 0, "row %zu lse %g", r, lse[r]);
                for (int x = 0; x < c->dim; ++x)
                    cr_assert_eq(o[r * c->dim + x], 0.0f);
            }
        sparcl_plan_free(plan);
    }
    free(q), free(k), free(v), free(o), free(lse), free(ro), free(rl);
    free((void *)info.mask);
    sparcl_layout_free(layout);
}

ParameterizedTestParameters(forward, matches_oracle)
{
    static fcase cases[] = {
        /* b  hq hkv  lq    lk   dim  pattern           causal left right block */
        {1, 1, 1, 1, 1, 16, P_DENSE, 0, 0, 0, 0},
        {1, 2, 1, 1, 113, 64, P_DENSE, 1, 0, 0, 0},
        {1, 1, 1, 17, 17, 72, P_DENSE, 1, 0, 0, 0},
        {2, 4, 2, 113, 113, 100, P_DENSE, 0, 0, 0, 0},
        {1, 2, 2, 239, 113, 128, P_DENSE, 1, 0, 0, 0},
        {1, 1, 1, 1023, 1023, 64, P_DENSE, 1, 0, 0, 0},
        {1, 1, 1, 113, 239, 256, P_DENSE, 0, 0, 0, 0},
        {1, 4, 1, 17, 1023, 16, P_CAUSAL_LAYOUT, 0, 0, 0, 64},
        {1, 2, 2, 239, 239, 72, P_CAUSAL_LAYOUT, 0, 0, 0, 16},
        {1, 2, 1, 1023, 1023, 100, P_WINDOW, 0, 100, 37, 64},
        {1, 3, 3, 113, 17, 64, P_WINDOW, 0, 5, 9, 8},
        {2, 2, 1, 239, 1023, 128, P_WINDOW, 1, 50, 50, 32},
        {1, 1, 1, 17, 239, 256, P_WINDOW, 0, 0, 0, 1},
        {1, 2, 2, 113, 239, 16, P_MASK, 0, 0, 0, 16},
        {1, 4, 2, 1023, 239, 72, P_MASK, 1, 0, 0, 64},
        {1, 3, 1, 239, 113, 100, P_MASK_PER_HEAD, 0, 0, 0, 24},
        {2, 2, 2, 17, 17, 64, P_MASK_PER_HEAD, 1, 0, 0, 5},
    };
    return cr_make_param_array(fcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(fcase *c, forward, matches_oracle, .timeout = 600)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    run_case(ctx, c, 0, N_FUSED_SETS);
    sparcl_ctx_free(ctx);
}

/* The dense algorithm (ALGO=1: CLBlast SGEMMs around our masked softmax)
 * on small shapes that still cover every mask kind: PARTIAL tiles, causal
 * with q_len != kv_len, empty rows, per-head layouts, GQA and batch.  One
 * context for all, because CLBlast compiles its GEMM kernels once per
 * context (about 20 s on POCL the first time; POCL's cache in the build
 * tree makes later runs fast). */
Test(forward, dense_algo_matches_oracle, .timeout = 600)
{
    static const fcase cases[] = {
        /* b  hq hkv  lq   lk   dim  pattern           causal left right block */
        {1, 2, 1, 17, 113, 72, P_DENSE, 1, 0, 0, 0},
        {1, 1, 1, 113, 17, 16, P_WINDOW, 0, 5, 9, 8},
        {1, 3, 1, 239, 113, 100, P_MASK_PER_HEAD, 0, 0, 0, 24},
        {2, 4, 2, 64, 64, 64, P_CAUSAL_LAYOUT, 0, 0, 0, 16},
    };
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        run_case(ctx, &cases[i], N_FUSED_SETS, N_FUSED_SETS + 1);
    sparcl_ctx_free(ctx);
}

Test(forward, strided_bshd_tensors)
{
    /* q/k/v/out stored [B, S, H, D]; the result must equal the contiguous
     * run on the same values. */
    int B = 2, H = 3, S = 37, D = 24;
    size_t n = (size_t)B * H * S * D;
    float *bhsd[3], *bshd[3];
    for (int t = 0; t < 3; ++t) {
        bhsd[t] = malloc(n * 4);
        bshd[t] = malloc(n * 4);
        oracle_fill(bhsd[t], n, 100 + t);
        for (int b = 0; b < B; ++b)
            for (int h = 0; h < H; ++h)
                for (int s = 0; s < S; ++s)
                    memcpy(bshd[t] + (((size_t)b * S + s) * H + h) * D,
                           bhsd[t] + (((size_t)b * H + h) * S + s) * D, D * 4);
    }
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = B;
    d.q_heads = d.kv_heads = H;
    d.q_len = d.kv_len = S;
    d.head_dim = D;
    d.causal = 1;
    sparcl_strides st = {(int64_t)S * H * D, D, (int64_t)H * D};
    d.q_strides = d.k_strides = d.v_strides = d.o_strides = st;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_context cc = sparcl_ctx_cl_context(ctx);
    cl_mem m[4];
    for (int t = 0; t < 3; ++t)
        m[t] = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * 4, bshd[t], NULL);
    m[3] = clCreateBuffer(cc, CL_MEM_READ_WRITE, n * 4, NULL, NULL);
    cl_event ev;
    cr_assert_eq(sparcl_plan_forward(plan, m[0], m[1], m[2], m[3], NULL, 0, NULL, &ev), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(ctx));
    float *o = malloc(n * 4);
    clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m[3], CL_TRUE, 0, n * 4, o, 1, &ev, NULL);
    clReleaseEvent(ev);
    double *ref = malloc(n * 8);
    d.q_strides = d.k_strides = d.v_strides = d.o_strides = (sparcl_strides){0, 0, 0};
    cr_assert_eq(sparcl_reference_forward(ctx, &d, bhsd[0], bhsd[1], bhsd[2], ref, NULL), SPARCL_OK);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int s = 0; s < S; ++s)
                for (int x = 0; x < D; ++x) {
                    double want = ref[(((size_t)b * H + h) * S + s) * D + x];
                    float got = o[(((size_t)b * S + s) * H + h) * D + x];
                    cr_assert_float_eq(got, want, TOL, "b%d h%d s%d x%d", b, h, s, x);
                }
    for (int t = 0; t < 4; ++t)
        clReleaseMemObject(m[t]);
    for (int t = 0; t < 3; ++t)
        free(bhsd[t]), free(bshd[t]);
    free(o), free(ref);
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
}

static int causal_pred(const void *self, int h, int i, int j)
{
    (void)self, (void)h;
    return j <= i;
}

Test(forward, large_scores_every_exp)
{
    /* scale 3 spreads the scores over about +-60, so the softmax's 2^x runs
     * far into its range (down to where it underflows); every EXP choice
     * must still match the oracle. */
    const int n = 239, dim = 64;
    const double scale = 3.0;
    size_t elems = (size_t)n * dim;
    float *q = malloc(elems * 4), *k = malloc(elems * 4), *v = malloc(elems * 4);
    float *o = malloc(elems * 4), *lse = malloc((size_t)n * 4);
    double *ro = malloc(elems * 8), *rl = malloc((size_t)n * 8);
    oracle_fill(q, elems, 5);
    oracle_fill(k, elems, 6);
    oracle_fill(v, elems, 7);
    oracle_attention(1, 1, 1, n, n, dim, scale, causal_pred, NULL, q, k, v, ro, rl);
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    for (int exp = 0; exp < 3; ++exp) {
        sparcl_params params;
        sparcl_params_clear(&params);
        sparcl_params_set(&params, "EXP", exp);
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_len = d.kv_len = n;
        d.head_dim = dim;
        d.scale = (float)scale;
        d.causal = 1;
        d.params = &params;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, lse), SPARCL_OK);
        double eo = oracle_max_abs_diff_f(o, ro, elems), el = oracle_max_abs_diff_f(lse, rl, n);
        cr_assert_leq(eo, TOL, "EXP=%d: out error %g", exp, eo);
        cr_assert_leq(el, TOL, "EXP=%d: lse error %g", exp, el);
        sparcl_plan_free(plan);
    }
    free(q), free(k), free(v), free(o), free(lse), free(ro), free(rl);
    sparcl_ctx_free(ctx);
}

static void count_warnings(void *user, sparcl_log_level level, const char *message)
{
    (void)message;
    if (level == SPARCL_LOG_WARNING)
        ++*(int *)user;
}

Test(forward, dense_algo_falls_back_when_scores_do_not_fit)
{
    /* 2^18 x 2^18 scores per head (256 GiB) fit no device: the plan must
     * take the fused kernel, report ALGO=0 and warn through the log. */
    const int n = 1 << 18;
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    int warnings = 0;
    sparcl_ctx_set_log(ctx, count_warnings, &warnings);
    sparcl_layout *layout = NULL;
    cr_assert_eq(sparcl_layout_init_window(ctx, &layout, 1, n, n, 64, 16, 0), SPARCL_OK);
    sparcl_params params;
    sparcl_params_clear(&params);
    sparcl_params_set(&params, "ALGO", 1);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = n;
    d.head_dim = 16;
    d.layout = layout;
    d.params = &params;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_params used;
    int32_t algo = -1;
    sparcl_plan_params(plan, &used, NULL);
    sparcl_params_get(&used, "ALGO", &algo);
    cr_assert_eq(algo, 0);
    cr_assert_geq(warnings, 1);
    cr_assert_lt(sparcl_plan_device_bytes(plan), (size_t)1 << 30, "no N^2 allocation");
    sparcl_plan_free(plan);
    sparcl_layout_free(layout);
    sparcl_ctx_free(ctx);
}
