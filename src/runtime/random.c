/*
 * random.c -- see random.h.
 */
#include "runtime/random.h"

#include <math.h>

void sparcl__rng_seed(sparcl__rng *r, uint64_t seed)
{
    r->state = seed;
    r->has_spare = 0;
    r->spare = 0.0;
}

static uint64_t next(sparcl__rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double sparcl__rng_uniform(sparcl__rng *r)
{
    /* 53 random bits, shifted off 0 */
    return ((double)(next(r) >> 11) + 0.5) / 9007199254740992.0;
}

double sparcl__rng_normal(sparcl__rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    const double u = sparcl__rng_uniform(r), v = sparcl__rng_uniform(r);
    const double rad = sqrt(-2.0 * log(u)), ang = 6.283185307179586 * v;
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}
