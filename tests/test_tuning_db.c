/*
 * test_tuning_db.c -- the tuning database and the runtime lookup: rows
 * round-trip through record/find/best and CSV/SQL export/import; a plan
 * takes its parameters from the database with the documented device and
 * problem fallbacks, and computes the same attention (checked against the
 * brute-force oracle, 1e-4); a corrupt, wrong-version, foreign, locked or
 * read-only database never fails plan creation but warns through the log
 * callback, while opening it for writing fails with a clear message; two
 * processes writing one database lose no rows.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "oracle.h"
#include "scratch.h"
#include "sparcl.h"

#define TOL 1e-4

static void make_dir(void)
{
    cr_assert_eq(scratch_make("sparcl-tdb"), 0);
}

TestSuite(tuning_db, .fini = scratch_remove);

/* ---- log capture ---- */

typedef struct captured {
    int warnings;
    char last[1024];
} captured;

static void capture(void *user, sparcl_log_level level, const char *msg)
{
    captured *c = user;
    if (level == SPARCL_LOG_WARNING) {
        ++c->warnings;
        snprintf(c->last, sizeof c->last, "%s", msg);
    }
}

/* ---- fixtures ---- */

static void fake_device(sparcl_device_info *d, const char *name, const char *driver)
{
    memset(d, 0, sizeof *d);
    snprintf(d->platform, sizeof d->platform, "Test Platform");
    snprintf(d->vendor, sizeof d->vendor, "Test Vendor");
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->driver, sizeof d->driver, "%s", driver);
    snprintf(d->version, sizeof d->version, "OpenCL 1.2");
    snprintf(d->type, sizeof d->type, "CPU");
    d->compute_units = 2;
    d->global_mem = 1ull << 32;
    d->local_mem = 65536;
    d->max_alloc = 1ull << 30;
}

static void fake_problem(sparcl_tuning_problem *p, int q_len)
{
    memset(p, 0, sizeof *p);
    snprintf(p->kernel, sizeof p->kernel, "attn_fwd");
    snprintf(p->kernel_hash, sizeof p->kernel_hash, "0123456789abcdef");
    snprintf(p->dtype, sizeof p->dtype, "f32");
    p->batch = p->q_heads = p->kv_heads = 1;
    p->q_len = p->kv_len = q_len;
    p->head_dim = 64;
    snprintf(p->pattern, sizeof p->pattern, "dense");
    p->density = 1.0;
}

static void ok_result(sparcl_tuning_result *r, int block_m, double ms)
{
    memset(r, 0, sizeof *r);
    sparcl_params_set(&r->params, "BLOCK_M", block_m);
    sparcl_params_set(&r->params, "BLOCK_N", 16);
    sparcl_params_set(&r->params, "USE_LOCAL", 0);
    sparcl_params_set(&r->params, "VEC", 4);
    sparcl_params_set(&r->params, "WG_SIZE", 1);
    r->status = SPARCL_TUNING_OK;
    r->median_ms = ms;
    r->min_ms = ms * 0.9;
    r->max_ms = ms * 1.2;
    r->runs = 5;
    r->max_err = 1e-7;
}

static sparcl_tuning_db *open_db(const char *path, int flags)
{
    sparcl_tuning_db *db = NULL;
    sparcl_status st = sparcl_tuning_db_init(NULL, &db, path, flags);
    cr_assert_eq(st, SPARCL_OK, "open %s: %s", path, sparcl_ctx_errmsg(NULL));
    return db;
}

static int64_t count_rows(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT count(*) FROM evaluation", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

static char *slurp(const char *path)
{
    char *text = scratch_read(path);
    cr_assert_not_null(text, "cannot read %s", path);
    return text;
}

/* ---- the database API ---- */

/* Rows the runtime could misread are refused, naming the field, and nothing
 * is stored: an unknown status, negative runs, an ok row with a NaN median,
 * -inf minimum, unordered times, no runs or an unverified max_err. */
Test(tuning_db, bad_results_are_refused)
{
    make_dir();
    char path[128];
    scratch_path(path, sizeof path, "refuse.db");
    sparcl_tuning_db *db = open_db(path, SPARCL_TUNING_DB_WRITE);
    sparcl_device_info dev;
    sparcl_tuning_problem prob;
    fake_device(&dev, "Dev R", "1.0");
    fake_problem(&prob, 100);
    sparcl_tuning_result r;
    const char *want[] = {"status 99",   "runs -5", "median_ms nan", "min_ms -inf", "max_ms inf",
                          "not ordered", "runs 0",  "max_err nan",   "max_err -1"};
    for (int c = 0; c < (int)(sizeof want / sizeof want[0]); ++c) {
        ok_result(&r, 4, 2.0);
        switch (c) {
        case 0: r.status = (sparcl_tuning_status)99; break;
        case 1: r.runs = -5, r.median_ms = NAN, r.min_ms = -INFINITY; break;
        case 2: r.median_ms = NAN; break;
        case 3: r.min_ms = -INFINITY; break;
        case 4: r.max_ms = INFINITY; break;
        case 5: r.min_ms = 3.0; break;
        case 6: r.runs = 0; break;
        case 7: r.max_err = NAN; break;
        default: r.max_err = -1; break;
        }
        cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_ERR_INVALID_ARGUMENT,
                     "case %d accepted", c);
        cr_assert(strstr(sparcl_ctx_errmsg(NULL), want[c]), "case %d: %s", c,
                  sparcl_ctx_errmsg(NULL));
    }
    cr_assert_eq(count_rows(path), 0);
    /* what stays allowed: a failed evaluation with NaN error and no times */
    ok_result(&r, 4, 2.0);
    r.status = SPARCL_TUNING_WRONG;
    r.max_err = NAN;
    r.median_ms = NAN;
    r.runs = 0;
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(NULL));
    ok_result(&r, 8, 2.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    cr_assert_eq(count_rows(path), 2);
    sparcl_tuning_result got;
    int found = 0;
    cr_assert_eq(sparcl_tuning_db_best(db, &dev, &prob, &got, &found), SPARCL_OK);
    cr_assert(found && got.median_ms == 2.0, "best %g", got.median_ms);
    sparcl_tuning_db_free(db);
}

Test(tuning_db, record_find_best_count)
{
    make_dir();
    char path[128];
    scratch_path(path, sizeof path, "sub/folder/t.db"); /* folders are created */
    sparcl_tuning_db *db = open_db(path, SPARCL_TUNING_DB_WRITE);
    sparcl_device_info dev;
    sparcl_tuning_problem prob;
    fake_device(&dev, "Dev A", "1.0");
    fake_problem(&prob, 100);
    sparcl_tuning_result r, got;
    ok_result(&r, 4, 2.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    ok_result(&r, 8, 1.5);
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    /* the same parameters again: kept once */
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    sparcl_tuning_result bad;
    ok_result(&bad, 16, 0.1);
    bad.status = SPARCL_TUNING_WRONG;
    snprintf(bad.message, sizeof bad.message, "max abs error 3 exceeds 1e-4");
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &bad), SPARCL_OK);

    int64_t n = 0;
    cr_assert_eq(sparcl_tuning_db_count(db, &dev, &prob, &n), SPARCL_OK);
    cr_assert_eq(n, 3);
    int found = 0;
    cr_assert_eq(sparcl_tuning_db_find(db, &dev, &prob, &bad.params, &got, &found), SPARCL_OK);
    cr_assert_eq(found, 1);
    cr_assert_eq(got.status, SPARCL_TUNING_WRONG);
    cr_assert_str_eq(got.message, bad.message);
    /* the wrong one is fastest but never best */
    cr_assert_eq(sparcl_tuning_db_best(db, &dev, &prob, &got, &found), SPARCL_OK);
    cr_assert_eq(found, 1);
    int32_t bm = 0;
    cr_assert(sparcl_params_get(&got.params, "BLOCK_M", &bm));
    cr_assert_eq(bm, 8);
    cr_assert_float_eq(got.median_ms, 1.5, 1e-12);
    cr_assert_eq(got.runs, 5);
    /* another problem has nothing */
    sparcl_tuning_problem other;
    fake_problem(&other, 101);
    cr_assert_eq(sparcl_tuning_db_best(db, &dev, &other, &got, &found), SPARCL_OK);
    cr_assert_eq(found, 0);
    sparcl_tuning_db_free(db);
    sparcl_tuning_db_free(NULL);
}

