/*
 * tuning.c -- the public tuning interface that is not SQL: kernel families'
 * parameter spaces (generated from the schemas in params.c, never listed
 * twice), validity checks and defaults for a problem on the context's
 * device, kernel hashes, device fingerprints, and problem keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/hash.h"
#include "kernels/kernel_registry.h"
#include "plan/plan.h"
#include "runtime/program.h"
#include "runtime/struct_size.h"
#include "tuning/tuning.h"

static sparcl_status find(sparcl_ctx *ctx, const char *kernel, const sparcl__kernel_schema **out)
{
    if (!kernel) {
        *out = NULL;
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "kernel is NULL");
    }
    *out = sparcl__kernel_schema_find(kernel);
    if (!*out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "unknown kernel family \"%.64s\"",
                            kernel);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_kernel_space(sparcl_ctx *ctx, const char *kernel,
                                             sparcl_param_space *space)
{
    const sparcl__kernel_schema *schema = NULL;
    sparcl_status st = find(ctx, kernel, &schema);
    if (st != SPARCL_OK)
        return st;
    if (!space)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "space is NULL");
    if (schema->n_params > SPARCL_PARAMS_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "kernel %s has %d parameters (max %d)",
                            kernel, schema->n_params, SPARCL_PARAMS_MAX);
    memset(space, 0, sizeof *space);
    for (int i = 0; i < schema->n_params; ++i) {
        const sparcl__param_def *d = &schema->params[i];
        const char *name = sparcl__param_names[d->id];
        if (d->n_choices > SPARCL_PARAM_CHOICES_MAX)
            return sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "%s has %d choices (max %d)", name,
                                d->n_choices, SPARCL_PARAM_CHOICES_MAX);
        snprintf(space->item[i].name, sizeof space->item[i].name, "%s", name);
        space->item[i].n_choices = d->n_choices;
        memcpy(space->item[i].choices, d->choices, sizeof *d->choices * (size_t)d->n_choices);
        space->item[i].doc = d->doc;
    }
    space->count = schema->n_params;
    return SPARCL_OK;
}

/* Also reads the caller's descriptor into *copy (struct_size rule). */
static sparcl_status check_args(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *in,
                                const void *params, const sparcl__kernel_schema **schema,
                                sparcl_plan_desc *copy)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    sparcl_status st = find(ctx, kernel, schema);
    if (st != SPARCL_OK)
        return st;
    if (!in || !params)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !in ? "desc" : "params");
    if ((st = sparcl__plan_desc_read(ctx, in, copy)) != SPARCL_OK)
        return st;
    const sparcl_plan_desc *desc = copy;
    if (desc->head_dim < 1 || desc->head_dim > SPARCL_MAX_HEAD_DIM)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "head_dim %d is not in 1..%d",
                            desc->head_dim, SPARCL_MAX_HEAD_DIM);
    return SPARCL_OK;
}

/* In offline mode a parameter set is usable only if the bundle holds its
 * program: the one the plan would build (the dense path's for ALGO=1, else
 * the family's first), with the options the one road generates. */
static sparcl_status offline_check(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                   const sparcl_params *params, const sparcl__problem *prob)
{
    sparcl__pset ps;
    sparcl_status st = sparcl__pset_from_params(ctx, schema, params, &ps);
    if (st != SPARCL_OK || schema->external) /* another library builds those */
        return st;
    char options[1024];
    sparcl__params_build_options(schema, &ps, prob, options, sizeof options);
    const int dense = sparcl__pset_has(&ps, SPARCL__P_ALGO) && ps.v[SPARCL__P_ALGO] == 1;
    return sparcl__program_available(
        ctx, dense ? "attn_dense_softmax.cl" : schema->programs[0].file, options);
}

