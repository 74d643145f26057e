/*
 * tune_report.c -- a picture of tuning runs (sparcl-tune --report
 * FILE.svg): one panel per kernel family and problem in the database, its
 * evaluations in the order they were stored against time on a log scale,
 * with the best so far as a line, the first evaluation (the default, which
 * every strategy evaluates first when the space holds it) as a dashed
 * line, and failures as crosses along the top.  Plain SVG, no dependency.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune.h"

#define PANEL_W 720
#define PANEL_H 180
#define MARGIN_L 70
#define MARGIN_R 20
#define MARGIN_T 28
#define MARGIN_B 30

typedef struct point {
    double ms; /* INFINITY: failed */
} point;

typedef struct panel {
    char title[200];
    point *p;
    int n, cap;
} panel;

static int add_point(panel *pn, double ms)
{
    if (pn->n == pn->cap) {
        int cap = pn->cap ? 2 * pn->cap : 64;
        point *grown = realloc(pn->p, sizeof *grown * (size_t)cap);
        if (!grown)
            return -1;
        pn->p = grown;
        pn->cap = cap;
    }
    pn->p[pn->n++].ms = ms;
    return 0;
}

static void draw_panel(FILE *f, const panel *pn, int top)
{
    double lo = INFINITY, hi = 0;
    int failures = 0;
    for (int i = 0; i < pn->n; ++i)
        if (isfinite(pn->p[i].ms)) {
            lo = fmin(lo, pn->p[i].ms);
            hi = fmax(hi, pn->p[i].ms);
        } else {
            ++failures;
        }
    const int x0 = MARGIN_L, x1 = PANEL_W - MARGIN_R, y0 = top + MARGIN_T,
              y1 = top + PANEL_H - MARGIN_B;
    fprintf(f, "<text x='%d' y='%d' font-size='13'>%s: %d evaluations, %d failed</text>\n", x0,
            top + 18, pn->title, pn->n, failures);
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#999'/>\n", x0, y0,
            x1 - x0, y1 - y0);
    if (!isfinite(lo))
        return;
    if (hi <= lo * 1.01)
        hi = lo * 1.01;
    const double llo = log10(lo) - 0.05, lhi = log10(hi) + 0.05;
#define X(i) (x0 + ((pn->n > 1) ? (double)(i) * (x1 - x0 - 10) / (pn->n - 1) : 0) + 5)
#define Y(ms) (y1 - (log10(ms) - llo) / (lhi - llo) * (y1 - y0))
    fprintf(f, "<text x='%d' y='%d' font-size='10' text-anchor='end'>%.3g ms</text>\n", x0 - 4, y1,
            pow(10, llo));
    fprintf(f, "<text x='%d' y='%d' font-size='10' text-anchor='end'>%.3g ms</text>\n", x0 - 4,
            y0 + 10, pow(10, lhi));
    fprintf(f, "<text x='%d' y='%d' font-size='10'>evaluation 1</text>\n", x0, y1 + 14);
    fprintf(f, "<text x='%d' y='%d' font-size='10' text-anchor='end'>%d</text>\n", x1, y1 + 14,
            pn->n);
    if (isfinite(pn->p[0].ms))
        fprintf(f,
                "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#2a2' "
                "stroke-dasharray='5,4'/>\n",
                x0, Y(pn->p[0].ms), x1, Y(pn->p[0].ms));
    for (int i = 0; i < pn->n; ++i) {
        if (isfinite(pn->p[i].ms))
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='2.2' fill='#888'/>\n", X(i), Y(pn->p[i].ms));
        else
            fprintf(f,
                    "<text x='%.1f' y='%d' font-size='10' fill='#c22' "
                    "text-anchor='middle'>x</text>\n",
                    X(i), y0 + 9);
    }
    fprintf(f, "<polyline fill='none' stroke='#22c' stroke-width='1.6' points='");
    double best = INFINITY;
    for (int i = 0; i < pn->n; ++i) {
        if (pn->p[i].ms < best) {
            if (isfinite(best))
                fprintf(f, "%.1f,%.1f ", X(i), Y(best));
            best = pn->p[i].ms;
        }
        if (isfinite(best))
            fprintf(f, "%.1f,%.1f ", X(i), Y(best));
    }
    fprintf(f, "'/>\n");
