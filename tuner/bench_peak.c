/*
 * bench_peak.c -- probe kernels for the device's fp32 FMA peak and its
 * streaming bandwidth (see bench_peak.h).  They are built from the source
 * below with the context's own OpenCL objects: they belong to the
 * benchmark, not to the library's kernel families.
 *
 * FMA: each work-item runs 12 independent chains x = fma(x, a, b) (float16,
 * float8, float4 or float; see the variants below), enough to cover the FMA
 * latency on wide SIMD units, with a and b kernel arguments so nothing folds; the sum
 * is stored so nothing is dead.  Streaming: float4 copy (2 x 4 bytes per
 * element moved) and triad a = b + s * c (3 x 4 bytes), as STREAM counts
 * them, and a read (each work-item sums READ_CHUNK consecutive float4s and
 * writes one): the traffic of decoding, which reads K and V and writes
 * little.  Copy and triad count the bytes the program moves, not the
 * cache lines a write-allocate cache reads before writing, so on such a
 * CPU a read-only stream can exceed them; the ceiling is the best of the
 * three.
 */
#include "bench_peak.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_baseline.h"

#define READ_CHUNK 64 /* float4s each work-item of the read probe sums (1 KiB) */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* The -Wpsabi note clang gives for 512-bit vectors on CPUs without AVX-512
 * is silenced as in cl/common.clh, so POCL prints nothing. */
static const char probe_source[] =
    "#define READ_CHUNK " STRINGIFY(READ_CHUNK) "\n"
    "#if defined(__clang__) && defined(__has_warning)\n"
    "#if __has_warning(\"-Wpsabi\")\n"
    "#pragma clang diagnostic ignored \"-Wpsabi\"\n"
    "#endif\n"
    "#endif\n"
    "#define CHAIN(T, i) T x##i = (T)(seed + (float)(i));\n"
    "#define STEP(T, i) x##i = fma(x##i, a, b);\n"
    "#define ALL(M, T) M(T, 0) M(T, 1) M(T, 2) M(T, 3) M(T, 4) M(T, 5) M(T, 6) M(T, 7) \\\n"
    "                   M(T, 8) M(T, 9) M(T, 10) M(T, 11)\n"
    "#define FMA_KERNEL(NAME, T) \\\n"
    "__kernel void NAME(__global T *out, int iters, float fa, float fb) { \\\n"
    "    float seed = (float)get_global_id(0) * 1e-6f; \\\n"
    "    T a = (T)(fa), b = (T)(fb); \\\n"
    "    ALL(CHAIN, T) \\\n"
    "    for (int i = 0; i < iters; ++i) { ALL(STEP, T) } \\\n"
    "    out[get_global_id(0)] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11; \\\n"
    "}\n"
    "FMA_KERNEL(fma_peak16, float16)\n"
    "FMA_KERNEL(fma_peak8, float8)\n"
    "FMA_KERNEL(fma_peak4, float4)\n"
    "FMA_KERNEL(fma_peak1, float)\n"
    "__kernel void stream_copy(__global float4 *restrict dst,\n"
    "                          __global const float4 *restrict src) {\n"
    "    size_t i = get_global_id(0);\n"
    "    dst[i] = src[i];\n"
    "}\n"
    "__kernel void stream_read(__global float4 *restrict dst,\n"
    "                          __global const float4 *restrict src) {\n"
    "    __global const float4 *p = src + get_global_id(0) * READ_CHUNK;\n"
    "    float4 s = (float4)(0.0f);\n"
    "    for (int k = 0; k < READ_CHUNK; ++k)\n"
    "        s += p[k];\n"
    "    dst[get_global_id(0)] = s;\n"
    "}\n"
    "__kernel void stream_triad(__global float4 *restrict a, __global const float4 *restrict b,\n"
    "                           __global const float4 *restrict c, float s) {\n"
    "    size_t i = get_global_id(0);\n"
    "    a[i] = b[i] + s * c[i];\n"
    "}\n";

#define CHAINS 12

/* The FMA probe's variants; the fastest is the peak.  Explicit vectors per
 * work-item in three widths, because 12 chains must fit the register file:
 * on AVX2 (16 ymm registers) float16 chains need 24 and spill, which halved
 * the figure (95 against 182 GFLOP/s for float8 on a 2-core EPYC without
 * AVX-512, where SGEMM ran at 141).  float16 runs with one work-item per
 * group and with the runtime's choice (a CPU runtime may widen it again
 * across work-items); scalar chains leave the vectorizing to the runtime,
 * across work-items. */
typedef struct fma_variant {
    const char *kernel;
    int width;           /* floats per chain */
    size_t items_per_cu; /* work-items per compute unit */
    size_t local;        /* work-group size, 0 = the runtime's */
    const char *what;
} fma_variant;

