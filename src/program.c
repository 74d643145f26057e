/*
 * program.c -- kernel sources and the per-context program cache.
 *
 * Kernel files in cl/ are embedded into the library by CMake (see
 * cmake/embed_files.cmake).  For kernel work they can instead be read from
 * a directory: the SPARCL_KERNEL_DIR environment variable, or the directory
 * configured with -DSPARCL_KERNEL_DIR=... at build time.  Every program is
 * cl/common.clh followed by the kernel file, so kernels share helpers without
 * an #include path.  Built programs are cached per context, keyed by file
 * and build options (the source is fixed for the life of the process).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "error.h"
#include "program.h"
#include "text_file.h"

typedef struct sparcl__embedded_file {
    const char *name;
    const char *text;
} sparcl__embedded_file;

extern const sparcl__embedded_file sparcl__embedded_files[];
extern const int sparcl__embedded_files_count;

struct sparcl__program_entry {
    char *file;
    char *options;
    cl_program program;
    sparcl__program_entry *next;
};

static char *read_file(const char *dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return sparcl__read_text_file(path);
}

char *sparcl__kernel_source(sparcl_ctx *ctx, const char *file)
{
    const char *dir = getenv("SPARCL_KERNEL_DIR");
#ifdef SPARCL_KERNEL_DIR_DEFAULT
    if (!dir || !*dir)
        dir = SPARCL_KERNEL_DIR_DEFAULT;
#endif
    if (dir && *dir) {
        char *text = read_file(dir, file);
        if (!text)
            sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                         "cannot read kernel source %s/%s", dir, file);
        return text;
    }
    for (int i = 0; i < sparcl__embedded_files_count; ++i)
        if (strcmp(sparcl__embedded_files[i].name, file) == 0) {
            char *text = strdup(sparcl__embedded_files[i].text);
            if (!text)
                sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot copy kernel source");
            return text;
        }
    sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "kernel source %s is not embedded", file);
    return NULL;
}

/* Reports a successful build to the log callback at debug level, with the
 * compiler's log when it has one (e.g. warnings): the library prints
 * nothing itself, and the tests read it to keep the kernels warning-free. */
static void log_build(sparcl_ctx *ctx, cl_program prog, const char *file, const char *options)
{
    if (!ctx->log_fn)
        return;
    size_t n = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) ==
            CL_SUCCESS &&
        (log = calloc(n + 1, 1)) != NULL &&
        clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, n, log, NULL) != CL_SUCCESS)
        log[0] = 0;
    const int empty = !log || strspn(log, " \t\r\n") == strlen(log);
    sparcl__log(ctx, SPARCL_LOG_DEBUG, "built %s with \"%s\"%s%s", file, options,
                empty ? "" : "; compiler log:\n", empty ? "" : log);
    free(log);
}

static sparcl_status build(sparcl_ctx *ctx, const char *file, const char *options,
                           cl_program *out)
{
    char *common = sparcl__kernel_source(ctx, "common.clh");
    if (!common)
        return SPARCL_ERR_INTERNAL;
    char *body = sparcl__kernel_source(ctx, file);
    if (!body) {
        free(common);
        return SPARCL_ERR_INTERNAL;
    }
    const char *srcs[2] = {common, body};
    cl_int err;
    cl_program prog = clCreateProgramWithSource(ctx->context, 2, srcs, NULL, &err);
    free(common);
    free(body);
    if (!prog)
        return sparcl__fail_cl(ctx, err, "clCreateProgramWithSource");
    err = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t n = 0;
        clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
        char *log = calloc(n + 1, 1);
        if (log)
            clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, n, log, NULL);
        clReleaseProgram(prog);
        sparcl_status st = sparcl__fail_build(ctx, log,
                                              "building %s with \"%s\" failed (%s); "
                                              "see sparcl_ctx_build_log()",
                                              file, options, sparcl__cl_error_name(err));
        free(log);
        return st;
    }
    log_build(ctx, prog, file, options);
    *out = prog;
    return SPARCL_OK;
}

sparcl_status sparcl__program_get(sparcl_ctx *ctx, const char *file, const char *options,
                                  cl_program *out)
{
    pthread_mutex_lock(&ctx->lock);
    for (sparcl__program_entry *e = ctx->programs; e; e = e->next)
        if (strcmp(e->file, file) == 0 && strcmp(e->options, options) == 0) {
            *out = e->program;
            pthread_mutex_unlock(&ctx->lock);
            return SPARCL_OK;
        }
    pthread_mutex_unlock(&ctx->lock);

    /* Build outside the lock: compiling takes seconds and other threads may
     * need other programs meanwhile.  Two threads racing on the same key
     * both build; the loser's program is released. */
    cl_program prog = NULL;
    sparcl_status st = build(ctx, file, options, &prog);
    if (st != SPARCL_OK)
        return st;
    sparcl__program_entry *e = calloc(1, sizeof *e);
    if (e) {
        e->file = strdup(file);
        e->options = strdup(options);
    }
    if (!e || !e->file || !e->options) {
        if (e) {
            free(e->file);
            free(e->options);
        }
        free(e);
        clReleaseProgram(prog);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a cache entry");
    }
    pthread_mutex_lock(&ctx->lock);
    for (sparcl__program_entry *o = ctx->programs; o; o = o->next)
        if (strcmp(o->file, file) == 0 && strcmp(o->options, options) == 0) {
            *out = o->program;
            pthread_mutex_unlock(&ctx->lock);
            clReleaseProgram(prog);
            free(e->file);
            free(e->options);
            free(e);
            return SPARCL_OK;
        }
    e->program = prog;
    e->next = ctx->programs;
    ctx->programs = e;
    *out = prog;
    pthread_mutex_unlock(&ctx->lock);
    return SPARCL_OK;
}

void sparcl__program_cache_free(sparcl_ctx *ctx)
{
    sparcl__program_entry *e = ctx->programs;
    while (e) {
        sparcl__program_entry *next = e->next;
        clReleaseProgram(e->program);
        free(e->file);
        free(e->options);
        free(e);
        e = next;
    }
    ctx->programs = NULL;
}
