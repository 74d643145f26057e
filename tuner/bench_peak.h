/*
 * bench_peak.h -- the device's own ceilings, measured by sparcl-bench in
 * the same run through OpenCL probe kernels (bench_peak.c): fp32 FMA
 * throughput and streaming memory bandwidth.  A case is then reported as a
 * fraction of the ceiling that bounds it, which SGEMM (the BLAS as the
 * environment configures it) cannot be.
 */
#ifndef SPARCL_BENCH_PEAK_H
#define SPARCL_BENCH_PEAK_H

#include "sparcl.h"

typedef struct bench_peak {
    double fma_gflops;       /* fp32 FLOP/s of the FMA probe, wall time (GFLOP/s) */
    double fma_gflops_cpu;   /* the same per process CPU-second */
    const char *fma_variant; /* the probe variant that was fastest (static) */
    double copy_gbs;         /* bytes read + written per second by a buffer copy (GB/s) */
    double triad_gbs;        /* the same for a = b + s * c */
    double read_gbs;         /* bytes read (and the little written) per second by a sum */
    double bw_gbs;           /* the best of the three: the bandwidth ceiling */
    double bw_gbs_cpu;       /* that probe's bytes per process CPU-second */
    size_t stream_bytes;     /* size of one streamed buffer */
    char error[256];         /* why a probe failed ("" if both ran) */
} bench_peak;

/* Runs both probes on the context's device (median of `reps` runs each,
 * after a warm-up).  Fields of a probe that failed stay 0 and error says
 * why.  The FMA probe runs 12 independent FMA chains per work-item in
 * five variants (float16 chains with one work-item per group or the
 * runtime's work-group size; float8 and float4 chains, which fit 16
 * 256-bit registers where float16 chains spill; and float chains that a
 * CPU runtime vectorizes across work-items) and keeps the fastest; the streaming probe
 * copies, triads and reads (sums) buffers of 256 MiB (less if the device
 * cannot allocate that much), far beyond any cache, and keeps the best. */
void bench_peak_measure(sparcl_ctx *ctx, int reps, bench_peak *out);

/* Runs the streaming probe again into *out, leaving the FMA fields: the
 * bandwidth of a shared machine moves by a quarter from minute to minute,
 * so sparcl-bench holds each memory-bound case to a probe run right after
 * it. */
void bench_peak_measure_bandwidth(sparcl_ctx *ctx, int reps, bench_peak *out);

#endif
