/*
 * gemm_params.c -- see gemm_params.h.  The rows are looked up like any
 * family's (tuning/tuning_lookup.c), keyed by the attention problem whose
 * GEMMs they ran; a row that breaks the schema is passed over there.
 */
#include <stdio.h>
#include <string.h>

#include "kernels/kernel_registry.h"
#include "plan/gemm_params.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "tuning/tuning_lookup.h"

sparcl_status sparcl__gemm_params_apply(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                        sparcl__plan_report *report)
{
    const sparcl__kernel_schema *f = &sparcl__schema_clblast;
    sparcl_params_clear(&report->gemm);
    sparcl_status st = sparcl__kernel_registry_check(ctx);
    if (st != SPARCL_OK)
        return st;
    sparcl_params chosen;
    sparcl_param_source source;
    char origin[SPARCL__PLAN_ORIGIN_MAX];
    if (sparcl__gemm_ctx_params(ctx, &chosen)) {
        source = SPARCL_PARAMS_OVERRIDE;
        snprintf(origin, sizeof origin, "override (sparcl_ctx_set_gemm_params)");
    } else {
        /* desc.params belongs to the attention family, not to this one. */
        sparcl_plan_desc key = *desc;
        key.params = NULL;
        sparcl__tuning_choose(ctx, f, &key, &chosen, &source, origin, sizeof origin);
    }
    if (source == SPARCL_PARAMS_DEFAULT) {
        snprintf(report->gemm_origin, sizeof report->gemm_origin,
                 "none applied (no tuned row): CLBlast's own parameters");
        return SPARCL_OK;
    }
    sparcl__pset p;
    if ((st = sparcl__pset_from_params(ctx, f, &chosen, &p)) != SPARCL_OK)
        return st;
    const sparcl__problem prob = sparcl__problem_from_desc(desc);
    f->defaults(&p, &prob, &ctx->limits);
    if ((st = sparcl__pset_check(ctx, f, &p, &prob, &ctx->limits)) != SPARCL_OK)
        return st;
    const char *names[SPARCL_PARAMS_MAX];
    size_t values[SPARCL_PARAMS_MAX];
    for (int i = 0; i < f->n_params; ++i) {
        names[i] = sparcl__param_names[f->params[i].id];
        values[i] = (size_t)p.v[f->params[i].id];
    }
    if ((st = sparcl__gemm_override(ctx, names, values, (size_t)f->n_params)) != SPARCL_OK)
        return st;
    sparcl__pset_to_params(f, &p, &report->gemm);
    snprintf(report->gemm_origin, sizeof report->gemm_origin, "%s", origin);
    return SPARCL_OK;
}
