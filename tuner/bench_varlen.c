/*
 * bench_varlen.c -- sparcl-bench's packed variable-length batch rows (see
 * bench_varlen.h).  Both runs compute the same useful pairs: each
 * sequence's causal attention.  The padded run does it for a batch of
 * max-length sequences (a short sequence's queries never see its padding
 * under the causal mask, so its rows are exact too), so its rows double as
 * a check of the packed ones.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_calls.h"
#include "bench_varlen.h"
#include "tool_timing.h"
#include "varlen_batch.h"

#define DIM 64
#define COUNT VARLEN_BATCH_COUNT
#define TOTAL 7417 /* the batch's own mix (varlen_batch.h) */

static sparcl_plan *plan_of(sparcl_ctx *ctx, int batch, int heads, int n, int causal,
                            const sparcl_layout *layout, const sparcl_params *params)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = batch;
    d.q_heads = d.kv_heads = heads;
    d.q_len = d.kv_len = n;
    d.head_dim = DIM;
    d.causal = causal;
    d.layout = layout;
    d.params = params;
    sparcl_plan *p = NULL;
    if (sparcl_plan_init(ctx, &p, &d) != SPARCL_OK)
        fprintf(stderr, "sparcl-bench: varlen: %s\n", sparcl_ctx_errmsg(ctx));
    return p;
}

/* q, k, v from x (3 x n floats each), out and lse uninitialized. */
static int buffers(sparcl_ctx *ctx, const float *x, size_t n, size_t rows, cl_mem *m)
{
    int ok = 1;
    for (int i = 0; i < T_COUNT; ++i) {
        const size_t size = i == T_LSE ? rows : n;
        m[i] = i > T_LSE
                   ? NULL
                   : clCreateBuffer(sparcl_ctx_cl_context(ctx),
                                    CL_MEM_READ_WRITE | (i < T_OUT ? CL_MEM_COPY_HOST_PTR : 0),
                                    sizeof(float) * size,
                                    i < T_OUT ? (void *)(x + (size_t)i * n) : NULL, NULL);
        ok &= i > T_LSE || m[i] != NULL;
    }
    return ok;
}

