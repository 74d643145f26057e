/*
 * test_program_cache.c -- program binaries on disk and offline mode: a
 * second process creates a plan from the disk cache without compiling,
 * corrupt or truncated files fall back to a source build, concurrent
 * writers leave whole files, offline mode runs from a bundle and refuses a
 * bundle of other kernel sources or another format version, and a bad
 * SPARCL_KERNEL_DIR is a configuration error naming the folder and file.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "oracle.h"
#include "scratch.h"
#include "sparcl.h"

#define N 17
#define DIM 24

static void setup(void)
{
    cr_assert_eq(scratch_make("sparcl-progcache"), 0);
    unsetenv("SPARCL_OFFLINE");
    unsetenv("SPARCL_PROGRAM_CACHE");
}

static sparcl_plan_desc desc_of(int dim)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = N;
    d.head_dim = dim;
    d.causal = 1;
    return d;
}

/* A context whose disk cache is `cache` ("" off) and bundle `offline`
 * (NULL online). */
static sparcl_ctx *make_ctx(const char *cache, const char *offline)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_ctx_set_program_cache(ctx, cache), SPARCL_OK);
    /* Built-in defaults only: a tuned row that is not in a bundle would
     * fall back to them and build a second program. */
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_offline(ctx, offline ? offline : ""), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    return ctx;
}

static sparcl_program_stats stats_of(sparcl_ctx *ctx)
{
    sparcl_program_stats s;
    sparcl_program_stats_init(&s);
    cr_assert_eq(sparcl_ctx_program_stats(ctx, &s), SPARCL_OK);
    return s;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int causal(const void *self, int h, int i, int j)
{
    (void)self, (void)h;
    return j <= i;
}

/* Creates the plan of desc_of(dim), runs it and checks it against the
 * oracle; returns the status of sparcl_plan_init. */
static sparcl_status plan_and_check(sparcl_ctx *ctx, int dim)
{
    sparcl_plan_desc d = desc_of(dim);
    sparcl_plan *plan = NULL;
    sparcl_status st = sparcl_plan_init(ctx, &plan, &d);
    if (st != SPARCL_OK)
        return st;
    const size_t n = (size_t)N * dim;
    float *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v),
          *o = malloc(n * sizeof *o);
    double *ref = malloc(n * sizeof *ref);
    oracle_fill(q, n, 1);
    oracle_fill(k, n, 2);
    oracle_fill(v, n, 3);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    oracle_attention(1, 1, 1, N, N, dim, 1.0 / sqrt(dim), causal, NULL, q, k, v, ref, NULL);
    double err = oracle_max_abs_diff_f(o, ref, n);
    cr_assert(err <= 1e-4, "max abs error %g", err);
    free(q), free(k), free(v), free(o), free(ref);
    sparcl_plan_free(plan);
    return SPARCL_OK;
}

/* Names of the files in dir: the count, and the first one into name. */
static int list_dir(const char *dir, char *name, size_t size, int *temporaries)
{
    DIR *dp = opendir(dir);
    int n = 0;
    if (temporaries)
        *temporaries = 0;
    for (struct dirent *e; dp && (e = readdir(dp));) {
        if (e->d_name[0] == '.')
            continue;
        if (strstr(e->d_name, ".tmp-") && temporaries)
            ++*temporaries;
        if (n++ == 0 && name)
            snprintf(name, size, "%s", e->d_name);
    }
    if (dp)
        closedir(dp);
    return n;
}

