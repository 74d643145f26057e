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

double bench_call_ms(sparcl_ctx *ctx, sparcl_plan *plan, const cl_mem *m, int backward)
{
    cl_event mark = NULL, ev = NULL;
    const double w0 = tool_now_ms();
    sparcl_status st = SPARCL_ERR_OPENCL;
    if (clEnqueueMarkerWithWaitList(sparcl_ctx_cl_queue(ctx), 0, NULL, &mark) == CL_SUCCESS)
        st = backward ? sparcl_plan_backward(plan, m[T_Q], m[T_K], m[T_V], m[T_OUT], m[T_LSE],
                                             m[T_DOUT], m[T_DQ], m[T_DK], m[T_DV], 0, NULL, &ev)
                      : sparcl_plan_forward(plan, m[T_Q], m[T_K], m[T_V], m[T_OUT], m[T_LSE], 0,
                                            NULL, &ev);
    if (st != SPARCL_OK) {
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
