/*
 * tuning_rows.c -- the tuning databases' best rows, remembered per context
 * (see tuning_rows.h).
 *
 * One entry per (database path, kernel, hash, dtype), newest first, at most
 * ROWS_MAX_ENTRIES of them (the oldest is dropped).  An entry is valid while
 * the database file keeps the identity, size and time, and its "-wal" file
 * the size and header, they had after the rows were read: SQLite in WAL
 * mode (every database sparcl writes) appends each commit to the -wal file
 * and checkpoints into the main one, so a committed change alters one of
 * the two (see sig_of).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/ctx.h"
#include "tuning/tuning_rows.h"

#define ROWS_MAX_ENTRIES 64

typedef struct file_sig {
    int exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    unsigned char wal_header[32]; /* the -wal file's: salts change at each reset */
} file_sig;

typedef struct row {
    sparcl_device_info device;
    sparcl_tuning_problem problem;
    sparcl_params params;
    double median_ms;
} row;

struct sparcl__tuning_rows {
    struct sparcl__tuning_rows *next;
    char path[1024];
    char kernel[32], hash[17], dtype[8];
    file_sig db, wal;
    row *rows;
    size_t n, cap;
    int failed; /* out of memory while collecting: not kept */
};

/* The main file by identity, size and time.  The -wal file by size and
 * header only: readers reset and truncate it when they close, which moves
 * its time without changing what it holds, while every commit appends to
 * it (its size) and every reset after a checkpoint draws new salts. */
static file_sig sig_of(const char *path, int wal)
{
    file_sig s;
    memset(&s, 0, sizeof s);
    struct stat st;
    if (stat(path, &st) == 0) {
        s.exists = 1;
        s.size = st.st_size;
        if (!wal) {
            s.dev = st.st_dev;
            s.ino = st.st_ino;
            s.mtime = st.st_mtim;
        } else if (st.st_size > 0) {
            FILE *f = fopen(path, "rb");
            if (f) {
                if (fread(s.wal_header, 1, sizeof s.wal_header, f) != sizeof s.wal_header)
                    memset(s.wal_header, 0xff, sizeof s.wal_header);
                fclose(f);
            }
        }
    }
    return s;
}

static int sig_equal(const file_sig *a, const file_sig *b)
{
    return a->exists == b->exists &&
           (!a->exists ||
            (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
             a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
             memcmp(a->wal_header, b->wal_header, sizeof a->wal_header) == 0));
}

/* The signatures of a database and its -wal file. */
static void sigs_of(const char *path, file_sig *db, file_sig *wal)
{
    char w[1100];
    snprintf(w, sizeof w, "%s-wal", path);
    *db = sig_of(path, 0);
    *wal = sig_of(w, 1);
}

static void entry_free(struct sparcl__tuning_rows *e)
{
    if (e) {
        free(e->rows);
        free(e);
    }
}

static void collect(void *user, const sparcl_device_info *device,
                    const sparcl_tuning_problem *problem, const sparcl_params *params,
                    double median_ms)
{
    struct sparcl__tuning_rows *e = user;
    if (e->failed)
        return;
    if (e->n == e->cap) {
        const size_t cap = e->cap ? 2 * e->cap : 16;
        row *grown = realloc(e->rows, cap * sizeof *grown);
        if (!grown) {
            e->failed = 1;
            return;
        }
        e->rows = grown;
        e->cap = cap;
    }
    row *r = &e->rows[e->n++];
    r->device = *device;
    r->problem = *problem;
    r->params = *params;
    r->median_ms = median_ms;
}

static int same_key(const struct sparcl__tuning_rows *e, const char *path, const char *kernel,
                    const char *hash, const char *dtype)
{
    return strcmp(e->path, path) == 0 && strcmp(e->kernel, kernel) == 0 &&
           strcmp(e->hash, hash) == 0 && strcmp(e->dtype, dtype) == 0;
}

/* Unlinks and returns the entry of the key, or NULL. */
static struct sparcl__tuning_rows *take(sparcl_ctx *ctx, const char *path, const char *kernel,
                                        const char *hash, const char *dtype)
{
    for (struct sparcl__tuning_rows **p = &ctx->tuning_rows; *p; p = &(*p)->next)
        if (same_key(*p, path, kernel, hash, dtype)) {
            struct sparcl__tuning_rows *e = *p;
            *p = e->next;
            e->next = NULL;
            return e;
        }
    return NULL;
}

