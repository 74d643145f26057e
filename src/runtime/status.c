/*
 * status.c -- status codes, error messages and the log callback.
 *
 * Owns the rule that failures are values: a message is stored on the
 * context (or thread-locally for calls without one), optionally forwarded to
 * the log callback, and never printed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CL/cl_ext.h>

#include "runtime/ctx.h"
#include "runtime/error.h"

static _Thread_local char thread_msg[SPARCL_MSG_MAX];

SPARCL_API const char *sparcl_status_string(sparcl_status status)
{
    switch (status) {
    case SPARCL_OK: return "ok";
    case SPARCL_ERR_INVALID_ARGUMENT: return "invalid argument";
    case SPARCL_ERR_NOT_SUPPORTED: return "not supported (a device limit, or a feature not implemented for this kind of plan)";
    case SPARCL_ERR_OPENCL: return "OpenCL error";
    case SPARCL_ERR_BUILD: return "kernel build error";
    case SPARCL_ERR_OUT_OF_MEMORY: return "out of memory";
    case SPARCL_ERR_DATABASE: return "tuning database error";
    case SPARCL_ERR_INTERNAL: return "internal error";
    case SPARCL_ERR_CONFIG: return "configuration error";
    }
    return "unknown status";
}

static void record(sparcl_ctx *ctx, const char *msg)
{
    if (!ctx) {
        snprintf(thread_msg, sizeof thread_msg, "%s", msg);
        return;
    }
    pthread_mutex_lock(&ctx->lock);
    snprintf(ctx->errmsg, sizeof ctx->errmsg, "%s", msg);
    sparcl_log_fn fn = ctx->log_fn;
    void *user = ctx->log_user;
    pthread_mutex_unlock(&ctx->lock);
    if (fn)
        fn(user, SPARCL_LOG_ERROR, msg);
}

sparcl_status sparcl__fail(sparcl_ctx *ctx, sparcl_status status, const char *fmt, ...)
{
    char msg[SPARCL_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    record(ctx, msg);
    return status;
}

sparcl_status sparcl__fail_cl(sparcl_ctx *ctx, cl_int err, const char *what)
{
    if (ctx) {
        pthread_mutex_lock(&ctx->lock);
        ctx->cl_error = err;
        pthread_mutex_unlock(&ctx->lock);
    }
    return sparcl__fail(ctx, SPARCL_ERR_OPENCL, "%s failed: %s (%d)", what,
                        sparcl__cl_error_name(err), (int)err);
}

sparcl_status sparcl__fail_build(sparcl_ctx *ctx, const char *log, const char *fmt, ...)
{
    char msg[SPARCL_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx) {
        char *copy = strdup(log ? log : "");
        pthread_mutex_lock(&ctx->lock);
        free(ctx->build_log);
        ctx->build_log = copy;
        pthread_mutex_unlock(&ctx->lock);
    }
    record(ctx, msg);
    return SPARCL_ERR_BUILD;
}

void sparcl__log(sparcl_ctx *ctx, sparcl_log_level level, const char *fmt, ...)
{
    if (!ctx)
        return;
    pthread_mutex_lock(&ctx->lock);
    sparcl_log_fn fn = ctx->log_fn;
    void *user = ctx->log_user;
    pthread_mutex_unlock(&ctx->lock);
    if (!fn)
        return;
    char msg[SPARCL_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(user, level, msg);
}

SPARCL_API const char *sparcl_ctx_errmsg(const sparcl_ctx *ctx)
{
    return ctx ? ctx->errmsg : thread_msg;
}

SPARCL_API cl_int sparcl_ctx_cl_error(const sparcl_ctx *ctx)
{
    return ctx ? ctx->cl_error : CL_SUCCESS;
}

SPARCL_API const char *sparcl_ctx_build_log(const sparcl_ctx *ctx)
{
    return ctx && ctx->build_log ? ctx->build_log : "";
}

SPARCL_API void sparcl_ctx_set_log(sparcl_ctx *ctx, sparcl_log_fn fn, void *user)
{
    if (!ctx)
        return;
    pthread_mutex_lock(&ctx->lock);
    ctx->log_fn = fn;
    ctx->log_user = user;
    pthread_mutex_unlock(&ctx->lock);
}

const char *sparcl__cl_error_name(cl_int err)
{
    switch (err) {
#define NAME(x) case x: return #x;
    NAME(CL_SUCCESS)
    NAME(CL_DEVICE_NOT_FOUND)
    NAME(CL_DEVICE_NOT_AVAILABLE)
    NAME(CL_COMPILER_NOT_AVAILABLE)
    NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    NAME(CL_OUT_OF_RESOURCES)
    NAME(CL_OUT_OF_HOST_MEMORY)
    NAME(CL_PROFILING_INFO_NOT_AVAILABLE)
    NAME(CL_BUILD_PROGRAM_FAILURE)
    NAME(CL_INVALID_VALUE)
    NAME(CL_INVALID_DEVICE)
    NAME(CL_INVALID_CONTEXT)
    NAME(CL_INVALID_COMMAND_QUEUE)
    NAME(CL_INVALID_MEM_OBJECT)
    NAME(CL_INVALID_PROGRAM)
    NAME(CL_INVALID_PROGRAM_EXECUTABLE)
    NAME(CL_INVALID_KERNEL_NAME)
    NAME(CL_INVALID_KERNEL)
    NAME(CL_INVALID_ARG_INDEX)
    NAME(CL_INVALID_ARG_VALUE)
    NAME(CL_INVALID_ARG_SIZE)
    NAME(CL_INVALID_KERNEL_ARGS)
    NAME(CL_INVALID_WORK_DIMENSION)
    NAME(CL_INVALID_WORK_GROUP_SIZE)
    NAME(CL_INVALID_WORK_ITEM_SIZE)
    NAME(CL_INVALID_GLOBAL_OFFSET)
    NAME(CL_INVALID_EVENT_WAIT_LIST)
    NAME(CL_INVALID_EVENT)
    NAME(CL_INVALID_BUFFER_SIZE)
    NAME(CL_INVALID_BUILD_OPTIONS)
    NAME(CL_INVALID_PLATFORM)
    NAME(CL_PLATFORM_NOT_FOUND_KHR)
#undef NAME
    default: return "unknown OpenCL error";
    }
}

SPARCL_API sparcl_status sparcl_ctx_fail(sparcl_ctx *ctx, sparcl_status status, const char *message)
{
    return sparcl__fail(ctx, status, "%s", message ? message : "");
}
