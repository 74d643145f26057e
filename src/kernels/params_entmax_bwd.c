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
    /* CPU (POCL): several rows (dQ) and 16 keys as float16 lanes (dK/dV)
     * per work-item.  GPU: 64 work-items per group. */
    sparcl__pset_item_tile_defaults(&sparcl__schema_attn_entmax_bwd, p, prob, limits, 64, 8, 16);
}

static const sparcl__kernel_decl kernels[] = {{"attn_entmax_bwd_dq", 1},
                                              {"attn_entmax_bwd_dkv", 1}};
static const sparcl__program_decl programs[] = {{"attn_entmax_bwd.cl", kernels, N_OF(kernels)}};
static const sparcl__param_id derived[] = {SPARCL__P_DTYPE, SPARCL__P_HEAD_DIM, SPARCL__P_ROWS,
                                           SPARCL__P_COLS, SPARCL__P_NORM};

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
