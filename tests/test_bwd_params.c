/*
 * test_bwd_params.c -- the attn_bwd schema's choice of defaults against
 * simulated devices (no OpenCL device needed: the schema is data and pure
 * functions, linked here from the library's objects).  The case that
 * motivated it: on an NVIDIA H200 (49152 bytes of local memory) the old
 * GPU default, 64 x 64 tiles with USE_LOCAL=1 at head_dim 64, needed 65792
 * bytes (the compiler charged the dQ and dK/dV kernels' arrays together)
 * and the program did not build.  A default must fit the device it is made
 * for; a configuration the caller forces is checked as given.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "kernels/params.h"

static const sparcl__device_limits gpu_48k = {
    .max_wg_size = 1024, .local_mem = 49152, .type = CL_DEVICE_TYPE_GPU, .compute_units = 132};

static sparcl__problem problem(int head_dim)
{
    sparcl__problem p;
    memset(&p, 0, sizeof p);
    p.head_dim = head_dim, p.batch = 1, p.kv_heads = 8, p.kv_len = 4096;
    return p;
}

static sparcl__pset defaults_for(const sparcl__problem *prob, const sparcl__device_limits *lim)
{
    sparcl__pset p;
    memset(&p, 0, sizeof p);
    sparcl__schema_attn_bwd.defaults(&p, prob, lim);
    return p;
}

Test(bwd_params, the_measured_h200_failure_is_counted)
{
    /* 64 x 64 tiles at head_dim 64 count at least what the compiler did. */
    sparcl__pset p;
    memset(&p, 0, sizeof p);
    sparcl__pset_put(&p, SPARCL__P_BLOCK_M, 64);
    sparcl__pset_put(&p, SPARCL__P_BLOCK_N, 64);
    sparcl__pset_put(&p, SPARCL__P_USE_LOCAL, 1);
    const sparcl__problem prob = problem(64);
    cr_assert_geq(sparcl__attn_bwd_local_bytes(&p, &prob), 65792);
}

Test(bwd_params, gpu_defaults_fit_local_memory)
{
    const int dims[] = {16, 64, 72, 100, 128, 256};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; ++i) {
        const sparcl__problem prob = problem(dims[i]);
        sparcl__pset p = defaults_for(&prob, &gpu_48k);
        cr_assert_eq(p.v[SPARCL__P_ALGO], 0, "head_dim %d: the GPU path", dims[i]);
        cr_assert_leq(sparcl__attn_bwd_local_bytes(&p, &prob), gpu_48k.local_mem,
                      "head_dim %d: %d x %d tiles", dims[i], p.v[SPARCL__P_BLOCK_M],
                      p.v[SPARCL__P_BLOCK_N]);
        cr_assert_eq(sparcl__pset_check(NULL, &sparcl__schema_attn_bwd, &p, &prob, &gpu_48k),
                     SPARCL_OK, "head_dim %d: %s", dims[i], sparcl_ctx_errmsg(NULL));
        cr_assert(p.v[SPARCL__P_USE_LOCAL] && p.v[SPARCL__P_WG_SIZE] >= 8,
                  "head_dim %d: still a GPU configuration (local memory, %d work-items)", dims[i],
                  p.v[SPARCL__P_WG_SIZE]);
    }
    /* head_dim 64: the 32 x 32 tile, the largest square one that fits. */
    const sparcl__problem prob = problem(64);
    sparcl__pset p = defaults_for(&prob, &gpu_48k);
    cr_assert_eq(p.v[SPARCL__P_BLOCK_M], 32);
    cr_assert_eq(p.v[SPARCL__P_BLOCK_N], 32);
    cr_assert_eq(p.v[SPARCL__P_WG_SIZE], 32);
}

