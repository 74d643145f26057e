/*
 * select_quality.c -- sparcl-select-quality: how much of dense attention
 * dynamic block selection keeps, as a function of top-k's k and the mass
 * rule's tau, on structured inputs (select_inputs.h: low-rank Q/K, planted
 * local and long-range dependencies).  For every rule it runs the device
 * selection and forward, reads the chosen layout back, and prints:
 *   density  attended pairs / causally visible pairs;
 *   recall   dense softmax mass inside the chosen pairs, mean over rows
 *            (and the worst row);
 *   err      max |out - dense out| and ||out - dense||_F / ||dense||_F.
 * Dense attention is computed here in double (scores, softmax, P V).
 *
 * usage: sparcl-select-quality [--len N] [--heads H] [--dim D] [--block S]
 *                              [--pin]
 * --pin adds a pinned StreamingLLM layout (4 sink keys, a local window of
 * one block).  sparcl-layout's pattern "selected" draws a selection on the
 * same inputs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "select_inputs.h"
#include "sparcl.h"

typedef struct dense {
    float *p;    /* [H, N, N] probabilities (causal) */
    double *out; /* [H, N, D] */
} dense;

static int dense_attention(int H, int N, int D, const float *q, const float *k, const float *v,
                           dense *r)
{
    r->p = malloc(sizeof *r->p * (size_t)H * N * N);
    r->out = calloc((size_t)H * N * D, sizeof *r->out);
    double *s = malloc(sizeof *s * (size_t)N);
    if (!r->p || !r->out || !s)
        return free(s), 0;
    const double scale = 1.0 / sqrt((double)D);
    for (int h = 0; h < H; ++h)
        for (int i = 0; i < N; ++i) {
            const float *qi = q + ((size_t)h * N + i) * D;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= i; ++j) {
                const float *kj = k + ((size_t)h * N + j) * D;
                double dot = 0;
                for (int c = 0; c < D; ++c)
                    dot += (double)qi[c] * kj[c];
                s[j] = dot * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j <= i; ++j)
                sum += (s[j] = exp(s[j] - mx));
            float *pr = r->p + ((size_t)h * N + i) * N;
            double *o = r->out + ((size_t)h * N + i) * D;
            for (int j = 0; j < N; ++j) {
                const double pj = j <= i ? s[j] / sum : 0.0;
                pr[j] = (float)pj;
                for (int c = 0; j <= i && c < D; ++c)
                    o[c] += pj * v[((size_t)h * N + j) * D + c];
            }
        }
    free(s);
    return 1;
}

static cl_mem upload(sparcl_ctx *ctx, const float *x, size_t n)
{
    return clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                          n * sizeof *x, (void *)x, NULL);
}

/* One rule: the device call, the read-back and the row. */
static int run_rule(sparcl_ctx *ctx, int H, int N, int D, int S, const sparcl_layout *pin, int rule,
                    int k, float tau, cl_mem *m, const dense *ref)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = d.kv_heads = H;
    d.q_len = d.kv_len = N;
    d.head_dim = D;
    d.causal = 1;
    d.layout = pin;
    d.select = rule;
    d.select_k = k;
    d.select_tau = tau;
    d.select_block = S;
    sparcl_plan *plan = NULL;
    sparcl_layout *got = NULL;
    const size_t n = (size_t)H * N * D;
    float *out = malloc(sizeof *out * n);
    if (!out || sparcl_plan_init(ctx, &plan, &d) != SPARCL_OK ||
        sparcl_plan_forward(plan, m[0], m[1], m[2], m[3], NULL, 0, NULL, NULL) != SPARCL_OK ||
        clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m[3], CL_TRUE, 0, sizeof *out * n, out, 0,
                            NULL, NULL) != CL_SUCCESS ||
        sparcl_plan_read_selection(plan, 0, &got) != SPARCL_OK) {
        fprintf(stderr, "sparcl-select-quality: %s\n", sparcl_ctx_errmsg(ctx));
        free(out);
        sparcl_plan_free(plan);
        return 0;
    }
    double rec = 0, worst = 1, emax = 0, e2 = 0, r2 = 0;
    for (int h = 0; h < H; ++h)
        for (int i = 0; i < N; ++i) {
            const float *pr = ref->p + ((size_t)h * N + i) * N;
            double in = 0;
            for (int j = 0; j <= i; ++j)
                if (sparcl_layout_attends(got, h, i, j))
                    in += pr[j];
            rec += in;
            worst = in < worst ? in : worst;
        }
    for (size_t x = 0; x < n; ++x) {
        const double e = fabs(out[x] - ref->out[x]);
        emax = e > emax ? e : emax;
        e2 += e * e;
        r2 += ref->out[x] * ref->out[x];
    }
    const double visible = (double)H * N * (N + 1) / 2;
    char what[32];
    if (rule == SPARCL_SELECT_TOPK)
        snprintf(what, sizeof what, "top-k k=%d", k);
    else
        snprintf(what, sizeof what, "mass tau=%.2f", tau);
    printf("| %-14s | %7.4f | %7.4f | %7.4f | %9.2e | %9.2e |\n", what,
           (double)sparcl_layout_pairs(got) / visible, rec / ((double)H * N), worst, emax,
           sqrt(e2 / r2));
    sparcl_layout_free(got);
    sparcl_plan_free(plan);
    free(out);
    return 1;
}

