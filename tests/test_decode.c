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
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device_io.h"
#include "oracle.h"
#include "sparcl.h"

#define TOL 2e-5

/* ---- helpers ------------------------------------------------------------ */

/* Rounds x to `dtype`'s storage and back, in place (F32: unchanged), so
 * the reference sees what the device stores. */
static void round_in_place(float *x, size_t n, int dtype)
{
    if (dtype == SPARCL_DTYPE_F32)
        return;
    uint16_t *h = malloc(n * sizeof *h);
    const int f16 = dtype == SPARCL_DTYPE_F16;
    cr_assert_eq((f16 ? sparcl_convert_f32_to_f16 : sparcl_convert_f32_to_bf16)(x, h, n),
                 SPARCL_OK);
    cr_assert_eq((f16 ? sparcl_convert_f16_to_f32 : sparcl_convert_bf16_to_f32)(h, x, n),
                 SPARCL_OK);
    free(h);
}

/* dev_upload() and dev_download() in `dtype`'s storage. */
static cl_mem upload_as(sparcl_ctx *ctx, const float *x, size_t n, int dtype)
{
    if (dtype == SPARCL_DTYPE_F32)
        return dev_upload(ctx, x, n);
    uint16_t *h = malloc(n * sizeof *h);
    const int f16 = dtype == SPARCL_DTYPE_F16;
    cr_assert_eq((f16 ? sparcl_convert_f32_to_f16 : sparcl_convert_f32_to_bf16)(x, h, n),
                 SPARCL_OK);
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              n * sizeof *h, h, &err);
    cr_assert_not_null(m, "clCreateBuffer %d", err);
    free(h);
    return m;
}

static void download_as(sparcl_ctx *ctx, cl_mem m, float *x, size_t n, int dtype)
{
    if (dtype == SPARCL_DTYPE_F32) {
        dev_download(ctx, m, x, n);
        return;
    }
    uint16_t *h = malloc(n * sizeof *h);
    cr_assert_eq(clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m, CL_TRUE, 0, n * sizeof *h, h, 0,
                                     NULL, NULL),
                 CL_SUCCESS);
    const int f16 = dtype == SPARCL_DTYPE_F16;
    cr_assert_eq((f16 ? sparcl_convert_f16_to_f32 : sparcl_convert_bf16_to_f32)(h, x, n),
                 SPARCL_OK);
    free(h);
}

