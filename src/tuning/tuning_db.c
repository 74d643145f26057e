/*
 * tuning_db.c -- the tuning database: opening and validating the SQLite
 * file, applying the embedded db/schema.sql, recording and finding
 * evaluations, the runtime's walk over the best rows, and CSV/SQL export and
 * import.  Every SQL statement of sparcl is in this file.
 *
 * Rows are written only through the evaluation_flat view (its INSTEAD OF
 * trigger files device, kernel and problem rows), so recording, importing a
 * CSV and loading a shipped SQL file take one road.  Each write runs in its
 * own BEGIN IMMEDIATE transaction: it takes the write lock before reading,
 * so two tuners sharing a WAL database wait for each other (busy timeout)
 * instead of failing on a stale snapshot.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "kernels/params.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/text_file.h"
#include "tuning/tuning.h"
#include "tuning/tuning_db.h"

typedef struct sparcl__embedded_file {
    const char *name;
    const char *text;
} sparcl__embedded_file;

extern const sparcl__embedded_file sparcl__embedded_schema[];
extern const int sparcl__embedded_schema_count;

struct sparcl_tuning_db {
    sqlite3 *db;
    sparcl_ctx *ctx; /* receives messages; may be NULL */
    char path[1024];
};

/* The columns of evaluation_flat in order: the CSV header and the SQL
 * export.  KEY_COLUMNS of them identify device, kernel version and problem.
 * `text` columns are quoted in CSV so that "" and NULL stay distinct. */
static const struct {
    const char *name;
    int text;
} columns[] = {
    {"platform", 1},  {"vendor", 1},    {"device", 1},        {"driver", 1},
    {"version", 1},   {"type", 1},      {"compute_units", 0}, {"global_mem", 0},
    {"local_mem", 0}, {"max_alloc", 0}, {"kernel", 1},        {"kernel_hash", 1},
    {"dtype", 1},     {"batch", 0},     {"q_heads", 0},       {"kv_heads", 0},
    {"q_len", 0},     {"kv_len", 0},    {"head_dim", 0},      {"causal", 0},
    {"pattern", 1},   {"block", 0},     {"density", 0},       {"params", 1},
    {"status", 1},    {"median_ms", 0}, {"min_ms", 0},        {"max_ms", 0},
    {"runs", 0},      {"max_err", 0},   {"message", 1},       {"created", 1},
    {"rounds", 0},    {"round_ms", 0},  {"round_lo_ms", 0},   {"round_hi_ms", 0},
    {"cpu_ms", 0},    {"speedup", 0},   {"speedup_lo", 0},    {"speedup_hi", 0},
    {"chosen", 0},
};
#define N_COLUMNS ((int)(sizeof columns / sizeof columns[0]))
#define KEY_COLUMNS 23
/* sparcl_tuning_db_record() writes the key, params and the search's
 * statistics (up to `message`); the rest have defaults. */
#define RECORD_COLUMNS 31

#define KEY_WHERE                                                                                  \
    "platform = ?1 AND vendor = ?2 AND device = ?3 AND driver = ?4 AND version = ?5 AND type = "   \
    "?6 AND compute_units = ?7 AND global_mem = ?8 AND local_mem = ?9 AND max_alloc = ?10 AND "    \
    "kernel = ?11 AND kernel_hash = ?12 AND dtype = ?13 AND batch = ?14 AND q_heads = ?15 AND "    \
    "kv_heads = ?16 AND q_len = ?17 AND kv_len = ?18 AND head_dim = ?19 AND causal = ?20 AND "     \
    "pattern = ?21 AND block = ?22 AND density = ?23"

static sparcl_status set_msg(char *msg, size_t size, const char *fmt, ...) SPARCL_PRINTF(3, 4);

static sparcl_status set_msg(char *msg, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
    return SPARCL_ERR_DATABASE;
}

/* Public calls report through the handle's context. */
static sparcl_status fail(sparcl_tuning_db *db, const char *fmt, ...) SPARCL_PRINTF(2, 3);
static sparcl_status fail(sparcl_tuning_db *db, const char *fmt, ...)
{
    char msg[SPARCL_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sparcl__fail(db ? db->ctx : NULL, SPARCL_ERR_DATABASE, "tuning database %s: %s",
                        db ? db->path : "?", msg);
}

static const char *why(sqlite3 *db)
{
    return db ? sqlite3_errmsg(db) : "out of memory";
}

/* mkdir -p of the folder that holds `path`. */
static int make_parent(const char *path)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    return sparcl__make_dirs(dir);
}

static int pragma_int(sqlite3 *db, const char *sql, int *value)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *value = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Reads the header facts of the file in one transaction, so that a file
 * another process is creating is seen either empty or complete. */
static int read_header(sqlite3 *db, int *app, int *version, int *tables)
{
    int rc = pragma_int(db, "PRAGMA application_id", app);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "PRAGMA user_version", version);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", tables);
    return rc;
}

/* Version 1 to 2, inside the writer's transaction: the new columns of
 * evaluation; CPU devices lose their memory sizes, and devices that then
 * coincide become one (of two evaluations of the same parameters the one
 * already on the surviving device is kept); then everything after the
 * "-- @version-2" line of schema.sql (views, trigger, claims) is recreated. */
