/*
 * params.c -- the parameter map of the public API and the schema of the
 * forward attention kernel (choices, constraints, defaults, -D options).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "params.h"

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

/* ---- attn_fwd -------------------------------------------------------- */

static const int32_t c_block_m[] = {1, 2, 4, 8, 16, 32, 64, 128};
static const int32_t c_block_n[] = {8, 16, 32, 64, 128};
static const int32_t c_wg[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const int32_t c_vec[] = {1, 2, 4, 8, 16};
static const int32_t c_bool[] = {0, 1};
static const int32_t c_exp[] = {0, 1, 2};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__param_def attn_fwd_params[] = {
    {"ALGO", c_bool, N_OF(c_bool), "0 the fused kernel, 1 dense: CLBlast SGEMMs + masked softmax"},
    {"BLOCK_M", c_block_m, N_OF(c_block_m), "query rows per work-group tile"},
    {"BLOCK_N", c_block_n, N_OF(c_block_n), "keys per tile"},
    {"EXP", c_exp, N_OF(c_exp), "softmax exponential: 0 exp2, 1 native_exp2, 2 sparcl polynomial"},
    {"KT", c_bool, N_OF(c_bool), "scores against K packed transposed per tile (a workspace)"},
    {"USE_LOCAL", c_bool, N_OF(c_bool), "stage K/V tiles in __local memory"},
    {"VEC", c_vec, N_OF(c_vec), "vector width along the head dimension and of score vectors"},
    {"WG_SIZE", c_wg, N_OF(c_wg), "work-items per work-group"},
};

const sparcl__kernel_schema sparcl__schema_attn_fwd = {
    "attn_fwd", "attn_fwd.cl", attn_fwd_params, N_OF(attn_fwd_params), NULL, NULL};

/* Floats of private memory one work-item holds: q and acc rows, scores. */
#define PRIVATE_FLOATS_MAX SPARCL__PRIVATE_FLOATS_MAX

static int32_t get(const sparcl_params *p, const char *name)
{
    int32_t v = 0;
    sparcl_params_get(p, name, &v);
    return v;
}

size_t sparcl__attn_fwd_local_bytes(const sparcl_params *p, const sparcl__problem *prob)
{
    return get(p, "USE_LOCAL") ? 2u * (size_t)get(p, "BLOCK_N") * (size_t)prob->head_dim * 4u
                               : 0u;
}

size_t sparcl__attn_fwd_workspace_bytes(const sparcl_params *p, const sparcl__problem *prob)
{
    if (!get(p, "KT") || get(p, "ALGO"))
        return 0;
    size_t bn = (size_t)get(p, "BLOCK_N");
    size_t tiles = bn ? ((size_t)prob->kv_len + bn - 1) / bn : 0;
    return (size_t)prob->batch * (size_t)prob->kv_heads * tiles * bn * (size_t)prob->head_dim *
           sizeof(float);
}

sparcl_status sparcl__params_check(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                   const sparcl_params *p, const sparcl__problem *prob,
                                   const sparcl__device_limits *limits)
{
    for (int i = 0; i < p->count; ++i) {
        int known = 0;
        for (int k = 0; k < schema->n_params; ++k)
            known |= strcmp(schema->params[k].name, p->item[i].name) == 0;
        if (!known)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "unknown parameter %s for kernel %s", p->item[i].name,
                                schema->name);
    }
    for (int k = 0; k < schema->n_params; ++k) {
        const sparcl__param_def *d = &schema->params[k];
        int32_t v;
        if (!sparcl_params_get(p, d->name, &v))
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "parameter %s is missing",
                                d->name);
        int ok = 0;
        for (int c = 0; c < d->n_choices; ++c)
            ok |= d->choices[c] == v;
        if (!ok) {
            char list[256] = "";
            size_t used = 0;
            for (int c = 0; c < d->n_choices && used < sizeof list; ++c)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%d", c ? "," : "",
                                         (int)d->choices[c]);
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s %d is not one of {%s}", d->name, (int)v, list);
        }
    }
    if (schema->check)
        return schema->check(ctx, p, prob, limits);
    int32_t bm = get(p, "BLOCK_M"), bn = get(p, "BLOCK_N"), wg = get(p, "WG_SIZE");
    int32_t vec = get(p, "VEC");
    if (bm % wg != 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M %d must be a multiple of WG_SIZE %d", bm, wg);
    int32_t rows = bm / wg;
    if (rows > 16)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_M / WG_SIZE = %d rows per work-item exceeds 16", rows);
    if (vec > prob->head_dim)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "VEC %d exceeds head_dim %d",
                            vec, prob->head_dim);
    if (schema == &sparcl__schema_attn_fwd && bn % vec != 0) /* scores are VEC-key vectors */
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "BLOCK_N %d must be a multiple of VEC %d", bn, vec);
    long priv = (long)rows * (2L * prob->head_dim + bn);
    if (priv > PRIVATE_FLOATS_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "rows per work-item %d x (2 x head_dim %d + BLOCK_N %d) = %ld "
                            "private floats exceeds %d",
                            rows, prob->head_dim, bn, priv, PRIVATE_FLOATS_MAX);
    if (limits) {
        if ((size_t)wg > limits->max_wg_size)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "WG_SIZE %d exceeds the device's max work-group size %zu", wg,
                                limits->max_wg_size);
        size_t local = sparcl__attn_fwd_local_bytes(p, prob);
        if (local > limits->local_mem)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "K/V tiles need %zu bytes of local memory; the device has %llu",
                                local, (unsigned long long)limits->local_mem);
        size_t ws = sparcl__attn_fwd_workspace_bytes(p, prob);
        if (limits->max_alloc && ws > limits->max_alloc)
            return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "KT=1 needs a %zu-byte workspace; the device allocates at most "
                                "%llu bytes at once",
                                ws, (unsigned long long)limits->max_alloc);
    }
    return SPARCL_OK;
}

