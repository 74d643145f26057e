/*
 * params_span.c -- the attn_span family (cl/attn_span.cl), the adaptive
 * span kind's forward and backward kernels: choices, constraints, device
 * limits and defaults, as data the runtime and the tuner read alike.
 *
 * One parameter set serves the three main kernels: attn_span_fwd and
 * attn_span_bwd_dq give each work-item ROWS = BLOCK_M / WG_SIZE query rows
 * and walk the keys in tiles of BLOCK_N; attn_span_bwd_dkv gives it
 * COLS = BLOCK_N / WG_SIZE keys and walks the queries in tiles of BLOCK_M.
 * USE_LOCAL stages the tile a group shares (K and V rows, or Q and dO rows)
 * in local memory.  The checks of the span fields of a descriptor live
 * here too, shared by the plan and the reference.
 */
#include <math.h>

#include "kernels/params.h"
#include "runtime/error.h"

static const int32_t c_block[] = {1, 2, 4, 8, 16, 32, 64};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64};
static const int32_t c_bool[] = {0, 1};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_span_params[] = {
    {SPARCL__P_BLOCK_M, c_block, N_OF(c_block),
     "query rows per tile (forward and dQ work-group, dK/dV query tile)"},
    {SPARCL__P_BLOCK_N, c_block, N_OF(c_block),
     "keys per tile (dK/dV work-group, forward and dQ key tile)"},
    {SPARCL__P_USE_LOCAL, c_bool, N_OF(c_bool), "stage the shared tile in __local memory"},
    {SPARCL__P_VEC, c_vec, N_OF(c_vec), "vector width along the head dimension"},
    {SPARCL__P_WG_SIZE, c_wg, N_OF(c_wg), "work-items per work-group"},
};

size_t sparcl__attn_span_local_bytes(const sparcl__pset *p, const sparcl__problem *prob)
{
    if (!p->v[SPARCL__P_USE_LOCAL])
        return 0;
    const size_t bm = (size_t)p->v[SPARCL__P_BLOCK_M], bn = (size_t)p->v[SPARCL__P_BLOCK_N];
    /* Two rows of head_dim floats per staged row; the dK/dV kernel also
     * stages each query row's lse and D. */
    const size_t rows = bm > bn ? bm : bn;
    return (2u * rows * (size_t)prob->head_dim + 2u * bm) * sizeof(float);
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    /* The work-item tile rules of the sparse normalizations' backward.
     * Forward and dQ: q, dO and dQ (q and the output) per row plus a tile
     * of scores and masks; dK/dV: k, v, dK and dV per key. */
    sparcl_status st = sparcl__pset_item_tile_check(
        ctx, p, prob, limits, 3L * prob->head_dim + 2L * p->v[SPARCL__P_BLOCK_N],
        4L * prob->head_dim);
    if (st != SPARCL_OK)
        return st;
    const size_t local = sparcl__attn_span_local_bytes(p, prob);
    if (limits && limits->local_mem && local > limits->local_mem)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "USE_LOCAL tiles need %zu bytes of local memory; the device has %llu",
                            local, (unsigned long long)limits->local_mem);
    return SPARCL_OK;
}

static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    const sparcl__kernel_schema *s = &sparcl__schema_attn_span;
    const int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    /* CPU (POCL): one work-item per group holding several rows, reading
     * global memory (local memory is emulated there).  GPU: one row and
     * one key per work-item, 32-row tiles staged in local memory, halved
     * while the device's local memory cannot hold them. */
    /* Tiles the caller chose are checked as given, never shrunk. */
    const unsigned given = p->set & ((1u << SPARCL__P_WG_SIZE) | (1u << SPARCL__P_BLOCK_M) |
                                     (1u << SPARCL__P_BLOCK_N) | (1u << SPARCL__P_USE_LOCAL));
    sparcl__pset_item_tile_defaults(s, p, prob, limits, 32, 4, 4);
    sparcl__pset_default(s, p, SPARCL__P_USE_LOCAL, cpu ? 0 : 1);
    while (!given && p->v[SPARCL__P_USE_LOCAL] && limits && limits->local_mem &&
           sparcl__attn_span_local_bytes(p, prob) > limits->local_mem) {
        if (p->v[SPARCL__P_WG_SIZE] == 1) {
            p->v[SPARCL__P_USE_LOCAL] = 0;
            break;
        }
        p->v[SPARCL__P_WG_SIZE] /= 2;
        p->v[SPARCL__P_BLOCK_M] /= 2;
        p->v[SPARCL__P_BLOCK_N] /= 2;
    }
}

static const sparcl__kernel_decl kernels[] = {{"attn_span_fwd", 1},
                                              {"attn_span_bwd_dq", 1},
                                              {"attn_span_bwd_dkv", 1},
                                              {"attn_span_bwd_dz", 0}};
static const sparcl__program_decl programs[] = {{"attn_span.cl", kernels, N_OF(kernels)}};
static const sparcl__param_id derived[] = {SPARCL__P_DTYPE, SPARCL__P_HEAD_DIM, SPARCL__P_ROWS,
                                           SPARCL__P_COLS};

const sparcl__kernel_schema sparcl__schema_attn_span = {
    .name = "attn_span",
    .programs = programs,
    .n_programs = N_OF(programs),
    .params = attn_span_params,
    .n_params = N_OF(attn_span_params),
    .derived = derived,
    .n_derived = N_OF(derived),
    .check = check,
    .defaults = defaults,
};

sparcl_status sparcl__span_values_check(sparcl_ctx *ctx, const float *spans, int heads,
                                        const char *what)
{
    for (int h = 0; spans && h < heads; ++h)
        if (!(spans[h] >= 0.0f) || isinf(spans[h]))
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s[%d] is %g; a span must be finite and >= 0", what, h,
                                (double)spans[h]);
    return SPARCL_OK;
}

sparcl_status sparcl__span_desc_check(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
    if (!(d->span_ramp > 0.0f) || isinf(d->span_ramp))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "span_ramp %g must be finite and > 0 for adaptive span",
                            (double)d->span_ramp);
    return sparcl__span_values_check(ctx, d->spans, d->q_heads, "spans");
}
