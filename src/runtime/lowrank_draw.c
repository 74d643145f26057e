/*
 * lowrank_draw.c -- see lowrank_draw.h.
 */
#include <math.h>
#include <stdlib.h>

#include "runtime/lowrank_draw.h"
#include "runtime/random.h"

/* Positive orthogonal random features (Choromanski et al. 2020): blocks of
 * dim rows, each block an orthonormalized Gaussian matrix (modified
 * Gram-Schmidt in double), every row then scaled by the norm of an
 * independent Gaussian vector so that rows are marginally Gaussian. */
int sparcl__favor_draw(float *omega, int m, int dim, uint64_t seed)
{
    sparcl__rng r;
    sparcl__rng_seed(&r, seed);
    /* m and dim are validated positive (features, head_dim). */
    const size_t udim = (size_t)dim;
    double *blk = malloc(sizeof *blk * udim * udim);
    if (!blk)
        return 0;
    for (int r0 = 0; r0 < m; r0 += dim) {
        for (int i = 0; i < dim * dim; ++i)
            blk[i] = sparcl__rng_normal(&r);
        for (int i = 0; i < dim; ++i) {
            double *a = blk + (size_t)i * udim;
            for (int j = 0; j < i; ++j) {
                const double *e = blk + (size_t)j * udim;
                double dot = 0.0;
                for (int x = 0; x < dim; ++x)
                    dot += a[x] * e[x];
                for (int x = 0; x < dim; ++x)
                    a[x] -= dot * e[x];
            }
            double n2 = 0.0;
            for (int x = 0; x < dim; ++x)
                n2 += a[x] * a[x];
            const double inv = 1.0 / sqrt(n2);
            for (int x = 0; x < dim; ++x)
                a[x] *= inv;
        }
        for (int i = 0; i < dim && r0 + i < m; ++i) {
            double n2 = 0.0;
            for (int x = 0; x < dim; ++x) {
                const double g = sparcl__rng_normal(&r);
                n2 += g * g;
            }
            const double norm = sqrt(n2);
            float *row = omega + (size_t)(r0 + i) * udim;
            const double *src = blk + (size_t)i * udim;
            for (int x = 0; x < dim; ++x)
                row[x] = (float)(norm * src[x]);
        }
    }
    free(blk);
    return 1;
}

/* Seeded E and F: independent N(0, 1/proj_len) entries (the
 * Johnson-Lindenstrauss scaling of the Linformer paper), E first. */
void sparcl__linformer_draw(float *e, float *f, size_t n, int proj_len, uint64_t seed)
{
    sparcl__rng r;
    sparcl__rng_seed(&r, seed);
    const double sd = 1.0 / sqrt((double)proj_len);
    for (size_t i = 0; i < n; ++i)
        e[i] = (float)(sd * sparcl__rng_normal(&r));
    for (size_t i = 0; i < n; ++i)
        f[i] = (float)(sd * sparcl__rng_normal(&r));
}