static int migrate_v1(sqlite3 *db, const char *schema)
{
    static const char sql[] =
        "ALTER TABLE evaluation ADD COLUMN rounds INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE evaluation ADD COLUMN round_ms REAL;"
        "ALTER TABLE evaluation ADD COLUMN round_lo_ms REAL;"
        "ALTER TABLE evaluation ADD COLUMN round_hi_ms REAL;"
        "ALTER TABLE evaluation ADD COLUMN cpu_ms REAL;"
        "ALTER TABLE evaluation ADD COLUMN speedup REAL;"
        "ALTER TABLE evaluation ADD COLUMN speedup_lo REAL;"
        "ALTER TABLE evaluation ADD COLUMN speedup_hi REAL;"
        "ALTER TABLE evaluation ADD COLUMN chosen INTEGER NOT NULL DEFAULT 0;"
        "DROP TRIGGER IF EXISTS evaluation_flat_insert;"
        "DROP VIEW IF EXISTS best_flat; DROP VIEW IF EXISTS evaluation_flat;"
        "DROP VIEW IF EXISTS best;"
        "CREATE TEMP TABLE device_keep AS SELECT d.id AS id, (SELECT min(k.id) FROM device k "
        " WHERE k.platform = d.platform AND k.vendor = d.vendor AND k.name = d.name"
        "   AND k.driver = d.driver AND k.version = d.version AND k.type = d.type"
        "   AND k.compute_units = d.compute_units AND k.local_mem = d.local_mem) AS keep"
        " FROM device d WHERE d.type = 'CPU';"
        "DELETE FROM temp.device_keep WHERE keep = id;"
        "UPDATE OR IGNORE evaluation SET device_id = (SELECT keep FROM temp.device_keep"
        " WHERE id = evaluation.device_id) WHERE device_id IN (SELECT id FROM temp.device_keep);"
        "DELETE FROM evaluation WHERE device_id IN (SELECT id FROM temp.device_keep);"
        "DELETE FROM device WHERE id IN (SELECT id FROM temp.device_keep);"
        "DROP TABLE temp.device_keep;"
        "UPDATE device SET global_mem = 0, max_alloc = 0 WHERE type = 'CPU';";
    const char *tail = strstr(schema, "-- @version-2");
    if (!tail)
        return SQLITE_INTERNAL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, tail, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA user_version = 2", NULL, NULL, NULL);
    return rc;
}

/* Opens the header check in the right transaction: a writer takes the write
 * lock first (waiting for the busy timeout), so that of several processes
 * creating the same file at the same moment exactly one applies the schema
 * and the others then see it complete; a reader takes a read snapshot. */
static sparcl_status check_or_create(sqlite3 *db, int write, const char *path, int *app,
                                     int *version, char *msg, size_t size)
{
    const char *schema = NULL;
    for (int i = 0; i < sparcl__embedded_schema_count; ++i)
        if (strcmp(sparcl__embedded_schema[i].name, "schema.sql") == 0)
            schema = sparcl__embedded_schema[i].text;
    if (!schema)
        return set_msg(msg, size, "schema.sql is not embedded in the library");
    int tables = 0;
    int rc = sqlite3_exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = read_header(db, app, version, &tables);
    if (rc == SQLITE_OK && *app == 0 && *version == 0 && tables == 0) {
        if (!write) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return set_msg(msg, size, "%s is empty, not a sparcl tuning database", path);
        }
        rc = sqlite3_exec(db, schema, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = read_header(db, app, version, &tables);
    }
    if (rc == SQLITE_OK && write && *app == SPARCL__DB_APPLICATION_ID && *version == 1) {
        rc = migrate_v1(db, schema);
        if (rc == SQLITE_OK)
            rc = read_header(db, app, version, &tables);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_msg(msg, size, "cannot %s %s: %s", write ? "prepare" : "read", path, why(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return SPARCL_ERR_DATABASE;
    }
    return SPARCL_OK;
}

/* Switches to WAL (a no-op once the file is in WAL mode).  The switch needs
 * an exclusive lock, for which SQLite does not call the busy handler, so
 * retry for up to busy_ms while another process holds the file. */
static int set_wal(sqlite3 *db, int busy_ms)
{
    for (int waited = 0;; waited += 10) {
        int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            return rc;
        if (waited >= busy_ms)
            return rc;
        sqlite3_sleep(10);
    }
}

sparcl_status sparcl__tuning_db_open(const char *path, int flags, int busy_ms,
                                     sparcl_tuning_db **out, char *msg, size_t size)
{
    *out = NULL;
    int write = flags & SPARCL_TUNING_DB_WRITE;
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (!exists && !write)
        return set_msg(msg, size, "%s does not exist", path);
    /* Permission bits are honoured even for root, so "chmod a-w" always
     * protects a database from tuners. */
    if (exists && write && !(sb.st_mode & 0222))
        return set_msg(msg, size, "%s is read-only (mode %03o)", path,
                       (unsigned)(sb.st_mode & 0777));
    if (!exists && make_parent(path) != 0)
        return set_msg(msg, size, "cannot create the folder of %s: %s", path, strerror(errno));
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, write ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        set_msg(msg, size, "cannot open %s: %s", path, why(db));
        sqlite3_close(db);
        return SPARCL_ERR_DATABASE;
    }
    sqlite3_busy_timeout(db, busy_ms);
    int app = 0, version = 0;
    if (check_or_create(db, write, path, &app, &version, msg, size) != SPARCL_OK)
        goto fail;
    if (app != SPARCL__DB_APPLICATION_ID) {
        set_msg(msg, size, "%s is not a sparcl tuning database (application_id %d)", path, app);
        goto fail;
    }
    if (version != SPARCL__DB_SCHEMA_VERSION) {
        set_msg(msg, size, "%s has schema version %d; this library reads version %d%s", path,
                version, SPARCL__DB_SCHEMA_VERSION,
                version == 1 ? " (opening it for writing, e.g. with sparcl-tune, migrates it)"
                             : "");
        goto fail;
    }
    if (write && set_wal(db, busy_ms) != SQLITE_OK) {
        set_msg(msg, size, "cannot switch %s to WAL: %s", path, why(db));
        goto fail;
    }
    sparcl_tuning_db *h = calloc(1, sizeof *h);
    if (!h) {
        sqlite3_close(db);
        snprintf(msg, size, "cannot allocate a database handle");
        return SPARCL_ERR_OUT_OF_MEMORY;
    }
    h->db = db;
    snprintf(h->path, sizeof h->path, "%s", path);
    *out = h;
    return SPARCL_OK;
fail:
    sqlite3_close(db);
    return SPARCL_ERR_DATABASE;
}

void sparcl__tuning_db_set_ctx(sparcl_tuning_db *db, sparcl_ctx *ctx)
{
    if (db)
        db->ctx = ctx;
}

SPARCL_API sparcl_status sparcl_tuning_db_init(sparcl_ctx *ctx, sparcl_tuning_db **out,
                                               const char *path, int flags)
{
    if (!out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!path || !*path)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "database path is empty");
    if (strlen(path) >= sizeof((sparcl_tuning_db *)0)->path)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "database path is too long");
    if (flags & ~SPARCL_TUNING_DB_WRITE)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "unknown flags 0x%x", flags);
    char msg[SPARCL_MSG_MAX];
    sparcl_status st = sparcl__tuning_db_open(
        path, flags,
        flags & SPARCL_TUNING_DB_WRITE ? SPARCL__DB_WRITE_BUSY_MS : SPARCL__DB_READ_BUSY_MS, out,
        msg, sizeof msg);
    if (st != SPARCL_OK)
        return sparcl__fail(ctx, st, "tuning database: %s", msg);
    (*out)->ctx = ctx;
    return SPARCL_OK;
}