Test(program_cache, second_process_loads_without_compiling, .init = setup, .fini = scratch_remove,
     .timeout = 300)
{
    char cache[256];
    scratch_path(cache, sizeof cache, "cache");
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) { /* the first process: compiles and stores */
        /* POCL's own kernel cache would hide the compiler's cost: give it
         * an empty one.  (Not POCL_KERNEL_CACHE=0: POCL leaks LLVM memory
         * then, which LeakSanitizer reports even at _exit.) */
        char pocl[256];
        scratch_path(pocl, sizeof pocl, "pocl-cache");
        setenv("POCL_CACHE_DIR", pocl, 1);
        sparcl_ctx *ctx = NULL;
        double t = 0;
        int ok = sparcl_ctx_init(&ctx) == SPARCL_OK &&
                 sparcl_ctx_set_program_cache(ctx, cache) == SPARCL_OK &&
                 sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, "") == SPARCL_OK;
        sparcl_plan_desc d = desc_of(DIM);
        sparcl_plan *plan = NULL;
        double t0 = now();
        ok = ok && sparcl_plan_init(ctx, &plan, &d) == SPARCL_OK;
        t = now() - t0;
        sparcl_program_stats s;
        sparcl_program_stats_init(&s);
        ok = ok && sparcl_ctx_program_stats(ctx, &s) == SPARCL_OK && s.builds == 1 &&
             s.disk_writes == 1 && s.disk_hits == 0;
        if (write(fds[1], &t, sizeof t) != (ssize_t)sizeof t)
            ok = 0;
        sparcl_plan_free(plan);
        sparcl_ctx_free(ctx);
        _exit(ok ? 0 : 1);
    }
    double cold = 0;
    cr_assert_eq(read(fds[0], &cold, sizeof cold), (ssize_t)sizeof cold);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the first process failed");
    cr_assert_eq(list_dir(cache, NULL, 0, NULL), 1, "one binary on disk");

    sparcl_ctx *ctx = make_ctx(cache, NULL);
    sparcl_plan_desc d = desc_of(DIM);
    sparcl_plan *plan = NULL;
    double t0 = now();
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    double warm = now() - t0;
    sparcl_program_stats s = stats_of(ctx);
    cr_assert_eq(s.builds, 0, "the second process compiled %lld programs", (long long)s.builds);
    cr_assert_eq(s.disk_hits, 1);
    cr_assert_eq(s.disk_rejected, 0);
    cr_log_info("plan creation: cold %.3f s, warm %.3f s", cold, warm);
    cr_assert(warm < cold, "warm %.3f s is not faster than cold %.3f s", warm, cold);
    sparcl_plan_free(plan);
    /* And the program it loaded computes the right thing. */
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK);
    cr_assert_gt(stats_of(ctx).memory_hits, s.memory_hits, "the second plan reused the program");
    cr_assert_eq(stats_of(ctx).builds, 0);
    sparcl_ctx_free(ctx);
}

/* Rewrites the only file of dir with fn applied to its bytes. */
static void damage(const char *dir, void (*fn)(char *bytes, size_t *n))
{
    char name[256], path[512];
    cr_assert_eq(list_dir(dir, name, sizeof name, NULL), 1);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    static char bytes[1 << 24];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    cr_assert(n > 64 && n < sizeof bytes);
    fn(bytes, &n);
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

static void truncate_half(char *b, size_t *n)
{
    (void)b, *n /= 2;
}
static void flip_last(char *b, size_t *n)
{
    b[*n - 1] ^= 0x5a;
}
static void garbage(char *b, size_t *n)
{
    memset(b, 0x42, *n);
}
static void other_version(char *b, size_t *n)
{
    (void)n, b[8] = 99;
}

Test(program_cache, damaged_files_fall_back_to_a_source_build, .init = setup,
     .fini = scratch_remove, .timeout = 300)
{
    char cache[256];
    scratch_path(cache, sizeof cache, "cache");
    sparcl_ctx *ctx = make_ctx(cache, NULL);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK);
    cr_assert_eq(stats_of(ctx).disk_writes, 1);
    sparcl_ctx_free(ctx);
    void (*harm[4])(char *, size_t *) = {truncate_half, flip_last, garbage, other_version};
    for (int i = 0; i < 4; ++i) {
        damage(cache, harm[i]);
        ctx = make_ctx(cache, NULL);
        cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK, "damage %d: %s", i,
                     sparcl_ctx_errmsg(ctx));
        sparcl_program_stats s = stats_of(ctx);
        cr_assert_eq(s.disk_rejected, 1, "damage %d was not noticed", i);
        cr_assert_eq(s.builds, 1, "damage %d", i);
        cr_assert_eq(s.disk_writes, 1, "damage %d: the file is replaced", i);
        sparcl_ctx_free(ctx);
    }
    ctx = make_ctx(cache, NULL);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK);
    cr_assert_eq(stats_of(ctx).disk_hits, 1, "the replaced file is whole");
    cr_assert_eq(stats_of(ctx).builds, 0);
    sparcl_ctx_free(ctx);
}

