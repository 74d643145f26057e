/*
 * test_half_stage.c -- half storage (F16, BF16) end to end, for the kinds
 * staged through fp32 device workspaces (the FAVOR+ and Linformer forward
 * and backward, whose products run in CLBlast's fp32 GEMM) and for those
 * whose kernels read and write half natively: the softmax's backward on
 * causal and window layouts with GQA (test_half checks it per parameter
 * set), the sparse normalizations' forward and backward, LSH's forward,
 * and adaptive span's forward and backward.
 *
 * Each case runs an fp32 plan on the half-rounded inputs (the plain fp32
 * computation) and a half plan on the stored inputs, and applies the rule
 * of test_half (half_rule.h) against the library's double references on
 * the rounded inputs: the half plan's error at most twice the fp32 plan's
 * with its output rounded to the same storage, plus a tiny floor.  Staging
 * reads the stored values exactly and rounds the fp32 kernels' results to
 * nearest even, so the half outputs must also be the fp32 plan's rounded
 * to nearest even (a truncating conversion would miss about half of them),
 * and the fp32 outputs that pass through (lse, dspans, dE, dF) equal the
 * fp32 plan's.  Then strided device tensors, the device memory a staged
 * plan holds, buffers sized for the wrong dtype, and what still refuses.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "half_rule.h"
#include "inputs.h"
#include "oracle.h"
#include "oracle_kinds.h"
#include "sparcl.h"

#define FLOOR_REL 1e-6

/* The host tensors of one case at one dtype: the inputs as floats (x),
 * rounded to the dtype (xr) and stored (xb). */
enum { T_Q, T_K, T_V, T_DOUT, T_COUNT };

typedef struct tensors {
    size_t n[T_COUNT];
    float *x[T_COUNT], *xr[T_COUNT];
    uint16_t *xb[T_COUNT];
} tensors;

static size_t q_elems(const sparcl_plan_desc *d)
{
    return (size_t)d->batch * d->q_heads * d->q_len * d->head_dim;
}

static size_t k_elems(const sparcl_plan_desc *d)
{
    return (size_t)d->batch * d->kv_heads * d->kv_len * d->head_dim;
}

static void tensors_init(tensors *t, const sparcl_plan_desc *d, int dtype, uint64_t seed)
{
    const size_t n[T_COUNT] = {q_elems(d), k_elems(d), k_elems(d), q_elems(d)};
    for (int i = 0; i < T_COUNT; ++i) {
        t->n[i] = n[i];
        t->x[i] = inputs_filled(n[i], seed + 17 * (uint64_t)i);
        t->xr[i] = malloc(n[i] * sizeof(float));
        t->xb[i] = malloc(n[i] * sizeof(uint16_t));
        cr_assert(t->x[i] && t->xr[i] && t->xb[i]);
        if (i == T_Q)
            for (size_t j = 0; j < n[i]; ++j) /* sharper rows than unit scores give */
                t->x[i][j] *= 3.0f;
        half_round(dtype, t->x[i], t->xr[i], t->xb[i], n[i]);
    }
    /* LSH shares queries and keys (it never reads k; with GQA k is smaller
     * than q and stays as drawn) */
    if (d->attention == SPARCL_ATTENTION_LSH && n[T_K] == n[T_Q]) {
        memcpy(t->xr[T_K], t->xr[T_Q], n[T_Q] * sizeof(float));
        memcpy(t->xb[T_K], t->xb[T_Q], n[T_Q] * sizeof(uint16_t));
    }
}

static void tensors_free(tensors *t)
{
    for (int i = 0; i < T_COUNT; ++i) {
        free(t->x[i]);
        free(t->xr[i]);
        free(t->xb[i]);
    }
}

static sparcl_plan *plan_at(sparcl_ctx *ctx, const sparcl_plan_desc *tmpl, int dtype)
{
    sparcl_plan_desc d = *tmpl;
    d.dtype = dtype;
    sparcl_plan *p = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s plan: %s", sparcl_dtype_name(dtype),
                 sparcl_ctx_errmsg(ctx));
    return p;
}

static double max_diff_ff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; ++i)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

/* The double reference of the forward on the rounded inputs, with the
 * half plan's random matrices for FAVOR+ and Linformer. */
