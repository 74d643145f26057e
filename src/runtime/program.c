/*
 * program.c -- kernel sources and the per-context program cache.
 *
 * Kernel files in cl/ are embedded into the library by CMake (see
 * cmake/embed_files.cmake).  For kernel work they can instead be read from
 * a directory: the SPARCL_KERNEL_DIR environment variable, or the directory
 * configured with -DSPARCL_KERNEL_DIR=... at build time.  A program is a
 * list of files compiled as one (today cl/common.clh followed by the kernel
 * file), so kernels share helpers without an #include path.
 *
 * Built programs are kept per context, keyed by files and build options
 * (the source is fixed for the life of the process).  Below that sits the
 * disk (program_cache.c): a miss in memory looks for a binary on disk before
 * compiling, and stores what it compiled; in offline mode the disk is a
 * bundle and nothing is ever compiled.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/hash.h"
#include "runtime/program.h"
#include "runtime/program_cache.h"
#include "runtime/text_file.h"

typedef struct sparcl__embedded_file {
    const char *name;
    const char *text;
} sparcl__embedded_file;

extern const sparcl__embedded_file sparcl__embedded_files[];
extern const int sparcl__embedded_files_count;

/* Most files one program is built from. */
#define MAX_FILES 8

struct sparcl__program_entry {
    char *files; /* space-separated */
    char *options;
    cl_program program;
    sparcl__program_entry *next;
};

sparcl_status sparcl__kernel_source_read(sparcl_ctx *ctx, const char *file, char **out)
{
    *out = NULL;
    const char *dir = getenv("SPARCL_KERNEL_DIR");
    const char *from = "SPARCL_KERNEL_DIR";
#ifdef SPARCL_KERNEL_DIR_DEFAULT
    if (!dir || !*dir) {
        dir = SPARCL_KERNEL_DIR_DEFAULT;
        from = "the build's SPARCL_KERNEL_DIR";
    }
#endif
    if (dir && *dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (!(*out = sparcl__read_text_file(path)))
            return sparcl__fail(ctx, SPARCL_ERR_CONFIG,
                                "cannot read kernel source %s (folder %s from %s): %s", path, dir,
                                from, strerror(errno));
        return SPARCL_OK;
    }
    for (int i = 0; i < sparcl__embedded_files_count; ++i)
        if (strcmp(sparcl__embedded_files[i].name, file) == 0) {
            if (!(*out = strdup(sparcl__embedded_files[i].text)))
                return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot copy kernel source");
            return SPARCL_OK;
        }
    return sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "kernel source %s is not embedded", file);
}

char *sparcl__kernel_source(sparcl_ctx *ctx, const char *file)
{
    char *text = NULL;
    sparcl__kernel_source_read(ctx, file, &text);
    return text;
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

sparcl_status sparcl__sources_hash(sparcl_ctx *ctx, const char *const *files, int n, uint64_t h,
                                   uint64_t *out)
{
    for (int i = 0; i < n; ++i) {
        char *text = NULL;
        sparcl_status st = sparcl__kernel_source_read(ctx, files[i], &text);
        if (st != SPARCL_OK)
            return st;
        h = sparcl__hash_str(h, text);
        free(text);
    }
    *out = h;
    return SPARCL_OK;
}

static void count(sparcl_ctx *ctx, int64_t *counter)
{
    pthread_mutex_lock(&ctx->lock);
    ++*counter;
    pthread_mutex_unlock(&ctx->lock);
}

static sparcl_status compile(sparcl_ctx *ctx, const sparcl__program_key *key,
                             const char *const *texts, int n, const char *options, cl_program *out)
{
    cl_int err;
    cl_program prog =
        clCreateProgramWithSource(ctx->context, (cl_uint)n, (const char **)texts, NULL, &err);
    if (!prog)
        return sparcl__fail_cl(ctx, err, "clCreateProgramWithSource");
    count(ctx, &ctx->program_counters.builds);
    err = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t len = 0;
        clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
        char *log = calloc(len + 1, 1);
        if (log)
            clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, len, log, NULL);
        clReleaseProgram(prog);
        sparcl_status st = sparcl__fail_build(ctx, log,
                                              "building %s with \"%s\" failed (%s); "
                                              "see sparcl_ctx_build_log()",
                                              key->files, options, sparcl__cl_error_name(err));
        free(log);
        return st;
    }
    log_build(ctx, prog, key->files, options);
    *out = prog;
    return SPARCL_OK;
}

/* The program from the offline bundle, or the clear error of offline
 * mode. */
static sparcl_status from_bundle(sparcl_ctx *ctx, const char *dir, const sparcl__program_key *key,
                                 const char *options, cl_program *out)
{
    char why[512];
    *out = sparcl__program_disk_load(ctx, dir, key, options, why, sizeof why);
    if (*out) {
        count(ctx, &ctx->program_counters.disk_hits);
        return SPARCL_OK;
    }
    if (why[0]) {
        count(ctx, &ctx->program_counters.disk_rejected);
        return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                            "offline mode: bundle file %s/%s for %s with \"%s\" is not usable: %s",
                            dir, key->name, key->files, options, why);
    }
    return sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                        "offline mode: bundle %s has no binary of %s built with \"%s\" for this "
                        "device (%s); build it with sparcl-tune --build-bundle",
                        dir, key->files, options, key->name);
}

