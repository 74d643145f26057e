/*
 * program_cache.c -- program binaries on disk (see program_cache.h): the
 * key, where the folders are, and reading and writing one file.
 *
 * File layout (integers little-endian):
 *   0  "SPARCLPB"            magic
 *   8  u32 format version    SPARCL__PROGRAM_FORMAT_VERSION
 *  12  u32 key text bytes    L
 *  16  u64 key hash
 *  24  u64 source hash
 *  32  u64 binary bytes      B
 *  40  u64 binary checksum   sparcl__hash of the binary
 *  48  key text (L bytes), then the binary (B bytes); nothing after.
 * A file that differs in any of these is not used: a cache falls back to
 * a source build, offline mode reports it.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/hash.h"
#include "runtime/program_cache.h"
#include "runtime/text_file.h"

#define HEADER_BYTES 48
static const char magic[8] = {'S', 'P', 'A', 'R', 'C', 'L', 'P', 'B'};

sparcl_status sparcl__program_key_init(sparcl_ctx *ctx, const char *const *files,
                                       const char *const *texts, int n, const char *options,
                                       sparcl__program_key *key)
{
    memset(key, 0, sizeof *key);
    uint64_t h = sparcl__hash_str(SPARCL__HASH_SEED, "sparcl program sources");
    size_t used = 0;
    for (int i = 0; i < n; ++i) {
        h = sparcl__hash_str(h, texts[i]);
        int w =
            snprintf(key->files + used, sizeof key->files - used, "%s%s", i ? " " : "", files[i]);
        used = w < 0                                   ? used
               : used + (size_t)w >= sizeof key->files ? sizeof key->files - 1
                                                       : used + (size_t)w;
    }
    key->source_hash = h;
    const char *fmt = "sparcl program binary format %d\nfiles: %s\nsources: %016llx\n"
                      "options: %s\ndevice: %s\n";
    int len = snprintf(NULL, 0, fmt, SPARCL__PROGRAM_FORMAT_VERSION, key->files,
                       (unsigned long long)h, options, ctx->device_string);
    key->text = len > 0 ? malloc((size_t)len + 1) : NULL;
    if (!key->text)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a program key");
    snprintf(key->text, (size_t)len + 1, fmt, SPARCL__PROGRAM_FORMAT_VERSION, key->files,
             (unsigned long long)h, options, ctx->device_string);
    key->hash = sparcl__hash_str(SPARCL__HASH_SEED, key->text);
    /* Named after the program's own file (the last one), without ".cl". */
    const char *own = n ? files[n - 1] : "program";
    int stem = (int)strcspn(own, ".");
    snprintf(key->name, sizeof key->name, "%.*s-%016llx.bin", stem > 48 ? 48 : stem, own,
             (unsigned long long)key->hash);
    return SPARCL_OK;
}

void sparcl__program_key_free(sparcl__program_key *key)
{
    free(key->text);
    key->text = NULL;
}

/* ---- where ---------------------------------------------------------------- */

int sparcl__program_cache_dir(sparcl_ctx *ctx, char *buf, size_t size)
{
    pthread_mutex_lock(&ctx->lock);
    int set = ctx->program_cache_set;
    snprintf(buf, size, "%s", ctx->program_cache);
    pthread_mutex_unlock(&ctx->lock);
    if (set)
        return buf[0] != '\0';
    const char *env = getenv("SPARCL_PROGRAM_CACHE");
    if (env && *env) {
        if (!strcmp(env, "off") || !strcmp(env, "0"))
            return 0;
        int n = snprintf(buf, size, "%s", env);
        return n > 0 && (size_t)n < size;
    }
    /* Beside the user tuning database: one folder holds what sparcl learnt
     * about this machine. */
    char db[1024];
    if (sparcl_tuning_db_default_path(db, sizeof db) != SPARCL_OK)
        return 0;
    char *slash = strrchr(db, '/');
    int n = slash ? snprintf(buf, size, "%.*s/sparcl-programs", (int)(slash - db), db)
                  : snprintf(buf, size, "sparcl-programs");
    return n > 0 && (size_t)n < size;
}

int sparcl__program_offline_dir(sparcl_ctx *ctx, char *buf, size_t size)
{
    pthread_mutex_lock(&ctx->lock);
    int set = ctx->offline_set;
    snprintf(buf, size, "%s", ctx->offline);
    pthread_mutex_unlock(&ctx->lock);
    if (set)
        return buf[0] != '\0';
    const char *env = getenv("SPARCL_OFFLINE");
    if (!env || !*env)
        return 0;
    snprintf(buf, size, "%s", env);
    return 1;
}