static void free_all(void **ptrs, int n)
{
    for (int i = 0; i < n; ++i)
        free(ptrs[i]);
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
        po[p] = dev_upload(ctx, of, span);
        pl[p] = dev_upload(ctx, lf, rows);
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
    sparcl_ctx *ctx = dev_ctx();
    const size_t rows = (size_t)MB * MH * MQ;
    float *q = floats(rows * MD, 1), *k = floats((size_t)MB * MH * MKV * MD, 2);
    float *v = floats((size_t)MB * MH * MKV * MD, 3);
    cl_mem po[16], pl[16];
    make_parts(ctx, n, q, k, v, ps, part_span, po, pl);
    cl_mem out = dev_buffer(ctx, out_span), lse = dev_buffer(ctx, rows);
    cl_event ev = NULL;
    cr_assert_eq(sparcl_merge(ctx, NULL, MB, MH, MQ, MD, n, po, pl, ps, out, os,
                              with_lse ? lse : NULL, 0, NULL, &ev),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(clWaitForEvents(1, &ev), CL_SUCCESS);
    clReleaseEvent(ev);
    float *got = malloc(out_span * sizeof *got), *got_l = malloc(rows * sizeof *got_l);
    dev_download(ctx, out, got, out_span);
    dev_download(ctx, lse, got_l, rows);
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
    free_all((void *[]){q, k, v, got, got_l, want, want_l}, 7);
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
    sparcl_ctx *ctx = dev_ctx();
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
        po[s] = dev_upload(ctx, o, (size_t)H * Q * D);
        pl[s] = dev_upload(ctx, l, (size_t)H * Q);
        free(o);
        free(l);
        sparcl_plan_free(p);
    }
    cl_mem out = dev_buffer(ctx, (size_t)H * Q * D), lse = dev_buffer(ctx, (size_t)H * Q);
    cr_assert_eq(sparcl_merge(ctx, sparcl_ctx_cl_queue(ctx), 1, H, Q, D, 2, po, pl, contiguous, out,
                              contiguous, lse, 0, NULL, NULL),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    float *got = malloc((size_t)H * Q * D * sizeof *got), *got_l = malloc((size_t)H * Q * 4);
    dev_download(ctx, out, got, (size_t)H * Q * D);
    dev_download(ctx, lse, got_l, (size_t)H * Q);
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
    free_all((void *[]){q, k, v, got, got_l, want, want_l}, 7);
    sparcl_ctx_free(ctx);
}

Test(decode, merge_refuses_bad_input)
{
    sparcl_ctx *ctx = dev_ctx();
    const size_t n = (size_t)2 * 3 * 4;
    cl_mem a = dev_buffer(ctx, n), b = dev_buffer(ctx, n), small = dev_buffer(ctx, 3);
    cl_mem la = dev_buffer(ctx, 6), lb = dev_buffer(ctx, 6);
    cl_mem out = dev_buffer(ctx, n);
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

/* Tuned parameters a run sets beyond SPLITS; 0 (prefetch -1) leaves one
 * to the plan. */
typedef struct dopts {
    int lanes, vec; /* WG_SIZE lanes of VEC vec */
    int prefetch;   /* PREFETCH */
    int pv_rows, heads;
} dopts;

/* Runs the case on the decoding kind (SPLITS forces it, with the options)
 * and compares out and lse with the double reference. */
static void check_decode_opts(const dcase *c, int force, dopts opt)
{
    const int lanes = opt.lanes, vec = opt.vec, prefetch = opt.prefetch;
    sparcl_ctx *ctx = dev_ctx();
    sparcl_layout *l = dcase_layout(ctx, c);
    sparcl_params params;
    sparcl_params_clear(&params);
    sparcl_params_set(&params, "SPLITS", c->splits);
    if (lanes) {
        sparcl_params_set(&params, "WG_SIZE", lanes);
        sparcl_params_set(&params, "VEC", vec);
    }
    if (prefetch >= 0)
        sparcl_params_set(&params, "PREFETCH", prefetch);
    if (opt.pv_rows)
        sparcl_params_set(&params, "PV_ROWS", opt.pv_rows);
    if (opt.heads)
        sparcl_params_set(&params, "HEADS", opt.heads);
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
    int32_t wg = 0;
    cr_assert(sparcl_params_get(&used, "WG_SIZE", &wg) && wg == (lanes ? lanes : 1), "WG_SIZE %d",
              (int)wg);
    int32_t pf = -1;
    cr_assert(sparcl_params_get(&used, "PREFETCH", &pf) && (prefetch < 0 || pf == prefetch),
              "PREFETCH %d", (int)pf);
    int32_t pv = 0;
    cr_assert(sparcl_params_get(&used, "PV_ROWS", &pv) && (!opt.pv_rows || pv == opt.pv_rows),
              "PV_ROWS %d", (int)pv);
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

static void check_decode_shape(const dcase *c, int force, int lanes, int vec, int prefetch)
{
    check_decode_opts(c, force, (dopts){lanes, vec, prefetch, 0, 0});
}

static void check_decode_lanes(const dcase *c, int force, int lanes, int vec)
{
    check_decode_shape(c, force, lanes, vec, -1);
}

static void check_decode(const dcase *c, int force)
{
    check_decode_shape(c, force, 0, 0, -1);
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

/* The GPU shape: WG_SIZE lanes across the head dimension, partial dot
 * products summed through local memory.  Lanes that divide the vectors
 * evenly and lanes that do not (head_dim 100 at VEC 8: 12 vectors over 8
 * lanes, and a 4-element tail on lane 0), GQA, MQA, per-head layouts, a
 * PARTIAL last tile, q_len 16. */
Test(decode, gpu_shape_lanes_match_reference)
{
    static const struct {
        dcase c;
        int lanes, vec;
    } runs[] = {
        {{1, 8, 2, 128, 2000, CAUSAL, 16}, 32, 4},   {{3, 4, 1, 100, 300, WINDOW, 8}, 8, 8},
        {{3, 8, 2, 128, 2000, PER_HEAD, 32}, 16, 4}, {{16, 4, 1, 128, 300, PER_HEAD, 4}, 4, 16},
        {{3, 8, 1, 100, 17, CAUSAL, 2}, 4, 4},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; ++i)
        check_decode_lanes(&runs[i].c, 1, runs[i].lanes, runs[i].vec);
}

/* Both settings of PREFETCH (the hints of the next tile's K and V rows,
 * on by default on CPUs) in both shapes: the CPU shape's row-by-row P.V
 * and the GPU shape's vector-by-vector one.  A case where the next tile
 * runs past the keys (a PARTIAL last tile) with head_dim 100's tail, and
 * per-head layouts over 2000 keys.  Two cases: each is four programs of
 * about 10 s of POCL compile apiece. */
Test(decode, prefetch_settings_match_reference)
{
    static const dcase runs[] = {
        {3, 8, 1, 100, 17, CAUSAL, 2},
        {3, 8, 2, 128, 2000, PER_HEAD, 32},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; ++i)
        for (int pf = 0; pf <= 1; ++pf) {
            check_decode_shape(&runs[i], 1, 0, 0, pf);
            check_decode_shape(&runs[i], 1, 4, 4, pf);
        }
}

/* PV_ROWS, the CPU shape's rows per V load: blocks that divide the
 * work-item's rows (8 of 24: GQA 8:1 x q_len 3) and a last block that is
 * short (2 over 3 rows, HEADS 1; 4 over 6 rows, HEADS 2), under a causal
 * PARTIAL tile with head_dim 100's tail and under per-head masks. */
Test(decode, pv_rows_match_reference)
{
    static const struct {
        dcase c;
        int pv_rows, heads;
    } runs[] = {
        {{3, 8, 1, 100, 17, CAUSAL, 2}, 8, 8},
        {{3, 8, 1, 100, 17, CAUSAL, 2}, 2, 1},
        {{3, 8, 2, 128, 2000, PER_HEAD, 32}, 4, 2},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; ++i)
        check_decode_opts(&runs[i].c, 1, (dopts){0, 0, -1, runs[i].pv_rows, runs[i].heads});
}

/* PV_ROWS where it cannot apply is refused, naming it: with WG_SIZE > 1
 * (the GPU shape shares each V vector among all rows already) and beyond
 * the work-item's HEADS x q_len rows. */
Test(decode, pv_rows_refused_where_it_cannot_apply)
{
    sparcl_ctx *ctx = dev_ctx();
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = 8;
    d.kv_heads = 2;
    d.q_len = 1;
    d.kv_len = 300;
    d.head_dim = 64;
    sparcl_params p;
    cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_decode", &d, &p), SPARCL_OK);
    sparcl_params_set(&p, "HEADS", 2);
    sparcl_params_set(&p, "PV_ROWS", 2);
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_decode", &d, &p), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    sparcl_params_set(&p, "PV_ROWS", 4);
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_decode", &d, &p),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "PV_ROWS 4 exceeds the HEADS 2 x q_len 1"), "%s",
              sparcl_ctx_errmsg(ctx));
    sparcl_params_set(&p, "PV_ROWS", 2);
    sparcl_params_set(&p, "WG_SIZE", 4);
    sparcl_params_set(&p, "VEC", 4);
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_decode", &d, &p),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "PV_ROWS 2 applies to WG_SIZE=1 only"), "%s",
              sparcl_ctx_errmsg(ctx));
    sparcl_ctx_free(ctx);
}

Test(decode, chosen_without_override_for_long_kv)
{
    const dcase c = {1, 8, 2, 64, 2000, CAUSAL, 0};
    check_decode(&c, 0);
}

Test(decode, backward_through_a_decoding_plan)
{
    sparcl_ctx *ctx = dev_ctx();
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

/* ---- KV caches: lengths and pages as call arguments -------------------- */

enum { CB = 3 }; /* sequences per cache test */

typedef struct cache_case {
    int q_len, q_heads, kv_heads, dim, cap, page, causal, splits;
    int lens[CB];
    int stream; /* a layout at the plan's kv_len: 1 streaming (SINK, LOCAL),
                 * 2 a window (WIN_LEFT, WIN_RIGHT); 3 and 4 the same with
                 * INT_MAX for every extent */
    int dtype;  /* storage of q, the caches and out (a sparcl_dtype) */
    int lanes;  /* > 0: WG_SIZE lanes of VEC 4 (the GPU shape) */
} cache_case;

typedef struct seq_pred {
    int q_len, kv_len, causal, stream;
} seq_pred;

static int seq_attends(const void *self, int h, int i, int j)
{
    (void)h;
    const seq_pred *p = self;
    const int pos = i + p->kv_len - p->q_len;
    return (!p->causal || j <= pos) &&
           (p->stream == 1   ? stream_at(pos, j, SINK, LOCAL)
            : p->stream == 2 ? window_at(pos, j, WIN_LEFT, WIN_RIGHT)
            : p->stream == 3 ? stream_at(pos, j, INT_MAX, INT_MAX)
            : p->stream == 4 ? window_at(pos, j, INT_MAX, INT_MAX)
                             : 1);
}

/* A cache of CB sequences (contiguous, or pages of c->page tokens in a
 * shuffled pool) and its plan. */
typedef struct cache_fixture {
    sparcl_ctx *ctx;
    sparcl_plan *plan;
    float *q, *k, *v; /* q [CB, Hq, q_len, D]; logical k, v [CB, Hkv, cap, D] */
    cl_mem dq, dk, dv, dout, dlse;
    int32_t *table;
    int pool_pages, max_pages;
} cache_fixture;

static void cache_setup(cache_fixture *f, const cache_case *c)
{
    memset(f, 0, sizeof *f);
    f->ctx = dev_ctx();
    sparcl_params params;
    sparcl_params_clear(&params);
    sparcl_params_set(&params, "SPLITS", c->splits);
    if (c->lanes) {
        sparcl_params_set(&params, "WG_SIZE", c->lanes);
        sparcl_params_set(&params, "VEC", 4);
    }
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = CB;
    d.q_heads = c->q_heads;
    d.kv_heads = c->kv_heads;
    d.q_len = c->q_len;
    d.kv_len = c->cap;
    d.head_dim = c->dim;
    d.causal = c->causal;
    d.page_size = c->page;
    d.params = &params;
    d.dtype = c->dtype;
    sparcl_layout *l = NULL;
    const int huge = c->stream > 2; /* every extent INT_MAX */
    if (c->stream == 1 || c->stream == 3)
        cr_assert_eq(sparcl_layout_init_streaming(f->ctx, &l, 1, c->q_len, c->cap, 16,
                                                  huge ? INT_MAX : SINK, huge ? INT_MAX : LOCAL),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(f->ctx));
    else if (c->stream == 2 || c->stream == 4)
        cr_assert_eq(sparcl_layout_init_window(f->ctx, &l, 1, c->q_len, c->cap, 16,
                                               huge ? INT_MAX : WIN_LEFT, huge ? INT_MAX : WIN_RIGHT),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(f->ctx));
    d.layout = l;
    cr_assert_eq(sparcl_plan_init(f->ctx, &f->plan, &d), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(f->ctx));
    sparcl_layout_free(l);
    const size_t nq = (size_t)CB * c->q_heads * c->q_len * c->dim;
    const size_t row = (size_t)c->dim, seq = (size_t)c->kv_heads * c->cap * row;
    f->q = floats(nq, 31);
    f->k = floats(CB * seq, 32);
    f->v = floats(CB * seq, 33);
    round_in_place(f->q, nq, c->dtype);
    round_in_place(f->k, CB * seq, c->dtype);
    round_in_place(f->v, CB * seq, c->dtype);
    f->dq = upload_as(f->ctx, f->q, nq, c->dtype);
    f->dout = dev_buffer(f->ctx, nq);
    f->dlse = dev_buffer(f->ctx, (size_t)CB * c->q_heads * c->q_len);
    if (!c->page) {
        f->dk = upload_as(f->ctx, f->k, CB * seq, c->dtype);
        f->dv = upload_as(f->ctx, f->v, CB * seq, c->dtype);
        return;
    }
    /* Every sequence owns pages for its whole capacity, placed at shuffled
     * pool positions, plus two pages nobody uses. */
    f->max_pages = (c->cap + c->page - 1) / c->page;
    f->pool_pages = CB * f->max_pages + 2;
    int *perm = malloc(sizeof *perm * (size_t)f->pool_pages);
    for (int i = 0; i < f->pool_pages; ++i)
        perm[i] = i;
    uint64_t s = 99;
    for (int i = f->pool_pages - 1; i > 0; --i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const int j = (int)((s >> 33) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    f->table = malloc(sizeof *f->table * (size_t)CB * (size_t)f->max_pages);
    const size_t page_floats = (size_t)c->kv_heads * c->page * row;
    float *pk = floats((size_t)f->pool_pages * page_floats, 34);
    float *pv = floats((size_t)f->pool_pages * page_floats, 35);
    for (int b = 0; b < CB; ++b)
        for (int p = 0; p < f->max_pages; ++p) {
            const int pg = perm[b * f->max_pages + p];
            f->table[b * f->max_pages + p] = pg;
            for (int h = 0; h < c->kv_heads; ++h)
                for (int r = 0; r < c->page && p * c->page + r < c->cap; ++r) {
                    const size_t from =
                        b * seq + ((size_t)h * c->cap + (size_t)(p * c->page + r)) * row;
                    const size_t to = (size_t)pg * page_floats + ((size_t)h * c->page + r) * row;
                    memcpy(pk + to, f->k + from, row * sizeof(float));
                    memcpy(pv + to, f->v + from, row * sizeof(float));
                }
        }
    f->dk = upload_as(f->ctx, pk, (size_t)f->pool_pages * page_floats, c->dtype);
    f->dv = upload_as(f->ctx, pv, (size_t)f->pool_pages * page_floats, c->dtype);
    free(pk);
    free(pv);
    free(perm);
}

static void cache_teardown(cache_fixture *f)
{
    /* Calls a test made without reading their result end here. */
    cr_assert_eq(clFinish(sparcl_ctx_cl_queue(f->ctx)), CL_SUCCESS);
    cl_mem m[5] = {f->dq, f->dk, f->dv, f->dout, f->dlse};
    for (int i = 0; i < 5; ++i)
        clReleaseMemObject(m[i]);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->table);
    sparcl_plan_free(f->plan);
    sparcl_ctx_free(f->ctx);
}

static sparcl_status cache_call(cache_fixture *f, const cache_case *c, const int32_t *lens)
{
    return sparcl_plan_forward_cache(f->plan, NULL, f->dq, f->dk, f->dv, lens, c->page, f->table,
                                     f->pool_pages, f->dout, f->dlse, 0, NULL, NULL);
}

/* One call with `lens` against the reference of each sequence's prefix. */
static void check_cache_call(cache_fixture *f, const cache_case *c, const int32_t *lens)
{
    cr_assert_eq(cache_call(f, c, lens), SPARCL_OK, "%s", sparcl_ctx_errmsg(f->ctx));
    const size_t per_q = (size_t)c->q_heads * c->q_len * c->dim;
    const size_t rows = (size_t)c->q_heads * c->q_len;
    float *o = malloc(CB * per_q * sizeof *o), *l = malloc(CB * rows * sizeof *l);
    download_as(f->ctx, f->dout, o, CB * per_q, c->dtype);
    dev_download(f->ctx, f->dlse, l, CB * rows);
    /* Half storage adds the rounding of out (|out| <= 1): half an ulp. */
    const double tol = TOL + (c->dtype == SPARCL_DTYPE_F16    ? 0x1p-12
                              : c->dtype == SPARCL_DTYPE_BF16 ? 0x1p-9
                                                              : 0.0);
    const size_t row = (size_t)c->dim, seq = (size_t)c->kv_heads * c->cap * row;
    for (int b = 0; b < CB; ++b) {
        const int n = lens[b];
        if (n == 0) { /* an empty sequence: every row attends nothing */
            for (size_t x = 0; x < per_q; ++x)
                cr_assert_eq(o[b * per_q + x], 0.0f);
            for (size_t x = 0; x < rows; ++x)
                cr_assert(isinf(l[b * rows + x]) && l[b * rows + x] < 0);
            continue;
        }
        /* The prefix of sequence b, [Hkv, n, D]. */
        float *kp = malloc((size_t)c->kv_heads * n * row * sizeof *kp);
        float *vp = malloc((size_t)c->kv_heads * n * row * sizeof *vp);
        for (int h = 0; h < c->kv_heads; ++h) {
            memcpy(kp + (size_t)h * n * row, f->k + b * seq + (size_t)h * c->cap * row,
                   (size_t)n * row * sizeof(float));
            memcpy(vp + (size_t)h * n * row, f->v + b * seq + (size_t)h * c->cap * row,
                   (size_t)n * row * sizeof(float));
        }
        double *want = malloc(per_q * sizeof *want), *want_l = malloc(rows * sizeof *want_l);
        const seq_pred sp = {c->q_len, n, c->causal, c->stream};
        oracle_attention(1, c->q_heads, c->kv_heads, c->q_len, n, c->dim,
                         1.0 / sqrt((double)c->dim), seq_attends, &sp, f->q + b * per_q, kp, vp,
                         want, want_l);
        const double eo = oracle_max_abs_diff_f(o + b * per_q, want, per_q);
        const double el = oracle_max_abs_diff_f(l + b * rows, want_l, rows);
        cr_assert_lt(eo, tol, "sequence %d of length %d (page %d, %s): out differs by %g", b, n,
                     c->page, sparcl_dtype_name(c->dtype), eo);
        cr_assert_lt(el, TOL, "sequence %d of length %d: lse differs by %g", b, n, el);
        free(kp);
        free(vp);
        free(want);
        free(want_l);
    }
    free(o);
    free(l);
}

static cache_case cache_cases[] = {
    {1, 8, 2, 64, 300, 0, 1, 8, {1, 17, 300}, 0, SPARCL_DTYPE_F32, 0},   /* contiguous, causal */
    {3, 8, 1, 100, 300, 0, 0, 4, {0, 113, 299}, 0, SPARCL_DTYPE_F32, 0}, /* an empty sequence */
    {16, 4, 1, 128, 2000, 0, 1, 32, {16, 1999, 700}, 0, SPARCL_DTYPE_F32, 0},
    {1, 8, 2, 64, 300, 16, 1, 8, {1, 17, 300}, 0, SPARCL_DTYPE_F32, 0},         /* paged: page 16 */
    {3, 4, 4, 64, 2000, 64, 1, 16, {2000, 65, 3}, 0, SPARCL_DTYPE_F32, 0},      /* page 64 */
    {1, 8, 1, 128, 2000, 256, 0, 64, {255, 257, 1500}, 0, SPARCL_DTYPE_F32, 0}, /* page 256, 8:1 */
    /* half storage: the caches, q and out in f16 / bf16 */
    {1, 8, 2, 64, 300, 16, 1, 8, {1, 17, 300}, 0, SPARCL_DTYPE_F16, 0},
    {3, 4, 1, 100, 300, 0, 0, 4, {0, 113, 299}, 0, SPARCL_DTYPE_BF16, 0},
    {2, 8, 8, 72, 300, 64, 1, 2, {64, 65, 300}, 0, SPARCL_DTYPE_BF16, 0},
    /* the GPU shape over a paged cache, in f16 */
    {1, 8, 2, 64, 300, 16, 1, 8, {1, 17, 300}, 0, SPARCL_DTYPE_F16, 16},
    /* Layouts that follow the sequence, made at the capacity and applied to
     * each length: streaming (sinks 4, local 50) and a window (40 back, 3
     * ahead, clipped to the keys; causal folds the 3 to 0), contiguous and
     * paged, lengths shorter than q_len, one tile of sinks and a window
     * far from it, several splits sharing few tiles, half storage and the
     * GPU shape.  Parameters as in the cases above, so no new program. */
    {1, 8, 2, 64, 300, 0, 0, 8, {1, 17, 299}, 1, SPARCL_DTYPE_F32, 0},
    {16, 4, 1, 128, 2000, 16, 1, 32, {16, 1999, 700}, 1, SPARCL_DTYPE_F32, 0},
    {1, 8, 1, 128, 2000, 256, 0, 64, {255, 257, 1500}, 2, SPARCL_DTYPE_F32, 0},
    {3, 4, 1, 100, 300, 0, 1, 4, {2, 113, 299}, 2, SPARCL_DTYPE_BF16, 0},
    {3, 4, 1, 100, 300, 0, 0, 4, {0, 60, 299}, 2, SPARCL_DTYPE_BF16, 0},
    {1, 8, 2, 64, 300, 16, 1, 8, {5, 17, 300}, 1, SPARCL_DTYPE_F16, 16},
    /* ... with INT_MAX sinks, window and extents: no overflow, every key */
    {1, 8, 2, 64, 300, 0, 0, 8, {0, 1, 298}, 3, SPARCL_DTYPE_F32, 0},
    {3, 4, 1, 100, 300, 0, 0, 4, {1, 3, 299}, 4, SPARCL_DTYPE_BF16, 0},
};

ParameterizedTestParameters(decode, cache_matches_reference)
{
    return cr_make_param_array(cache_case, cache_cases, sizeof cache_cases / sizeof cache_cases[0]);
}

/* Three calls of one plan with growing lengths: appending tokens needs no
 * new plan, and steps cross page boundaries. */
ParameterizedTest(cache_case *c, decode, cache_matches_reference)
{
    cache_fixture f;
    cache_setup(&f, c);
    int32_t lens[CB];
    for (int step = 0; step < 3; ++step) {
        for (int b = 0; b < CB; ++b) {
            const int n = c->lens[b] + step;
            lens[b] = n > c->cap ? c->cap : n;
        }
        check_cache_call(&f, c, lens);
    }
    cache_teardown(&f);
}

/* A plan with a layout at lengths equal to its kv_len: a paged cache
 * under a streaming layout, exact at that length. */
Test(decode, cache_with_a_layout_at_its_length)
{
    const cache_case cases2[] = {
        {1, 8, 2, 64, 300, 16, 0, 8, {300, 300, 300}, 1, SPARCL_DTYPE_F32, 0},
        {3, 4, 1, 100, 2000, 64, 0, 16, {2000, 2000, 2000}, 1, SPARCL_DTYPE_F32, 0}};
    for (int k = 0; k < 2; ++k) {
        cache_fixture f;
        cache_setup(&f, &cases2[k]);
        check_cache_call(&f, &cases2[k], cases2[k].lens);
        cache_teardown(&f);
    }
}

Test(decode, cache_refuses_bad_input)
{
    const cache_case c = {1, 4, 2, 64, 100, 16, 1, 4, {1, 1, 1}, 0, SPARCL_DTYPE_F32, 0};
    cache_fixture f;
    cache_setup(&f, &c);
    sparcl_ctx *ctx = f.ctx;
#define REFUSED(status, call, text)                                                                \
    do {                                                                                           \
        cr_assert_eq(call, status, "%s", sparcl_ctx_errmsg(ctx));                                  \
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), text), "message: %s", sparcl_ctx_errmsg(ctx));    \
    } while (0)
    int32_t lens[CB] = {5, 101, 3};
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT, cache_call(&f, &c, lens), "kv_lens[1] = 101");
    lens[1] = -1;
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT, cache_call(&f, &c, lens), "kv_lens[1] = -1");
    lens[1] = 40; /* pages 0..2 of sequence 1 */
    const int32_t saved = f.table[1 * f.max_pages + 2];
    f.table[1 * f.max_pages + 2] = f.pool_pages;
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT, cache_call(&f, &c, lens),
            "block_table[1][2] = 23 is outside the pool of 23 pages");
    f.table[1 * f.max_pages + 2] = -7;
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT, cache_call(&f, &c, lens), "= -7 is outside the pool");
    f.table[1 * f.max_pages + 2] = saved;
    /* An entry past the length is never read, so it may be anything. */
    f.table[1 * f.max_pages + 3] = 1 << 30;
    cr_assert_eq(cache_call(&f, &c, lens), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT,
            sparcl_plan_forward_cache(f.plan, NULL, f.dq, f.dk, f.dv, lens, 32, f.table,
                                      f.pool_pages, f.dout, f.dlse, 0, NULL, NULL),
            "page_size 32: the plan was made for page_size 16");
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT,
            sparcl_plan_forward_cache(f.plan, NULL, f.dq, f.dk, f.dv, lens, 16, f.table,
                                      f.pool_pages + 5, f.dout, f.dlse, 0, NULL, NULL),
            "k buffer has");
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT,
            sparcl_plan_forward_cache(f.plan, NULL, f.dq, f.dk, f.dv, lens, 16, NULL, f.pool_pages,
                                      f.dout, f.dlse, 0, NULL, NULL),
            "block_table is NULL");
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT,
            sparcl_plan_forward_cache(f.plan, NULL, f.dq, f.dk, f.dv, NULL, 16, f.table,
                                      f.pool_pages, f.dout, f.dlse, 0, NULL, NULL),
            "kv_lens is NULL");
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT,
            sparcl_plan_forward(f.plan, f.dq, f.dk, f.dv, f.dout, f.dlse, 0, NULL, NULL),
            "sparcl_plan_forward_cache");
    /* Plans that take no lengths. */
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = 32;
    d.kv_len = 100;
    d.head_dim = 64;
    sparcl_plan *fused;
    cr_assert_eq(sparcl_plan_init(ctx, &fused, &d), SPARCL_OK);
    REFUSED(SPARCL_ERR_NOT_SUPPORTED,
            sparcl_plan_forward_cache(fused, NULL, f.dq, f.dk, f.dv, lens, 0, NULL, 0, f.dout, NULL,
                                      0, NULL, NULL),
            "takes no KV cache lengths");
    sparcl_plan_free(fused);
    d.q_len = 1;
    d.page_size = 16;
    d.causal = 0;
    REFUSED(SPARCL_ERR_INVALID_ARGUMENT, (d.page_size = -1, sparcl_plan_init(ctx, &fused, &d)),
            "page_size -1");
    d.q_len = 32;
    d.page_size = 16;
    REFUSED(SPARCL_ERR_NOT_SUPPORTED, sparcl_plan_init(ctx, &fused, &d), "page_size 16");