/* An export to a path that is not a regular file writes into it and leaves
 * it what it was: a FIFO (as /dev/null or /dev/stdout would be) is still a
 * FIFO afterwards, nothing named <path>.tmp appears beside it, and a child
 * reading the FIFO receives the whole CSV. */
Test(tuning_db, export_to_a_stream_writes_in_place)
{
    make_dir();
    char a[128], fifo[128], tmp[160], got[128];
    scratch_path(a, sizeof a, "stream.db");
    scratch_path(fifo, sizeof fifo, "rows.fifo.csv");
    scratch_path(got, sizeof got, "rows-read.csv");
    snprintf(tmp, sizeof tmp, "%s.tmp", fifo);
    remove(a);
    remove(fifo);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    sparcl_tuning_db *db = open_db(a, SPARCL_TUNING_DB_WRITE);
    sparcl_device_info dev;
    fake_device(&dev, "Stream device", "1.0");
    sparcl_tuning_problem prob;
    fake_problem(&prob, 33);
    sparcl_tuning_result r;
    ok_result(&r, 4, 1);
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    const pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) { /* the reader: copies the FIFO into a file */
        FILE *in = fopen(fifo, "r"), *out = fopen(got, "w");
        int ch;
        while (in && out && (ch = fgetc(in)) != EOF)
            fputc(ch, out);
        _exit(in && out && fclose(out) == 0 ? 0 : 1);
    }
    cr_assert_eq(sparcl_tuning_db_export(db, fifo), SPARCL_OK);
    struct stat st;
    const int replaced = stat(fifo, &st) != 0 || !S_ISFIFO(st.st_mode);
    if (replaced) /* the reader waits on the old FIFO for ever */
        kill(child, SIGKILL);
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(!replaced, "the export replaced the FIFO with a file");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_neq(access(tmp, F_OK), 0, "%s was left behind", tmp);
    FILE *f = fopen(got, "r");
    cr_assert_not_null(f);
    char line[4096] = "";
    int lines = 0;
    char first[4096] = "";
    while (fgets(line, sizeof line, f))
        if (lines++ == 0)
            snprintf(first, sizeof first, "%s", line);
    fclose(f);
    cr_assert(strstr(first, "kernel") && strstr(first, "params"), "header: %s", first);
    char *all = scratch_read(got);
    cr_assert_eq(lines, 2, "the reader got %d lines (header and one row expected):\n%s", lines,
                 all ? all : "");
    free(all);
    sparcl_tuning_db_free(db);
    remove(fifo);
    remove(got);
}

Test(tuning_db, export_import_round_trip)
{
    make_dir();
    char a[128], b[128], c[128], csv[128], sql[128], sql2[128], csv2[128];
    scratch_path(a, sizeof a, "a.db");
    scratch_path(b, sizeof b, "b.db");
    scratch_path(c, sizeof c, "c.db");
    scratch_path(csv, sizeof csv, "rows.csv");
    scratch_path(sql, sizeof sql, "rows.sql");
    scratch_path(sql2, sizeof sql2, "rows2.sql");
    scratch_path(csv2, sizeof csv2, "rows2.csv");
    sparcl_tuning_db *db = open_db(a, SPARCL_TUNING_DB_WRITE);
    sparcl_device_info dev;
    fake_device(&dev, "Dev, \"quoted\"", "1.0");
    for (int q = 1; q <= 3; ++q) {
        sparcl_tuning_problem prob;
        fake_problem(&prob, 17 * q);
        sparcl_tuning_result r;
        ok_result(&r, 4, q);
        cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
        r.status = SPARCL_TUNING_CRASH;
        sparcl_params_set(&r.params, "VEC", 8);
        snprintf(r.message, sizeof r.message, "worker killed by signal 11, \"x\"");
        cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    }
    cr_assert_eq(sparcl_tuning_db_export(db, csv), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_db_export(db, sql), SPARCL_OK);
    sparcl_tuning_db_free(db);

    int64_t rows = 0;
    db = open_db(b, SPARCL_TUNING_DB_WRITE);
    cr_assert_eq(sparcl_tuning_db_import(db, csv, &rows), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(rows, 6);
    cr_assert_eq(sparcl_tuning_db_export(db, sql2), SPARCL_OK);
    sparcl_tuning_db_free(db);
    db = open_db(c, SPARCL_TUNING_DB_WRITE);
    cr_assert_eq(sparcl_tuning_db_import(db, sql, &rows), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(rows, 6);
    /* importing again merges: nothing new */
    cr_assert_eq(sparcl_tuning_db_import(db, sql, &rows), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_db_export(db, csv2), SPARCL_OK);
    sparcl_tuning_db_free(db);
    cr_assert_eq(count_rows(c), 6);
    /* CSV -> db -> SQL equals the original SQL, and SQL -> db -> CSV equals
     * the original CSV: nothing is lost either way. */
    char *s1 = slurp(sql), *s2 = slurp(sql2), *c1 = slurp(csv), *c2 = slurp(csv2);
    cr_assert_str_eq(s1, s2);
    cr_assert_str_eq(c1, c2);
    free(s1);
    free(s2);
    free(c1);
    free(c2);
}

Test(tuning_db, import_refuses_other_sql)
{
    make_dir();
    char a[128], evil[128];
    scratch_path(a, sizeof a, "a.db");
    scratch_path(evil, sizeof evil, "evil.sql");
    FILE *f = fopen(evil, "w");
    fputs("BEGIN;\nDROP TABLE evaluation;\nCOMMIT;\n", f);
    fclose(f);
    sparcl_tuning_db *db = open_db(a, SPARCL_TUNING_DB_WRITE);
    cr_assert_eq(sparcl_tuning_db_import(db, evil, NULL), SPARCL_ERR_DATABASE);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "only INSERT INTO evaluation_flat"), "%s",
              sparcl_ctx_errmsg(NULL));
    sparcl_tuning_db_free(db);
    cr_assert_eq(count_rows(a), 0); /* the table is still there */
}

/* ---- the runtime lookup ---- */

typedef struct lookup_env {
    sparcl_ctx *ctx;
    captured log;
    char path[128];
    sparcl_plan_desc desc;
    sparcl_device_info dev;
    sparcl_tuning_problem prob;
} lookup_env;

