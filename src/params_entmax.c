/*
 * params_entmax.c -- the parameter schema of attn_entmax (cl/attn_entmax.cl),
 * the fused sparsemax / alpha-entmax kernel.  It shares the tile and
 * work-group parameters of attn_fwd, so the shared constraints, defaults and
 * -D generation of params.c apply; TOPK, the per-row buffer of largest
 * scores the first pass keeps, is its own.
 */
#include "params.h"

static const int32_t c_block_m[] = {1, 2, 4, 8, 16, 32, 64};
static const int32_t c_block_n[] = {8, 16, 32, 64};
static const int32_t c_topk[] = {4, 8, 16, 32, 64};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_entmax_params[] = {
    {"BLOCK_M", c_block_m, N_OF(c_block_m), "query rows per work-group tile"},
    {"BLOCK_N", c_block_n, N_OF(c_block_n), "keys per tile"},
    {"TOPK", c_topk, N_OF(c_topk),
     "largest scores kept per row in the first pass; a support up to this size costs two "
     "score passes, a larger one more"},
    {"VEC", c_vec, N_OF(c_vec), "vector width along the head dimension"},
    {"WG_SIZE", c_wg, N_OF(c_wg), "work-items per work-group"},
};

static void defaults(sparcl_params *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    sparcl__params_tile_defaults(&sparcl__schema_attn_entmax, p, prob, limits);
    int32_t v;
    /* Sparsemax supports of attention rows are mostly a few dozen keys. */
    if (!sparcl_params_get(p, "TOPK", &v))
        sparcl_params_set(p, "TOPK", 32);
}

const sparcl__kernel_schema sparcl__schema_attn_entmax = {
    "attn_entmax", "attn_entmax.cl", attn_entmax_params, N_OF(attn_entmax_params),
    NULL /* attn_fwd's constraints */, defaults};
