/*
 * array.h -- the two helpers every builder of variable-size arrays in the
 * runtime needs (layouts, tilings, user arrays): amortized growth and an
 * int32 comparator for qsort/bsearch.
 */
#ifndef SPARCL_ARRAY_H
#define SPARCL_ARRAY_H

#include <stddef.h>
#include <stdint.h>

/* Grows *p (elements of `size` bytes, capacity *cap) to hold at least
 * `need` elements, doubling from 1024.  Returns 0 if realloc fails (then *p
 * and *cap are unchanged). */
int sparcl__array_grow(void **p, int64_t *cap, int64_t need, size_t size);

/* qsort/bsearch comparator for int32_t. */
int sparcl__cmp_i32(const void *a, const void *b);

#endif
