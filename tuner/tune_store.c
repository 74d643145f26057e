/*
 * tune_store.c -- stored evaluations read straight from the tuning
 * database file, for what the library's lookup does not offer: every row
 * of one problem (replay) and the fastest rows of the nearest other
 * problems (seeding a new problem: transfer across sizes).  It reads the
 * evaluation_flat view of db/schema.sql, read-only, and matches the device
 * by platform and name only, so rows survive a change of the free-memory
 * figures that POCL reports.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune.h"

/* Parses the stored JSON object {"A":1,"B":2} (integers only). */
static int parse_params(const char *json, sparcl_params *p)
{
    sparcl_params_clear(p);
    const char *c = json ? strchr(json, '{') : NULL;
    if (!c)
        return -1;
    while ((c = strchr(c, '"'))) {
        const char *end = strchr(c + 1, '"');
        if (!end || (size_t)(end - c - 1) >= SPARCL_PARAM_NAME_MAX)
            return -1;
        char name[SPARCL_PARAM_NAME_MAX];
        memcpy(name, c + 1, (size_t)(end - c - 1));
        name[end - c - 1] = '\0';
        c = end + 1;
        while (*c == ' ' || *c == ':')
            ++c;
        char *after = NULL;
        long v = strtol(c, &after, 10);
        if (after == c || sparcl_params_set(p, name, (int32_t)v) != SPARCL_OK)
            return -1;
        c = after;
    }
    return 0;
}

static int open_db(const char *path, sqlite3 **db, char *err, size_t size)
{
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, size, "cannot open %s: %s", path, *db ? sqlite3_errmsg(*db) : "no memory");
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, 10000);
    return 0;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err, size_t size)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
        snprintf(err, size, "reading the database: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* Binds ?1..?5 of both queries: device platform and name, kernel family,
 * kernel hash ('' for any) and dtype. */
static void bind_family(sqlite3_stmt *st, const sparcl_device_info *device,
                        const sparcl_tuning_problem *pr, int same_hash)
{
    sqlite3_bind_text(st, 1, device->platform, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, device->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, pr->kernel, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, same_hash ? pr->kernel_hash : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, pr->dtype, -1, SQLITE_TRANSIENT);
}

typedef struct keyed {
    char key[512];
    int order;
    tune_row row;
} keyed;

static int by_key_then_order(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

int tune_store_rows(const char *db_path, const sparcl_device_info *device,
                    const sparcl_tuning_problem *pr, int same_hash, tune_row **rows, int *n_rows,
                    char *err, size_t size)
{
    *rows = NULL;
    *n_rows = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (open_db(db_path, &db, err, size) != 0)
        return -1;
    const char *sql =
        "SELECT params, status, median_ms FROM evaluation_flat"
        " WHERE platform = ?1 AND device = ?2 AND kernel = ?3 AND (?4 = '' OR kernel_hash = ?4)"
        " AND dtype = ?5 AND batch = ?6 AND q_heads = ?7 AND kv_heads = ?8 AND q_len = ?9"
        " AND kv_len = ?10 AND head_dim = ?11 AND causal = ?12 AND block = ?13"
        " AND abs(density - ?14) < 1e-6 ORDER BY created";
    if (prepare(db, sql, &st, err, size) != 0) {
        sqlite3_close(db);
        return -1;
    }
    bind_family(st, device, pr, same_hash);
    const int ints[] = {pr->batch,  pr->q_heads,  pr->kv_heads, pr->q_len,
                        pr->kv_len, pr->head_dim, pr->causal,   pr->block};
    for (int i = 0; i < 8; ++i)
        sqlite3_bind_int(st, 6 + i, ints[i]);
    sqlite3_bind_double(st, 14, pr->density);
    keyed *all = NULL;
    int n = 0, cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            keyed *grown = realloc(all, sizeof *all * (size_t)cap);
            if (!grown) {
                snprintf(err, size, "out of memory");
                break;
            }
            all = grown;
        }
        keyed *k = &all[n];
        if (parse_params((const char *)sqlite3_column_text(st, 0), &k->row.params) != 0)
            continue; /* not a parameter set this tuner wrote */
        const char *status = (const char *)sqlite3_column_text(st, 1);
        k->row.ms = status && !strcmp(status, "ok") ? sqlite3_column_double(st, 2) : INFINITY;
        sparcl_params_format(&k->row.params, k->key, sizeof k->key);
        k->order = n++;
    }
    int failed = rc != SQLITE_DONE && rc != SQLITE_ROW;
    if (failed)
        snprintf(err, size, "reading the database: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (failed || (rc == SQLITE_ROW)) {
        free(all);
        return -1;
    }
    /* Where a set was stored more than once (several kernel hashes or
     * device fingerprints), the latest row wins. */
    qsort(all, (size_t)n, sizeof *all, by_key_then_order);
    tune_row *out = malloc(sizeof *out * (size_t)(n ? n : 1));
    if (!out) {
        free(all);
        snprintf(err, size, "out of memory");
        return -1;
    }
    int m = 0;
    for (int i = 0; i < n; ++i)
        if (i + 1 == n || strcmp(all[i].key, all[i + 1].key))
            out[m++] = all[i].row;
    free(all);
    *rows = out;
    *n_rows = m;
    return 0;
}

