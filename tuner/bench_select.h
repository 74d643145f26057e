/*
 * bench_select.h -- sparcl-bench's dynamic block selection rows (--select
 * N): per rule, the whole call (selection + sparse forward), the sparse
 * forward alone over the chosen layout, their difference (the selection),
 * and the dense forward.
 */
#ifndef SPARCL_BENCH_SELECT_H
#define SPARCL_BENCH_SELECT_H

#include "sparcl.h"

/* Prints the table for length n and `heads` heads (head_dim 64, not causal,
 * block 64) with the median of `reps` calls after 2 warm-ups; returns the
 * number of rows that failed. */
int bench_select(sparcl_ctx *ctx, int n, int heads, int reps);

#endif
