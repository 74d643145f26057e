/*
 * lsh_draw.c -- see lsh_draw.h.
 */
#include "runtime/lsh_draw.h"
#include "runtime/random.h"

size_t sparcl__lsh_rotation_floats(int rounds, int dim, int half)
{
    return (size_t)rounds * (size_t)dim * (size_t)half;
}

void sparcl__lsh_draw(float *rot, int rounds, int dim, int half, uint64_t seed)
{
    sparcl__rng r;
    sparcl__rng_seed(&r, seed);
    const size_t n = sparcl__lsh_rotation_floats(rounds, dim, half);
    for (size_t i = 0; i < n; ++i)
        rot[i] = (float)sparcl__rng_normal(&r);
}
