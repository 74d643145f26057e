/*
 * attention_kinds.h -- what a plan computes besides softmax over a layout:
 * sparse normalizations (alpha-entmax, run by the attn_entmax kernel through
 * the ordinary tiled plan), Performer FAVOR+ (favor.c) and Linformer
 * (linformer.c).  plan.c calls in here through small hooks only, so each
 * kind keeps its resources and its dispatch in its own file.
 */
#ifndef SPARCL_ATTENTION_KINDS_H
#define SPARCL_ATTENTION_KINDS_H

#include "sparcl.h"

/* Checks the normalization and attention-kind fields of a descriptor whose
 * shapes are already valid: SPARCL_ERR_INVALID_ARGUMENT for out-of-range
 * values, SPARCL_ERR_NOT_SUPPORTED for combinations not implemented. */
sparcl_status sparcl__kind_check(sparcl_ctx *ctx, const sparcl_plan_desc *d);

/* The attn_entmax solver a descriptor needs: 0 for softmax, 1 for
 * alpha = 2 (sparsemax), 2 for alpha = 1.5, 3 for other alphas (bisection).
 * *alpha receives the effective alpha. */
int sparcl__entmax_norm(const sparcl_plan_desc *d, float *alpha);

/* Double-precision entmax weights of the n attended scaled scores s[] of
 * one row (any order; a -inf entry gets weight 0): writes p[] and returns
 * tau (in z units), or -inf when n is 0.  A row with a NaN or +inf score,
 * or whose scores are all -inf, is undefined: p[] and tau are NaN
 * (reference_entmax.c). */
double sparcl__reference_entmax_row(const double *s, int64_t n, double alpha, double *p);

/* FAVOR+ and Linformer plans: creation (after sparcl__plan_desc_check),
 * the forward call (after the buffer checks of plan.c), and freeing (NULL
 * does nothing). */
struct sparcl__favor;
struct sparcl__linformer;
sparcl_status sparcl__favor_plan_init(sparcl_ctx *ctx, sparcl_plan **out,
                                      const sparcl_plan_desc *desc);
sparcl_status sparcl__favor_forward(sparcl_plan *p, cl_command_queue queue,
                                    const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                    cl_mem out, cl_mem lse, cl_uint num_wait,
                                    const cl_event *wait, cl_event *event);
void sparcl__favor_free(struct sparcl__favor *f);
sparcl_status sparcl__favor_redraw(sparcl_plan *p, uint64_t seed);

sparcl_status sparcl__linformer_plan_init(sparcl_ctx *ctx, sparcl_plan **out,
                                          const sparcl_plan_desc *desc);
sparcl_status sparcl__linformer_forward(sparcl_plan *p, cl_command_queue queue,
                                        const sparcl_strides *ts, cl_mem q, cl_mem k, cl_mem v,
                                        cl_mem out, cl_mem lse, cl_uint num_wait,
                                        const cl_event *wait, cl_event *event);
void sparcl__linformer_free(struct sparcl__linformer *l);
sparcl_status sparcl__linformer_redraw(sparcl_plan *p, uint64_t seed);

#endif