static void reference_forward(sparcl_ctx *ctx, const sparcl_plan_desc *d, sparcl_plan *plan,
                              const tensors *t, double *ref)
{
    const double scale = 1.0 / sqrt((double)d->head_dim);
    if (d->attention == SPARCL_ATTENTION_FAVOR) {
        float *omega = malloc(sizeof(float) * (size_t)d->features * d->head_dim);
        cr_assert_eq(sparcl_plan_read_features(plan, omega), SPARCL_OK);
        oracle_favor(d->batch, d->q_heads, d->kv_heads, d->q_len, d->kv_len, d->head_dim, scale,
                     d->causal, d->features, omega, t->xr[T_Q], t->xr[T_K], t->xr[T_V], ref);
        free(omega);
    } else if (d->attention == SPARCL_ATTENTION_LINFORMER) {
        const size_t ne = (size_t)d->proj_len * d->kv_len;
        float *e = malloc(ne * sizeof *e), *f = malloc(ne * sizeof *f);
        cr_assert_eq(sparcl_plan_read_projections(plan, e, f), SPARCL_OK);
        oracle_linformer(d->batch, d->q_heads, d->kv_heads, d->q_len, d->kv_len, d->head_dim, scale,
                         d->proj_len, e, f, t->xr[T_Q], t->xr[T_K], t->xr[T_V], ref, NULL);
        free(e);
        free(f);
    } else {
        cr_assert_eq(
            sparcl_reference_forward(ctx, d, t->xr[T_Q], t->xr[T_K], t->xr[T_V], ref, NULL),
            SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    }
}

/* Half outputs against the fp32 plan's: the rule, then rounding to
 * nearest even of the same values. */
static void check_output(const char *what, int dtype, const uint16_t *bits, const double *ref,
                         const float *plain, size_t n)
{
    float *got = malloc(n * sizeof *got);
    half_decode(dtype, bits, got, n);
    half_rule_assert(what, dtype, got, ref, plain, n, FLOOR_REL);
    const size_t off = half_rounding_misses(dtype, bits, plain, n);
    cr_assert(off <= n / 100 + 1,
              "%s %s: %zu of %zu outputs are not the fp32 plan's rounded to nearest even", what,
              sparcl_dtype_name(dtype), off, n);
    free(got);
}

/* One case at one dtype: the forward and, with `backward`, the backward,
 * through the host calls. */
static void check_case(sparcl_ctx *ctx, const char *name, const sparcl_plan_desc *d, int dtype,
                       int backward)
{
    char what[96];
    tensors t;
    tensors_init(&t, d, dtype, 1000 + (uint64_t)d->head_dim + (uint64_t)d->q_len);
    const size_t nq = q_elems(d), nk = k_elems(d), nl = (size_t)d->batch * d->q_heads * d->q_len;
    const int has_lse = d->attention != SPARCL_ATTENTION_FAVOR;
    /* Both plans run the same kernel parameters, whatever rows a tuning
     * database holds for either dtype: then the half results are the fp32
     * ones rounded (the same sums in the same order). */
    sparcl_plan *pf = plan_at(ctx, d, SPARCL_DTYPE_F32);
    sparcl_params same;
    sparcl_plan_params(pf, &same, NULL);
    sparcl_plan_desc dh = *d;
    dh.params = &same;
    sparcl_plan *ph = plan_at(ctx, &dh, dtype);
    if (backward) {
        sparcl_params bsame;
        /* adaptive span's backward is its forward's family: its parameters */
        const sparcl_params *bp = d->attention == SPARCL_ATTENTION_SPAN ? d->params : NULL;
        cr_assert_eq(sparcl_plan_prepare_backward(pf, bp), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_plan_backward_params(pf, &bsame, NULL), SPARCL_OK);
        cr_assert_eq(sparcl_plan_prepare_backward(ph, &bsame), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
    }

    /* forward */
    float *o32 = malloc(nq * 4), *l32 = malloc(nl * 4), *lh = malloc(nl * 4), *oh = malloc(nq * 4);
    uint16_t *ob = malloc(nq * 2);
    double *ref = malloc(nq * sizeof *ref);
    cr_assert_eq(
        sparcl_plan_forward_host(pf, t.xr[T_Q], t.xr[T_K], t.xr[T_V], o32, has_lse ? l32 : NULL),
        SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(
        sparcl_plan_forward_host(ph, t.xb[T_Q], t.xb[T_K], t.xb[T_V], ob, has_lse ? lh : NULL),
        SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    reference_forward(ctx, d, ph, &t, ref);
    snprintf(what, sizeof what, "%s out", name);
    check_output(what, dtype, ob, ref, o32, nq);
    if (has_lse)
        cr_assert(max_diff_ff(lh, l32, nl) <= 1e-5, "%s %s: lse differs from the fp32 plan's by %g",
                  name, sparcl_dtype_name(dtype), max_diff_ff(lh, l32, nl));
    half_decode(dtype, ob, oh, nq);

    if (backward) {
        /* Both plans take the half plan's out and lse (the fp32 one as
         * floats), so they differentiate the same forward. */
        const int span = d->attention == SPARCL_ATTENTION_SPAN;
        const int lin = d->attention == SPARCL_ATTENTION_LINFORMER;
        const size_t n[3] = {nq, nk, nk}, ne = lin ? (size_t)d->proj_len * d->kv_len : 1;
        float *g32[3], *gh[3];
        uint16_t *gb[3];
        double *gref[3];
        for (int i = 0; i < 3; ++i) {
            g32[i] = malloc(n[i] * 4);
            gh[i] = malloc(n[i] * 4);
            gb[i] = malloc(n[i] * 2);
            gref[i] = malloc(n[i] * sizeof(double));
        }
        float *pe32 = malloc(2 * ne * 4), *peh = malloc(2 * ne * 4);
        float *z32 = malloc((size_t)d->q_heads * 4), *zh = malloc((size_t)d->q_heads * 4);
        const float *lse = has_lse ? lh : NULL;
        sparcl_status s32, sh;
        if (span) {
            s32 = sparcl_plan_backward_span_host(pf, t.xr[T_Q], t.xr[T_K], t.xr[T_V], oh, lse,
                                                 t.xr[T_DOUT], g32[0], g32[1], g32[2], z32);
            sh = sparcl_plan_backward_span_host(ph, t.xb[T_Q], t.xb[T_K], t.xb[T_V], ob, lse,
                                                t.xb[T_DOUT], gb[0], gb[1], gb[2], zh);
        } else {
            s32 = sparcl_plan_backward_proj_host(pf, t.xr[T_Q], t.xr[T_K], t.xr[T_V], oh, lse,
                                                 t.xr[T_DOUT], g32[0], g32[1], g32[2],
                                                 lin ? pe32 : NULL, lin ? pe32 + ne : NULL);
            sh = sparcl_plan_backward_proj_host(ph, t.xb[T_Q], t.xb[T_K], t.xb[T_V], ob, lse,
                                                t.xb[T_DOUT], gb[0], gb[1], gb[2], lin ? peh : NULL,
                                                lin ? peh + ne : NULL);
        }
        cr_assert_eq(s32, SPARCL_OK, "%s fp32 backward: %s", name, sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sh, SPARCL_OK, "%s %s backward: %s", name, sparcl_dtype_name(dtype),
                     sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_reference_backward(ctx, d, t.xr[T_Q], t.xr[T_K], t.xr[T_V],
                                               t.xr[T_DOUT], gref[0], gref[1], gref[2]),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        static const char *gname[3] = {"dq", "dk", "dv"};
        for (int i = 0; i < 3; ++i) {
            snprintf(what, sizeof what, "%s %s", name, gname[i]);
            check_output(what, dtype, gb[i], gref[i], g32[i], n[i]);
        }
        /* The kinds' own gradients are fp32 and pass through. */
        if (span)
            cr_assert(max_diff_ff(zh, z32, (size_t)d->q_heads) <= 1e-5 * (1 + fabs(z32[0])),
                      "%s: dspans differ from the fp32 plan's", name);
        if (lin)
            cr_assert(max_diff_ff(peh, pe32, 2 * ne) <= 1e-5, "%s: dE/dF differ by %g", name,
                      max_diff_ff(peh, pe32, 2 * ne));
        for (int i = 0; i < 3; ++i) {
            free(g32[i]);
            free(gh[i]);
            free(gb[i]);
            free(gref[i]);
        }
        free(pe32), free(peh), free(z32), free(zh);
    }
    sparcl_plan_free(pf);
    sparcl_plan_free(ph);
    free(o32), free(l32), free(lh), free(oh), free(ob), free(ref);
    tensors_free(&t);
}

/* Runs a case at F16 and BF16. */
static void check_both(sparcl_ctx *ctx, const char *name, const sparcl_plan_desc *d, int backward)
{
    check_case(ctx, name, d, SPARCL_DTYPE_F16, backward);
    check_case(ctx, name, d, SPARCL_DTYPE_BF16, backward);
}

/* Query i attends to keys within 6 of its position (bottom-right). */
static int window_pred(void *user, int h, int i, int j)
{
    (void)h;
    const sparcl_plan_desc *d = user;
    return abs(i + d->kv_len - d->q_len - j) <= 6;
}

static sparcl_layout *window(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
    sparcl_layout *l = NULL;
    cr_assert_eq(
        sparcl_layout_init_predicate(ctx, &l, 1, d->q_len, d->kv_len, 16, window_pred, (void *)d),
        SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    return l;
}

Test(half_stage, sparse_normalizations_forward_and_backward, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 1, 17, 113, 72); /* sparsemax over a window, GQA */
    d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    sparcl_layout *l = window(ctx, &d);
    d.layout = l;
    check_both(ctx, "sparsemax window", &d, 1);
    sparcl_layout_free(l);
    inputs_desc(&d, 1, 2, 2, 113, 17, 100); /* alpha-entmax, causal */
    d.normalization = SPARCL_NORMALIZATION_ENTMAX;
    d.alpha = 1.5f;
    d.causal = 1;
    check_both(ctx, "entmax causal", &d, 1);
    sparcl_ctx_free(ctx);
}

Test(half_stage, favor_forward_and_backward, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 1, 17, 17, 72);
    d.attention = SPARCL_ATTENTION_FAVOR;
    d.features = 16;
    d.causal = 1;
    d.seed = 7;
    check_both(ctx, "FAVOR+ causal", &d, 1);
    inputs_desc(&d, 1, 1, 1, 1, 113, 100);
    d.attention = SPARCL_ATTENTION_FAVOR;
    d.features = 16;
    d.seed = 8;
    check_both(ctx, "FAVOR+ q_len 1", &d, 1);
    sparcl_ctx_free(ctx);
}

Test(half_stage, linformer_forward_and_backward, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 1, 17, 113, 100);
    d.attention = SPARCL_ATTENTION_LINFORMER;
    d.proj_len = 8;
    d.seed = 9;
    check_both(ctx, "Linformer", &d, 1);
    sparcl_ctx_free(ctx);
}

Test(half_stage, adaptive_span_forward_and_backward_read_half_natively, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 1, 17, 113, 72);
    static const float spans[2] = {3.5f, 40.0f};
    d.attention = SPARCL_ATTENTION_SPAN;
    d.causal = 1;
    d.spans = spans;
    d.span_ramp = 8.0f;
    check_both(ctx, "adaptive span", &d, 1);
    /* attn_span reads and writes the dtype itself, forward and backward:
     * through __local tiles too, and with no staging workspace (a half
     * plan holds exactly the fp32 plan's device bytes). */
    sparcl_params local;
    sparcl_params_clear(&local);
    cr_assert_eq(sparcl_params_set(&local, "USE_LOCAL", 1), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&local, "WG_SIZE", 4), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&local, "BLOCK_M", 8), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&local, "BLOCK_N", 8), SPARCL_OK);
    d.params = &local;
    check_both(ctx, "adaptive span, local tiles", &d, 1);
    for (int dtype = SPARCL_DTYPE_F16; dtype <= SPARCL_DTYPE_BF16; ++dtype) {
        sparcl_plan *ph = plan_at(ctx, &d, dtype), *pf = plan_at(ctx, &d, SPARCL_DTYPE_F32);
        cr_assert_eq(sparcl_plan_device_bytes(ph), sparcl_plan_device_bytes(pf), "%s",
                     sparcl_dtype_name(dtype));
        cr_assert_eq(sparcl_plan_prepare_backward(ph, &local), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_plan_prepare_backward(pf, &local), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_plan_device_bytes(ph), sparcl_plan_device_bytes(pf),
                     "%s: the backward stages (%zu vs %zu bytes)", sparcl_dtype_name(dtype),
                     sparcl_plan_device_bytes(ph), sparcl_plan_device_bytes(pf));
        sparcl_plan_free(ph);
        sparcl_plan_free(pf);
    }
    sparcl_ctx_free(ctx);
}

