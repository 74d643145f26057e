/*
 * params_entmax_bwd.c -- the parameter schema of the sparse normalizations'
 * backward (cl/attn_entmax_bwd.cl): choices, constraints, device limits and
 * defaults, as data the runtime and the tuner read alike.
 *
 * One tile serves both kernels: attn_entmax_bwd_dq gives each work-item
 * ROWS = BLOCK_M / WG_SIZE query rows and walks them with vectors of VEC
 * along the head dimension (as the forward attn_entmax does);
 * attn_entmax_bwd_dkv gives it COLS = BLOCK_N / WG_SIZE keys as vector
 * lanes, so COLS must be a vector width.  NORM (which weights) comes from
 * the descriptor's normalization, as for the forward.
 */
#include "kernels/params.h"
#include "runtime/error.h"

static const int32_t c_block[] = {1, 2, 4, 8, 16, 32, 64};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_entmax_bwd_params[] = {
    {SPARCL__P_BLOCK_M, c_block, N_OF(c_block), "query rows per tile (dQ work-group)"},
    {SPARCL__P_BLOCK_N, c_block, N_OF(c_block), "keys per tile (dK/dV work-group)"},
    {SPARCL__P_VEC, c_vec, N_OF(c_vec), "vector width along the head dimension (dQ)"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg), "work-items per work-group"},
};

sparcl_status sparcl__pset_item_tile_check(sparcl_ctx *ctx, const sparcl__pset *p,
                                           const sparcl__problem *prob,
                                           const sparcl__device_limits *limits, long row_floats,
                                           long key_floats)
{
    const int32_t bm = p->v[SPARCL__P_BLOCK_M], bn = p->v[SPARCL__P_BLOCK_N];
    const int32_t wg = p->v[SPARCL__P_WG_SIZE], vec = p->v[SPARCL__P_VEC];
    if (bm % wg != 0 || bn % wg != 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M %d and BLOCK_N %d must be multiples of WG_SIZE %d", bm, bn,
                            wg);
    const int32_t rows = bm / wg, cols = bn / wg;
    if (rows > 16 || cols > 16)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "rows %d and keys %d per work-item (BLOCK_M, BLOCK_N / WG_SIZE) "
                            "must not exceed 16",
                            rows, cols);
    if (vec > prob->head_dim)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "VEC %d exceeds head_dim %d", vec,
                            prob->head_dim);
    const long priv_rows = rows * row_floats, priv_keys = cols * key_floats;
    const long priv = priv_rows > priv_keys ? priv_rows : priv_keys;
    if (priv > SPARCL__PRIVATE_FLOATS_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "max(%d rows x %ld floats, %d keys x %ld floats) = %ld private floats "
                            "per work-item exceeds %d (head_dim %d, BLOCK_N %d)",
                            rows, row_floats, cols, key_floats, priv, SPARCL__PRIVATE_FLOATS_MAX,
                            prob->head_dim, bn);
    if (limits && (size_t)wg > limits->max_wg_size)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "WG_SIZE %d exceeds the device's max work-group size %zu", wg,
                            limits->max_wg_size);
    return SPARCL_OK;
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    /* dq holds q, dO and two sums per row plus a tile of scores; dkv holds
     * k, v, dK and dV per key. */
    return sparcl__pset_item_tile_check(
        ctx, p, prob, limits, 4L * prob->head_dim + p->v[SPARCL__P_BLOCK_N], 4L * prob->head_dim);
}

static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    const sparcl__kernel_schema *s = &sparcl__schema_attn_entmax_bwd;
    const int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    const int wide = prob->head_dim > 128;
    /* CPU (POCL): one work-item per group, several rows (dQ) and 16 keys
     * as float16 lanes (dK/dV), halved for wide heads to stay within
     * private memory.  GPU: one row and one key per work-item. */
    int32_t wg = cpu ? 1 : 64;
    if (limits && (size_t)wg > limits->max_wg_size)
        wg = 1;
    sparcl__pset_default(s, p, SPARCL__P_WG_SIZE, wg);
    sparcl__pset_default(s, p, SPARCL__P_BLOCK_M, cpu ? (wide ? 4 : 8) : wg);
    sparcl__pset_default(s, p, SPARCL__P_BLOCK_N, cpu ? (wide ? 8 : 16) : wg);
    int32_t vec = 1;
    while (vec * 2 <= prob->head_dim && vec < (cpu ? 16 : 4))
        vec *= 2;
    sparcl__pset_default(s, p, SPARCL__P_VEC, vec);
}

static const sparcl__kernel_decl kernels[] = {{"attn_entmax_bwd_dq", 1},
                                              {"attn_entmax_bwd_dkv", 1}};
static const sparcl__program_decl programs[] = {{"attn_entmax_bwd.cl", kernels, N_OF(kernels)}};
static const sparcl__param_id derived[] = {SPARCL__P_HEAD_DIM, SPARCL__P_ROWS, SPARCL__P_COLS,
                                           SPARCL__P_NORM};

const sparcl__kernel_schema sparcl__schema_attn_entmax_bwd = {
    .name = "attn_entmax_bwd",
    .programs = programs,
    .n_programs = N_OF(programs),
    .params = attn_entmax_bwd_params,
    .n_params = N_OF(attn_entmax_bwd_params),
    .derived = derived,
    .n_derived = N_OF(derived),
    .check = check,
    .defaults = defaults,
};