static void lookup_setup(lookup_env *e, int q_len)
{
    make_dir();
    memset(e, 0, sizeof *e);
    cr_assert_eq(sparcl_ctx_init(&e->ctx), SPARCL_OK);
    sparcl_ctx_set_log(e->ctx, capture, &e->log);
    scratch_path(e->path, sizeof e->path, "user.db");
    cr_assert_eq(sparcl_ctx_set_tuning_db(e->ctx, SPARCL_TUNING_DB_USER, e->path), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(e->ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
    sparcl_plan_desc_init(&e->desc);
    e->desc.q_heads = 2;
    e->desc.kv_heads = 1;
    e->desc.q_len = e->desc.kv_len = q_len;
    e->desc.head_dim = 72;
    cr_assert_eq(sparcl_ctx_device_info(e->ctx, &e->dev), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_problem_init(e->ctx, &e->prob, "attn_fwd", &e->desc, NULL),
                 SPARCL_OK);
}

static void record_row(lookup_env *e, const sparcl_device_info *dev,
                       const sparcl_tuning_problem *prob, int block_m)
{
    sparcl_tuning_db *db = open_db(e->path, SPARCL_TUNING_DB_WRITE);
    sparcl_tuning_result r;
    ok_result(&r, block_m, 1.0);
    cr_assert_eq(sparcl_tuning_db_record(db, dev, prob, &r), SPARCL_OK);
    sparcl_tuning_db_free(db);
}

static int dense_pred(const void *self, int h, int i, int j)
{
    (void)self, (void)h, (void)i, (void)j;
    return 1;
}

/* Creates the plan, checks it against the oracle, returns its BLOCK_M. */
static int32_t plan_block_m(lookup_env *e, sparcl_param_source *source)
{
    sparcl_plan *plan = NULL;
    sparcl_status st = sparcl_plan_init(e->ctx, &plan, &e->desc);
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(e->ctx));
    sparcl_params p;
    sparcl_plan_params(plan, &p, source);
    int32_t bm = 0;
    cr_assert(sparcl_params_get(&p, "BLOCK_M", &bm));
    const sparcl_plan_desc *d = &e->desc;
    size_t nq = (size_t)d->q_heads * d->q_len * d->head_dim;
    size_t nk = (size_t)d->kv_heads * d->kv_len * d->head_dim;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4);
    double *ref = malloc(nq * 8);
    oracle_fill(q, nq, 11);
    oracle_fill(k, nk, 12);
    oracle_fill(v, nk, 13);
    cr_assert_eq(sparcl_plan_forward_host(plan, q, k, v, o, NULL), SPARCL_OK);
    oracle_attention(1, d->q_heads, d->kv_heads, d->q_len, d->kv_len, d->head_dim,
                     1.0 / sqrt(d->head_dim), dense_pred, NULL, q, k, v, ref, NULL);
    double err = oracle_max_abs_diff_f(o, ref, nq);
    cr_assert(err <= TOL, "max abs error %g with %s", err, sparcl_plan_params_origin(plan));
    free(q);
    free(k);
    free(v);
    free(o);
    free(ref);
    sparcl_plan_free(plan);
    return bm;
}

/* A context whose user database holds one row of its exact problem and
 * device (BLOCK_M 4), and a first plan that took it. */
static void setup_with_exact_row(lookup_env *e, sparcl_param_source *src)
{
    lookup_setup(e, 113);
    record_row(e, &e->dev, &e->prob, 4);
    cr_assert_eq(plan_block_m(e, src), 4);
    cr_assert_eq(*src, SPARCL_PARAMS_DATABASE);
}

/* A context remembers the rows it read (tuning/tuning_rows.c) and reads the
 * file again when it changes: a faster row recorded after a plan was made
 * reaches the next plan, a database replaced by another file is read anew,
 * a removed one leaves the defaults.  While the file keeps its identity,
 * size and time, the remembered rows serve: bytes overwritten behind the
 * database's back with its time restored go unnoticed, which is how this
 * test sees that the second plan did not read the file. */
Test(tuning_db, plans_follow_database_changes_on_one_context)
{
    lookup_env e;
    sparcl_param_source src;
    setup_with_exact_row(&e, &src);

    /* remembered: the file's bytes change, its identity, size and time do not */
    struct stat before;
    cr_assert_eq(stat(e.path, &before), 0);
    char *saved = scratch_read(e.path);
    cr_assert_not_null(saved);
    FILE *f = fopen(e.path, "r+b");
    cr_assert_not_null(f);
    for (off_t i = 0; i < before.st_size; ++i)
        fputc('x', f);
    fclose(f);
    const struct timespec times[2] = {before.st_atim, before.st_mtim};
    cr_assert_eq(utimensat(AT_FDCWD, e.path, times, 0), 0);
    cr_assert_eq(plan_block_m(&e, &src), 4);
    cr_assert_eq(src, SPARCL_PARAMS_DATABASE);
    cr_assert_eq(e.log.warnings, 0, "%s", e.log.last);
    f = fopen(e.path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(saved, 1, (size_t)before.st_size, f), (size_t)before.st_size);
    fclose(f);
    free(saved);

    /* a faster row written by a tuner reaches the next plan */
    sparcl_tuning_db *db = open_db(e.path, SPARCL_TUNING_DB_WRITE);
    sparcl_tuning_result r;
    ok_result(&r, 2, 0.25);
    cr_assert_eq(sparcl_tuning_db_record(db, &e.dev, &e.prob, &r), SPARCL_OK);
    sparcl_tuning_db_free(db);
    cr_assert_eq(plan_block_m(&e, &src), 2);

    /* another file at the same path */
    cr_assert_eq(remove(e.path), 0);
    record_row(&e, &e.dev, &e.prob, 1);
    cr_assert_eq(plan_block_m(&e, &src), 1);
    cr_assert_eq(src, SPARCL_PARAMS_DATABASE);

    /* no file: the built-in defaults */
    cr_assert_eq(remove(e.path), 0);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", e.path);
    remove(wal);
    plan_block_m(&e, &src);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, plan_uses_exact_row)
{
    lookup_env e;
    sparcl_param_source src;
    setup_with_exact_row(&e, &src);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(e.ctx, &plan, &e.desc), SPARCL_OK);
    const char *origin = sparcl_plan_params_origin(plan);
    cr_assert(strstr(origin, "exact device") && strstr(origin, "exact problem"), "%s", origin);
    sparcl_plan_free(plan);
    cr_assert_eq(e.log.warnings, 0, "%s", e.log.last);
    /* an explicit override still wins */
    sparcl_params over;
    sparcl_params_clear(&over);
    sparcl_params_set(&over, "BLOCK_M", 2);
    /* Other parameters come from the device's defaults: on a GPU WG_SIZE
     * is 64, which BLOCK_M=2 cannot divide. */
    sparcl_params_set(&over, "WG_SIZE", 1);
    e.desc.params = &over;
    cr_assert_eq(plan_block_m(&e, &src), 2);
    cr_assert_eq(src, SPARCL_PARAMS_OVERRIDE);
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, nearest_problem_and_device_fallbacks)
{
    lookup_env e;
    lookup_setup(&e, 239);
    sparcl_tuning_problem near = e.prob, far = e.prob;
    near.q_len = near.kv_len = 256;
    far.q_len = far.kv_len = 4096;
    sparcl_device_info other_driver = e.dev, same_vendor = e.dev;
    snprintf(other_driver.driver, sizeof other_driver.driver, "0.0-old");
    snprintf(same_vendor.name, sizeof same_vendor.name, "Another Device");
    record_row(&e, &same_vendor, &e.prob, 1); /* the exact problem, weakest device match */
    sparcl_param_source src;
    if (strcmp(e.dev.type, "CPU") == 0) {
        /* not on a CPU: another name is another instruction set */
        plan_block_m(&e, &src);
        cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
    } else {
        cr_assert_eq(plan_block_m(&e, &src), 1);
        cr_assert_eq(src, SPARCL_PARAMS_DATABASE);
    }
    record_row(&e, &other_driver, &e.prob, 2);
    cr_assert_eq(plan_block_m(&e, &src), 2);
    cr_assert_eq(e.log.warnings, 1);
    cr_assert(strstr(e.log.last, "driver 0.0-old"), "%s", e.log.last);
    record_row(&e, &e.dev, &far, 16);
    record_row(&e, &e.dev, &near, 4); /* exact device beats the exact problem elsewhere */
    cr_assert_eq(plan_block_m(&e, &src), 4);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(e.ctx, &plan, &e.desc), SPARCL_OK);
    cr_assert(strstr(sparcl_plan_params_origin(plan), "nearest problem"), "%s",
              sparcl_plan_params_origin(plan));
    sparcl_plan_free(plan);
    sparcl_ctx_free(e.ctx);
}

