/*
 * gemm.h -- the matrix products of FAVOR+ and Linformer plans, run by
 * CLBlast, and the per-call scratch buffers those plans need.  One wrapper
 * so that CLBlast's status codes become sparcl statuses in one place.
 */
#ifndef SPARCL_GEMM_H
#define SPARCL_GEMM_H

#include "sparcl.h"

/* One row-major operand: buffer, offset and leading dimension in floats. */
typedef struct sparcl__mat {
    cl_mem buf;
    size_t off, ld;
    int trans; /* use the transpose */
} sparcl__mat;

/* C = alpha * op(A) op(B) + beta * C with op(A) m x kk, op(B) kk x n, all
 * row-major, enqueued on `queue` (in order).  SPARCL_ERR_OPENCL with
 * CLBlast's status in the message on failure. */
sparcl_status sparcl__gemm(sparcl_ctx *ctx, cl_command_queue queue, size_t m, size_t n,
                           size_t kk, float alpha, sparcl__mat a, sparcl__mat b, float beta,
                           sparcl__mat c);

/* Makes CLBlast's SGEMM on the context's device use its direct kernel
 * (XgemmDirect) with these n parameters (CLBlast's names) from its next
 * call on, for every size: CLBlastOverrideParameters for XgemmDirect and
 * for GemmRoutine (the size below which the direct kernel runs).  The
 * override is CLBlast's, process-wide per device.  SPARCL_ERR_NOT_SUPPORTED
 * naming CLBlast's status if it refuses. */
sparcl_status sparcl__gemm_override(sparcl_ctx *ctx, const char *const *names, const size_t *values,
                                    size_t n);

/* The context's sparcl_ctx_set_gemm_params() map into *out; 1 if one is
 * set, else 0 (thread-safe). */
int sparcl__gemm_ctx_params(sparcl_ctx *ctx, sparcl_params *out);

/* Records that plans of `ctx` use CLBlast (thread-safe). */
void sparcl__gemm_note_use(sparcl_ctx *ctx);

/* Called by sparcl_ctx_free: CLBlast caches programs per OpenCL context in a
 * process-wide cache that would otherwise outlive the context (and crash
 * some drivers, oclgrind among them, at exit).  CLBlast can only clear the
 * whole cache, so other contexts rebuild (or reload) on their next call. */
void sparcl__gemm_release(sparcl_ctx *ctx);

/* A read-write device buffer of `bytes` (at least 4), or
 * SPARCL_ERR_OUT_OF_MEMORY naming `what`.  Released by the caller; buffers
 * released while enqueued work uses them live until that work completes. */
sparcl_status sparcl__scratch(sparcl_ctx *ctx, cl_mem *out, size_t bytes, const char *what);

/* Makes work enqueued next on the in-order `queue` wait for `wait`. */
sparcl_status sparcl__queue_wait(sparcl_ctx *ctx, cl_command_queue queue, cl_uint num_wait,
                                 const cl_event *wait);

#endif
