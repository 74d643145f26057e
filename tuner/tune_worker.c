/*
 * tune_worker.c -- the evaluating process (sparcl-tune --worker).
 *
 * It owns its own OpenCL context, so a candidate that crashes the driver or
 * hangs takes down only this process; the parent (tune_child.c) records the
 * failure and starts a new worker.  Requests arrive on stdin, one per line:
 *   problem <spec>              set up inputs, reference and buffers
 *   eval <max_runs> A=1 B=2...  build, verify and time one candidate
 * where <spec> is "<kernel> <problem>" with kernel attn_fwd, attn_entmax
 * (run as 1.5-entmax), attn_decode, attn_lsh (LSH attention as
 * tune_problem_for_kernel sets it up), clblast_xgemm (the forward on the dense
 * path, ALGO=1, with the candidate as the context's CLBlast parameters),
 * attn_bwd or attn_entmax_bwd (1.5-entmax; a
 * backward is verified against sparcl_reference_backward() on outputs of the
 * reference forward; every call is timed from a marker before it to the end
 * of its returned event), attn_span (adaptive span: one row of the family
 * serves an adaptive-span plan's forward and its backward, so a candidate
 * is a training step, the forward and then sparcl_plan_backward_span() with
 * dspans on the forward's out and lse, timed from a marker before the
 * forward to the end of the backward and verified against the reference
 * forward and sparcl_reference_backward_span()), and each gets one line on
 * fd 3 (not stdout, which a driver may write to):
 *   ready | error <message>
 *   result <status> <median> <min> <max> <runs> <max_err> <cpu_median> <message>
 * where cpu_median is the process CPU time of one timed call (all threads;
 * on a CPU device it does not grow while the process waits for a core).
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "tool_timing.h"
#include "tune.h"

/* The tests' tolerance: fp32 max abs error against the double reference.
 * Half storage adds the rounding of out (|out| <= 1 here): half an ulp of
 * 1, 2^-11 for f16 and 2^-8 for bf16, on a reference computed from the
 * inputs as rounded to the storage type. */
#define TOLERANCE 1e-4

static double tolerance(int dtype)
{
    return TOLERANCE + (dtype == SPARCL_DTYPE_F16    ? 0x1p-11
                        : dtype == SPARCL_DTYPE_BF16 ? 0x1p-8
                                                     : 0.0);
}
/* Timing: at least this many runs after the verified warm-up, and stop once
 * the median moves by less than this fraction, or after MAX_TIMED_MS. */
#define MIN_RUNS 3
#define STABLE 0.01
#define MAX_TIMED_MS 3000.0

/* Tensors of the problem: inputs, the kernels' outputs read back, and the
 * double reference.  Forward: out and lse are outputs.  Backward: out, lse
 * (from the reference forward) and dout are inputs; dq, dk, dv are
 * outputs.  attn_span: dout is the input the forward's out, lse and all
 * four gradients (dspans: q_heads floats) add to q, k and v. */
enum { T_Q, T_K, T_V, T_OUT, T_LSE, T_DOUT, T_DQ, T_DK, T_DV, T_DSPANS, N_T };

typedef struct setup {
    tune_problem prob;
    sparcl_plan_desc desc;
    sparcl_layout *layout;
    int bwd;  /* a backward kernel family (attn_bwd, attn_entmax_bwd) */
    int gemm; /* clblast_xgemm: the forward on the dense path (ALGO=1) */
    int span; /* attn_span: the forward and then the backward with dspans */
    size_t n[N_T];
    float *host[N_T];
    double *ref[N_T];
    cl_mem m[N_T];
    int ready;
} setup;

/* Inputs in [-1, 1] from splitmix64, the same in every worker. */
static void fill(float *x, size_t n, uint64_t seed)
{
    uint64_t state = seed;
    for (size_t i = 0; i < n; ++i) {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[i] = (float)((double)(z >> 40) / 8388608.0 - 1.0);
    }
}

static void release(setup *s)
{
    for (int t = 0; t < N_T; ++t) {
        if (s->m[t])
            clReleaseMemObject(s->m[t]);
        free(s->host[t]);
        free(s->ref[t]);
    }
    sparcl_layout_free(s->layout);
    memset(s, 0, sizeof *s);
}

/* Float <-> 16-bit storage of `dtype` (F16 or BF16). */
static void to_half(int dtype, const float *x, uint16_t *h, size_t n)
{
    (dtype == SPARCL_DTYPE_F16 ? sparcl_convert_f32_to_f16 : sparcl_convert_f32_to_bf16)(x, h, n);
}

