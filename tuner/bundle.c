/*
 * bundle.c -- sparcl-tune --build-bundle: writes an offline binary bundle,
 * the programs a device needs when it cannot compile at run time (FPGAs).
 *
 * The bundle is the library's disk program cache pointed at a folder: this
 * tool creates, through the public API only, the plans the runtime would
 * create, so each program lands there under the key the runtime will look
 * for.  What a program depends on is its kernel family, its parameters and
 * the head dimension (and, for attn_entmax, the solver), never the
 * sequence lengths, so a tuned row is built on a short sequence of its
 * head dimension and heads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune.h"

/* Every normalization a plan may ask attn_entmax (and attn_entmax_bwd)
 * for. */
static const struct {
    int normalization;
    float alpha;
} solvers[] = {
    {SPARCL_NORMALIZATION_SPARSEMAX, 0.0f},
    {SPARCL_NORMALIZATION_ENTMAX15, 0.0f},
    {SPARCL_NORMALIZATION_ENTMAX, 1.25f},
};

typedef struct bundle {
    sparcl_ctx *ctx;
    sparcl_device_info device;
    int plans, failed;
} bundle;

static void on_log(void *user, sparcl_log_level level, const char *msg)
{
    (void)user;
    if (level >= SPARCL_LOG_WARNING)
        fprintf(stderr, "sparcl-tune: %s: %s\n", level == SPARCL_LOG_WARNING ? "warning" : "error",
                msg);
}

/* Creates one plan of `kernel` (with backward parameters for the backward
 * families and attn_span, whose rows serve the backward too), which stores
 * its programs in the bundle. */
static void build_one(bundle *b, const char *kernel, const sparcl_plan_desc *desc,
                      const sparcl_params *params, const char *what)
{
    int entmax = !strcmp(kernel, "attn_entmax") || !strcmp(kernel, "attn_entmax_bwd");
    int n_solvers = entmax ? (int)(sizeof solvers / sizeof solvers[0]) : 1;
    int bwd = tune_kernel_is_backward(kernel), span = !strcmp(kernel, "attn_span");
    for (int s = 0; s < n_solvers; ++s) {
        sparcl_plan_desc d = *desc;
        d.params = bwd ? NULL : params;
        if (n_solvers > 1) {
            d.normalization = solvers[s].normalization;
            d.alpha = solvers[s].alpha;
        }
        sparcl_plan *plan = NULL;
        sparcl_status st = sparcl_plan_init(b->ctx, &plan, &d);
        if (st == SPARCL_OK && (bwd || span))
            st = sparcl_plan_prepare_backward(plan, params);
        ++b->plans;
        if (st != SPARCL_OK) {
            ++b->failed;
            fprintf(stderr, "sparcl-tune: warning: %s %s: %s\n", kernel, what,
                    sparcl_ctx_errmsg(b->ctx));
        }
        sparcl_plan_free(plan);
    }
}

typedef struct row_walk {
    bundle *b;
    const char *kernel;
    int rows;
} row_walk;

static void on_row(void *user, const sparcl_device_info *device,
                   const sparcl_tuning_problem *problem, const sparcl_params *params,
                   double median_ms)
{
    (void)median_ms;
    row_walk *w = user;
    const sparcl_device_info *mine = &w->b->device;
    /* The same device under any driver: the runtime uses those rows too. */
    if (strcmp(device->platform, mine->platform) || strcmp(device->vendor, mine->vendor) ||
        strcmp(device->name, mine->name))
        return;
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = 1;
    d.q_heads = problem->q_heads;
    d.kv_heads = problem->kv_heads;
    /* Lengths are kernel arguments, not build options -- except a decoding
     * problem's q_len (its rows are the kernel's QROWS). */
    d.q_len = problem->q_len <= 16 ? problem->q_len : 64;
    d.kv_len = 64;
    d.head_dim = problem->head_dim;
    d.unchecked_params = 1; /* checked when it was tuned, on its own lengths */
    if (!strcmp(w->kernel, "attn_span")) { /* the spans are a buffer, not a build option */
        d.attention = SPARCL_ATTENTION_SPAN;
        d.causal = 1;
        d.span_ramp = 32.0f;
    }
    char what[256];
    snprintf(what, sizeof what, "tuned row %s n=%d d=%d", problem->pattern, problem->q_len,
             problem->head_dim);
    build_one(w->b, w->kernel, &d, params, what);
    ++w->rows;
}