Test(program_cache, unusable_folder_is_silent, .init = setup, .fini = scratch_remove)
{
    char file[256], inside[300];
    scratch_path(file, sizeof file, "a-file");
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(inside, sizeof inside, "%s/cache", file); /* cannot be created */
    sparcl_ctx *ctx = make_ctx(inside, NULL);
    cr_assert_eq(plan_and_check(ctx, 8), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(stats_of(ctx).disk_writes, 0);
    cr_assert_eq(stats_of(ctx).builds, 1);
    sparcl_ctx_free(ctx);
    /* Turned off: nothing is written anywhere. */
    char cache[256];
    scratch_path(cache, sizeof cache, "off");
    setenv("SPARCL_PROGRAM_CACHE", "off", 1);
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    cr_assert_eq(plan_and_check(ctx, 8), SPARCL_OK);
    cr_assert_eq(stats_of(ctx).disk_writes, 0);
    sparcl_ctx_free(ctx);
    setenv("SPARCL_PROGRAM_CACHE", cache, 1);
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    cr_assert_eq(plan_and_check(ctx, 8), SPARCL_OK);
    cr_assert_eq(stats_of(ctx).disk_writes, 1, "SPARCL_PROGRAM_CACHE names the folder");
    cr_assert_eq(list_dir(cache, NULL, 0, NULL), 1);
    sparcl_ctx_free(ctx);
}

typedef struct writer {
    sparcl_ctx *ctx;
    pthread_barrier_t *barrier;
    sparcl_status st;
} writer;

static void *write_one(void *arg)
{
    writer *w = arg;
    pthread_barrier_wait(w->barrier);
    sparcl_plan_desc d = desc_of(DIM);
    sparcl_plan *plan = NULL;
    w->st = sparcl_plan_init(w->ctx, &plan, &d);
    sparcl_plan_free(plan);
    return NULL;
}

/* Threads of one context race on the same key: each misses in memory,
 * compiles and writes the same file at once. */
Test(program_cache, concurrent_writers_leave_whole_files, .init = setup, .fini = scratch_remove,
     .timeout = 300)
{
    char cache[256];
    scratch_path(cache, sizeof cache, "cache");
    sparcl_ctx *shared = make_ctx(cache, NULL);
    enum { THREADS = 3 };
    pthread_t t[THREADS];
    writer w[THREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; ++i) {
        w[i] = (writer){shared, &barrier, SPARCL_OK};
        cr_assert_eq(pthread_create(&t[i], NULL, write_one, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; ++i) {
        pthread_join(t[i], NULL);
        cr_assert_eq(w[i].st, SPARCL_OK, "writer %d: %s", i, sparcl_ctx_errmsg(shared));
    }
    pthread_barrier_destroy(&barrier);
    sparcl_program_stats s = stats_of(shared);
    cr_log_info("%lld writers raced", (long long)s.disk_writes);
    cr_assert(s.disk_writes >= 1);
    sparcl_ctx_free(shared);
    int temporaries = 0;
    cr_assert_eq(list_dir(cache, NULL, 0, &temporaries), 1);
    cr_assert_eq(temporaries, 0);
    sparcl_ctx *ctx = make_ctx(cache, NULL);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK);
    cr_assert_eq(stats_of(ctx).disk_hits, 1);
    cr_assert_eq(stats_of(ctx).disk_rejected, 0);
    sparcl_ctx_free(ctx);
}

Test(program_cache, offline_runs_from_a_bundle_and_names_what_is_missing, .init = setup,
     .fini = scratch_remove, .timeout = 300)
{
    char bundle[256];
    scratch_path(bundle, sizeof bundle, "bundle");
    sparcl_ctx *ctx = make_ctx(bundle, NULL);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK);
    sparcl_ctx_free(ctx);

    ctx = make_ctx("", bundle);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(stats_of(ctx).builds, 0);
    cr_assert_eq(stats_of(ctx).disk_hits, 1);
    /* head_dim 100 was never built into the bundle. */
    cr_assert_eq(plan_and_check(ctx, 100), SPARCL_ERR_NOT_SUPPORTED);
    const char *msg = sparcl_ctx_errmsg(ctx);
    cr_assert(strstr(msg, "offline") && strstr(msg, "attn_fwd.cl") &&
                  strstr(msg, "-DHEAD_DIM=100") && strstr(msg, bundle),
              "%s", msg);
    cr_assert_eq(stats_of(ctx).builds, 0);
    /* The tuning interface: valid parameters without a binary are "not
     * supported" here, those in the bundle are fine. */
    sparcl_plan_desc d = desc_of(DIM);
    sparcl_params p;
    cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_fwd", &d, &p), SPARCL_OK);
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &p), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    d.head_dim = 100;
    cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_fwd", &d, &p), SPARCL_OK);
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &p), SPARCL_ERR_NOT_SUPPORTED);
    /* Back online, the same context compiles it. */
    cr_assert_eq(sparcl_ctx_set_offline(ctx, ""), SPARCL_OK);
    cr_assert_eq(plan_and_check(ctx, 100), SPARCL_OK);
    cr_assert_eq(stats_of(ctx).builds, 1);
    sparcl_ctx_free(ctx);

    /* SPARCL_OFFLINE turns it on for contexts that do not say. */
    setenv("SPARCL_OFFLINE", bundle, 1);
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    cr_assert_eq(plan_and_check(ctx, 100), SPARCL_ERR_NOT_SUPPORTED);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK);
    sparcl_ctx_free(ctx);
    unsetenv("SPARCL_OFFLINE");
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/no-such-folder", bundle);
    cr_assert_eq(sparcl_ctx_set_offline(ctx, missing), SPARCL_ERR_CONFIG);
    sparcl_ctx_free(ctx);
}