/* A row of another problem lends attn_bwd its tile but not SPLIT, which
 * follows the problem's parallelism (the default's rule: partitions until
 * batch * kv_heads * SPLIT reaches the compute units); the exact
 * problem's row keeps its own. */
static int32_t backward_split(lookup_env *e, sparcl_params *p)
{
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(e->ctx, &plan, &e->desc), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(e->ctx));
    sparcl_param_source src;
    cr_assert_eq(sparcl_plan_backward_params(plan, p, &src), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(e->ctx));
    cr_assert_eq(src, SPARCL_PARAMS_DATABASE);
    sparcl_plan_free(plan);
    int32_t split = 0;
    cr_assert(sparcl_params_get(p, "SPLIT", &split));
    return split;
}

Test(tuning_db, nearest_row_does_not_carry_the_backward_split)
{
    lookup_env e;
    lookup_setup(&e, 113);
    e.desc.q_heads = e.desc.kv_heads = 8;
    sparcl_tuning_problem here, other;
    cr_assert_eq(sparcl_tuning_problem_init(e.ctx, &here, "attn_bwd", &e.desc, NULL), SPARCL_OK);
    other = here;
    other.q_len = other.kv_len = 1023;
    other.q_heads = other.kv_heads = 2;
    sparcl_tuning_result r;
    memset(&r, 0, sizeof r);
    const char *names[] = {"ALGO", "BLOCK_M", "BLOCK_N", "EXP", "SPLIT", "USE_LOCAL", "VEC",
                           "WG_SIZE"};
    const int32_t values[] = {1, 16, 8, 2, 8, 0, 8, 1};
    for (int i = 0; i < 8; ++i)
        sparcl_params_set(&r.params, names[i], values[i]);
    r.status = SPARCL_TUNING_OK;
    r.median_ms = r.min_ms = r.max_ms = 1.0;
    r.runs = 3;
    r.max_err = 1e-7;
    sparcl_tuning_db *db = open_db(e.path, SPARCL_TUNING_DB_WRITE);
    cr_assert_eq(sparcl_tuning_db_record(db, &e.dev, &other, &r), SPARCL_OK);
    sparcl_tuning_db_free(db);

    int32_t want = 1;
    while (want < 8 && 8L * want < (long)e.dev.compute_units)
        want *= 2;
    sparcl_params p;
    cr_assert_eq(backward_split(&e, &p), want);
    int32_t algo = 0, block_n = 0;
    cr_assert(sparcl_params_get(&p, "ALGO", &algo) && sparcl_params_get(&p, "BLOCK_N", &block_n));
    cr_assert_eq(algo, 1, "the row's other parameters are kept");
    cr_assert_eq(block_n, 8);

    db = open_db(e.path, SPARCL_TUNING_DB_WRITE);
    cr_assert_eq(sparcl_tuning_db_record(db, &e.dev, &here, &r), SPARCL_OK);
    sparcl_tuning_db_free(db);
    cr_assert_eq(backward_split(&e, &p), 8, "the exact problem's row keeps its SPLIT");
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, rows_of_other_kernels_vendors_and_invalid_params_are_ignored)
{
    lookup_env e;
    lookup_setup(&e, 17);
    sparcl_tuning_problem stale = e.prob;
    snprintf(stale.kernel_hash, sizeof stale.kernel_hash, "ffffffffffffffff");
    record_row(&e, &e.dev, &stale, 4);
    sparcl_device_info foreign = e.dev;
    snprintf(foreign.vendor, sizeof foreign.vendor, "Someone Else");
    record_row(&e, &foreign, &e.prob, 4);
    /* BLOCK_M 256 is not a choice: a row the schema rejects is skipped */
    sparcl_tuning_db *db = open_db(e.path, SPARCL_TUNING_DB_WRITE);
    sparcl_tuning_result r;
    ok_result(&r, 256, 0.5);
    cr_assert_eq(sparcl_tuning_db_record(db, &e.dev, &e.prob, &r), SPARCL_OK);
    sparcl_tuning_db_free(db);
    sparcl_param_source src;
    plan_block_m(&e, &src);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
    cr_assert_eq(e.log.warnings, 0, "%s", e.log.last);
    sparcl_ctx_free(e.ctx);
}

/* The runtime falls back to defaults with a warning naming the problem;
 * the writer refuses with a clear error. */
static void expect_fallback(lookup_env *e, const char *needle)
{
    sparcl_param_source src;
    int before = e->log.warnings;
    plan_block_m(e, &src);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
    cr_assert_eq(e->log.warnings, before + 1);
    cr_assert(strstr(e->log.last, needle), "warning \"%s\" lacks \"%s\"", e->log.last, needle);
    sparcl_tuning_db *db = NULL;
    cr_assert_eq(sparcl_tuning_db_init(NULL, &db, e->path, SPARCL_TUNING_DB_WRITE),
                 SPARCL_ERR_DATABASE);
    cr_assert_null(db);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), needle), "error \"%s\" lacks \"%s\"",
              sparcl_ctx_errmsg(NULL), needle);
}

Test(tuning_db, corrupt_file_falls_back)
{
    lookup_env e;
    lookup_setup(&e, 17);
    FILE *f = fopen(e.path, "wb");
    for (int i = 0; i < 4096; ++i)
        fputc((i * 7919) & 255, f);
    fclose(f);
    expect_fallback(&e, "not a database");
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, wrong_version_falls_back)
{
    lookup_env e;
    lookup_setup(&e, 17);
    record_row(&e, &e.dev, &e.prob, 4);
    exec_sql(e.path, "PRAGMA user_version = 99");
    expect_fallback(&e, "schema version 99");
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, foreign_database_falls_back)
{
    lookup_env e;
    lookup_setup(&e, 17);
    exec_sql(e.path, "CREATE TABLE notes (x)");
    expect_fallback(&e, "not a sparcl tuning database");
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, locked_database_falls_back)
{
    lookup_env e;
    lookup_setup(&e, 17);
    record_row(&e, &e.dev, &e.prob, 4);
    sqlite3 *lock = NULL;
    cr_assert_eq(sqlite3_open(e.path, &lock), SQLITE_OK);
    /* Exclusive locking mode keeps even WAL readers out. */
    cr_assert_eq(sqlite3_exec(lock,
                              "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; "
                              "DELETE FROM evaluation WHERE 0;",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(lock));
    sparcl_param_source src;
    plan_block_m(&e, &src);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
    cr_assert_eq(e.log.warnings, 1);
    cr_assert(strstr(e.log.last, "locked"), "%s", e.log.last);
    sqlite3_exec(lock, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(lock);
    /* once released, the row is used again */
    cr_assert_eq(plan_block_m(&e, &src), 4);
    cr_assert_eq(src, SPARCL_PARAMS_DATABASE);
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, read_only_database_is_read_but_not_written)
{
    lookup_env e;
    lookup_setup(&e, 17);
    record_row(&e, &e.dev, &e.prob, 4);
    cr_assert_eq(chmod(e.path, 0444), 0);
    sparcl_param_source src;
    int32_t bm = plan_block_m(&e, &src);
    /* Readable: the row is used.  If this platform cannot read it, the
     * fallback must have warned. */
    cr_assert(src == SPARCL_PARAMS_DATABASE ? bm == 4 : e.log.warnings == 1);
    sparcl_tuning_db *db = NULL;
    cr_assert_eq(sparcl_tuning_db_init(NULL, &db, e.path, SPARCL_TUNING_DB_WRITE),
                 SPARCL_ERR_DATABASE);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "read-only"), "%s", sparcl_ctx_errmsg(NULL));
    sparcl_ctx_free(e.ctx);
}