static double log_ratio(double a, double b)
{
    return log2((a > 0 ? a : 1) / (b > 0 ? b : 1));
}

typedef struct candidate {
    double distance, ms;
    sparcl_params params;
    char what[96];
} candidate;

static int by_distance_then_time(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->distance != y->distance)
        return x->distance < y->distance ? -1 : 1;
    return (x->ms > y->ms) - (x->ms < y->ms);
}

int tune_store_neighbours(const char *db_path, const sparcl_device_info *device,
                          const sparcl_tuning_problem *pr, int same_hash, sparcl_params *out,
                          int max, char *from, size_t from_size, char *err, size_t size)
{
    if (from_size)
        from[0] = '\0';
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (open_db(db_path, &db, err, size) != 0)
        return -1;
    const char *sql =
        "SELECT batch, q_heads, kv_heads, q_len, kv_len, head_dim, causal, block, density,"
        " pattern, params, median_ms FROM evaluation_flat"
        " WHERE platform = ?1 AND device = ?2 AND kernel = ?3 AND (?4 = '' OR kernel_hash = ?4)"
        " AND dtype = ?5 AND status = 'ok'";
    if (prepare(db, sql, &st, err, size) != 0) {
        sqlite3_close(db);
        return -1;
    }
    bind_family(st, device, pr, same_hash);
    candidate *c = NULL;
    int n = 0, cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int v[8];
        for (int i = 0; i < 8; ++i)
            v[i] = sqlite3_column_int(st, i);
        double density = sqlite3_column_double(st, 8);
        const int mine[8] = {pr->batch,  pr->q_heads,  pr->kv_heads, pr->q_len,
                             pr->kv_len, pr->head_dim, pr->causal,   pr->block};
        double d = 0;
        for (int i = 0; i < 8; ++i)
            d += i == 6 ? (v[i] != mine[i]) : log_ratio(v[i], mine[i]) * log_ratio(v[i], mine[i]);
        d += log_ratio(density, pr->density) * log_ratio(density, pr->density);
        if (d < 1e-12) /* the problem itself */
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            candidate *grown = realloc(c, sizeof *c * (size_t)cap);
            if (!grown)
                break;
            c = grown;
        }
        if (parse_params((const char *)sqlite3_column_text(st, 10), &c[n].params) != 0)
            continue;
        c[n].distance = d;
        c[n].ms = sqlite3_column_double(st, 11);
        snprintf(c[n].what, sizeof c[n].what, "%s n=%d h=%d d=%d",
                 (const char *)sqlite3_column_text(st, 9), v[3], v[1], v[5]);
        ++n;
    }
    int failed = rc != SQLITE_DONE;
    if (failed)
        snprintf(err, size, "reading the database: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (failed) {
        free(c);
        return -1;
    }
    qsort(c, (size_t)n, sizeof *c, by_distance_then_time);
    int found = 0;
    size_t used = 0;
    for (int i = 0; i < n && found < max; ++i) {
        int dup = 0;
        for (int j = 0; j < found; ++j) {
            char a[512], b[512];
            sparcl_params_format(&out[j], a, sizeof a);
            sparcl_params_format(&c[i].params, b, sizeof b);
            dup |= !strcmp(a, b);
        }
        if (dup)
            continue;
        out[found++] = c[i].params;
        if (used < from_size && (i == 0 || strcmp(c[i].what, c[i - 1].what)))
            used += (size_t)snprintf(from + used, from_size - used, "%s%s", used ? "; " : "",
                                     c[i].what);
    }
    free(c);
    return found;
}
