/*
 * bench_multidev.c -- sparcl-bench --multidev N: one attention call on one
 * device against the same call cut over N devices (sparcl_multi_plan_*), by
 * heads, query rows and keys.  Both sides go through the multi-device host
 * calls (one context, or N), so both pay the same copies in and out and
 * the difference is the sharing of the work.  Times are wall-clock
 * medians of --reps calls after one warm-up; max_diff is the largest
 * |out difference| between the two.  The attended pairs of the busiest
 * share over the mean (balance) says how evenly the cut spreads the work.
 *
 * POCL exposes several CPU devices with POCL_DEVICES="pthread pthread";
 * each one schedules on every core unless POCL_CPU_MAX_CU_COUNT limits it,
 * so on a 2-core machine two devices share the same two cores: the speedup
 * measures the overheads, not a second chip.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_multidev.h"
#include "tool_timing.h"

typedef struct md_case {
    const char *name;
    int n, q_len, heads, kv_heads, dim, causal, window, backward;
} md_case;

static const md_case md_cases[] = {
    {"causal-4k", 4096, 4096, 8, 8, 64, 1, 0, 0},
    {"window-16k", 16384, 16384, 8, 8, 64, 0, 256, 0},
    {"bwd-causal-4k", 4096, 4096, 8, 8, 64, 1, 0, 1},
    {"decode-gqa-32k", 32768, 1, 32, 8, 128, 0, 0, 0},
};

static const char *mode_names[] = {"heads", "queries", "keys"};

static void md_fill(float *x, size_t n, unsigned seed)
{
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / (double)(1 << 24) * 2.0 - 1.0);
    }
}

static int cmp_ms(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct md_buffers {
    float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv, *ref;
} md_buffers;

/* Median wall ms of `reps` calls (after one warm-up); -1 on failure. */
static double time_plan(sparcl_multi_plan *mp, const md_case *c, md_buffers *b, int reps,
                        sparcl_ctx *lead)
{
    double *ms = malloc(sizeof *ms * (size_t)reps);
    double med = -1;
    for (int r = -1; ms && r < reps; ++r) {
        const double t0 = tool_now_ms();
        sparcl_status st =
            c->backward ? sparcl_multi_plan_backward_host(mp, b->q, b->k, b->v, b->out, b->lse,
                                                          b->dout, b->dq, b->dk, b->dv)
                        : sparcl_multi_plan_forward_host(mp, b->q, b->k, b->v, b->out, b->lse);
        if (st != SPARCL_OK) {
            fprintf(stderr, "sparcl-bench: %s: %s\n", c->name, sparcl_ctx_errmsg(lead));
            free(ms);
            return -1;
        }
        if (r >= 0)
            ms[r] = tool_now_ms() - t0;
    }
    if (ms) {
        qsort(ms, (size_t)reps, sizeof *ms, cmp_ms);
        med = ms[reps / 2];
    }
    free(ms);
    return med;
}

/* Busiest share's pairs over the mean of all shares. */
static double balance(const sparcl_multi_plan *mp)
{
    const int n = sparcl_multi_plan_shard_count(mp);
    double sum = 0, most = 0;
    for (int s = 0; s < n; ++s) {
        sparcl_shard_info info;
        sparcl_shard_info_init(&info);
        if (sparcl_multi_plan_shard(mp, s, &info) != SPARCL_OK)
            return 0;
        sum += (double)info.pairs;
        most = (double)info.pairs > most ? (double)info.pairs : most;
    }
    return sum > 0 ? most / (sum / n) : 0;
}

