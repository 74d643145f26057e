/*
 * params_bwd.c -- the parameter schema of the backward attention kernels
 * (cl/attn_bwd.cl): choices, constraints, device limits and defaults, as
 * data the runtime and the tuner read alike.
 *
 * One tile serves the kernels: attn_bwd_dq gives each work-item
 * ROWS = BLOCK_M / WG_SIZE query rows, attn_bwd_dkv and attn_bwd_fused give
 * it COLS = BLOCK_N / WG_SIZE keys and take ROWS query rows at a time.  Both
 * must be whole and at most 16: they are the score vectors' widths (lanes
 * run across rows and keys, not along the head dimension).  ALGO picks the
 * two-kernel path (0) or the one-pass kernel (1, with SPLIT key-tile
 * partitions per kv head); VEC is the width of the polynomial exp2 (EXP=2),
 * of the row copies and of ALGO=1's dQ update.  Both are deterministic.
 * DTYPE (the storage of q, k, v, out and their gradients) is derived from
 * the problem's dtype.
 */
#include <stdio.h>

#include "kernels/params.h"
#include "runtime/error.h"

static const int32_t c_block[] = {1, 2, 4, 8, 16, 32, 64, 128};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const int32_t c_bool[] = {0, 1};
static const int32_t c_exp[] = {0, 1, 2};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_split[] = {1, 2, 4, 8};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_bwd_params[] = {
    {SPARCL__P_ALGO, c_bool, N_OF(c_bool),
     "0 separate dQ and dK/dV kernels, 1 one pass per key tile (WG_SIZE=1, USE_LOCAL=0)"},
    {SPARCL__P_BLOCK_M, c_block, N_OF(c_block), "query rows per tile (dQ work-group)"},
    {SPARCL__P_BLOCK_N, c_block, N_OF(c_block), "keys per tile (dK/dV work-group)"},
    {SPARCL__P_EXP, c_exp, N_OF(c_exp), "exponential: 0 exp2, 1 native_exp2, 2 sparcl polynomial"},
    {SPARCL__P_SPLIT, c_split, N_OF(c_split),
     "ALGO=1: key-tile partitions per kv head, each with a partial dQ buffer when > 1"},
    {SPARCL__P_USE_LOCAL, c_bool, N_OF(c_bool), "stage shared rows in __local memory"},
    {SPARCL__P_VEC, c_vec, N_OF(c_vec),
     "vector width of the polynomial exp2, the row copies and ALGO=1's dQ update"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg), "work-items per work-group"},
};

size_t sparcl__attn_bwd_local_bytes(const sparcl__pset *p, const sparcl__problem *prob)
{
    if (!p->v[SPARCL__P_USE_LOCAL])
        return 0;
    size_t d = (size_t)prob->head_dim;
    size_t dq = 2u * (size_t)p->v[SPARCL__P_BLOCK_N] * d * 4u;         /* K, V tiles */
    size_t dkv = 2u * (size_t)p->v[SPARCL__P_BLOCK_M] * (d + 1u) * 4u; /* Q, dO tiles, LSE, D */
    return dq + dkv;
}

