/*
 * kernel_build.c -- the one road from parameters to kernels (see
 * kernel_build.h).  Nothing else in the library writes a build option or
 * calls clCreateKernel.
 */
#include <stdio.h>
#include <string.h>

#include "kernels/kernel_registry.h"
#include "plan/kernel_build.h"
#include "runtime/error.h"
#include "runtime/program.h"
#include "tuning/tuning_lookup.h"

sparcl_status sparcl__family_choose(sparcl_ctx *ctx, const sparcl__kernel_schema *f,
                                    const sparcl_plan_desc *desc, int defaults_only,
                                    sparcl__pset *out, sparcl_param_source *source, char *origin,
                                    size_t size)
{
    sparcl_status st = sparcl__kernel_registry_check(ctx);
    if (st != SPARCL_OK)
        return st;
    sparcl_params chosen;
    sparcl_params_clear(&chosen);
    *source = SPARCL_PARAMS_DEFAULT;
    if (defaults_only)
        snprintf(origin, size, "built-in defaults");
    else
        sparcl__tuning_choose(ctx, f, desc, &chosen, source, origin, size);
    if ((st = sparcl__pset_from_params(ctx, f, &chosen, out)) != SPARCL_OK)
        return st;
    const sparcl__problem prob = sparcl__problem_from_desc(desc);
    if (f->defaults)
        f->defaults(out, &prob, &ctx->limits);
    return desc->unchecked_params ? sparcl__pset_check_minimal(ctx, out)
                                  : sparcl__pset_check(ctx, f, out, &prob, &ctx->limits);
}

/* The program of `f` that holds kernel `name`, or NULL; *wg_local receives
 * the kernel's declaration. */
static const sparcl__program_decl *holder(const sparcl__kernel_schema *f, const char *name,
                                          int *wg_local)
{
    for (int i = 0; i < f->n_programs; ++i)
        for (int k = 0; k < f->programs[i].n_kernels; ++k)
            if (strcmp(f->programs[i].kernels[k].name, name) == 0) {
                *wg_local = f->programs[i].kernels[k].wg_local;
                return &f->programs[i];
            }
    return NULL;
}

static sparcl_status create(sparcl_ctx *ctx, const sparcl__kernel_schema *f, const sparcl__pset *p,
                            const char *options, const char *name, cl_kernel *out)
{
    int wg_local = 0;
    const sparcl__program_decl *pr = holder(f, name, &wg_local);
    if (!pr)
        return sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "family %s declares no kernel %s", f->name,
                            name);
    cl_program prog;
    sparcl_status st = sparcl__program_get(ctx, pr->file, options, &prog);
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    *out = clCreateKernel(prog, name, &err);
    if (!*out) {
        char what[96];
        snprintf(what, sizeof what, "clCreateKernel(%s)", name);
        return sparcl__fail_cl(ctx, err, what);
    }
    size_t kwg = 0;
    clGetKernelWorkGroupInfo(*out, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kwg, &kwg, NULL);
    const int32_t wg = p->v[SPARCL__P_WG_SIZE];
    if (wg_local && kwg && (size_t)wg > kwg)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "WG_SIZE %d exceeds %s's work-group limit %zu on the device", wg, name,
                            kwg);
    /* The compiler's own count, which may exceed the schema's formula. */
    cl_ulong klocal = 0;
    if (clGetKernelWorkGroupInfo(*out, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof klocal,
                                 &klocal, NULL) == CL_SUCCESS &&
        ctx->limits.local_mem && klocal > ctx->limits.local_mem)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "%s needs %llu bytes of local memory; the device has %llu", name,
                            (unsigned long long)klocal, (unsigned long long)ctx->limits.local_mem);
    return SPARCL_OK;
}

sparcl_status sparcl__family_kernels(sparcl_ctx *ctx, const sparcl__kernel_schema *f,
                                     const sparcl__problem *prob, const sparcl__pset *p, int n,
                                     const char *const *names, cl_kernel *out)
{
    for (int i = 0; i < n; ++i)
        out[i] = NULL;
    sparcl_status st = sparcl__kernel_registry_check(ctx);
    if (st != SPARCL_OK)
        return st;
    char options[1024];
    sparcl__params_build_options(f, p, prob, options, sizeof options);
    for (int i = 0; i < n && st == SPARCL_OK; ++i)
        st = create(ctx, f, p, options, names[i], &out[i]);
    if (st != SPARCL_OK)
        for (int i = 0; i < n; ++i)
            if (out[i]) {
                clReleaseKernel(out[i]);
                out[i] = NULL;
            }
    return st;
}

sparcl_status sparcl__family_choose_build(sparcl_ctx *ctx, const sparcl__kernel_schema *f,
                                          const sparcl_plan_desc *desc, const char *what,
                                          sparcl__family_build_fn build, void *user)
{
    sparcl_status st = SPARCL_ERR_INTERNAL;
    for (int defaults_only = 0; defaults_only < 2; ++defaults_only) {
        sparcl__pset ps;
        sparcl_param_source source = SPARCL_PARAMS_DEFAULT;
        char origin[SPARCL__ORIGIN_MAX];
        st =
            sparcl__family_choose(ctx, f, desc, defaults_only, &ps, &source, origin, sizeof origin);
        if (st == SPARCL_OK)
            st = build(user, &ps, source);
        if (st == SPARCL_OK || source != SPARCL_PARAMS_DATABASE)
            break;
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "tuned %s parameters from %s failed (%s); using the built-in defaults", what,
                    origin, sparcl_ctx_errmsg(ctx));
    }
    return st;
}
