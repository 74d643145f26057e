/*
 * test_misuse.c -- bad input at the API boundary: each case returns its
 * documented status with a message naming the problem, and nothing crashes.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "sparcl.h"

static sparcl_ctx *ctx;

static void setup(void)
{
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
}

static void teardown(void)
{
    sparcl_ctx_free(ctx);
}

static sparcl_plan_desc good(void)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = 4;
    d.kv_heads = 2;
    d.q_len = 17;
    d.kv_len = 17;
    d.head_dim = 32;
    return d;
}

#define EXPECT(call, status, word)                                                           \
    do {                                                                                     \
        sparcl_status s_ = (call);                                                           \
        cr_assert_eq(s_, status, #call " gave %d: %s", s_, sparcl_ctx_errmsg(ctx));          \
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), word), "message \"%s\" lacks \"%s\"",       \
                  sparcl_ctx_errmsg(ctx), word);                                             \
    } while (0)

Test(misuse, descriptor_errors_name_the_field, .init = setup, .fini = teardown)
{
    sparcl_plan *p = (sparcl_plan *)1;
    sparcl_plan_desc d;
    EXPECT(sparcl_plan_init(ctx, &p, NULL), SPARCL_ERR_INVALID_ARGUMENT, "desc");
    cr_assert_null(p);
    d = good(), d.head_dim = 300;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "head_dim 300 exceeds 256");
    d = good(), d.head_dim = 0;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "head_dim 0");
    d = good(), d.q_heads = 3;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT,
           "q_heads 3 is not a multiple of kv_heads 2");
    d = good(), d.batch = 0;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "batch 0");
    d = good(), d.q_len = 0;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "q_len 0");
    d = good(), d.kv_len = -5;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "kv_len -5");
    d = good(), d.scale = -1.0f;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "scale");
    d = good(), d.k_strides.seq = -1;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "k strides");
    cr_assert_null(p);
    EXPECT(sparcl_plan_init(NULL, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, ""); /* no crash */
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "ctx"));
}

Test(misuse, layout_shape_must_match, .init = setup, .fini = teardown)
{
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &l, 1, 16, 17, 4), SPARCL_OK);
    sparcl_plan_desc d = good();
    d.layout = l;
    sparcl_plan *p = NULL;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "layout is 16 x 17");
    sparcl_layout_free(l);
    cr_assert_eq(sparcl_layout_init_causal(ctx, &l, 3, 17, 17, 4), SPARCL_OK);
    d.layout = l;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "layout has 3 heads");
    sparcl_layout_free(l);
}

Test(misuse, previous_plan_must_share_the_context, .init = setup, .fini = teardown)
{
    sparcl_ctx *other = NULL;
    cr_assert_eq(sparcl_ctx_init(&other), SPARCL_OK);
    sparcl_plan_desc d = good();
    sparcl_plan *theirs = NULL, *p = (sparcl_plan *)1;
    cr_assert_eq(sparcl_plan_init(other, &theirs, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(other));
    d.previous = theirs;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT,
           "desc.previous is a plan of another context");
    cr_assert_null(p);
    /* the same context: taken (a dense plan has nothing to copy) */
    sparcl_plan *mine = NULL;
    d.previous = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &mine, &d), SPARCL_OK);
    d.previous = mine;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(p);
    sparcl_plan_free(mine);
    sparcl_plan_free(theirs);
    sparcl_ctx_free(other);
}

Test(misuse, bad_parameters_are_rejected_before_building, .init = setup, .fini = teardown)
{
    sparcl_plan_desc d = good();
    sparcl_params prm;
    sparcl_params_clear(&prm);
    d.params = &prm;
    sparcl_plan *p = NULL;
    sparcl_params_set(&prm, "BLOCK_N", 48);
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "BLOCK_N 48 is not one of");
    sparcl_params_clear(&prm);
    sparcl_params_set(&prm, "NO_SUCH", 1);
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "unknown parameter NO_SUCH");
    sparcl_params_clear(&prm);
    sparcl_params_set(&prm, "BLOCK_M", 8);
    sparcl_params_set(&prm, "WG_SIZE", 16);
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT,
           "BLOCK_M 8 must be a multiple of WG_SIZE 16");
    sparcl_params_clear(&prm);
    sparcl_params_set(&prm, "VEC", 16);
    d.head_dim = 8;
    EXPECT(sparcl_plan_init(ctx, &p, &d), SPARCL_ERR_INVALID_ARGUMENT, "VEC 16 exceeds head_dim 8");
    cr_assert_null(p);
    cr_assert_eq(sparcl_params_set(&prm, "A_NAME_THAT_IS_FAR_TOO_LONG_TO_FIT", 1),
                 SPARCL_ERR_INVALID_ARGUMENT);
}

Test(misuse, buffers_are_checked_before_enqueue, .init = setup, .fini = teardown)
{
    sparcl_plan_desc d = good();
    sparcl_plan *p = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &p, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_context c = sparcl_ctx_cl_context(ctx);
    size_t nq = 4 * 17 * 32 * 4, nk = 2 * 17 * 32 * 4;
    cl_mem q = clCreateBuffer(c, CL_MEM_READ_WRITE, nq, NULL, NULL);
    cl_mem k = clCreateBuffer(c, CL_MEM_READ_WRITE, nk, NULL, NULL);
    cl_mem v = clCreateBuffer(c, CL_MEM_READ_WRITE, nk, NULL, NULL);
    cl_mem o = clCreateBuffer(c, CL_MEM_READ_WRITE, nq, NULL, NULL);
    cl_mem small = clCreateBuffer(c, CL_MEM_READ_WRITE, nk - 4, NULL, NULL);
    cl_mem lse_small = clCreateBuffer(c, CL_MEM_READ_WRITE, 4 * 17 * 4 - 4, NULL, NULL);
    EXPECT(sparcl_plan_forward(p, NULL, k, v, o, NULL, 0, NULL, NULL), SPARCL_ERR_INVALID_ARGUMENT,
           "q buffer is NULL");
    EXPECT(sparcl_plan_forward(p, q, small, v, o, NULL, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "k buffer has");
    EXPECT(sparcl_plan_forward(p, q, k, v, small, NULL, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "out buffer has");
    EXPECT(sparcl_plan_forward(p, q, k, v, o, lse_small, 0, NULL, NULL),
           SPARCL_ERR_INVALID_ARGUMENT, "lse buffer has");
    EXPECT(sparcl_plan_forward(p, q, k, v, q, NULL, 0, NULL, NULL), SPARCL_ERR_INVALID_ARGUMENT,
           "alias");
    EXPECT(sparcl_plan_forward(p, q, k, v, o, NULL, 2, NULL, NULL), SPARCL_ERR_INVALID_ARGUMENT,
           "wait");
    EXPECT(sparcl_plan_forward_host(p, NULL, NULL, NULL, NULL, NULL), SPARCL_ERR_INVALID_ARGUMENT,
           "q is NULL");
    cr_assert_eq(sparcl_plan_forward(p, q, k, v, o, NULL, 0, NULL, NULL), SPARCL_OK);
    clFinish(sparcl_ctx_cl_queue(ctx));
    cl_mem all[] = {q, k, v, o, small, lse_small};
    for (int i = 0; i < 6; ++i)
        clReleaseMemObject(all[i]);
    sparcl_plan_free(p);
    sparcl_plan_free(NULL);
    cr_assert_eq(sparcl_plan_forward(NULL, q, k, v, o, NULL, 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
}