/* Puts e first and drops entries past ROWS_MAX_ENTRIES. */
static void keep(sparcl_ctx *ctx, struct sparcl__tuning_rows *e)
{
    e->next = ctx->tuning_rows;
    ctx->tuning_rows = e;
    int n = 0;
    for (struct sparcl__tuning_rows **p = &ctx->tuning_rows; *p; ++n) {
        if (n < ROWS_MAX_ENTRIES) {
            p = &(*p)->next;
            continue;
        }
        struct sparcl__tuning_rows *old = *p;
        *p = old->next;
        entry_free(old);
    }
}

/* Reads the rows of the key into a new entry; NULL with msg set on failure
 * (or with msg empty when only memory ran out: the caller reads the
 * database directly then). */
static struct sparcl__tuning_rows *load(const char *path, const char *kernel, const char *hash,
                                        const char *dtype, sparcl_status *st, char *msg,
                                        size_t size)
{
    struct sparcl__tuning_rows *e = calloc(1, sizeof *e);
    if (!e) {
        *st = SPARCL_OK;
        return NULL;
    }
    snprintf(e->path, sizeof e->path, "%s", path);
    snprintf(e->kernel, sizeof e->kernel, "%s", kernel);
    snprintf(e->hash, sizeof e->hash, "%s", hash);
    snprintf(e->dtype, sizeof e->dtype, "%s", dtype);
    sparcl_tuning_db *db = NULL;
    *st = sparcl__tuning_db_open(path, SPARCL_TUNING_DB_READ, SPARCL__DB_READ_BUSY_MS, &db, msg,
                                 size);
    if (*st == SPARCL_OK)
        *st = sparcl__tuning_db_each_best(db, kernel, hash, dtype, collect, e, msg, size);
    sparcl_tuning_db_free(db);
    if (*st != SPARCL_OK || e->failed) {
        entry_free(e);
        return NULL;
    }
    /* After closing, which may have checkpointed or truncated the log.  A
     * commit that lands between the read and this leaves the rows one
     * write behind until the file changes again; they are a speed hint. */
    sigs_of(path, &e->db, &e->wal);
    return e;
}

static int is_current(const struct sparcl__tuning_rows *e)
{
    file_sig db, wal;
    sigs_of(e->path, &db, &wal);
    return sig_equal(&db, &e->db) && sig_equal(&wal, &e->wal);
}

sparcl_status sparcl__tuning_rows_each_best(sparcl_ctx *ctx, const char *path, const char *kernel,
                                            const char *hash, const char *dtype,
                                            sparcl__tuning_row_fn fn, void *user, char *msg,
                                            size_t size)
{
    pthread_mutex_lock(&ctx->rows_lock);
    struct sparcl__tuning_rows *e = take(ctx, path, kernel, hash, dtype);
    if (e && !is_current(e)) {
        entry_free(e);
        e = NULL;
    }
    sparcl_status st = SPARCL_OK;
    if (!e)
        e = load(path, kernel, hash, dtype, &st, msg, size);
    if (e) {
        for (size_t i = 0; i < e->n; ++i)
            fn(user, &e->rows[i].device, &e->rows[i].problem, &e->rows[i].params,
               e->rows[i].median_ms);
        keep(ctx, e);
    }
    pthread_mutex_unlock(&ctx->rows_lock);
    if (e || st != SPARCL_OK)
        return st;
    /* Out of memory for the copy: read the database directly. */
    sparcl_tuning_db *db = NULL;
    st = sparcl__tuning_db_open(path, SPARCL_TUNING_DB_READ, SPARCL__DB_READ_BUSY_MS, &db, msg,
                                size);
    if (st == SPARCL_OK)
        st = sparcl__tuning_db_each_best(db, kernel, hash, dtype, fn, user, msg, size);
    sparcl_tuning_db_free(db);
    return st;
}

void sparcl__tuning_rows_free(sparcl_ctx *ctx)
{
    while (ctx->tuning_rows) {
        struct sparcl__tuning_rows *e = ctx->tuning_rows;
        ctx->tuning_rows = e->next;
        entry_free(e);
    }
}