/* LSH: the forward, and sparcl_plan_lsh_order() reading a half q. */
Test(half_stage, lsh_forward_and_order, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 2, 113, 113, 72);
    d.attention = SPARCL_ATTENTION_LSH;
    d.lsh_rounds = 2;
    d.lsh_buckets = 4;
    d.lsh_chunk = 16;
    d.seed = 11;
    check_both(ctx, "LSH", &d, 0);
    for (int dtype = SPARCL_DTYPE_F16; dtype <= SPARCL_DTYPE_BF16; ++dtype) {
        tensors t;
        tensors_init(&t, &d, dtype, 77);
        sparcl_plan *ph = plan_at(ctx, &d, dtype);
        const size_t n = (size_t)d.q_heads * d.lsh_rounds * d.q_len;
        int32_t *got = malloc(n * 4), *want = malloc(n * 4);
        cl_int err;
        cl_mem q =
            clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                           t.n[T_Q] * 2, t.xb[T_Q], &err);
        cr_assert_not_null(q);
        cr_assert_eq(sparcl_plan_lsh_order(ph, NULL, q, got, NULL), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_reference_lsh_order(ctx, &d, t.xr[T_Q], want, NULL), SPARCL_OK);
        size_t off = 0;
        for (size_t i = 0; i < n; ++i)
            off += got[i] != want[i];
        /* Buckets are argmaxes: a near tie may go either way in fp32. */
        cr_assert(off <= n / 100 + 1, "%s: %zu of %zu buckets differ from the reference's",
                  sparcl_dtype_name(dtype), off, n);
        clReleaseMemObject(q);
        free(got), free(want);
        sparcl_plan_free(ph);
        tensors_free(&t);
    }
    sparcl_ctx_free(ctx);
}

