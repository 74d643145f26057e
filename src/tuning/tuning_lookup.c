/*
 * tuning_lookup.c -- where a plan's parameters come from, and where the
 * tuning databases are.  The policy lives here; the SQL in tuning_db.c.
 *
 * Tuned rows are a speed hint, never a requirement: a database that is
 * missing, corrupt, of another schema version, locked or unreadable only
 * costs a warning through the log callback, and the next source is asked.
 * Rows are filtered to the current kernel hash, then ranked by how close
 * the device is (exact fingerprint < same device, other driver < same vendor
 * and type) and then by the distance between problems in log-space, and the
 * first one whose parameters pass the schema's checks for this problem on
 * this device is taken.  A row of another problem keeps its tiles and
 * vectors but not the parameters the schema marks per-problem (attn_bwd's
 * SPLIT): those are derived for this problem as the defaults are.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/ctx.h"
#include "runtime/error.h"
#include "kernels/kernel_registry.h"
#include "tuning/tuning.h"
#include "tuning/tuning_db.h"
#include "tuning/tuning_lookup.h"
#include "tuning/tuning_rows.h"

SPARCL_API sparcl_status sparcl_tuning_db_default_path(char *buf, size_t size)
{
    if (!buf || !size)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "buffer is NULL or empty");
    const char *env = getenv("SPARCL_DB"), *xdg = getenv("XDG_CACHE_HOME"),
               *home = getenv("HOME");
    int n;
    if (env && *env)
        n = snprintf(buf, size, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(buf, size, "%s/sparcl/tuning.db", xdg);
    else if (home && *home)
        n = snprintf(buf, size, "%s/.cache/sparcl/tuning.db", home);
    else {
        buf[0] = '\0';
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                            "no user database path: SPARCL_DB, XDG_CACHE_HOME and HOME are unset");
    }
    if (n < 0 || (size_t)n >= size)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                            "the user database path needs %d bytes", n + 1);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_ctx_set_tuning_db(sparcl_ctx *ctx, sparcl_tuning_db_role role,
                                                  const char *path)
{
    if (!ctx)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "ctx is NULL");
    if (role != SPARCL_TUNING_DB_USER && role != SPARCL_TUNING_DB_SHIPPED)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "unknown database role %d",
                            (int)role);
    if (path && strlen(path) >= sizeof ctx->tuning_db[0])
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "database path is too long");
    pthread_mutex_lock(&ctx->lock);
    ctx->tuning_db_set[role] = path != NULL;
    snprintf(ctx->tuning_db[role], sizeof ctx->tuning_db[role], "%s", path ? path : "");
    pthread_mutex_unlock(&ctx->lock);
    return SPARCL_OK;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return path && *path && stat(path, &sb) == 0;
}

/* The database file of `role` for this context, or "" if there is none. */
static void resolve_path(sparcl_ctx *ctx, sparcl_tuning_db_role role, char *buf, size_t size)
{
    pthread_mutex_lock(&ctx->lock);
    int set = ctx->tuning_db_set[role];
    snprintf(buf, size, "%s", ctx->tuning_db[role]);
    pthread_mutex_unlock(&ctx->lock);
    if (set)
        return;
    buf[0] = '\0';
    if (role == SPARCL_TUNING_DB_USER) {
        if (sparcl_tuning_db_default_path(buf, size) != SPARCL_OK)
            buf[0] = '\0';
        return;
    }
    /* The build tree's copy is never older than the library built with it;
     * an installed library finds its own copy under the data folder. */
    static const char *const shipped[] = {
#ifdef SPARCL_SHIPPED_DB_BUILD
        SPARCL_SHIPPED_DB_BUILD,
#endif
#ifdef SPARCL_SHIPPED_DB_INSTALL
        SPARCL_SHIPPED_DB_INSTALL,
#endif
        "",
    };
    for (size_t i = 0; i < sizeof shipped / sizeof shipped[0]; ++i)
        if (file_exists(shipped[i])) {
            snprintf(buf, size, "%s", shipped[i]);
            return;
        }
}

