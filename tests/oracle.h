/*
 * oracle.h -- brute-force double-precision oracles for the tests, written
 * independently of the library: masks come from predicates taken straight
 * from the definitions, and attention is computed over every (i, j) pair.
 */
#ifndef SPARCL_TEST_ORACLE_H
#define SPARCL_TEST_ORACLE_H

#include <stddef.h>
#include <stdint.h>

/* Does query i of head h attend to key j? */
typedef int (*oracle_pred)(const void *self, int h, int i, int j);

/* Softmax attention over contiguous [B, H, S, D] arrays.  Heads of the
 * predicate are query heads.  lse may be NULL. */
void oracle_attention(int batch, int q_heads, int kv_heads, int q_len, int kv_len, int dim,
                      double scale, oracle_pred pred, const void *self, const float *q,
                      const float *k, const float *v, double *out, double *lse);

/* n uniform floats in [-1, 1] from a fixed seed. */
void oracle_fill(float *x, size_t n, uint64_t seed);

/* Largest |a[i] - b[i]|; -inf == -inf counts as 0, NaN as infinity. */
double oracle_max_abs_diff_f(const float *a, const double *b, size_t n);

#endif
