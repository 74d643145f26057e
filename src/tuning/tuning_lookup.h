/*
 * tuning_lookup.h -- how a plan chooses its kernel parameters: the override,
 * then the user's tuning database, then the shipped one, then the built-in
 * defaults (see the Tuning section of sparcl.h for the matching rules).
 */
#ifndef SPARCL_TUNING_LOOKUP_H
#define SPARCL_TUNING_LOOKUP_H

#include "kernels/params.h"

#define SPARCL__ORIGIN_MAX 512

/* Sets *params (possibly partial: the caller fills defaults) and *source,
 * and writes a sentence on the origin into `origin`.  Never fails: every
 * database problem becomes a SPARCL_LOG_WARNING on ctx and the next source
 * is tried. */
void sparcl__tuning_choose(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                           const sparcl_plan_desc *desc, sparcl_params *params,
                           sparcl_param_source *source, char *origin, size_t size);

#endif