/* Reads files[0..n) into texts and builds their key. */
static sparcl_status read_and_key(sparcl_ctx *ctx, const char *const *files, int n,
                                  const char *options, char **texts, sparcl__program_key *key)
{
    sparcl_status st = SPARCL_OK;
    memset(key, 0, sizeof *key);
    for (int i = 0; i < n && st == SPARCL_OK; ++i)
        st = sparcl__kernel_source_read(ctx, files[i], &texts[i]);
    if (st == SPARCL_OK)
        st = sparcl__program_key_init(ctx, files, (const char *const *)texts, n, options, key);
    return st;
}

static void release_key(char **texts, int n, sparcl__program_key *key)
{
    sparcl__program_key_free(key);
    for (int i = 0; i < n; ++i)
        free(texts[i]);
}

/* Reads the files, then: offline bundle, or disk cache, or a source build
 * (stored on disk when the cache is on). */
static sparcl_status obtain(sparcl_ctx *ctx, const char *const *files, int n, const char *options,
                            cl_program *out)
{
    char *texts[MAX_FILES] = {NULL};
    sparcl__program_key key;
    sparcl_status st = read_and_key(ctx, files, n, options, texts, &key);
    char dir[1024];
    if (st == SPARCL_OK && sparcl__program_offline_dir(ctx, dir, sizeof dir)) {
        st = from_bundle(ctx, dir, &key, options, out);
    } else if (st == SPARCL_OK) {
        int cached = sparcl__program_cache_dir(ctx, dir, sizeof dir);
        char why[512] = "";
        *out = cached ? sparcl__program_disk_load(ctx, dir, &key, options, why, sizeof why) : NULL;
        if (*out) {
            count(ctx, &ctx->program_counters.disk_hits);
        } else {
            if (why[0]) {
                count(ctx, &ctx->program_counters.disk_rejected);
                sparcl__log(ctx, SPARCL_LOG_DEBUG, "program cache: %s/%s not used: %s", dir,
                            key.name, why);
            }
            st = compile(ctx, &key, (const char *const *)texts, n, options, out);
            if (st == SPARCL_OK && cached && sparcl__program_disk_store(ctx, dir, &key, *out))
                count(ctx, &ctx->program_counters.disk_writes);
        }
    }
    release_key(texts, n, &key);
    return st;
}

/* The entry of (files, options), or NULL.  Caller holds ctx->lock. */
static sparcl__program_entry *find(sparcl_ctx *ctx, const char *files, const char *options)
{
    for (sparcl__program_entry *e = ctx->programs; e; e = e->next)
        if (strcmp(e->files, files) == 0 && strcmp(e->options, options) == 0)
            return e;
    return NULL;
}

sparcl_status sparcl__program_get_files(sparcl_ctx *ctx, const char *const *files, int n,
                                        const char *options, cl_program *out)
{
    if (n < 1 || n > MAX_FILES)
        return sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "a program of %d files", n);
    char joined[1024] = "";
    for (int i = 0; i < n; ++i)
        snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s", i ? " " : "",
                 files[i]);
    pthread_mutex_lock(&ctx->lock);
    sparcl__program_entry *hit = find(ctx, joined, options);
    if (hit) {
        *out = hit->program;
        ++ctx->program_counters.memory_hits;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (hit)
        return SPARCL_OK;

    /* Build outside the lock: compiling takes seconds and other threads may
     * need other programs meanwhile.  Two threads racing on the same key
     * both build; the loser's program is released. */
    cl_program prog = NULL;
    sparcl_status st = obtain(ctx, files, n, options, &prog);
    if (st != SPARCL_OK)
        return st;
    sparcl__program_entry *e = calloc(1, sizeof *e);
    if (e) {
        e->files = strdup(joined);
        e->options = strdup(options);
    }
    if (!e || !e->files || !e->options) {
        if (e) {
            free(e->files);
            free(e->options);
        }
        free(e);
        clReleaseProgram(prog);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a cache entry");
    }
    pthread_mutex_lock(&ctx->lock);
    sparcl__program_entry *other = find(ctx, joined, options);
    if (other) {
        *out = other->program;
        pthread_mutex_unlock(&ctx->lock);
        clReleaseProgram(prog);
        free(e->files);
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

sparcl_status sparcl__program_get(sparcl_ctx *ctx, const char *file, const char *options,
                                  cl_program *out)
{
    const char *files[2] = {SPARCL__PROGRAM_PRELUDE, file};
    return sparcl__program_get_files(ctx, files, 2, options, out);
}

sparcl_status sparcl__program_available(sparcl_ctx *ctx, const char *file, const char *options)
{
    char dir[1024];
    if (!sparcl__program_offline_dir(ctx, dir, sizeof dir))
        return SPARCL_OK;
    const char *files[2] = {SPARCL__PROGRAM_PRELUDE, file};
    char *texts[2] = {NULL, NULL};
    sparcl__program_key key;
    sparcl_status st = read_and_key(ctx, files, 2, options, texts, &key);
    if (st == SPARCL_OK) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, key.name);
        FILE *f = fopen(path, "rb");
        if (f)
            fclose(f);
        else
            st = sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED,
                              "offline mode: bundle %s has no binary of %s built with \"%s\"", dir,
                              key.files, options);
    }
    release_key(texts, 2, &key);
    return st;
}

void sparcl__program_cache_free(sparcl_ctx *ctx)
{
    sparcl__program_entry *e = ctx->programs;
    while (e) {
        sparcl__program_entry *next = e->next;
        clReleaseProgram(e->program);
        free(e->files);
        free(e->options);
        free(e);
        e = next;
    }
    ctx->programs = NULL;
}
