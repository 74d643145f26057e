/*
 * bench_calls.c -- timed plan calls for sparcl-bench's extra tables (see
 * bench_calls.h).
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench_calls.h"
#include "tool_timing.h"

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_timed_ms(sparcl_ctx *ctx, bench_enqueue_fn enqueue, void *arg)
{
    cl_event mark = NULL, ev = NULL;
    const double w0 = tool_now_ms();
    if (clEnqueueMarkerWithWaitList(sparcl_ctx_cl_queue(ctx), 0, NULL, &mark) != CL_SUCCESS ||
        enqueue(arg, &ev) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: %s\n", sparcl_ctx_errmsg(ctx));
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

typedef struct plan_call {
    sparcl_plan *plan;
    const cl_mem *m;
    int backward;
} plan_call;

static sparcl_status enqueue_plan_call(void *arg, cl_event *ev)
{
    const plan_call *c = arg;
    const cl_mem *m = c->m;
    return c->backward ? sparcl_plan_backward(c->plan, m[T_Q], m[T_K], m[T_V], m[T_OUT], m[T_LSE],
                                              m[T_DOUT], m[T_DQ], m[T_DK], m[T_DV], 0, NULL, ev)
                       : sparcl_plan_forward(c->plan, m[T_Q], m[T_K], m[T_V], m[T_OUT], m[T_LSE], 0,
                                             NULL, ev);
}

double bench_call_ms(sparcl_ctx *ctx, sparcl_plan *plan, const cl_mem *m, int backward)
{
    plan_call c = {plan, m, backward};
    return bench_timed_ms(ctx, enqueue_plan_call, &c);
}

int bench_medians(sparcl_ctx *ctx, sparcl_plan *const *plans, int n, const cl_mem *m, int stride,
                  int reps, int backward, double *out)
{
    double *ms = malloc(sizeof *ms * (size_t)reps * (size_t)n);
    int ok = ms != NULL;
    for (int r = -2; ok && r < reps; ++r)
        for (int p = 0; ok && p < n; ++p) {
            const double t =
                plans[p] ? bench_call_ms(ctx, plans[p], m + (size_t)p * stride, backward) : 0;
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