int sparcl__attn_bwd_fit(sparcl__pset *p, const sparcl__problem *prob,
                         const sparcl__device_limits *limits)
{
    int changed = 0;
    while (limits && p->v[SPARCL__P_USE_LOCAL] &&
           sparcl__attn_bwd_local_bytes(p, prob) > limits->local_mem) {
        const sparcl__param_id tile[3] = {SPARCL__P_BLOCK_M, SPARCL__P_BLOCK_N, SPARCL__P_WG_SIZE};
        int halve = 1;
        for (int i = 0; i < 3; ++i)
            halve &= p->v[tile[i]] >= 2;
        if (halve) /* keeps ROWS and COLS */
            for (int i = 0; i < 3; ++i)
                p->v[tile[i]] /= 2;
        else
            p->v[SPARCL__P_USE_LOCAL] = 0;
        changed = 1;
    }
    return changed;
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    const int32_t wg = p->v[SPARCL__P_WG_SIZE], algo = p->v[SPARCL__P_ALGO];
    int32_t rows, cols;
    sparcl_status st = sparcl__pset_rows_cols(ctx, p, &rows, &cols);
    if (st != SPARCL_OK)
        return st;
    if (algo == 1 && (wg != 1 || p->v[SPARCL__P_USE_LOCAL]))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "ALGO=1 (one pass) needs WG_SIZE=1 and USE_LOCAL=0");
    if (algo == 0 && p->v[SPARCL__P_SPLIT] != 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "SPLIT %d applies to ALGO=1 only (1 with ALGO=0)",
                            p->v[SPARCL__P_SPLIT]);
    if (p->v[SPARCL__P_VEC] > prob->head_dim)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "VEC %d exceeds head_dim %d",
                            p->v[SPARCL__P_VEC], prob->head_dim);
    /* dq holds q, dO and dQ rows; dkv and fused hold k, v, dK and dV rows
     * (and copies of the ROWS q and dO rows of a pass, at most 32 rows). */
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
    const sparcl__kernel_schema *s = &sparcl__schema_attn_bwd;
    int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    /* The tile shape is the device's default only when the caller forced
     * none of it: a forced shape is checked as given. */
    const sparcl__param_id shape[4] = {SPARCL__P_BLOCK_M, SPARCL__P_BLOCK_N, SPARCL__P_WG_SIZE,
                                       SPARCL__P_USE_LOCAL};
    int forced = 0;
    for (int i = 0; i < 4; ++i)
        forced |= sparcl__pset_has(p, shape[i]);
    if (cpu && !sparcl__pset_has(p, SPARCL__P_ALGO) &&
        (!sparcl__pset_has(p, SPARCL__P_WG_SIZE) || p->v[SPARCL__P_WG_SIZE] == 1) &&
        (!sparcl__pset_has(p, SPARCL__P_USE_LOCAL) || !p->v[SPARCL__P_USE_LOCAL]))
        sparcl__pset_default(s, p, SPARCL__P_ALGO, 1);
    sparcl__pset_default(s, p, SPARCL__P_ALGO, 0);
    if (cpu || p->v[SPARCL__P_ALGO] == 1) { /* ALGO=1 runs one work-item per group */
        /* POCL: one work-item per group holding 16 keys as float16 lanes, 4
         * query rows at a time, the polynomial exp2 (measured with
         * sparcl-bench and interleaved runs on a 2-core AVX2 EPYC: 4 x 16
         * beat 8 x 8, 8 x 16 and 16 x 8 by 10-30%; shared/notes/pocl.md).
         * Wide heads: fewer rows and keys, to stay within private memory. */
        int32_t bm = 4, bn = 16;
        while (bm > 1 && 3L * bm * prob->head_dim > SPARCL__PRIVATE_FLOATS_MAX)
            bm /= 2;
        while (bn > 1 && 4L * bn * prob->head_dim > SPARCL__PRIVATE_FLOATS_MAX)
            bn /= 2;
        sparcl__pset_default(s, p, SPARCL__P_WG_SIZE, 1);
        sparcl__pset_default(s, p, SPARCL__P_BLOCK_M, bm);
        sparcl__pset_default(s, p, SPARCL__P_BLOCK_N, bn);
        sparcl__pset_default(s, p, SPARCL__P_USE_LOCAL, 0);
        sparcl__pset_default(s, p, SPARCL__P_EXP, 2);
    } else {
        /* GPU: one row or key per work-item, shared tiles in local memory,
         * the largest square tile whose program fits the device. */
        int32_t t = 64;
        while (t > 1 && limits && (size_t)t > limits->max_wg_size)
            t /= 2;
        sparcl__pset_default(s, p, SPARCL__P_WG_SIZE, t);
        sparcl__pset_default(s, p, SPARCL__P_BLOCK_M, t);
        sparcl__pset_default(s, p, SPARCL__P_BLOCK_N, t);
        sparcl__pset_default(s, p, SPARCL__P_USE_LOCAL, 1);
        sparcl__pset_default(s, p, SPARCL__P_EXP, 0);
        if (!forced)
            sparcl__attn_bwd_fit(p, prob, limits);
    }
    const int one_pass = p->v[SPARCL__P_ALGO] == 1;
    /* CPU and ALGO=1: the widest power of two up to 16 within head_dim (for
     * the dQ update 16 beat 8 by about 7% in interleaved runs on AVX2, where
     * a float16 is two registers, and 4 by 20%).  GPU: 1. */
    int32_t vec = 1;
    while ((cpu || one_pass) && vec < 16 && vec * 2 <= prob->head_dim)
        vec *= 2;
    sparcl__pset_default(s, p, SPARCL__P_VEC, vec);
    /* Enough partitions to give every compute unit a work-item.  Not two
     * (the rule until 2026-12-01): each partition past the first adds a
     * partial dQ buffer and its reduction.  On 2 cores (AVX-512 EPYC,
     * POCL 3.1) with 2 heads, SPLIT=1 against SPLIT=2 in all five attn_bwd
     * problems of sparcl-tune's quick set (dense, causal, window, BigBird):
     * faster at the median of 7 interleaved rounds in 73 of the 74 tuning
     * runs that timed both (1.01-1.19x), 1.01-1.18x in each of 43
     * re-timings in 15 rounds; causal n=4096 1.03x.  With 1 head, SPLIT=2
     * and 4 ran alike (1.005x) and 1 at half speed
     * (tuner/stability-report.md, 24th measurement). */
    int32_t split = 1;
    if (one_pass && limits) {
        long items = (long)prob->batch * prob->kv_heads;
        while (split < 8 && items * split < (long)limits->compute_units)
            split *= 2;
    }
    sparcl__pset_default(s, p, SPARCL__P_SPLIT, split);
}

static const sparcl__kernel_decl kernels[] = {{"attn_bwd_pre", 0},
                                              {"attn_bwd_dq", 1},
                                              {"attn_bwd_dkv", 1},
                                              {"attn_bwd_fused", 1},
                                              {"attn_bwd_reduce", 0}};
static const sparcl__program_decl programs[] = {{"attn_bwd.cl", kernels, N_OF(kernels)}};
static const sparcl__param_id derived[] = {SPARCL__P_DTYPE, SPARCL__P_HEAD_DIM, SPARCL__P_ROWS};
/* SPLIT fills the compute units from batch * kv_heads: 2 for one head on
 * 2 cores, 1 for 2 heads and for 8 (where 2 measured 1.09x slower). */
static const sparcl__param_id per_problem[] = {SPARCL__P_SPLIT};

const sparcl__kernel_schema sparcl__schema_attn_bwd = {
    .name = "attn_bwd",
    .programs = programs,
    .n_programs = N_OF(programs),
    .params = attn_bwd_params,
    .n_params = N_OF(attn_bwd_params),
    .derived = derived,
    .n_derived = N_OF(derived),
    .per_problem = per_problem,
    .n_per_problem = N_OF(per_problem),
    .check = check,
    .defaults = defaults,
};
