/*
 * error.h -- recording failures as values.
 *
 * Every internal failure goes through these helpers: they store the message
 * (on the context, or in a thread-local slot when there is none), forward it
 * to the log callback, and return the status so callers can write
 * `return sparcl__fail(ctx, SPARCL_ERR_..., "...")`.
 */
#ifndef SPARCL_ERROR_H
#define SPARCL_ERROR_H

#include "sparcl.h"

#if defined(__GNUC__)
#define SPARCL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SPARCL_PRINTF(a, b)
#endif

/* Records `status` with a formatted message and returns `status`. */
sparcl_status sparcl__fail(sparcl_ctx *ctx, sparcl_status status, const char *fmt, ...)
    SPARCL_PRINTF(3, 4);

/* Records SPARCL_ERR_OPENCL with the raw code and the call that failed. */
sparcl_status sparcl__fail_cl(sparcl_ctx *ctx, cl_int err, const char *what);

/* Records SPARCL_ERR_BUILD with the compiler log (copied). */
sparcl_status sparcl__fail_build(sparcl_ctx *ctx, const char *log, const char *fmt, ...)
    SPARCL_PRINTF(3, 4);

/* Sends a diagnostic to the context's log callback, if any. */
void sparcl__log(sparcl_ctx *ctx, sparcl_log_level level, const char *fmt, ...)
    SPARCL_PRINTF(3, 4);

/* The name of an OpenCL error code ("CL_OUT_OF_RESOURCES"). */
const char *sparcl__cl_error_name(cl_int err);

#endif