/* LSH reads q and v in the plan's dtype (its hash, gather and chunk
 * kernels, built with DTYPE) and its merge rounds the output: a half plan
 * holds exactly the fp32 plan's device memory, no staging, and its forward
 * is the fp32 plan's on the rounded inputs, rounded (check_both above). */
Test(half_stage, lsh_forward_holds_no_staging, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 2, 4, 2, 113, 113, 100);
    d.attention = SPARCL_ATTENTION_LSH;
    d.lsh_rounds = 3;
    d.lsh_buckets = 8;
    d.lsh_chunk = 17;
    d.seed = 5;
    d.causal = 1;
    for (int dtype = SPARCL_DTYPE_F16; dtype <= SPARCL_DTYPE_BF16; ++dtype) {
        sparcl_plan *ph = plan_at(ctx, &d, dtype);
        sparcl_params same; /* whatever rows a tuning database holds */
        sparcl_plan_params(ph, &same, NULL);
        sparcl_plan_desc f = d;
        f.params = &same;
        sparcl_plan *pf = plan_at(ctx, &f, SPARCL_DTYPE_F32);
        cr_assert_eq(sparcl_plan_device_bytes(ph), sparcl_plan_device_bytes(pf),
                     "%s: an LSH plan holds %zu bytes, its fp32 twin %zu", sparcl_dtype_name(dtype),
                     sparcl_plan_device_bytes(ph), sparcl_plan_device_bytes(pf));
        sparcl_plan_free(ph);
        sparcl_plan_free(pf);
    }
    check_both(ctx, "LSH causal GQA", &d, 0);
    sparcl_ctx_free(ctx);
}

