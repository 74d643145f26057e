/*
 * program.h -- building OpenCL programs from the embedded kernel sources and
 * caching them per context (and on disk, program_cache.h).
 */
#ifndef SPARCL_PROGRAM_H
#define SPARCL_PROGRAM_H

#include <stdint.h>

#include "sparcl.h"

/* The file every program starts with, before its own. */
#define SPARCL__PROGRAM_PRELUDE "common.clh"

/* The text of a kernel file from cl/ (e.g. "attn_fwd.cl"): embedded at build
 * time, or read from SPARCL_KERNEL_DIR when the library was configured to
 * load kernels from a directory or that environment variable is set.
 * *out is a malloc'd string, or NULL on failure: SPARCL_ERR_CONFIG when the
 * folder's file cannot be read (the message names the folder and file),
 * SPARCL_ERR_OUT_OF_MEMORY, SPARCL_ERR_INTERNAL (not embedded). */
sparcl_status sparcl__kernel_source_read(sparcl_ctx *ctx, const char *file, char **out);

/* As sparcl__kernel_source_read(), returning the text or NULL. */
char *sparcl__kernel_source(sparcl_ctx *ctx, const char *file);

/* Mixes the texts of files[0..n), in order, into h (sparcl__hash_str). */
sparcl_status sparcl__sources_hash(sparcl_ctx *ctx, const char *const *files, int n, uint64_t h,
                                   uint64_t *out);

/* Returns the program for `file` (after SPARCL__PROGRAM_PRELUDE) built with
 * `options`, building it on first use.  The cache owns the program; the
 * caller must not release it.  The program lives as long as the context.
 * In offline mode a program missing from the bundle is
 * SPARCL_ERR_NOT_SUPPORTED, naming the files and options. */
sparcl_status sparcl__program_get(sparcl_ctx *ctx, const char *file, const char *options,
                                  cl_program *out);

/* As sparcl__program_get() for a program made of files[0..n) in order
 * (1 <= n <= 8), the prelude not implied. */
sparcl_status sparcl__program_get_files(sparcl_ctx *ctx, const char *const *files, int n,
                                        const char *options, cl_program *out);

/* SPARCL_OK when sparcl__program_get(file, options) can work without a
 * compiler: always online; offline, when the bundle holds the binary (a
 * file of that key exists; it is not loaded).  Else SPARCL_ERR_NOT_SUPPORTED
 * naming the files and options. */
sparcl_status sparcl__program_available(sparcl_ctx *ctx, const char *file, const char *options);

/* Frees every cached program (called by sparcl_ctx_free). */
void sparcl__program_cache_free(sparcl_ctx *ctx);

#endif
