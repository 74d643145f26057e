/*
 * select_inputs.c -- structured inputs for dynamic block selection (see
 * select_inputs.h).
 */
#include <math.h>
#include <stdlib.h>

#include "select_inputs.h"

#define RANK 8

static double uniform(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return ((*s >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(uint64_t *s)
{
    return sqrt(-2.0 * log(uniform(s))) * cos(6.283185307179586 * uniform(s));
}

void select_inputs(int heads, int n, int d, int block, int far, uint64_t seed, float *q, float *k,
                   float *v)
{
    uint64_t s = seed * 2654435761u + 1;
    const int m = d / 4 < 16 ? d / 4 : 16; /* positional frequencies: 2m dims */
    double *u = malloc(sizeof *u * RANK * (size_t)d), *z = malloc(sizeof *z * RANK);
    double *topic = malloc(sizeof *topic * (size_t)d), *w = malloc(sizeof *w * (size_t)(m + 1));
    if (!u || !z || !topic || !w)
        goto done;
    /* Scaled logits: position alpha^2 sum_m cos(w_m (i - j)) / sqrt(d), 6 at
     * i = j and decaying over about a block (w_m uniform in [0, pi /
     * block]); content codes z_i . z_j beta^2 / sqrt(d), about 1 between
     * unrelated tokens; a topic b^2 / sqrt(d) = 5. */
    const double sd = sqrt((double)d);
    const double alpha = m ? sqrt(6.0 * sd / m) : 0, beta = sqrt(sd / sqrt((double)RANK));
    const double b = sqrt(5.0 * sd);
    for (int x = 0; x < m; ++x)
        w[x] = uniform(&s) * 3.141592653589793 / block;
    for (int x = 0; x < RANK * d; ++x)
        u[x] = gauss(&s) / sd;
    const int nb = (n + block - 1) / block;
    for (int h = 0; h < heads; ++h) {
        float *qh = q + (size_t)h * n * d, *kh = k + (size_t)h * n * d;
        for (int i = 0; i < n; ++i) {
            for (int r = 0; r < RANK; ++r)
                z[r] = gauss(&s);
            for (int c = 0; c < d; ++c) {
                double content = 0;
                for (int r = 0; r < RANK; ++r)
                    content += z[r] * u[r * d + c];
                double pos = 0;
                if (c < 2 * m)
                    pos = alpha * (c % 2 ? sin(w[c / 2] * i) : cos(w[c / 2] * i));
                qh[(size_t)i * d + c] = (float)(pos + beta * content);
                kh[(size_t)i * d + c] = (float)(pos + beta * content + 0.05 * gauss(&s));
            }
        }
        for (int f = 0; f < far && nb > 2; ++f) {
            const int r = 2 + (int)(uniform(&s) * (nb - 2)), t = (int)(uniform(&s) * (r - 1));
            double norm = 0;
            for (int c = 0; c < d; ++c) {
                topic[c] = gauss(&s);
                norm += topic[c] * topic[c];
            }
            for (int c = 0; c < d; ++c)
                topic[c] *= b / sqrt(norm);
            for (int i = r * block; i < (r + 1) * block && i < n; ++i)
                for (int c = 0; c < d; ++c)
                    qh[(size_t)i * d + c] += (float)topic[c];
            for (int j = t * block; j < (t + 1) * block && j < n; ++j)
                for (int c = 0; c < d; ++c)
                    kh[(size_t)j * d + c] += (float)topic[c];
        }
        for (size_t x = 0; v && x < (size_t)n * d; ++x)
            v[(size_t)h * n * d + x] = (float)(2.0 * uniform(&s) - 1.0);
    }
done:
    free(u);
    free(z);
    free(topic);
    free(w);
}