#undef REFUSED
    cache_teardown(&f);
}

/* A layout that does not follow the sequence (here a block mask; also
 * unions and the like) is fixed at the plan's kv_len: other lengths are
 * refused, naming the length and the kinds that follow. */
Test(decode, cache_refuses_other_lengths_for_a_fixed_layout)
{
    sparcl_ctx *ctx = dev_ctx();
    sparcl_layout *l;
    uint8_t mask[19];
    for (int c = 0; c < 19; ++c)
        mask[c] = (uint8_t)(c % 2);
    cr_assert_eq(sparcl_layout_init_block_mask(ctx, &l, 1, 1, 300, 16, mask), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = 1;
    d.kv_len = 300;
    d.head_dim = 64;
    d.layout = l;
    sparcl_plan *p;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_mem q = dev_buffer(ctx, 64), kv = dev_buffer(ctx, 300 * 64), o = dev_buffer(ctx, 64);
    const int32_t lens[1] = {200};
    cr_assert_eq(
        sparcl_plan_forward_cache(p, NULL, q, kv, kv, lens, 0, NULL, 0, o, NULL, 0, NULL, NULL),
        SPARCL_ERR_NOT_SUPPORTED);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "kv_lens[0] = 200"), "%s", sparcl_ctx_errmsg(ctx));
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "streaming"), "%s", sparcl_ctx_errmsg(ctx));
    clReleaseMemObject(q);
    clReleaseMemObject(kv);
    clReleaseMemObject(o);
    sparcl_plan_free(p);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

