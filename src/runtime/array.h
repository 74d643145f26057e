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

/* As sparcl__array_grow(), for builds held to a memory limit: *used counts
 * the bytes every array of the build holds (this one included) and is
 * updated; the new capacity never takes it past `limit` (growth stops
 * short of doubling there).  Returns 1 on success, 0 if realloc fails, -1
 * if even `need` elements would pass the limit (nothing changes then). */
int sparcl__array_grow_capped(void **p, int64_t *cap, int64_t need, size_t size, size_t *used,
                              size_t limit);

/* qsort/bsearch comparator for int32_t. */
int sparcl__cmp_i32(const void *a, const void *b);

#endif
