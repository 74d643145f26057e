/*
 * test_kernel_build.c -- every kernel file compiles without a warning.
 * POCL prints "N warnings generated." on the application's stderr at every
 * uncached build, so a warning in a kernel is output from the library.
 * Plans of every kind (fused softmax with its variants, the dense path,
 * sparsemax / 1.5-entmax / alpha-entmax, the backward, FAVOR+, Linformer,
 * half storage, native or staged through fp32) are built with default and explicit
 * parameters at head dims 16 and 72, under a fresh POCL cache so that the
 * compiler really runs; the library
 * reports each build, with the compiler's log, through the debug log
 * callback.  The test fails on any log containing "warning", and when a
 * .cl file of the source tree was never built (a new family must be added
 * here).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparcl.h"

#ifndef SPARCL_TEST_CL_DIR
#error "SPARCL_TEST_CL_DIR must name the kernel source directory"
#endif

typedef struct record {
    int builds;       /* "built ..." messages */
    char files[1024]; /* " name.cl" per distinct file built */
    char warning[2048];
} record;

/* NVIDIA's OpenCL compiler notes for every kernel function that it "is a
 * kernel, so overriding noinline attribute" (seen on an H200, driver 580):
 * a remark about the driver's own inlining, whatever the source says.  Any
 * other line with "warning" counts. */
static int has_warning(const char *msg)
{
    static const char vendor_note[] = "is a kernel, so overriding noinline attribute";
    for (const char *line = msg; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf - 1 ? n : sizeof buf - 1), line);
        if ((strstr(buf, "warning") || strstr(buf, "Warning")) && !strstr(buf, vendor_note))
            return 1;
        line = end ? end + 1 : NULL;
    }
    return 0;
}

static void on_log(void *user, sparcl_log_level level, const char *msg)
{
    record *r = user;
    if (level != SPARCL_LOG_DEBUG || strncmp(msg, "built ", 6) != 0)
        return;
    ++r->builds;
    /* "built FILE [FILE...] with ...": every file of the program. */
    const char *end = strstr(msg, " with ");
    char files[512];
    snprintf(files, sizeof files, "%.*s", end ? (int)(end - msg - 6) : 0, msg + 6);
    char *save = NULL;
    for (char *file = strtok_r(files, " ", &save); file; file = strtok_r(NULL, " ", &save)) {
        char key[132];
        snprintf(key, sizeof key, " %.120s ", file);
        if (!strstr(r->files, key) && strlen(r->files) + strlen(key) < sizeof r->files)
            strcat(r->files, key);
    }
    if (!r->warning[0] && has_warning(msg))
        snprintf(r->warning, sizeof r->warning, "%s", msg);
}

typedef struct variant {
    int attention, normalization, dim, backward;
    float alpha;
    const char *params; /* "NAME=V ..." or "" */
    const char *bwd_params;
} variant;

static void parse(const char *text, sparcl_params *p)
{
    sparcl_params_clear(p);
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", text);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(t, '=');
        cr_assert_not_null(eq);
        *eq = 0;
        cr_assert_eq(sparcl_params_set(p, t, atoi(eq + 1)), SPARCL_OK, "%s", t);
    }
}