/* ---- reading -------------------------------------------------------------- */

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

/* Checks a file's bytes against the key; returns the binary's offset, or
 * 0 with the reason in why. */
static size_t check_file(const unsigned char *f, size_t n, const sparcl__program_key *key,
                         char *why, size_t why_size)
{
    if (n < HEADER_BYTES || memcmp(f, magic, sizeof magic) != 0) {
        snprintf(why, why_size, "not a sparcl program binary (%zu bytes)", n);
        return 0;
    }
    uint32_t version = get_u32(f + 8), text_len = get_u32(f + 12);
    if (version != SPARCL__PROGRAM_FORMAT_VERSION) {
        snprintf(why, why_size, "binary format version %u; this library reads version %d", version,
                 SPARCL__PROGRAM_FORMAT_VERSION);
        return 0;
    }
    if (get_u64(f + 24) != key->source_hash) {
        snprintf(why, why_size,
                 "built from other kernel sources (source hash %016llx; this library's is "
                 "%016llx)",
                 (unsigned long long)get_u64(f + 24), (unsigned long long)key->source_hash);
        return 0;
    }
    uint64_t bin_len = get_u64(f + 32);
    size_t text_end = HEADER_BYTES + (size_t)text_len;
    if (text_end > n || bin_len != n - text_end) {
        snprintf(why, why_size, "truncated or oversized (%zu bytes; the header says %llu)", n,
                 (unsigned long long)text_end + (unsigned long long)bin_len);
        return 0;
    }
    if (get_u64(f + 16) != key->hash || text_len != strlen(key->text) ||
        memcmp(f + HEADER_BYTES, key->text, text_len) != 0) {
        snprintf(why, why_size, "built for another key (options, device or driver differ)");
        return 0;
    }
    if (get_u64(f + 40) != sparcl__hash(SPARCL__HASH_SEED, f + text_end, (size_t)bin_len)) {
        snprintf(why, why_size, "the binary's checksum does not match (corrupt file)");
        return 0;
    }
    return text_end;
}

cl_program sparcl__program_disk_load(sparcl_ctx *ctx, const char *dir,
                                     const sparcl__program_key *key, const char *options, char *why,
                                     size_t why_size)
{
    why[0] = '\0';
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, key->name);
    size_t n = 0;
    unsigned char *f = (unsigned char *)sparcl__read_file(path, &n);
    if (!f) {
        if (errno != ENOENT)
            snprintf(why, why_size, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t off = check_file(f, n, key, why, why_size);
    cl_program prog = NULL;
    if (off) {
        const unsigned char *bin = f + off;
        size_t bin_len = n - off;
        cl_int err, bin_status = CL_SUCCESS;
        prog = clCreateProgramWithBinary(ctx->context, 1, &ctx->device, &bin_len, &bin, &bin_status,
                                         &err);
        if (prog &&
            (err = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL)) != CL_SUCCESS) {
            clReleaseProgram(prog);
            prog = NULL;
        }
        if (!prog)
            snprintf(why, why_size, "the driver refused the binary (%s)",
                     sparcl__cl_error_name(err != CL_SUCCESS ? err : bin_status));
    }
    free(f);
    return prog;
}

/* ---- writing -------------------------------------------------------------- */

/* The program's binary for the context's device, malloc'd, or NULL. */
static unsigned char *get_binary(sparcl_ctx *ctx, cl_program prog, size_t *size)
{
    cl_uint n_dev = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_NUM_DEVICES, sizeof n_dev, &n_dev, NULL) != CL_SUCCESS ||
        n_dev == 0 || n_dev > 64)
        return NULL;
    cl_device_id devs[64];
    size_t sizes[64];
    unsigned char *bins[64] = {NULL};
    if (clGetProgramInfo(prog, CL_PROGRAM_DEVICES, sizeof devs[0] * n_dev, devs, NULL) !=
            CL_SUCCESS ||
        clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof sizes[0] * n_dev, sizes, NULL) !=
            CL_SUCCESS)
        return NULL;
    cl_uint mine = n_dev;
    for (cl_uint i = 0; i < n_dev; ++i)
        if (devs[i] == ctx->device)
            mine = i;
    if (mine == n_dev || sizes[mine] == 0)
        return NULL;
    bins[mine] = malloc(sizes[mine]);
    if (!bins[mine])
        return NULL;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins[0] * n_dev, bins, NULL) !=
        CL_SUCCESS) {
        free(bins[mine]);
        return NULL;
    }
    *size = sizes[mine];
    return bins[mine];
}

