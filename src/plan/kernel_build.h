/*
 * kernel_build.h -- the one road from parameters to kernels.  Every plan and
 * pass turns (family, problem, parameters) into built, validated kernels
 * here: parameters chosen and checked against the family's schema, build
 * options generated from the schema alone, programs taken from the cache or
 * built, kernels created and checked against the device.
 */
#ifndef SPARCL_KERNEL_BUILD_H
#define SPARCL_KERNEL_BUILD_H

#include "kernels/params.h"

/* Chooses the parameters of family `f` for `desc`: the override
 * (desc->params), the tuning databases, else nothing (tuning_lookup.h);
 * with `defaults_only` none of those.  The result is converted to a typed
 * set, the missing parameters get the defaults, and the set is checked
 * (only the minimal checks when desc->unchecked_params).  *source and
 * `origin` say where the values came from. */
sparcl_status sparcl__family_choose(sparcl_ctx *ctx, const sparcl__kernel_schema *f,
                                    const sparcl_plan_desc *desc, int defaults_only,
                                    sparcl__pset *out, sparcl_param_source *source, char *origin,
                                    size_t size);

/* Builds with a parameter set: what sparcl__family_choose_build runs. */
typedef sparcl_status (*sparcl__family_build_fn)(void *user, const sparcl__pset *p,
                                                 sparcl_param_source source);

/* Chooses the parameters of `f` for `desc` (sparcl__family_choose) and
 * calls build(user, ...) with them; when they came from a tuning database
 * and the build fails (a row this device or problem cannot run), warns,
 * naming `what` and the row's origin, and builds once more with the
 * defaults.  Returns the last build's status. */
sparcl_status sparcl__family_choose_build(sparcl_ctx *ctx, const sparcl__kernel_schema *f,
                                          const sparcl_plan_desc *desc, const char *what,
                                          sparcl__family_build_fn build, void *user);

/* Creates the `n` kernels `names` of family `f` into out[], building (or
 * taking from the context's cache) the programs that hold them with the
 * options of `p` for `prob`.  A kernel the family launches with WG_SIZE
 * work-items per group is checked against its own limit on the device
 * (SPARCL_ERR_NOT_SUPPORTED).  On failure nothing is kept: out[] is all
 * NULL. */
sparcl_status sparcl__family_kernels(sparcl_ctx *ctx, const sparcl__kernel_schema *f,
                                     const sparcl__problem *prob, const sparcl__pset *p, int n,
                                     const char *const *names, cl_kernel *out);

#endif
