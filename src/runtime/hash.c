/*
 * hash.c -- FNV-1a, see hash.h.  Not cryptographic: it detects edits and
 * accidents, not attacks; the program cache also compares the full key
 * text it stores, so a collision cannot load a wrong binary.
 */
#include <string.h>

#include "runtime/hash.h"

uint64_t sparcl__hash(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t sparcl__hash_str(uint64_t h, const char *s)
{
    return sparcl__hash(h, s, strlen(s) + 1);
}