/* Non-finite scores split across the key range: keys whose scores are -inf
 * weigh 0 next to finite ones even when a whole split holds nothing else
 * (its partial is marked, not NaN), and a row whose attended scores are
 * all -inf is NaN, as in the library's double reference. */
static void check_nonfinite(int lanes)
{
    sparcl_ctx *ctx = dev_ctx();
    enum { HQ = 4, HK = 2, KV = 300, D = 64 };
    sparcl_params params;
    sparcl_params_clear(&params);
    sparcl_params_set(&params, "SPLITS", 8);
    sparcl_params_set(&params, "BLOCK_N", 32);
    if (lanes) {
        sparcl_params_set(&params, "WG_SIZE", lanes);
        sparcl_params_set(&params, "VEC", 4);
    }
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = HQ;
    d.kv_heads = HK;
    d.q_len = 1;
    d.kv_len = KV;
    d.head_dim = D;
    d.params = &params;
    sparcl_plan *p;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nq = (size_t)HQ * D, nk = (size_t)HK * KV * D;
    float *q = floats(nq, 41), *k = floats(nk, 42), *v = floats(nk, 43);
    for (size_t x = 0; x < nq; ++x)
        q[x] = fabsf(q[x]) + 0.01f; /* positive: a -inf key element gives a -inf score */
    /* KV head 0: keys 0..99 (the first splits whole) score -inf; KV head 1:
     * every key does. */
    for (int j = 0; j < KV; ++j)
        for (int h = 0; h < HK; ++h)
            if (h == 1 || j < 100)
                k[((size_t)h * KV + (size_t)j) * D] = -INFINITY;
    float *o = malloc(nq * sizeof *o), *lse = malloc(HQ * sizeof *lse);
    cr_assert_eq(sparcl_plan_forward_host(p, q, k, v, o, lse), SPARCL_OK);
    double want[HQ * D], want_l[HQ];
    cr_assert_eq(sparcl_reference_forward(ctx, &d, q, k, v, want, want_l), SPARCL_OK);
    for (int h = 0; h < HQ; ++h) {
        const int group_of_head1 = h / (HQ / HK) == 1;
        if (group_of_head1) { /* all -inf: NaN */
            cr_assert(isnan(lse[h]) && isnan(want_l[h]), "head %d lse %g, reference %g", h,
                      (double)lse[h], want_l[h]);
            for (int x = 0; x < D; ++x)
                cr_assert(isnan(o[h * D + x]), "head %d out[%d] %g", h, x, (double)o[h * D + x]);
        } else {
            cr_assert_lt(fabs(lse[h] - want_l[h]), TOL, "head %d lse %g vs %g", h, (double)lse[h],
                         want_l[h]);
            cr_assert_lt(oracle_max_abs_diff_f(o + h * D, want + h * D, D), TOL);
        }
    }
    free(q);
    free(k);
    free(v);
    free(o);
    free(lse);
    sparcl_plan_free(p);
    sparcl_ctx_free(ctx);
}

Test(decode, nonfinite_scores_across_splits)
{
    check_nonfinite(0);
}

/* The same with 16 lanes per work-group: the lanes' sums carry -inf and
 * NaN as one work-item's scores do. */
Test(decode, nonfinite_scores_across_lanes)
{
    check_nonfinite(16);
}