SPARCL_API void sparcl_tuning_db_free(sparcl_tuning_db *db)
{
    if (!db)
        return;
    sqlite3_close(db->db);
    free(db);
}

/* {"A":1,"B":2}: sorted keys, no spaces, the form the UNIQUE key compares. */
static void params_json(const sparcl_params *p, char *buf, size_t size)
{
    char list[SPARCL_PARAMS_MAX * (SPARCL_PARAM_NAME_MAX + 16)];
    sparcl_params_format(p, list, sizeof list);
    size_t used = (size_t)snprintf(buf, size, "{");
    char *save = NULL;
    int first = 1;
    for (char *tok = strtok_r(list, " ", &save); tok && used < size;
         tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        used +=
            (size_t)snprintf(buf + used, size - used, "%s\"%s\":%s", first ? "" : ",", tok, eq + 1);
        first = 0;
    }
    if (used < size)
        snprintf(buf + used, size - used, "}");
}

/* Parses a JSON object of integers with SQLite's own JSON functions. */
static int params_from_json(sqlite3 *db, const char *json, sparcl_params *out)
{
    sparcl_params_clear(out);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT key, value FROM json_each(?1) WHERE type = 'integer'", -1,
                           &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, json, -1, SQLITE_TRANSIENT);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (sparcl_params_set(out, (const char *)sqlite3_column_text(st, 0),
                              (int32_t)sqlite3_column_int(st, 1)) != SPARCL_OK) {
            rc = SQLITE_ERROR;
            break;
        }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

double sparcl__tuning_db_key_density(double d)
{
    return (double)(long long)(d * 1e6 + 0.5) / 1e6;
}

static void bind_key(sqlite3_stmt *st, const sparcl_device_info *device,
                     const sparcl_tuning_problem *p)
{
    sparcl_device_info id = *device;
    sparcl__device_identity(&id);
    const sparcl_device_info *d = &id;
    const char *texts[6] = {d->platform, d->vendor, d->name, d->driver, d->version, d->type};
    for (int i = 0; i < 6; ++i)
        sqlite3_bind_text(st, i + 1, texts[i], -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 7, d->compute_units);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)d->global_mem);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)d->local_mem);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)d->max_alloc);
    sqlite3_bind_text(st, 11, p->kernel, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 12, p->kernel_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 13, p->dtype, -1, SQLITE_TRANSIENT);
    const int ints[7] = {p->batch,  p->q_heads,  p->kv_heads,      p->q_len,
                         p->kv_len, p->head_dim, p->causal ? 1 : 0};
    for (int i = 0; i < 7; ++i)
        sqlite3_bind_int(st, 14 + i, ints[i]);
    sqlite3_bind_text(st, 21, p->pattern, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 22, p->block);
    sqlite3_bind_double(st, 23, sparcl__tuning_db_key_density(p->density));
}

static sparcl_status check_handle(sparcl_tuning_db *db, const void *a, const void *b, const void *c)
{
    if (!db)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "database handle is NULL");
    if (!a || !b || !c)
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT, "an argument is NULL");
    return SPARCL_OK;
}

/* The text fields of a row key must end within their arrays: they are
 * bound as C strings. */
static sparcl_status check_key(sparcl_tuning_db *db, const sparcl_device_info *d,
                               const sparcl_tuning_problem *p)
{
    const struct {
        const char *text;
        size_t cap;
        const char *name;
    } fields[] = {{d->platform, sizeof d->platform, "device platform"},
                  {d->vendor, sizeof d->vendor, "device vendor"},
                  {d->name, sizeof d->name, "device name"},
                  {d->driver, sizeof d->driver, "device driver"},
                  {d->version, sizeof d->version, "device version"},
                  {d->type, sizeof d->type, "device type"},
                  {p->kernel, sizeof p->kernel, "problem kernel"},
                  {p->kernel_hash, sizeof p->kernel_hash, "problem kernel_hash"},
                  {p->dtype, sizeof p->dtype, "problem dtype"},
                  {p->pattern, sizeof p->pattern, "problem pattern"}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; ++i)
        if (strnlen(fields[i].text, fields[i].cap) == fields[i].cap)
            return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s is not NUL-terminated within its %zu bytes", fields[i].name,
                                fields[i].cap);
    return SPARCL_OK;
}

SPARCL_API const char *sparcl_tuning_status_string(sparcl_tuning_status s)
{
    static const char *names[] = {"ok",    "invalid", "build_error", "launch_error",
                                  "wrong", "timeout", "crash"};
    return (int)s >= 0 && (int)s < (int)(sizeof names / sizeof names[0]) ? names[s] : "unknown";
}

static sparcl_tuning_status status_of(const char *s)
{
    for (int i = 0; i <= SPARCL_TUNING_CRASH; ++i)
        if (s && strcmp(s, sparcl_tuning_status_string((sparcl_tuning_status)i)) == 0)
            return (sparcl_tuning_status)i;
    return SPARCL_TUNING_CRASH;
}

/* A row the runtime could misread is refused: an unknown status, negative
 * runs, and for an ok row untimed runs, times that are not finite and
 * ordered, or a verification error that is not a finite number. */
static sparcl_status check_result(sparcl_tuning_db *db, const sparcl_tuning_result *r)
{
    if ((int)r->status < SPARCL_TUNING_OK || (int)r->status > SPARCL_TUNING_CRASH)
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "result status %d is not a sparcl_tuning_status (0 ok .. 6 crash)",
                            (int)r->status);
    if (r->runs < 0)
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT, "result runs %d is negative",
                            r->runs);
    if (r->status != SPARCL_TUNING_OK)
        return SPARCL_OK; /* times are not stored; max_err may be NaN (a NaN output) */
    if (r->runs < 1)
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "result runs %d: an ok evaluation is timed at least once", r->runs);
    const double t[3] = {r->min_ms, r->median_ms, r->max_ms};
    static const char *names[3] = {"min_ms", "median_ms", "max_ms"};
    for (int i = 0; i < 3; ++i)
        if (!isfinite(t[i]) || t[i] < 0)
            return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "result %s %g is not a finite time >= 0 ms", names[i], t[i]);
    if (!(t[0] <= t[1] && t[1] <= t[2]))
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "result times are not ordered: min_ms %g, median_ms %g, max_ms %g",
                            t[0], t[1], t[2]);
    if (!isfinite(r->max_err) || r->max_err < 0)
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "result max_err %g: an ok evaluation was verified (finite, >= 0)",
                            r->max_err);
    return SPARCL_OK;
}