static const fma_variant variants[] = {
    {"fma_peak16", 16, 64, 1, "float16 chains, 1 work-item per group"},
    {"fma_peak16", 16, 64, 0, "float16 chains"},
    {"fma_peak8", 8, 64, 1, "float8 chains, 1 work-item per group"},
    {"fma_peak4", 4, 64, 1, "float4 chains, 1 work-item per group"},
    {"fma_peak1", 1, 1024, 0, "float chains across work-items"},
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs `k` reps times after a warm-up; medians of the event time and of the
 * process CPU time, in ms.  0 on success. */
static int time_kernel(cl_command_queue q, cl_kernel k, size_t global, size_t local, int reps,
                       double *ms, double *cpu_ms)
{
    double t[64], c[64];
    if (reps > 64)
        reps = 64;
    for (int r = -1; r < reps; ++r) {
        cl_event ev = NULL;
        double c0 = bench_cpu_ms();
        if (clEnqueueNDRangeKernel(q, k, 1, NULL, &global, local ? &local : NULL, 0, NULL, &ev) !=
                CL_SUCCESS ||
            clWaitForEvents(1, &ev) != CL_SUCCESS) {
            if (ev)
                clReleaseEvent(ev);
            return -1;
        }
        cl_ulong t0 = 0, t1 = 0;
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
        clReleaseEvent(ev);
        if (r >= 0) {
            t[r] = (double)(t1 - t0) * 1e-6;
            c[r] = bench_cpu_ms() - c0;
        }
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    qsort(c, (size_t)reps, sizeof *c, cmp_double);
    *ms = t[reps / 2];
    *cpu_ms = c[reps / 2];
    return 0;
}

/* One variant: its GFLOP/s (wall) into *gf and per CPU-second into
 * *gf_cpu; 0 on success. */
static int measure_variant(cl_context cc, cl_command_queue q, cl_program prog, cl_uint cus,
                           const fma_variant *v, int reps, double *gf, double *gf_cpu)
{
    cl_int err;
    int rc = -1;
    cl_kernel k = clCreateKernel(prog, v->kernel, &err);
    size_t global = (size_t)(cus ? cus : 1) * v->items_per_cu;
    cl_mem buf =
        clCreateBuffer(cc, CL_MEM_WRITE_ONLY, global * v->width * sizeof(float), NULL, &err);
    if (!k || !buf)
        goto done;
    float fa = 0.999f, fb = 0.001f;
    clSetKernelArg(k, 0, sizeof buf, &buf);
    clSetKernelArg(k, 2, sizeof fa, &fa);
    clSetKernelArg(k, 3, sizeof fb, &fb);
    /* Size the loop with single runs until one takes >= 20 ms, then scale
     * it so a run takes about 100 ms: launch costs vanish. */
    double ms = 0, cpu = 0;
    int iters = 1 << 8;
    for (;;) {
        clSetKernelArg(k, 1, sizeof iters, &iters);
        if (time_kernel(q, k, global, v->local, 1, &ms, &cpu) != 0)
            goto done;
        if (ms >= 20 || iters >= 1 << 28)
            break;
        iters *= 4;
    }
    double scale = ms > 0 ? 100.0 / ms : 1;
    if (scale > 1 && iters * scale < (double)(1 << 30))
        iters = (int)(iters * scale);
    clSetKernelArg(k, 1, sizeof iters, &iters);
    if (time_kernel(q, k, global, v->local, reps, &ms, &cpu) != 0)
        goto done;
    double flop = 2.0 * CHAINS * v->width * (double)iters * (double)global;
    *gf = flop / (ms * 1e6);
    *gf_cpu = cpu > 0 ? flop / (cpu * 1e6) : 0;
    rc = 0;
done:
    if (k)
        clReleaseKernel(k);
    if (buf)
        clReleaseMemObject(buf);
    return rc;
}

static void measure_fma(cl_context cc, cl_command_queue q, cl_program prog, cl_uint cus, int reps,
                        bench_peak *out)
{
    int n = (int)(sizeof variants / sizeof variants[0]);
    for (int i = 0; i < n; ++i) {
        double gf = 0, gf_cpu = 0;
        if (measure_variant(cc, q, prog, cus, &variants[i], reps, &gf, &gf_cpu) == 0 &&
            gf > out->fma_gflops) {
            out->fma_gflops = gf;
            out->fma_gflops_cpu = gf_cpu;
            out->fma_variant = variants[i].what;
        }
    }
    if (out->fma_gflops <= 0)
        snprintf(out->error, sizeof out->error, "FMA probe: no variant ran");
}

static void measure_stream(cl_context cc, cl_device_id dev, cl_command_queue q, cl_program prog,
                           int reps, bench_peak *out)
{
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    size_t bytes = (size_t)256 << 20;
    while (max_alloc && bytes > max_alloc)
        bytes /= 2;
    out->stream_bytes = bytes;
    cl_int err;
    cl_mem m[3] = {NULL, NULL, NULL};
    cl_kernel copy = clCreateKernel(prog, "stream_copy", &err);
    cl_kernel triad = clCreateKernel(prog, "stream_triad", &err);
    float s = 3.0f, zero = 0.0f;
    for (int i = 0; i < 3; ++i) {
        m[i] = clCreateBuffer(cc, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (m[i]) /* touch every page before timing */
            clEnqueueFillBuffer(q, m[i], &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
    }
    cl_kernel read = clCreateKernel(prog, "stream_read", &err);
    if (!copy || !triad || !read || !m[0] || !m[1] || !m[2] || clFinish(q) != CL_SUCCESS) {
        snprintf(out->error, sizeof out->error,
                 "bandwidth probe: cannot allocate 3 x %zu MiB or create its kernels", bytes >> 20);
        goto done;
    }
    size_t global = bytes / (4 * sizeof(float));
    double ms, cpu, cpu_copy = 0, cpu_triad = 0;
    clSetKernelArg(copy, 0, sizeof m[0], &m[0]);
    clSetKernelArg(copy, 1, sizeof m[1], &m[1]);
    if (time_kernel(q, copy, global, 0, reps, &ms, &cpu) == 0) {
        out->copy_gbs = 2.0 * (double)bytes / (ms * 1e6);
        cpu_copy = 2.0 * (double)bytes / (cpu * 1e6);
    }
    clSetKernelArg(triad, 0, sizeof m[0], &m[0]);
    clSetKernelArg(triad, 1, sizeof m[1], &m[1]);
    clSetKernelArg(triad, 2, sizeof m[2], &m[2]);
    clSetKernelArg(triad, 3, sizeof s, &s);
    if (time_kernel(q, triad, global, 0, reps, &ms, &cpu) == 0) {
        out->triad_gbs = 3.0 * (double)bytes / (ms * 1e6);
        cpu_triad = 3.0 * (double)bytes / (cpu * 1e6);
    }
    double cpu_read = 0;
    const size_t chunks = global / READ_CHUNK; /* bytes is a power of two >= 1 MiB */
    clSetKernelArg(read, 0, sizeof m[2], &m[2]);
    clSetKernelArg(read, 1, sizeof m[0], &m[0]);
    if (time_kernel(q, read, chunks, 0, reps, &ms, &cpu) == 0) {
        const double moved = (double)bytes + (double)(chunks * 4 * sizeof(float));
        out->read_gbs = moved / (ms * 1e6);
        cpu_read = moved / (cpu * 1e6);
    }
    const double gbs[3] = {out->copy_gbs, out->triad_gbs, out->read_gbs};
    const double per_cpu[3] = {cpu_copy, cpu_triad, cpu_read};
    for (int i = 0; i < 3; ++i)
        if (gbs[i] > out->bw_gbs) {
            out->bw_gbs = gbs[i];
            out->bw_gbs_cpu = per_cpu[i];
        }
    if (out->bw_gbs <= 0)
        snprintf(out->error, sizeof out->error, "bandwidth probe: the kernels failed");
done:
    for (int i = 0; i < 3; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
    if (copy)
        clReleaseKernel(copy);
    if (triad)
        clReleaseKernel(triad);
    if (read)
        clReleaseKernel(read);
}

/* Builds the probes and runs the FMA probe when `fma`, then the streaming
 * one, into *out (see bench_peak_measure). */
static void measure(sparcl_ctx *ctx, int reps, int fma, bench_peak *out)
{
    cl_context cc = sparcl_ctx_cl_context(ctx);
    cl_device_id dev = sparcl_ctx_cl_device(ctx);
    cl_command_queue q = sparcl_ctx_cl_queue(ctx);
    const char *src = probe_source;
    cl_int err;
    cl_program prog = clCreateProgramWithSource(cc, 1, &src, NULL, &err);
    if (!prog || clBuildProgram(prog, 1, &dev, "-cl-std=CL1.2", NULL, NULL) != CL_SUCCESS) {
        snprintf(out->error, sizeof out->error, "the probe kernels did not build");
        if (prog)
            clReleaseProgram(prog);
        return;
    }
    cl_uint cus = 1;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    if (fma)
        measure_fma(cc, q, prog, cus, reps, out);
    measure_stream(cc, dev, q, prog, reps, out);
    clReleaseProgram(prog);
}

void bench_peak_measure(sparcl_ctx *ctx, int reps, bench_peak *out)
{
    memset(out, 0, sizeof *out);
    measure(ctx, reps, 1, out);
}

void bench_peak_measure_bandwidth(sparcl_ctx *ctx, int reps, bench_peak *out)
{
    out->copy_gbs = out->triad_gbs = out->read_gbs = out->bw_gbs = out->bw_gbs_cpu = 0;
    out->error[0] = '\0';
    measure(ctx, reps, 0, out);
}