/* The softmax's forward and backward read and write half natively, at
 * the plans' own parameters; the same checks as the staged kinds. */
Test(half_stage, softmax_backward_causal_and_window_with_gqa, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 4, 2, 113, 113, 100);
    d.causal = 1;
    check_both(ctx, "softmax causal", &d, 1);
    inputs_desc(&d, 2, 4, 2, 17, 113, 72);
    sparcl_layout *l = window(ctx, &d);
    d.layout = l;
    check_both(ctx, "softmax window", &d, 1);
    sparcl_layout_free(l);
    inputs_desc(&d, 1, 2, 1, 1, 17, 72);
    l = window(ctx, &d);
    d.layout = l;
    check_both(ctx, "softmax window q_len 1", &d, 1);
    sparcl_layout_free(l);
    sparcl_ctx_free(ctx);
}

/* Every kernel that reads or writes half storage itself, on shapes small
 * enough for the oclgrind simulator (tests/CMakeLists.txt runs this test
 * there, at both dtypes): the softmax forward and backward over a window
 * (attn_fwd, attn_bwd with GQA), the split-KV decoding kernel and its
 * merge, sparsemax forward and backward, adaptive span forward and
 * backward through __local tiles, and LSH's forward. */
Test(half_stage, small_shapes_of_every_native_family, .timeout = 600)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 1, 9, 11, 12);
    sparcl_layout *l = window(ctx, &d);
    d.layout = l;
    check_both(ctx, "small softmax window", &d, 1);
    d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    check_both(ctx, "small sparsemax window", &d, 1);
    sparcl_layout_free(l);

    sparcl_params p;
    sparcl_params_clear(&p);
    inputs_desc(&d, 1, 4, 2, 2, 40, 12); /* decoding: two query rows, two splits */
    cr_assert_eq(sparcl_params_set(&p, "SPLITS", 2), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&p, "BLOCK_N", 8), SPARCL_OK);
    d.params = &p;
    d.causal = 1;
    check_both(ctx, "small decoding", &d, 1);

    static const float spans[2] = {2.5f, 6.0f};
    inputs_desc(&d, 1, 2, 1, 9, 11, 12);
    d.attention = SPARCL_ATTENTION_SPAN;
    d.causal = 1;
    d.spans = spans;
    d.span_ramp = 2.0f;
    sparcl_params_clear(&p);
    cr_assert_eq(sparcl_params_set(&p, "USE_LOCAL", 1), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&p, "WG_SIZE", 2), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&p, "BLOCK_M", 4), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&p, "BLOCK_N", 4), SPARCL_OK);
    d.params = &p;
    check_both(ctx, "small adaptive span", &d, 1);

    inputs_desc(&d, 1, 2, 2, 13, 13, 12);
    d.attention = SPARCL_ATTENTION_LSH;
    d.lsh_rounds = 2;
    d.lsh_buckets = 4;
    d.lsh_chunk = 4;
    d.seed = 2;
    check_both(ctx, "small LSH", &d, 0);
    sparcl_ctx_free(ctx);
}

/* ---- device calls -------------------------------------------------------- */

/* The staged problem of the device tests: Linformer with GQA (its
 * projections run in CLBlast's fp32 GEMM, so it stages half storage). */
static sparcl_plan_desc staged_desc(void)
{
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 1, 17, 113, 72);
    d.attention = SPARCL_ATTENTION_LINFORMER;
    d.proj_len = 8;
    d.seed = 3;
    return d;
}

static cl_mem upload(sparcl_ctx *ctx, const void *x, size_t bytes)
{
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              bytes, (void *)x, &err);
    cr_assert_not_null(m, "clCreateBuffer: %d", err);
    return m;
}

static cl_mem blank(sparcl_ctx *ctx, size_t bytes)
{
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &err);
    cr_assert_not_null(m, "clCreateBuffer: %d", err);
    return m;
}

static void download(sparcl_ctx *ctx, cl_mem m, void *x, size_t bytes)
{
    cr_assert_eq(
        clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m, CL_TRUE, 0, bytes, x, 0, NULL, NULL),
        CL_SUCCESS);
}

/* The softmax's ALGO=1 with SPLIT 1 adds an fp32 dQ into dq in place; a dq
 * created CL_MEM_WRITE_ONLY (which kernels must not read) gets a partial
 * buffer instead, and the same gradients as the host call's read-write
 * buffers.  Small, for the oclgrind run, which reports any read of a
 * write-only buffer. */
