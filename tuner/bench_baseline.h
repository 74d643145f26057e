/*
 * bench_baseline.h -- what sparcl-bench compares against, measured on the
 * host in the same run: the machine's SGEMM rate (the ceiling) and dense
 * attention done the way a CPU user does it without sparcl (S = QK^T * scale
 * by SGEMM, masked row softmax, O = PV by SGEMM, head by head, scores
 * materialized).  Both need CBLAS (OpenBLAS), an optional dependency of the
 * benchmark only; without it every function reports "unavailable".
 */
#ifndef SPARCL_BENCH_BASELINE_H
#define SPARCL_BENCH_BASELINE_H

#include <stddef.h>
#include <stdint.h>

/* 1 when the benchmark was built with CBLAS. */
int bench_have_cblas(void);

/* A short description of the BLAS and the kernel it uses ("OpenBLAS
 * 0.3.21 ..., 2 threads, kernel Haswell (OPENBLAS_CORETYPE=Haswell)") or
 * "none". */
const char *bench_blas_string(void);

/* Process CPU time in milliseconds (all threads).  On a shared machine,
 * FLOPs per CPU-second compare implementations more robustly than wall
 * time, which other users' load stretches. */
double bench_cpu_ms(void);

/* Median GFLOP/s of an n x n x n SGEMM over `reps` runs after one warm-up;
 * negative when CBLAS is unavailable or memory runs out.  *per_cpu_s, if
 * not NULL, receives the median GFLOP per CPU-second. */
double bench_sgemm_gflops(int n, int reps, double *per_cpu_s);

/* Fills row i of head h's attention mask: row[j] = 1 when query i attends
 * to key j (kv_len bytes). */
typedef void (*bench_mask_row_fn)(const void *self, int h, int i, uint8_t *row);

typedef struct bench_dense_problem {
    int heads, n, dim; /* q_len = kv_len = n, contiguous [H, n, dim] */
    float scale;
    bench_mask_row_fn mask; /* NULL: every pair attends (no mask applied) */
    const void *mask_self;
    const float *q, *k, *v;
    float *out;
} bench_dense_problem;

/* Host bytes the baseline needs beyond the tensors (scores and mask of one
 * head). */
size_t bench_dense_bytes(const bench_dense_problem *p);

/* Runs the baseline `reps` times after one warm-up head and returns the
 * median milliseconds of a whole run (all heads; building the masks is not
 * timed, as a user would hold them already).  *cpu_ms, if not NULL,
 * receives the median CPU milliseconds of a run.  Negative when CBLAS is
 * unavailable or memory runs out. */
double bench_dense_ms(const bench_dense_problem *p, int reps, double *cpu_ms);

#endif