Test(kernel_build, every_family_builds_without_warnings, .timeout = 900)
{
    /* A fresh POCL cache: a cached binary comes with no compiler log. */
    char dir[] = "/tmp/sparcl-kbuild-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    setenv("POCL_CACHE_DIR", dir, 1);
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    static record rec;
    sparcl_ctx_set_log(ctx, on_log, &rec);
    /* Compile every program here: a binary from the disk cache has no log. */
    cr_assert_eq(sparcl_ctx_set_program_cache(ctx, ""), SPARCL_OK);
    sparcl_layout *lay = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &lay, 1, 40, 40, 8), SPARCL_OK);

    const int EX = SPARCL_ATTENTION_EXACT, SM = SPARCL_NORMALIZATION_SOFTMAX;
    const variant vs[] = {
        {EX, SM, 16, 1, 0, "", ""},
        {EX, SM, 72, 1, 0, "KT=0 USE_LOCAL=1 BLOCK_M=8 BLOCK_N=16 WG_SIZE=4 VEC=4 EXP=0",
         "USE_LOCAL=1 BLOCK_M=8 BLOCK_N=16 WG_SIZE=4"},
        {EX, SM, 16, 0, 0, "KT=1 USE_LOCAL=1 BLOCK_M=4 BLOCK_N=8 WG_SIZE=4 VEC=1 EXP=1", ""},
        {EX, SM, 72, 0, 0, "ALGO=1", ""},
        {EX, SPARCL_NORMALIZATION_SPARSEMAX, 16, 1, 0, "", ""},
        {EX, SPARCL_NORMALIZATION_ENTMAX15, 72, 1, 0, "TOPK=4 BLOCK_M=4 BLOCK_N=8 WG_SIZE=2 VEC=4",
         "BLOCK_M=8 BLOCK_N=16 WG_SIZE=4 VEC=4"},
        {EX, SPARCL_NORMALIZATION_ENTMAX, 16, 1, 1.3f, "", "BLOCK_M=16 BLOCK_N=1 WG_SIZE=1 VEC=1"},
        {SPARCL_ATTENTION_FAVOR, SM, 16, 0, 0, "", ""},
        {SPARCL_ATTENTION_LINFORMER, SM, 72, 0, 0, "", ""},
        /* adaptive span: local tiles in the forward, then in the backward */
        {SPARCL_ATTENTION_SPAN, SM, 72, 1, 0, "USE_LOCAL=1 BLOCK_M=8 BLOCK_N=8 WG_SIZE=4 VEC=4",
         "USE_LOCAL=0 BLOCK_M=2 BLOCK_N=4 WG_SIZE=1 VEC=16"},
        {SPARCL_ATTENTION_SPAN, SM, 16, 1, 0, "",
         "USE_LOCAL=1 BLOCK_M=4 BLOCK_N=4 WG_SIZE=4 VEC=4"},
    };
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; ++i) {
        const variant *v = &vs[i];
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_len = d.kv_len = 40;
        d.head_dim = v->dim;
        d.attention = v->attention;
        d.normalization = v->normalization;
        d.alpha = v->alpha;
        d.layout = v->attention == EX ? lay : NULL;
        d.features = 16;
        d.proj_len = 8;
        d.causal = v->attention == SPARCL_ATTENTION_SPAN; /* adaptive span is causal */
        d.span_ramp = 4.0f;
        sparcl_params p, bp;
        parse(v->params, &p);
        d.params = p.count ? &p : NULL;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "variant %zu: %s", i,
                     sparcl_ctx_errmsg(ctx));
        if (v->backward) {
            parse(v->bwd_params, &bp);
            cr_assert_eq(sparcl_plan_prepare_backward(plan, bp.count ? &bp : NULL), SPARCL_OK,
                         "variant %zu: %s", i, sparcl_ctx_errmsg(ctx));
        }
        sparcl_plan_free(plan);
        cr_assert_eq(rec.warning[0], 0, "variant %zu: %s", i, rec.warning);
    }
    /* The split-KV decoding path (q_len <= 16) and its merge, with an odd
     * and a vector-wide head dimension. */
    const char *decode_sets[] = {"SPLITS=4 HEADS=1 VEC=4 BLOCK_N=16 EXP=0",
                                 "SPLITS=2 HEADS=2 VEC=16 BLOCK_N=32 EXP=2"};
    for (int i = 0; i < 2; ++i) {
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_heads = 2;
        d.q_len = 3;
        d.kv_len = 40;
        d.head_dim = i ? 64 : 72;
        d.causal = 1;
        sparcl_params p;
        parse(decode_sets[i], &p);
        d.params = &p;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "decode %d: %s", i,
                     sparcl_ctx_errmsg(ctx));
        sparcl_plan_free(plan);
        cr_assert_eq(rec.warning[0], 0, "decode %d: %s", i, rec.warning);
    }
    /* Dynamic block selection (cl/block_select.cl), with a pinned layout. */
    {
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_len = d.kv_len = 40;
        d.head_dim = 72;
        d.causal = 1;
        d.layout = lay;
        d.select = SPARCL_SELECT_TOPK;
        d.select_k = 1;
        d.select_block = 32;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "select: %s",
                     sparcl_ctx_errmsg(ctx));
        sparcl_plan_free(plan);
        cr_assert_eq(rec.warning[0], 0, "select: %s", rec.warning);
    }
    /* LSH attention (hash, sort, chunk attention), default and explicit
     * parameters, at an odd head dimension. */
    const char *lsh_sets[] = {"", "BLOCK_M=2 BLOCK_N=8 VEC=8"};
    for (int i = 0; i < 2; ++i) {
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_len = d.kv_len = 40;
        d.head_dim = 72;
        d.attention = SPARCL_ATTENTION_LSH;
        d.lsh_rounds = 2;
        d.lsh_buckets = 8;
        d.lsh_chunk = 8;
        sparcl_params p;
        parse(lsh_sets[i], &p);
        d.params = p.count ? &p : NULL;
        sparcl_plan *plan = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "lsh %d: %s", i,
                     sparcl_ctx_errmsg(ctx));
        sparcl_plan_free(plan);
        cr_assert_eq(rec.warning[0], 0, "lsh %d: %s", i, rec.warning);
    }
    /* Half storage, both types: sparsemax reads it natively (attn_entmax
     * and attn_entmax_bwd with DTYPE 1 and 2); FAVOR+ is staged through fp32
     * (cl/dtype_convert.cl); the softmax backward reads and writes it
     * (attn_bwd with DTYPE 1 and 2), with either algorithm, __local tiles
     * and a vector tail (72 = 4 x 16 + 8); adaptive span reads and writes
     * it forward and backward (attn_span with DTYPE 1 and 2), in place and
     * through __local tiles. */
    static const float spans[1] = {6.0f};
    static const char *const half_bwd[2] = {
        "ALGO=0 USE_LOCAL=1 BLOCK_M=8 BLOCK_N=16 WG_SIZE=4 VEC=4",
        "ALGO=1 BLOCK_M=4 BLOCK_N=8 SPLIT=2 VEC=16"};
    static const char *const span_sets[2] = {"", "USE_LOCAL=1 WG_SIZE=4 BLOCK_M=8 BLOCK_N=8 VEC=4"};
    enum { NATIVE, STAGED, BACKWARD0, BACKWARD1, SPAN0, SPAN1 };
    for (int dtype = SPARCL_DTYPE_F16; dtype <= SPARCL_DTYPE_BF16; ++dtype)
        for (int c = NATIVE; c <= SPAN1; ++c) {
            sparcl_plan_desc d;
            sparcl_plan_desc_init(&d);
            d.q_len = d.kv_len = 40;
            d.head_dim = c >= BACKWARD0 ? 72 : 16;
            d.layout = c == NATIVE || c == BACKWARD0 || c == BACKWARD1 ? lay : NULL;
            sparcl_params sp;
            if (c == STAGED) {
                d.attention = SPARCL_ATTENTION_FAVOR;
                d.features = 16;
            } else if (c >= SPAN0) {
                d.attention = SPARCL_ATTENTION_SPAN;
                d.causal = 1;
                d.spans = spans;
                d.span_ramp = 4.0f;
                parse(span_sets[c - SPAN0], &sp);
                d.params = sp.count ? &sp : NULL;
            } else if (c == NATIVE) {
                d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
            }
            d.dtype = dtype;
            sparcl_plan *plan = NULL;
            cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "dtype %d case %d: %s", dtype,
                         c, sparcl_ctx_errmsg(ctx));
            if (c != STAGED) { /* NATIVE: sparsemax's backward, attn_entmax_bwd */
                sparcl_params bp;
                parse(c == NATIVE      ? ""
                      : c <= BACKWARD1 ? half_bwd[c - BACKWARD0]
                                       : span_sets[c - SPAN0],
                      &bp);
                cr_assert_eq(sparcl_plan_prepare_backward(plan, bp.count ? &bp : NULL), SPARCL_OK,
                             "dtype %d case %d: %s", dtype, c, sparcl_ctx_errmsg(ctx));
            }
            sparcl_plan_free(plan);
            cr_assert_eq(rec.warning[0], 0, "dtype %d case %d: %s", dtype, c, rec.warning);
        }
    sparcl_layout_free(lay);
    sparcl_ctx_free(ctx);

    /* Every kernel file of the tree was built at least once. */
    DIR *cl = opendir(SPARCL_TEST_CL_DIR);
    cr_assert_not_null(cl, "%s", SPARCL_TEST_CL_DIR);
    int files = 0;
    for (struct dirent *e; (e = readdir(cl)) != NULL;) {
        const size_t n = strlen(e->d_name);
        if (n < 4 || strcmp(e->d_name + n - 3, ".cl") != 0)
            continue;
        char key[300];
        snprintf(key, sizeof key, " %s ", e->d_name);
        cr_expect(strstr(rec.files, key), "%s was never built (built:%s)", e->d_name, rec.files);
        ++files;
    }
    closedir(cl);
    cr_assert_geq(files, 5);
    cr_assert_geq(rec.builds, files);
}

/* The check itself can fail: a build log with a warning is caught. */
Test(kernel_build, a_warning_is_caught)
{
    record r = {0};
    on_log(&r, SPARCL_LOG_DEBUG,
           "built attn_x.cl with \"-DX=1\"; compiler log:\n<source>:3:5: warning: unused");
    cr_assert(r.warning[0]);
    cr_assert(strstr(r.files, " attn_x.cl "));
}