static void from_half(int dtype, const uint16_t *h, float *x, size_t n)
{
    (dtype == SPARCL_DTYPE_F16 ? sparcl_convert_f16_to_f32 : sparcl_convert_bf16_to_f32)(h, x, n);
}

/* Rounds n floats to `dtype`'s storage in place (nothing for F32), through
 * `bits` (n elements): what a kernel reads of them.  0 if out of memory. */
static int round_stored(int dtype, float *x, uint16_t *bits, size_t n)
{
    if (dtype == SPARCL_DTYPE_F32)
        return 1;
    if (!bits)
        return 0;
    to_half(dtype, x, bits, n);
    from_half(dtype, bits, x, n);
    return 1;
}

/* A device buffer of n elements of `dtype` holding `data` (NULL: an
 * output).  Half inputs are rounded in place first, so the reference is
 * computed on exactly what the kernel reads. */
static cl_mem upload(sparcl_ctx *ctx, float *data, size_t n, int dtype)
{
    cl_int err;
    const cl_mem_flags flags = data ? CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE;
    if (dtype == SPARCL_DTYPE_F32 || !data)
        return clCreateBuffer(sparcl_ctx_cl_context(ctx), flags, n * sparcl_dtype_size(dtype), data,
                              &err);
    uint16_t *bits = malloc(n * sizeof *bits);
    if (!round_stored(dtype, data, bits, n))
        return NULL;
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), flags, n * sizeof *bits, bits, &err);
    free(bits);
    return m;
}

/* Whether tensor t is written by the timed call (and verified). */
static int is_output(const setup *s, int t)
{
    if (s->span)
        return t >= T_OUT && t != T_DOUT;
    if (s->bwd)
        return t >= T_DQ && t <= T_DV;
    return t == T_OUT || t == T_LSE;
}

/* Host arrays for every tensor, the reference, and the device buffers. */
static int compute_reference(sparcl_ctx *ctx, setup *s, char *err, size_t size)
{
    const sparcl_plan_desc *d = &s->desc;
    const size_t nq = (size_t)d->q_heads * d->q_len * d->head_dim;
    const size_t nk = (size_t)d->kv_heads * d->kv_len * d->head_dim;
    const size_t n[N_T] = {nq, nk, nk, nq, (size_t)d->q_heads * d->q_len,
                           nq, nq, nk, nk, (size_t)d->q_heads};
    /* the forward stops at lse, the backward at dv */
    const int used = s->span ? N_T : s->bwd ? T_DSPANS : T_DOUT;
    for (int t = 0; t < used; ++t) {
        s->n[t] = n[t];
        s->host[t] = malloc(n[t] * sizeof(float));
        s->ref[t] = t >= T_OUT ? malloc(n[t] * sizeof(double)) : NULL;
        if (!s->host[t] || (t >= T_OUT && !s->ref[t])) {
            snprintf(err, size, "out of host memory");
            return -1;
        }
    }
    fill(s->host[T_Q], nq, 1);
    fill(s->host[T_K], nk, 2);
    fill(s->host[T_V], nk, 3);
    /* q, k, v first: half storage rounds them before the reference. */
    for (int t = T_Q; t <= T_V; ++t)
        if (!(s->m[t] = upload(ctx, s->host[t], n[t], d->dtype))) {
            snprintf(err, size, "cannot allocate device buffers");
            return -1;
        }
    /* Computed once per problem: every candidate is checked against it. */
    int ok = sparcl_reference_forward(ctx, d, s->host[T_Q], s->host[T_K], s->host[T_V],
                                      s->ref[T_OUT], s->ref[T_LSE]) == SPARCL_OK;
    if (ok && (s->bwd || s->span)) { /* dout as stored, before the reference reads it */
        fill(s->host[T_DOUT], nq, 4);
        uint16_t *bits = d->dtype == SPARCL_DTYPE_F32 ? NULL : malloc(nq * sizeof *bits);
        ok = round_stored(d->dtype, s->host[T_DOUT], bits, nq);
        free(bits);
    }
    if (ok && s->bwd) {
        for (int t = T_OUT; t <= T_LSE; ++t) /* the backward's inputs */
            for (size_t i = 0; i < n[t]; ++i)
                s->host[t][i] = (float)s->ref[t][i];
        ok = sparcl_reference_backward(ctx, d, s->host[T_Q], s->host[T_K], s->host[T_V],
                                       s->host[T_DOUT], s->ref[T_DQ], s->ref[T_DK],
                                       s->ref[T_DV]) == SPARCL_OK;
    } else if (ok && s->span) {
        ok = sparcl_reference_backward_span(ctx, d, s->host[T_Q], s->host[T_K], s->host[T_V],
                                            s->host[T_DOUT], s->ref[T_DQ], s->ref[T_DK],
                                            s->ref[T_DV], s->ref[T_DSPANS]) == SPARCL_OK;
    }
    if (!ok) {
        snprintf(err, size, "reference: %s", sparcl_ctx_errmsg(ctx));
        return -1;
    }
    for (int t = T_OUT; t < used; ++t)
        if (!(s->m[t] = upload(ctx, is_output(s, t) ? NULL : s->host[t], n[t],
                               t == T_LSE || t == T_DSPANS ? SPARCL_DTYPE_F32 : d->dtype))) {
            snprintf(err, size, "cannot allocate device buffers");
            return -1;
        }
    return 0;
}

