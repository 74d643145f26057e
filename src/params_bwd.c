/*
 * params_bwd.c -- the parameter schema of the backward attention kernels
 * (cl/attn_bwd.cl): choices, constraints, device limits and defaults, as
 * data the runtime and the tuner read alike.
 *
 * One tile serves the two main kernels: attn_bwd_dq gives each work-item
 * ROWS = BLOCK_M / WG_SIZE query rows, attn_bwd_dkv gives it
 * COLS = BLOCK_N / WG_SIZE keys.  Both must be whole and at most 16: they
 * are the kernels' vector widths (lanes run across rows and keys, not
 * along the head dimension, so there is no separate VEC parameter).
 */
#include <stdio.h>

#include "error.h"
#include "params.h"

static const int32_t c_block[] = {1, 2, 4, 8, 16, 32, 64, 128};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const int32_t c_bool[] = {0, 1};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_bwd_params[] = {
    {"BLOCK_M", c_block, N_OF(c_block), "query rows per tile (dQ work-group)"},
    {"BLOCK_N", c_block, N_OF(c_block), "keys per tile (dK/dV work-group)"},
    {"USE_LOCAL", c_bool, N_OF(c_bool), "stage shared rows in __local memory"},
    {"WG_SIZE", c_wg, N_OF(c_wg), "work-items per work-group"},
};

static int32_t get(const sparcl_params *p, const char *name)
{
    int32_t v = 0;
    sparcl_params_get(p, name, &v);
    return v;
}

size_t sparcl__attn_bwd_local_bytes(const sparcl_params *p, const sparcl__problem *prob)
{
    if (!get(p, "USE_LOCAL"))
        return 0;
    size_t d = (size_t)prob->head_dim;
    size_t dq = 2u * (size_t)get(p, "BLOCK_N") * d * 4u;          /* K, V tiles */
    size_t dkv = 2u * (size_t)get(p, "BLOCK_M") * (d + 1u) * 4u;  /* Q, dO tiles, LSE, D */
    return dq > dkv ? dq : dkv;
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl_params *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    int32_t bm = get(p, "BLOCK_M"), bn = get(p, "BLOCK_N"), wg = get(p, "WG_SIZE");
    if (bm % wg != 0 || bn % wg != 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M %d and BLOCK_N %d must be multiples of WG_SIZE %d", bm, bn,
                            wg);
    int32_t rows = bm / wg, cols = bn / wg;
    if (rows > 16 || cols > 16)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "rows %d and keys %d per work-item (BLOCK_M, BLOCK_N / WG_SIZE) "
                            "must not exceed 16",
                            rows, cols);
    /* dq holds q, dO and dQ rows; dkv holds k, v, dK and dV rows. */
    long priv_dq = 3L * rows * prob->head_dim, priv_dkv = 4L * cols * prob->head_dim;
    long priv = priv_dq > priv_dkv ? priv_dq : priv_dkv;
    if (priv > SPARCL__PRIVATE_FLOATS_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "max(3 x %d rows, 4 x %d keys) x head_dim %d = %ld private floats "
                            "exceeds %d",
                            rows, cols, prob->head_dim, priv, SPARCL__PRIVATE_FLOATS_MAX);
    if (limits) {
        if ((size_t)wg > limits->max_wg_size)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "WG_SIZE %d exceeds the device's max work-group size %zu", wg,
                                limits->max_wg_size);
        size_t local = sparcl__attn_bwd_local_bytes(p, prob);
        if (local > limits->local_mem)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "backward tiles need %zu bytes of local memory; the device has "
                                "%llu",
                                local, (unsigned long long)limits->local_mem);
    }
    return SPARCL_OK;
}

static void set_missing(sparcl_params *p, const char *name, int32_t value)
{
    if (!sparcl_params_get(p, name, NULL))
        sparcl_params_set(p, name, value);
}

static void defaults(sparcl_params *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    if (cpu) {
        /* POCL: one work-item per group with 16 rows (dQ) or keys (dK/dV)
         * as float16 lanes (shared/notes/pocl.md); 8 for wide heads, to
         * stay within private memory. */
        int32_t t = prob->head_dim > 128 ? 8 : 16;
        set_missing(p, "WG_SIZE", 1);
        set_missing(p, "BLOCK_M", t);
        set_missing(p, "BLOCK_N", t);
        set_missing(p, "USE_LOCAL", 0);
    } else {
        /* GPU: one row or key per work-item, shared tiles in local memory,
         * the largest square tile that fits the device. */
        int32_t t = 64;
        while (t > 1 && limits &&
               (2u * (size_t)t * ((size_t)prob->head_dim + 1u) * 4u > limits->local_mem ||
                (size_t)t > limits->max_wg_size))
            t /= 2;
        set_missing(p, "WG_SIZE", t);
        set_missing(p, "BLOCK_M", t);
        set_missing(p, "BLOCK_N", t);
        set_missing(p, "USE_LOCAL", 1);
    }
}

const sparcl__kernel_schema sparcl__schema_attn_bwd = {
    "attn_bwd", "attn_bwd.cl", attn_bwd_params, N_OF(attn_bwd_params), check, defaults};