static int run_md_case(sparcl_ctx **ctx, int devices, const md_case *c, int reps)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = c->heads;
    d.kv_heads = c->kv_heads;
    d.q_len = c->q_len;
    d.kv_len = c->n;
    d.head_dim = c->dim;
    d.causal = c->causal;
    sparcl_layout *l = NULL;
    if (c->window && sparcl_layout_init_window(ctx[0], &l, 1, c->q_len, c->n, 64, c->window,
                                               c->window) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: %s: %s\n", c->name, sparcl_ctx_errmsg(ctx[0]));
        return 0;
    }
    d.layout = l;
    const size_t nq = (size_t)c->heads * c->q_len * c->dim,
                 nk = (size_t)c->kv_heads * c->n * c->dim, nl = (size_t)c->heads * c->q_len;
    md_buffers b = {malloc(4 * nq), malloc(4 * nk), malloc(4 * nk), malloc(4 * nq), malloc(4 * nl),
                    malloc(4 * nq), malloc(4 * nq), malloc(4 * nk), malloc(4 * nk), malloc(4 * nq)};
    int ok = b.q && b.k && b.v && b.out && b.lse && b.dout && b.dq && b.dk && b.dv && b.ref;
    if (ok) {
        md_fill(b.q, nq, 1);
        md_fill(b.k, nk, 2);
        md_fill(b.v, nk, 3);
        md_fill(b.dout, nq, 4);
    }
    for (int mode = 0; ok && mode < 3; ++mode) {
        if (c->q_len == 1 && mode == SPARCL_SHARD_QUERIES)
            continue; /* one row cannot be cut */
        sparcl_multi_plan *single = NULL, *multi = NULL;
        if (sparcl_multi_plan_init(ctx, 1, &single, &d, mode) != SPARCL_OK ||
            sparcl_multi_plan_init(ctx, devices, &multi, &d, mode) != SPARCL_OK) {
            fprintf(stderr, "sparcl-bench: %s: %s\n", c->name, sparcl_ctx_errmsg(ctx[0]));
            ok = 0;
        }
        if (ok && c->backward &&
            (sparcl_multi_plan_prepare_backward(single) != SPARCL_OK ||
             sparcl_multi_plan_prepare_backward(multi) != SPARCL_OK)) {
            fprintf(stderr, "sparcl-bench: %s: %s\n", c->name, sparcl_ctx_errmsg(ctx[0]));
            ok = 0;
        }
        /* The backward needs the forward's out and lse. */
        if (ok && c->backward)
            ok = sparcl_multi_plan_forward_host(single, b.q, b.k, b.v, b.out, b.lse) == SPARCL_OK;
        double t1 = ok ? time_plan(single, c, &b, reps, ctx[0]) : -1;
        if (t1 >= 0)
            memcpy(b.ref, c->backward ? b.dq : b.out, 4 * nq);
        double tn = t1 >= 0 ? time_plan(multi, c, &b, reps, ctx[0]) : -1;
        ok = tn >= 0;
        if (ok) {
            const float *got = c->backward ? b.dq : b.out;
            double diff = 0;
            for (size_t i = 0; i < nq; ++i)
                diff = fmax(diff, fabs((double)got[i] - b.ref[i]));
            printf("%-15s %-8s %7d %9.2f %9.2f %8.2f %8.2f %10.2e\n", c->name, mode_names[mode],
                   sparcl_multi_plan_shard_count(multi), t1, tn, t1 / tn, balance(multi), diff);
            fflush(stdout);
        }
        sparcl_multi_plan_free(single);
        sparcl_multi_plan_free(multi);
    }
    float *all[] = {b.q, b.k, b.v, b.out, b.lse, b.dout, b.dq, b.dk, b.dv, b.ref};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        free(all[i]);
    sparcl_layout_free(l);
    return ok;
}

int bench_multidev_run(int devices, int reps)
{
    if (devices < 2 || devices > SPARCL_MULTI_MAX_DEVICES) {
        fprintf(stderr, "sparcl-bench: --multidev takes 2 .. %d devices\n",
                SPARCL_MULTI_MAX_DEVICES);
        return 2;
    }
    char list[4096];
    int available = 0;
    if (sparcl_device_list(list, sizeof list, &available) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: %s\n", sparcl_ctx_errmsg(NULL));
        return 1;
    }
    sparcl_ctx **ctx = calloc((size_t)devices, sizeof *ctx);
    int failures = 0;
    for (int k = 0; ctx && k < devices; ++k) {
        char sel[16];
        snprintf(sel, sizeof sel, "%d", k < available ? k : 0);
        if (sparcl_ctx_init_device(&ctx[k], sel) != SPARCL_OK) {
            fprintf(stderr, "sparcl-bench: device %s: %s\n", sel, sparcl_ctx_errmsg(NULL));
            failures = 1;
            break;
        }
        printf("contexts[%d]: %s\n", k, sparcl_ctx_device_string(ctx[k]));
    }
    if (available < devices)
        printf("note: %d OpenCL device(s) found; contexts beyond them share device 0 (set "
               "POCL_DEVICES=\"pthread pthread\" for several POCL devices)\n",
               available);
    const char *cu = getenv("POCL_CPU_MAX_CU_COUNT");
    printf("POCL_CPU_MAX_CU_COUNT: %s\n", cu ? cu : "unset (each device schedules on every core)");
    printf("wall ms: median of %d host calls after a warm-up, copies included; 1dev_ms: the "
           "same multi-device call on contexts[0] alone\n\n",
           reps);
    printf("%-15s %-8s %7s %9s %9s %8s %8s %10s\n", "case", "cut", "shares", "1dev_ms", "Ndev_ms",
           "speedup", "balance", "max_diff");
    for (size_t i = 0; !failures && i < sizeof md_cases / sizeof md_cases[0]; ++i)
        failures += !run_md_case(ctx, devices, &md_cases[i], reps);
    for (int k = 0; ctx && k < devices; ++k)
        sparcl_ctx_free(ctx[k]);
    free(ctx);
    return failures ? 1 : 0;
}
