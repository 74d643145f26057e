/*
 * select_inputs.h -- structured inputs for dynamic block selection (the
 * quality table, the benchmark rows, sparcl-layout's "selected" pattern):
 * low-rank Q and K with planted local dependencies and a few long-range
 * ones, the structure MInference-style selection is meant to find.
 */
#ifndef SPARCL_SELECT_INPUTS_H
#define SPARCL_SELECT_INPUTS_H

#include <stdint.h>

/* Fills contiguous [heads, n, d] q, k, v (v may be NULL).  Per head: q and
 * k share positional features (cos and sin of min(d / 4, 16) frequencies
 * below pi / block) whose products decay with |i - j| over about a block
 * (local dependencies), plus rank-8 Gaussian content codes (the same code
 * in q_i and k_i; k with a little noise); and `far` planted pairs of blocks
 * (r, t), t < r, share a strong topic vector added to the queries of block
 * r and the keys of block t (long-range dependencies causal attention
 * sees). */
void select_inputs(int heads, int n, int d, int block, int far, uint64_t seed, float *q, float *k,
                   float *v);

#endif
