/*
 * varlen_batch.h -- the packed variable-length batch that sparcl-bench
 * --varlen runs and sparcl-tune's "varlen" problems tune, so that the
 * benchmark's plan finds the tuned row of its own problem: 8 sequences in
 * the length mix of a serving prefill batch (a few long prompts, many
 * short: 3000, 1800, 1200, 700, 400, 200, 100 and 17 of 7417 tokens),
 * scaled to n tokens, causal per sequence.
 */
#ifndef SPARCL_VARLEN_BATCH_H
#define SPARCL_VARLEN_BATCH_H

#include "sparcl.h"

#define VARLEN_BATCH_COUNT 8

/* The offsets of the batch of n >= 1 tokens into cu[0 .. 8]: sequence s
 * holds n * mix[s] / 7417 tokens (rounded down; the last takes the rest),
 * so n = 7417 gives the mix itself; short batches have empty sequences. */
void varlen_batch_offsets(int n, int32_t *cu);

/* The packed layout of that batch (1 head, causal per sequence) at block
 * `block` (sequence layouts at the same block). */
sparcl_status varlen_batch_layout(sparcl_ctx *ctx, int n, int block, sparcl_layout **out);

#endif
