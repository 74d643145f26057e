/*
 * bench_paged.h -- sparcl-bench's KV cache rows (--paged P): one decoding
 * step (one query row per head, GQA 32/8, head_dim 128) over a 32k-token
 * cache through sparcl_plan_forward_cache(), contiguous and paged (pages of
 * P tokens in a shuffled pool), as fractions of the measured bandwidth.
 */
#ifndef SPARCL_BENCH_PAGED_H
#define SPARCL_BENCH_PAGED_H

#include "sparcl.h"

/* Prints the two rows for q, the caches and out stored as `dtype`, the median of `reps` interleaved
 * calls after 2 warm-ups each; bw_gbs (the probe's bandwidth, 0 if unknown) gives the fractions.
 * Returns the number of rows that failed (the paged result must equal the contiguous one). */
int bench_paged(sparcl_ctx *ctx, int page, int dtype, int reps, double bw_gbs);

#endif
