/*
 * params.c -- the parameter map of the public API, its conversion to the
 * typed sets of the runtime, and what every family shares: the generic
 * check (names, choices, then the family's own constraints), and the build
 * options a typed set becomes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"
#include "kernels/params.h"

SPARCL_API void sparcl_params_clear(sparcl_params *p)
{
    if (p)
        memset(p, 0, sizeof *p);
}

/* The index of the first character of `name` (NUL-terminated within `cap`
 * bytes) that keeps it from being a C identifier, or -1 if it is one.
 * Names become -D options and SQL/JSON keys, so nothing else is allowed. */
static int bad_char(const char *name)
{
    for (int i = 0; name[i]; ++i) {
        unsigned char c = (unsigned char)name[i];
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return i;
    }
    return name[0] ? -1 : 0;
}

static sparcl_status check_name(sparcl_ctx *ctx, const char *name, const char *what)
{
    size_t n = strnlen(name, SPARCL_PARAM_NAME_MAX);
    if (n == 0 || n >= SPARCL_PARAM_NAME_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s must be 1..%d characters and NUL-terminated", what,
                            SPARCL_PARAM_NAME_MAX - 1);
    int at = bad_char(name);
    if (at >= 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%s has character 0x%02x at %d; parameter names must be C "
                            "identifiers (letters, digits, '_', not starting with a digit)",
                            what, (unsigned)(unsigned char)name[at], at);
    return SPARCL_OK;
}

sparcl_status sparcl__params_valid(sparcl_ctx *ctx, const sparcl_params *p, const char *what)
{
    if (!p)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", what);
    if (p->count < 0 || p->count > SPARCL_PARAMS_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s count %d is not in [0, %d]", what,
                            p->count, SPARCL_PARAMS_MAX);
    for (int i = 0; i < p->count; ++i) {
        char field[96];
        snprintf(field, sizeof field, "%s name %d", what, i);
        sparcl_status st = check_name(ctx, p->item[i].name, field);
        if (st != SPARCL_OK)
            return st;
        for (int k = 0; k < i; ++k)
            if (strcmp(p->item[k].name, p->item[i].name) == 0)
                return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s names %s twice", what,
                                    p->item[i].name);
    }
    return SPARCL_OK;
}

static int count_ok(const sparcl_params *p)
{
    return p->count >= 0 && p->count <= SPARCL_PARAMS_MAX;
}

SPARCL_API sparcl_status sparcl_params_set(sparcl_params *p, const char *name, int32_t value)
{
    if (!p)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "params is NULL");
    if (!name)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "parameter name is NULL");
    if (!count_ok(p))
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                            "params count %d is not in [0, %d] (use sparcl_params_clear)", p->count,
                            SPARCL_PARAMS_MAX);
    sparcl_status st = check_name(NULL, name, "parameter name");
    if (st != SPARCL_OK)
        return st;
    for (int i = 0; i < p->count; ++i)
        if (strncmp(p->item[i].name, name, SPARCL_PARAM_NAME_MAX) == 0) {
            p->item[i].value = value;
            return SPARCL_OK;
        }
    if (p->count >= SPARCL_PARAMS_MAX)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "parameter map is full (%d)",
                            SPARCL_PARAMS_MAX);
    snprintf(p->item[p->count].name, SPARCL_PARAM_NAME_MAX, "%s", name);
    p->item[p->count].value = value;
    ++p->count;
    return SPARCL_OK;
}

SPARCL_API int sparcl_params_get(const sparcl_params *p, const char *name, int32_t *value)
{
    if (!p || !name || !count_ok(p) ||
        strnlen(name, SPARCL_PARAM_NAME_MAX) >= SPARCL_PARAM_NAME_MAX)
        return 0;
    for (int i = 0; i < p->count; ++i)
        if (strncmp(p->item[i].name, name, SPARCL_PARAM_NAME_MAX) == 0) {
            if (value)
                *value = p->item[i].value;
            return 1;
        }
    return 0;
}

/* Items start with their name, so they sort as (bounded) strings. */
static int cmp_item(const void *a, const void *b)
{
    return strncmp((const char *)a, (const char *)b, SPARCL_PARAM_NAME_MAX);
}

