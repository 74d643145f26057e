/*
 * memory.c -- the per-context memory limits and the up-front checks that
 * builders run against them (memory.h).
 */
#include <stdint.h>
#include <unistd.h>

#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/memory.h"

enum { HOST = 0, DEVICE = 1 };

static size_t physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return SIZE_MAX;
    size_t bytes;
    if (__builtin_mul_overflow((size_t)pages, (size_t)page, &bytes))
        return SIZE_MAX;
    return bytes;
}

static size_t limit_of(sparcl_ctx *ctx, int which)
{
    uint64_t set = 0;
    if (ctx) {
        pthread_mutex_lock(&ctx->lock);
        set = ctx->mem_limit[which];
        pthread_mutex_unlock(&ctx->lock);
    }
    if (set)
        return set > SIZE_MAX ? SIZE_MAX : (size_t)set;
    if (which == HOST)
        return physical_memory();
    if (!ctx || !ctx->limits.global_mem)
        return SIZE_MAX;
    return ctx->limits.global_mem > SIZE_MAX ? SIZE_MAX : (size_t)ctx->limits.global_mem;
}

size_t sparcl__mem_host_limit(sparcl_ctx *ctx)
{
    return limit_of(ctx, HOST);
}
size_t sparcl__mem_device_limit(sparcl_ctx *ctx)
{
    return limit_of(ctx, DEVICE);
}

static sparcl_status check(sparcl_ctx *ctx, int which, const char *what, size_t bytes)
{
    size_t limit = limit_of(ctx, which);
    if (bytes <= limit)
        return SPARCL_OK;
    const char *kind = which == HOST ? "host" : "device";
    if (bytes == SIZE_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "%s needs more than 2^64 bytes of %s memory; the limit is %zu bytes",
                            what, kind, limit);
    return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                        "%s needs %zu bytes of %s memory; the limit is %zu bytes "
                        "(sparcl_ctx_set_memory_limit)",
                        what, bytes, kind, limit);
}

sparcl_status sparcl__mem_check_host(sparcl_ctx *ctx, const char *what, size_t bytes)
{
    return check(ctx, HOST, what, bytes);
}

sparcl_status sparcl__mem_check_device(sparcl_ctx *ctx, const char *what, size_t bytes)
{
    return check(ctx, DEVICE, what, bytes);
}

sparcl_status sparcl__mem_over_host(sparcl_ctx *ctx, const char *what, size_t held)
{
    return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                        "%s needs more than %zu bytes of host memory (stopped with %zu held); "
                        "the limit is %zu bytes (sparcl_ctx_set_memory_limit)",
                        what, limit_of(ctx, HOST), held, limit_of(ctx, HOST));
}

SPARCL_API sparcl_status sparcl_ctx_set_memory_limit(sparcl_ctx *ctx, uint64_t host_bytes,
                                                     uint64_t device_bytes)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    pthread_mutex_lock(&ctx->lock);
    ctx->mem_limit[HOST] = host_bytes;
    ctx->mem_limit[DEVICE] = device_bytes;
    pthread_mutex_unlock(&ctx->lock);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_ctx_memory_limit(sparcl_ctx *ctx, uint64_t *host_bytes,
                                                 uint64_t *device_bytes)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    if (host_bytes)
        *host_bytes = sparcl__mem_host_limit(ctx);
    if (device_bytes)
        *device_bytes = sparcl__mem_device_limit(ctx);
    return SPARCL_OK;
}