/* line: "<kernel> <problem spec>". */
static int set_up(sparcl_ctx *ctx, setup *s, const char *line, char *err, size_t size)
{
    release(s);
    char kernel[32] = "";
    int used = 0;
    if (sscanf(line, "%31s %n", kernel, &used) != 1 ||
        (strcmp(kernel, "attn_fwd") && strcmp(kernel, "attn_entmax") &&
         strcmp(kernel, "attn_decode") && strcmp(kernel, "clblast_xgemm") &&
         strcmp(kernel, "attn_lsh") && strcmp(kernel, "attn_span") &&
         !tune_kernel_is_backward(kernel))) {
        snprintf(err, size, "unknown kernel family \"%s\"", kernel);
        return -1;
    }
    s->bwd = tune_kernel_is_backward(kernel);
    s->gemm = !strcmp(kernel, "clblast_xgemm");
    s->span = !strcmp(kernel, "attn_span");
    const char *spec = line + used;
    tune_problem *list = NULL;
    if (tune_problems_parse(spec, &list, err, size) != 1) {
        free(list);
        if (!*err)
            snprintf(err, size, "expected one problem");
        return -1;
    }
    s->prob = list[0];
    free(list);
    if (tune_problem_desc(ctx, &s->prob, &s->desc, &s->layout) != SPARCL_OK) {
        snprintf(err, size, "%s", sparcl_ctx_errmsg(ctx));
        return -1;
    }
    /* The reference honours the normalization (lse then holds tau).  The
     * descriptor's spans point into s->prob.  A family without half
     * storage (clblast_xgemm) is refused here as in the parent
     * (tune_problem_for_kernel). */
    if (tune_problem_for_kernel(kernel, &s->prob, &s->desc, err, size) != 0 ||
        compute_reference(ctx, s, err, size) != 0) {
        release(s);
        return -1;
    }
    s->ready = 1;
    return 0;
}

/* The test hooks (TUNE_FAULT_ENV) on the candidates with NAME=V:
 * "crash:NAME=V" and "hang:NAME=V" crash or hang the worker;
 * "time:NAME=V:F:G:K" multiplies their times (wall and CPU) by F, but by G
 * on their K-th, 2K-th, ... evaluation in this worker: a finalist that
 * loses chosen rounds, for the tests of the decision rule; with ":A" after
 * K, also by G from their A-th evaluation on (a choice that loses its
 * confirmation); "wall:NAME=V:C:F:G:K[:A]" the same on the wall times
 * only, the CPU time always by C (evaluations spent waiting for a core, or
 * lost to worse parallelism).  Returns the factor for the wall times, and
 * sets *cpu_factor, 1 without such a hook on the candidate. */
