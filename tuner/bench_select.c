/*
 * bench_select.c -- sparcl-bench's dynamic block selection rows (see
 * bench_select.h).  The selection's own time is measured as the whole
 * call minus a plain plan's forward over the layout the call chose (read
 * back with sparcl_plan_read_selection()), so both forwards walk the same
 * tiles.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench_select.h"
#include "select_inputs.h"
#include "tool_timing.h"

#define DIM 64
#define BLOCK 64

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Milliseconds of one forward of plan, or a negative value on failure. */
static double one_ms(sparcl_ctx *ctx, sparcl_plan *plan, cl_mem *m)
{
    cl_event mark = NULL, ev = NULL;
    const double w0 = tool_now_ms();
    if (clEnqueueMarkerWithWaitList(sparcl_ctx_cl_queue(ctx), 0, NULL, &mark) != CL_SUCCESS ||
        sparcl_plan_forward(plan, m[0], m[1], m[2], m[3], NULL, 0, NULL, &ev) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: select: %s\n", sparcl_ctx_errmsg(ctx));
        if (mark)
            clReleaseEvent(mark);
        return -1;
    }
    clWaitForEvents(1, &ev);
    const double ms = tool_event_span_ms(mark, ev, tool_now_ms() - w0);
    clReleaseEvent(mark);
    clReleaseEvent(ev);
    return ms;
}

/* Medians of `reps` calls of each plan (NULL plans skipped), the calls of
 * the plans interleaved so that a change of load hits them alike, after 2
 * warm-ups each.  0 on failure. */
static int medians(sparcl_ctx *ctx, sparcl_plan *const *plans, int n, cl_mem *m, int reps,
                   double *out)
{
    double *ms = malloc(sizeof *ms * (size_t)reps * (size_t)n);
    int ok = ms != NULL;
    for (int r = -2; ok && r < reps; ++r)
        for (int p = 0; ok && p < n; ++p) {
            const double t = one_ms(ctx, plans[p], m);
            ok = t >= 0;
            if (r >= 0)
                ms[p * reps + r] = t;
        }
    for (int p = 0; ok && p < n; ++p) {
        double *x = ms + p * reps;
        qsort(x, (size_t)reps, sizeof *x, cmp);
        out[p] = reps % 2 ? x[reps / 2] : 0.5 * (x[reps / 2 - 1] + x[reps / 2]);
    }
    free(ms);
    return ok;
}

static sparcl_plan *plan_of(sparcl_ctx *ctx, int n, int heads, int rule, int k, float tau,
                            const sparcl_layout *layout)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = d.kv_heads = heads;
    d.q_len = d.kv_len = n;
    d.head_dim = DIM;
    d.layout = layout;
    d.select = rule;
    d.select_k = k;
    d.select_tau = tau;
    d.select_block = BLOCK;
    sparcl_plan *p = NULL;
    if (sparcl_plan_init(ctx, &p, &d) != SPARCL_OK)
        fprintf(stderr, "sparcl-bench: select: %s\n", sparcl_ctx_errmsg(ctx));
    return p;
}

int bench_select(sparcl_ctx *ctx, int n, int heads, int reps)
{
    const size_t count = (size_t)heads * n * DIM;
    float *x = malloc(sizeof *x * 3 * count);
    if (!x)
        return 1;
    select_inputs(heads, n, DIM, BLOCK, 4, 1, x, x + count, x + 2 * count);
    cl_mem m[4];
    for (int i = 0; i < 4; ++i)
        m[i] = clCreateBuffer(sparcl_ctx_cl_context(ctx),
                              CL_MEM_READ_WRITE | (i < 3 ? CL_MEM_COPY_HOST_PTR : 0),
                              sizeof *x * count, i < 3 ? x + i * count : NULL, NULL);
    free(x);
    int failures = 0;
    sparcl_plan *dense = plan_of(ctx, n, heads, SPARCL_SELECT_NONE, 0, 0, NULL);
    failures += !dense;
    printf("\ndynamic block selection: n=%d, %d heads, head_dim %d, block %d, not causal, "
           "structured inputs (sparcl-select-quality); medians of %d calls, the three plans "
           "of a row interleaved\n",
           n, heads, DIM, BLOCK, reps);
    printf("%-14s %8s %10s %10s %10s %8s %9s %11s\n", "rule", "density", "whole_ms", "sparse_ms",
           "select_ms", "sel/fwd", "dense_ms", "whole/dense");
    const int nkb = (n + BLOCK - 1) / BLOCK;
    const struct {
        int rule, k;
        float tau;
    } rows[] = {{SPARCL_SELECT_TOPK, nkb / 4, 0},
                {SPARCL_SELECT_TOPK, nkb / 8, 0},
                {SPARCL_SELECT_MASS, 0, 0.9f}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r) {
        sparcl_plan *sel =
            plan_of(ctx, n, heads, rows[r].rule, rows[r].k > 0 ? rows[r].k : 1, rows[r].tau, NULL);
        sparcl_layout *chosen = NULL;
        sparcl_plan *sparse = NULL;
        if (sel && one_ms(ctx, sel, m) >= 0 &&
            sparcl_plan_read_selection(sel, 0, &chosen) == SPARCL_OK)
            sparse = plan_of(ctx, n, heads, SPARCL_SELECT_NONE, 0, 0, chosen);
        sparcl_plan *both[3] = {sel, sparse, dense};
        double t[3] = {-1, -1, -1};
        if (!sparse || !medians(ctx, both, dense ? 3 : 2, m, reps, t))
            t[1] = -1;
        const double whole = t[0], fwd = t[1];
        char name[32];
        if (rows[r].rule == SPARCL_SELECT_TOPK)
            snprintf(name, sizeof name, "top-k k=%d", rows[r].k > 0 ? rows[r].k : 1);
        else
            snprintf(name, sizeof name, "mass tau=%.2f", rows[r].tau);
        if (fwd < 0) {
            printf("%-14s failed\n", name);
            ++failures;
        } else {
            printf("%-14s %8.4f %10.1f %10.1f %10.1f %7.1f%% %9.1f %11.2f\n", name,
                   sparcl_layout_density(chosen), whole, fwd, whole - fwd,
                   100.0 * (whole - fwd) / fwd, t[2], t[2] > 0 ? whole / t[2] : 0.0);
        }
        sparcl_layout_free(chosen);
        sparcl_plan_free(sparse);
        sparcl_plan_free(sel);
    }
    sparcl_plan_free(dense);
    for (int i = 0; i < 4; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
    return failures;
}
