/*
 * oracle_kinds.h -- double-precision oracles for the other attention kinds,
 * written for the tests and independently of the library: alpha-entmax by
 * sorting (closed forms for alpha = 2 and 1.5) or by plain bisection,
 * FAVOR+ linear attention from explicit feature matrices, and Linformer
 * from explicit projections.  Tensors are contiguous [B, H, S, D].
 */
#ifndef SPARCL_TEST_ORACLE_KINDS_H
#define SPARCL_TEST_ORACLE_KINDS_H

#include "oracle.h"

/* alpha-entmax of n scores s (already scaled; -inf = not attended) into p.
 * Returns tau in (alpha - 1) * s units, -inf when nothing is attended. */
double oracle_entmax(const double *s, int n, double alpha, double *p);

/* Attention with alpha-entmax weights; tau (may be NULL) gets each row's
 * threshold, -inf for rows attending to nothing (whose output is 0). */
void oracle_entmax_attention(int batch, int q_heads, int kv_heads, int q_len, int kv_len,
                             int dim, double scale, double alpha, oracle_pred pred,
                             const void *self, const float *q, const float *k, const float *v,
                             double *out, double *tau);

/* FAVOR+ with the m x dim features omega (as the plan reads them back):
 * the paper's positive features with its stabilization (per-row maximum
 * for queries, per-(batch, head) maximum for keys, +1e-6), non-causal or
 * causal (j <= i). */
void oracle_favor(int batch, int q_heads, int kv_heads, int q_len, int kv_len, int dim,
                  double scale, int causal, int m, const float *omega, const float *q,
                  const float *k, const float *v, double *out);

/* Linformer: softmax attention of q over E k and F v (E, F: proj x kv_len). */
void oracle_linformer(int batch, int q_heads, int kv_heads, int q_len, int kv_len, int dim,
                      double scale, int proj, const float *e, const float *f, const float *q,
                      const float *k, const float *v, double *out, double *lse);

#endif