static double maybe_fault(const sparcl_params *p, double *cpu_factor)
{
    *cpu_factor = 1;
    static int timed; /* evaluations of the "time:" candidates so far */
    const char *f = getenv(TUNE_FAULT_ENV);
    char name[64];
    int value;
    if (!f || sscanf(f, "%*[a-z]:%63[A-Z_0-9]=%d", name, &value) != 2)
        return 1;
    int32_t have;
    if (!sparcl_params_get(p, name, &have) || have != value)
        return 1;
    double fast, slow, cpu = 1;
    int every, from = 0, n = 0;
    const int wall_only = !strncmp(f, "wall:", 5);
    if (wall_only) {
        n = sscanf(f, "wall:%*[A-Z_0-9]=%*d:%lf:%lf:%lf:%d:%d", &cpu, &fast, &slow, &every, &from) -
            1;
    } else if (!strncmp(f, "time:", 5))
        n = sscanf(f, "time:%*[A-Z_0-9]=%*d:%lf:%lf:%d:%d", &fast, &slow, &every, &from);
    if (n > 0) {
        if (n < 3 || every <= 0)
            return 1;
        const char *count_file = getenv(TUNE_FAULT_COUNT_ENV);
        if (count_file) { /* the count across workers */
            FILE *cf = fopen(count_file, "r");
            if (!cf || fscanf(cf, "%d", &timed) != 1)
                timed = 0;
            if (cf)
                fclose(cf);
        }
        ++timed;
        if (count_file) {
            FILE *cf = fopen(count_file, "w");
            if (cf) {
                fprintf(cf, "%d\n", timed);
                fclose(cf);
            }
        }
        const double wall = timed % every == 0 || (n == 4 && timed >= from) ? slow : fast;
        *cpu_factor = wall_only ? cpu : wall;
        return wall;
    }
    if (!strncmp(f, "crash:", 6)) {
        /* The OpenCL runtime may have its own SIGSEGV handler; a real
         * crash must not be caught by it. */
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    if (!strncmp(f, "hang:", 5)) {
        /* tells a test when to kill this process from outside */
        fprintf(stderr, "sparcl-tune worker %d: hanging (test hook %s)\n", (int)getpid(), f);
        fflush(stderr);
        for (;;)
            pause();
    }
    return 1;
}

static double max_err(const float *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; ++i) {
        if (isinf(a[i]) && isinf(b[i]) && (a[i] < 0) == (b[i] < 0))
            continue;
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) /* NaN counts as infinitely wrong */
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *t, int n)
{
    double s[256];
    memcpy(s, t, sizeof *t * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* One run; its time in ms, or a negative value on failure.  A call may
 * enqueue several commands (the backward's three kernels, the forward's K
 * packing, the dense path's SGEMMs and softmax) and return the event of the
 * last, so every run is timed from the end of a marker enqueued just before
 * the call to the end of the returned event (the queue is in order). */
static double run_once(sparcl_ctx *ctx, sparcl_plan *plan, setup *s, char *msg, size_t size)
{
    cl_event before = NULL, ev = NULL;
    cl_mem *m = s->m;
    sparcl_status st;
    const double w0 = tool_now_ms();
    if (clEnqueueMarkerWithWaitList(sparcl_ctx_cl_queue(ctx), 0, NULL, &before) != CL_SUCCESS) {
        snprintf(msg, size, "clEnqueueMarkerWithWaitList failed");
        return -1;
    }
    if (s->span) {
        cl_event fwd = NULL;
        st = sparcl_plan_forward(plan, m[T_Q], m[T_K], m[T_V], m[T_OUT], m[T_LSE], 0, NULL, &fwd);
        if (st == SPARCL_OK)
            st = sparcl_plan_backward_span(plan, sparcl_ctx_cl_queue(ctx), m[T_Q], m[T_K], m[T_V],
                                           m[T_OUT], m[T_LSE], m[T_DOUT], m[T_DQ], m[T_DK], m[T_DV],
                                           m[T_DSPANS], 1, &fwd, &ev);
        if (fwd)
            clReleaseEvent(fwd);
    } else if (s->bwd) {
        st = sparcl_plan_backward(plan, m[T_Q], m[T_K], m[T_V], m[T_OUT], m[T_LSE], m[T_DOUT],
                                  m[T_DQ], m[T_DK], m[T_DV], 0, NULL, &ev);
    } else {
        st = sparcl_plan_forward(plan, m[T_Q], m[T_K], m[T_V], m[T_OUT], m[T_LSE], 0, NULL, &ev);
    }
    if (st != SPARCL_OK) {
        if (before)
            clReleaseEvent(before);
        snprintf(msg, size, "%s", sparcl_ctx_errmsg(ctx));
        return -1;
    }
    cl_int err = clWaitForEvents(1, &ev), exec = CL_COMPLETE;
    clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
    double ms = 0;
    if (err == CL_SUCCESS && exec == CL_COMPLETE)
        ms = tool_event_span_ms(before, ev, tool_now_ms() - w0);
    clReleaseEvent(ev);
    if (before)
        clReleaseEvent(before);
    if (err != CL_SUCCESS || exec != CL_COMPLETE) {
        snprintf(msg, size, "kernel execution failed (OpenCL %d / status %d)", (int)err, (int)exec);
        return -1;
    }
    return ms;
}

/* Reads the outputs back and returns the largest error: absolute for the
 * forward's out and lse, relative to max(1, largest reference value) per
 * gradient (dK, dV and dspans sum over many rows); negative if
 * unreadable. */
static double verify(sparcl_ctx *ctx, setup *s)
{
    double worst = 0;
    const int dtype = s->desc.dtype;
    for (int t = T_OUT; t < N_T; ++t) {
        if (!is_output(s, t))
            continue;
        /* out and the gradients are stored in the dtype; lse and dspans
         * are float */
        const int half = dtype != SPARCL_DTYPE_F32 && t != T_LSE && t != T_DSPANS;
        uint16_t *bits = half ? malloc(s->n[t] * sizeof *bits) : NULL;
        if ((half && !bits) || clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), s->m[t], CL_TRUE, 0,
                                                   s->n[t] * (half ? sizeof *bits : sizeof(float)),
                                                   half ? (void *)bits : (void *)s->host[t], 0,
                                                   NULL, NULL) != CL_SUCCESS) {
            free(bits);
            return -1;
        }
        if (half)
            from_half(dtype, bits, s->host[t], s->n[t]);
        free(bits);
        double scale = 1;
        for (size_t i = 0; t >= T_DQ && i < s->n[t]; ++i)
            scale = fmax(scale, fabs(s->ref[t][i]));
        worst = fmax(worst, max_err(s->host[t], s->ref[t], s->n[t]) / scale);
    }
    return worst;
}

/* Process CPU time in ms, all threads (POCL's included). */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + 1e-6 * (double)t.tv_nsec;
}