SPARCL_API sparcl_status sparcl_kernel_check_params(sparcl_ctx *ctx, const char *kernel,
                                                    const sparcl_plan_desc *desc,
                                                    const sparcl_params *params)
{
    const sparcl__kernel_schema *schema = NULL;
    sparcl_plan_desc copy;
    sparcl_status st = check_args(ctx, kernel, desc, params, &schema, &copy);
    if (st == SPARCL_OK)
        st = sparcl__params_valid(ctx, params, "params");
    if (st != SPARCL_OK)
        return st;
    desc = &copy;
    sparcl__problem prob = sparcl__problem_from_desc(desc);
    st = sparcl__params_check(ctx, schema, params, &prob, &ctx->limits);
    return st == SPARCL_OK ? offline_check(ctx, schema, params, &prob) : st;
}

SPARCL_API sparcl_status sparcl_kernel_default_params(sparcl_ctx *ctx, const char *kernel,
                                                      const sparcl_plan_desc *desc,
                                                      sparcl_params *params)
{
    const sparcl__kernel_schema *schema = NULL;
    sparcl_plan_desc copy;
    sparcl_status st = check_args(ctx, kernel, desc, params, &schema, &copy);
    if (st != SPARCL_OK)
        return st;
    desc = &copy;
    sparcl__problem prob = sparcl__problem_from_desc(desc);
    sparcl_params_clear(params);
    sparcl__params_fill_defaults(schema, params, &prob, &ctx->limits);
    return SPARCL_OK;
}

/* ---- kernel hash ---------------------------------------------------------- */

sparcl_status sparcl__kernel_hash(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                  char out[17])
{
    /* Every source file the family builds: the common header, then each
     * program's file (a one-program family hashes as it always did). */
    const char *files[8]; /* sparcl__sources_hash takes at most 8 */
    int n = 0;
    files[n++] = SPARCL__PROGRAM_PRELUDE;
    for (int i = 0; i < schema->n_programs && n < (int)(sizeof files / sizeof *files); ++i)
        files[n++] = schema->programs[i].file;
    uint64_t h = sparcl__hash_str(SPARCL__HASH_SEED, "sparcl kernel hash 1");
    if (schema->external) { /* another library's kernel: its name and version */
        h = sparcl__hash_str(h, schema->external);
    } else {
        sparcl_status st = sparcl__sources_hash(ctx, files, n, h, &h);
        if (st != SPARCL_OK)
            return st;
    }
    const char *fixed;
    for (int i = 0; (fixed = sparcl__schema_fixed_option(schema, i)); ++i)
        h = sparcl__hash_str(h, fixed);
    for (int i = 0; i < schema->n_params; ++i) {
        h = sparcl__hash_str(h, sparcl__param_names[schema->params[i].id]);
        h = sparcl__hash(h, schema->params[i].choices,
                         sizeof *schema->params[i].choices * (size_t)schema->params[i].n_choices);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_kernel_hash(sparcl_ctx *ctx, const char *kernel, char *buf,
                                            size_t size)
{
    const sparcl__kernel_schema *schema = NULL;
    sparcl_status st = find(ctx, kernel, &schema);
    if (st != SPARCL_OK)
        return st;
    if (!buf || size < 17)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "hash buffer needs 17 bytes");
    return sparcl__kernel_hash(ctx, schema, buf);
}

/* ---- device fingerprint and problem keys ---------------------------------- */

void sparcl__device_identity(sparcl_device_info *info)
{
    /* CPU drivers derive global memory and the largest allocation from the
     * memory free at start-up (POCL went from 8/4 to 16/8 GiB within 20
     * minutes on one machine), so on a CPU they identify nothing. */
    if (strcmp(info->type, "CPU") == 0) {
        info->global_mem = 0;
        info->max_alloc = 0;
    }
}

void sparcl__device_info(const sparcl_ctx *ctx, sparcl_device_info *info)
{
    memset(info, 0, sizeof *info);
    cl_device_id dev = ctx->device;
    cl_platform_id plat = NULL;
    clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL);
    if (plat)
        clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof info->platform, info->platform, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_VENDOR, sizeof info->vendor, info->vendor, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof info->name, info->name, NULL);
    clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof info->driver, info->driver, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_VERSION, sizeof info->version, info->version, NULL);
    const sparcl__device_limits *l = &ctx->limits;
    snprintf(info->type, sizeof info->type, "%s",
             l->type & CL_DEVICE_TYPE_GPU           ? "GPU"
             : l->type & CL_DEVICE_TYPE_CPU         ? "CPU"
             : l->type & CL_DEVICE_TYPE_ACCELERATOR ? "ACCELERATOR"
                                                    : "OTHER");
    info->compute_units = l->compute_units;
    info->global_mem = l->global_mem;
    info->local_mem = l->local_mem;
    info->max_alloc = l->max_alloc;
    sparcl__device_identity(info);
}

