/*
 * hash.h -- the one 64-bit hash of the library (FNV-1a), shared by the
 * kernel hash that keys tuning rows and the key of the on-disk program
 * cache, so both change together when a kernel source does.
 */
#ifndef SPARCL_HASH_H
#define SPARCL_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The starting value of a hash. */
#define SPARCL__HASH_SEED 0xcbf29ce484222325ull

/* Mixes n bytes of data into h. */
uint64_t sparcl__hash(uint64_t h, const void *data, size_t n);

/* Mixes a string and its terminating NUL into h (so "ab","c" and "a","bc"
 * differ). */
uint64_t sparcl__hash_str(uint64_t h, const char *s);

#endif
