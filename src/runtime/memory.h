/*
 * memory.h -- the memory budget of one layout or plan build.
 *
 * Builders estimate the host and device bytes they will need from the
 * shapes alone, before allocating anything, and refuse with
 * SPARCL_ERR_OUT_OF_MEMORY (naming the bytes and the limit) when the
 * estimate exceeds the context's limit (sparcl_ctx_set_memory_limit(),
 * default: the host's physical memory and the device's global memory).
 * Where only a bound is known up front, the builder also caps its growing
 * arrays at the limit as it goes (sparcl__array_grow_capped()).
 */
#ifndef SPARCL_MEMORY_H
#define SPARCL_MEMORY_H

#include <stddef.h>

#include "sparcl.h"

/* The limits in force for `ctx` (NULL: the defaults for the host; no
 * device).  Never 0: an unknown default is SIZE_MAX. */
size_t sparcl__mem_host_limit(sparcl_ctx *ctx);
size_t sparcl__mem_device_limit(sparcl_ctx *ctx);

/* SPARCL_OK if `bytes` (SIZE_MAX: more than can be counted) fits the
 * limit, else SPARCL_ERR_OUT_OF_MEMORY with "<what> needs <bytes> bytes of
 * host (device) memory; the limit is <limit>". */
sparcl_status sparcl__mem_check_host(sparcl_ctx *ctx, const char *what, size_t bytes);
sparcl_status sparcl__mem_check_device(sparcl_ctx *ctx, const char *what, size_t bytes);

/* SPARCL_ERR_OUT_OF_MEMORY for a build that stopped growing at the limit:
 * "<what> needs more than <limit> bytes of host memory (stopped at
 * <held>); the limit is <limit>". */
sparcl_status sparcl__mem_over_host(sparcl_ctx *ctx, const char *what, size_t held);

#endif
