/*
 * tool_timing.c -- timing one library call on the device (tool_timing.h).
 */
#include "tool_timing.h"

#include <time.h>

double tool_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

double tool_event_span_ms(cl_event before, cl_event last, double wall_ms)
{
    cl_ulong t0 = 0, t1 = 0;
    if (clGetEventProfilingInfo(before, CL_PROFILING_COMMAND_END, sizeof t0, &t0, NULL) !=
            CL_SUCCESS ||
        clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) !=
            CL_SUCCESS ||
        t1 <= t0)
        return wall_ms;
    return (double)(t1 - t0) * 1e-6;
}