static void release(cl_mem *m)
{
    for (int i = 0; i < T_COUNT; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
}

int bench_varlen(sparcl_ctx *ctx, int heads, int reps, double fma_gflops,
                 const sparcl_params *params)
{
    int32_t cu[COUNT + 1], lens[COUNT];
    int longest = 0;
    double pairs = 0;
    varlen_batch_offsets(TOTAL, cu);
    for (int s = 0; s < COUNT; ++s) {
        lens[s] = cu[s + 1] - cu[s];
        longest = lens[s] > longest ? lens[s] : longest;
        pairs += (double)lens[s] * (lens[s] + 1) / 2;
    }
    const int total = cu[COUNT];
    const size_t np = (size_t)heads * total * DIM, nd = (size_t)COUNT * heads * longest * DIM;
    float *xp = malloc(sizeof(float) * 3 * np), *xd = calloc(3 * nd, sizeof(float));
    float *op = malloc(sizeof(float) * np), *od = malloc(sizeof(float) * nd);
    cl_mem m[2][T_COUNT];
    memset(m, 0, sizeof m);
    sparcl_layout *layout = NULL;
    sparcl_plan *plans[2] = {NULL, NULL};
    int failures = 1;
    if (!xp || !xd || !op || !od)
        goto done;
    /* the same values at the same place of each sequence in both forms */
    srand(7);
    for (size_t i = 0; i < 3 * np; ++i)
        xp[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
    for (int t = 0; t < 3; ++t)
        for (int s = 0; s < COUNT; ++s)
            for (int h = 0; h < heads; ++h)
                memcpy(xd + t * nd + (((size_t)s * heads + h) * longest) * DIM,
                       xp + t * np + ((size_t)h * total + cu[s]) * DIM,
                       sizeof(float) * lens[s] * DIM);
    if (varlen_batch_layout(ctx, TOTAL, 64, &layout) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: varlen: %s\n", sparcl_ctx_errmsg(ctx));
        goto done;
    }
    plans[0] = plan_of(ctx, 1, heads, total, 0, layout, params);
    plans[1] = plan_of(ctx, COUNT, heads, longest, 1, NULL, params);
    if (!plans[0] || !plans[1] || !buffers(ctx, xp, np, (size_t)heads * total, m[0]) ||
        !buffers(ctx, xd, nd, (size_t)COUNT * heads * longest, m[1]))
        goto done;
    /* what the next batch costs: its layout and plan, programs built */
    const double r0 = tool_now_ms();
    sparcl_layout *again = NULL;
    sparcl_plan *next = varlen_batch_layout(ctx, TOTAL, 64, &again) == SPARCL_OK
                            ? plan_of(ctx, 1, heads, total, 0, again, params)
                            : NULL;
    const double replan = tool_now_ms() - r0;
    sparcl_plan_free(next);
    sparcl_layout_free(again);
    double ms[2];
    if (!next || !bench_medians(ctx, plans, 2, &m[0][0], T_COUNT, reps, 0, ms))
        goto done;
    cl_command_queue q = sparcl_ctx_cl_queue(ctx);
    if (clEnqueueReadBuffer(q, m[0][T_OUT], CL_TRUE, 0, sizeof(float) * np, op, 0, NULL, NULL) !=
            CL_SUCCESS ||
        clEnqueueReadBuffer(q, m[1][T_OUT], CL_TRUE, 0, sizeof(float) * nd, od, 0, NULL, NULL) !=
            CL_SUCCESS)
        goto done;
    double diff = 0;
    for (int s = 0; s < COUNT; ++s)
        for (int h = 0; h < heads; ++h)
            for (size_t e = 0; e < (size_t)lens[s] * DIM; ++e) {
                const double a = op[((size_t)h * total + cu[s]) * DIM + e];
                const double b = od[(((size_t)s * heads + h) * longest) * DIM + e];
                diff = fabs(a - b) > diff || a != a || b != b ? fabs(a - b) : diff;
            }
    const double flop = 4.0 * DIM * pairs * heads;
    printf("\npacked variable-length batch: %d sequences of", COUNT);
    for (int s = 0; s < COUNT; ++s)
        printf(" %d", lens[s]);
    printf(" tokens (%d in all), causal per sequence, %d heads, head_dim %d; padded: batch %d x "
           "%d, causal.\nGFLOP/s counts the useful pairs (%.3g per head) for both rows; "
           "replan_ms: the next batch's layout and plan (programs built).\n",
           total, heads, DIM, COUNT, longest, pairs);
    printf("%-16s %9s %8s %6s %9s %6s  %s\n", "run", "ms", "GFLOP/s", "xPeak", "replan_ms", "%",
           "params");
    const char *names[2] = {"packed (varlen)", "padded"};
    for (int p = 0; p < 2; ++p) {
        const double gf = flop / (ms[p] * 1e6);
        printf("%-16s %9.2f %8.2f %6.3f", names[p], ms[p], gf,
               fma_gflops > 0 ? gf / fma_gflops : 0);
        if (p == 0)
            printf(" %9.2f %5.1f%%", replan, 100.0 * replan / ms[0]);
        else
            printf(" %9s %6s", "", "");
        sparcl_params used;
        sparcl_param_source src;
        char text[160];
        sparcl_plan_params(plans[p], &used, &src);
        sparcl_params_format(&used, text, sizeof text);
        printf("  %s [%s]\n", text,
               src == SPARCL_PARAMS_DATABASE   ? "database"
               : src == SPARCL_PARAMS_OVERRIDE ? "override"
                                               : "default");
    }
    printf("packed is %.2fx faster than padded; max |packed - padded| over the real rows %.2g\n",
           ms[1] / ms[0], diff);
    failures = !(diff <= 1e-5);
done:
    if (failures)
        fprintf(stderr, "sparcl-bench: varlen rows failed\n");
    for (int p = 0; p < 2; ++p) {
        sparcl_plan_free(plans[p]);
        release(m[p]);
    }
    sparcl_layout_free(layout);
    free(xp), free(xd), free(op), free(od);
    return failures;
}