SPARCL_API void sparcl_params_format(const sparcl_params *p, char *buf, size_t size)
{
    if (!buf || !size)
        return;
    buf[0] = '\0';
    if (!p || sparcl__params_valid(NULL, p, "params") != SPARCL_OK)
        return;
    sparcl_params s = *p;
    qsort(s.item, (size_t)s.count, sizeof s.item[0], cmp_item);
    size_t used = 0;
    for (int i = 0; i < s.count && used + 1 < size; ++i) {
        int w = snprintf(buf + used, size - used, "%s%s=%d", i ? " " : "", s.item[i].name,
                         (int)s.item[i].value);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* ---- typed sets ------------------------------------------------------- */

const char *const sparcl__param_names[SPARCL__P_COUNT] = {
    [SPARCL__P_ALGO] = "ALGO",
    [SPARCL__P_BLOCK_M] = "BLOCK_M",
    [SPARCL__P_BLOCK_N] = "BLOCK_N",
    [SPARCL__P_EXP] = "EXP",
    [SPARCL__P_HEADS] = "HEADS",
    [SPARCL__P_KT] = "KT",
    [SPARCL__P_PREFETCH] = "PREFETCH",
    [SPARCL__P_PV_ROWS] = "PV_ROWS",
    [SPARCL__P_SPLITS] = "SPLITS",
    [SPARCL__P_SPLIT] = "SPLIT",
    [SPARCL__P_TOPK] = "TOPK",
    [SPARCL__P_USE_LOCAL] = "USE_LOCAL",
    [SPARCL__P_VEC] = "VEC",
    [SPARCL__P_WG_SIZE] = "WG_SIZE",
    [SPARCL__P_KWID] = "KWID",
    [SPARCL__P_MDIMAD] = "MDIMAD",
    [SPARCL__P_MDIMCD] = "MDIMCD",
    [SPARCL__P_NDIMBD] = "NDIMBD",
    [SPARCL__P_NDIMCD] = "NDIMCD",
    [SPARCL__P_PADA] = "PADA",
    [SPARCL__P_PADB] = "PADB",
    [SPARCL__P_VWMD] = "VWMD",
    [SPARCL__P_VWND] = "VWND",
    [SPARCL__P_WGD] = "WGD",
    [SPARCL__P_HEAD_DIM] = "HEAD_DIM",
    [SPARCL__P_ROWS] = "ROWS",
    [SPARCL__P_NORM] = "NORM",
    [SPARCL__P_COLS] = "COLS",
    [SPARCL__P_QROWS] = "QROWS",
    [SPARCL__P_DTYPE] = "DTYPE",
};

const sparcl__param_def *sparcl__schema_param(const sparcl__kernel_schema *schema,
                                              sparcl__param_id id)
{
    for (int k = 0; k < schema->n_params; ++k)
        if (schema->params[k].id == id)
            return &schema->params[k];
    return NULL;
}

/* The schema's tuned parameter called `name`, or NULL. */
static const sparcl__param_def *find_name(const sparcl__kernel_schema *schema, const char *name)
{
    for (int k = 0; k < schema->n_params; ++k)
        if (strcmp(sparcl__param_names[schema->params[k].id], name) == 0)
            return &schema->params[k];
    return NULL;
}

sparcl_status sparcl__pset_from_params(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                       const sparcl_params *in, sparcl__pset *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; in && i < in->count; ++i) {
        const sparcl__param_def *d = find_name(schema, in->item[i].name);
        if (!d)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "unknown parameter %s for kernel %s", in->item[i].name,
                                schema->name);
        sparcl__pset_put(out, d->id, in->item[i].value);
    }
    return SPARCL_OK;
}

void sparcl__pset_to_params(const sparcl__kernel_schema *schema, const sparcl__pset *in,
                            sparcl_params *out)
{
    sparcl_params_clear(out);
    for (int k = 0; k < schema->n_params; ++k)
        if (sparcl__pset_has(in, schema->params[k].id))
            sparcl_params_set(out, sparcl__param_names[schema->params[k].id],
                              in->v[schema->params[k].id]);
}

void sparcl__pset_default(const sparcl__kernel_schema *schema, sparcl__pset *p, sparcl__param_id id,
                          int32_t value)
{
    if (!sparcl__pset_has(p, id) && sparcl__schema_param(schema, id))
        sparcl__pset_put(p, id, value);
}

/* ---- checks ----------------------------------------------------------- */

sparcl_status sparcl__pset_check(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                 const sparcl__pset *p, const sparcl__problem *prob,
                                 const sparcl__device_limits *limits)
{
    for (int k = 0; k < schema->n_params; ++k) {
        const sparcl__param_def *d = &schema->params[k];
        const char *name = sparcl__param_names[d->id];
        if (!sparcl__pset_has(p, d->id))
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "parameter %s is missing", name);
        const int32_t v = p->v[d->id];
        int ok = 0;
        for (int c = 0; c < d->n_choices; ++c)
            ok |= d->choices[c] == v;
        if (!ok) {
            char list[256] = "";
            size_t used = 0;
            for (int c = 0; c < d->n_choices && used < sizeof list; ++c)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%d", c ? "," : "",
                                         (int)d->choices[c]);
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s %d is not one of {%s}", name,
                                (int)v, list);
        }
    }
    return schema->check ? schema->check(ctx, p, prob, limits) : SPARCL_OK;
}

sparcl_status sparcl__pset_check_minimal(sparcl_ctx *ctx, const sparcl__pset *p)
{
    static const sparcl__param_id sizes[] = {SPARCL__P_BLOCK_M, SPARCL__P_BLOCK_N,
                                             SPARCL__P_WG_SIZE};
    for (int k = 0; k < 3; ++k) {
        int32_t v = p->v[sizes[k]];
        if (v < 1 || v > 4096)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s %d must be in [1, 4096]",
                                sparcl__param_names[sizes[k]], (int)v);
    }
    return SPARCL_OK;
}

