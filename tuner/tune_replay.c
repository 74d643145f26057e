/*
 * tune_replay.c -- replay (simulation) mode: a strategy runs against the
 * evaluations a database already holds, never building or launching a
 * kernel, and each run is scored by how close its choice comes to the
 * best stored time.  The search is tune_search() itself, fed by a
 * callback that looks candidates up instead of measuring them, so what is
 * compared here is exactly what live tuning runs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune.h"

typedef struct lookup {
    tune_row *rows; /* sorted by key */
    char (*keys)[512];
    int n;
    int missing; /* candidates asked for without a stored row */
} lookup;

static int cmp_key(const void *a, const void *b)
{
    return strcmp(a, b);
}

static double replay_eval(void *user, const sparcl_params *p, int *stop)
{
    (void)stop;
    lookup *l = user;
    char key[512];
    sparcl_params_format(p, key, sizeof key);
    char(*hit)[512] = bsearch(key, l->keys, (size_t)l->n, sizeof *l->keys, cmp_key);
    if (!hit) {
        ++l->missing;
        return INFINITY;
    }
    return l->rows[hit - l->keys].ms;
}

typedef struct sortable {
    char key[512];
    tune_row row;
} sortable;

static int cmp_sortable(const void *a, const void *b)
{
    return strcmp(((const sortable *)a)->key, ((const sortable *)b)->key);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts the rows by key for bsearch. */
static int index_rows(tune_row *rows, int n, lookup *l)
{
    sortable *s = malloc(sizeof *s * (size_t)(n ? n : 1));
    l->keys = malloc(sizeof *l->keys * (size_t)(n ? n : 1));
    if (!s || !l->keys) {
        free(s);
        return -1;
    }
    for (int i = 0; i < n; ++i) {
        s[i].row = rows[i];
        sparcl_params_format(&rows[i].params, s[i].key, sizeof s[i].key);
    }
    qsort(s, (size_t)n, sizeof *s, cmp_sortable);
    for (int i = 0; i < n; ++i) {
        rows[i] = s[i].row;
        memcpy(l->keys[i], s[i].key, sizeof l->keys[i]);
    }
    free(s);
    l->rows = rows;
    l->n = n;
    return 0;
}

int tune_replay_problem(sparcl_ctx *ctx, const char *kernel, const tune_problem *prob,
                        const sparcl_param_space *space, const tune_replay_options *o, char *err,
                        size_t size)
{
    sparcl_plan_desc desc;
    sparcl_layout *layout = NULL;
    sparcl_tuning_problem key;
    sparcl_device_info device;
    int declined = 0; /* the family is not tuned on this problem (err says why) */
    if (tune_problem_desc(ctx, prob, &desc, &layout) != SPARCL_OK ||
        (declined = tune_problem_for_kernel(kernel, prob, &desc, err, size) != 0) ||
        sparcl_tuning_problem_init(ctx, &key, kernel, &desc, prob->pattern) != SPARCL_OK ||
        sparcl_ctx_device_info(ctx, &device) != SPARCL_OK) {
        sparcl_layout_free(layout);
        if (declined) { /* as a live run skips it */
            printf("replay %s %s: skipped: %s\n", kernel, prob->spec, err);
            return 0;
        }
        snprintf(err, size, "%s", sparcl_ctx_errmsg(ctx));
        return -1;
    }
    if (o->device) { /* another device's rows: its name, any platform */
        snprintf(device.name, sizeof device.name, "%s", o->device);
        device.platform[0] = '\0';
    }
    tune_row *rows = NULL;
    int n_rows = 0, rc = -1;
    lookup l = {0};
    double *gaps = NULL;
    if (tune_store_rows(o->db_path, &device, &key, 0, &rows, &n_rows, err, size) != 0)
        goto done;
    if (index_rows(rows, n_rows, &l) != 0) {
        snprintf(err, size, "out of memory");
        goto done;
    }
    /* The best stored time among the candidates this space admits. */
    double best = INFINITY;
    int usable = 0;
    char best_list[512] = "(none)";
    for (int i = 0; i < n_rows; ++i)
        if (tune_space_admits(ctx, kernel, &desc, space, &rows[i].params)) {
            ++usable;
            if (rows[i].ms < best) {
                best = rows[i].ms;
                sparcl_params_format(&rows[i].params, best_list, sizeof best_list);
            }
        }
    if (!isfinite(best)) {
        snprintf(err, size, "%s %s: no stored ok evaluation in this space (%d rows read)", kernel,
                 prob->spec, n_rows);
        goto done;
    }
    sparcl_params starts[1 + TUNE_TRANSFER_SEEDS];
    int n_starts = 1;
    sparcl_kernel_default_params(ctx, kernel, &desc, &starts[0]);
    char from[256] = "";
    if (o->transfer) {
        int k = tune_transfer_seeds(ctx, o->db_path, &device, &key, 0, kernel, &desc, space,
                                    starts + 1, TUNE_TRANSFER_SEEDS, from, sizeof from, err, size);
        if (k < 0)
            goto done;
        n_starts += k;
    }
    printf("replay %s %s: %d stored rows, %d in the space, best %.4f ms: %s\n", kernel, prob->spec,
           n_rows, usable, best, best_list);
    if (o->transfer)
        printf("  transfer: %d seeds from %s\n", n_starts - 1, from[0] ? from : "(no neighbour)");
    int seeds = o->seeds > 0 ? o->seeds : 1;
    gaps = malloc(sizeof *gaps * (size_t)seeds);
    if (!gaps) {
        snprintf(err, size, "out of memory");
        goto done;
    }
    tune_budget budget = o->budget;
    budget.max_seconds = 0; /* nothing is timed */
    for (int s = 0; s < seeds; ++s) {
        tune_search_stats stats;
        l.missing = 0;
        if (tune_search(ctx, kernel, &desc, space, starts, n_starts, o->strategy, &budget,
                        o->seed + (unsigned)s, replay_eval, &l, &stats, err, size) != 0)
            goto done;
        char list[512] = "(none)";
        if (isfinite(stats.best_ms))
            sparcl_params_format(&stats.best, list, sizeof list);
        gaps[s] = isfinite(stats.best_ms) ? stats.best_ms / best - 1 : INFINITY;
        printf("  seed %u: %d evaluations (%d missing), best %.4f ms, gap %.1f%%: %s\n",
               o->seed + (unsigned)s, stats.evals, l.missing, stats.best_ms, 100 * gaps[s], list);
    }
    qsort(gaps, (size_t)seeds, sizeof *gaps, cmp_double);
    double median = seeds % 2 ? gaps[seeds / 2] : 0.5 * (gaps[seeds / 2 - 1] + gaps[seeds / 2]);
    printf("replay-summary kernel=%s problem=%s strategy=%s transfer=%d max_evals=%d seeds=%d "
           "median_gap=%.2f%% worst_gap=%.2f%%\n",
           kernel, prob->spec, tune_strategy_name(o->strategy), o->transfer, o->budget.max_evals,
           seeds, 100 * median, 100 * gaps[seeds - 1]);
    fflush(stdout);
    rc = 0;
done:
    free(gaps);
    free(l.keys);
    free(rows);
    sparcl_layout_free(layout);
    return rc;
}
