/*
 * array.c -- see array.h.
 */
#include "runtime/array.h"

#include <stdlib.h>

int sparcl__array_grow(void **p, int64_t *cap, int64_t need, size_t size)
{
    if (need <= *cap)
        return 1;
    int64_t n = *cap ? *cap : 1024;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, (size_t)n * size);
    if (!q)
        return 0;
    *p = q;
    *cap = n;
    return 1;
}

int sparcl__array_grow_capped(void **p, int64_t *cap, int64_t need, size_t size, size_t *used,
                              size_t limit)
{
    if (need <= *cap)
        return 1;
    /* Bytes this array may hold: its own plus what the limit leaves. */
    size_t own = (size_t)*cap * size;
    size_t room = limit > *used ? limit - *used + own : own;
    size_t most = room / size;
    if (need < 0 || (uint64_t)need > most)
        return -1;
    int64_t n = *cap ? *cap : 1024;
    while (n < need)
        n = n > INT64_MAX / 2 ? need : n * 2;
    if ((uint64_t)n > most)
        n = (int64_t)most;
    void *q = realloc(*p, (size_t)n * size);
    if (!q)
        return 0;
    *p = q;
    *used = *used - own + (size_t)n * size;
    *cap = n;
    return 1;
}

int sparcl__cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}
