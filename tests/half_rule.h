/*
 * half_rule.h -- what the half-storage suites share: rounding host tensors
 * to a storage type, and FlashAttention's accuracy rule for half storage.
 *
 * The rule: against a double-precision reference computed on the
 * half-rounded inputs, a half result's largest error is at most twice that
 * of a plain fp32 computation on the same inputs whose output is rounded
 * to the same storage type, plus a tiny absolute floor.
 */
#ifndef SPARCL_TEST_HALF_RULE_H
#define SPARCL_TEST_HALF_RULE_H

#include <stddef.h>
#include <stdint.h>

/* Rounds n floats x to the dtype's storage (to nearest even, through the
 * library's host conversions): bits receives the stored elements (unused
 * for F32) and out their values as floats. */
void half_round(int dtype, const float *x, float *out, uint16_t *bits, size_t n);

/* The values of n stored elements of a half dtype. */
void half_decode(int dtype, const uint16_t *bits, float *out, size_t n);

/* Asserts the rule for n outputs: got (the half result, decoded), ref (the
 * reference), plain (the fp32 computation, unrounded; rounded here).  The
 * floor is floor_rel times max(1, the largest |ref|).  `what` names the
 * case in the message and the log.  Returns sparcl's error. */
double half_rule_assert(const char *what, int dtype, const float *got, const double *ref,
                        const float *plain, size_t n, double floor_rel);

/* How many of n stored elements differ from want[] rounded to nearest
 * even: an output rounded by truncation would miss about half. */
size_t half_rounding_misses(int dtype, const uint16_t *bits, const float *want, size_t n);

#endif
