/*
 * reference_entmax.c -- the double-precision reference for sparse
 * normalizations, used by sparcl_reference_forward() for plans whose
 * normalization is not softmax.  Deliberately a different method from the
 * kernel's (and from the tests' sort-based oracle): bisection on the
 * threshold to double resolution, then, for alpha = 2 and 1.5, the closed
 * form on the support that bisection found.
 *
 * Everything is computed relative to the row's largest z = (alpha - 1) s,
 * so the bracket [-1, 0] of the threshold keeps its width whatever the
 * scores' magnitude (around 1e30, m - 1 == m in double).
 */
#include <math.h>

#include "reference/reference.h"

static double weight(double x, double alpha)
{
    return x > 0.0 ? (alpha == 2.0 ? x : pow(x, 1.0 / (alpha - 1.0))) : 0.0;
}

double sparcl__reference_entmax_row(const double *s, int64_t n, double alpha, double *p)
{
    /* Undefined rows: a NaN or +inf score (inf - inf), or attended keys
     * whose scores are all -inf (the threshold is -inf - -inf). */
    double m = -INFINITY;
    int undefined = 0;
    for (int64_t t = 0; t < n; ++t) {
        undefined |= !(s[t] < INFINITY);
        if ((alpha - 1.0) * s[t] > m)
            m = (alpha - 1.0) * s[t];
    }
    if (n == 0)
        return -INFINITY;
    if (undefined || m == -INFINITY) {
        for (int64_t t = 0; t < n; ++t)
            p[t] = NAN;
        return NAN;
    }
    /* y = z - m <= 0; the mass is >= 1 at -1 (the top score alone) and 0
     * at 0.  -inf scores have y = -inf and weight 0. */
    double lo = -1.0, hi = 0.0;
    for (int it = 0; it < 200; ++it) {
        double mid = 0.5 * (lo + hi), f = 0.0;
        if (mid == lo || mid == hi)
            break;
        for (int64_t t = 0; t < n; ++t)
            f += weight((alpha - 1.0) * s[t] - m - mid, alpha);
        if (f >= 1.0)
            lo = mid;
        else
            hi = mid;
    }
    double tau = lo;
    if (alpha == 2.0 || alpha == 1.5) {
        double k = 0, a = 0, a2 = 0;
        for (int64_t t = 0; t < n; ++t) {
            double y = (alpha - 1.0) * s[t] - m;
            if (y > lo) {
                k += 1;
                a += y - lo;
                a2 += (y - lo) * (y - lo);
            }
        }
        /* sum (y - lo - u) = 1, or sum (y - lo - u)^2 = 1, for u >= 0; the
         * top score has y = 0 > lo, so k >= 1 */
        tau =
            lo + (alpha == 2.0 ? (a - 1.0) / k : (a - sqrt(fmax(a * a - k * (a2 - 1.0), 0.0))) / k);
    }
    double sum = 0.0;
    for (int64_t t = 0; t < n; ++t) {
        p[t] = weight((alpha - 1.0) * s[t] - m - tau, alpha);
        sum += p[t];
    }
    for (int64_t t = 0; t < n; ++t)
        p[t] /= sum;
    return m + tau;
}
