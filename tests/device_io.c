/*
 * device_io.c -- see device_io.h.
 */
#include "device_io.h"

#include <criterion/criterion.h>

sparcl_ctx *dev_ctx(void)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    return ctx;
}

cl_mem dev_upload(sparcl_ctx *ctx, const float *x, size_t n)
{
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              n * sizeof(float), (void *)x, &err);
    cr_assert_not_null(m, "clCreateBuffer %d", err);
    return m;
}

cl_mem dev_buffer(sparcl_ctx *ctx, size_t n)
{
    cl_int err;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE, n * sizeof(float),
                              NULL, &err);
    cr_assert_not_null(m, "clCreateBuffer %d", err);
    return m;
}

void dev_download(sparcl_ctx *ctx, cl_mem m, float *x, size_t n)
{
    cr_assert_eq(clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m, CL_TRUE, 0, n * sizeof(float), x,
                                     0, NULL, NULL),
                 CL_SUCCESS);
}
