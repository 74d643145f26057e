/*
 * test_abi.c -- the versioned ABI: version calls agree with the header's
 * macros; a struct initialised as an older application would (a smaller
 * struct_size, fields beyond it holding junk) is read only as far as its
 * size and still works; a struct_size of 0 or garbage is refused with a
 * message that names the type.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "sparcl.h"

Test(abi, version_matches_the_header)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SPARCL_VERSION_MAJOR, SPARCL_VERSION_MINOR,
             SPARCL_VERSION_PATCH);
    cr_assert_str_eq(sparcl_version(), want);
    cr_assert_str_eq(SPARCL_VERSION_STRING, want);
    cr_assert_eq(sparcl_version_number(), SPARCL_VERSION_NUMBER);
    cr_assert_eq(SPARCL_VERSION_NUMBER, SPARCL_VERSION_MAJOR * 1000000 +
                                            SPARCL_VERSION_MINOR * 1000 + SPARCL_VERSION_PATCH);
}

static int dense(const void *self, int h, int i, int j)
{
    (void)self, (void)h, (void)i, (void)j;
    return 1;
}

/* An application built before normalization, alpha, attention, features,
 * proj_len, seed and the projections were added. */
#define OLD_SIZE offsetof(sparcl_plan_desc, normalization)

Test(abi, older_plan_desc_reads_only_its_own_fields, .timeout = 300)
{
    enum { N = 17, DIM = 72 };
    struct {
        sparcl_plan_desc d;
        char after[16];
    } old;
    memset(&old, 0xAB, sizeof old);
    cr_assert_eq(sparcl_plan_desc_init_sized(&old.d, OLD_SIZE), SPARCL_OK);
    const unsigned char *bytes = (const unsigned char *)&old;
    for (size_t i = OLD_SIZE; i < sizeof old; ++i)
        cr_assert_eq(bytes[i], 0xAB, "init wrote byte %zu beyond struct_size %zu", i,
                     (size_t)OLD_SIZE);
    cr_assert_eq(old.d.struct_size, OLD_SIZE);
    cr_assert_eq(old.d.batch, 1);
    old.d.q_len = old.d.kv_len = N;
    old.d.head_dim = DIM;

    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan *plan = NULL;
    /* The junk in normalization/attention would be refused if read. */
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &old.d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const size_t n = (size_t)N * DIM;
    float *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v),
          *o = malloc(n * sizeof *o);
    double *ref = malloc(n * sizeof *ref), *lib = malloc(n * sizeof *lib);
    oracle_fill(q, n, 11);
    oracle_fill(k, n, 12);
    oracle_fill(v, n, 13);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, NULL), SPARCL_OK);
    oracle_attention(1, 1, 1, N, N, DIM, 1.0 / sqrt(DIM), dense, NULL, q, k, v, ref, NULL);
    double err = oracle_max_abs_diff_f(o, ref, n);
    cr_assert(err <= 1e-4, "softmax attention expected, max abs error %g", err);
    /* The other readers of a descriptor follow the same rule. */
    cr_assert_eq(sparcl_reference_forward(ctx, &old.d, q, k, v, lib, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    sparcl_params p;
    cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_fwd", &old.d, &p), SPARCL_OK);
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_fwd", &old.d, &p), SPARCL_OK);
    sparcl_tuning_problem prob;
    cr_assert_eq(sparcl_tuning_problem_init(ctx, &prob, "attn_fwd", &old.d, NULL), SPARCL_OK);
    free(q), free(k), free(v), free(o), free(ref), free(lib);
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
}

Test(abi, zero_or_garbage_struct_size_is_refused)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    const size_t sizes[4] = {0, 3, sizeof d + 8, (size_t)-1};
    for (int i = 0; i < 4; ++i) {
        sparcl_plan_desc_init(&d);
        d.q_len = d.kv_len = 8;
        d.head_dim = 8;
        d.struct_size = sizes[i];
        sparcl_plan *plan = (sparcl_plan *)1;
        cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_INVALID_ARGUMENT, "size %zu",
                     sizes[i]);
        cr_assert_null(plan);
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), "sparcl_plan_desc.struct_size"), "%s",
                  sparcl_ctx_errmsg(ctx));
        sparcl_params p;
        cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_fwd", &d, &p),
                     SPARCL_ERR_INVALID_ARGUMENT);
        double out[64];
        float x[64] = {0};
        cr_assert_eq(sparcl_reference_forward(ctx, &d, x, x, x, out, NULL),
                     SPARCL_ERR_INVALID_ARGUMENT);
    }
    /* _init_sized writes nothing for a size it cannot serve. */
    memset(&d, 0x5a, sizeof d);
    cr_assert_eq(sparcl_plan_desc_init_sized(&d, 3), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(d.batch, 0x5a5a5a5a);
    cr_assert_eq(sparcl_plan_desc_init_sized(&d, sizeof d + 1), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_plan_desc_init_sized(NULL, sizeof d), SPARCL_ERR_INVALID_ARGUMENT);

    /* The layout descriptors too. */
    sparcl_bigbird_desc b;
    sparcl_bigbird_desc_init(&b);
    cr_assert_eq(b.struct_size, sizeof b);
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_bigbird(ctx, &l, 1, 64, 64, 16, &b), SPARCL_OK);
    sparcl_layout_free(l);
    memset(&b, 0, sizeof b);
    b.window = 1;
    cr_assert_eq(sparcl_layout_init_bigbird(ctx, &l, 1, 64, 64, 16, &b),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_null(l);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "sparcl_bigbird_desc.struct_size is 0"), "%s",
              sparcl_ctx_errmsg(ctx));
    sparcl_fixed_desc f;
    sparcl_fixed_desc_init(&f);
    f.struct_size = 1;
    cr_assert_eq(sparcl_layout_init_fixed(ctx, &l, 1, 64, 64, 16, &f), SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_longformer_desc lf;
    sparcl_longformer_desc_init(&lf);
    cr_assert_eq(lf.left, 256);
    lf.struct_size = 0;
    cr_assert_eq(sparcl_layout_init_longformer(ctx, &l, 1, 64, 64, 16, &lf),
                 SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_vertical_slash_desc vs;
    sparcl_vertical_slash_desc_init(&vs);
    cr_assert_eq(vs.causal, 1);
    vs.struct_size = sizeof vs * 2;
    cr_assert_eq(sparcl_layout_init_vertical_slash(ctx, &l, 1, 64, 64, 16, &vs),
                 SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_ctx_free(ctx);
}