Test(half_stage, small_shapes_write_only_dq, .timeout = 600)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    inputs_desc(&d, 1, 2, 1, 9, 11, 12);
    d.causal = 1;
    sparcl_plan *p = plan_at(ctx, &d, SPARCL_DTYPE_F32);
    sparcl_params bp;
    sparcl_params_clear(&bp);
    cr_assert_eq(sparcl_params_set(&bp, "ALGO", 1), SPARCL_OK);
    cr_assert_eq(sparcl_params_set(&bp, "SPLIT", 1), SPARCL_OK);
    cr_assert_eq(sparcl_plan_prepare_backward(p, &bp), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t nq = q_elems(&d), nk = k_elems(&d), nl = (size_t)d.q_heads * d.q_len;
    float *x[T_COUNT];
    for (int i = 0; i < T_COUNT; ++i)
        x[i] = inputs_filled(i == T_K || i == T_V ? nk : nq, 40 + (uint64_t)i);
    float *o = malloc(nq * 4), *l = malloc(nl * 4), *want[3], *got = malloc(nq * 4);
    const size_t n[3] = {nq, nk, nk};
    for (int i = 0; i < 3; ++i)
        want[i] = malloc(n[i] * 4);
    cr_assert_eq(sparcl_plan_forward_host(p, x[T_Q], x[T_K], x[T_V], o, l), SPARCL_OK);
    cr_assert_eq(sparcl_plan_backward_host(p, x[T_Q], x[T_K], x[T_V], o, l, x[T_DOUT], want[0],
                                           want[1], want[2]),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_mem q = upload(ctx, x[T_Q], nq * 4), k = upload(ctx, x[T_K], nk * 4);
    cl_mem v = upload(ctx, x[T_V], nk * 4), dout = upload(ctx, x[T_DOUT], nq * 4);
    cl_mem out = upload(ctx, o, nq * 4), lse = upload(ctx, l, nl * 4);
    cl_int err;
    cl_mem dq = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_WRITE_ONLY, nq * 4, NULL, &err);
    cr_assert_not_null(dq);
    cl_mem dk = blank(ctx, nk * 4), dv = blank(ctx, nk * 4);
    cl_event done;
    cr_assert_eq(sparcl_plan_backward(p, q, k, v, out, lse, dout, dq, dk, dv, 0, NULL, &done),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
    const cl_mem g[3] = {dq, dk, dv};
    for (int i = 0; i < 3; ++i) {
        download(ctx, g[i], got, n[i] * 4);
        for (size_t e = 0; e < n[i]; ++e)
            cr_assert(got[e] == want[i][e], "gradient %d element %zu: %g, host call %g", i, e,
                      (double)got[e], (double)want[i][e]);
    }
    cl_mem all[9] = {q, k, v, dout, out, lse, dq, dk, dv};
    for (int i = 0; i < 9; ++i)
        clReleaseMemObject(all[i]);
    for (int i = 0; i < T_COUNT; ++i)
        free(x[i]);
    for (int i = 0; i < 3; ++i)
        free(want[i]);
    free(o), free(l), free(got);
    sparcl_plan_free(p);
    sparcl_ctx_free(ctx);
}

/* [B, H, S, D] <-> [B, S, H, D] of 2-byte elements. */
static void permute(const uint16_t *src, uint16_t *dst, int b, int h, int s, int dim, int to_bshd)
{
    for (int x = 0; x < b; ++x)
        for (int y = 0; y < h; ++y)
            for (int i = 0; i < s; ++i) {
                const size_t bhsd = (((size_t)x * h + y) * s + i) * dim;
                const size_t bshd = (((size_t)x * s + i) * h + y) * dim;
                memcpy(dst + (to_bshd ? bshd : bhsd), src + (to_bshd ? bhsd : bshd),
                       (size_t)dim * 2);
            }
}

static sparcl_strides bshd(int h, int s, int dim)
{
    const sparcl_strides st = {(int64_t)s * h * dim, dim, (int64_t)h * dim};
    return st;
}

/* A staged plan over [B, S, H, D] device tensors gives the contiguous host
 * calls' results element for element (the conversions follow the caller's
 * strides both ways), and two staged calls on two queues, not waited for
 * in between, do not share their workspaces' contents. */
Test(half_stage, strided_device_tensors_and_calls_on_two_queues, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d = staged_desc();
    d.dtype = SPARCL_DTYPE_F16;
    sparcl_plan *pc = plan_at(ctx, &d, SPARCL_DTYPE_F16);
    d.q_strides = d.o_strides = bshd(d.q_heads, d.q_len, d.head_dim);
    d.k_strides = d.v_strides = bshd(d.kv_heads, d.kv_len, d.head_dim);
    sparcl_plan *ps = plan_at(ctx, &d, SPARCL_DTYPE_F16);
    const size_t nq = q_elems(&d), nk = k_elems(&d), nl = (size_t)d.q_heads * d.q_len;
    tensors t[2];
    uint16_t *want_o[2], *perm[T_COUNT][2];
    float *want_l[2];
    for (int c = 0; c < 2; ++c) {
        tensors_init(&t[c], &d, SPARCL_DTYPE_F16, 500 + 100 * (uint64_t)c);
        want_o[c] = malloc(nq * 2);
        want_l[c] = malloc(nl * 4);
        cr_assert_eq(sparcl_plan_forward_host(pc, t[c].xb[T_Q], t[c].xb[T_K], t[c].xb[T_V],
                                              want_o[c], want_l[c]),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        for (int i = 0; i < T_COUNT; ++i) {
            const int qs = i == T_Q || i == T_DOUT;
            perm[i][c] = malloc(t[c].n[i] * 2);
            permute(t[c].xb[i], perm[i][c], 1, qs ? d.q_heads : d.kv_heads, qs ? d.q_len : d.kv_len,
                    d.head_dim, 1);
        }
    }
    cl_int err;
    cl_command_queue qb =
        clCreateCommandQueue(sparcl_ctx_cl_context(ctx), sparcl_ctx_cl_device(ctx), 0, &err);
    cr_assert_not_null(qb);
    cl_command_queue queues[2] = {sparcl_ctx_cl_queue(ctx), qb};
    cl_mem m[2][T_COUNT], out[2], lse[2];
    cl_event ev[2];
    for (int c = 0; c < 2; ++c) {
        for (int i = 0; i < T_COUNT; ++i)
            m[c][i] = upload(ctx, perm[i][c], t[c].n[i] * 2);
        out[c] = blank(ctx, nq * 2);
        lse[c] = blank(ctx, nl * 4);
        cr_assert_eq(sparcl_plan_forward_on_queue(ps, queues[c], m[c][T_Q], m[c][T_K], m[c][T_V],
                                                  out[c], lse[c], 0, NULL, &ev[c]),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    }
    cr_assert_eq(clWaitForEvents(2, ev), CL_SUCCESS);
    uint16_t *got = malloc(nk * 2), *back = malloc(nk * 2);
    float *gl = malloc(nl * 4);
    for (int c = 0; c < 2; ++c) {
        clReleaseEvent(ev[c]);
        download(ctx, out[c], got, nq * 2);
        permute(got, back, 1, d.q_heads, d.q_len, d.head_dim, 0);
        cr_assert(memcmp(back, want_o[c], nq * 2) == 0, "call %d: out differs", c);
        download(ctx, lse[c], gl, nl * 4);
        cr_assert(memcmp(gl, want_l[c], nl * 4) == 0, "call %d: lse differs", c);
    }
    /* The backward of call 0 over the same strides. */
    uint16_t *wg[3];
    const size_t n[3] = {nq, nk, nk};
    for (int i = 0; i < 3; ++i)
        wg[i] = malloc(n[i] * 2);
    cr_assert_eq(sparcl_plan_backward_host(pc, t[0].xb[T_Q], t[0].xb[T_K], t[0].xb[T_V], want_o[0],
                                           want_l[0], t[0].xb[T_DOUT], wg[0], wg[1], wg[2]),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_mem g[3] = {blank(ctx, nq * 2), blank(ctx, nk * 2), blank(ctx, nk * 2)};
    cl_event done;
    cr_assert_eq(sparcl_plan_backward(ps, m[0][T_Q], m[0][T_K], m[0][T_V], out[0], lse[0],
                                      m[0][T_DOUT], g[0], g[1], g[2], 0, NULL, &done),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
    for (int i = 0; i < 3; ++i) {
        download(ctx, g[i], got, n[i] * 2);
        permute(got, back, 1, i == 0 ? d.q_heads : d.kv_heads, i == 0 ? d.q_len : d.kv_len,
                d.head_dim, 0);
        cr_assert(memcmp(back, wg[i], n[i] * 2) == 0, "gradient %d differs", i);
        clReleaseMemObject(g[i]);
        free(wg[i]);
    }
    for (int c = 0; c < 2; ++c) {
        for (int i = 0; i < T_COUNT; ++i) {
            clReleaseMemObject(m[c][i]);
            free(perm[i][c]);
        }
        clReleaseMemObject(out[c]);
        clReleaseMemObject(lse[c]);
        free(want_o[c]), free(want_l[c]);
        tensors_free(&t[c]);
    }
    free(got), free(back), free(gl);
    clReleaseCommandQueue(qb);
    sparcl_plan_free(pc);
    sparcl_plan_free(ps);
    sparcl_ctx_free(ctx);
}

/* A staged forward holds 4 bytes per element of q, k, v and out; a
 * backward 4 more per element of q, k, v, out, dout and the gradients
 * (dout, dq, dk, dv); the device-memory limit counts them. */
Test(half_stage, workspaces_count_in_device_bytes_and_limit, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d = staged_desc();
    const size_t nq = q_elems(&d), nk = k_elems(&d);
    sparcl_plan *pf = plan_at(ctx, &d, SPARCL_DTYPE_F32), *ph = plan_at(ctx, &d, SPARCL_DTYPE_BF16);
    const size_t f0 = sparcl_plan_device_bytes(pf), h0 = sparcl_plan_device_bytes(ph);
    cr_assert_eq(h0 - f0, 4 * (2 * nq + 2 * nk), "forward staging: %zu vs %zu", h0, f0);
    cr_assert_eq(sparcl_plan_prepare_backward(pf, NULL), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_prepare_backward(ph, NULL), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t f1 = sparcl_plan_device_bytes(pf), h1 = sparcl_plan_device_bytes(ph);
    cr_assert_eq(h1 - f1, 4 * (4 * nq + 4 * nk), "backward staging: %zu vs %zu", h1, f1);
    /* The limit: exactly the plan's bytes pass, one byte less fails and
     * names the staging. */
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, h0), SPARCL_OK);
    sparcl_plan *again = plan_at(ctx, &d, SPARCL_DTYPE_BF16);
    sparcl_plan_free(again);
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, h0 - 1), SPARCL_OK);
    d.dtype = SPARCL_DTYPE_BF16;
    again = (sparcl_plan *)1;
    cr_assert_eq(sparcl_plan_init(ctx, &again, &d), SPARCL_ERR_OUT_OF_MEMORY);
    cr_assert_null(again);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "fp32 staging"), "%s", sparcl_ctx_errmsg(ctx));
    /* Softmax and sparsemax over a window read half natively, forward and
     * backward: no staging workspace in either. */
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, 0), SPARCL_OK);
    static const int norms[2] = {SPARCL_NORMALIZATION_SOFTMAX, SPARCL_NORMALIZATION_SPARSEMAX};
    for (int n = 0; n < 2; ++n) {
        sparcl_plan_desc w;
        inputs_desc(&w, 1, 2, 1, 17, 113, 72);
        w.normalization = norms[n];
        sparcl_layout *l = window(ctx, &w);
        w.layout = l;
        sparcl_plan *sh = plan_at(ctx, &w, SPARCL_DTYPE_BF16);
        const size_t s0 = sparcl_plan_device_bytes(sh);
        cr_assert_eq(sparcl_plan_prepare_backward(sh, NULL), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        /* the same kernel parameters (and so tiles), whatever rows a
         * tuning database holds for either dtype */
        sparcl_params same;
        sparcl_plan_params(sh, &same, NULL);
        w.params = &same;
        sparcl_plan *sf = plan_at(ctx, &w, SPARCL_DTYPE_F32);
        const size_t sf0 = sparcl_plan_device_bytes(sf);
        cr_assert_eq(s0, sf0, "normalization %d: a native half forward holds no workspace",
                     norms[n]);
        sparcl_params bsame;
        cr_assert_eq(sparcl_plan_backward_params(sh, &bsame, NULL), SPARCL_OK);
        cr_assert_eq(sparcl_plan_prepare_backward(sf, &bsame), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx));
        cr_assert_eq((sparcl_plan_device_bytes(sh) - s0) - (sparcl_plan_device_bytes(sf) - sf0), 0,
                     "normalization %d: %zu -> %zu bytes at bf16, %zu -> %zu at fp32", norms[n], s0,
                     sparcl_plan_device_bytes(sh), sf0, sparcl_plan_device_bytes(sf));
        sparcl_plan_free(sh);
        sparcl_plan_free(sf);
        sparcl_layout_free(l);
    }
    sparcl_plan_free(pf);
    sparcl_plan_free(ph);
    sparcl_ctx_free(ctx);
}

