/*
 * bench_baseline.c -- the host-side yardsticks of sparcl-bench (see
 * bench_baseline.h): SGEMM rate and dense CPU attention through CBLAS.  The
 * softmax uses every core through OpenMP when the compiler has it, so the
 * baseline is what a reasonable CPU user gets, not a strawman.
 */
#include "bench_baseline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef SPARCL_BENCH_HAVE_CBLAS
#include <cblas.h>
#endif

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

double bench_cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int bench_have_cblas(void)
{
#ifdef SPARCL_BENCH_HAVE_CBLAS
    return 1;
#else
    return 0;
#endif
}

const char *bench_blas_string(void)
{
#ifdef SPARCL_BENCH_HAVE_CBLAS
    /* The kernel OpenBLAS picked matters: OPENBLAS_CORETYPE can force an
     * older one (Haswell on AVX-512 machines halves SGEMM). */
    static char text[320];
    const char *forced = getenv("OPENBLAS_CORETYPE");
    snprintf(text, sizeof text, "%s, %d threads, kernel %s%s%s%s", openblas_get_config(),
             openblas_get_num_threads(), openblas_get_corename(),
             forced ? " (OPENBLAS_CORETYPE=" : " (OPENBLAS_CORETYPE unset)", forced ? forced : "",
             forced ? ")" : "");
    return text;
#else
    return "none";
#endif
}

#ifdef SPARCL_BENCH_HAVE_CBLAS

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; ++i) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) / 8388608.0 - 1.0);
    }
}

double bench_sgemm_gflops(int n, int reps, double *per_cpu_s)
{
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * 4), *b = malloc(nn * 4), *c = malloc(nn * 4);
    double *ms = malloc(sizeof *ms * (size_t)reps * 2), *cpu = ms + reps;
    double result = -1.0;
    if (a && b && c && ms) {
        fill(a, nn, 1);
        fill(b, nn, 2);
        for (int r = -1; r < reps; ++r) {
            double t0 = now_ms(), c0 = bench_cpu_ms();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                        c, n);
            if (r >= 0) {
                ms[r] = now_ms() - t0;
                cpu[r] = bench_cpu_ms() - c0;
            }
        }
        const double flop = 2.0 * n * (double)nn;
        result = flop / (median(ms, reps) * 1e6);
        if (per_cpu_s)
            *per_cpu_s = flop / (median(cpu, reps) * 1e6);
    }
    free(a), free(b), free(c), free(ms);
    return result;
}

size_t bench_dense_bytes(const bench_dense_problem *p)
{
    size_t nn = (size_t)p->n * (size_t)p->n;
    return nn * sizeof(float) + (p->mask ? nn : 0);
}

/* Masked softmax of every row of s in place; a row with nothing attended
 * becomes zeros (its output is then 0, as sparcl defines it). */
static void softmax_rows(float *s, const uint8_t *mask, int n)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int i = 0; i < n; ++i) {
        float *row = s + (size_t)i * n;
        const uint8_t *mr = mask ? mask + (size_t)i * n : NULL;
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
            if (mr && !mr[j])
                row[j] = -INFINITY;
            mx = fmaxf(mx, row[j]);
        }
        if (mx == -INFINITY) {
            memset(row, 0, sizeof *row * (size_t)n);
            continue;
        }
        float sum = 0.0f;
        for (int j = 0; j < n; ++j) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < n; ++j)
            row[j] *= inv;
    }
}

/* One head: returns the milliseconds of its compute (mask building
 * excluded) and adds its CPU milliseconds to *cpu. */
static double one_head(const bench_dense_problem *p, int h, float *s, uint8_t *mask, double *cpu)
{
    const int n = p->n, d = p->dim;
    const size_t off = (size_t)h * n * d;
    if (mask)
        for (int i = 0; i < n; ++i)
            p->mask(p->mask_self, h, i, mask + (size_t)i * n);
    double t0 = now_ms(), c0 = bench_cpu_ms();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, p->scale, p->q + off, d,
                p->k + off, d, 0.0f, s, n);
    softmax_rows(s, mask, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, 1.0f, s, n, p->v + off, d, 0.0f,
                p->out + off, d);
    *cpu += bench_cpu_ms() - c0;
    return now_ms() - t0;
}

double bench_dense_ms(const bench_dense_problem *p, int reps, double *cpu_ms)
{
    size_t nn = (size_t)p->n * (size_t)p->n;
    float *s = malloc(nn * sizeof *s);
    uint8_t *mask = p->mask ? malloc(nn) : NULL;
    double *ms = malloc(sizeof *ms * (size_t)reps * 2), *cpu = ms + reps;
    double result = -1.0, ignored = 0.0;
    if (s && ms && (mask || !p->mask)) {
        one_head(p, 0, s, mask, &ignored); /* warm-up: page faults, BLAS threads */
        for (int r = 0; r < reps; ++r) {
            ms[r] = cpu[r] = 0.0;
            for (int h = 0; h < p->heads; ++h)
                ms[r] += one_head(p, h, s, mask, &cpu[r]);
        }
        result = median(ms, reps);
        if (cpu_ms)
            *cpu_ms = median(cpu, reps);
    }
    free(s), free(mask), free(ms);
    return result;
}

#else /* no CBLAS */

double bench_sgemm_gflops(int n, int reps, double *per_cpu_s)
{
    (void)n, (void)reps, (void)per_cpu_s;
    return -1.0;
}

size_t bench_dense_bytes(const bench_dense_problem *p)
{
    (void)p;
    return 0;
}

double bench_dense_ms(const bench_dense_problem *p, int reps, double *cpu_ms)
{
    (void)p, (void)reps, (void)cpu_ms;
    return -1.0;
}

#endif
