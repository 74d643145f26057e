/*
 * device_io.h -- float tensors to and from the device for the suites that
 * drive plans through cl_mem: a context, buffers filled from the host or
 * left uninitialized, blocking reads back.  Each helper fails the calling
 * Criterion test on an OpenCL error, so the suites stay about the library.
 */
#ifndef SPARCL_TEST_DEVICE_IO_H
#define SPARCL_TEST_DEVICE_IO_H

#include <stddef.h>

#include "sparcl.h"

/* A context on the default device (sparcl_ctx_init()); the caller frees it. */
sparcl_ctx *dev_ctx(void);

/* A read-write buffer of n floats holding x[0 .. n). */
cl_mem dev_upload(sparcl_ctx *ctx, const float *x, size_t n);

/* A read-write buffer of n floats, contents undefined. */
cl_mem dev_buffer(sparcl_ctx *ctx, size_t n);

/* Blocking read of n floats of m into x, on the context's queue. */
void dev_download(sparcl_ctx *ctx, cl_mem m, float *x, size_t n);

#endif
