/*
 * tool_timing.h -- how the command-line tools time one library call on the
 * device: from the end of a marker enqueued just before the call to the end
 * of the event the call returns (the queue is in order), so that neither the
 * host's enqueue overhead nor earlier work counts.
 */
#ifndef SPARCL_TOOL_TIMING_H
#define SPARCL_TOOL_TIMING_H

#include "sparcl.h"

/* The host's monotonic clock in milliseconds. */
double tool_now_ms(void);

/* Milliseconds from the end of `before` to the end of `last`, two profiled
 * events of one queue.  Where the driver's timestamps cannot give that span
 * (zero or negative: NVIDIA's OpenCL gave the marker the backward returns,
 * which waits on two kernels, an end time before the marker enqueued ahead
 * of the call), returns `wall_ms`, the host's time from just before the
 * enqueue to the end of the wait. */
double tool_event_span_ms(cl_event before, cl_event last, double wall_ms);

#endif
