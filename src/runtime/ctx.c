/*
 * ctx.c -- device selection and the context object.
 *
 * A context is one device with one in-order queue.  It is either created
 * here (SPARCL_DEVICE, else the first GPU, else the first CPU) or wraps the
 * application's own objects, which are retained and released, never more.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "runtime/program.h"
#include "tuning/tuning_rows.h"

#define MAX_DEVICES 64

typedef struct device_entry {
    cl_platform_id platform;
    cl_device_id device;
    cl_device_type type;
    char name[256]; /* "platform / device" */
} device_entry;

static int enumerate(device_entry *list, int cap)
{
    cl_platform_id plats[16];
    cl_uint nplat = 0;
    if (clGetPlatformIDs(16, plats, &nplat) != CL_SUCCESS)
        return 0;
    int n = 0;
    for (cl_uint p = 0; p < nplat && p < 16; ++p) {
        char pname[128] = "";
        clGetPlatformInfo(plats[p], CL_PLATFORM_NAME, sizeof pname, pname, NULL);
        cl_device_id devs[MAX_DEVICES];
        cl_uint ndev = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &ndev) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < ndev && d < MAX_DEVICES && n < cap; ++d) {
            char dname[128] = "";
            clGetDeviceInfo(devs[d], CL_DEVICE_NAME, sizeof dname, dname, NULL);
            list[n].platform = plats[p];
            list[n].device = devs[d];
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof list[n].type, &list[n].type, NULL);
            snprintf(list[n].name, sizeof list[n].name, "%s / %s", pname, dname);
            ++n;
        }
    }
    return n;
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    for (; *hay; ++hay) {
        size_t i = 0;
        while (i < nl && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            ++i;
        if (i == nl)
            return 1;
    }
    return nl == 0;
}

static const char *type_name(cl_device_type t)
{
    if (t & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (t & CL_DEVICE_TYPE_CPU)
        return "CPU";
    if (t & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    return "other";
}

SPARCL_API sparcl_status sparcl_device_list(char *buf, size_t size, int *count)
{
    device_entry list[MAX_DEVICES];
    int n = enumerate(list, MAX_DEVICES);
    if (count)
        *count = n;
    if (buf && size)
        buf[0] = '\0';
    if (n == 0)
        return sparcl__fail(NULL, SPARCL_ERR_OPENCL,
                            "no OpenCL platform or device found (is an ICD such as "
                            "pocl-opencl-icd installed?)");
    size_t used = 0;
    for (int i = 0; i < n && buf && used + 1 < size; ++i) {
        int w = snprintf(buf + used, size - used, "%d: %s (%s)\n", i, list[i].name,
                         type_name(list[i].type));
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return SPARCL_OK;
}

/* Picks a device by selector (index or substring), or by the default rule. */
static sparcl_status pick(const char *selector, device_entry *out)
{
    device_entry list[MAX_DEVICES];
    int n = enumerate(list, MAX_DEVICES);
    if (n == 0)
        return sparcl__fail(NULL, SPARCL_ERR_OPENCL,
                            "no OpenCL platform or device found (is an ICD such as "
                            "pocl-opencl-icd installed?)");
    if (selector && *selector) {
        char *end = NULL;
        long idx = strtol(selector, &end, 10);
        if (end && *end == '\0') {
            if (idx < 0 || idx >= n)
                return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                                    "device index %ld out of range (%d devices)", idx, n);
            *out = list[idx];
            return SPARCL_OK;
        }
        for (int i = 0; i < n; ++i)
            if (contains_nocase(list[i].name, selector)) {
                *out = list[i];
                return SPARCL_OK;
            }
        char names[SPARCL_MSG_MAX / 2] = "";
        size_t used = 0;
        for (int i = 0; i < n && used + 1 < sizeof names; ++i) {
            int w = snprintf(names + used, sizeof names - used, "%s%d: %s", i ? "; " : "", i,
                             list[i].name);
            if (w < 0 || (size_t)w >= sizeof names - used)
                break; /* truncated: the list ends where it was cut */
            used += (size_t)w;
        }
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                            "no OpenCL device matches \"%s\" (the devices: %s)", selector, names);
    }
    static const cl_device_type order[] = {CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_CPU};
    for (size_t o = 0; o < 2; ++o)
        for (int i = 0; i < n; ++i)
            if (list[i].type & order[o]) {
                *out = list[i];
                return SPARCL_OK;
            }
    *out = list[0];
    return SPARCL_OK;
}

static sparcl_status ctx_alloc(sparcl_ctx **out)
{
    sparcl_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a context");
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_mutex_init(&ctx->rows_lock, NULL);
    *out = ctx;
    return SPARCL_OK;
}

static void fill_device_info(sparcl_ctx *ctx)
{
    sparcl__device_limits *l = &ctx->limits;
    clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof l->max_wg_size,
                    &l->max_wg_size, NULL);
    clGetDeviceInfo(ctx->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof l->local_mem, &l->local_mem,
                    NULL);
    clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof l->max_alloc,
                    &l->max_alloc, NULL);
    clGetDeviceInfo(ctx->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof l->global_mem,
                    &l->global_mem, NULL);
    clGetDeviceInfo(ctx->device, CL_DEVICE_TYPE, sizeof l->type, &l->type, NULL);
    clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof l->compute_units,
                    &l->compute_units, NULL);
    cl_uint align_bits = 0;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof l->host_unified,
                        &l->host_unified, NULL) != CL_SUCCESS)
        l->host_unified = CL_FALSE;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits,
                        NULL) != CL_SUCCESS)
        align_bits = 0;
    l->base_align = align_bits / 8;
    cl_platform_id plat = NULL;
    clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL);
    char pname[128] = "", dname[128] = "", driver[64] = "";
    if (plat)
        clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof pname, pname, NULL);
    clGetDeviceInfo(ctx->device, CL_DEVICE_NAME, sizeof dname, dname, NULL);
    clGetDeviceInfo(ctx->device, CL_DRIVER_VERSION, sizeof driver, driver, NULL);
    snprintf(ctx->device_string, sizeof ctx->device_string, "%s / %s / %s", pname, dname,
             driver);
}