/* ---- ranking rows --------------------------------------------------------- */

enum { LEVEL_EXACT = 0, LEVEL_DRIVER = 1, LEVEL_VENDOR = 2, LEVEL_NONE = 3 };

static int device_level(const sparcl_device_info *a, const sparcl_device_info *b)
{
    int same_device = strcmp(a->platform, b->platform) == 0 &&
                      strcmp(a->vendor, b->vendor) == 0 && strcmp(a->name, b->name) == 0;
    if (same_device && strcmp(a->driver, b->driver) == 0 && strcmp(a->version, b->version) == 0 &&
        strcmp(a->type, b->type) == 0 && a->compute_units == b->compute_units &&
        a->global_mem == b->global_mem && a->local_mem == b->local_mem &&
        a->max_alloc == b->max_alloc)
        return LEVEL_EXACT;
    if (same_device)
        return LEVEL_DRIVER;
    /* Not for CPUs: their device names carry the instruction set the
     * driver compiles for, and rows of another one can be slower than the
     * defaults (POCL on one AMD EPYC: the forward's row of
     * pthread-haswell-AMD EPYC ran dense 4k 1.30x slower than the defaults
     * on pthread-skylake-avx512-AMD EPYC). */
    if (strcmp(a->vendor, b->vendor) == 0 && strcmp(a->type, b->type) == 0 &&
        strcmp(a->type, "CPU") != 0)
        return LEVEL_VENDOR;
    return LEVEL_NONE;
}

/* Appends "NAME ROW (here THIS)" for each fingerprint field in which the
 * row's device differs from this one: what the fallback warning names. */
static void describe_difference(const sparcl_device_info *row, const sparcl_device_info *here,
                                char *buf, size_t size)
{
    const struct {
        const char *name, *row, *here;
    } texts[] = {{"driver", row->driver, here->driver},
                 {"version", row->version, here->version},
                 {"type", row->type, here->type}};
    const struct {
        const char *name;
        uint64_t row, here;
    } numbers[] = {{"compute_units", row->compute_units, here->compute_units},
                   {"global_mem", row->global_mem, here->global_mem},
                   {"local_mem", row->local_mem, here->local_mem},
                   {"max_alloc", row->max_alloc, here->max_alloc}};
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof texts / sizeof texts[0] && used < size; ++i)
        if (strcmp(texts[i].row, texts[i].here) != 0)
            used += (size_t)snprintf(buf + used, size - used, "%s%s %s (here %s)", used ? ", " : "",
                                     texts[i].name, texts[i].row, texts[i].here);
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0] && used < size; ++i)
        if (numbers[i].row != numbers[i].here)
            used += (size_t)snprintf(
                buf + used, size - used, "%s%s %llu (here %llu)", used ? ", " : "", numbers[i].name,
                (unsigned long long)numbers[i].row, (unsigned long long)numbers[i].here);
}

static double log_ratio(double a, double b)
{
    return fabs(log((a > 0 ? a : 1) / (b > 0 ? b : 1)));
}

/* 0 for the same problem; head_dim weighs most because it changes which
 * vector widths and tiles fit at all. */
static double problem_distance(const sparcl_tuning_problem *a, const sparcl_tuning_problem *b)
{
    double d = log_ratio(a->q_len, b->q_len) + log_ratio(a->kv_len, b->kv_len) +
               log_ratio((double)a->batch * a->q_heads, (double)b->batch * b->q_heads) +
               0.5 * log_ratio(a->kv_heads, b->kv_heads) +
               2.0 * log_ratio(a->head_dim, b->head_dim) +
               log_ratio(fmax(a->density, 1e-4), fmax(b->density, 1e-4)) +
               (a->causal != b->causal) + 0.25 * log_ratio(a->block, b->block);
    return d < 1e-9 ? 0.0 : d;
}