Test(tuning_db, missing_database_is_quiet)
{
    lookup_env e;
    lookup_setup(&e, 17);
    sparcl_param_source src;
    plan_block_m(&e, &src);
    cr_assert_eq(src, SPARCL_PARAMS_DEFAULT);
    cr_assert_eq(e.log.warnings, 0, "%s", e.log.last);
    sparcl_tuning_db *db = NULL;
    cr_assert_eq(sparcl_tuning_db_init(NULL, &db, e.path, SPARCL_TUNING_DB_READ),
                 SPARCL_ERR_DATABASE);
    sparcl_ctx_free(e.ctx);
}

/* Two writer processes (no OpenCL in this test, so fork is safe). */
Test(tuning_db, concurrent_writers_lose_no_rows)
{
    make_dir();
    char path[128];
    scratch_path(path, sizeof path, "shared.db");
    enum { PER_WRITER = 150 };
    pid_t pids[2];
    for (int w = 0; w < 2; ++w) {
        pids[w] = fork();
        cr_assert_neq(pids[w], -1);
        if (pids[w] == 0) {
            sparcl_tuning_db *db = NULL;
            if (sparcl_tuning_db_init(NULL, &db, path, SPARCL_TUNING_DB_WRITE) != SPARCL_OK)
                _exit(10);
            sparcl_device_info dev;
            sparcl_tuning_problem prob;
            fake_device(&dev, "Dev A", "1.0");
            fake_problem(&prob, 64);
            for (int i = 0; i < PER_WRITER; ++i) {
                sparcl_tuning_result r;
                ok_result(&r, 4, 1.0 + i);
                sparcl_params_set(&r.params, "WRITER", w);
                sparcl_params_set(&r.params, "I", i);
                if (sparcl_tuning_db_record(db, &dev, &prob, &r) != SPARCL_OK)
                    _exit(11);
            }
            sparcl_tuning_db_free(db);
            _exit(0);
        }
    }
    for (int w = 0; w < 2; ++w) {
        int st = 0;
        cr_assert_eq(waitpid(pids[w], &st, 0), pids[w]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d: status %d", w, st);
    }
    cr_assert_eq(count_rows(path), 2 * PER_WRITER);
}

Test(tuning_db, default_path_rule)
{
    char buf[256];
    setenv("SPARCL_DB", "/x/y.db", 1);
    cr_assert_eq(sparcl_tuning_db_default_path(buf, sizeof buf), SPARCL_OK);
    cr_assert_str_eq(buf, "/x/y.db");
    unsetenv("SPARCL_DB");
    setenv("XDG_CACHE_HOME", "/c", 1);
    cr_assert_eq(sparcl_tuning_db_default_path(buf, sizeof buf), SPARCL_OK);
    cr_assert_str_eq(buf, "/c/sparcl/tuning.db");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/h", 1);
    cr_assert_eq(sparcl_tuning_db_default_path(buf, sizeof buf), SPARCL_OK);
    cr_assert_str_eq(buf, "/h/.cache/sparcl/tuning.db");
    cr_assert_eq(sparcl_tuning_db_default_path(buf, 8), SPARCL_ERR_INVALID_ARGUMENT);
}

Test(tuning_db, parameter_space_comes_from_the_schema)
{
    cr_assert_geq(sparcl_kernel_count(), 1);
    cr_assert_str_eq(sparcl_kernel_name(0), "attn_fwd");
    cr_assert_null(sparcl_kernel_name(sparcl_kernel_count()));
    sparcl_param_space sp;
    cr_assert_eq(sparcl_kernel_space(NULL, "attn_fwd", &sp), SPARCL_OK);
    cr_assert_geq(sp.count, 5);
    int has_bm = 0;
    for (int i = 0; i < sp.count; ++i)
        if (!strcmp(sp.item[i].name, "BLOCK_M"))
            has_bm = sp.item[i].n_choices > 1;
    cr_assert(has_bm);
    cr_assert_eq(sparcl_kernel_space(NULL, "nope", &sp), SPARCL_ERR_INVALID_ARGUMENT);

    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = 17;
    d.head_dim = 16;
    sparcl_params p;
    cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_fwd", &d, &p), SPARCL_OK);
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &p), SPARCL_OK);
    sparcl_params_set(&p, "VEC", 32); /* not a choice */
    cr_assert_eq(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &p), SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_params_set(&p, "VEC", 16);
    sparcl_params_set(&p, "WG_SIZE", 4096); /* not a choice either */
    cr_assert_neq(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &p), SPARCL_OK);
    char h1[17], h2[17];
    cr_assert_eq(sparcl_kernel_hash(ctx, "attn_fwd", h1, sizeof h1), SPARCL_OK);
    cr_assert_eq(strlen(h1), 16);
    cr_assert_eq(sparcl_kernel_hash(ctx, "attn_fwd", h2, sizeof h2), SPARCL_OK);
    cr_assert_str_eq(h1, h2);
    sparcl_ctx_free(ctx);
}

/* Several processes creating the same new file at the same moment: exactly
 * one applies the schema, none sees it half-made or fails on the lock (this
 * lost about 1 open in 60 before creation ran under the write lock). */
Test(tuning_db, simultaneous_creation_never_fails)
{
    make_dir();
    enum { FILES = 25, PROCS = 3 };
    int failures = 0;
    for (int f = 0; f < FILES; ++f) {
        char path[128], name[32];
        snprintf(name, sizeof name, "created-%d.db", f);
        scratch_path(path, sizeof path, name);
        pid_t pids[PROCS];
        for (int w = 0; w < PROCS; ++w) {
            pids[w] = fork();
            cr_assert_neq(pids[w], -1);
            if (pids[w] == 0) {
                sparcl_tuning_db *db = NULL;
                int ok =
                    sparcl_tuning_db_init(NULL, &db, path, SPARCL_TUNING_DB_WRITE) == SPARCL_OK;
                sparcl_tuning_db_free(db);
                _exit(ok ? 0 : 1);
            }
        }
        for (int w = 0; w < PROCS; ++w) {
            int st = 0;
            waitpid(pids[w], &st, 0);
            failures += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
    }
    cr_assert_eq(failures, 0, "%d of %d opens failed", failures, FILES * PROCS);
}

/* ---- the device identity ---- */

/* A CPU device is keyed without its memory sizes, which POCL derives from
 * free memory: rows stored under one figure are found under another. */
Test(tuning_db, cpu_rows_do_not_depend_on_free_memory)
{
    make_dir();
    char path[128];
    scratch_path(path, sizeof path, "mem.db");
    sparcl_tuning_db *db = open_db(path, SPARCL_TUNING_DB_WRITE);
    sparcl_device_info at8, at16, gpu8, gpu16;
    fake_device(&at8, "Dev A", "1.0");
    at8.global_mem = 8ull << 30;
    at8.max_alloc = 4ull << 30;
    at16 = at8;
    at16.global_mem = 16ull << 30;
    at16.max_alloc = 8ull << 30;
    sparcl_tuning_problem prob;
    fake_problem(&prob, 100);
    sparcl_tuning_result r, got;
    ok_result(&r, 4, 2.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &at8, &prob, &r), SPARCL_OK);
    int found = 0;
    cr_assert_eq(sparcl_tuning_db_find(db, &at16, &prob, &r.params, &got, &found), SPARCL_OK);
    cr_assert_eq(found, 1);
    int64_t n = 0;
    cr_assert_eq(sparcl_tuning_db_count(db, &at16, &prob, &n), SPARCL_OK);
    cr_assert_eq(n, 1);
    /* a GPU reports its memory stably: there it stays in the key */
    gpu8 = at8;
    snprintf(gpu8.type, sizeof gpu8.type, "GPU");
    gpu16 = at16;
    snprintf(gpu16.type, sizeof gpu16.type, "GPU");
    cr_assert_eq(sparcl_tuning_db_record(db, &gpu8, &prob, &r), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_db_find(db, &gpu16, &prob, &r.params, &got, &found), SPARCL_OK);
    cr_assert_eq(found, 0);
    cr_assert_eq(sparcl_tuning_db_find(db, &gpu8, &prob, &r.params, &got, &found), SPARCL_OK);
    cr_assert_eq(found, 1);
    sparcl_tuning_db_free(db);

    /* the context's own fingerprint carries no CPU memory figures */
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    sparcl_device_info here;
    cr_assert_eq(sparcl_ctx_device_info(ctx, &here), SPARCL_OK);
    if (!strcmp(here.type, "CPU"))
        cr_assert(here.global_mem == 0 && here.max_alloc == 0 && here.local_mem > 0);
    else
        cr_assert(here.global_mem > 0 && here.max_alloc > 0);
    sparcl_ctx_free(ctx);
}

