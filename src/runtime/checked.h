/*
 * checked.h -- overflow-checked size arithmetic.
 *
 * Every size, span or byte count the runtime derives from caller-supplied
 * shapes and strides goes through these helpers, so a hostile shape gives
 * a clear error instead of a wrapped value that passes a later check.
 * Each returns 1 and stores the exact result, or 0 (and leaves *out
 * unspecified) when the result does not fit.  The _mul3/_add3 forms chain
 * two operations and fail if either step overflows.
 */
#ifndef SPARCL_CHECKED_H
#define SPARCL_CHECKED_H

#include <stddef.h>
#include <stdint.h>

static inline int sparcl__mul_i64(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

static inline int sparcl__add_i64(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

static inline int sparcl__mul_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

static inline int sparcl__add_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

static inline int sparcl__mul3_i64(int64_t a, int64_t b, int64_t c, int64_t *out)
{
    int64_t t;
    return sparcl__mul_i64(a, b, &t) && sparcl__mul_i64(t, c, out);
}

static inline int sparcl__mul3_size(size_t a, size_t b, size_t c, size_t *out)
{
    size_t t;
    return sparcl__mul_size(a, b, &t) && sparcl__mul_size(t, c, out);
}

/* ceil(a / b) for a >= 0, b >= 1, without the a + b - 1 that overflows. */
static inline int64_t sparcl__ceil_div_i64(int64_t a, int64_t b)
{
    return a / b + (a % b != 0);
}

/* Saturating forms for running totals of estimates: SIZE_MAX stands for
 * "more than any limit". */
static inline size_t sparcl__sat_add(size_t a, size_t b)
{
    size_t r;
    return sparcl__add_size(a, b, &r) ? r : SIZE_MAX;
}

static inline size_t sparcl__sat_mul(size_t a, size_t b)
{
    size_t r;
    return sparcl__mul_size(a, b, &r) ? r : SIZE_MAX;
}

#endif