/* Ends a write transaction: commits if rc is SQLITE_OK, else (or if the
 * commit fails) rolls back and fails with "cannot <what>". */
static sparcl_status finish_write(sparcl_tuning_db *db, int rc, const char *what)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return SPARCL_OK;
    sparcl_status st = fail(db, "cannot %s: %s", what, why(db->db));
    sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

SPARCL_API sparcl_status sparcl_tuning_db_record(sparcl_tuning_db *db,
                                                 const sparcl_device_info *device,
                                                 const sparcl_tuning_problem *problem,
                                                 const sparcl_tuning_result *r)
{
    sparcl_status st = check_handle(db, device, problem, r);
    if (st == SPARCL_OK)
        st = check_key(db, device, problem);
    if (st == SPARCL_OK)
        st = sparcl__params_valid(db->ctx, &r->params, "result params");
    if (st == SPARCL_OK && strnlen(r->message, sizeof r->message) == sizeof r->message)
        st = sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                          "result message is not NUL-terminated within its %zu bytes",
                          sizeof r->message);
    if (st == SPARCL_OK)
        st = check_result(db, r);
    if (st != SPARCL_OK)
        return st;
    char sql[2048];
    size_t used = (size_t)snprintf(sql, sizeof sql, "INSERT INTO evaluation_flat (");
    for (int i = 0; i < RECORD_COLUMNS; ++i)
        used +=
            (size_t)snprintf(sql + used, sizeof sql - used, "%s%s", i ? ", " : "", columns[i].name);
    used += (size_t)snprintf(sql + used, sizeof sql - used, ") VALUES (");
    for (int i = 0; i < RECORD_COLUMNS; ++i)
        used += (size_t)snprintf(sql + used, sizeof sql - used, "%s?%d", i ? ", " : "", i + 1);
    snprintf(sql + used, sizeof sql - used, ")");

    char json[SPARCL_PARAMS_MAX * (SPARCL_PARAM_NAME_MAX + 16)];
    params_json(&r->params, json, sizeof json);
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return fail(db, "cannot start a write: %s", why(db->db));
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        bind_key(s, device, problem);
        sqlite3_bind_text(s, 24, json, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 25, sparcl_tuning_status_string(r->status), -1, SQLITE_STATIC);
        if (r->status == SPARCL_TUNING_OK) {
            sqlite3_bind_double(s, 26, r->median_ms);
            sqlite3_bind_double(s, 27, r->min_ms);
            sqlite3_bind_double(s, 28, r->max_ms);
        }
        sqlite3_bind_int(s, 29, r->runs);
        if (r->max_err >= 0)
            sqlite3_bind_double(s, 30, r->max_err);
        sqlite3_bind_text(s, 31, r->message, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(s);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    return finish_write(db, rc, "record an evaluation");
}

/* Reads the RESULT_COLUMNS of the current row; SQLITE_ROW, or
 * SQLITE_CORRUPT if its params do not parse. */
static int read_result_at(sqlite3 *db, sqlite3_stmt *s, int c, sparcl_tuning_result *out)
{
    memset(out, 0, sizeof *out);
    int rc = SQLITE_ROW;
    if (params_from_json(db, (const char *)sqlite3_column_text(s, c), &out->params))
        rc = SQLITE_CORRUPT;
    out->status = status_of((const char *)sqlite3_column_text(s, c + 1));
    out->median_ms = sqlite3_column_double(s, c + 2);
    out->min_ms = sqlite3_column_double(s, c + 3);
    out->max_ms = sqlite3_column_double(s, c + 4);
    out->runs = sqlite3_column_int(s, c + 5);
    out->max_err =
        sqlite3_column_type(s, c + 6) == SQLITE_NULL ? -1.0 : sqlite3_column_double(s, c + 6);
    const unsigned char *m = sqlite3_column_text(s, c + 7);
    snprintf(out->message, sizeof out->message, "%s", m ? (const char *)m : "");
    return rc;
}

static int read_result(sqlite3 *db, sqlite3_stmt *s, sparcl_tuning_result *out)
{
    return read_result_at(db, s, 0, out);
}

/* Runs a query keyed like KEY_WHERE (plus ?24 = params JSON when `params`)
 * and reads the first row's result columns into *out. */
static sparcl_status query_result(sparcl_tuning_db *db, const char *sql,
                                  const sparcl_device_info *device,
                                  const sparcl_tuning_problem *problem, const sparcl_params *params,
                                  sparcl_tuning_result *out, int *found)
{
    *found = 0;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        bind_key(s, device, problem);
        if (params) {
            char json[SPARCL_PARAMS_MAX * (SPARCL_PARAM_NAME_MAX + 16)];
            params_json(params, json, sizeof json);
            sqlite3_bind_text(s, 24, json, -1, SQLITE_TRANSIENT);
        }
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            rc = read_result(db->db, s, out);
            *found = rc == SQLITE_ROW;
            rc = *found ? SQLITE_DONE : rc;
        }
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return fail(db, "cannot read evaluations: %s",
                    rc == SQLITE_CORRUPT ? "malformed params" : why(db->db));
    return SPARCL_OK;
}

#define RESULT_COLUMNS "params, status, median_ms, min_ms, max_ms, runs, max_err, message"

/* The evaluation of exactly `params`, or with params NULL the best OK one. */
static sparcl_status find_or_best(sparcl_tuning_db *db, const sparcl_device_info *device,
                                  const sparcl_tuning_problem *problem, const sparcl_params *params,
                                  sparcl_tuning_result *out, int *found)
{
    sparcl_status st = check_handle(db, device, problem, out);
    if (st == SPARCL_OK)
        st = check_handle(db, found, found, found);
    if (st == SPARCL_OK)
        st = check_key(db, device, problem);
    if (st == SPARCL_OK && params)
        st = sparcl__params_valid(db->ctx, params, "params");
    if (st != SPARCL_OK)
        return st;
    static const char find_sql[] =
        "SELECT " RESULT_COLUMNS " FROM evaluation_flat WHERE " KEY_WHERE " AND params = json(?24)";
    static const char best_sql[] = "SELECT " RESULT_COLUMNS " FROM evaluation_flat WHERE " KEY_WHERE
                                   " AND status = 'ok' ORDER BY chosen DESC, median_ms LIMIT 1";
    return query_result(db, params ? find_sql : best_sql, device, problem, params, out, found);
}