/* The fallback warning names each field that differs, with both values. */
Test(tuning_db, fallback_warning_names_what_differs)
{
    lookup_env e;
    lookup_setup(&e, 113);
    sparcl_device_info other = e.dev;
    snprintf(other.driver, sizeof other.driver, "9.9-new");
    other.compute_units = e.dev.compute_units + 6;
    record_row(&e, &other, &e.prob, 2);
    sparcl_param_source src;
    cr_assert_eq(plan_block_m(&e, &src), 2);
    cr_assert_eq(e.log.warnings, 1);
    char want[512];
    snprintf(want, sizeof want, "driver 9.9-new (here %s)", e.dev.driver);
    cr_assert(strstr(e.log.last, want), "\"%s\" lacks \"%s\"", e.log.last, want);
    snprintf(want, sizeof want, "compute_units %u (here %u)", e.dev.compute_units + 6,
             e.dev.compute_units);
    cr_assert(strstr(e.log.last, want), "\"%s\" lacks \"%s\"", e.log.last, want);
    cr_assert_null(strstr(e.log.last, "local_mem"), "%s", e.log.last);
    cr_assert_null(strstr(e.log.last, "version"), "%s", e.log.last);
    sparcl_ctx_free(e.ctx);

    /* only the local memory differs: that, and nothing else, is named */
    lookup_setup(&e, 113);
    other = e.dev;
    other.local_mem = e.dev.local_mem * 2;
    record_row(&e, &other, &e.prob, 2);
    cr_assert_eq(plan_block_m(&e, &src), 2);
    cr_assert_eq(e.log.warnings, 1);
    snprintf(want, sizeof want, "local_mem %llu (here %llu)",
             (unsigned long long)e.dev.local_mem * 2, (unsigned long long)e.dev.local_mem);
    cr_assert(strstr(e.log.last, want), "\"%s\" lacks \"%s\"", e.log.last, want);
    cr_assert_null(strstr(e.log.last, "driver"), "%s", e.log.last);
    sparcl_ctx_free(e.ctx);
}

static int64_t query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* One v1 row: device `name` with the given memory figures, BLOCK_M bm. */
static void v1_row(char *sql, size_t size, const char *type, long long gmem, long long alloc,
                   int bm, double ms)
{
    size_t n = strlen(sql);
    snprintf(sql + n, size - n,
             "INSERT INTO evaluation_flat (platform, vendor, device, driver, version, type, "
             "compute_units, global_mem, local_mem, max_alloc, kernel, kernel_hash, dtype, batch, "
             "q_heads, kv_heads, q_len, kv_len, head_dim, causal, pattern, block, density, "
             "params, status, median_ms, min_ms, max_ms, runs) VALUES ('P', 'V', 'Dev', '1.0', "
             "'OpenCL 3.0', '%s', 2, %lld, 65536, %lld, 'attn_fwd', '0123456789abcdef', 'f32', 1, "
             "1, 1, 64, 64, 64, 0, 'dense', 0, 1.0, '{\"BLOCK_M\":%d}', 'ok', %g, %g, %g, 3);\n",
             type, gmem, alloc, bm, ms, ms, ms);
}

/* A version 1 file: refused for reading with a hint, migrated in place when
 * opened for writing (CPU devices that differ only in memory become one, no
 * measurement is lost), and an export of version 1 loads as is. */
Test(tuning_db, version_1_database_is_migrated)
{
    make_dir();
    char path[128];
    scratch_path(path, sizeof path, "v1.db");
    char *schema = slurp(SPARCL_SOURCE_DIR "/tests/data/schema_v1.sql");
    exec_sql(path, schema);
    free(schema);
    char rows[8192] = "BEGIN;\n";
    v1_row(rows, sizeof rows, "CPU", 8ll << 30, 4ll << 30, 1, 3.0);
    v1_row(rows, sizeof rows, "CPU", 8ll << 30, 4ll << 30, 2, 2.0);
    v1_row(rows, sizeof rows, "CPU", 16ll << 30, 8ll << 30, 2, 2.5); /* the same candidate */
    v1_row(rows, sizeof rows, "CPU", 16ll << 30, 8ll << 30, 4, 1.0);
    v1_row(rows, sizeof rows, "GPU", 8ll << 30, 4ll << 30, 8, 0.5);
    v1_row(rows, sizeof rows, "GPU", 16ll << 30, 8ll << 30, 8, 0.4);
    strcat(rows, "COMMIT;\n");
    exec_sql(path, rows);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM device"), 4);

    sparcl_tuning_db *db = NULL;
    cr_assert_eq(sparcl_tuning_db_init(NULL, &db, path, SPARCL_TUNING_DB_READ),
                 SPARCL_ERR_DATABASE);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "schema version 1") &&
                  strstr(sparcl_ctx_errmsg(NULL), "migrates"),
              "%s", sparcl_ctx_errmsg(NULL));
    db = open_db(path, SPARCL_TUNING_DB_WRITE);
    sparcl_tuning_db_free(db);
    cr_assert_eq(query_int(path, "PRAGMA user_version"), 2);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM device WHERE type = 'CPU'"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM device WHERE type = 'CPU' AND "
                                 "global_mem = 0 AND max_alloc = 0 AND local_mem = 65536"),
                 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM device WHERE type = 'GPU'"), 2);
    /* three CPU candidates (BLOCK_M 1, 2, 4) and both GPU rows */
    cr_assert_eq(count_rows(path), 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM evaluation WHERE device_id NOT IN "
                                 "(SELECT id FROM device)"),
                 0);
    /* the migrated file works: the best CPU row is BLOCK_M 4 under any memory figure */
    db = open_db(path, SPARCL_TUNING_DB_READ);
    sparcl_device_info dev;
    memset(&dev, 0, sizeof dev);
    snprintf(dev.platform, sizeof dev.platform, "P");
    snprintf(dev.vendor, sizeof dev.vendor, "V");
    snprintf(dev.name, sizeof dev.name, "Dev");
    snprintf(dev.driver, sizeof dev.driver, "1.0");
    snprintf(dev.version, sizeof dev.version, "OpenCL 3.0");
    snprintf(dev.type, sizeof dev.type, "CPU");
    dev.compute_units = 2;
    dev.local_mem = 65536;
    dev.global_mem = 3ll << 30;
    sparcl_tuning_problem prob;
    fake_problem(&prob, 64);
    sparcl_tuning_result got;
    int found = 0;
    cr_assert_eq(sparcl_tuning_db_best(db, &dev, &prob, &got, &found), SPARCL_OK);
    cr_assert_eq(found, 1);
    int32_t bm = 0;
    cr_assert(sparcl_params_get(&got.params, "BLOCK_M", &bm));
    cr_assert_eq(bm, 4);
    sparcl_tuning_db_free(db);

    /* an export of version 1 (the shipped SQL as it was, CPU memory figures
     * included) */
    char fresh[128];
    scratch_path(fresh, sizeof fresh, "shipped.db");
    db = open_db(fresh, SPARCL_TUNING_DB_WRITE);
    int64_t n = 0;
    cr_assert_eq(sparcl_tuning_db_import(db, SPARCL_SOURCE_DIR "/tests/data/tuned_pocl_v1.sql", &n),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    sparcl_tuning_db_free(db);
    cr_assert_gt(n, 0);
    cr_assert_eq(count_rows(fresh), n);
    cr_assert_eq(query_int(fresh, "SELECT count(*) FROM device WHERE type = 'CPU' AND "
                                  "(global_mem <> 0 OR max_alloc <> 0)"),
                 0);
}