/* Device buffers are sized in the plan's dtype, lse in floats: buffers
 * that hold the shape in halves serve a half plan's staged forward and
 * backward and are too small for an fp32 plan; one element short is too
 * small for the half plan.  (The host calls take pointers without sizes:
 * nothing to check there.) */
Test(half_stage, buffers_sized_for_the_wrong_dtype_are_refused, .timeout = 300)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d = staged_desc();
    const size_t nq = q_elems(&d), nk = k_elems(&d), nl = (size_t)d.q_heads * d.q_len;
    sparcl_plan *pf = plan_at(ctx, &d, SPARCL_DTYPE_F32), *ph = plan_at(ctx, &d, SPARCL_DTYPE_F16);
    tensors t;
    tensors_init(&t, &d, SPARCL_DTYPE_F16, 31);
    cl_mem q = upload(ctx, t.xb[T_Q], nq * 2), k = upload(ctx, t.xb[T_K], nk * 2);
    cl_mem v = upload(ctx, t.xb[T_V], nk * 2), dout = upload(ctx, t.xb[T_DOUT], nq * 2);
    cl_mem out = blank(ctx, nq * 2), lse = blank(ctx, nl * 4), lse_half = blank(ctx, nl * 2);
    cl_mem dq = blank(ctx, nq * 2), dk = blank(ctx, nk * 2), dv = blank(ctx, nk * 2);
    cl_mem short_dk = blank(ctx, nk * 2 - 2);
    cr_assert_eq(sparcl_plan_forward(ph, q, k, v, out, lse, 0, NULL, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_forward(pf, q, k, v, out, lse, 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "4 bytes"), "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_backward(ph, q, k, v, out, lse, dout, dq, dk, dv, 0, NULL, NULL),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_backward(pf, q, k, v, out, lse, dout, dq, dk, dv, 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "4 bytes"), "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_backward(ph, q, k, v, out, lse, dout, dq, short_dk, dv, 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "dk buffer"), "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_backward(ph, q, k, v, out, lse_half, dout, dq, dk, dv, 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "lse"), "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(clFinish(sparcl_ctx_cl_queue(ctx)), CL_SUCCESS);
    const cl_mem all[11] = {q, k, v, dout, out, lse, lse_half, dq, dk, dv, short_dk};
    for (int i = 0; i < 11; ++i)
        clReleaseMemObject(all[i]);
    tensors_free(&t);
    sparcl_plan_free(pf);
    sparcl_plan_free(ph);
    sparcl_ctx_free(ctx);
}
