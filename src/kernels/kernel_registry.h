/*
 * kernel_registry.h -- the kernel families of the library.  The tunable ones
 * are exposed through the tuning interface (sparcl-tune discovers them from
 * here); every family, tunable or not, is validated once when the registry
 * is first used, as BLIS validates block sizes when a configuration is
 * registered: a malformed declaration is a library defect reported as
 * SPARCL_ERR_INTERNAL, never a wrong kernel.
 */
#ifndef SPARCL_KERNEL_REGISTRY_H
#define SPARCL_KERNEL_REGISTRY_H

#include "kernels/params.h"

/* The tunable family called `name`, or NULL. */
const sparcl__kernel_schema *sparcl__kernel_schema_find(const char *name);

/* SPARCL_OK when every registered family's declaration is well formed
 * (checked once per process), else SPARCL_ERR_INTERNAL naming the defect. */
sparcl_status sparcl__kernel_registry_check(sparcl_ctx *ctx);

/* The problem facts a schema's constraints read, from a plan descriptor. */
sparcl__problem sparcl__problem_from_desc(const sparcl_plan_desc *desc);

#endif
