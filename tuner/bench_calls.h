/*
 * bench_calls.h -- how sparcl-bench's extra tables (dynamic selection,
 * packed variable-length batches) time plans: the tensors of one call as
 * device buffers, one call timed by OpenCL events (tool_timing.h), and the
 * medians of several plans' calls interleaved so that a change of load
 * hits them alike.
 */
#ifndef SPARCL_BENCH_CALLS_H
#define SPARCL_BENCH_CALLS_H

#include "sparcl.h"

/* The tensors of a call: q, k, v, out, lse, dout, dq, dk, dv. */
enum { T_Q, T_K, T_V, T_OUT, T_LSE, T_DOUT, T_DQ, T_DK, T_DV, T_COUNT };

/* Enqueues one call on the context's queue and returns its event. */
typedef sparcl_status (*bench_enqueue_fn)(void *arg, cl_event *event);

/* Milliseconds of the call `enqueue(arg, ...)` makes, from a marker just
 * before it to its event, or a negative value on failure (the context's
 * message printed to stderr). */
double bench_timed_ms(sparcl_ctx *ctx, bench_enqueue_fn enqueue, void *arg);

/* Milliseconds of one forward (or, with backward, one backward) of plan
 * over the tensors m[T_COUNT], or a negative value on failure (the message
 * printed to stderr). */
double bench_call_ms(sparcl_ctx *ctx, sparcl_plan *plan, const cl_mem *m, int backward);

/* Medians of `reps` calls of each of the n plans (NULL plans give 0),
 * interleaved, after 2 warm-ups each, into out[0 .. n).  Plan p runs over
 * the tensors m + p * stride (stride 0: all over m).  0 on failure. */
int bench_medians(sparcl_ctx *ctx, sparcl_plan *const *plans, int n, const cl_mem *m, int stride,
                  int reps, int backward, double *out);

#endif