SPARCL_API sparcl_status sparcl_tuning_db_find(sparcl_tuning_db *db,
                                               const sparcl_device_info *device,
                                               const sparcl_tuning_problem *problem,
                                               const sparcl_params *params,
                                               sparcl_tuning_result *out, int *found)
{
    if (!params)
        return sparcl__fail(db ? db->ctx : NULL, SPARCL_ERR_INVALID_ARGUMENT, "params is NULL");
    return find_or_best(db, device, problem, params, out, found);
}

SPARCL_API sparcl_status sparcl_tuning_db_best(sparcl_tuning_db *db,
                                               const sparcl_device_info *device,
                                               const sparcl_tuning_problem *problem,
                                               sparcl_tuning_result *out, int *found)
{
    return find_or_best(db, device, problem, NULL, out, found);
}

SPARCL_API sparcl_status sparcl_tuning_db_count(sparcl_tuning_db *db,
                                                const sparcl_device_info *device,
                                                const sparcl_tuning_problem *problem,
                                                int64_t *count)
{
    sparcl_status st = check_handle(db, device, problem, count);
    if (st == SPARCL_OK)
        st = check_key(db, device, problem);
    if (st != SPARCL_OK)
        return st;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db, "SELECT count(*) FROM evaluation_flat WHERE " KEY_WHERE, -1,
                                &s, NULL);
    if (rc == SQLITE_OK) {
        bind_key(s, device, problem);
        if ((rc = sqlite3_step(s)) == SQLITE_ROW)
            *count = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW)
        return fail(db, "cannot count evaluations: %s", why(db->db));
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_tuning_db_fastest(sparcl_tuning_db *db,
                                                  const sparcl_device_info *device,
                                                  const sparcl_tuning_problem *problem, int n,
                                                  sparcl_tuning_result *out, int *count)
{
    sparcl_status st = check_handle(db, device, problem, count);
    if (st == SPARCL_OK)
        st = check_handle(db, out, out, out);
    if (st != SPARCL_OK)
        return st;
    *count = 0;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db,
                                "SELECT " RESULT_COLUMNS " FROM evaluation_flat WHERE " KEY_WHERE
                                " AND status = 'ok' ORDER BY median_ms LIMIT ?24",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        bind_key(s, device, problem);
        sqlite3_bind_int(s, 24, n > 0 ? n : 0);
    }
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        rc = read_result(db->db, s, &out[*count]);
        if (rc == SQLITE_ROW) {
            ++*count;
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return fail(db, "cannot read evaluations: %s",
                    rc == SQLITE_CORRUPT ? "malformed params" : why(db->db));
    return SPARCL_OK;
}