static int write_all(const char *path, const unsigned char *head, size_t head_len, const char *text,
                     size_t text_len, const unsigned char *bin, size_t bin_len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(head, 1, head_len, f) == head_len && fwrite(text, 1, text_len, f) == text_len &&
             fwrite(bin, 1, bin_len, f) == bin_len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int sparcl__program_disk_store(sparcl_ctx *ctx, const char *dir, const sparcl__program_key *key,
                               cl_program prog)
{
    static atomic_uint serial;
    size_t bin_len = 0;
    unsigned char *bin = get_binary(ctx, prog, &bin_len);
    if (!bin) {
        sparcl__log(ctx, SPARCL_LOG_DEBUG, "program cache: the driver gives no binary for %s",
                    key->files);
        return 0;
    }
    unsigned char head[HEADER_BYTES];
    size_t text_len = strlen(key->text);
    memcpy(head, magic, sizeof magic);
    put_u32(head + 8, SPARCL__PROGRAM_FORMAT_VERSION);
    put_u32(head + 12, (uint32_t)text_len);
    put_u64(head + 16, key->hash);
    put_u64(head + 24, key->source_hash);
    put_u64(head + 32, bin_len);
    put_u64(head + 40, sparcl__hash(SPARCL__HASH_SEED, bin, bin_len));
    char path[2048], tmp[2100];
    snprintf(path, sizeof path, "%s/%s", dir, key->name);
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&serial, 1u));
    int ok = sparcl__make_dirs(dir) == 0 &&
             write_all(tmp, head, sizeof head, key->text, text_len, bin, bin_len) == 0 &&
             rename(tmp, path) == 0;
    if (!ok) {
        sparcl__log(ctx, SPARCL_LOG_DEBUG, "program cache: cannot write %s: %s", path,
                    strerror(errno));
        unlink(tmp);
    }
    free(bin);
    return ok;
}

/* ---- public settings and counters ----------------------------------------- */

static sparcl_status set_dir(sparcl_ctx *ctx, const char *dir, char *slot, size_t size, int *set)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    if (dir && strlen(dir) >= size)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "folder path is too long");
    pthread_mutex_lock(&ctx->lock);
    *set = dir != NULL;
    snprintf(slot, size, "%s", dir ? dir : "");
    pthread_mutex_unlock(&ctx->lock);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_ctx_set_program_cache(sparcl_ctx *ctx, const char *dir)
{
    return set_dir(ctx, dir, ctx ? ctx->program_cache : NULL, sizeof ctx->program_cache,
                   ctx ? &ctx->program_cache_set : NULL);
}

SPARCL_API sparcl_status sparcl_ctx_set_offline(sparcl_ctx *ctx, const char *bundle_dir)
{
    if (ctx && bundle_dir && *bundle_dir) {
        struct stat sb;
        if (stat(bundle_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return sparcl__fail(ctx, SPARCL_ERR_CONFIG, "offline bundle %s is not a folder",
                                bundle_dir);
    }
    return set_dir(ctx, bundle_dir, ctx ? ctx->offline : NULL, sizeof ctx->offline,
                   ctx ? &ctx->offline_set : NULL);
}

SPARCL_API sparcl_status sparcl_ctx_program_stats(sparcl_ctx *ctx, sparcl_program_stats *stats)
{
    if (!ctx || !stats)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", !ctx ? "ctx" : "stats");
    size_t size = stats->struct_size;
    if (size < offsetof(sparcl_program_stats, memory_hits) + sizeof stats->memory_hits ||
        size > sizeof *stats)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "stats->struct_size %zu is not a sparcl_program_stats size (set it "
                            "with sparcl_program_stats_init())",
                            size);
    sparcl_program_stats all;
    pthread_mutex_lock(&ctx->lock);
    const sparcl__program_counters *c = &ctx->program_counters;
    all.struct_size = size;
    all.memory_hits = c->memory_hits;
    all.disk_hits = c->disk_hits;
    all.builds = c->builds;
    all.disk_writes = c->disk_writes;
    all.disk_rejected = c->disk_rejected;
    pthread_mutex_unlock(&ctx->lock);
    memcpy(stats, &all, size); /* only what the caller's struct holds */
    return SPARCL_OK;
}