static int walk_database(bundle *b, sparcl_tuning_db_role role, const char *const *kernels,
                         int n_kernels)
{
    char path[1024];
    if (sparcl_ctx_tuning_db_path(b->ctx, role, path, sizeof path) != SPARCL_OK || !path[0])
        return 0;
    FILE *f = fopen(path, "rb"); /* a database that does not exist has no rows */
    if (!f)
        return 0;
    fclose(f);
    sparcl_tuning_db *db = NULL;
    if (sparcl_tuning_db_init(NULL, &db, path, SPARCL_TUNING_DB_READ) != SPARCL_OK) {
        fprintf(stderr, "sparcl-tune: warning: %s\n", sparcl_ctx_errmsg(NULL));
        return 0;
    }
    int rows = 0;
    for (int k = 0; k < n_kernels; ++k) {
        row_walk w = {b, kernels[k], 0};
        if (sparcl_tuning_db_each_best(NULL, db, kernels[k], on_row, &w) != SPARCL_OK)
            fprintf(stderr, "sparcl-tune: warning: %s\n", sparcl_ctx_errmsg(NULL));
        rows += w.rows;
    }
    sparcl_tuning_db_free(db);
    printf("%s: %d tuned rows of this device\n", path, rows);
    return rows;
}

/* The runtime's choice for a problem (database or defaults), and the
 * built-in defaults (what a plan falls back to). */
static void build_problem(bundle *b, const char *kernel, const tune_problem *p)
{
    sparcl_plan_desc d;
    sparcl_layout *layout = NULL;
    if (tune_problem_desc(b->ctx, p, &d, &layout) != SPARCL_OK) {
        ++b->failed;
        fprintf(stderr, "sparcl-tune: warning: %s: %s\n", p->spec, sparcl_ctx_errmsg(b->ctx));
        return;
    }
    char err[256];
    if (tune_problem_for_kernel(kernel, p, &d, err, sizeof err) != 0) {
        printf("%s %s: skipped: %s\n", kernel, p->spec, err); /* as sparcl-tune skips it */
        sparcl_layout_free(layout);
        return;
    }
    char what[TUNE_SPEC_MAX + 32];
    snprintf(what, sizeof what, "%s (tuned or default)", p->spec);
    build_one(b, kernel, &d, NULL, what);
    sparcl_params def;
    /* (only defaults valid for the problem: attn_decode takes q_len <= 16) */
    if (sparcl_kernel_default_params(b->ctx, kernel, &d, &def) == SPARCL_OK &&
        sparcl_kernel_check_params(b->ctx, kernel, &d, &def) == SPARCL_OK) {
        snprintf(what, sizeof what, "%s (defaults)", p->spec);
        build_one(b, kernel, &d, &def, what);
    }
    sparcl_layout_free(layout);
}

int tune_build_bundle(const char *device, const char *dir, const char *db, const char *problems,
                      const char *kernel)
{
    char err[512] = "";
    tune_problem *list = NULL;
    int n = tune_problems_parse(problems ? problems : "standard", &list, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "sparcl-tune: error: %s\n", err);
        return 2;
    }
    bundle b = {0};
    if (sparcl_ctx_init_device(&b.ctx, device) != SPARCL_OK) {
        fprintf(stderr, "sparcl-tune: error: %s\n", sparcl_ctx_errmsg(NULL));
        free(list);
        return 1;
    }
    sparcl_ctx_set_log(b.ctx, on_log, NULL);
    sparcl_ctx_set_offline(b.ctx, "");
    sparcl_ctx_set_program_cache(b.ctx, dir);
    if (db)
        sparcl_ctx_set_tuning_db(b.ctx, SPARCL_TUNING_DB_USER, db);
    sparcl_ctx_device_info(b.ctx, &b.device);
    printf("device: %s\nbundle: %s\n", sparcl_ctx_device_string(b.ctx), dir);

    const char *kernels[16];
    int n_kernels = 0;
    /* clblast_xgemm's kernels are CLBlast's, built by CLBlast: a bundle
     * cannot hold them. */
    for (int k = 0; k < sparcl_kernel_count() && n_kernels < 16; ++k)
        if ((!kernel || !strcmp(kernel, sparcl_kernel_name(k))) &&
            strcmp(sparcl_kernel_name(k), "clblast_xgemm"))
            kernels[n_kernels++] = sparcl_kernel_name(k);
    walk_database(&b, SPARCL_TUNING_DB_USER, kernels, n_kernels);
    walk_database(&b, SPARCL_TUNING_DB_SHIPPED, kernels, n_kernels);
    for (int k = 0; k < n_kernels; ++k)
        for (int i = 0; i < n; ++i)
            build_problem(&b, kernels[k], &list[i]);

    sparcl_program_stats s;
    sparcl_program_stats_init(&s);
    sparcl_ctx_program_stats(b.ctx, &s);
    int64_t unsaved = s.builds - s.disk_writes;
    printf("%d plans: %lld programs compiled and written, %lld already in the bundle, %d "
           "failed\n",
           b.plans, (long long)s.disk_writes, (long long)s.disk_hits, b.failed);
    if (unsaved > 0)
        fprintf(stderr, "sparcl-tune: error: %lld programs could not be written to %s\n",
                (long long)unsaved, dir);
    sparcl_ctx_free(b.ctx);
    free(list);
    return unsaved > 0 || b.failed ? 1 : 0;
}
