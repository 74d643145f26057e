/*
 * tune_store.c -- stored evaluations for what the library's lookup does not
 * offer: every row of one problem (replay) and the fastest rows of the
 * nearest other problems (seeding a new problem: transfer across sizes and
 * storage types).
 * It walks the database with sparcl_tuning_db_each_row() (read-only; all
 * SQL stays in the library) and matches the device by platform and name
 * only, so rows survive a change of the free-memory figures that POCL
 * reports.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune.h"

static int open_db(const char *path, sparcl_tuning_db **db, char *err, size_t size)
{
    if (sparcl_tuning_db_init(NULL, db, path, SPARCL_TUNING_DB_READ) != SPARCL_OK) {
        snprintf(err, size, "%s", sparcl_ctx_errmsg(NULL));
        return -1;
    }
    return 0;
}

/* The rows of one walk that belong to the same family on the same kind of
 * device (platform and name; an empty platform in `mine` matches any, for
 * sparcl-tune --replay-device), at the problem's kernel hash if same_hash,
 * of any storage type. */
static int same_kernel(const sparcl_device_info *mine, const sparcl_tuning_problem *pr,
                       int same_hash, const sparcl_device_info *d, const sparcl_tuning_problem *p)
{
    return (!mine->platform[0] || !strcmp(d->platform, mine->platform)) &&
           !strcmp(d->name, mine->name) && !strcmp(p->kernel, pr->kernel) &&
           (!same_hash || !strcmp(p->kernel_hash, pr->kernel_hash));
}

/* ... and of the problem's storage type. */
static int same_family(const sparcl_device_info *mine, const sparcl_tuning_problem *pr,
                       int same_hash, const sparcl_device_info *d, const sparcl_tuning_problem *p)
{
    return same_kernel(mine, pr, same_hash, d, p) && !strcmp(p->dtype, pr->dtype);
}

/* How far apart two storage types are for transfer, in the units of the
 * squared log2 distance of the sizes: 0 the same; 0.25 the other half
 * format (the same bytes per element: f16 and bf16 load alike, convert a
 * little differently); 1 another width, as far as a problem twice the
 * size (a memory-bound kernel's traffic halves or doubles).  So a bf16
 * problem starts from its own shape's f16 rows before those of other
 * sizes: sparcl-tune --kernel attn_decode with 16 evaluations never tried
 * the tiles that won at f16 for GQA 32/8 at 128k keys, and chose ones 10%
 * slower than them at bf16. */
static double dtype_distance(const char *a, const char *b)
{
    if (!strcmp(a, b))
        return 0;
    return !strcmp(a, "f32") || !strcmp(b, "f32") ? 1.0 : 0.25;
}

static int same_problem(const sparcl_tuning_problem *a, const sparcl_tuning_problem *b)
{
    return a->batch == b->batch && a->q_heads == b->q_heads && a->kv_heads == b->kv_heads &&
           a->q_len == b->q_len && a->kv_len == b->kv_len && a->head_dim == b->head_dim &&
           a->causal == b->causal && a->block == b->block && fabs(a->density - b->density) < 1e-6;
}

typedef struct keyed {
    char key[512];
    int current; /* stored at the problem's kernel hash */
    int order;
    tune_row row;
} keyed;

/* One walk over the stored rows: the device and problem asked about, and
 * the items it collects (keyed rows or candidates), grown as they come. */
typedef struct walk {
    const sparcl_device_info *device;
    const sparcl_tuning_problem *pr;
    int same_hash, n, cap, oom;
    void *items;
    size_t item_size;
} walk;

/* The next free item, or NULL (w->oom set) when memory runs out. */
static void *append(walk *w)
{
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 256;
        void *grown = realloc(w->items, w->item_size * (size_t)cap);
        if (!grown) {
            w->oom = 1;
            return NULL;
        }
        w->items = grown;
        w->cap = cap;
    }
    return (char *)w->items + w->item_size * (size_t)w->n++;
}

/* Walks the family's rows of db_path through fn; 0, or -1 with err (the
 * items are then freed). */