int main(int argc, char **argv)
{
    int N = 2048, H = 2, D = 64, S = 64, pin_on = 0;
    for (int a = 1; a < argc; ++a) {
        if (a + 1 < argc && !strcmp(argv[a], "--len"))
            N = atoi(argv[++a]);
        else if (a + 1 < argc && !strcmp(argv[a], "--heads"))
            H = atoi(argv[++a]);
        else if (a + 1 < argc && !strcmp(argv[a], "--dim"))
            D = atoi(argv[++a]);
        else if (a + 1 < argc && !strcmp(argv[a], "--block"))
            S = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--pin"))
            pin_on = 1;
        else {
            fprintf(stderr, "usage: %s [--len N] [--heads H] [--dim D] [--block S] [--pin]\n",
                    argv[0]);
            return 2;
        }
    }
    if (N < 1 || H < 1 || D < 1 || S < 1)
        return fprintf(stderr, "sparcl-select-quality: sizes must be >= 1\n"), 2;
    const size_t n = (size_t)H * N * D;
    float *q = malloc(sizeof *q * n), *k = malloc(sizeof *k * n), *v = malloc(sizeof *v * n);
    dense ref = {NULL, NULL};
    sparcl_ctx *ctx = NULL;
    if (!q || !k || !v || sparcl_ctx_init(&ctx) != SPARCL_OK) {
        fprintf(stderr, "sparcl-select-quality: %s\n", sparcl_ctx_errmsg(NULL));
        return 1;
    }
    select_inputs(H, N, D, S, 4, 1, q, k, v);
    if (!dense_attention(H, N, D, q, k, v, &ref))
        return fprintf(stderr, "sparcl-select-quality: out of memory\n"), 1;
    sparcl_layout *pin = NULL;
    if (pin_on && sparcl_layout_init_streaming(ctx, &pin, 1, N, N, S, 4, S) != SPARCL_OK) {
        fprintf(stderr, "sparcl-select-quality: %s\n", sparcl_ctx_errmsg(ctx));
        return 1;
    }
    cl_mem m[4] = {upload(ctx, q, n), upload(ctx, k, n), upload(ctx, v, n), upload(ctx, v, n)};
    printf("causal, N=%d, heads=%d, head_dim=%d, block %d, pinned: %s; inputs: positional "
           "features (local), rank-8 content codes, 4 planted long-range block pairs per head\n\n",
           N, H, D, S, pin_on ? "4 sinks + local window of one block" : "none");
    printf("| rule           | density | recall  | worst   | max err   | rel err   |\n");
    printf("|----------------|---------|---------|---------|-----------|-----------|\n");
    const int ks[] = {1, 2, 4, 8, 16};
    const float taus[] = {0.5f, 0.8f, 0.9f, 0.95f, 0.99f};
    int ok = 1;
    for (size_t i = 0; ok && i < sizeof ks / sizeof ks[0]; ++i)
        ok = run_rule(ctx, H, N, D, S, pin, SPARCL_SELECT_TOPK, ks[i], 0, m, &ref);
    for (size_t i = 0; ok && i < sizeof taus / sizeof taus[0]; ++i)
        ok = run_rule(ctx, H, N, D, S, pin, SPARCL_SELECT_MASS, 0, taus[i], m, &ref);
    for (int i = 0; i < 4; ++i)
        clReleaseMemObject(m[i]);
    sparcl_layout_free(pin);
    sparcl_ctx_free(ctx);
    free(q);
    free(k);
    free(v);
    free(ref.p);
    free(ref.out);
    return ok ? 0 : 1;
}
