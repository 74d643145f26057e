/*
 * params_entmax.c -- the parameter schema of attn_entmax (cl/attn_entmax.cl),
 * the fused sparsemax / alpha-entmax kernel.  It shares the tile and
 * work-group parameters of attn_fwd, so the shared tile constraints and
 * defaults of params_fwd.c apply; TOPK, the per-row buffer of largest
 * scores the first pass keeps, is its own, and NORM (which solver) is
 * derived from the descriptor's normalization, DTYPE (the storage of q, k,
 * v and out) from its dtype.
 */
#include "kernels/params.h"

static const int32_t c_block_m[] = {1, 2, 4, 8, 16, 32, 64};
static const int32_t c_block_n[] = {8, 16, 32, 64};
static const int32_t c_topk[] = {4, 8, 16, 32, 64};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_entmax_params[] = {
    {SPARCL__P_BLOCK_M, c_block_m, N_OF(c_block_m), "query rows per work-group tile"},
    {SPARCL__P_BLOCK_N, c_block_n, N_OF(c_block_n), "keys per tile"},
    {SPARCL__P_TOPK, c_topk, N_OF(c_topk),
     "largest scores kept per row in the first pass; a support up to this size costs two "
     "score passes, a larger one more"},
    {SPARCL__P_VEC, c_vec, N_OF(c_vec), "vector width along the head dimension"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg), "work-items per work-group"},
};

static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    sparcl__pset_tile_defaults(&sparcl__schema_attn_entmax, p, prob, limits);
    /* Sparsemax supports of attention rows are mostly a few dozen keys. */
    sparcl__pset_default(&sparcl__schema_attn_entmax, p, SPARCL__P_TOPK, 32);
}

static const sparcl__kernel_decl kernels[] = {{"attn_entmax", 1}};
static const sparcl__program_decl programs[] = {{"attn_entmax.cl", kernels, N_OF(kernels)}};
static const sparcl__param_id derived[] = {SPARCL__P_DTYPE, SPARCL__P_HEAD_DIM, SPARCL__P_NORM,
                                           SPARCL__P_ROWS};

const sparcl__kernel_schema sparcl__schema_attn_entmax = {
    .name = "attn_entmax",
    .programs = programs,
    .n_programs = N_OF(programs),
    .params = attn_entmax_params,
    .n_params = N_OF(attn_entmax_params),
    .derived = derived,
    .n_derived = N_OF(derived),
    .check = sparcl__pset_tile_check,
    .defaults = defaults,
};

int sparcl__entmax_norm(const sparcl_plan_desc *d, float *alpha)
{
    float a = d->normalization == SPARCL_NORMALIZATION_SPARSEMAX  ? 2.0f
              : d->normalization == SPARCL_NORMALIZATION_ENTMAX15 ? 1.5f
              : d->normalization == SPARCL_NORMALIZATION_ENTMAX   ? d->alpha
                                                                  : 0.0f;
    *alpha = a;
    if (a == 0.0f)
        return 0;
    /* The closed forms are exact; bisection only for the other alphas. */
    return a == 2.0f ? 1 : a == 1.5f ? 2 : 3;
}