/* Copies cl/ into dir with one comment appended to common.clh. */
static void edited_sources(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cp '%s'/*.cl '%s'/*.clh '%s'/ && echo '/* edited */' >> "
             "'%s'/common.clh",
             dir, SPARCL_CL_DIR, SPARCL_CL_DIR, dir, dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(program_cache, bundle_of_other_sources_is_refused, .init = setup, .fini = scratch_remove,
     .timeout = 300)
{
    char bundle[256], src[256];
    scratch_path(bundle, sizeof bundle, "bundle");
    scratch_path(src, sizeof src, "cl");
    edited_sources(src);
    setenv("SPARCL_KERNEL_DIR", src, 1);
    sparcl_ctx *ctx = make_ctx(bundle, NULL);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_ctx_free(ctx);
    unsetenv("SPARCL_KERNEL_DIR");

    /* The library's own sources have another key: no such binary. */
    ctx = make_ctx("", bundle);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_ERR_NOT_SUPPORTED);
    const char *msg = sparcl_ctx_errmsg(ctx);
    const char *name = strstr(msg, "(attn_fwd-");
    cr_assert_not_null(name, "%s", msg);
    char want[128];
    cr_assert_eq(sscanf(name + 1, "%127[^)]", want), 1);
    /* Even under the expected name, its header says what it was built
     * from. */
    char from[512], to[512], old[256];
    cr_assert_eq(list_dir(bundle, old, sizeof old, NULL), 1);
    snprintf(from, sizeof from, "%s/%s", bundle, old);
    snprintf(to, sizeof to, "%s/%s", bundle, want);
    cr_assert_str_neq(old, want);
    cr_assert_eq(rename(from, to), 0);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_ERR_NOT_SUPPORTED);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "other kernel sources"), "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(stats_of(ctx).builds, 0);
    cr_assert_eq(stats_of(ctx).disk_rejected, 1);
    sparcl_ctx_free(ctx);
    /* As a cache it is not used either: the source build replaces it. */
    ctx = make_ctx(bundle, NULL);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_OK);
    cr_assert_eq(stats_of(ctx).disk_rejected, 1);
    cr_assert_eq(stats_of(ctx).builds, 1);
    sparcl_ctx_free(ctx);
    /* Another binary-format version is refused offline, by name. */
    damage(bundle, other_version);
    ctx = make_ctx("", bundle);
    cr_assert_eq(plan_and_check(ctx, DIM), SPARCL_ERR_NOT_SUPPORTED);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "format version 99"), "%s", sparcl_ctx_errmsg(ctx));
    sparcl_ctx_free(ctx);
}

Test(program_cache, bad_kernel_dir_is_a_config_error, .init = setup, .fini = scratch_remove)
{
    char dir[256];
    scratch_path(dir, sizeof dir, "no-kernels-here");
    setenv("SPARCL_KERNEL_DIR", dir, 1);
    sparcl_ctx *ctx = make_ctx("", NULL);
    sparcl_plan_desc d = desc_of(8);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_ERR_CONFIG);
    cr_assert_null(plan);
    const char *msg = sparcl_ctx_errmsg(ctx);
    cr_assert(strstr(msg, dir) && strstr(msg, "common.clh") && strstr(msg, "SPARCL_KERNEL_DIR"),
              "%s", msg);
    char hash[17];
    cr_assert_eq(sparcl_kernel_hash(ctx, "attn_fwd", hash, sizeof hash), SPARCL_ERR_CONFIG);
    cr_assert_str_eq(sparcl_status_string(SPARCL_ERR_CONFIG), "configuration error");
    sparcl_ctx_free(ctx);
    unsetenv("SPARCL_KERNEL_DIR");
}

Test(program_cache, stats_refuse_a_wrong_struct_size)
{
    sparcl_ctx *ctx = make_ctx("", NULL);
    sparcl_program_stats s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(sparcl_ctx_program_stats(ctx, &s), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "struct_size"), "%s", sparcl_ctx_errmsg(ctx));
    s.struct_size = sizeof s + 8;
    cr_assert_eq(sparcl_ctx_program_stats(ctx, &s), SPARCL_ERR_INVALID_ARGUMENT);
    /* An older caller's smaller struct gets only its own fields. */
    struct {
        sparcl_program_stats s;
        int64_t guard;
    } old;
    memset(&old, 0x7f, sizeof old);
    old.s.struct_size = sizeof(size_t) + sizeof(int64_t);
    cr_assert_eq(sparcl_ctx_program_stats(ctx, &old.s), SPARCL_OK);
    cr_assert_eq(old.s.memory_hits, 0);
    cr_assert_eq(old.s.disk_hits, 0x7f7f7f7f7f7f7f7fll, "written beyond struct_size");
    sparcl_ctx_free(ctx);
}
