/*
 * kernel_registry.h -- the list of kernel families whose parameter schemas
 * the tuning interface exposes.  A new family (a backward kernel, another
 * algorithm) becomes tunable by adding its schema to the table in
 * kernel_registry.c; sparcl-tune discovers it from there.
 */
#ifndef SPARCL_KERNEL_REGISTRY_H
#define SPARCL_KERNEL_REGISTRY_H

#include "params.h"

/* The schema of family `name`, or NULL. */
const sparcl__kernel_schema *sparcl__kernel_schema_find(const char *name);

/* The problem facts a schema's constraints read, from a plan descriptor. */
sparcl__problem sparcl__problem_from_desc(const sparcl_plan_desc *desc);

#endif
