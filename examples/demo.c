/*
 * demo.c -- sparcl-demo: runs fused sparse attention for a few patterns on
 * the default device (SPARCL_DEVICE selects another) and prints, for each,
 * the median kernel time and the max error against the double-precision CPU
 * reference.  Exits non-zero if any error exceeds 1e-4.
 *
 * usage: sparcl-demo [--n N] [--heads H] [--dim D] [--reps R]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparcl.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(float *x, size_t n, unsigned *seed)
{
    for (size_t i = 0; i < n; ++i) {
        *seed = *seed * 1664525u + 1013904223u;
        x[i] = (float)((*seed >> 8) / 8388608.0 - 1.0);
    }
}

/* The library never prints: an application that wants its warnings (for
 * example a tuning database that cannot be read, and the fallback taken)
 * installs a log callback.  This one prints warnings and errors. */
static void print_warnings(void *user, sparcl_log_level level, const char *message)
{
    (void)user;
    if (level >= SPARCL_LOG_WARNING)
        fprintf(stderr, "sparcl-demo: %s: %s\n", level == SPARCL_LOG_ERROR ? "error" : "warning",
                message);
}

int main(int argc, char **argv)
{
    int n = 1024, heads = 4, dim = 64, reps = 5;
    for (int a = 1; a < argc; ++a) {
        if (a + 1 < argc && strcmp(argv[a], "--n") == 0)
            n = atoi(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--heads") == 0)
            heads = atoi(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--dim") == 0)
            dim = atoi(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--reps") == 0)
            reps = atoi(argv[++a]);
        else {
            fprintf(stderr, "usage: %s [--n N] [--heads H] [--dim D] [--reps R]\n", argv[0]);
            return 2;
        }
    }
    if (n < 1 || heads < 1 || dim < 1 || dim > SPARCL_MAX_HEAD_DIM || reps < 1) {
        fprintf(stderr, "sparcl-demo: need n >= 1, heads >= 1, 1 <= dim <= %d, reps >= 1\n",
                SPARCL_MAX_HEAD_DIM);
        return 2;
    }
    sparcl_ctx *ctx;
    if (sparcl_ctx_init(&ctx) != SPARCL_OK) {
        fprintf(stderr, "sparcl-demo: %s\n", sparcl_ctx_errmsg(NULL));
        return 1;
    }
    sparcl_ctx_set_log(ctx, print_warnings, NULL);
    printf("device: %s\n", sparcl_ctx_device_string(ctx));
    printf("shape: batch 1, heads %d, n %d, head_dim %d\n\n", heads, n, dim);
    printf("%-22s %9s %10s %10s %10s  %s\n", "pattern", "density", "median_ms", "GFLOP/s",
           "max_err", "params");

    size_t elems = (size_t)heads * n * dim;
    float *q = malloc(elems * 4), *k = malloc(elems * 4), *v = malloc(elems * 4);
    float *o = malloc(elems * 4);
    double *ref = malloc(elems * 8);
    unsigned seed = 42;
    if (!q || !k || !v || !o || !ref) {
        fprintf(stderr, "sparcl-demo: out of host memory\n");
        return 1;
    }
    fill(q, elems, &seed);
    fill(k, elems, &seed);
    fill(v, elems, &seed);

    cl_int err;
    cl_context cc = sparcl_ctx_cl_context(ctx);
    cl_command_queue cq = sparcl_ctx_cl_queue(ctx);
    cl_mem bq = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, elems * 4, q, &err);
    cl_mem bk = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, elems * 4, k, &err);
    cl_mem bv = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, elems * 4, v, &err);
    cl_mem bo = clCreateBuffer(cc, CL_MEM_WRITE_ONLY, elems * 4, NULL, &err);
    if (!bq || !bk || !bv || !bo) {
        fprintf(stderr, "sparcl-demo: cannot allocate device buffers (%d)\n", err);
        return 1;
    }

    enum { DENSE, CAUSAL, WINDOW, BLOCKS, N_PATTERNS };
    static const char *names[N_PATTERNS] = {"dense", "causal", "window +-128", "block mask 1/4"};
    int failures = 0;
    for (int pat = 0; pat < N_PATTERNS; ++pat) {
        sparcl_layout *layout = NULL;
        sparcl_status st = SPARCL_OK;
        int causal = 0;
        if (pat == CAUSAL)
            causal = 1;
        else if (pat == WINDOW)
            st = sparcl_layout_init_window(ctx, &layout, 1, n, n, 64, 128, 128);
        else if (pat == BLOCKS) {
            int nb = (n + 63) / 64;
            uint8_t *mask = calloc((size_t)nb * nb, 1);
            for (int r = 0; r < nb; ++r)
                for (int c = 0; c < nb; ++c)
                    mask[r * nb + c] = ((r * 7 + c * 3) % 4) == 0 || r == c;
            st = sparcl_layout_init_block_mask(ctx, &layout, 1, n, n, 64, mask);
            free(mask);
        }
        if (st != SPARCL_OK) {
            fprintf(stderr, "sparcl-demo: layout: %s\n", sparcl_ctx_errmsg(ctx));
            return 1;
        }
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_heads = d.kv_heads = heads;
        d.q_len = d.kv_len = n;
        d.head_dim = dim;
        d.causal = causal;
        d.layout = layout;
        sparcl_plan *plan;
        if (sparcl_plan_init(ctx, &plan, &d) != SPARCL_OK) {
            fprintf(stderr, "sparcl-demo: plan: %s\n", sparcl_ctx_errmsg(ctx));
            return 1;
        }
        double *ms = malloc(sizeof *ms * (size_t)reps);
        for (int r = -1; r < reps; ++r) { /* r = -1 warms up */
            /* A call may enqueue several commands (K packing, then the
             * kernel): time from a marker before it to its event's end. */
            cl_event mark = NULL, ev = NULL;
            if (clEnqueueMarkerWithWaitList(cq, 0, NULL, &mark) != CL_SUCCESS ||
                sparcl_plan_forward(plan, bq, bk, bv, bo, NULL, 0, NULL, &ev) != SPARCL_OK) {
                fprintf(stderr, "sparcl-demo: forward: %s\n", sparcl_ctx_errmsg(ctx));
                return 1;
            }
            clWaitForEvents(1, &ev);
            cl_ulong t0 = 0, t1 = 0;
            clGetEventProfilingInfo(mark, CL_PROFILING_COMMAND_END, sizeof t0, &t0, NULL);
            clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
            clReleaseEvent(mark);
            clReleaseEvent(ev);
            if (r >= 0)
                ms[r] = (double)(t1 - t0) * 1e-6;
        }
        qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
        double med = ms[reps / 2];
        free(ms);
        clEnqueueReadBuffer(cq, bo, CL_TRUE, 0, elems * 4, o, 0, NULL, NULL);
        sparcl_reference_forward(ctx, &d, q, k, v, ref, NULL);
        double max_err = 0.0;
        for (size_t i = 0; i < elems; ++i)
            max_err = fmax(max_err, fabs((double)o[i] - ref[i]));
        int64_t pairs;
        double density;
        if (layout) {
            pairs = sparcl_layout_pairs(layout) * (sparcl_layout_heads(layout) == 1 ? heads : 1);
            density = sparcl_layout_density(layout);
        } else {
            pairs = (int64_t)heads * (causal ? (int64_t)n * (n + 1) / 2 : (int64_t)n * n);
            density = (double)pairs / ((double)heads * n * n);
        }
        double gflops = 4.0 * dim * (double)pairs / (med * 1e6);
        sparcl_params params;
        char ptext[256];
        sparcl_plan_params(plan, &params, NULL);
        sparcl_params_format(&params, ptext, sizeof ptext);
        printf("%-22s %9.4f %10.3f %10.2f %10.2e  %s%s\n", names[pat], density, med, gflops,
               max_err, ptext, max_err > 1e-4 ? "  FAIL" : "");
        failures += max_err > 1e-4;
        sparcl_plan_free(plan);
        sparcl_layout_free(layout);
    }
    clReleaseMemObject(bq);
    clReleaseMemObject(bk);
    clReleaseMemObject(bv);
    clReleaseMemObject(bo);
    free(q), free(k), free(v), free(o), free(ref);
    sparcl_ctx_free(ctx);
    printf("\n%s\n", failures ? "FAILED: error above 1e-4" : "all patterns within 1e-4 of the reference");
    return failures ? 1 : 0;
}
