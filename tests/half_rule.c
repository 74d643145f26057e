/*
 * half_rule.c -- rounding to a storage type and the accuracy rule of half
 * storage (half_rule.h), for test_half and test_half_stage.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "half_rule.h"
#include "oracle.h"
#include "sparcl.h"

void half_round(int dtype, const float *x, float *out, uint16_t *bits, size_t n)
{
    if (dtype == SPARCL_DTYPE_F32) {
        memcpy(out, x, n * sizeof *x);
        return;
    }
    const sparcl_status st = dtype == SPARCL_DTYPE_F16 ? sparcl_convert_f32_to_f16(x, bits, n)
                                                       : sparcl_convert_f32_to_bf16(x, bits, n);
    cr_assert_eq(st, SPARCL_OK);
    half_decode(dtype, bits, out, n);
}

void half_decode(int dtype, const uint16_t *bits, float *out, size_t n)
{
    const sparcl_status st = dtype == SPARCL_DTYPE_F16 ? sparcl_convert_f16_to_f32(bits, out, n)
                                                       : sparcl_convert_bf16_to_f32(bits, out, n);
    cr_assert_eq(st, SPARCL_OK);
}

double half_rule_assert(const char *what, int dtype, const float *got, const double *ref,
                        const float *plain, size_t n, double floor_rel)
{
    float *rounded = malloc(n * sizeof *rounded);
    uint16_t *bits = malloc(n * sizeof *bits);
    cr_assert(rounded && bits);
    half_round(dtype, plain, rounded, bits, n);
    double big = 1.0;
    for (size_t i = 0; i < n; ++i)
        big = fmax(big, fabs(ref[i]));
    const double err = oracle_max_abs_diff_f(got, ref, n);
    const double base = oracle_max_abs_diff_f(rounded, ref, n);
    const double floor_abs = floor_rel * big;
    cr_log_info("%s %s: error %.3g, plain fp32 rounded %.3g, ratio %.3f", what,
                sparcl_dtype_name(dtype), err, base, base > 0 ? err / base : 0.0);
    cr_assert(err <= 2.0 * base + floor_abs, "%s %s: max error %.3g > 2 x plain fp32's %.3g + %.3g",
              what, sparcl_dtype_name(dtype), err, base, floor_abs);
    free(rounded);
    free(bits);
    return err;
}

size_t half_rounding_misses(int dtype, const uint16_t *bits, const float *want, size_t n)
{
    float *scratch = malloc(n * sizeof *scratch);
    uint16_t *nearest = malloc(n * sizeof *nearest);
    cr_assert(scratch && nearest);
    half_round(dtype, want, scratch, nearest, n);
    size_t off = 0;
    for (size_t i = 0; i < n; ++i)
        off += bits[i] != nearest[i];
    free(scratch);
    free(nearest);
    return off;
}
