/*
 * params_fwd.c -- the attn_fwd family (cl/attn_fwd.cl, and
 * cl/attn_dense_softmax.cl for its dense algorithm ALGO=1): choices,
 * constraints, defaults and resource formulas, and the tile rules attn_entmax
 * shares.
 */
#include "runtime/error.h"
#include "kernels/params.h"

static const int32_t c_block_m[] = {1, 2, 4, 8, 16, 32, 64, 128};
static const int32_t c_block_n[] = {8, 16, 32, 64, 128};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_bool[] = {0, 1};
static const int32_t c_exp[] = {0, 1, 2};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_fwd_params[] = {
    {SPARCL__P_ALGO, c_bool, N_OF(c_bool),
     "0 the fused kernel, 1 dense: CLBlast SGEMMs + masked softmax"},
    {SPARCL__P_BLOCK_M, c_block_m, N_OF(c_block_m), "query rows per work-group tile"},
    {SPARCL__P_BLOCK_N, c_block_n, N_OF(c_block_n), "keys per tile"},
    {SPARCL__P_EXP, c_exp, N_OF(c_exp),
     "softmax exponential: 0 exp2, 1 native_exp2, 2 sparcl polynomial"},
    {SPARCL__P_KT, c_bool, N_OF(c_bool),
     "scores against K packed transposed per tile (a workspace)"},
    {SPARCL__P_USE_LOCAL, c_bool, N_OF(c_bool), "stage K/V tiles in __local memory"},
    {SPARCL__P_VEC, c_vec, N_OF(c_vec),
     "vector width along the head dimension and of score vectors"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg), "work-items per work-group"},
};

size_t sparcl__attn_fwd_local_bytes(const sparcl__pset *p, const sparcl__problem *prob)
{
    return p->v[SPARCL__P_USE_LOCAL]
               ? 2u * (size_t)p->v[SPARCL__P_BLOCK_N] * (size_t)prob->head_dim * 4u
               : 0u;
}

size_t sparcl__attn_fwd_workspace_bytes(const sparcl__pset *p, const sparcl__problem *prob)
{
    if (!p->v[SPARCL__P_KT] || p->v[SPARCL__P_ALGO])
        return 0;
    size_t bn = (size_t)p->v[SPARCL__P_BLOCK_N];
    size_t tiles = bn ? ((size_t)prob->kv_len + bn - 1) / bn : 0;
    return (size_t)prob->batch * (size_t)prob->kv_heads * tiles * bn * (size_t)prob->head_dim *
           sizeof(float);
}

sparcl_status sparcl__pset_tile_check(sparcl_ctx *ctx, const sparcl__pset *p,
                                      const sparcl__problem *prob,
                                      const sparcl__device_limits *limits)
{
    const int32_t bm = p->v[SPARCL__P_BLOCK_M], bn = p->v[SPARCL__P_BLOCK_N];
    const int32_t wg = p->v[SPARCL__P_WG_SIZE], vec = p->v[SPARCL__P_VEC];
    if (bm % wg != 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M %d must be a multiple of WG_SIZE %d", bm, wg);
    int32_t rows = bm / wg;
    if (rows > 16)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M / WG_SIZE = %d rows per work-item exceeds 16", rows);
    if (vec > prob->head_dim)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "VEC %d exceeds head_dim %d", vec,
                            prob->head_dim);
    long priv = (long)rows * (2L * prob->head_dim + bn);
    if (priv > SPARCL__PRIVATE_FLOATS_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "rows per work-item %d x (2 x head_dim %d + BLOCK_N %d) = %ld "
                            "private floats exceeds %d",
                            rows, prob->head_dim, bn, priv, SPARCL__PRIVATE_FLOATS_MAX);
    if (limits) {
        if ((size_t)wg > limits->max_wg_size)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "WG_SIZE %d exceeds the device's max work-group size %zu", wg,
                                limits->max_wg_size);
        size_t local = sparcl__attn_fwd_local_bytes(p, prob);
        if (local > limits->local_mem)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "K/V tiles need %zu bytes of local memory; the device has %llu",
                                local, (unsigned long long)limits->local_mem);
        size_t ws = sparcl__attn_fwd_workspace_bytes(p, prob);
        if (limits->max_alloc && ws > limits->max_alloc)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "KT=1 needs a %zu-byte workspace; the device allocates at most "
                                "%llu bytes at once",
                                ws, (unsigned long long)limits->max_alloc);
    }
    return SPARCL_OK;
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    const int32_t bn = p->v[SPARCL__P_BLOCK_N], vec = p->v[SPARCL__P_VEC];
    sparcl_status st = sparcl__pset_tile_check(ctx, p, prob, limits);
    /* CLBlast's HGEMM would accumulate in half, and it has no bfloat16:
     * the dense path stays fp32-only. */
    if (st == SPARCL_OK && p->v[SPARCL__P_ALGO] == 1 && prob->dtype != SPARCL_DTYPE_F32)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "the dense CLBlast path (ALGO=1) does not support dtype %s: CLBlast's "
                            "half GEMM accumulates in half precision and it has no bfloat16; "
                            "use ALGO=0 (the fused kernel) for half storage",
                            sparcl_dtype_name(prob->dtype));
    if (st == SPARCL_OK && bn % vec != 0) /* scores are VEC-key vectors */
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_N %d must be a multiple of VEC %d", bn, vec);
    return st;
}

