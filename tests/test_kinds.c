/*
 * test_kinds.c -- the attention kinds seen through the plan: each kind
 * reports device memory, a kind without a backward pass refuses it with
 * SPARCL_ERR_NOT_SUPPORTED and a message naming the kind, a kind without
 * random matrices refuses a redraw, and the public calls of one kind
 * refuse plans of another.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "sparcl.h"

static sparcl_ctx *ctx;

static void setup(void)
{
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
}

static void teardown(void)
{
    sparcl_ctx_free(ctx);
}

TestSuite(kinds, .init = setup, .fini = teardown);

static sparcl_plan *make(int attention, int normalization)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = 17;
    d.head_dim = 8;
    d.attention = attention;
    d.normalization = normalization;
    d.features = 16;
    d.proj_len = 5;
    sparcl_plan *p = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_gt(sparcl_plan_device_bytes(p), 0);
    return p;
}

Test(kinds, calls_of_one_kind_refuse_the_others)
{
    sparcl_plan *softmax = make(SPARCL_ATTENTION_EXACT, SPARCL_NORMALIZATION_SOFTMAX);
    sparcl_plan *favor = make(SPARCL_ATTENTION_FAVOR, SPARCL_NORMALIZATION_SOFTMAX);
    float buf[17 * 17];
    cr_assert_eq(sparcl_plan_redraw(softmax, 1), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_plan_read_features(softmax, buf), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_plan_read_projections(favor, buf, buf), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "not a Linformer plan"), "%s",
              sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_redraw(favor, 1), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_read_features(favor, buf), SPARCL_OK);
    /* The softmax kind has a backward pass; its parameters come from the
     * attn_bwd family. */
    sparcl_params params;
    cr_assert_eq(sparcl_plan_backward_params(softmax, &params, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert(sparcl_params_get(&params, "BLOCK_N", NULL));
    cr_assert(sparcl_params_get(&params, "SPLIT", NULL));
    cr_assert(!sparcl_params_get(&params, "KT", NULL));
    sparcl_plan_free(softmax);
    sparcl_plan_free(favor);
}