Test(bwd_params, tiny_local_memory_turns_staging_off)
{
    sparcl__device_limits lim = gpu_48k;
    lim.local_mem = 256; /* not even one row of head_dim 64 twice */
    const sparcl__problem prob = problem(64);
    sparcl__pset p = defaults_for(&prob, &lim);
    cr_assert_eq(p.v[SPARCL__P_USE_LOCAL], 0);
    cr_assert_eq(sparcl__pset_check(NULL, &sparcl__schema_attn_bwd, &p, &prob, &lim), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(NULL));
    /* The selection itself: halves the tile while it does not fit. */
    sparcl__pset q;
    memset(&q, 0, sizeof q);
    sparcl__pset_put(&q, SPARCL__P_BLOCK_M, 64);
    sparcl__pset_put(&q, SPARCL__P_BLOCK_N, 64);
    sparcl__pset_put(&q, SPARCL__P_WG_SIZE, 64);
    sparcl__pset_put(&q, SPARCL__P_USE_LOCAL, 1);
    lim.local_mem = 20000;
    cr_assert(sparcl__attn_bwd_fit(&q, &prob, &lim));
    cr_assert_eq(q.v[SPARCL__P_BLOCK_M], 16);
    cr_assert_eq(q.v[SPARCL__P_WG_SIZE], 16);
    cr_assert_eq(q.v[SPARCL__P_USE_LOCAL], 1);
    cr_assert(!sparcl__attn_bwd_fit(&q, &prob, &lim), "a fitting set is left alone");
}

Test(bwd_params, forced_tiles_are_checked_not_replaced)
{
    const sparcl__problem prob = problem(64);
    sparcl__pset p;
    memset(&p, 0, sizeof p);
    sparcl__pset_put(&p, SPARCL__P_BLOCK_M, 64);
    sparcl__pset_put(&p, SPARCL__P_BLOCK_N, 64);
    sparcl__schema_attn_bwd.defaults(&p, &prob, &gpu_48k);
    cr_assert_eq(p.v[SPARCL__P_BLOCK_M], 64);
    cr_assert_eq(p.v[SPARCL__P_USE_LOCAL], 1);
    cr_assert_eq(sparcl__pset_check(NULL, &sparcl__schema_attn_bwd, &p, &prob, &gpu_48k),
                 SPARCL_ERR_NOT_SUPPORTED);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "bytes of local memory"), "%s",
              sparcl_ctx_errmsg(NULL));
}

Test(bwd_params, cpu_defaults_are_the_one_pass_kernel)
{
    const sparcl__device_limits cpu = {
        .max_wg_size = 4096, .local_mem = 524288, .type = CL_DEVICE_TYPE_CPU, .compute_units = 2};
    const int dims[] = {1, 16, 64, 100, 256, 1000};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; ++i) {
        const sparcl__problem prob = problem(dims[i]);
        sparcl__pset p = defaults_for(&prob, &cpu);
        cr_assert_eq(p.v[SPARCL__P_ALGO], 1, "head_dim %d", dims[i]);
        cr_assert_eq(sparcl__pset_check(NULL, &sparcl__schema_attn_bwd, &p, &prob, &cpu), SPARCL_OK,
                     "head_dim %d: %s", dims[i], sparcl_ctx_errmsg(NULL));
    }
    /* One head: enough key-tile partitions for both compute units; two
     * heads fill them already. */
    sparcl__problem one = problem(64);
    one.kv_heads = 1;
    cr_assert_eq(defaults_for(&one, &cpu).v[SPARCL__P_SPLIT], 2);
    sparcl__problem two = one;
    two.kv_heads = two.q_heads = 2;
    cr_assert_eq(defaults_for(&two, &cpu).v[SPARCL__P_SPLIT], 1);
    cr_assert_eq(defaults_for(&(sparcl__problem){.head_dim = 64, .batch = 1, .kv_heads = 8, .kv_len = 4096, .q_heads = 8, .q_len = 4096}, &cpu).v[SPARCL__P_SPLIT], 1);
}

Test(bwd_params, forced_one_pass_on_a_gpu_gets_its_own_tile)
{
    const sparcl__problem prob = problem(64);
    sparcl__pset p;
    memset(&p, 0, sizeof p);
    sparcl__pset_put(&p, SPARCL__P_ALGO, 1);
    sparcl__schema_attn_bwd.defaults(&p, &prob, &gpu_48k);
    cr_assert_eq(p.v[SPARCL__P_WG_SIZE], 1);
    cr_assert_eq(p.v[SPARCL__P_USE_LOCAL], 0);
    cr_assert_eq(sparcl__pset_check(NULL, &sparcl__schema_attn_bwd, &p, &prob, &gpu_48k), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(NULL));
}
