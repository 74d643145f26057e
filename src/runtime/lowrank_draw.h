/*
 * lowrank_draw.h -- the seeded random matrices of FAVOR+ (the features) and
 * Linformer (the projections E and F).  Shared by the plans that draw them
 * and by the double-precision reference, which must see the same matrices
 * for the same seed.
 */
#ifndef SPARCL_LOWRANK_DRAW_H
#define SPARCL_LOWRANK_DRAW_H

#include <stddef.h>
#include <stdint.h>

/* Positive orthogonal random features (Choromanski et al. 2020), m x dim
 * row-major into omega.  0 when out of host memory. */
int sparcl__favor_draw(float *omega, int m, int dim, uint64_t seed);

/* Independent N(0, 1/proj_len) entries for E then F, n each. */
void sparcl__linformer_draw(float *e, float *f, size_t n, int proj_len, uint64_t seed);

#endif