/* Runs one statement keyed like KEY_WHERE to completion; 0 or -1. */
static int keyed_exec(sparcl_tuning_db *db, const char *sql, const sparcl_device_info *device,
                      const sparcl_tuning_problem *problem)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        bind_key(s, device, problem);
        rc = sqlite3_step(s);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_or_null(sqlite3_stmt *s, int i, double v)
{
    if (v >= 0)
        sqlite3_bind_double(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

SPARCL_API sparcl_status sparcl_tuning_db_decide(sparcl_tuning_db *db,
                                                 const sparcl_device_info *device,
                                                 const sparcl_tuning_problem *problem,
                                                 const sparcl_tuning_finalist *finalists, int n,
                                                 int chosen)
{
    sparcl_status st = check_handle(db, device, problem, finalists);
    if (st != SPARCL_OK)
        return st;
    if (n < 1 || chosen < 0 || chosen >= n)
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "%d finalists, chosen %d: need n >= 1 and 0 <= chosen < n", n, chosen);
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return fail(db, "cannot start a write: %s", why(db->db));
    const char *problem_msg = NULL;
    if (keyed_exec(db,
                   "UPDATE evaluation SET chosen = 0 WHERE chosen = 1 AND id IN (SELECT "
                   "evaluation_id FROM evaluation_flat WHERE " KEY_WHERE ")",
                   device, problem) < 0)
        problem_msg = why(db->db);
    for (int i = 0; i < n && !problem_msg; ++i) {
        const sparcl_tuning_finalist *f = &finalists[i];
        char json[SPARCL_PARAMS_MAX * (SPARCL_PARAM_NAME_MAX + 16)];
        params_json(&f->params, json, sizeof json);
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v2(
            db->db,
            "UPDATE evaluation SET rounds = ?25, round_ms = ?26, round_lo_ms = ?27, "
            "round_hi_ms = ?28, cpu_ms = ?29, speedup = ?30, speedup_lo = ?31, speedup_hi = ?32, "
            "chosen = ?33 WHERE id = (SELECT evaluation_id FROM evaluation_flat WHERE " KEY_WHERE
            " AND params = json(?24) AND status = 'ok')",
            -1, &s, NULL);
        if (rc == SQLITE_OK) {
            bind_key(s, device, problem);
            sqlite3_bind_text(s, 24, json, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(s, 25, f->rounds);
            const double v[7] = {f->round_ms, f->round_lo_ms, f->round_hi_ms, f->cpu_ms,
                                 f->speedup,  f->speedup_lo,  f->speedup_hi};
            for (int k = 0; k < 7; ++k)
                bind_or_null(s, 26 + k, v[k]);
            sqlite3_bind_int(s, 33, i == chosen);
            rc = sqlite3_step(s);
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE)
            problem_msg = why(db->db);
        else if (sqlite3_changes(db->db) != 1)
            problem_msg = "a finalist is not a recorded OK evaluation of this device and problem";
    }
    if (!problem_msg && sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        problem_msg = why(db->db);
    if (problem_msg) {
        st = fail(db, "cannot store the finalists: %s", problem_msg);
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return st;
    }
    return SPARCL_OK;
}

/* ---- claims ---------------------------------------------------------------- */

/* Whether a claim's owner may still be measuring: its lease runs, and it is
 * not a process of this host that has ended. */
static int owner_alive(const char *host, sqlite3_int64 pid, double expires, const char *here)
{
    if (expires <= (double)time(NULL))
        return 0;
    if (strcmp(host, here) != 0)
        return 1;
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

SPARCL_API sparcl_status sparcl_tuning_db_claim(sparcl_tuning_db *db,
                                                const sparcl_device_info *device,
                                                const sparcl_tuning_problem *problem,
                                                const sparcl_params *params, double lease_s,
                                                sparcl_tuning_claim *state)
{
    sparcl_status st = check_handle(db, device, problem, params);
    if (st == SPARCL_OK)
        st = check_handle(db, state, state, state);
    if (st != SPARCL_OK)
        return st;
    if (!(lease_s > 0))
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT, "lease %g s is not positive",
                            lease_s);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    const sqlite3_int64 me = (sqlite3_int64)getpid();
    char json[SPARCL_PARAMS_MAX * (SPARCL_PARAM_NAME_MAX + 16)];
    params_json(params, json, sizeof json);
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return fail(db, "cannot start a write: %s", why(db->db));
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(
        db->db, "SELECT 1 FROM evaluation_flat WHERE " KEY_WHERE " AND params = json(?24)", -1, &s,
        NULL);
    int stored = 0;
    if (rc == SQLITE_OK) {
        bind_key(s, device, problem);
        sqlite3_bind_text(s, 24, json, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(s);
        stored = rc == SQLITE_ROW;
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    s = NULL;
    int busy = 0;
    if (rc == SQLITE_OK && !stored) {
        rc = sqlite3_prepare_v2(db->db,
                                "SELECT host, pid, expires FROM claim WHERE " KEY_WHERE
                                " AND params = json(?24)",
                                -1, &s, NULL);
        if (rc == SQLITE_OK) {
            bind_key(s, device, problem);
            sqlite3_bind_text(s, 24, json, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(s);
            if (rc == SQLITE_ROW) {
                const char *h = (const char *)sqlite3_column_text(s, 0);
                sqlite3_int64 pid = sqlite3_column_int64(s, 1);
                busy = !(pid == me && strcmp(h, host) == 0) &&
                       owner_alive(h, pid, sqlite3_column_double(s, 2), host);
            }
            rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        sqlite3_finalize(s);
        s = NULL;
    }
    if (rc == SQLITE_OK && !stored && !busy) {
        char sql[2048];
        size_t used = (size_t)snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO claim (");
        for (int i = 0; i < KEY_COLUMNS; ++i)
            used += (size_t)snprintf(sql + used, sizeof sql - used, "%s, ", columns[i].name);
        used +=
            (size_t)snprintf(sql + used, sizeof sql - used, "params, host, pid, expires) VALUES (");
        for (int i = 0; i < KEY_COLUMNS; ++i)
            used += (size_t)snprintf(sql + used, sizeof sql - used, "?%d, ", i + 1);
        snprintf(sql + used, sizeof sql - used, "json(?24), ?25, ?26, ?27)");
        rc = sqlite3_prepare_v2(db->db, sql, -1, &s, NULL);
        if (rc == SQLITE_OK) {
            bind_key(s, device, problem);
            sqlite3_bind_text(s, 24, json, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(s, 25, host, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(s, 26, me);
            sqlite3_bind_double(s, 27, (double)time(NULL) + lease_s);
            rc = sqlite3_step(s);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        sqlite3_finalize(s);
    }
    if ((st = finish_write(db, rc, "claim a candidate")) != SPARCL_OK)
        return st;
    *state = stored ? SPARCL_TUNING_CLAIM_STORED
             : busy ? SPARCL_TUNING_CLAIM_BUSY
                    : SPARCL_TUNING_CLAIM_TAKEN;
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_tuning_db_release(sparcl_tuning_db *db,
                                                  const sparcl_device_info *device,
                                                  const sparcl_tuning_problem *problem,
                                                  const sparcl_params *params)
{
    sparcl_status st = check_handle(db, device, problem, params);
    if (st != SPARCL_OK)
        return st;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db,
                                "DELETE FROM claim WHERE " KEY_WHERE
                                " AND params = json(?24) AND host = ?25 AND pid = ?26",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        char json[SPARCL_PARAMS_MAX * (SPARCL_PARAM_NAME_MAX + 16)];
        params_json(params, json, sizeof json);
        bind_key(s, device, problem);
        sqlite3_bind_text(s, 24, json, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 25, host, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 26, (sqlite3_int64)getpid());
        rc = sqlite3_step(s);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return fail(db, "cannot release a claim: %s", why(db->db));
    return SPARCL_OK;
}

/* The KEY_COLUMNS of evaluation_flat (and best_flat), in their order. */
#define KEY_SELECT                                                                                 \
    "platform, vendor, device, driver, version, type, compute_units, global_mem, local_mem, "      \
    "max_alloc, kernel, kernel_hash, dtype, batch, q_heads, kv_heads, q_len, kv_len, head_dim, "   \
    "causal, pattern, block, density"

static void column_text(sqlite3_stmt *s, int i, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    snprintf(buf, size, "%s", t ? (const char *)t : "");
}

/* Reads the KEY_SELECT columns of the current row. */
static void read_key(sqlite3_stmt *s, sparcl_device_info *d, sparcl_tuning_problem *p)
{
    memset(d, 0, sizeof *d);
    memset(p, 0, sizeof *p);
    char *texts[6] = {d->platform, d->vendor, d->name, d->driver, d->version, d->type};
    const size_t sizes[6] = {sizeof d->platform, sizeof d->vendor,  sizeof d->name,
                             sizeof d->driver,   sizeof d->version, sizeof d->type};
    for (int i = 0; i < 6; ++i)
        column_text(s, i, texts[i], sizes[i]);
    d->compute_units = (uint32_t)sqlite3_column_int64(s, 6);
    d->global_mem = (uint64_t)sqlite3_column_int64(s, 7);
    d->local_mem = (uint64_t)sqlite3_column_int64(s, 8);
    d->max_alloc = (uint64_t)sqlite3_column_int64(s, 9);
    sparcl__device_identity(d);
    column_text(s, 10, p->kernel, sizeof p->kernel);
    column_text(s, 11, p->kernel_hash, sizeof p->kernel_hash);
    column_text(s, 12, p->dtype, sizeof p->dtype);
    int *ints[7] = {&p->batch,  &p->q_heads,  &p->kv_heads, &p->q_len,
                    &p->kv_len, &p->head_dim, &p->causal};
    for (int i = 0; i < 7; ++i)
        *ints[i] = sqlite3_column_int(s, 13 + i);
    column_text(s, 20, p->pattern, sizeof p->pattern);
    p->block = sqlite3_column_int(s, 21);
    p->density = sqlite3_column_double(s, 22);
}

sparcl_status sparcl__tuning_db_each_best(sparcl_tuning_db *db, const char *kernel,
                                          const char *hash, const char *dtype,
                                          sparcl__tuning_row_fn fn, void *user, char *msg,
                                          size_t size)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db,
                                "SELECT " KEY_SELECT ", params, median_ms FROM best_flat "
                                "WHERE kernel = ?1 AND kernel_hash = ?2 AND dtype = ?3",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(s, 1, kernel, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, hash, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, dtype, -1, SQLITE_TRANSIENT);
    }
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        sparcl_device_info d;
        sparcl_tuning_problem p;
        sparcl_params params;
        read_key(s, &d, &p);
        /* A row whose params do not parse is skipped: other rows may serve. */
        if (params_from_json(db->db, (const char *)sqlite3_column_text(s, KEY_COLUMNS), &params) ==
            0)
            fn(user, &d, &p, &params, sqlite3_column_double(s, KEY_COLUMNS + 1));
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return set_msg(msg, size, "cannot read %s: %s", db->path, why(db->db));
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_tuning_db_each_row(sparcl_tuning_db *db, const char *kernel,
                                                   sparcl_tuning_eval_fn fn, void *user)
{
    if (!db)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "database handle is NULL");
    if (!fn)
        return sparcl__fail(db->ctx, SPARCL_ERR_INVALID_ARGUMENT, "fn is NULL");
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db,
                                "SELECT " KEY_SELECT ", " RESULT_COLUMNS " FROM evaluation_flat"
                                " WHERE ?1 IS NULL OR kernel = ?1"
                                " ORDER BY " KEY_SELECT ", evaluation_id",
                                -1, &s, NULL);
    if (rc == SQLITE_OK && kernel)
        sqlite3_bind_text(s, 1, kernel, -1, SQLITE_TRANSIENT);
    int stop = 0;
    while (rc == SQLITE_OK && !stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        sparcl_device_info d;
        sparcl_tuning_problem p;
        sparcl_tuning_result r;
        read_key(s, &d, &p);
        /* A row whose params this library cannot read is skipped. */
        if (read_result_at(db->db, s, KEY_COLUMNS, &r) == SQLITE_ROW)
            stop = fn(user, &d, &p, &r);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE && !(stop && rc == SQLITE_OK))
        return fail(db, "cannot read evaluations: %s", why(db->db));
    return SPARCL_OK;
}

/* ---- export and import -------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

#define ORDER_BY                                                                                   \
    " ORDER BY device, driver, kernel, kernel_hash, pattern, q_len, kv_len, head_dim, q_heads, "   \
    "density, params"

static void csv_field(FILE *f, sqlite3_stmt *s, int i)
{
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return;
    if (sqlite3_column_type(s, i) == SQLITE_FLOAT) { /* every bit survives a round trip */
        fprintf(f, "%.17g", sqlite3_column_double(s, i));
        return;
    }
    const char *t = (const char *)sqlite3_column_text(s, i);
    if (!columns[i].text) {
        fputs(t, f);
        return;
    }
    fputc('"', f);
    for (; *t; ++t) {
        if (*t == '"')
            fputc('"', f);
        fputc(*t, f);
    }
    fputc('"', f);
}

SPARCL_API sparcl_status sparcl_tuning_db_export(sparcl_tuning_db *db, const char *path)
{
    sparcl_status st = check_handle(db, path, path, path);
    if (st != SPARCL_OK)
        return st;
    int csv = ends_with(path, ".csv");
    char sql[4096];
    size_t used = (size_t)snprintf(sql, sizeof sql, "SELECT ");
    if (csv) {
        for (int i = 0; i < N_COLUMNS; ++i)
            used += (size_t)snprintf(sql + used, sizeof sql - used, "%s%s", i ? ", " : "",
                                     columns[i].name);
    } else {
        used += (size_t)snprintf(sql + used, sizeof sql - used, "'INSERT INTO evaluation_flat (");
        for (int i = 0; i < N_COLUMNS; ++i)
            used += (size_t)snprintf(sql + used, sizeof sql - used, "%s%s", i ? ", " : "",
                                     columns[i].name);
        used += (size_t)snprintf(sql + used, sizeof sql - used, ") VALUES (' || ");
        for (int i = 0; i < N_COLUMNS; ++i)
            used += (size_t)snprintf(sql + used, sizeof sql - used, "%squote(%s)",
                                     i ? " || ', ' || " : "", columns[i].name);
        used += (size_t)snprintf(sql + used, sizeof sql - used, " || ');'");
    }
    snprintf(sql + used, sizeof sql - used, " FROM evaluation_flat" ORDER_BY);

    /* A regular file (or none yet) is replaced atomically through a
     * temporary file beside it; anything else that exists (/dev/null, a
     * FIFO, /dev/stdout) is a stream, written in place: renaming over it
     * would replace a device node with a file. */
    struct stat target;
    const int in_place = stat(path, &target) == 0 && !S_ISREG(target.st_mode);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s%s", path, in_place ? "" : ".tmp");
    FILE *f = fopen(tmp, "w");
    if (!f)
        return fail(db, "cannot write %s: %s", tmp, strerror(errno));
    if (csv) {
        for (int i = 0; i < N_COLUMNS; ++i)
            fprintf(f, "%s%s", i ? "," : "", columns[i].name);
        fputc('\n', f);
    } else {
        fprintf(f, "-- sparcl tuning rows, written by sparcl_tuning_db_export(); load on top of "
                   "db/schema.sql\nBEGIN;\n");
    }
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (csv) {
            for (int i = 0; i < N_COLUMNS; ++i) {
                if (i)
                    fputc(',', f);
                csv_field(f, s, i);
            }
        } else {
            fputs((const char *)sqlite3_column_text(s, 0), f);
        }
        fputc('\n', f);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    if (!csv)
        fputs("COMMIT;\n", f);
    int werr = ferror(f);
    if (fclose(f) != 0)
        werr = 1;
    if (rc != SQLITE_DONE || werr) {
        if (!in_place)
            remove(tmp);
        return rc != SQLITE_DONE ? fail(db, "cannot export: %s", why(db->db))
                                 : fail(db, "cannot write %s", tmp);
    }
    /* Atomic: a reader never sees half an export. */
    if (!in_place && rename(tmp, path) != 0) {
        remove(tmp);
        return fail(db, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    }
    return SPARCL_OK;
}

/* Skips blanks and "--" comments. */
static const char *skip_space(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            ++p;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                ++p;
            continue;
        }
        return p;
    }
}

static int starts_word(const char *p, const char *word)
{
    size_t n = strlen(word);
    return strncasecmp(p, word, n) == 0 &&
           !(p[n] == '_' || (p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z'));
}

/* Executes the INSERTs of an SQL export; anything else is refused, so an
 * import cannot drop or alter tables. */
static int import_sql(sparcl_tuning_db *db, const char *text, int64_t *rows, char *err, size_t size)
{
    const char *p = text;
    for (;;) {
        p = skip_space(p);
        if (!*p)
            return SQLITE_OK;
        int control = starts_word(p, "BEGIN") || starts_word(p, "COMMIT") || starts_word(p, "END");
        const char *q = p;
        if (!control) {
            if (!starts_word(q, "INSERT"))
                goto refuse;
            q = skip_space(q + 6);
            if (!starts_word(q, "INTO"))
                goto refuse;
            q = skip_space(q + 4);
            if (!starts_word(q, "evaluation_flat"))
                goto refuse;
        }
        sqlite3_stmt *s = NULL;
        const char *tail = NULL;
        int rc = sqlite3_prepare_v2(db->db, p, -1, &s, &tail);
        if (rc == SQLITE_OK && !control) {
            rc = sqlite3_step(s);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
            ++*rows;
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_OK) {
            snprintf(err, size, "statement %lld: %s", (long long)*rows, sqlite3_errmsg(db->db));
            return rc;
        }
        p = tail;
    }
refuse:
    snprintf(err, size,
             "only INSERT INTO evaluation_flat statements may be imported (at \"%.40s\")", p);
    return SQLITE_ERROR;
}

/* One CSV field (RFC 4180): returns the position after it and its
 * terminator; *quoted tells "" (empty text) from nothing (NULL). */
static char *csv_next(char *p, char **field, int *quoted, char *term)
{
    *quoted = *p == '"';
    if (*quoted) {
        char *w = ++p;
        *field = w;
        for (;;) {
            if (!*p)
                break;
            if (*p == '"') {
                if (p[1] == '"') {
                    *w++ = '"';
                    p += 2;
                    continue;
                }
                ++p;
                break;
            }
            *w++ = *p++;
        }
        *term = *p;
        *w = '\0';
    } else {
        *field = p;
        while (*p && *p != ',' && *p != '\n' && *p != '\r')
            ++p;
        *term = *p;
        *p = '\0';
    }
    if (*term == '\r' && p[1] == '\n')
        ++p;
    return *term ? p + 1 : p;
}

static int import_csv(sparcl_tuning_db *db, char *text, int64_t *rows, char *err, size_t size)
{
    int n = 0;
    char *p = text, term = ',';
    char sql[2048];
    size_t used = (size_t)snprintf(sql, sizeof sql, "INSERT INTO evaluation_flat (");
    while (term == ',') {
        char *name;
        int quoted;
        p = csv_next(p, &name, &quoted, &term);
        int k = -1;
        for (int i = 0; i < N_COLUMNS; ++i)
            if (strcmp(columns[i].name, name) == 0)
                k = i;
        if (k < 0 || n >= N_COLUMNS) {
            snprintf(err, size, "unknown CSV column \"%s\"", name);
            return SQLITE_ERROR;
        }
        used += (size_t)snprintf(sql + used, sizeof sql - used, "%s%s", n ? ", " : "", name);
        ++n;
    }
    used += (size_t)snprintf(sql + used, sizeof sql - used, ") VALUES (");
    for (int i = 0; i < n; ++i)
        used += (size_t)snprintf(sql + used, sizeof sql - used, "%s?%d", i ? ", " : "", i + 1);
    snprintf(sql + used, sizeof sql - used, ")");
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &s, NULL);
    int64_t line = 1;
    while (rc == SQLITE_OK && *p) {
        ++line;
        if (*p == '\n' || *p == '\r') { /* blank line */
            ++p;
            continue;
        }
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        term = ',';
        int i = 0;
        for (; term == ','; ++i) {
            char *field;
            int quoted;
            p = csv_next(p, &field, &quoted, &term);
            if (i < n && (quoted || *field))
                sqlite3_bind_text(s, i + 1, field, -1, SQLITE_TRANSIENT);
        }
        if (i != n) {
            snprintf(err, size, "CSV line %lld has %d fields; the header has %d", (long long)line,
                     i, n);
            rc = SQLITE_ERROR;
            break;
        }
        rc = sqlite3_step(s);
        if (rc != SQLITE_DONE) {
            snprintf(err, size, "CSV line %lld: %s", (long long)line, sqlite3_errmsg(db->db));
            break;
        }
        ++*rows;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK && !*err)
        snprintf(err, size, "%s", sqlite3_errmsg(db->db));
    return rc;
}

SPARCL_API sparcl_status sparcl_tuning_db_import(sparcl_tuning_db *db, const char *path,
                                                 int64_t *rows)
{
    sparcl_status st = check_handle(db, path, path, path);
    if (st != SPARCL_OK)
        return st;
    char *text = sparcl__read_text_file(path);
    if (!text)
        return fail(db, "cannot read %s: %s", path, strerror(errno));
    int64_t n = 0;
    char err[512] = "";
    int rc = sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        snprintf(err, sizeof err, "cannot start a write: %s", why(db->db));
    else if (ends_with(path, ".csv"))
        rc = import_csv(db, text, &n, err, sizeof err);
    else
        rc = import_sql(db, text, &n, err, sizeof err);
    free(text);
    if (rc == SQLITE_OK && (rc = sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK)
        snprintf(err, sizeof err, "cannot commit: %s", why(db->db));
    if (rc != SQLITE_OK) {
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return fail(db, "importing %s: %s", path, err);
    }
    if (rows)
        *rows = n;
    return SPARCL_OK;
}
