/*
 * program.h -- building OpenCL programs from the embedded kernel sources and
 * caching them per context.
 */
#ifndef SPARCL_PROGRAM_H
#define SPARCL_PROGRAM_H

#include "sparcl.h"

/* The text of a kernel file from cl/ (e.g. "attn_fwd.cl"): embedded at build
 * time, or read from SPARCL_KERNEL_DIR when the library was configured to
 * load kernels from a directory or that environment variable is set.
 * Returns a malloc'd string or NULL (with the message on ctx). */
char *sparcl__kernel_source(sparcl_ctx *ctx, const char *file);

/* Returns the program for `file` built with `options`, building it on first
 * use.  The cache owns the program; the caller must not release it.  The
 * program lives as long as the context. */
sparcl_status sparcl__program_get(sparcl_ctx *ctx, const char *file, const char *options,
                                  cl_program *out);

/* Frees every cached program (called by sparcl_ctx_free). */
void sparcl__program_cache_free(sparcl_ctx *ctx);

#endif
