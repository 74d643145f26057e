/*
 * params_decode.c -- the attn_decode family (cl/attn_decode.cl: split-KV
 * decoding for q_len <= SPARCL__DECODE_MAX_Q) and the attn_merge family
 * (cl/attn_merge.cl: combining partial outputs by their LSEs, no tuned
 * parameters): choices, constraints, defaults and the workspace formula.
 */
#include "kernels/params.h"
#include "runtime/error.h"

static const int32_t c_block_n[] = {8, 16, 32, 64, 128};
static const int32_t c_heads[] = {1, 2, 4, 8, 16, 32, 64};
static const int32_t c_splits[] = {1, 2, 4, 8, 16, 32, 64};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_exp[] = {0, 1, 2};
static const int32_t c_wg[] = {1, 4, 8, 16, 32, 64};
static const int32_t c_prefetch[] = {0, 1};
static const int32_t c_pv_rows[] = {1, 2, 4, 8};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

_Static_assert(SPARCL__MERGE_STACKED_MAX >= 64, "SPLITS choices exceed the stacked merge");

static const sparcl__param_def attn_decode_params[] = {
    {SPARCL__P_BLOCK_N, c_block_n, N_OF(c_block_n), "keys per tile"},
    {SPARCL__P_EXP, c_exp, N_OF(c_exp),
     "softmax exponential: 0 exp2, 1 native_exp2, 2 sparcl polynomial"},
    {SPARCL__P_HEADS, c_heads, N_OF(c_heads),
     "query heads of one KV group per work-item (each reads the group's K/V once)"},
    {SPARCL__P_PREFETCH, c_prefetch, N_OF(c_prefetch),
     "1: hint the next tile's K and V rows into the cache while reading this one"},
    {SPARCL__P_PV_ROWS, c_pv_rows, N_OF(c_pv_rows),
     "WG_SIZE=1: query rows whose P.V shares each load of a V vector (1 with WG_SIZE > 1)"},
    {SPARCL__P_SPLITS, c_splits, N_OF(c_splits),
     "most splits of the key range, each a work-item writing a partial result"},
    {SPARCL__P_VEC, c_vec, N_OF(c_vec), "vector width along the head dimension"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg),
     "lanes of a work-group across the head dimension (1: one work-item, the CPU shape)"},
};

/* Query heads per KV head; 1 for problems that do not say (the registry's
 * plain problem). */
static int group_of(const sparcl__problem *prob)
{
    return prob->kv_heads > 0 && prob->q_heads >= prob->kv_heads ? prob->q_heads / prob->kv_heads
                                                                 : 1;
}

static int q_rows(const sparcl__problem *prob)
{
    return prob->q_len > 0 ? prob->q_len : 1;
}

/* Private floats of one work-item: its lanes' share of the queries and
 * accumulators, and the scores. */
static long private_floats(int32_t heads, int32_t bn, int32_t wg, const sparcl__problem *prob)
{
    return (long)heads * q_rows(prob) * (2L * ((prob->head_dim + wg - 1) / wg) + bn);
}

/* Local memory of a work-group of wg > 1 lanes: each lane's partial dot
 * products of a tile and their sums. */
static size_t local_bytes(int32_t heads, int32_t bn, int32_t wg, const sparcl__problem *prob)
{
    return wg > 1 ? ((size_t)wg + 1u) * (size_t)heads * (size_t)q_rows(prob) * (size_t)bn *
                        sizeof(float)
                  : 0u;
}

size_t sparcl__attn_decode_workspace_bytes(const sparcl__pset *p, const sparcl__problem *prob)
{
    const size_t rows = (size_t)prob->batch * (size_t)prob->q_heads * (size_t)q_rows(prob);
    return (size_t)p->v[SPARCL__P_SPLITS] * rows * ((size_t)prob->head_dim + 1u) * sizeof(float);
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
#define BAD(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    const int32_t bn = p->v[SPARCL__P_BLOCK_N], vec = p->v[SPARCL__P_VEC];
    const int32_t heads = p->v[SPARCL__P_HEADS], wg = p->v[SPARCL__P_WG_SIZE];
    const int group = group_of(prob);
    if (q_rows(prob) > SPARCL__DECODE_MAX_Q)
        return BAD("attn_decode takes q_len up to %d; the problem has %d", SPARCL__DECODE_MAX_Q,
                   prob->q_len);
    if (vec > prob->head_dim)
        return BAD("VEC %d exceeds head_dim %d", vec, prob->head_dim);
    if (bn % vec != 0)
        return BAD("BLOCK_N %d must be a multiple of VEC %d", bn, vec);
    if (group % heads != 0)
        return BAD("HEADS %d must divide the %d query heads of a KV group", heads, group);
    if (wg > 1 && p->v[SPARCL__P_PV_ROWS] != 1)
        return BAD("PV_ROWS %d applies to WG_SIZE=1 only (1 with WG_SIZE %d)",
                   p->v[SPARCL__P_PV_ROWS], wg);
    if (p->v[SPARCL__P_PV_ROWS] > 1 && p->v[SPARCL__P_PV_ROWS] > heads * q_rows(prob))
        return BAD("PV_ROWS %d exceeds the HEADS %d x q_len %d rows of a work-item",
                   p->v[SPARCL__P_PV_ROWS], heads, q_rows(prob));
    if (wg > 1 && (long)wg * vec > prob->head_dim)
        return BAD("WG_SIZE %d lanes of VEC %d exceed head_dim %d", wg, vec, prob->head_dim);
    const long priv = private_floats(heads, bn, wg, prob);
    if (priv > SPARCL__PRIVATE_FLOATS_MAX)
        return BAD("HEADS %d x q_len %d x (2 x head_dim %d / WG_SIZE %d + BLOCK_N %d) = %ld "
                   "private floats exceeds %d",
                   heads, q_rows(prob), prob->head_dim, wg, bn, priv, SPARCL__PRIVATE_FLOATS_MAX);
    if (limits && (size_t)wg > limits->max_wg_size)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "WG_SIZE %d exceeds the device's max work-group size %zu", wg,
                            limits->max_wg_size);
    if (limits && local_bytes(heads, bn, wg, prob) > limits->local_mem)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "WG_SIZE %d lanes need %zu bytes of local memory; the device has %llu",
                            wg, local_bytes(heads, bn, wg, prob),
                            (unsigned long long)limits->local_mem);
    if (limits && limits->max_alloc &&
        sparcl__attn_decode_workspace_bytes(p, prob) > limits->max_alloc)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "SPLITS %d needs a %zu-byte workspace; the device allocates at most "
                            "%llu bytes at once",
                            p->v[SPARCL__P_SPLITS], sparcl__attn_decode_workspace_bytes(p, prob),
                            (unsigned long long)limits->max_alloc);
    return SPARCL_OK;