typedef struct search {
    const sparcl__kernel_schema *schema;
    const sparcl_device_info *device;
    const sparcl_tuning_problem *problem;
    sparcl__problem prob;
    const sparcl__device_limits *limits;
    int found, level;
    double distance;
    sparcl_params params;
    sparcl_device_info row_device;
    sparcl_tuning_problem row_problem;
} search;

/* The row's parameters completed with this problem's defaults in *out;
 * with `rederive`, its per-problem parameters are replaced too.  1 if they
 * pass the schema's checks for this problem on this device. */
static int fits(const search *s, const sparcl_params *row, int rederive, sparcl_params *out)
{
    *out = *row;
    if (rederive)
        sparcl__params_drop_per_problem(s->schema, out);
    sparcl__params_fill_defaults(s->schema, out, &s->prob, s->limits);
    return sparcl__params_check(NULL, s->schema, out, &s->prob, s->limits) == SPARCL_OK;
}

static void consider(void *user, const sparcl_device_info *device,
                     const sparcl_tuning_problem *problem, const sparcl_params *params,
                     double median_ms)
{
    (void)median_ms;
    search *s = user;
    int level = device_level(s->device, device);
    if (level == LEVEL_NONE)
        return;
    double dist = problem_distance(s->problem, problem);
    if (s->found && (level > s->level || (level == s->level && dist >= s->distance)))
        return;
    /* A row tuned before a parameter was added gets that one's default; a
     * row of another problem gets this problem's per-problem parameters
     * (how many partitions fill the compute units), unless they do not fit
     * with the rest of the row; a row that does not fit this problem or
     * device is passed over. */
    sparcl_params p;
    if (dist == 0 || !fits(s, params, 1, &p))
        if (!fits(s, params, 0, &p))
            return;
    s->found = 1;
    s->level = level;
    s->distance = dist;
    s->params = p;
    s->row_device = *device;
    s->row_problem = *problem;
}

/* Looks in one database; 1 if it supplied the parameters. */
static int from_database(sparcl_ctx *ctx, const char *what, const char *path, search *s,
                         char *origin, size_t size)
{
    if (!file_exists(path)) {
        if (*path)
            sparcl__log(ctx, SPARCL_LOG_DEBUG, "%s tuning database %s does not exist", what,
                        path);
        return 0;
    }
    char msg[SPARCL_MSG_MAX];
    const sparcl_status st =
        sparcl__tuning_rows_each_best(ctx, path, s->problem->kernel, s->problem->kernel_hash,
                                      s->problem->dtype, consider, s, msg, sizeof msg);
    if (st != SPARCL_OK) {
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "%s tuning database unusable, trying the next source: %s", what, msg);
        return 0;
    }
    if (!s->found)
        return 0;
    static const char *const level_text[] = {"exact device", "same device, other driver or limits",
                                             "same vendor and device type"};
    const sparcl_tuning_problem *r = &s->row_problem;
    int n = snprintf(origin, size, "%s database %s: %s (%s / %s), ", what, path,
                     level_text[s->level], s->row_device.name, s->row_device.driver);
    if (n >= 0 && (size_t)n < size) {
        if (s->distance == 0)
            snprintf(origin + n, size - (size_t)n, "exact problem");
        else
            snprintf(origin + n, size - (size_t)n,
                     "nearest problem %s q_len %d kv_len %d heads %d head_dim %d density %.4g "
                     "(distance %.3g)",
                     r->pattern, r->q_len, r->kv_len, r->q_heads, r->head_dim, r->density,
                     s->distance);
    }
    if (s->level == LEVEL_DRIVER) {
        char diff[1024];
        describe_difference(&s->row_device, s->device, diff, sizeof diff);
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "using parameters tuned for %s on a fingerprint that differs in %s: re-run "
                    "sparcl-tune to refresh them",
                    s->row_device.name, diff);
    }
    return 1;
}