/* Every row a shipped database file carries was tuned for the kernel code
 * of this tree: a change to a family's sources (cl/common.clh included)
 * retires its rows unless it leaves the compiled kernels alone and the
 * files are re-keyed, which this keeps from being forgotten. */
Test(tuning_db, shipped_rows_carry_the_current_kernel_hashes, .init = make_dir)
{
    static const char *const files[] = {"tuned_pocl.sql", "tuned_pocl_skylake_avx512.sql"};
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    int checked = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; ++f) {
        char sql[512], path[128], name[64];
        snprintf(sql, sizeof sql, "%s/db/%s", SPARCL_SOURCE_DIR, files[f]);
        snprintf(name, sizeof name, "shipped-%zu.db", f);
        scratch_path(path, sizeof path, name);
        sparcl_tuning_db *db = open_db(path, SPARCL_TUNING_DB_WRITE);
        int64_t n = 0;
        cr_assert_eq(sparcl_tuning_db_import(db, sql, &n), SPARCL_OK, "%s: %s", files[f],
                     sparcl_ctx_errmsg(NULL));
        sparcl_tuning_db_free(db);
        sqlite3 *h = NULL;
        cr_assert_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_stmt *q = NULL;
        cr_assert_eq(sqlite3_prepare_v2(h, "SELECT DISTINCT name, hash FROM kernel", -1, &q, NULL),
                     SQLITE_OK, "%s", sqlite3_errmsg(h));
        while (sqlite3_step(q) == SQLITE_ROW) {
            const char *kernel = (const char *)sqlite3_column_text(q, 0);
            const char *hash = (const char *)sqlite3_column_text(q, 1);
            char now[32];
            cr_assert_eq(sparcl_kernel_hash(ctx, kernel, now, sizeof now), SPARCL_OK, "%s: %s",
                         kernel, sparcl_ctx_errmsg(ctx));
            cr_expect_str_eq(hash, now, "%s: %s rows carry %s, the tree's code hashes to %s",
                             files[f], kernel, hash, now);
            ++checked;
        }
        sqlite3_finalize(q);
        sqlite3_close(h);
    }
    cr_assert_gt(checked, 4);
    sparcl_ctx_free(ctx);
}

/* ---- decisions and claims ---- */

/* A decision overrides "fastest": best, plans and exports follow it. */
Test(tuning_db, decision_is_what_best_and_plans_return)
{
    lookup_env e;
    lookup_setup(&e, 113);
    sparcl_tuning_db *db = open_db(e.path, SPARCL_TUNING_DB_WRITE);
    const int bms[3] = {1, 2, 4};
    const double ms[3] = {3.0, 1.0, 2.0};
    sparcl_tuning_finalist f[3];
    memset(f, 0, sizeof f);
    for (int i = 0; i < 3; ++i) {
        sparcl_tuning_result r;
        ok_result(&r, bms[i], ms[i]);
        cr_assert_eq(sparcl_tuning_db_record(db, &e.dev, &e.prob, &r), SPARCL_OK);
        f[i].params = r.params;
        f[i].rounds = 5;
        f[i].round_ms = ms[i];
        f[i].round_lo_ms = ms[i] * 0.8;
        f[i].round_hi_ms = ms[i] * 1.5;
        f[i].cpu_ms = -1;
        f[i].speedup = 3.0 / ms[i];
        f[i].speedup_lo = f[i].speedup * 0.9;
        f[i].speedup_hi = f[i].speedup * 1.1;
    }
    sparcl_tuning_result top[5], got;
    int n = 0, found = 0;
    cr_assert_eq(sparcl_tuning_db_fastest(db, &e.dev, &e.prob, 5, top, &n), SPARCL_OK);
    cr_assert_eq(n, 3);
    cr_assert_float_eq(top[0].median_ms, 1.0, 1e-12);
    cr_assert_float_eq(top[2].median_ms, 3.0, 1e-12);
    /* the fastest (BLOCK_M 2) did not beat the noise: BLOCK_M 4 is chosen */
    cr_assert_eq(sparcl_tuning_db_decide(db, &e.dev, &e.prob, f, 3, 2), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_db_best(db, &e.dev, &e.prob, &got, &found), SPARCL_OK);
    int32_t bm = 0;
    cr_assert(sparcl_params_get(&got.params, "BLOCK_M", &bm));
    cr_assert_eq(bm, 4);
    sparcl_param_source src;
    cr_assert_eq(plan_block_m(&e, &src), 4);
    cr_assert_eq(src, SPARCL_PARAMS_DATABASE);
    /* a new decision replaces the old one */
    cr_assert_eq(sparcl_tuning_db_decide(db, &e.dev, &e.prob, f, 3, 0), SPARCL_OK);
    cr_assert_eq(plan_block_m(&e, &src), 1);
    cr_assert_eq(query_int(e.path, "SELECT count(*) FROM evaluation WHERE chosen = 1"), 1);
    cr_assert_eq(query_int(e.path, "SELECT count(*) FROM evaluation WHERE rounds = 5 AND "
                                   "round_lo_ms < round_ms AND round_ms < round_hi_ms"),
                 3);
    /* bad calls change nothing */
    cr_assert_eq(sparcl_tuning_db_decide(db, &e.dev, &e.prob, f, 3, 3),
                 SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_tuning_finalist ghost = f[0];
    sparcl_params_set(&ghost.params, "BLOCK_M", 8); /* never recorded */
    cr_assert_eq(sparcl_tuning_db_decide(db, &e.dev, &e.prob, &ghost, 1, 0), SPARCL_ERR_DATABASE);
    cr_assert_eq(plan_block_m(&e, &src), 1);

    /* the decision and the spreads travel through an export */
    char sql[128], other[128];
    scratch_path(sql, sizeof sql, "decided.sql");
    scratch_path(other, sizeof other, "other.db");
    cr_assert_eq(sparcl_tuning_db_export(db, sql), SPARCL_OK);
    sparcl_tuning_db_free(db);
    db = open_db(other, SPARCL_TUNING_DB_WRITE);
    cr_assert_eq(sparcl_tuning_db_import(db, sql, NULL), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_tuning_db_best(db, &e.dev, &e.prob, &got, &found), SPARCL_OK);
    cr_assert(sparcl_params_get(&got.params, "BLOCK_M", &bm));
    cr_assert_eq(bm, 1);
    sparcl_tuning_db_free(db);
    cr_assert_eq(query_int(other, "SELECT count(*) FROM evaluation WHERE rounds = 5"), 3);
    sparcl_ctx_free(e.ctx);
}

/* Claims: one process at a time; a stored candidate is reported as such; a
 * claim of a process that has ended is taken over. */
Test(tuning_db, claims_exclude_other_live_processes)
{
    make_dir();
    char path[128];
    scratch_path(path, sizeof path, "claims.db");
    sparcl_device_info dev;
    sparcl_tuning_problem prob;
    fake_device(&dev, "Dev A", "1.0");
    fake_problem(&prob, 64);
    sparcl_tuning_result r;
    ok_result(&r, 4, 1.0);
    sparcl_tuning_claim state;

    /* a child claims and stays alive until told */
    int up[2], down[2]; /* child -> parent, parent -> child */
    cr_assert_eq(pipe(up), 0);
    cr_assert_eq(pipe(down), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        sparcl_tuning_db *db = NULL;
        if (sparcl_tuning_db_init(NULL, &db, path, SPARCL_TUNING_DB_WRITE) != SPARCL_OK ||
            sparcl_tuning_db_claim(db, &dev, &prob, &r.params, 600, &state) != SPARCL_OK ||
            state != SPARCL_TUNING_CLAIM_TAKEN)
            _exit(10);
        sparcl_tuning_db_free(db);
        if (write(up[1], "c", 1) != 1)
            _exit(11);
        char c;
        if (read(down[0], &c, 1) != 1) /* wait for the parent */
            _exit(12);
        _exit(0);
    }
    char c;
    cr_assert_eq(read(up[0], &c, 1), 1);
    sparcl_tuning_db *db = open_db(path, SPARCL_TUNING_DB_WRITE);
    cr_assert_eq(sparcl_tuning_db_claim(db, &dev, &prob, &r.params, 600, &state), SPARCL_OK);
    cr_assert_eq(state, SPARCL_TUNING_CLAIM_BUSY);
    /* releasing someone else's claim does nothing */
    cr_assert_eq(sparcl_tuning_db_release(db, &dev, &prob, &r.params), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_db_claim(db, &dev, &prob, &r.params, 600, &state), SPARCL_OK);
    cr_assert_eq(state, SPARCL_TUNING_CLAIM_BUSY);
    /* other parameters are free */
    sparcl_tuning_result r2;
    ok_result(&r2, 8, 1.0);
    cr_assert_eq(sparcl_tuning_db_claim(db, &dev, &prob, &r2.params, 600, &state), SPARCL_OK);
    cr_assert_eq(state, SPARCL_TUNING_CLAIM_TAKEN);
    /* the owner ends without releasing: its claim is taken over */
    cr_assert_eq(write(down[1], "x", 1), 1);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    cr_assert_eq(sparcl_tuning_db_claim(db, &dev, &prob, &r.params, 600, &state), SPARCL_OK);
    cr_assert_eq(state, SPARCL_TUNING_CLAIM_TAKEN);
    /* once recorded, it is stored */
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &prob, &r), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_db_release(db, &dev, &prob, &r.params), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_db_claim(db, &dev, &prob, &r.params, 600, &state), SPARCL_OK);
    cr_assert_eq(state, SPARCL_TUNING_CLAIM_STORED);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM claim"), 1); /* r2's */
    sparcl_tuning_db_free(db);
    for (int i = 0; i < 2; ++i) {
        close(up[i]);
        close(down[i]);
    }
}

