/*
 * test_decode.c -- the inference paths against the double reference:
 * sparcl_merge() (partial results combined by their LSEs, rows whose parts
 * are empty, chained launches, strided tensors, bad input) and the split-KV
 * decoding kind (q_len 1, 3 and 16; GQA 4:1 and 8:1, MQA and MHA; head dims
 * 64, 100 and 128; kv_len 1, 17, 300 and 2000; dense, causal, window,
 * streaming, block-mask and per-head layouts).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "sparcl.h"

#define TOL 2e-5

/* ---- helpers ------------------------------------------------------------ */

static sparcl_ctx *make_ctx(void)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    return ctx;
}

static cl_mem upload(sparcl_ctx *ctx, const float *x, size_t n)
{
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              n * sizeof(float), (void *)x, &err);
    cr_assert_not_null(m, "clCreateBuffer %d", err);
    return m;
}

static cl_mem device_buffer(sparcl_ctx *ctx, size_t n)
{
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE, n * sizeof(float),
                              NULL, &err);
    cr_assert_not_null(m, "clCreateBuffer %d", err);
    return m;
}

static void download(sparcl_ctx *ctx, cl_mem m, float *x, size_t n)
{
    cr_assert_eq(clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m, CL_TRUE, 0, n * sizeof(float), x,
                                     0, NULL, NULL),
                 CL_SUCCESS);
}

static float *floats(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    cr_assert_not_null(x);
    oracle_fill(x, n, seed);
    return x;
}

/* ---- sparcl_merge ----------------------------------------------------- */

enum { MB = 2, MH = 3, MQ = 5, MD = 72, MKV = 120 };

/* Part p (of n) holds the keys j with j % n == p; row 0 attends only keys
 * of part 1, row 1 attends nothing at all, the others every key. */
typedef struct part_pred {
    int part, n; /* part < 0: the union of all parts */
} part_pred;

static int part_attends(const void *self, int h, int i, int j)
{
    (void)h;
    const part_pred *p = self;
    if (i == 1)
        return 0;
    if (i == 0 && j % p->n != 1)
        return 0;
    return p->part < 0 || j % p->n == p->part;
}

/* Oracle partials as floats, each part's out written with `ps` strides
 * into a buffer of `span` floats (contiguous when ps is all zero). */
static void make_parts(sparcl_ctx *ctx, int n, const float *q, const float *k, const float *v,
                       sparcl_strides ps, size_t span, cl_mem *po, cl_mem *pl)
{
    const size_t rows = (size_t)MB * MH * MQ;
    double *o = malloc(rows * MD * sizeof *o), *l = malloc(rows * sizeof *l);
    float *of = calloc(span, sizeof *of), *lf = malloc(rows * sizeof *lf);
    for (int p = 0; p < n; ++p) {
        part_pred pp = {p, n};
        oracle_attention(MB, MH, MH, MQ, MKV, MD, 0.125, part_attends, &pp, q, k, v, o, l);
        for (int b = 0; b < MB; ++b)
            for (int h = 0; h < MH; ++h)
                for (int i = 0; i < MQ; ++i) {
                    const size_t row = ((size_t)b * MH + h) * MQ + i;
                    const size_t at =
                        ps.seq ? (size_t)(b * ps.batch + h * ps.head + i * ps.seq) : row * MD;
                    for (int d = 0; d < MD; ++d)
                        of[at + (size_t)d] = (float)o[row * MD + (size_t)d];
                    lf[row] = (float)l[row];
                }
        po[p] = upload(ctx, of, span);
        pl[p] = upload(ctx, lf, rows);
    }
    free(o);
    free(l);
    free(of);
    free(lf);
}