sparcl_status sparcl__params_check_minimal(sparcl_ctx *ctx, const sparcl_params *p)
{
    static const char *sizes[] = {"BLOCK_M", "BLOCK_N", "WG_SIZE"};
    for (int k = 0; k < 3; ++k) {
        int32_t v = get(p, sizes[k]);
        if (v < 1 || v > 4096)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s %d must be in [1, 4096]",
                                sizes[k], (int)v);
    }
    return SPARCL_OK;
}

/* Sets name = value unless `p` has it already or the schema lacks it. */
static void set_default(const sparcl__kernel_schema *schema, sparcl_params *p, const char *name,
                        int32_t value)
{
    int32_t v;
    if (sparcl_params_get(p, name, &v))
        return;
    for (int k = 0; k < schema->n_params; ++k)
        if (strcmp(schema->params[k].name, name) == 0)
            sparcl_params_set(p, name, value);
}

void sparcl__params_fill_defaults(const sparcl__kernel_schema *schema, sparcl_params *p,
                                  const sparcl__problem *prob,
                                  const sparcl__device_limits *limits)
{
    if (schema->defaults) {
        schema->defaults(p, prob, limits);
        return;
    }
    sparcl__params_tile_defaults(schema, p, prob, limits);
}

void sparcl__params_tile_defaults(const sparcl__kernel_schema *schema, sparcl_params *p,
                                  const sparcl__problem *prob,
                                  const sparcl__device_limits *limits)
{
    int cpu = !limits || (limits->type & CL_DEVICE_TYPE_CPU);
    /* CPU (POCL): one work-item per group, several rows each, explicit
     * vectors of 16, scores against K packed transposed (measured with
     * sparcl-bench; shared/notes/pocl.md).  GPU: many work-items sharing
     * K/V tiles through local memory. */
    int32_t wg = cpu ? 1 : 64;
    int32_t bm = cpu ? (prob->head_dim > 128 ? 4 : 8) : 64;
    int32_t bn = 32;
    int32_t use_local = cpu ? 0 : 1;
    int32_t kt = cpu ? 1 : 0;
    if (!cpu && limits && 2u * 32u * (size_t)prob->head_dim * 4u > limits->local_mem)
        bn = 16;
    if (!cpu && limits && (size_t)wg > limits->max_wg_size) {
        wg = (int32_t)limits->max_wg_size;
        bm = wg;
    }
    set_default(schema, p, "WG_SIZE", wg);
    set_default(schema, p, "BLOCK_M", bm);
    set_default(schema, p, "BLOCK_N", bn);
    set_default(schema, p, "USE_LOCAL", use_local);
    set_default(schema, p, "ALGO", 0);
    set_default(schema, p, "EXP", cpu ? 2 : 0);
    /* VEC: the widest power of two within head_dim that divides BLOCK_N. */
    int32_t vec = 1, tile = get(p, "BLOCK_N"), v;
    while (vec * 2 <= prob->head_dim && vec < (cpu ? 16 : 4) && tile % (vec * 2) == 0)
        vec *= 2;
    set_default(schema, p, "VEC", vec);
    if (!sparcl_params_get(p, "KT", &v)) {
        set_default(schema, p, "KT", kt);
        if (kt && sparcl_params_get(p, "KT", &v) && limits && limits->max_alloc &&
            sparcl__attn_fwd_workspace_bytes(p, prob) > limits->max_alloc)
            sparcl_params_set(p, "KT", 0); /* the packed K would not fit */
    }
}

void sparcl__params_build_options(const sparcl__kernel_schema *schema, const sparcl_params *p,
                                  const sparcl__problem *prob, char *buf, size_t size)
{
    (void)schema;
    sparcl_params all = *p;
    sparcl_params_set(&all, "HEAD_DIM", prob->head_dim);
    int32_t bm = get(p, "BLOCK_M"), wg = get(p, "WG_SIZE");
    sparcl_params_set(&all, "ROWS", wg ? bm / wg : 0);
    char list[512];
    sparcl_params_format(&all, list, sizeof list);
    /* "A=1 B=2" -> "-DA=1 -DB=2" */
    size_t used = (size_t)snprintf(buf, size, "-cl-std=CL1.2");
    char *save = NULL;
    for (char *tok = strtok_r(list, " ", &save); tok && used < size;
         tok = strtok_r(NULL, " ", &save))
        used += (size_t)snprintf(buf + used, size - used, " -D%s", tok);
}
