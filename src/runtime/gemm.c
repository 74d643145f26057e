/*
 * gemm.c -- see gemm.h.
 */
#include <clblast_c.h>
#include <pthread.h>

#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"

sparcl_status sparcl__gemm(sparcl_ctx *ctx, cl_command_queue queue, size_t m, size_t n,
                           size_t kk, float alpha, sparcl__mat a, sparcl__mat b, float beta,
                           sparcl__mat c)
{
    CLBlastStatusCode st = CLBlastSgemm(
        CLBlastLayoutRowMajor, a.trans ? CLBlastTransposeYes : CLBlastTransposeNo,
        b.trans ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, kk, alpha, a.buf, a.off, a.ld,
        b.buf, b.off, b.ld, beta, c.buf, c.off, c.ld, &queue, NULL);
    if (st != CLBlastSuccess)
        return sparcl__fail(ctx, SPARCL_ERR_OPENCL,
                            "CLBlastSgemm (%zu x %zu x %zu) failed with status %d", m, n, kk,
                            (int)st);
    return SPARCL_OK;
}

void sparcl__gemm_note_use(sparcl_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    ctx->clblast_used = 1;
    pthread_mutex_unlock(&ctx->lock);
}

void sparcl__gemm_release(sparcl_ctx *ctx)
{
    if (ctx->clblast_used)
        CLBlastClearCache();
}

sparcl_status sparcl__scratch(sparcl_ctx *ctx, cl_mem *out, size_t bytes, const char *what)
{
    *out = NULL;
    if (bytes < 4)
        bytes = 4;
    if (bytes > ctx->limits.max_alloc)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "%s needs %zu bytes; the device's largest allocation is %llu", what,
                            bytes, (unsigned long long)ctx->limits.max_alloc);
    cl_int err;
    *out = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!*out)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for %s (%s)",
                            bytes, what, sparcl__cl_error_name(err));
    return SPARCL_OK;
}

sparcl_status sparcl__queue_wait(sparcl_ctx *ctx, cl_command_queue queue, cl_uint num_wait,
                                 const cl_event *wait)
{
    if (num_wait == 0)
        return SPARCL_OK;
    cl_int err = clEnqueueBarrierWithWaitList(queue, num_wait, wait, NULL);
    return err == CL_SUCCESS ? SPARCL_OK : sparcl__fail_cl(ctx, err, "clEnqueueBarrierWithWaitList");
}