void sparcl__tuning_choose(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                           const sparcl_plan_desc *desc, sparcl_params *params,
                           sparcl_param_source *source, char *origin, size_t size)
{
    sparcl_params_clear(params);
    if (desc->params) {
        *params = *desc->params;
        *source = SPARCL_PARAMS_OVERRIDE;
        snprintf(origin, size, "override (sparcl_plan_desc.params)");
        return;
    }
    *source = SPARCL_PARAMS_DEFAULT;
    snprintf(origin, size, "built-in defaults");

    char hash[17];
    char saved[SPARCL_MSG_MAX];
    snprintf(saved, sizeof saved, "%s", sparcl_ctx_errmsg(ctx));
    if (sparcl__kernel_hash(ctx, schema, hash) != SPARCL_OK) {
        sparcl__log(ctx, SPARCL_LOG_WARNING,
                    "cannot hash kernel %s, so no tuned parameters apply: %s", schema->name,
                    sparcl_ctx_errmsg(ctx));
        /* Keep the context's last error what the application last saw. */
        pthread_mutex_lock(&ctx->lock);
        snprintf(ctx->errmsg, sizeof ctx->errmsg, "%s", saved);
        pthread_mutex_unlock(&ctx->lock);
        return;
    }
    sparcl_device_info device;
    sparcl__device_info(ctx, &device);
    sparcl_tuning_problem problem;
    sparcl__tuning_problem_fill(schema, hash, desc, NULL, &problem);
    /* as the rows hold it: a problem the tuner stored is then at distance
     * 0 (a causal or layout density is rarely a round number) */
    problem.density = sparcl__tuning_db_key_density(problem.density);
    search s;
    memset(&s, 0, sizeof s);
    s.schema = schema;
    s.device = &device;
    s.problem = &problem;
    s.prob = sparcl__problem_from_desc(desc);
    s.limits = &ctx->limits;

    static const struct {
        sparcl_tuning_db_role role;
        const char *what;
    } order[] = {{SPARCL_TUNING_DB_USER, "user"}, {SPARCL_TUNING_DB_SHIPPED, "shipped"}};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; ++i) {
        char path[1024];
        resolve_path(ctx, order[i].role, path, sizeof path);
        if (from_database(ctx, order[i].what, path, &s, origin, size)) {
            *params = s.params;
            *source = SPARCL_PARAMS_DATABASE;
            return;
        }
    }
}

/* ---- for tools: which files, and their rows ------------------------------- */

SPARCL_API sparcl_status sparcl_ctx_tuning_db_path(sparcl_ctx *ctx, sparcl_tuning_db_role role,
                                                   char *buf, size_t size)
{
    if (!ctx || !buf || size == 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL or empty",
                            !ctx ? "ctx" : "buf");
    if (role != SPARCL_TUNING_DB_USER && role != SPARCL_TUNING_DB_SHIPPED)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "unknown database role %d",
                            (int)role);
    resolve_path(ctx, role, buf, size);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_tuning_db_each_best(sparcl_ctx *ctx, sparcl_tuning_db *db,
                                                    const char *kernel, sparcl_tuning_row_fn fn,
                                                    void *user)
{
    if (!db || !fn)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", !db ? "db" : "fn");
    const sparcl__kernel_schema *schema = sparcl__kernel_schema_find(kernel);
    if (!schema)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "unknown kernel family \"%s\"",
                            kernel ? kernel : "(null)");
    char hash[17], msg[SPARCL_MSG_MAX];
    sparcl_status st = sparcl__kernel_hash(ctx, schema, hash);
    if (st == SPARCL_OK &&
        (st = sparcl__tuning_db_each_best(db, kernel, hash, "f32", fn, user, msg, sizeof msg)) !=
            SPARCL_OK)
        sparcl__fail(ctx, st, "%s", msg);
    return st;
}
