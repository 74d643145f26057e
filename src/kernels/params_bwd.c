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

#include "runtime/error.h"
#include "kernels/params.h"

static const int32_t c_block[] = {1, 2, 4, 8, 16, 32, 64, 128};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const int32_t c_bool[] = {0, 1};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_bwd_params[] = {
    {SPARCL__P_BLOCK_M, c_block, N_OF(c_block), "query rows per tile (dQ work-group)"},
    {SPARCL__P_BLOCK_N, c_block, N_OF(c_block), "keys per tile (dK/dV work-group)"},
    {SPARCL__P_USE_LOCAL, c_bool, N_OF(c_bool), "stage shared rows in __local memory"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg), "work-items per work-group"},
};

size_t sparcl__attn_bwd_local_bytes(const sparcl__pset *p, const sparcl__problem *prob)
{
    if (!p->v[SPARCL__P_USE_LOCAL])
        return 0;
    size_t d = (size_t)prob->head_dim;
    size_t dq = 2u * (size_t)p->v[SPARCL__P_BLOCK_N] * d * 4u;         /* K, V tiles */
    size_t dkv = 2u * (size_t)p->v[SPARCL__P_BLOCK_M] * (d + 1u) * 4u; /* Q, dO tiles, LSE, D */
    return dq > dkv ? dq : dkv;
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    const int32_t bm = p->v[SPARCL__P_BLOCK_M], bn = p->v[SPARCL__P_BLOCK_N];
    const int32_t wg = p->v[SPARCL__P_WG_SIZE];
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

static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    if (cpu) {
        /* POCL: one work-item per group with 16 rows (dQ) or keys (dK/dV)
         * as float16 lanes (shared/notes/pocl.md); 8 for wide heads, to
         * stay within private memory. */
        int32_t t = prob->head_dim > 128 ? 8 : 16;
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_WG_SIZE, 1);
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_BLOCK_M, t);
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_BLOCK_N, t);
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_USE_LOCAL, 0);
    } else {
        /* GPU: one row or key per work-item, shared tiles in local memory,
         * the largest square tile that fits the device. */
        int32_t t = 64;
        while (t > 1 && limits &&
               (2u * (size_t)t * ((size_t)prob->head_dim + 1u) * 4u > limits->local_mem ||
                (size_t)t > limits->max_wg_size))
            t /= 2;
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_WG_SIZE, t);
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_BLOCK_M, t);
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_BLOCK_N, t);
        sparcl__pset_default(&sparcl__schema_attn_bwd, p, SPARCL__P_USE_LOCAL, 1);
    }
}

static const sparcl__kernel_decl kernels[] = {
    {"attn_bwd_pre", 0}, {"attn_bwd_dq", 1}, {"attn_bwd_dkv", 1}};
static const sparcl__program_decl programs[] = {{"attn_bwd.cl", kernels, N_OF(kernels)}};
static const sparcl__param_id derived[] = {SPARCL__P_HEAD_DIM, SPARCL__P_ROWS};

const sparcl__kernel_schema sparcl__schema_attn_bwd = {
    .name = "attn_bwd",
    .programs = programs,
    .n_programs = N_OF(programs),
    .params = attn_bwd_params,
    .n_params = N_OF(attn_bwd_params),
    .derived = derived,
    .n_derived = N_OF(derived),
    .check = check,
    .defaults = defaults,
};
