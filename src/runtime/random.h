/*
 * random.h -- a small seeded generator for the random matrices of FAVOR+
 * and Linformer plans.  Its own (splitmix64 and Box-Muller) so that a seed
 * gives the same matrices on every platform and C library.
 */
#ifndef SPARCL_RANDOM_H
#define SPARCL_RANDOM_H

#include <stdint.h>

typedef struct sparcl__rng {
    uint64_t state;
    int has_spare;
    double spare;
} sparcl__rng;

void sparcl__rng_seed(sparcl__rng *r, uint64_t seed);

/* Uniform in (0, 1). */
double sparcl__rng_uniform(sparcl__rng *r);

/* Standard normal. */
double sparcl__rng_normal(sparcl__rng *r);

#endif
