/*
 * reference_entmax.c -- the double-precision reference for sparse
 * normalizations, used by sparcl_reference_forward() for plans whose
 * normalization is not softmax.  Deliberately a different method from the
 * kernel's (and from the tests' sort-based oracle): bisection on the
 * threshold to double resolution, then, for alpha = 2 and 1.5, the closed
 * form on the support that bisection found.
 */
#include <math.h>

#include "attention_kinds.h"

static double weight(double x, double alpha)
{
    return x > 0.0 ? (alpha == 2.0 ? x : pow(x, 1.0 / (alpha - 1.0))) : 0.0;
}

double sparcl__reference_entmax_row(const double *s, int64_t n, double alpha, double *p)
{
    double m = -INFINITY;
    for (int64_t t = 0; t < n; ++t)
        if (s[t] != -INFINITY && (alpha - 1.0) * s[t] > m)
            m = (alpha - 1.0) * s[t];
    if (m == -INFINITY) {
        for (int64_t t = 0; t < n; ++t)
            p[t] = 0.0;
        return -INFINITY;
    }
    /* The mass is >= 1 at m - 1 (the top score alone) and 0 at m. */
    double lo = m - 1.0, hi = m;
    for (int it = 0; it < 200 && lo < hi; ++it) {
        double mid = 0.5 * (lo + hi), f = 0.0;
        if (mid == lo || mid == hi)
            break;
        for (int64_t t = 0; t < n; ++t)
            if (s[t] != -INFINITY)
                f += weight((alpha - 1.0) * s[t] - mid, alpha);
        if (f >= 1.0)
            lo = mid;
        else
            hi = mid;
    }
    double tau = lo;
    if (alpha == 2.0 || alpha == 1.5) {
        double k = 0, a = 0, a2 = 0;
        for (int64_t t = 0; t < n; ++t) {
            double z = (alpha - 1.0) * s[t];
            if (s[t] != -INFINITY && z > lo) {
                k += 1;
                a += z - lo;
                a2 += (z - lo) * (z - lo);
            }
        }
        /* sum (z - lo - u) = 1, or sum (z - lo - u)^2 = 1, for u >= 0 */
        tau = lo + (alpha == 2.0 ? (a - 1.0) / k : (a - sqrt(fmax(a * a - k * (a2 - 1.0), 0.0))) / k);
    }
    double sum = 0.0;
    for (int64_t t = 0; t < n; ++t) {
        p[t] = s[t] != -INFINITY ? weight((alpha - 1.0) * s[t] - tau, alpha) : 0.0;
        sum += p[t];
    }
    for (int64_t t = 0; t < n; ++t)
        p[t] /= sum;
    return tau;
}
