/*
 * params_item_tile.c -- the work-item tile rules shared by the kernel
 * families whose work-items each hold a few query rows and a few keys in
 * private memory: which tiles are valid for a problem and a device, and
 * which a plan takes by default.  attn_bwd (params_bwd.c) shares the
 * rows-and-keys rule; attn_entmax_bwd and attn_span (params_entmax_bwd.c,
 * params_span.c) share all of it, passing what differs: the private floats
 * per row and per key, the tile sizes.
 */
#include "kernels/params.h"
#include "runtime/error.h"

sparcl_status sparcl__pset_rows_cols(sparcl_ctx *ctx, const sparcl__pset *p, int32_t *rows,
                                     int32_t *cols)
{
    const int32_t bm = p->v[SPARCL__P_BLOCK_M], bn = p->v[SPARCL__P_BLOCK_N];
    const int32_t wg = p->v[SPARCL__P_WG_SIZE];
    *rows = *cols = 0;
    if (bm % wg != 0 || bn % wg != 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M %d and BLOCK_N %d must be multiples of WG_SIZE %d", bm, bn,
                            wg);
    *rows = bm / wg;
    *cols = bn / wg;
    if (*rows > 16 || *cols > 16)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "rows %d and keys %d per work-item (BLOCK_M, BLOCK_N / WG_SIZE) "
                            "must not exceed 16",
                            *rows, *cols);
    return SPARCL_OK;
}

sparcl_status sparcl__pset_item_tile_check(sparcl_ctx *ctx, const sparcl__pset *p,
                                           const sparcl__problem *prob,
                                           const sparcl__device_limits *limits, long row_floats,
                                           long key_floats)
{
    const int32_t bn = p->v[SPARCL__P_BLOCK_N];
    const int32_t wg = p->v[SPARCL__P_WG_SIZE], vec = p->v[SPARCL__P_VEC];
    int32_t rows, cols;
    sparcl_status st = sparcl__pset_rows_cols(ctx, p, &rows, &cols);
    if (st != SPARCL_OK)
        return st;
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

void sparcl__pset_item_tile_defaults(const sparcl__kernel_schema *s, sparcl__pset *p,
                                     const sparcl__problem *prob,
                                     const sparcl__device_limits *limits, int32_t gpu_wg,
                                     int32_t cpu_block_m, int32_t cpu_block_n)
{
    const int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    const int wide = prob->head_dim > 128;
    int32_t wg = cpu ? 1 : gpu_wg;
    if (limits && (size_t)wg > limits->max_wg_size)
        wg = 1;
    sparcl__pset_default(s, p, SPARCL__P_WG_SIZE, wg);
    sparcl__pset_default(s, p, SPARCL__P_BLOCK_M,
                         cpu ? (wide ? cpu_block_m / 2 : cpu_block_m) : wg);
    sparcl__pset_default(s, p, SPARCL__P_BLOCK_N,
                         cpu ? (wide ? cpu_block_n / 2 : cpu_block_n) : wg);
    int32_t vec = 1;
    while (vec * 2 <= prob->head_dim && vec < (cpu ? 16 : 4))
        vec *= 2;
    sparcl__pset_default(s, p, SPARCL__P_VEC, vec);
}