SPARCL_API sparcl_status sparcl_ctx_init_device(sparcl_ctx **out, const char *selector)
{
    if (!out)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!selector || !*selector)
        selector = getenv("SPARCL_DEVICE");
    device_entry dev;
    sparcl_status st = pick(selector, &dev);
    if (st != SPARCL_OK)
        return st;
    sparcl_ctx *ctx = NULL;
    if ((st = ctx_alloc(&ctx)) != SPARCL_OK)
        return st;
    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)dev.platform,
                                     0};
    ctx->context = clCreateContext(props, 1, &dev.device, NULL, NULL, &err);
    if (!ctx->context) {
        sparcl_ctx_free(ctx);
        return sparcl__fail_cl(NULL, err, "clCreateContext");
    }
    ctx->device = dev.device;
    ctx->queue = clCreateCommandQueue(ctx->context, dev.device, CL_QUEUE_PROFILING_ENABLE, &err);
    if (!ctx->queue) {
        sparcl_ctx_free(ctx);
        return sparcl__fail_cl(NULL, err, "clCreateCommandQueue");
    }
    fill_device_info(ctx);
    *out = ctx;
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_ctx_init(sparcl_ctx **out)
{
    return sparcl_ctx_init_device(out, NULL);
}

SPARCL_API sparcl_status sparcl_ctx_init_wrap(sparcl_ctx **out, cl_context context,
                                              cl_device_id device, cl_command_queue queue)
{
    if (!out)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!context || !device || !queue)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            !context ? "context" : !device ? "device" : "queue");
    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(NULL, err, "clGetCommandQueueInfo");
    clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
    if (qctx != context || qdev != device)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                            "queue does not belong to the given context and device");
    sparcl_ctx *ctx = NULL;
    sparcl_status st = ctx_alloc(&ctx);
    if (st != SPARCL_OK)
        return st;
    clRetainContext(context);
    clRetainDevice(device);
    clRetainCommandQueue(queue);
    ctx->context = context;
    ctx->device = device;
    ctx->queue = queue;
    fill_device_info(ctx);
    *out = ctx;
    return SPARCL_OK;
}

SPARCL_API void sparcl_ctx_free(sparcl_ctx *ctx)
{
    if (!ctx)
        return;
    sparcl__program_cache_free(ctx);
    sparcl__gemm_release(ctx);
    if (ctx->queue)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->device)
        clReleaseDevice(ctx->device);
    if (ctx->context)
        clReleaseContext(ctx->context);
    free(ctx->build_log);
    sparcl__tuning_rows_free(ctx);
    pthread_mutex_destroy(&ctx->rows_lock);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

SPARCL_API cl_context sparcl_ctx_cl_context(const sparcl_ctx *ctx) { return ctx ? ctx->context : NULL; }
SPARCL_API cl_device_id sparcl_ctx_cl_device(const sparcl_ctx *ctx) { return ctx ? ctx->device : NULL; }
SPARCL_API cl_command_queue sparcl_ctx_cl_queue(const sparcl_ctx *ctx) { return ctx ? ctx->queue : NULL; }
SPARCL_API const char *sparcl_ctx_device_string(const sparcl_ctx *ctx) { return ctx ? ctx->device_string : ""; }
