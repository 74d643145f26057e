/*
 * params_lsh.c -- the attn_lsh family: the three kernels of LSH attention
 * (cl/attn_lsh_hash.cl, attn_lsh_gather.cl, attn_lsh_chunk.cl, and the parameterless
 * attn_lsh_sort family of attn_lsh_sort.cl; see sparcl.h, "LSH attention")
 * as data.  Tuned: the chunk attention's query rows per
 * work-item (BLOCK_M), keys per step (BLOCK_N), the vector width along the
 * head dimension (VEC), which the hash kernel also uses across rotation
 * columns (it never changes a bucket: every lane is its own fma chain), and
 * the work-group size of both (WG_SIZE).  DTYPE, the storage of q and v,
 * comes from the problem.
 */
#include "kernels/params.h"
#include "runtime/error.h"

static const int32_t c_block_m[] = {1, 2, 4, 8, 16};
static const int32_t c_block_n[] = {4, 8, 16, 32, 64};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_lsh_params[] = {
    {SPARCL__P_BLOCK_M, c_block_m, N_OF(c_block_m),
     "sorted queries per work-item of the chunk attention (they share key loads)"},
    {SPARCL__P_BLOCK_N, c_block_n, N_OF(c_block_n), "keys scored per online-softmax step"},
    {SPARCL__P_VEC, c_vec, N_OF(c_vec),
     "vector width along the head dimension (and across rotation columns when hashing)"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg),
     "work-items per work-group of the hash and chunk kernels (POCL runs a group's private "
     "arrays on one stack: keep it small on CPUs)"},
};

/* Private floats of one chunk work-item: its queries and accumulators, and
 * one step's scores and weights (the keys are read in place). */
static long private_floats(int32_t bm, int32_t bn, const sparcl__problem *prob)
{
    return (long)bm * (2L * prob->head_dim + 2L * bn);
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    (void)limits;
    const int32_t bm = p->v[SPARCL__P_BLOCK_M], bn = p->v[SPARCL__P_BLOCK_N];
    const int32_t vec = p->v[SPARCL__P_VEC];
    if (vec > prob->head_dim)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "VEC %d exceeds head_dim %d", vec,
                            prob->head_dim);
    if (bn % vec != 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_N %d must be a multiple of VEC %d (scores are VEC keys wide)",
                            bn, vec);
    const long priv = private_floats(bm, bn, prob);
    if (priv > SPARCL__PRIVATE_FLOATS_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M %d x (2 x head_dim %d + 2 x BLOCK_N %d) = %ld private floats "
                            "exceeds %d",
                            bm, prob->head_dim, bn, priv, SPARCL__PRIVATE_FLOATS_MAX);
    return SPARCL_OK;
}

static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    const sparcl__kernel_schema *f = &sparcl__schema_attn_lsh;
    const int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    sparcl__pset_default(f, p, SPARCL__P_BLOCK_N, 16);
    int32_t vec = 1;
    while (vec * 2 <= prob->head_dim && vec < (cpu ? 16 : 4) &&
           p->v[SPARCL__P_BLOCK_N] % (vec * 2) == 0)
        vec *= 2;
    sparcl__pset_default(f, p, SPARCL__P_VEC, vec);
    int32_t bm = cpu ? 4 : 1;
    while (bm > 1 && private_floats(bm, p->v[SPARCL__P_BLOCK_N], prob) > SPARCL__PRIVATE_FLOATS_MAX)
        bm /= 2;
    sparcl__pset_default(f, p, SPARCL__P_BLOCK_M, bm);
    sparcl__pset_default(f, p, SPARCL__P_WG_SIZE, cpu ? 1 : 64);
}

static const sparcl__kernel_decl hash_kernels[] = {{"attn_lsh_hash", 1}};
static const sparcl__kernel_decl chunk_kernels[] = {{"attn_lsh_chunk", 1}};
static const sparcl__kernel_decl gather_kernels[] = {{"attn_lsh_gather", 1}};
static const sparcl__program_decl programs[] = {
    {"attn_lsh_chunk.cl", chunk_kernels, N_OF(chunk_kernels)},
    {"attn_lsh_gather.cl", gather_kernels, N_OF(gather_kernels)},
    {"attn_lsh_hash.cl", hash_kernels, N_OF(hash_kernels)},
};
static const sparcl__param_id derived[] = {SPARCL__P_DTYPE, SPARCL__P_HEAD_DIM};

const sparcl__kernel_schema sparcl__schema_attn_lsh = {
    .name = "attn_lsh",
    .programs = programs,
    .n_programs = N_OF(programs),
    .params = attn_lsh_params,
    .n_params = N_OF(attn_lsh_params),
    .derived = derived,
    .n_derived = N_OF(derived),
    .check = check,
    .defaults = defaults,
};

/* The counting sort reads no parameter: a family of its own, so that one
 * program serves every plan (as attn_merge does). */
static const sparcl__kernel_decl sort_kernels[] = {{"attn_lsh_sort", 0}};
static const sparcl__program_decl sort_programs[] = {
    {"attn_lsh_sort.cl", sort_kernels, N_OF(sort_kernels)},
};

const sparcl__kernel_schema sparcl__schema_attn_lsh_sort = {
    .name = "attn_lsh_sort",
    .programs = sort_programs,
    .n_programs = N_OF(sort_programs),
};
