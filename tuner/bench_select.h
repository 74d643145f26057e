/*
 * bench_select.h -- sparcl-bench's dynamic block selection rows (--select
 * N): per rule, the whole call (selection + sparse kernels), a plain plan
 * over the chosen layout, their difference (the selection), and the dense
 * plan, for the forward at length N, the backward at N / 4, and decoding
 * (one query row over 4 N keys).
 */
#ifndef SPARCL_BENCH_SELECT_H
#define SPARCL_BENCH_SELECT_H

#include "sparcl.h"

/* parts: a comma-separated subset of "fwd", "bwd", "dec" (NULL: all).
 * Prints the tables for length n and `heads` heads (head_dim 64, not causal,
 * block 64) with the median of `reps` calls after 2 warm-ups; returns the
 * number of rows that failed. */
int bench_select(sparcl_ctx *ctx, int n, int heads, int reps, const char *parts);

#endif
