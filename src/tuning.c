/*
 * tuning.c -- the public tuning interface that is not SQL: kernel families'
 * parameter spaces (generated from the schemas in params.c, never listed
 * twice), validity checks and defaults for a problem on the context's
 * device, kernel hashes, device fingerprints, and problem keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "error.h"
#include "kernel_registry.h"
#include "plan.h"
#include "program.h"
#include "tuning.h"

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
        if (d->n_choices > SPARCL_PARAM_CHOICES_MAX)
            return sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "%s has %d choices (max %d)", d->name,
                                d->n_choices, SPARCL_PARAM_CHOICES_MAX);
        snprintf(space->item[i].name, sizeof space->item[i].name, "%s", d->name);
        space->item[i].n_choices = d->n_choices;
        memcpy(space->item[i].choices, d->choices, sizeof *d->choices * (size_t)d->n_choices);
        space->item[i].doc = d->doc;
    }
    space->count = schema->n_params;
    return SPARCL_OK;
}

static sparcl_status check_args(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                                const void *params, const sparcl__kernel_schema **schema)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    sparcl_status st = find(ctx, kernel, schema);
    if (st != SPARCL_OK)
        return st;
    if (!desc || !params)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !desc ? "desc" : "params");
    if (desc->head_dim < 1 || desc->head_dim > SPARCL_MAX_HEAD_DIM)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "head_dim %d is not in 1..%d",
                            desc->head_dim, SPARCL_MAX_HEAD_DIM);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_kernel_check_params(sparcl_ctx *ctx, const char *kernel,
                                                    const sparcl_plan_desc *desc,
                                                    const sparcl_params *params)
{
    const sparcl__kernel_schema *schema = NULL;
    sparcl_status st = check_args(ctx, kernel, desc, params, &schema);
    if (st == SPARCL_OK)
        st = sparcl__params_valid(ctx, params, "params");
    if (st != SPARCL_OK)
        return st;
    sparcl__problem prob = sparcl__problem_from_desc(desc);
    return sparcl__params_check(ctx, schema, params, &prob, &ctx->limits);
}

SPARCL_API sparcl_status sparcl_kernel_default_params(sparcl_ctx *ctx, const char *kernel,
                                                      const sparcl_plan_desc *desc,
                                                      sparcl_params *params)
{
    const sparcl__kernel_schema *schema = NULL;
    sparcl_status st = check_args(ctx, kernel, desc, params, &schema);
    if (st != SPARCL_OK)
        return st;
    sparcl__problem prob = sparcl__problem_from_desc(desc);
    sparcl_params_clear(params);
    sparcl__params_fill_defaults(schema, params, &prob, &ctx->limits);
    return SPARCL_OK;
}

/* ---- kernel hash ---------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) { return fnv(h, s, strlen(s) + 1); }

sparcl_status sparcl__kernel_hash(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                  char out[17])
{
    char *common = sparcl__kernel_source(ctx, "common.clh");
    char *body = common ? sparcl__kernel_source(ctx, schema->file) : NULL;
    if (!body) {
        free(common);
        return SPARCL_ERR_INTERNAL;
    }
    uint64_t h = fnv_str(0xcbf29ce484222325ull, "sparcl kernel hash 1");
    h = fnv_str(h, common);
    h = fnv_str(h, body);
    free(common);
    free(body);
    /* The fixed build options: everything but the -D parameters. */
    sparcl__problem prob;
    memset(&prob, 0, sizeof prob);
    prob.head_dim = 64;
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl__params_fill_defaults(schema, &p, &prob, NULL);
    char options[1024], *save = NULL;
    sparcl__params_build_options(schema, &p, &prob, options, sizeof options);
    for (char *tok = strtok_r(options, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        if (strncmp(tok, "-D", 2) != 0)
            h = fnv_str(h, tok);
    for (int i = 0; i < schema->n_params; ++i) {
        h = fnv_str(h, schema->params[i].name);
        h = fnv(h, schema->params[i].choices,
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
    /* Rounded down to a power of two: POCL derives the value from the
     * memory free at start-up, which would make every run a new device. */
    uint64_t g = l->global_mem;
    while (g & (g - 1))
        g &= g - 1;
    info->global_mem = g;
    info->local_mem = l->local_mem;
    info->max_alloc = l->max_alloc;
}

SPARCL_API sparcl_status sparcl_ctx_device_info(sparcl_ctx *ctx, sparcl_device_info *info)
{
    if (!ctx || !info)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !ctx ? "ctx" : "info");
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
        kept += n < 0 ? 0 : n > kv_len ? kv_len : n;
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
    snprintf(out->dtype, sizeof out->dtype, "f32");
    out->batch = d->batch;
    out->q_heads = d->q_heads;
    out->kv_heads = d->kv_heads;
    out->q_len = d->q_len;
    out->kv_len = d->kv_len;
    out->head_dim = d->head_dim;
    out->causal = d->causal != 0;
    snprintf(out->pattern, sizeof out->pattern, "%s",
             pattern ? pattern : d->layout ? "layout" : "dense");
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
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !out ? "out" : "desc");
    /* The problem of a descriptor no plan accepts is meaningless. */
    if ((st = sparcl__plan_desc_check(ctx, desc)) != SPARCL_OK)
        return st;
    char hash[17];
    if ((st = sparcl__kernel_hash(ctx, schema, hash)) != SPARCL_OK)
        return st;
    sparcl__tuning_problem_fill(schema, hash, desc, pattern, out);
    return SPARCL_OK;
}