#undef X
#undef Y
}

/* The rows of one walk, one panel per (device, family, kernel hash,
 * problem): sparcl_tuning_db_each_row() gives them grouped by that key. */
typedef struct report_walk {
    panel *panels;
    int n, failed;
    char last[1024];
    char devices[16][640]; /* the devices seen, numbered for the titles */
    int n_devices;
} report_walk;

static int device_number(report_walk *w, const sparcl_device_info *d)
{
    char id[640];
    snprintf(id, sizeof id, "%s|%s|%s|%s|%u", d->platform, d->name, d->driver, d->version,
             d->compute_units);
    for (int i = 0; i < w->n_devices; ++i)
        if (!strcmp(w->devices[i], id))
            return i + 1;
    if (w->n_devices < 16)
        snprintf(w->devices[w->n_devices++], sizeof w->devices[0], "%s", id);
    return w->n_devices;
}

static int on_report_row(void *user, const sparcl_device_info *d, const sparcl_tuning_problem *p,
                         const sparcl_tuning_result *r)
{
    report_walk *w = user;
    char key[1024];
    snprintf(key, sizeof key, "%s|%s|%s|%u|%s|%s|%d,%d,%d,%d,%d,%d,%d,%s,%d,%.6f", d->platform,
             d->name, d->driver, d->compute_units, p->kernel, p->kernel_hash, p->batch, p->q_heads,
             p->kv_heads, p->q_len, p->kv_len, p->head_dim, p->causal, p->pattern, p->block,
             p->density);
    if (!w->n || strcmp(key, w->last)) {
        panel *grown = realloc(w->panels, sizeof *grown * (size_t)(w->n + 1));
        if (!grown) {
            w->failed = 1;
            return 1;
        }
        w->panels = grown;
        memset(&w->panels[w->n], 0, sizeof w->panels[w->n]);
        snprintf(w->panels[w->n].title, sizeof w->panels[w->n].title,
                 "%s %s n=%d h=%d d=%d density %.3f (device %d)", p->kernel, p->pattern, p->q_len,
                 p->q_heads, p->head_dim, p->density, device_number(w, d));
        snprintf(w->last, sizeof w->last, "%s", key);
        ++w->n;
    }
    double ms = r->status == SPARCL_TUNING_OK ? r->median_ms : INFINITY;
    if (add_point(&w->panels[w->n - 1], ms) != 0) {
        w->failed = 1;
        return 1;
    }
    return 0;
}

int tune_report_svg(const char *db_path, const char *svg_path, char *err, size_t size)
{
    if (size)
        err[0] = '\0';
    sparcl_tuning_db *db = NULL;
    if (sparcl_tuning_db_init(NULL, &db, db_path, SPARCL_TUNING_DB_READ) != SPARCL_OK) {
        snprintf(err, size, "%s", sparcl_ctx_errmsg(NULL));
        return -1;
    }
    report_walk w;
    memset(&w, 0, sizeof w);
    if (sparcl_tuning_db_each_row(db, NULL, on_report_row, &w) != SPARCL_OK)
        snprintf(err, size, "%s", sparcl_ctx_errmsg(NULL));
    else if (w.failed)
        snprintf(err, size, "reading %s: out of memory", db_path);
    sparcl_tuning_db_free(db);
    panel *panels = w.panels;
    int n = w.n;
    FILE *f = NULL;
    if (!*err && !(f = fopen(svg_path, "w")))
        snprintf(err, size, "cannot write %s", svg_path);
    if (f) {
        int height = 40 + n * PANEL_H;
        fprintf(f,
                "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
                "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='white'/>\n"
                "<text x='10' y='20' font-size='12'>sparcl-tune evaluations in stored order: "
                "grey dots ok (time, log scale), blue best so far, green dashed the first "
                "evaluation (the default), red x failed</text>\n",
                PANEL_W, height);
        for (int i = 0; i < n; ++i)
            draw_panel(f, &panels[i], 30 + i * PANEL_H);
        fprintf(f, "</svg>\n");
        if (fclose(f) != 0)
            snprintf(err, size, "cannot write %s", svg_path);
    }
    for (int i = 0; i < n; ++i)
        free(panels[i].p);
    free(panels);
    return *err ? -1 : 0;
}
