/*
 * tune_report.c -- a picture of tuning runs (sparcl-tune --report
 * FILE.svg): one panel per kernel family and problem in the database, its
 * evaluations in the order they were stored against time on a log scale,
 * with the best so far as a line, the first evaluation (the default, which
 * every strategy evaluates first when the space holds it) as a dashed
 * line, and failures as crosses along the top.  Plain SVG, no dependency.
 */
#include <math.h>
#include <sqlite3.h>
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

int tune_report_svg(const char *db_path, const char *svg_path, char *err, size_t size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (size)
        err[0] = '\0';
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, size, "cannot open %s: %s", db_path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 10000);
    const char *sql = "SELECT e.device_id, e.kernel_id, e.problem_id, k.name, p.pattern, p.q_len,"
                      " p.q_heads, p.head_dim, p.density, e.status, e.median_ms"
                      " FROM evaluation e JOIN kernel k ON k.id = e.kernel_id"
                      " JOIN problem p ON p.id = e.problem_id"
                      " ORDER BY e.device_id, e.kernel_id, e.problem_id, e.id";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, size, "reading %s: %s", db_path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    panel *panels = NULL;
    int n = 0, rc, failed = 0;
    long long last[3] = {-1, -1, -1};
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && !failed) {
        long long key[3];
        for (int i = 0; i < 3; ++i)
            key[i] = sqlite3_column_int64(st, i);
        if (memcmp(key, last, sizeof key)) {
            panel *grown = realloc(panels, sizeof *panels * (size_t)(n + 1));
            if (!grown) {
                failed = 1;
                break;
            }
            panels = grown;
            memset(&panels[n], 0, sizeof panels[n]);
            snprintf(panels[n].title, sizeof panels[n].title,
                     "%s %s n=%d h=%d d=%d density %.3f (device %lld)",
                     (const char *)sqlite3_column_text(st, 3),
                     (const char *)sqlite3_column_text(st, 4), sqlite3_column_int(st, 5),
                     sqlite3_column_int(st, 6), sqlite3_column_int(st, 7),
                     sqlite3_column_double(st, 8), key[0]);
            memcpy(last, key, sizeof key);
            ++n;
        }
        const char *status = (const char *)sqlite3_column_text(st, 9);
        double ms = status && !strcmp(status, "ok") ? sqlite3_column_double(st, 10) : INFINITY;
        failed = add_point(&panels[n - 1], ms) != 0;
    }
    if (failed || (rc != SQLITE_DONE && rc != SQLITE_ROW))
        snprintf(err, size, "reading %s: %s", db_path,
                 failed ? "out of memory" : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
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
