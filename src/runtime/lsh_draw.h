/*
 * lsh_draw.h -- the seeded random rotations of LSH attention plans.  One
 * function draws them for the plan (which uploads them) and for the
 * double-precision reference (which hashes with them on the host), so both
 * sides see the same matrices for the same seed.
 */
#ifndef SPARCL_LSH_DRAW_H
#define SPARCL_LSH_DRAW_H

#include <stddef.h>
#include <stdint.h>

/* Floats of the rotations of `rounds` rounds: rounds x dim x half. */
size_t sparcl__lsh_rotation_floats(int rounds, int dim, int half);

/* Independent N(0, 1) entries, rounded to float, into rot: round r's
 * dim x half matrix R_r (row t, column c) at rot[(r * dim + t) * half + c].
 * All arguments positive. */
void sparcl__lsh_draw(float *rot, int rounds, int dim, int half, uint64_t seed);

#endif
