/*
 * reference.h -- the pieces of the double-precision CPU reference that the
 * forward (reference.c) and the backward (reference_bwd.c) share.
 */
#ifndef SPARCL_REFERENCE_H
#define SPARCL_REFERENCE_H

#include "sparcl.h"

/* Validates the shapes and the layout of `d` against each other. */
sparcl_status sparcl__reference_check(sparcl_ctx *ctx, const sparcl_plan_desc *d);

/* The descriptor's scale (0 means 1/sqrt(head_dim)). */
double sparcl__reference_scale(const sparcl_plan_desc *d);

/* Row i of query head h: writes the keys it attends to (layout and causal
 * rule, ascending) to keys[0..*n) and their softmax probabilities to
 * p[0..*n); qi is the query row, kh the kv head's keys.  keys and p hold
 * kv_len entries.  Returns the row's LSE, -inf when *n == 0. */
double sparcl__reference_row(const sparcl_plan_desc *d, int h, int i, const float *qi,
                             const float *kh, int *keys, double *p, int64_t *n);

/* Double-precision entmax weights of the n attended scaled scores s[] of
 * one row (any order; a -inf entry gets weight 0): writes p[] and returns
 * tau (in z units), or -inf when n is 0.  A row with a NaN or +inf score,
 * or whose scores are all -inf, is undefined: p[] and tau are NaN
 * (reference_entmax.c). */
double sparcl__reference_entmax_row(const double *s, int64_t n, double alpha, double *p);

/* The backward of FAVOR+ and Linformer descriptors whose shapes passed
 * sparcl__reference_check (reference_lowrank_bwd.c): checks the kind's
 * fields, overwrites dq, dk, dv and (Linformer, when not NULL) de, df. */
sparcl_status sparcl__reference_backward_lowrank(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                                 const float *q, const float *k, const float *v,
                                                 const float *dout, double *dq, double *dk,
                                                 double *dv, double *de, double *df);

/* Adaptive span (reference_span.c): the forward and the backward (dspans
 * may be NULL) of a descriptor with attention SPARCL_ATTENTION_SPAN; they
 * read it by its struct_size and check its shapes and span fields. */
sparcl_status sparcl__reference_span_forward(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                             const float *q, const float *k, const float *v,
                                             double *out, double *lse);
sparcl_status sparcl__reference_span_backward(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                              const float *q, const float *k, const float *v,
                                              const float *dout, double *dq, double *dk, double *dv,
                                              double *dspans);
/* The LSH attention forward (reference_lsh.c) of a descriptor whose shapes
 * passed sparcl__reference_check: checks the LSH fields, overwrites out
 * and lse (when not NULL); k is not read (shared QK). */
sparcl_status sparcl__reference_lsh_forward(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                            const float *q, const float *v, double *out,
                                            double *lse);

#endif
