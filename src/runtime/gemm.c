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

/* Sizes below this cube of m x n x k run CLBlast's direct kernel: with a
 * tuned XgemmDirect, every GEMM of a plan does. */
#define DIRECT_UP_TO 32768

sparcl_status sparcl__gemm_override(sparcl_ctx *ctx, const char *const *names, const size_t *values,
                                    size_t n)
{
    CLBlastStatusCode st = CLBlastOverrideParameters(
        ctx->device, "XgemmDirect", CLBlastPrecisionSingle, n, (const char **)names, values);
    if (st != CLBlastSuccess)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "CLBlastOverrideParameters(XgemmDirect) refused the parameters: "
                            "CLBlast status %d",
                            (int)st);
    const char *routine[] = {"XGEMM_MIN_INDIRECT_SIZE"};
    const size_t direct[] = {DIRECT_UP_TO};
    st = CLBlastOverrideParameters(ctx->device, "GemmRoutine", CLBlastPrecisionSingle, 1, routine,
                                   direct);
    if (st != CLBlastSuccess)
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "CLBlastOverrideParameters(GemmRoutine) failed: CLBlast status %d",
                            (int)st);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_ctx_set_gemm_params(sparcl_ctx *ctx, const sparcl_params *params)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    pthread_mutex_lock(&ctx->lock);
    ctx->gemm_params_set = params != NULL;
    if (params)
        ctx->gemm_params = *params;
    else
        sparcl_params_clear(&ctx->gemm_params);
    pthread_mutex_unlock(&ctx->lock);
    return SPARCL_OK;
}

int sparcl__gemm_ctx_params(sparcl_ctx *ctx, sparcl_params *out)
{
    pthread_mutex_lock(&ctx->lock);
    int set = ctx->gemm_params_set;
    *out = ctx->gemm_params;
    pthread_mutex_unlock(&ctx->lock);
    return set;
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
