/*
 * params_clblast.c -- the parameter schema of clblast_xgemm: CLBlast's
 * XgemmDirect kernel, the SGEMM the dense path (attn_fwd ALGO=1) runs its two
 * strided-batched products with.  CLBlast builds the kernel itself; sparcl
 * only declares the space (the parameter names are CLBlast's, as
 * CLBlastOverrideParameters takes them), its constraints and a default, so
 * that sparcl-tune can tune it per device and plans can apply the stored
 * row (plan/gemm_params.c).  The constraints are those the kernel's tile
 * loops need: every tile dimension divides the work-group tile WGD.
 */
#include <clblast_c.h>

#include "kernels/params.h"
#include "runtime/error.h"

#define STR_(x) #x
#define STR(x) STR_(x)

static const int32_t c_wgd[] = {8, 16, 32, 64};
static const int32_t c_dim[] = {4, 8, 16, 32};
static const int32_t c_kwid[] = {2, 8, 16};
static const int32_t c_vw[] = {1, 2, 4, 8};
static const int32_t c_bool[] = {0, 1};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def clblast_params[] = {
    {SPARCL__P_KWID, c_kwid, N_OF(c_kwid), "unroll factor of the k loop (divides WGD)"},
    {SPARCL__P_MDIMAD, c_dim, N_OF(c_dim), "work-items along m when loading A into local memory"},
    {SPARCL__P_MDIMCD, c_dim, N_OF(c_dim), "work-items along m of the work-group"},
    {SPARCL__P_NDIMBD, c_dim, N_OF(c_dim), "work-items along n when loading B into local memory"},
    {SPARCL__P_NDIMCD, c_dim, N_OF(c_dim), "work-items along n of the work-group"},
    {SPARCL__P_PADA, c_bool, N_OF(c_bool), "pad A's local tile by one column"},
    {SPARCL__P_PADB, c_bool, N_OF(c_bool), "pad B's local tile by one column"},
    {SPARCL__P_VWMD, c_vw, N_OF(c_vw), "vector width along m"},
    {SPARCL__P_VWND, c_vw, N_OF(c_vw), "vector width along n"},
    {SPARCL__P_WGD, c_wgd, N_OF(c_wgd), "square tile of C per work-group (m = n = k tile)"},
};

/* WGD must be a multiple of `by`; names the quantity otherwise. */
static sparcl_status multiple(sparcl_ctx *ctx, int32_t wgd, int32_t by, const char *what)
{
    if (by > 0 && wgd % by == 0)
        return SPARCL_OK;
    return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "WGD %d must be a multiple of %s = %d",
                        wgd, what, by);
}

static sparcl_status check(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits)
{
    (void)prob;
    const int32_t wgd = p->v[SPARCL__P_WGD], mc = p->v[SPARCL__P_MDIMCD],
                  nc = p->v[SPARCL__P_NDIMCD], ma = p->v[SPARCL__P_MDIMAD],
                  nb = p->v[SPARCL__P_NDIMBD], vm = p->v[SPARCL__P_VWMD], vn = p->v[SPARCL__P_VWND];
    const int32_t threads = mc * nc;
    if (threads % ma || threads % nb)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "MDIMCD x NDIMCD = %d must be a multiple of MDIMAD %d and NDIMBD %d",
                            threads, ma, nb);
    sparcl_status st;
    if ((st = multiple(ctx, wgd, p->v[SPARCL__P_KWID], "KWID")) != SPARCL_OK ||
        (st = multiple(ctx, wgd, mc * vm, "MDIMCD x VWMD")) != SPARCL_OK ||
        (st = multiple(ctx, wgd, nc * vn, "NDIMCD x VWND")) != SPARCL_OK ||
        (st = multiple(ctx, wgd, ma * vm, "MDIMAD x VWMD")) != SPARCL_OK ||
        (st = multiple(ctx, wgd, nb * vn, "NDIMBD x VWND")) != SPARCL_OK ||
        (st = multiple(ctx, wgd, threads / ma, "MDIMCD x NDIMCD / MDIMAD")) != SPARCL_OK ||
        (st = multiple(ctx, wgd, threads / nb, "MDIMCD x NDIMCD / NDIMBD")) != SPARCL_OK)
        return st;
    if (limits) {
        if ((size_t)threads > limits->max_wg_size)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "MDIMCD x NDIMCD = %d work-items exceed the device's %zu", threads,
                                limits->max_wg_size);
        const size_t local = ((size_t)wgd * (size_t)(wgd + p->v[SPARCL__P_PADA]) +
                              (size_t)wgd * (size_t)(wgd + p->v[SPARCL__P_PADB])) *
                             sizeof(float);
        if (limits->local_mem && local > limits->local_mem)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "WGD %d needs %zu bytes of local memory, the device has %llu", wgd,
                                local, (unsigned long long)limits->local_mem);
    }
    return SPARCL_OK;
}

/* The tuner's starting point, valid on any device with 64 work-items and
 * 8.5 KiB of local memory.  Plans apply nothing without a stored row
 * (CLBlast keeps its own database's choice). */
static void defaults(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits)
{
    (void)prob;
    (void)limits;
    const sparcl__kernel_schema *s = &sparcl__schema_clblast;
    sparcl__pset_default(s, p, SPARCL__P_WGD, 32);
    sparcl__pset_default(s, p, SPARCL__P_MDIMCD, 8);
    sparcl__pset_default(s, p, SPARCL__P_NDIMCD, 8);
    sparcl__pset_default(s, p, SPARCL__P_MDIMAD, 8);
    sparcl__pset_default(s, p, SPARCL__P_NDIMBD, 8);
    sparcl__pset_default(s, p, SPARCL__P_KWID, 2);
    sparcl__pset_default(s, p, SPARCL__P_VWMD, 1);
    sparcl__pset_default(s, p, SPARCL__P_VWND, 1);
    sparcl__pset_default(s, p, SPARCL__P_PADA, 1);
    sparcl__pset_default(s, p, SPARCL__P_PADB, 1);
}

const sparcl__kernel_schema sparcl__schema_clblast = {
    .name = "clblast_xgemm",
    .external = "CLBlast " STR(CLBLAST_VERSION_MAJOR) "." STR(CLBLAST_VERSION_MINOR) "." STR(
        CLBLAST_VERSION_PATCH) " XgemmDirect (SGEMM, strided batched)",
    .params = clblast_params,
    .n_params = N_OF(clblast_params),
    .check = check,
    .defaults = defaults,
};