static int walk_db(const char *db_path, sparcl_tuning_eval_fn fn, walk *w, char *err, size_t size)
{
    sparcl_tuning_db *db = NULL;
    if (open_db(db_path, &db, err, size) != 0)
        return -1;
    sparcl_status st = sparcl_tuning_db_each_row(db, w->pr->kernel, fn, w);
    if (st != SPARCL_OK)
        snprintf(err, size, "%s", sparcl_ctx_errmsg(NULL));
    else if (w->oom)
        snprintf(err, size, "out of memory");
    sparcl_tuning_db_free(db);
    if (st == SPARCL_OK && !w->oom)
        return 0;
    free(w->items);
    w->items = NULL;
    return -1;
}

static int on_row(void *user, const sparcl_device_info *d, const sparcl_tuning_problem *p,
                  const sparcl_tuning_result *r)
{
    walk *w = user;
    if (!same_family(w->device, w->pr, w->same_hash, d, p) || !same_problem(p, w->pr))
        return 0;
    int order = w->n;
    keyed *k = append(w);
    if (!k)
        return 1;
    k->row.params = r->params;
    k->row.ms = r->status == SPARCL_TUNING_OK ? r->median_ms : INFINITY;
    k->current = !strcmp(p->kernel_hash, w->pr->kernel_hash);
    sparcl_params_format(&k->row.params, k->key, sizeof k->key);
    k->order = order;
    return 0;
}

static int by_key_then_rank(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    if (x->current != y->current)
        return x->current - y->current;
    return (x->order > y->order) - (x->order < y->order);
}

int tune_store_rows(const char *db_path, const sparcl_device_info *device,
                    const sparcl_tuning_problem *pr, int same_hash, tune_row **rows, int *n_rows,
                    char *err, size_t size)
{
    *rows = NULL;
    *n_rows = 0;
    walk w = {device, pr, same_hash, 0, 0, 0, NULL, sizeof(keyed)};
    if (walk_db(db_path, on_row, &w, err, size) != 0)
        return -1;
    /* Where a set was stored more than once (several kernel hashes or
     * device fingerprints), a row at the problem's own kernel hash wins
     * over the others, then the last one walked. */
    keyed *all = w.items;
    int n = w.n;
    qsort(all, (size_t)n, sizeof *all, by_key_then_rank);
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

static int on_near_row(void *user, const sparcl_device_info *d, const sparcl_tuning_problem *p,
                       const sparcl_tuning_result *r)
{
    walk *w = user;
    if (r->status != SPARCL_TUNING_OK || !same_kernel(w->device, w->pr, w->same_hash, d, p))
        return 0;
    const sparcl_tuning_problem *pr = w->pr;
    const int v[8] = {p->batch,  p->q_heads,  p->kv_heads, p->q_len,
                      p->kv_len, p->head_dim, p->causal,   p->block};
    const int mine[8] = {pr->batch,  pr->q_heads,  pr->kv_heads, pr->q_len,
                         pr->kv_len, pr->head_dim, pr->causal,   pr->block};
    double dist = 0;
    for (int i = 0; i < 8; ++i)
        dist += i == 6 ? (v[i] != mine[i]) : log_ratio(v[i], mine[i]) * log_ratio(v[i], mine[i]);
    dist += log_ratio(p->density, pr->density) * log_ratio(p->density, pr->density);
    dist += dtype_distance(p->dtype, pr->dtype);
    if (dist < 1e-12) /* the problem itself */
        return 0;
    candidate *c = append(w);
    if (!c)
        return 1;
    c->params = r->params;
    c->distance = dist;
    c->ms = r->median_ms;
    const int other = strcmp(p->dtype, pr->dtype) != 0;
    snprintf(c->what, sizeof c->what, "%s n=%d h=%d d=%d%s%s", p->pattern, p->q_len, p->q_heads,
             p->head_dim, other ? " " : "", other ? p->dtype : "");
    return 0;
}

int tune_store_neighbours(const char *db_path, const sparcl_device_info *device,
                          const sparcl_tuning_problem *pr, int same_hash, sparcl_params *out,
                          int max, char *from, size_t from_size, char *err, size_t size)
{
    if (from_size)
        from[0] = '\0';
    walk w = {device, pr, same_hash, 0, 0, 0, NULL, sizeof(candidate)};
    if (walk_db(db_path, on_near_row, &w, err, size) != 0)
        return -1;
    candidate *c = w.items;
    int n = w.n;
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