void sparcl__pset_tile_defaults(const sparcl__kernel_schema *schema, sparcl__pset *p,
                                const sparcl__problem *prob, const sparcl__device_limits *limits)
{
    int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    /* CPU (POCL): one work-item per group, several rows each, explicit
     * vectors of 16, scores against K packed transposed (measured with
     * sparcl-bench; shared/notes/pocl.md).  GPU: many work-items sharing
     * K/V tiles through local memory. */
    int32_t wg = cpu ? 1 : 64;
    int32_t bm = cpu ? (prob->head_dim > 128 ? 4 : 8) : 64;
    int32_t bn = 32;
    int32_t kt = cpu ? 1 : 0;
    if (!cpu && limits && 2u * 32u * (size_t)prob->head_dim * 4u > limits->local_mem)
        bn = 16;
    if (!cpu && limits && (size_t)wg > limits->max_wg_size) {
        wg = (int32_t)limits->max_wg_size;
        bm = wg;
    }
    sparcl__pset_default(schema, p, SPARCL__P_WG_SIZE, wg);
    sparcl__pset_default(schema, p, SPARCL__P_BLOCK_M, bm);
    sparcl__pset_default(schema, p, SPARCL__P_BLOCK_N, bn);
    sparcl__pset_default(schema, p, SPARCL__P_USE_LOCAL, cpu ? 0 : 1);
    sparcl__pset_default(schema, p, SPARCL__P_ALGO, 0);
    sparcl__pset_default(schema, p, SPARCL__P_EXP, cpu ? 2 : 0);
    /* VEC: the widest power of two within head_dim that divides BLOCK_N. */
    int32_t vec = 1, tile = p->v[SPARCL__P_BLOCK_N];
    while (vec * 2 <= prob->head_dim && vec < (cpu ? 16 : 4) && tile % (vec * 2) == 0)
        vec *= 2;
    sparcl__pset_default(schema, p, SPARCL__P_VEC, vec);
    if (!sparcl__pset_has(p, SPARCL__P_KT)) {
        sparcl__pset_default(schema, p, SPARCL__P_KT, kt);
        if (kt && sparcl__pset_has(p, SPARCL__P_KT) && limits && limits->max_alloc &&
            sparcl__attn_fwd_workspace_bytes(p, prob) > limits->max_alloc)
            sparcl__pset_put(p, SPARCL__P_KT, 0); /* the packed K would not fit */
    }
}

static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    sparcl__pset_tile_defaults(&sparcl__schema_attn_fwd, p, prob, limits);
}

static const sparcl__kernel_decl fused_kernels[] = {{"attn_fwd", 1}, {"attn_fwd_pack_k", 0}};
static const sparcl__kernel_decl dense_kernels[] = {{"attn_dense_softmax", 0}};
static const sparcl__program_decl programs[] = {
    {"attn_fwd.cl", fused_kernels, N_OF(fused_kernels)},
    {"attn_dense_softmax.cl", dense_kernels, N_OF(dense_kernels)},
};
static const sparcl__param_id derived[] = {SPARCL__P_DTYPE, SPARCL__P_HEAD_DIM, SPARCL__P_ROWS};

const sparcl__kernel_schema sparcl__schema_attn_fwd = {
    .name = "attn_fwd",
    .programs = programs,
    .n_programs = N_OF(programs),
    .params = attn_fwd_params,
    .n_params = N_OF(attn_fwd_params),
    .derived = derived,
    .n_derived = N_OF(derived),
    .check = check,
    .defaults = defaults,
};