sparcl_status sparcl__params_check(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                   const sparcl_params *p, const sparcl__problem *prob,
                                   const sparcl__device_limits *limits)
{
    sparcl__pset ps;
    sparcl_status st = sparcl__pset_from_params(ctx, schema, p, &ps);
    return st != SPARCL_OK ? st : sparcl__pset_check(ctx, schema, &ps, prob, limits);
}

void sparcl__params_fill_defaults(const sparcl__kernel_schema *schema, sparcl_params *p,
                                  const sparcl__problem *prob, const sparcl__device_limits *limits)
{
    sparcl__pset ps;
    memset(&ps, 0, sizeof ps);
    for (int i = 0; i < p->count; ++i) {
        const sparcl__param_def *d = find_name(schema, p->item[i].name);
        if (d)
            sparcl__pset_put(&ps, d->id, p->item[i].value);
    }
    const unsigned given = ps.set;
    schema->defaults(&ps, prob, limits);
    for (int k = 0; k < schema->n_params; ++k) {
        const sparcl__param_id id = schema->params[k].id;
        if (sparcl__pset_has(&ps, id) && !((given >> id) & 1u))
            sparcl_params_set(p, sparcl__param_names[id], ps.v[id]);
    }
}

int sparcl__params_drop_per_problem(const sparcl__kernel_schema *schema, sparcl_params *p)
{
    int kept = 0, dropped = 0;
    for (int i = 0; i < p->count; ++i) {
        int drop = 0;
        for (int k = 0; k < schema->n_per_problem; ++k)
            drop |= strcmp(p->item[i].name, sparcl__param_names[schema->per_problem[k]]) == 0;
        if (drop)
            ++dropped;
        else
            p->item[kept++] = p->item[i];
    }
    p->count = kept;
    return dropped;
}

/* ---- build options ---------------------------------------------------- */

/* Every family is compiled as OpenCL C 1.2: the kernels use nothing newer,
 * and the version must not drift with the driver's default. */
static const char cl_std[] = "-cl-std=CL1.2";

const char *sparcl__schema_fixed_option(const sparcl__kernel_schema *schema, int i)
{
    if (i == 0)
        return cl_std;
    return i - 1 < schema->n_fixed ? schema->fixed_options[i - 1] : NULL;
}

static int32_t derive(sparcl__param_id id, const sparcl__pset *p, const sparcl__problem *prob)
{
    switch (id) {
    case SPARCL__P_HEAD_DIM: return prob->head_dim;
    case SPARCL__P_ROWS:
        return p->v[SPARCL__P_WG_SIZE] ? p->v[SPARCL__P_BLOCK_M] / p->v[SPARCL__P_WG_SIZE] : 0;
    case SPARCL__P_NORM: return prob->norm;
    case SPARCL__P_COLS:
        return p->v[SPARCL__P_WG_SIZE] ? p->v[SPARCL__P_BLOCK_N] / p->v[SPARCL__P_WG_SIZE] : 0;
    case SPARCL__P_QROWS: return prob->q_len;
    case SPARCL__P_DTYPE: return prob->dtype;
    default: return p->v[id];
    }
}

/* Tuned parameters only the host reads (how a call is launched, not how a
 * kernel is built): no -D option, so changing them builds nothing. */
static int host_only(sparcl__param_id id)
{
    return id == SPARCL__P_SPLITS;
}

void sparcl__params_build_options(const sparcl__kernel_schema *schema, const sparcl__pset *p,
                                  const sparcl__problem *prob, char *buf, size_t size)
{
    sparcl__pset all = *p;
    for (int id = 0; id < SPARCL__P_COUNT; ++id)
        if (host_only((sparcl__param_id)id))
            all.set &= ~(1u << id);
    for (int k = 0; k < schema->n_derived; ++k)
        sparcl__pset_put(&all, schema->derived[k], derive(schema->derived[k], p, prob));
    /* Sorted by name, so that equal sets give equal strings (cache keys). */
    int order[SPARCL__P_COUNT], n = 0;
    for (int id = 0; id < SPARCL__P_COUNT; ++id) {
        if (!sparcl__pset_has(&all, (sparcl__param_id)id))
            continue;
        int at = n++;
        while (at > 0 && strcmp(sparcl__param_names[order[at - 1]], sparcl__param_names[id]) > 0) {
            order[at] = order[at - 1];
            --at;
        }
        order[at] = id;
    }
    size_t used = 0;
    buf[0] = '\0';
    const char *fixed;
    for (int i = 0; (fixed = sparcl__schema_fixed_option(schema, i)) && used < size; ++i)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? " " : "", fixed);
    for (int k = 0; k < n && used < size; ++k)
        used += (size_t)snprintf(buf + used, size - used, " -D%s=%d", sparcl__param_names[order[k]],
                                 (int)all.v[order[k]]);
}