/* ---- walking every row ---- */

typedef struct walked {
    int n, stop_after;
    char what[16][400];
} walked;

static int on_walked(void *user, const sparcl_device_info *d, const sparcl_tuning_problem *p,
                     const sparcl_tuning_result *r)
{
    walked *w = user;
    int32_t bm = 0;
    sparcl_params_get(&r->params, "BLOCK_M", &bm);
    if (w->n < 16)
        snprintf(w->what[w->n], sizeof w->what[0], "%s %s q%d bm%d %s %.2f %llu", d->name,
                 p->kernel, p->q_len, bm, sparcl_tuning_status_string(r->status), r->median_ms,
                 (unsigned long long)d->global_mem);
    ++w->n;
    return w->stop_after && w->n >= w->stop_after;
}

/* sparcl_tuning_db_each_row() gives every stored evaluation of a family,
 * failures included, grouped by device and problem and in stored order
 * within a group, with the device in the database's identity (a CPU's
 * memory sizes 0); NULL walks every family; a nonzero return stops it. */
Test(tuning_db, each_row_walks_every_evaluation_in_order)
{
    make_dir();
    char path[128];
    scratch_path(path, sizeof path, "rows.db");
    sparcl_tuning_db *db = open_db(path, SPARCL_TUNING_DB_WRITE);
    sparcl_device_info a, b;
    fake_device(&a, "Dev A", "1.0");
    fake_device(&b, "Dev B", "1.0");
    sparcl_tuning_problem p100, p200, other;
    fake_problem(&p100, 100);
    fake_problem(&p200, 200);
    fake_problem(&other, 100);
    snprintf(other.kernel, sizeof other.kernel, "attn_bwd");
    sparcl_tuning_result r;
    /* interleaved writes: the walk groups them */
    ok_result(&r, 8, 3.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &a, &p200, &r), SPARCL_OK);
    ok_result(&r, 16, 2.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &a, &p100, &r), SPARCL_OK);
    ok_result(&r, 4, 1.0);
    r.status = SPARCL_TUNING_WRONG;
    snprintf(r.message, sizeof r.message, "off");
    cr_assert_eq(sparcl_tuning_db_record(db, &a, &p200, &r), SPARCL_OK);
    ok_result(&r, 32, 5.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &b, &p100, &r), SPARCL_OK);
    ok_result(&r, 8, 7.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &a, &other, &r), SPARCL_OK);
    ok_result(&r, 2, 4.0);
    cr_assert_eq(sparcl_tuning_db_record(db, &a, &p100, &r), SPARCL_OK);

    walked w = {0};
    cr_assert_eq(sparcl_tuning_db_each_row(db, "attn_fwd", on_walked, &w), SPARCL_OK);
    cr_assert_eq(w.n, 5);
    cr_assert_str_eq(w.what[0], "Dev A attn_fwd q100 bm16 ok 2.00 0");
    cr_assert_str_eq(w.what[1], "Dev A attn_fwd q100 bm2 ok 4.00 0");
    cr_assert_str_eq(w.what[2], "Dev A attn_fwd q200 bm8 ok 3.00 0");
    cr_assert_str_eq(w.what[3], "Dev A attn_fwd q200 bm4 wrong 0.00 0");
    cr_assert_str_eq(w.what[4], "Dev B attn_fwd q100 bm32 ok 5.00 0");

    walked all = {0};
    cr_assert_eq(sparcl_tuning_db_each_row(db, NULL, on_walked, &all), SPARCL_OK);
    cr_assert_eq(all.n, 6);
    cr_assert_str_eq(all.what[0], "Dev A attn_bwd q100 bm8 ok 7.00 0");

    walked some = {0, 2, {{0}}};
    cr_assert_eq(sparcl_tuning_db_each_row(db, NULL, on_walked, &some), SPARCL_OK);
    cr_assert_eq(some.n, 2);

    walked none = {0};
    cr_assert_eq(sparcl_tuning_db_each_row(db, "attn_nope", on_walked, &none), SPARCL_OK);
    cr_assert_eq(none.n, 0);
    cr_assert_eq(sparcl_tuning_db_each_row(db, NULL, NULL, &none), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_tuning_db_each_row(NULL, NULL, on_walked, &none),
                 SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_tuning_db_free(db);
}