SPARCL_API sparcl_status sparcl_ctx_device_info(sparcl_ctx *ctx, sparcl_device_info *info)
{
    if (!ctx || !info)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", !ctx ? "ctx" : "info");
    sparcl__device_info(ctx, info);
    return SPARCL_OK;
}

/* Fraction of (query, key) pairs the causal rule keeps, with the
 * bottom-right alignment of the plan. */
static double causal_fraction(int q_len, int kv_len)
{
    double kept = 0;
    for (int i = 0; i < q_len; ++i) {
        long n = (long)i + kv_len - q_len + 1;
        kept += (double)(n < 0 ? 0 : n > kv_len ? kv_len : n); /* exact: |n| <= kv_len */
    }
    return kept / ((double)q_len * kv_len);
}

void sparcl__tuning_problem_fill(const sparcl__kernel_schema *schema, const char *hash,
                                 const sparcl_plan_desc *d, const char *pattern,
                                 sparcl_tuning_problem *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->kernel, sizeof out->kernel, "%s", schema->name);
    snprintf(out->kernel_hash, sizeof out->kernel_hash, "%s", hash);
    snprintf(out->dtype, sizeof out->dtype, "%s", sparcl_dtype_name(d->dtype));
    out->batch = d->batch;
    out->q_heads = d->q_heads;
    out->kv_heads = d->kv_heads;
    out->q_len = d->q_len;
    out->kv_len = d->kv_len;
    out->head_dim = d->head_dim;
    out->causal = d->causal != 0;
    snprintf(out->pattern, sizeof out->pattern, "%s",
             pattern     ? pattern
             : d->layout ? "layout"
                         : "dense");
    out->block = d->layout ? sparcl_layout_block(d->layout) : 0;
    /* With both a layout and the causal flag this assumes independence; it
     * is a matching key, not a FLOP count. */
    double density = d->layout ? sparcl_layout_density(d->layout) : 1.0;
    if (d->causal)
        density *= causal_fraction(d->q_len, d->kv_len);
    out->density = density;
}

SPARCL_API sparcl_status sparcl_tuning_problem_init(sparcl_ctx *ctx, sparcl_tuning_problem *out,
                                                    const char *kernel,
                                                    const sparcl_plan_desc *desc,
                                                    const char *pattern)
{
    const sparcl__kernel_schema *schema = NULL;
    sparcl_status st = find(ctx, kernel, &schema);
    if (st != SPARCL_OK)
        return st;
    if (!out || !desc)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", !out ? "out" : "desc");
    sparcl_plan_desc copy;
    if ((st = sparcl__plan_desc_read(ctx, desc, &copy)) != SPARCL_OK)
        return st;
    desc = &copy;
    /* The problem of a descriptor no plan accepts is meaningless. */
    if ((st = sparcl__plan_desc_check(ctx, desc)) != SPARCL_OK)
        return st;
    char hash[17];
    if ((st = sparcl__kernel_hash(ctx, schema, hash)) != SPARCL_OK)
        return st;
    sparcl__tuning_problem_fill(schema, hash, desc, pattern, out);
    return SPARCL_OK;
}