static void evaluate(sparcl_ctx *ctx, setup *s, const sparcl_params *params, int max_runs,
                     sparcl_tuning_result *r, double *cpu_ms)
{
    *cpu_ms = -1;
    memset(r, 0, sizeof *r);
    r->max_err = -1;
    sparcl_plan_desc d = s->desc;
    d.params = s->bwd ? NULL : params; /* the backward keeps the forward's defaults */
    /* attn_span: the candidate is the forward's and the backward's. */
    /* clblast_xgemm: the candidate is CLBlast's, the plan runs ALGO=1. */
    sparcl_params dense_path;
    sparcl_params_clear(&dense_path);
    sparcl_params_set(&dense_path, "ALGO", 1);
    if (s->gemm) {
        d.params = &dense_path;
        sparcl_ctx_set_gemm_params(ctx, params);
    }
    sparcl_plan *plan = NULL;
    sparcl_status st = sparcl_plan_init(ctx, &plan, &d);
    if (st == SPARCL_OK && (s->bwd || s->span))
        st = sparcl_plan_prepare_backward(plan, params);
    sparcl_params applied;
    if (st == SPARCL_OK && s->gemm && (sparcl_plan_gemm_params(plan, &applied), !applied.count)) {
        r->status = SPARCL_TUNING_INVALID;
        snprintf(r->message, sizeof r->message, "the plan declined the dense path (ALGO=1)");
        goto done;
    }
    if (st != SPARCL_OK) {
        r->status = st == SPARCL_ERR_BUILD ? SPARCL_TUNING_BUILD_ERROR
                    : st == SPARCL_ERR_INVALID_ARGUMENT || st == SPARCL_ERR_NOT_SUPPORTED
                        ? SPARCL_TUNING_INVALID
                        : SPARCL_TUNING_LAUNCH_ERROR;
        snprintf(r->message, sizeof r->message, "%s", sparcl_ctx_errmsg(ctx));
        goto done;
    }
    double cpu_factor, factor = maybe_fault(params, &cpu_factor);
    /* The first run is the warm-up and the one verified. */
    if (run_once(ctx, plan, s, r->message, sizeof r->message) < 0) {
        r->status = SPARCL_TUNING_LAUNCH_ERROR;
        goto done;
    }
    r->max_err = verify(ctx, s);
    if (r->max_err < 0) {
        r->status = SPARCL_TUNING_LAUNCH_ERROR;
        snprintf(r->message, sizeof r->message, "cannot read the result back");
        goto done;
    }
    if (!(r->max_err <= tolerance(s->desc.dtype))) {
        r->status = SPARCL_TUNING_WRONG;
        snprintf(r->message, sizeof r->message, "max abs error %.3g exceeds %.0e", r->max_err,
                 tolerance(s->desc.dtype));
        goto done;
    }
    double t[256], cpu[256], total = 0, prev = -1;
    if (max_runs < MIN_RUNS)
        max_runs = MIN_RUNS;
    if (max_runs > 256)
        max_runs = 256;
    int n = 0;
    while (n < max_runs) {
        double c0 = cpu_now();
        double ms = run_once(ctx, plan, s, r->message, sizeof r->message);
        if (ms < 0) {
            r->status = SPARCL_TUNING_LAUNCH_ERROR;
            goto done;
        }
        cpu[n] = cpu_now() - c0;
        t[n++] = ms;
        total += ms;
        if (n >= MIN_RUNS) {
            double m = median(t, n);
            if ((prev >= 0 && fabs(m - prev) <= STABLE * m) || total >= MAX_TIMED_MS)
                break;
            prev = m;
        }
    }
    r->status = SPARCL_TUNING_OK;
    r->runs = n;
    r->median_ms = median(t, n);
    *cpu_ms = median(cpu, n);
    r->min_ms = r->max_ms = t[0];
    for (int i = 1; i < n; ++i) {
        r->min_ms = fmin(r->min_ms, t[i]);
        r->max_ms = fmax(r->max_ms, t[i]);
    }
    r->median_ms *= factor;
    r->min_ms *= factor;
    r->max_ms *= factor;
    *cpu_ms *= cpu_factor;
done:
    sparcl_plan_free(plan);
}