#undef BAD
}

static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    const sparcl__kernel_schema *f = &sparcl__schema_attn_decode;
    const int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    sparcl__pset_default(f, p, SPARCL__P_BLOCK_N, 32);
    sparcl__pset_default(f, p, SPARCL__P_EXP, cpu ? 2 : 0);
    /* CPUs: the hardware prefetcher alone leaves the loop waiting on K and
     * V (measured with perf: 70% of the kernel's samples at the loads). */
    sparcl__pset_default(f, p, SPARCL__P_PREFETCH, cpu ? 1 : 0);
    const int32_t bn = p->v[SPARCL__P_BLOCK_N];
    int32_t vec = 1;
    while (vec * 2 <= prob->head_dim && vec < (cpu ? 16 : 4) && bn % (vec * 2) == 0)
        vec *= 2;
    sparcl__pset_default(f, p, SPARCL__P_VEC, vec);
    /* GPUs: up to 32 lanes across the head dimension, one VEC-vector each;
     * CPUs: one work-item per group. */
    vec = p->v[SPARCL__P_VEC];
    int32_t wg = 1;
    while (!cpu && wg < 32 && (long)wg * 2 * vec <= prob->head_dim &&
           (!limits || (size_t)wg * 2 <= limits->max_wg_size))
        wg *= 2;
    sparcl__pset_default(f, p, SPARCL__P_WG_SIZE, wg);
    wg = p->v[SPARCL__P_WG_SIZE];
    /* As many heads of the group as fit the private and local budgets:
     * each K/V row is then read once for all of them. */
    const int group = group_of(prob);
    int32_t heads = 1;
    while (heads * 2 <= 64 && group % (heads * 2) == 0 &&
           private_floats(heads * 2, bn, wg, prob) <= SPARCL__PRIVATE_FLOATS_MAX &&
           (!limits || local_bytes(heads * 2, bn, wg, prob) <= limits->local_mem))
        heads *= 2;
    sparcl__pset_default(f, p, SPARCL__P_HEADS, heads);
    /* P.V's rows per V load: 1, the only choice of the GPU shape; on the
     * CPU shape 2 gained 1.05x on one half-cache problem and 4 nothing
     * (AVX-512), so the tuner decides. */
    sparcl__pset_default(f, p, SPARCL__P_PV_ROWS, 1);
    /* Splits: about four work-items per compute unit over the call, each
     * with at least a few tiles. */
    const long items = (long)(prob->batch > 0 ? prob->batch : 1) *
                       (prob->kv_heads > 0 ? prob->kv_heads : 1) * (group / p->v[SPARCL__P_HEADS]);
    const long want = 4L * (limits && limits->compute_units ? (long)limits->compute_units : 4);
    const long tiles = prob->kv_len > 0 ? (prob->kv_len + bn - 1) / bn : 1;
    int32_t splits = 1;
    while (splits < 64 && items * splits < want && tiles / (splits * 2) >= 4)
        splits *= 2;
    sparcl__pset_default(f, p, SPARCL__P_SPLITS, splits);
}

static const sparcl__kernel_decl decode_kernels[] = {{"attn_decode", 0}};
static const sparcl__program_decl decode_programs[] = {
    {"attn_decode.cl", decode_kernels, N_OF(decode_kernels)},
};
static const sparcl__param_id decode_derived[] = {SPARCL__P_DTYPE, SPARCL__P_HEAD_DIM,
                                                  SPARCL__P_QROWS};

const sparcl__kernel_schema sparcl__schema_attn_decode = {
    .name = "attn_decode",
    .programs = decode_programs,
    .n_programs = N_OF(decode_programs),
    .params = attn_decode_params,
    .n_params = N_OF(attn_decode_params),
    .derived = decode_derived,
    .n_derived = N_OF(decode_derived),
    .check = check,
    .defaults = defaults,
};

static const sparcl__kernel_decl merge_kernels[] = {{"attn_merge", 0}, {"attn_merge_stacked", 0}};
static const sparcl__program_decl merge_programs[] = {
    {"attn_merge.cl", merge_kernels, N_OF(merge_kernels)},
};

/* DTYPE: the storage of attn_merge_stacked's output (the decoding plan's);
 * the public sparcl_merge is float. */
static const sparcl__param_id merge_derived[] = {SPARCL__P_DTYPE};

const sparcl__kernel_schema sparcl__schema_attn_merge = {
    .name = "attn_merge",
    .programs = merge_programs,
    .n_programs = N_OF(merge_programs),
    .derived = merge_derived,
    .n_derived = N_OF(merge_derived),
};
