/*
 * bench_varlen.h -- sparcl-bench's packed variable-length batch rows
 * (--varlen): one batch of sequences of mixed lengths, causal per
 * sequence, run packed (sparcl_layout_init_varlen, one call) against the
 * same sequences padded to the longest one (a batched causal plan), with
 * what a new batch's layout and plan cost.
 */
#ifndef SPARCL_BENCH_VARLEN_H
#define SPARCL_BENCH_VARLEN_H

#include "sparcl.h"

/* Prints the table for `heads` heads (head_dim 64) with the median of
 * `reps` interleaved calls after 2 warm-ups; fma_gflops (the probe's peak,
 * 0 if unknown) gives the fractions of peak.  params (NULL: each plan's
 * own choice) overrides both plans' forward parameters (--set).  Returns the number of rows
 * that failed (a padded and a packed result that disagree fail). */
int bench_varlen(sparcl_ctx *ctx, int heads, int reps, double fma_gflops,
                 const sparcl_params *params);

#endif
