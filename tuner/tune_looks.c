/*
 * tune_looks.c -- the second look at a search's candidates.  A search
 * times each candidate once, in one stretch of some tens of milliseconds,
 * and on a shared machine such a stretch can fall in a state that slows
 * whatever runs in it by 15-50% for a fraction of a second to seconds (the
 * same configuration evaluated six times in one worker process:
 * 10.1, 7.6, 6.7, 6.7, 9.5, 9.5 ms, where it runs at 5.3 in most
 * processes; its CPU time per call moved with it, 15.7 against 10.7 ms).
 * A candidate whose one evaluation fell there ranks behind slower ones and
 * never reaches the finalists, whose rounds would have shown it: in two
 * quick runs 10 minutes apart, attn_entmax dense n=256's BLOCK_N=32
 * TOPK=64, 1.14x faster than the default when re-timed, was timed by one
 * run's search at 4.32 ms against the default's 3.70 and left out
 * (tuner/stability-report.md, the 17th measurement).
 *
 * So after the search every candidate this run measured, within `within`
 * times the fastest first look, is timed once more in the same worker,
 * seconds after its first look, and the candidates are ranked by the
 * faster of their two looks (and, on a CPU device, by the smaller of their
 * two CPU times).  The second look rebuilds nothing that costs: POCL and
 * the GPU drivers keep built programs in their own caches, so it is the
 * problem's timed runs, about 0.1 s a candidate against about 1 s for a
 * first evaluation.  The looks only choose the finalists; the database
 * keeps each candidate's search evaluation, which replay (--replay)
 * reproduces.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool_timing.h"
#include "tune.h"

void tune_looks_init(tune_looks *l)
{
    memset(l, 0, sizeof *l);
}

void tune_looks_free(tune_looks *l)
{
    if (!l)
        return;
    free(l->v);
    memset(l, 0, sizeof *l);
}

int tune_looks_add(tune_looks *l, const sparcl_params *p, double ms, double cpu_ms, int measured)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        tune_look *v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    tune_look *k = &l->v[l->n++];
    k->params = *p;
    k->ms = k->first_ms = ms;
    k->cpu_ms = cpu_ms;
    k->measured = measured;
    k->looks = 1;
    return 0;
}

int tune_second_look(tune_looks *l, const tune_look_job *job, volatile sig_atomic_t *interrupted)
{
    double fastest = INFINITY;
    for (int i = 0; i < l->n; ++i)
        fastest = fmin(fastest, l->v[i].first_ms);
    if (!(job->within >= 1) || !isfinite(fastest))
        return 0;
    int due = 0, timed = 0, faster = 0;
    for (int i = 0; i < l->n; ++i)
        due += l->v[i].measured && l->v[i].first_ms <= job->within * fastest;
    if (due < 2)
        return 0; /* nothing to rank again */
    const double t0 = tool_now_ms();
    int rc = 0;
    for (int i = 0; i < l->n && rc == 0; ++i) {
        tune_look *k = &l->v[i];
        if (!k->measured || k->first_ms > job->within * fastest)
            continue;
        sparcl_tuning_result r;
        rc = tune_child_eval(job->child, job->kernel, job->spec, &k->params, job->max_runs,
                             job->timeout, interrupted, &r);
        if (rc != 0 || r.status != SPARCL_TUNING_OK)
            continue; /* the first look stands */
        ++timed;
        ++k->looks;
        double cpu = tune_child_cpu_ms(job->child);
        if (r.median_ms < k->ms) {
            faster += r.median_ms < k->first_ms / TUNE_LOOK_NOTABLE;
            k->ms = r.median_ms;
        }
        if (cpu >= 0 && (k->cpu_ms < 0 || cpu < k->cpu_ms))
            k->cpu_ms = cpu;
    }
    if (rc == 1)
        return 1;
    printf("second look: %d of %d candidates within %gx of the fastest timed again in %.1f s, "
           "%d faster than their first look by more than %.0f%%\n",
           timed, due, job->within, 1e-3 * (tool_now_ms() - t0), faster,
           100 * (TUNE_LOOK_NOTABLE - 1));
    for (int i = 0; i < l->n; ++i) {
        const tune_look *k = &l->v[i];
        if (k->looks > 1 && k->ms < k->first_ms / TUNE_LOOK_NOTABLE) {
            char list[512];
            sparcl_params_format(&k->params, list, sizeof list);
            printf("  %s: %.3f ms, then %.3f ms\n", list, k->first_ms, k->ms);
        }
    }
    return 0;
}

/* Writes to out[] (up to count) the indices of l's candidates with the
 * smallest key (the faster look, or the smaller CPU time where known). */
static int smallest(const tune_looks *l, int by_cpu, int count, int *out)
{
    int n = 0;
    for (int i = 0; i < l->n; ++i) {
        double key = by_cpu ? l->v[i].cpu_ms : l->v[i].ms;
        if (!(key >= 0) || !isfinite(key))
            continue;
        int j = n < count ? n++ : count;
        if (j == count) {
            double last = by_cpu ? l->v[out[j - 1]].cpu_ms : l->v[out[j - 1]].ms;
            if (key >= last)
                continue;
            --j;
        }
        for (; j > 0; --j) {
            double prev = by_cpu ? l->v[out[j - 1]].cpu_ms : l->v[out[j - 1]].ms;
            if (prev <= key)
                break;
            out[j] = out[j - 1];
        }
        out[j] = i;
    }
    return n;
}

int tune_looks_finalists(const tune_looks *l, int count, int cheapest, sparcl_params *out, int size)
{
    int idx[TUNE_LOOK_FINALISTS_MAX], n = 0;
    int want[2] = {count, cheapest};
    for (int pass = 0; pass < 2; ++pass) {
        int k = smallest(
            l, pass, want[pass] < TUNE_LOOK_FINALISTS_MAX ? want[pass] : TUNE_LOOK_FINALISTS_MAX,
            idx);
        for (int i = 0; i < k && n < size; ++i) {
            int seen = 0;
            for (int j = 0; j < n && !seen; ++j)
                seen = tune_same_params(&out[j], &l->v[idx[i]].params);
            if (!seen)
                out[n++] = l->v[idx[i]].params;
        }
    }
    return n;
}