/* Merges n oracle partials and compares with the oracle of their union. */
static void check_merge(int n, int with_lse, sparcl_strides ps, size_t part_span, sparcl_strides os,
                        size_t out_span)
{
    sparcl_ctx *ctx = make_ctx();
    const size_t rows = (size_t)MB * MH * MQ;
    float *q = floats(rows * MD, 1), *k = floats((size_t)MB * MH * MKV * MD, 2);
    float *v = floats((size_t)MB * MH * MKV * MD, 3);
    cl_mem po[16], pl[16];
    make_parts(ctx, n, q, k, v, ps, part_span, po, pl);
    cl_mem out = device_buffer(ctx, out_span), lse = device_buffer(ctx, rows);
    cl_event ev = NULL;
    cr_assert_eq(sparcl_merge(ctx, NULL, MB, MH, MQ, MD, n, po, pl, ps, out, os,
                              with_lse ? lse : NULL, 0, NULL, &ev),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(clWaitForEvents(1, &ev), CL_SUCCESS);
    clReleaseEvent(ev);
    float *got = malloc(out_span * sizeof *got), *got_l = malloc(rows * sizeof *got_l);
    download(ctx, out, got, out_span);
    download(ctx, lse, got_l, rows);
    double *want = malloc(rows * MD * sizeof *want), *want_l = malloc(rows * sizeof *want_l);
    part_pred all = {-1, n};
    oracle_attention(MB, MH, MH, MQ, MKV, MD, 0.125, part_attends, &all, q, k, v, want, want_l);
    double err = 0;
    for (int b = 0; b < MB; ++b)
        for (int h = 0; h < MH; ++h)
            for (int i = 0; i < MQ; ++i) {
                const size_t row = ((size_t)b * MH + h) * MQ + i;
                const size_t at =
                    os.seq ? (size_t)(b * os.batch + h * os.head + i * os.seq) : row * MD;
                double e = oracle_max_abs_diff_f(got + at, want + row * MD, MD);
                err = e > err ? e : err;
                if (i == 1) /* attends nothing: exactly 0 */
                    for (int d = 0; d < MD; ++d)
                        cr_assert_eq(got[at + (size_t)d], 0.0f);
            }
    cr_assert_lt(err, TOL, "out differs by %g", err);
    if (with_lse) {
        double el = oracle_max_abs_diff_f(got_l, want_l, rows);
        cr_assert_lt(el, TOL, "lse differs by %g", el);
        cr_assert(isinf(got_l[1]) && got_l[1] < 0, "row 1 lse %g", (double)got_l[1]);
    }
    for (int p = 0; p < n; ++p) {
        clReleaseMemObject(po[p]);
        clReleaseMemObject(pl[p]);
    }
    clReleaseMemObject(out);
    clReleaseMemObject(lse);
    free(q);
    free(k);
    free(v);
    free(got);
    free(got_l);
    free(want);
    free(want_l);
    sparcl_ctx_free(ctx);
}

static const sparcl_strides contiguous = {0, 0, 0};
#define CONTIGUOUS_SPAN ((size_t)MB * MH * MQ * MD)

Test(decode, merge_matches_reference_with_empty_parts)
{
    check_merge(3, 1, contiguous, CONTIGUOUS_SPAN, contiguous, CONTIGUOUS_SPAN);
}

Test(decode, merge_one_part_is_a_copy)
{
    check_merge(1, 1, contiguous, CONTIGUOUS_SPAN, contiguous, CONTIGUOUS_SPAN);
}

Test(decode, merge_chains_launches_past_eight_parts)
{
    check_merge(11, 0, contiguous, CONTIGUOUS_SPAN, contiguous, CONTIGUOUS_SPAN);
    check_merge(16, 1, contiguous, CONTIGUOUS_SPAN, contiguous, CONTIGUOUS_SPAN);
}

Test(decode, merge_honours_strides)
{
    /* Parts [B, S, H, D]; out padded rows of 80 floats. */
    const sparcl_strides ps = {(int64_t)MQ * MH * MD, MD, (int64_t)MH * MD};
    const sparcl_strides os = {(int64_t)MH * MQ * 80, (int64_t)MQ * 80, 80};
    check_merge(4, 1, ps, CONTIGUOUS_SPAN, os, (size_t)MB * MH * MQ * 80);
}

/* Two forward calls over the halves of a key range, merged, give the one
 * call over the whole range. */
Test(decode, merge_of_forward_slices_matches_one_call)
{
    sparcl_ctx *ctx = make_ctx();
    enum { H = 4, Q = 7, KV = 300, D = 64, HALF = 150 };
    float *q = floats((size_t)H * Q * D, 4), *k = floats((size_t)H * KV * D, 5);
    float *v = floats((size_t)H * KV * D, 6);
    float *ks[2], *vs[2];
    cl_mem po[2], pl[2];
    for (int s = 0; s < 2; ++s) {
        ks[s] = malloc((size_t)H * HALF * D * sizeof(float));
        vs[s] = malloc((size_t)H * HALF * D * sizeof(float));
        for (int h = 0; h < H; ++h) {
            memcpy(ks[s] + (size_t)h * HALF * D, k + ((size_t)h * KV + (size_t)s * HALF) * D,
                   (size_t)HALF * D * sizeof(float));
            memcpy(vs[s] + (size_t)h * HALF * D, v + ((size_t)h * KV + (size_t)s * HALF) * D,
                   (size_t)HALF * D * sizeof(float));
        }
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_heads = d.kv_heads = H;
        d.q_len = Q;
        d.kv_len = HALF;
        d.head_dim = D;
        sparcl_plan *p;
        cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        float *o = malloc((size_t)H * Q * D * sizeof *o), *l = malloc((size_t)H * Q * sizeof *l);
        cr_assert_eq(sparcl_plan_forward_host(p, q, ks[s], vs[s], o, l), SPARCL_OK);
        po[s] = upload(ctx, o, (size_t)H * Q * D);
        pl[s] = upload(ctx, l, (size_t)H * Q);
        free(o);
        free(l);
        sparcl_plan_free(p);
    }
    cl_mem out = device_buffer(ctx, (size_t)H * Q * D), lse = device_buffer(ctx, (size_t)H * Q);
    cr_assert_eq(sparcl_merge(ctx, sparcl_ctx_cl_queue(ctx), 1, H, Q, D, 2, po, pl, contiguous, out,
                              contiguous, lse, 0, NULL, NULL),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float *got = malloc((size_t)H * Q * D * sizeof *got), *got_l = malloc((size_t)H * Q * 4);
    download(ctx, out, got, (size_t)H * Q * D);
    download(ctx, lse, got_l, (size_t)H * Q);
    double *want = malloc((size_t)H * Q * D * sizeof *want), *want_l = malloc((size_t)H * Q * 8);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = d.kv_heads = H;
    d.q_len = Q;
    d.kv_len = KV;
    d.head_dim = D;
    cr_assert_eq(sparcl_reference_forward(ctx, &d, q, k, v, want, want_l), SPARCL_OK);
    cr_assert_lt(oracle_max_abs_diff_f(got, want, (size_t)H * Q * D), TOL);
    cr_assert_lt(oracle_max_abs_diff_f(got_l, want_l, (size_t)H * Q), TOL);
    for (int s = 0; s < 2; ++s) {
        clReleaseMemObject(po[s]);
        clReleaseMemObject(pl[s]);
        free(ks[s]);
        free(vs[s]);
    }
    clReleaseMemObject(out);
    clReleaseMemObject(lse);
    free(q);
    free(k);
    free(v);
    free(got);
    free(got_l);
    free(want);
    free(want_l);
    sparcl_ctx_free(ctx);
}

Test(decode, merge_refuses_bad_input)
{
    sparcl_ctx *ctx = make_ctx();
    const size_t n = (size_t)2 * 3 * 4;
    cl_mem a = device_buffer(ctx, n), b = device_buffer(ctx, n), small = device_buffer(ctx, 3);
    cl_mem la = device_buffer(ctx, 6), lb = device_buffer(ctx, 6);
    cl_mem out = device_buffer(ctx, n);
    cl_mem po[2] = {a, b}, pl[2] = {la, lb};
#define REFUSED(call, text)                                                                        \
    do {                                                                                           \
        cr_assert_eq(call, SPARCL_ERR_INVALID_ARGUMENT);                                           \
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), text), "message: %s", sparcl_ctx_errmsg(ctx));    \
    } while (0)
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 0, po, pl, contiguous, out, contiguous, NULL, 0,
                         NULL, NULL),
            "parts 0");
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 300, 2, po, pl, contiguous, out, contiguous, NULL, 0,
                         NULL, NULL),
            "head_dim 300");
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 2, NULL, pl, contiguous, out, contiguous, NULL, 0,
                         NULL, NULL),
            "part_out is NULL");
    cl_mem pos[2] = {a, small};
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 2, pos, pl, contiguous, out, contiguous, NULL, 0,
                         NULL, NULL),
            "part_out[1] buffer has 12 bytes");
    cl_mem pls[2] = {la, small};
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 2, po, pls, contiguous, out, contiguous, NULL, 0,
                         NULL, NULL),
            "part_lse[1]");
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 2, po, pl, contiguous, a, contiguous, NULL, 0, NULL,
                         NULL),
            "part 0 aliases");
    const sparcl_strides overlap = {0, 4, 4};
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 2, po, pl, contiguous, out, overlap, NULL, 0, NULL,
                         NULL),
            "overlap");
    const sparcl_strides negative = {0, -1, 4};
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 2, po, pl, negative, out, contiguous, NULL, 0, NULL,
                         NULL),
            "must be >= 0");
    REFUSED(sparcl_merge(ctx, NULL, 1, 2, 3, 4, 2, po, pl, contiguous, out, contiguous, NULL, 1,
                         NULL, NULL),
            "num_wait");
    cr_assert_eq(sparcl_merge(NULL, NULL, 1, 2, 3, 4, 2, po, pl, contiguous, out, contiguous, NULL,
                              0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
#undef REFUSED
    cl_mem all[6] = {a, b, small, la, lb, out};
    for (int i = 0; i < 6; ++i)
        clReleaseMemObject(all[i]);
    sparcl_ctx_free(ctx);
}

/* ---- split-KV decoding ------------------------------------------------ */

enum { DENSE, CAUSAL, WINDOW, STREAM, BLOCKS, PER_HEAD };

typedef struct dcase {
    int q_len, q_heads, kv_heads, dim, kv_len, kind, splits;
} dcase;

enum { WIN_LEFT = 40, WIN_RIGHT = 3, SINK = 4, LOCAL = 50, MASK_BLOCK = 16 };

/* The patterns straight from their definitions; pos = i + kv_len - q_len. */
static int window_at(int pos, int j, int left, int right)
{
    return j - pos >= -left && j - pos <= right;
}

static int stream_at(int pos, int j, int sink, int local)
{
    return j <= pos && (j < sink || pos - j <= local);
}

static int block_on(int c)
{
    return c % 3 != 1;
}

static int dcase_attends(const void *self, int h, int i, int j)
{
    const dcase *c = self;
    const int pos = i + c->kv_len - c->q_len;
    switch (c->kind) {
    case CAUSAL: return j <= pos;
    case WINDOW: return window_at(pos, j, WIN_LEFT, WIN_RIGHT);
    case STREAM: return stream_at(pos, j, SINK, LOCAL);
    case BLOCKS: return block_on(j / MASK_BLOCK);
    case PER_HEAD:
        return h % 3 == 0   ? j <= pos
               : h % 3 == 1 ? window_at(pos, j, 20, 0)
                            : stream_at(pos, j, 2, 30);
    default: return 1;
    }
}

static sparcl_layout *dcase_layout(sparcl_ctx *ctx, const dcase *c)
{
    sparcl_layout *l = NULL;
    const int q = c->q_len, kv = c->kv_len;
    switch (c->kind) {
    case WINDOW:
        cr_assert_eq(sparcl_layout_init_window(ctx, &l, 1, q, kv, 16, WIN_LEFT, WIN_RIGHT),
                     SPARCL_OK);
        break;
    case STREAM:
        cr_assert_eq(sparcl_layout_init_streaming(ctx, &l, 1, q, kv, 16, SINK, LOCAL), SPARCL_OK);
        break;
    case BLOCKS: {
        const int nbc = (kv + MASK_BLOCK - 1) / MASK_BLOCK, nbr = (q + MASK_BLOCK - 1) / MASK_BLOCK;
        uint8_t *mask = malloc((size_t)nbr * (size_t)nbc);
        for (int r = 0; r < nbr; ++r)
            for (int col = 0; col < nbc; ++col)
                mask[r * nbc + col] = (uint8_t)block_on(col);
        cr_assert_eq(sparcl_layout_init_block_mask(ctx, &l, 1, q, kv, MASK_BLOCK, mask), SPARCL_OK);
        free(mask);
        break;
    }
    case PER_HEAD: {
        sparcl_layout *one[3], *heads[16];
        cr_assert_eq(sparcl_layout_init_causal(ctx, &one[0], 1, q, kv, 8), SPARCL_OK);
        cr_assert_eq(sparcl_layout_init_window(ctx, &one[1], 1, q, kv, 8, 20, 0), SPARCL_OK);
        cr_assert_eq(sparcl_layout_init_streaming(ctx, &one[2], 1, q, kv, 8, 2, 30), SPARCL_OK);
        for (int h = 0; h < c->q_heads; ++h)
            heads[h] = one[h % 3];
        cr_assert_eq(
            sparcl_layout_init_per_head(ctx, &l, (const sparcl_layout *const *)heads, c->q_heads),
            SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        for (int k = 0; k < 3; ++k)
            sparcl_layout_free(one[k]);
        break;
    }
    default: break;
    }
    return l;
}

/* Runs the case on the decoding kind (SPLITS forces it) and compares out
 * and lse with the double reference. */
static void check_decode(const dcase *c, int force)
{
    sparcl_ctx *ctx = make_ctx();
    sparcl_layout *l = dcase_layout(ctx, c);
    sparcl_params params;
    sparcl_params_clear(&params);
    sparcl_params_set(&params, "SPLITS", c->splits);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = 2;
    d.q_heads = c->q_heads;
    d.kv_heads = c->kv_heads;
    d.q_len = c->q_len;
    d.kv_len = c->kv_len;
    d.head_dim = c->dim;
    d.causal = c->kind == CAUSAL;
    d.layout = l;
    d.params = force ? &params : NULL;
    sparcl_plan *p;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_params used;
    sparcl_plan_params(p, &used, NULL);
    int32_t splits = 0;
    cr_assert(sparcl_params_get(&used, "SPLITS", &splits), "the plan did not choose decoding");
    if (force)
        cr_assert_eq(splits, c->splits);
    const size_t nq = (size_t)2 * c->q_heads * c->q_len * c->dim;
    const size_t nk = (size_t)2 * c->kv_heads * c->kv_len * c->dim;
    const size_t rows = (size_t)2 * c->q_heads * c->q_len;
    float *q = floats(nq, 11), *k = floats(nk, 12), *v = floats(nk, 13);
    float *o = malloc(nq * sizeof *o), *lse = malloc(rows * sizeof *lse);
    cr_assert_eq(sparcl_plan_forward_host(p, q, k, v, o, lse), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    double *want = malloc(nq * sizeof *want), *want_l = malloc(rows * sizeof *want_l);
    oracle_attention(2, c->q_heads, c->kv_heads, c->q_len, c->kv_len, c->dim,
                     1.0 / sqrt((double)c->dim), dcase_attends, c, q, k, v, want, want_l);
    const double eo = oracle_max_abs_diff_f(o, want, nq);
    const double el = oracle_max_abs_diff_f(lse, want_l, rows);
    cr_assert_lt(eo, TOL, "q_len %d heads %d/%d dim %d kv %d kind %d: out differs by %g", c->q_len,
                 c->q_heads, c->kv_heads, c->dim, c->kv_len, c->kind, eo);
    cr_assert_lt(el, TOL, "lse differs by %g", el);
    free(q);
    free(k);
    free(v);
    free(o);
    free(lse);
    free(want);
    free(want_l);
    sparcl_plan_free(p);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

static dcase cases[] = {
    {1, 8, 2, 128, 2000, CAUSAL, 16},   /* GQA 4:1 */
    {1, 8, 1, 64, 300, DENSE, 4},       /* GQA 8:1 */
    {3, 4, 1, 100, 300, WINDOW, 8},     /* MQA, odd head_dim */
    {16, 8, 2, 64, 2000, STREAM, 64},   /* sinks + local */
    {1, 4, 1, 128, 1, DENSE, 1},        /* one key */
    {3, 8, 1, 100, 17, CAUSAL, 2},      /* a PARTIAL last tile */
    {16, 4, 4, 64, 17, CAUSAL, 4},      /* MHA */
    {16, 4, 2, 64, 1, CAUSAL, 1},       /* q_len > kv_len: rows that attend nothing */
    {1, 8, 2, 64, 300, BLOCKS, 8},      /* block mask */
    {3, 8, 2, 128, 2000, PER_HEAD, 32}, /* a pattern per head, walked together */
    {1, 8, 1, 100, 2000, WINDOW, 64},   /* most splits empty for the row */
    {16, 4, 1, 128, 300, PER_HEAD, 4},  /* MQA, q_len 16 */
    {1, 4, 1, 64, 17, STREAM, 4},
};

ParameterizedTestParameters(decode, matches_reference)
{
    return cr_make_param_array(dcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(dcase *c, decode, matches_reference)
{
    check_decode(c, 1);
}

Test(decode, chosen_without_override_for_long_kv)
{
    const dcase c = {1, 8, 2, 64, 2000, CAUSAL, 0};
    check_decode(&c, 0);
}

Test(decode, backward_through_a_decoding_plan)
{
    sparcl_ctx *ctx = make_ctx();
    enum { H = 4, HK = 2, Q = 3, KV = 300, D = 64 };
    sparcl_params params;
    sparcl_params_clear(&params);
    sparcl_params_set(&params, "SPLITS", 8);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = H;
    d.kv_heads = HK;
    d.q_len = Q;
    d.kv_len = KV;
    d.head_dim = D;
    d.causal = 1;
    d.params = &params;
    sparcl_plan *p;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nq = (size_t)H * Q * D, nk = (size_t)HK * KV * D;
    float *q = floats(nq, 21), *k = floats(nk, 22), *v = floats(nk, 23), *dout = floats(nq, 24);
    float *o = malloc(nq * 4), *lse = malloc((size_t)H * Q * 4);
    float *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    cr_assert_eq(sparcl_plan_forward_host(p, q, k, v, o, lse), SPARCL_OK);
    cr_assert_eq(sparcl_plan_backward_host(p, q, k, v, o, lse, dout, dq, dk, dv), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    double *wq = malloc(nq * 8), *wk = malloc(nk * 8), *wv = malloc(nk * 8);
    cr_assert_eq(sparcl_reference_backward(ctx, &d, q, k, v, dout, wq, wk, wv), SPARCL_OK);
    cr_assert_lt(oracle_max_abs_diff_f(dq, wq, nq), 1e-4);
    cr_assert_lt(oracle_max_abs_diff_f(dk, wk, nk), 1e-4);
    cr_assert_lt(oracle_max_abs_diff_f(dv, wv, nk), 1e-4);
    float *bufs[] = {q, k, v, dout, o, lse, dq, dk, dv};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; ++i)
        free(bufs[i]);
    free(wq);
    free(wk);
    free(wv);
    sparcl_plan_free(p);
    sparcl_ctx_free(ctx);
}
