/*
 * struct_size.c -- reading and initializing caller structs by their
 * struct_size (see struct_size.h), so that an application built against an
 * older sparcl.h keeps working with a newer library.
 */
#include <string.h>

#include "runtime/error.h"
#include "runtime/struct_size.h"

static sparcl_status check(sparcl_ctx *ctx, size_t size, size_t min, size_t full, const char *type)
{
    if (size >= min && size <= full)
        return SPARCL_OK;
    return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                        "%s.struct_size is %zu; this library reads sizes %zu to %zu (set it "
                        "with %s_init(), which uses the size your sparcl.h declares)",
                        type, size, min, full, type);
}

sparcl_status sparcl__struct_init(void *dst, size_t size, const void *defaults, size_t min,
                                  size_t full, const char *type)
{
    if (!dst)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", type);
    sparcl_status st = check(NULL, size, min, full, type);
    if (st == SPARCL_OK)
        memcpy(dst, defaults, size);
    return st;
}

sparcl_status sparcl__struct_read(sparcl_ctx *ctx, const void *in, void *out, size_t min,
                                  size_t full, const char *type)
{
    if (!in)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", type);
    size_t size;
    memcpy(&size, in, sizeof size); /* struct_size is every such struct's first field */
    sparcl_status st = check(ctx, size, min, full, type);
    if (st != SPARCL_OK)
        return st;
    memcpy(out, in, size);
    memcpy(out, &full, sizeof full);
    return SPARCL_OK;
}

static void plan_desc_defaults(sparcl_plan_desc *d)
{
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    d->batch = 1;
    d->q_heads = 1;
    d->kv_heads = 1;
}

SPARCL_API sparcl_status sparcl_plan_desc_init_sized(sparcl_plan_desc *desc, size_t size)
{
    sparcl_plan_desc d;
    plan_desc_defaults(&d);
    d.struct_size = size;
    return sparcl__struct_init(desc, size, &d, SPARCL__PLAN_DESC_MIN, sizeof d, "sparcl_plan_desc");
}

sparcl_status sparcl__plan_desc_read(sparcl_ctx *ctx, const sparcl_plan_desc *in,
                                     sparcl_plan_desc *out)
{
    plan_desc_defaults(out);
    return sparcl__struct_read(ctx, in, out, SPARCL__PLAN_DESC_MIN, sizeof *out,
                               "sparcl_plan_desc");
}