static void one_line(char *s)
{
    for (; *s; ++s)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

/* Descriptors the worker did not ask for (the parent's, if it opened them
 * without close-on-exec: a driver's device files, a database) are closed
 * before the worker opens its own device: 0-2 and the answer pipe 3 stay. */
static void close_inherited(void)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = 4; fd < (int)max; ++fd)
        close(fd);
}

int tune_worker_main(const char *device)
{
    close_inherited();
    /* Ctrl-C is the parent's to handle: it stops this process itself. */
    signal(SIGINT, SIG_IGN);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    FILE *out = fdopen(3, "w");
    if (!out)
        return 2;
    sparcl_ctx *ctx = NULL;
    char ctx_err[512] = "";
    if (sparcl_ctx_init_device(&ctx, device) != SPARCL_OK)
        snprintf(ctx_err, sizeof ctx_err, "%s", sparcl_ctx_errmsg(NULL));
    /* Tuned rows must not leak into candidates: every plan here has an
     * explicit override, but keep lookups off anyway. */
    sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_USER, "");
    sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, "");
    /* Candidates are built once each: writing their binaries to the disk
     * cache would cost (on POCL about as much again as the compile) and
     * never pay back.  Offline mode still reads its bundle. */
    sparcl_ctx_set_program_cache(ctx, "");
    setup s;
    memset(&s, 0, sizeof s);
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        char err[512] = "";
        if (!strncmp(line, "problem ", 8)) {
            if (!ctx)
                snprintf(err, sizeof err, "no OpenCL context: %s", ctx_err);
            else
                set_up(ctx, &s, line + 8, err, sizeof err);
            one_line(err);
            if (*err)
                fprintf(out, "error %s\n", err);
            else
                fprintf(out, "ready\n");
        } else if (!strncmp(line, "eval ", 5) && s.ready) {
            char *save = NULL, *tok = strtok_r(line + 5, " ", &save);
            int max_runs = tok ? atoi(tok) : MIN_RUNS;
            sparcl_params p;
            sparcl_params_clear(&p);
            while ((tok = strtok_r(NULL, " ", &save))) {
                char *eq = strchr(tok, '=');
                if (eq) {
                    *eq = '\0';
                    sparcl_params_set(&p, tok, (int32_t)atoi(eq + 1));
                }
            }
            sparcl_tuning_result r;
            double cpu_ms = -1;
            evaluate(ctx, &s, &p, max_runs, &r, &cpu_ms);
            one_line(r.message);
            fprintf(out, "result %d %.9g %.9g %.9g %d %.9g %.9g %s\n", (int)r.status, r.median_ms,
                    r.min_ms, r.max_ms, r.runs, r.max_err, cpu_ms, r.message);
        } else {
            fprintf(out, "error unexpected request \"%.60s\"\n", line);
        }
        fflush(out);
    }
    release(&s);
    sparcl_ctx_free(ctx);
    fclose(out);
    return 0;
}
