/*
 * sparcl_bench.c -- sparcl-bench: the standard problem set of the forward
 * pass, timed on the chosen device with the parameters the runtime picks
 * (or explicit --set overrides), next to the machine's SGEMM rate and a
 * dense CPU attention baseline measured in the same run (bench_baseline.c),
 * and the device's own FMA peak and streaming bandwidth, measured in the
 * same run by OpenCL probe kernels (bench_peak.c).
 *
 * Per case: median time of >= 5 calls after warm-up from OpenCL profiling
 * events (from a marker enqueued just before the call to the end of the
 * call's event, so multi-kernel algorithms are timed whole), useful GFLOP/s
 * (4 * head_dim FLOPs per attended pair, counted from the layout, not the
 * tiles), what bounds the case (its useful FLOPs per byte of compulsory
 * traffic -- Q, K, V, O, lse, and the gradients for the backward -- against
 * the machine balance, peak FLOP/s over bandwidth) and the fraction of that
 * ceiling it reaches (of the FMA peak, or of the bandwidth by its
 * compulsory bytes), the fraction of the SGEMM rate, the device memory the plan
 * allocated, the speedup over the baseline, and the max error of a sample
 * of rows against a double-precision recomputation.
 *
 * The decoding cases (issue 15) have one query row per head over a long
 * key range, GQA or MHA: their K and V dominate the compulsory bytes, so
 * xPeak is the fraction of the measured bandwidth they stream K and V at.
 * --max-kv N skips cases with more than N keys (the 128k ones need about
 * 1 GiB of K and V).
 *
 * usage: sparcl-bench [--quick] [--cases a,b,...] [--json] [--reps R]
 *                     [--baseline-reps R] [--no-baseline] [--set NAME=VALUE]...
 *                     [--bwd-set NAME=VALUE]... [--max-kv N] [--dtype f32|f16|bf16]
 *                     [--list] [--select N [--select-heads H] [--select-parts P]]
 *                     [--multidev N] [--varlen] [--paged P]
 * --paged P adds the KV cache rows (bench_paged.h: one decoding step over a
 * 32k-token cache, contiguous and in pages of P tokens); alone, without
 * --cases, it runs only those.
 * --varlen adds the packed variable-length batch rows (bench_varlen.h: one
 * batch of mixed lengths packed against the same padded to the longest);
 * alone, without --cases, it runs only those.
 * --select N adds the dynamic block selection rows at length N (bench_select.h:
 * selection time against the sparse forward's, the whole call against the
 * dense forward); alone, without --cases, it runs only those.
 * --multidev N times the multi-device plans instead (bench_multidev.c):
 * each case on one device and cut over N, by heads, queries and keys.
 * --set overrides the forward's parameters, --bwd-set the backward's (the
 * attn_bwd family, through sparcl_plan_prepare_backward).
 * --dtype f16|bf16 stores q, k, v and out (and the backward's dout, dq, dk
 * and dv) in half precision: inputs are rounded to
 * the storage type on the host, the error is measured against the double
 * recomputation from those rounded inputs, and the compulsory bytes count
 * 2-byte elements.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_baseline.h"
#include "bench_multidev.h"
#include "bench_paged.h"
#include "bench_peak.h"
#include "bench_select.h"
#include "bench_varlen.h"
#include "sparcl.h"
#include "tool_log.h"
#include "tool_timing.h"

enum pattern { PAT_DENSE, PAT_CAUSAL, PAT_WINDOW, PAT_BIGBIRD, PAT_SPAN, PAT_LSH };
static const char *pattern_names[] = {"dense", "causal", "window", "bigbird", "span", "lsh"};

typedef struct bench_case {
    const char *name;
    int pattern, n, heads, dim;
    int quick;    /* part of --quick */
    int backward; /* times sparcl_plan_backward: useful FLOPs are 2.5x the forward's */
    int q_len;    /* query rows per head when fewer than n (decoding); 0: n */
    int kv_heads; /* K/V heads when fewer than heads (GQA); 0: heads */
} bench_case;

/* PAT_LSH cases (issue 17): LSH attention with these rounds, buckets and
 * chunk, not causal.  Their pairs are counted from the chunk geometry, the
 * error against the reference on head 0, and base_ms is dense CPU
 * attention at the same length (so speedup is LSH over dense). */
typedef struct lsh_setup {
    int rounds, buckets, chunk;
} lsh_setup;

static lsh_setup lsh_of(const bench_case *c)
{
    /* Reformer's choice: about n / chunk buckets. */
    const lsh_setup s = {2, c->n / 64, 64};
    return s;
}

/* The standard problem set of issue 5 (fp32, batch 1). */
static const bench_case cases[] = {
    {"dense-4k", PAT_DENSE, 4096, 8, 64, 1, 0, 0, 0},
    {"causal-4k", PAT_CAUSAL, 4096, 8, 64, 0, 0, 0, 0},
    {"window-16k", PAT_WINDOW, 16384, 8, 64, 1, 0, 0, 0},
    {"bigbird-16k", PAT_BIGBIRD, 16384, 8, 64, 0, 0, 0, 0},
    {"window-128k", PAT_WINDOW, 131072, 4, 64, 0, 0, 0, 0},
    {"dense-2k-d128", PAT_DENSE, 2048, 8, 128, 1, 0, 0, 0},
    /* The backward pass (issue 8) on the causal and sliding-window cases. */
    {"bwd-causal-4k", PAT_CAUSAL, 4096, 8, 64, 0, 1, 0, 0},
    {"bwd-window-16k", PAT_WINDOW, 16384, 8, 64, 1, 1, 0, 0},
    /* Decoding (issue 15): one query row over n keys, GQA 32/8 and MHA. */
    {"decode-gqa-4k", PAT_DENSE, 4096, 32, 128, 1, 0, 1, 8},
    {"decode-gqa-32k", PAT_DENSE, 32768, 32, 128, 0, 0, 1, 8},
    {"decode-gqa-128k", PAT_DENSE, 131072, 32, 128, 0, 0, 1, 8},
    {"decode-mha-128k", PAT_DENSE, 131072, 8, 64, 0, 0, 1, 0},
    /* Adaptive span (issue 17): spans of 16 << (h % 8), ramp SPAN_RAMP,
     * forward and backward with the spans' gradient. */
    {"span-16k", PAT_SPAN, 16384, 8, 64, 1, 0, 0, 0},
    {"bwd-span-16k", PAT_SPAN, 16384, 8, 64, 0, 1, 0, 0},
    /* LSH attention (issue 17) next to dense attention at the same length. */
    {"dense-16k", PAT_DENSE, 16384, 8, 64, 0, 0, 0, 0},
    {"lsh-16k", PAT_LSH, 16384, 8, 64, 0, 0, 0, 0},
    {"lsh-64k", PAT_LSH, 65536, 8, 64, 0, 0, 0, 0},
    /* Dense attention on one head at the LSH lengths, for a loaded machine
     * where 8 dense heads take minutes a call (its cost is per head). */
    {"dense-16k-h1", PAT_DENSE, 16384, 1, 64, 0, 0, 0, 0},
    {"dense-64k-h1", PAT_DENSE, 65536, 1, 64, 0, 0, 0, 0},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

/* Pattern constants of the set: window +-256 tokens; BigBird with block 64,
 * 3 window blocks, 2 global blocks, 3 random blocks per block row. */
#define WINDOW 256
#define BB_BLOCK 64
#define BB_GLOBAL 2
#define BB_RANDOM 3
/* Adaptive span: head h's span z = 16 << (h % 8) and the ramp R; keys at
 * distances 0 .. z + R - 1 have mask m > 0. */
#define SPAN_RAMP 32

static float span_z(int h)
{
    return (float)(16 << (h % 8));
}

static int span_reach(int h)
{
    return (int)span_z(h) + SPAN_RAMP;
}

/* log of the soft mask of the span pattern at distance x >= 0 (0 for the
 * other patterns, whose weights are not masked softly). */
static double log_mask(int pattern, int h, int x)
{
    if (pattern != PAT_SPAN)
        return 0.0;
    const double m = ((double)SPAN_RAMP + span_z(h) - x) / SPAN_RAMP;
    return log(m < 1.0 ? m : 1.0);
}

typedef struct options {
    int json, reps, baseline_reps, baseline, quick, max_kv;
    int dtype; /* sparcl_dtype of q, k, v and out */
    int selected[N_CASES];
    sparcl_params params, bwd_params;
    int have_params, have_bwd_params;
    int select_n; /* --select N: the dynamic block selection rows (bench_select.h) at length N */
    int select_heads;         /* --select-heads H, 8 by default */
    const char *select_parts; /* --select-parts fwd,bwd,dec (NULL: all) */
    int varlen;               /* --varlen: the packed variable-length batch rows */
    int paged;                /* --paged P: the KV cache rows with pages of P tokens */
    int multidev;             /* --multidev N: devices; 0 for the standard set */
} options;

static int q_len_of(const bench_case *c)
{
    return c->q_len ? c->q_len : c->n;
}

static int kv_heads_of(const bench_case *c)
{
    return c->kv_heads ? c->kv_heads : c->heads;
}

/* The pattern of one case, for the layout, the baseline's mask and the
 * error check. */
typedef struct pattern_info {
    const bench_case *c;
    uint8_t *bb; /* BigBird block mask [heads][nb][nb] */
    int nb;
} pattern_info;

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static uint8_t *bigbird_mask(int heads, int nb)
{
    uint8_t *m = calloc((size_t)heads * nb * nb, 1);
    if (!m)
        return NULL;
    for (int h = 0; h < heads; ++h) {
        uint64_t seed = 1000003u * (uint64_t)(h + 1);
        for (int r = 0; r < nb; ++r) {
            uint8_t *row = m + ((size_t)h * nb + r) * nb;
            for (int c = r - 1; c <= r + 1; ++c)
                if (c >= 0 && c < nb)
                    row[c] = 1;
            for (int g = 0; g < BB_GLOBAL && g < nb; ++g)
                row[g] = 1;
            if (r < BB_GLOBAL)
                memset(row, 1, (size_t)nb);
            int free_cols = 0;
            for (int c = 0; c < nb; ++c)
                free_cols += !row[c];
            for (int k = 0; k < BB_RANDOM && k < free_cols;) {
                int c = (int)(lcg(&seed) % (uint64_t)nb);
                if (!row[c]) {
                    row[c] = 1;
                    ++k;
                }
            }
        }
    }
    return m;
}

static int attends(const pattern_info *p, int h, int i, int j)
{
    switch (p->c->pattern) {
    case PAT_CAUSAL: return j <= i;
    case PAT_WINDOW: return j >= i - WINDOW && j <= i + WINDOW;
    case PAT_BIGBIRD: return p->bb[((size_t)h * p->nb + i / BB_BLOCK) * p->nb + j / BB_BLOCK] != 0;
    case PAT_SPAN: return j <= i && i - j < span_reach(h);
    default: return 1;
    }
}

/* The baseline's mask row, filled by ranges (the same predicate as
 * attends(), which sample_error() uses per element). */
static void mask_row(const void *self, int h, int i, uint8_t *row)
{
    const pattern_info *p = self;
    const int n = p->c->n;
    int lo = 0, hi = n; /* [lo, hi) attends, for the contiguous patterns */
    switch (p->c->pattern) {
    case PAT_CAUSAL: hi = i + 1; break;
    case PAT_SPAN: /* the keys with m > 0, unweighted: the baseline times a mask */
        lo = i - span_reach(h) + 1 > 0 ? i - span_reach(h) + 1 : 0;
        hi = i + 1;
        break;
    case PAT_WINDOW:
        lo = i - WINDOW > 0 ? i - WINDOW : 0;
        hi = i + WINDOW + 1 < n ? i + WINDOW + 1 : n;
        break;
    case PAT_BIGBIRD:
        for (int c = 0; c < p->nb; ++c) {
            int j0 = c * BB_BLOCK, len = n - j0 < BB_BLOCK ? n - j0 : BB_BLOCK;
            memset(row + j0, p->bb[((size_t)h * p->nb + i / BB_BLOCK) * p->nb + c], (size_t)len);
        }
        return;
    default: break;
    }
    memset(row, 0, (size_t)n);
    memset(row + lo, 1, (size_t)(hi - lo));
}

static sparcl_status make_layout(sparcl_ctx *ctx, pattern_info *p, sparcl_layout **out)
{
    const bench_case *c = p->c;
    *out = NULL;
    switch (c->pattern) {
    case PAT_CAUSAL: return sparcl_layout_init_causal(ctx, out, 1, c->n, c->n, 64);
    case PAT_WINDOW: return sparcl_layout_init_window(ctx, out, 1, c->n, c->n, 64, WINDOW, WINDOW);
    case PAT_BIGBIRD:
        p->nb = (c->n + BB_BLOCK - 1) / BB_BLOCK;
        if (!(p->bb = bigbird_mask(c->heads, p->nb)))
            return SPARCL_ERR_OUT_OF_MEMORY;
        return sparcl_layout_init_block_mask(ctx, out, c->heads, c->n, c->n, BB_BLOCK, p->bb);
    default: return SPARCL_OK; /* dense: no layout */
    }
}

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; ++i) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) / 8388608.0 - 1.0);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Max |out - exact| over a sample of rows, recomputed in double from the
 * pattern definition (not from the library's layout). */
static double sample_error(const pattern_info *p, const float *q, const float *k, const float *v,
                           const float *o, float scale)
{
    const int n = p->c->n, d = p->c->dim, heads = p->c->heads, lq = q_len_of(p->c);
    const int group = heads / kv_heads_of(p->c);
    double *w = malloc(sizeof *w * (size_t)n), err = 0.0;
    if (!w)
        return NAN;
    uint64_t seed = 7;
    for (int s = 0; s < 24; ++s) {
        int h = s % heads;
        int i = s == 0 ? 0 : s == 1 ? lq - 1 : (int)(lcg(&seed) % (uint64_t)lq);
        const float *qi = q + ((size_t)h * lq + i) * d;
        const float *kh = k + (size_t)(h / group) * n * d, *vh = v + (size_t)(h / group) * n * d;
        double mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
            w[j] = -INFINITY;
            if (!attends(p, h, i, j))
                continue;
            double x = 0.0;
            for (int t = 0; t < d; ++t)
                x += (double)qi[t] * kh[(size_t)j * d + t];
            w[j] = x * scale + log_mask(p->c->pattern, h, i - j);
            mx = fmax(mx, w[j]);
        }
        double sum = 0.0;
        for (int j = 0; j < n; ++j)
            if (w[j] > -INFINITY)
                sum += (w[j] = exp(w[j] - mx));
            else
                w[j] = 0.0;
        for (int t = 0; t < d; ++t) {
            double acc = 0.0;
            for (int j = 0; j < n; ++j)
                if (w[j] != 0.0)
                    acc += w[j] * vh[(size_t)j * d + t];
            err = fmax(err, fabs(acc / sum - o[((size_t)h * lq + i) * d + t]));
        }
    }
    free(w);
    return err;
}

/* Attended pairs of a non-causal LSH case: per head and round, sorted
 * position p of chunk c sees chunks c-1 and c but not itself. */
static int64_t lsh_pairs(const bench_case *c)
{
    const lsh_setup ls = lsh_of(c);
    int64_t per = 0;
    for (int p = 0; p < c->n; ++p) {
        const int ch = p / ls.chunk;
        const int lo = ch > 0 ? (ch - 1) * ls.chunk : 0;
        const int hi = (ch + 1) * ls.chunk < c->n ? (ch + 1) * ls.chunk : c->n;
        per += hi - lo > 1 ? hi - lo - 1 : 1;
    }
    return per * ls.rounds * c->heads;
}

/* Max |out - reference| of an LSH case over head 0, from the double
 * reference (the same seeded rotations) run on that head alone. */
static double lsh_error(sparcl_ctx *ctx, const sparcl_plan_desc *plan_desc, const float *q,
                        const float *v, const float *o)
{
    sparcl_plan_desc d = *plan_desc;
    d.q_heads = d.kv_heads = 1;
    d.params = NULL;
    const size_t n = (size_t)d.q_len * (size_t)d.head_dim;
    double *ref = malloc(sizeof *ref * n), err = 0.0;
    if (!ref || sparcl_reference_forward(ctx, &d, q, q, v, ref, NULL) != SPARCL_OK) {
        free(ref);
        return NAN;
    }
    for (size_t x = 0; x < n; ++x)
        err = fmax(err, fabs(ref[x] - o[x]));
    free(ref);
    return err;
}

typedef struct result {
    double density, ms, ms_min, ms_max, gflops, base_ms, err;
    /* Median process CPU time per call (and per baseline run): FLOPs per
     * CPU-second are robust to other users' load on a shared machine. */
    double cpu_ms, cpu_ms_min, base_cpu_ms;
    /* What a new length costs an application: the layout at a new length
     * and a plan for it, with the programs already built (-1 if it failed):
     * the median of three lengths made from the case's plan, the first of
     * them, and the median made from scratch. */
    double replan_ms, replan_first_ms, replan_scratch_ms;
    int64_t pairs;
    size_t device_bytes;
    char params[256];
    char origin[256]; /* sparcl_plan_params_origin() */
    const char *source;
    const char *base_note; /* why there is no baseline, or NULL */
    int dtype;             /* the options' */
} result;

/* Useful FLOPs of one call: 4 * head_dim per attended pair, counted from
 * the layout; the backward counts 2.5x that, as FlashAttention does. */
static double useful_flop(const bench_case *c, const result *r)
{
    return (c->backward ? 2.5 : 1.0) * 4.0 * c->dim * (double)r->pairs;
}

/* Compulsory bytes of one call: every tensor read or written once, at the
 * storage type's size (lse is fp32; the bench's cases have as many K/V
 * heads as query heads). */
static double compulsory_bytes(const bench_case *c, int dtype)
{
    const double hnd = (double)c->heads * c->n * c->dim, hn = (double)c->heads * c->n;
    const double es = (double)sparcl_dtype_size(dtype);
    if (c->q_len || c->kv_heads) { /* forward: q, out, lse per query row; k, v per key */
        const double rows = (double)c->heads * q_len_of(c);
        return es * (2 * rows * c->dim + 2.0 * kv_heads_of(c) * c->n * c->dim) + 4.0 * rows;
    }
    return es * (c->backward ? 8 * hnd : 4 * hnd) + 4.0 * hn;
}

/* The largest error a case may show: the fp32 tolerance, plus half an ulp
 * of 1 for the rounding of out when it is stored in half (|out| <= 1). */
static double max_err_allowed(int dtype)
{
    return 1e-4 + (dtype == SPARCL_DTYPE_F16 ? 0x1p-11 : dtype == SPARCL_DTYPE_BF16 ? 0x1p-8 : 0.0);
}

/* Rounds x to the storage type in place and writes its 16-bit patterns. */
static void to_half(int dtype, float *x, uint16_t *bits, size_t n)
{
    if (dtype == SPARCL_DTYPE_F16) {
        sparcl_convert_f32_to_f16(x, bits, n);
        sparcl_convert_f16_to_f32(bits, x, n);
    } else {
        sparcl_convert_f32_to_bf16(x, bits, n);
        sparcl_convert_bf16_to_f32(bits, x, n);
    }
}

/* The ceiling a case is held to: "fma" when its FLOPs per compulsory byte
 * exceed the machine balance, else "mem"; *fraction is the part of that
 * ceiling it reaches (wall time), *fraction_cpu per CPU-second; negative
 * when the probe failed. */
static const char *bound(const bench_case *c, const result *r, const bench_peak *pk,
                         double *fraction, double *fraction_cpu)
{
    const double flop = useful_flop(c, r), bytes = compulsory_bytes(c, r->dtype);
    *fraction = *fraction_cpu = -1;
    if (pk->fma_gflops <= 0 || pk->bw_gbs <= 0)
        return "n/a";
    if (flop / bytes >= pk->fma_gflops / pk->bw_gbs) {
        *fraction = r->gflops / pk->fma_gflops;
        if (pk->fma_gflops_cpu > 0)
            *fraction_cpu = flop / (r->cpu_ms * 1e6) / pk->fma_gflops_cpu;
        return "fma";
    }
    *fraction = bytes / (r->ms * 1e6) / pk->bw_gbs;
    if (pk->bw_gbs_cpu > 0)
        *fraction_cpu = bytes / (r->cpu_ms * 1e6) / pk->bw_gbs_cpu;
    return "mem";
}

/* Times the call (m[0..4] = q, k, v, out, lse; for the backward m[5..8] =
 * dout, dq, dk, dv, and m[9] dspans or NULL): `warmup` untimed calls, then
 * opt->reps timed, each from a marker enqueued just before it to the end of
 * its event. */
static int time_call(sparcl_ctx *ctx, sparcl_plan *plan, cl_mem *m, int backward, int warmup,
                     const options *opt, result *res)
{
    cl_command_queue queue = sparcl_ctx_cl_queue(ctx);
    double *ms = malloc(sizeof *ms * (size_t)opt->reps * 2), *cpu = ms + opt->reps;
    if (!ms)
        return 0;
    for (int r = -warmup; r < opt->reps; ++r) {
        cl_event mark = NULL, ev = NULL;
        const double c0 = bench_cpu_ms(), w0 = tool_now_ms();
        sparcl_status st = SPARCL_ERR_OPENCL;
        if (clEnqueueMarkerWithWaitList(queue, 0, NULL, &mark) == CL_SUCCESS)
            st = backward ? sparcl_plan_backward_span(plan, NULL, m[0], m[1], m[2], m[3], m[4],
                                                      m[5], m[6], m[7], m[8], m[9], 0, NULL, &ev)
                          : sparcl_plan_forward(plan, m[0], m[1], m[2], m[3], m[4], 0, NULL, &ev);
        if (st != SPARCL_OK) {
            fprintf(stderr, "sparcl-bench: %s: %s\n", backward ? "backward" : "forward",
                    sparcl_ctx_errmsg(ctx));
            if (mark)
                clReleaseEvent(mark);
            free(ms);
            return 0;
        }
        clWaitForEvents(1, &ev);
        if (r >= 0) {
            ms[r] = tool_event_span_ms(mark, ev, tool_now_ms() - w0);
            cpu[r] = bench_cpu_ms() - c0;
        }
        clReleaseEvent(mark);
        clReleaseEvent(ev);
    }
    qsort(ms, (size_t)opt->reps, sizeof *ms, cmp_double);
    qsort(cpu, (size_t)opt->reps, sizeof *cpu, cmp_double);
    res->cpu_ms = cpu[opt->reps / 2];
    res->cpu_ms_min = cpu[0];
    res->ms_min = ms[0];
    res->ms_max = ms[opt->reps - 1];
    res->ms = opt->reps % 2 ? ms[opt->reps / 2] : 0.5 * (ms[opt->reps / 2 - 1] + ms[opt->reps / 2]);
    free(ms);
    return 1;
}

/* Host memory still free, in bytes (0 if unknown). */
static size_t avail_bytes(void)
{
    long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (size_t)pages * (size_t)size : 0;
}

/* Milliseconds to make the layout for n + more tokens and a plan for it as
 * `d0` describes (same heads, pattern and options), once the context has
 * built the programs, copying what it can from `previous` (NULL: nothing):
 * what an application pays when a length changes. */
static double replan_ms(sparcl_ctx *ctx, const bench_case *c, const sparcl_plan_desc *d0, int more,
                        const sparcl_plan *previous)
{
    bench_case c2 = *c;
    c2.n += more;
    pattern_info p2 = {&c2, NULL, 0};
    sparcl_layout *l2 = NULL;
    sparcl_plan *plan = NULL;
    const double t0 = tool_now_ms();
    sparcl_status st = make_layout(ctx, &p2, &l2);
    if (st == SPARCL_OK) {
        sparcl_plan_desc d = *d0;
        d.kv_len = c2.n;
        d.q_len = q_len_of(&c2);
        d.layout = l2;
        d.previous = previous;
        st = sparcl_plan_init(ctx, &plan, &d);
    }
    const double ms = tool_now_ms() - t0;
    if (st != SPARCL_OK)
        fprintf(stderr, "sparcl-bench: %s: a plan for n = %d: %s\n", c->name, c2.n,
                sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    sparcl_layout_free(l2);
    free(p2.bb);
    return st == SPARCL_OK ? ms : -1.0;
}

static int run_case(sparcl_ctx *ctx, const bench_case *c, const options *opt, result *res)
{
    memset(res, 0, sizeof *res);
    res->base_ms = -1.0;
    res->dtype = opt->dtype;
    pattern_info pi = {c, NULL, 0};
    sparcl_layout *layout = NULL;
    if (make_layout(ctx, &pi, &layout) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: %s: layout: %s\n", c->name, sparcl_ctx_errmsg(ctx));
        free(pi.bb);
        return 0;
    }
    if (layout) {
        int lh = sparcl_layout_heads(layout);
        res->pairs = sparcl_layout_pairs(layout) * (c->heads / lh);
    } else if (c->pattern == PAT_SPAN) { /* pairs with m > 0 */
        for (int h = 0; h < c->heads; ++h)
            for (int i = 0; i < c->n; ++i)
                res->pairs += i + 1 < span_reach(h) ? i + 1 : span_reach(h);
    } else if (c->pattern == PAT_LSH) {
        res->pairs = lsh_pairs(c);
    } else {
        res->pairs = (int64_t)c->heads * q_len_of(c) * c->n;
    }
    res->density = (double)res->pairs / ((double)c->heads * q_len_of(c) * c->n);

    /* elems: q and out; kv_elems: k and v (the same unless decoding). */
    const size_t elems = (size_t)c->heads * q_len_of(c) * c->dim;
    const size_t kv_elems = (size_t)kv_heads_of(c) * c->n * c->dim;
    const size_t es = sparcl_dtype_size(opt->dtype);
    float *q = malloc(elems * 4), *k = malloc(kv_elems * 4), *v = malloc(kv_elems * 4);
    float *o = malloc(elems * 4);
    uint16_t *bits = es == 2 ? malloc((elems > kv_elems ? elems : kv_elems) * 2) : NULL;
    /* q, k, v, out, lse; backward: dout, dq, dk, dv, and dspans (span) */
    cl_mem m[10] = {0};
    const int nbuf = c->backward ? (c->pattern == PAT_SPAN ? 10 : 9) : 5;
    float spans[64];
    sparcl_plan *plan = NULL;
    int ok = 0;
    if (!q || !k || !v || !o || (es == 2 && !bits)) {
        fprintf(stderr, "sparcl-bench: %s: out of host memory\n", c->name);
        goto done;
    }
    fill(q, elems, 1u + (unsigned)c->n);
    fill(k, kv_elems, 2u + (unsigned)c->n);
    fill(v, kv_elems, 3u + (unsigned)c->n);

    cl_context cc = sparcl_ctx_cl_context(ctx);
    cl_int err = CL_SUCCESS;
    for (int t = 0; t < 3; ++t) {
        float *src = t == 0 ? q : t == 1 ? k : v;
        const size_t n = t ? kv_elems : elems;
        if (es == 2)
            to_half(opt->dtype, src, bits, n);
        m[t] = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * es,
                              es == 2 ? (void *)bits : (void *)src, &err);
    }
    m[3] = clCreateBuffer(cc, CL_MEM_READ_WRITE, elems * es, NULL, &err);
    m[4] = clCreateBuffer(cc, CL_MEM_READ_WRITE, (size_t)c->heads * q_len_of(c) * 4, NULL, &err);
    if (c->backward) { /* dout (the forward's inputs reused as values), dq, dk, dv */
        /* backward cases are square MHA: bits holds v in the storage type */
        m[5] = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, elems * es,
                              es == 2 ? (void *)bits : (void *)v, &err);
        for (int t = 6; t < 9; ++t)
            m[t] = clCreateBuffer(cc, CL_MEM_READ_WRITE, elems * es, NULL, &err);
        if (nbuf == 10)
            m[9] = clCreateBuffer(cc, CL_MEM_READ_WRITE, (size_t)c->heads * 4, NULL, &err);
    }
    for (int t = 0; t < nbuf; ++t)
        if (!m[t]) {
            fprintf(stderr, "sparcl-bench: %s: cannot allocate device tensors (%d)\n", c->name,
                    (int)err);
            goto done;
        }

    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = c->heads;
    d.kv_heads = kv_heads_of(c);
    d.q_len = q_len_of(c);
    d.kv_len = c->n;
    d.head_dim = c->dim;
    d.layout = layout;
    d.params = opt->have_params ? &opt->params : NULL;
    d.dtype = opt->dtype;
    if (c->pattern == PAT_SPAN) {
        for (int h = 0; h < c->heads && h < 64; ++h)
            spans[h] = span_z(h);
        d.attention = SPARCL_ATTENTION_SPAN;
        d.causal = 1;
        d.spans = spans;
        d.span_ramp = SPAN_RAMP;
    }
    if (c->pattern == PAT_LSH) {
        d.attention = SPARCL_ATTENTION_LSH;
        const lsh_setup ls = lsh_of(c);
        d.lsh_rounds = ls.rounds;
        d.lsh_buckets = ls.buckets;
        d.lsh_chunk = ls.chunk;
        d.seed = 1;
    }
    if (sparcl_plan_init(ctx, &plan, &d) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: %s: plan: %s\n", c->name, sparcl_ctx_errmsg(ctx));
        goto done;
    }
    sparcl_params used;
    sparcl_param_source source;
    sparcl_plan_params(plan, &used, &source);
    sparcl_params_format(&used, res->params, sizeof res->params);
    snprintf(res->origin, sizeof res->origin, "%s", sparcl_plan_params_origin(plan));
    /* which database: the origin starts "user database" or "shipped
     * database" (a user database that cannot be read falls back to the
     * shipped one, with a warning through the log callback) */
    res->source = source == SPARCL_PARAMS_OVERRIDE        ? "override"
                  : source != SPARCL_PARAMS_DATABASE      ? "default"
                  : strncmp(res->origin, "user ", 5) == 0 ? "user database"
                                                          : "shipped database";
    res->device_bytes = sparcl_plan_device_bytes(plan);
    if (c->backward && opt->have_bwd_params &&
        sparcl_plan_prepare_backward(plan, &opt->bwd_params) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: %s: --bwd-set: %s\n", c->name, sparcl_ctx_errmsg(ctx));
        goto done;
    }
    if (c->backward) { /* out and lse of a forward are the backward's inputs */
        if (!time_call(ctx, plan, m, 0, 0, &(options){.reps = 1}, res) ||
            !time_call(ctx, plan, m, 1, 2, opt, res))
            goto done;
        /* Report the backward's own kernel parameters. */
        if (sparcl_plan_backward_params(plan, &used, &source) == SPARCL_OK) {
            sparcl_params_format(&used, res->params, sizeof res->params);
            res->source = source == SPARCL_PARAMS_DATABASE   ? "database"
                          : source == SPARCL_PARAMS_OVERRIDE ? "override"
                                                             : "default";
        }
    } else if (!time_call(ctx, plan, m, 0, 2, opt, res)) {
        goto done;
    }
    res->gflops = useful_flop(c, res) / (res->ms * 1e6);
    /* A new length, three times (n + 64, + 128, + 192), from the case's
     * plan (desc.previous) and from scratch: the medians are what an
     * application that re-plans pays; the first, after the call's buffers,
     * also pays the process's first touch of fresh host pages. */
    double rp[3], rs[3];
    for (int i = 0; i < 3; ++i) {
        rp[i] = replan_ms(ctx, c, &d, 64 * (i + 1), plan);
        rs[i] = replan_ms(ctx, c, &d, 64 * (i + 1), NULL);
    }
    res->replan_first_ms = rp[0];
    qsort(rp, 3, sizeof *rp, cmp_double);
    qsort(rs, 3, sizeof *rs, cmp_double);
    res->replan_ms = rp[0] < 0 ? -1.0 : rp[1];
    res->replan_scratch_ms = rs[0] < 0 ? -1.0 : rs[1];
    clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), m[3], CL_TRUE, 0, elems * es,
                        es == 2 ? (void *)bits : (void *)o, 0, NULL, NULL);
    if (opt->dtype == SPARCL_DTYPE_F16)
        sparcl_convert_f16_to_f32(bits, o, elems);
    else if (opt->dtype == SPARCL_DTYPE_BF16)
        sparcl_convert_bf16_to_f32(bits, o, elems);
    const float scale = 1.0f / sqrtf((float)c->dim);
    res->err = c->pattern == PAT_LSH ? lsh_error(ctx, &d, q, v, o)
                                     : sample_error(&pi, q, k, v, o, scale); /* forward's out */
    sparcl_plan_free(plan);
    plan = NULL;
    for (int t = 0; t < nbuf; ++t) {
        clReleaseMemObject(m[t]);
        m[t] = NULL;
    }

    bench_dense_problem bp = {c->heads,
                              c->n,
                              c->dim,
                              scale,
                              c->pattern == PAT_DENSE || c->pattern == PAT_LSH ? NULL : mask_row,
                              &pi,
                              q,
                              k,
                              v,
                              o};
    size_t need = bench_dense_bytes(&bp), have = avail_bytes();
    if (c->backward)
        res->base_note = "forward only"; /* the CPU baseline has no backward */
    else if (c->q_len || c->kv_heads)
        res->base_note = "square only"; /* the baseline takes q_len = kv_len, MHA */
    else if (!bench_have_cblas())
        res->base_note = "no CBLAS";
    else if (!opt->baseline)
        res->base_note = "skipped";
    else if (opt->quick && c->n > 4096) /* its N^2 scores take seconds per head */
        res->base_note = "not in --quick";
    else if (have && need > have / 2)
        res->base_note = "too big"; /* the N x N scores would not fit in memory */
    else if ((res->base_ms = bench_dense_ms(&bp, opt->baseline_reps, &res->base_cpu_ms)) < 0)
        res->base_note = "failed";
    ok = 1;
done:
    if (plan)
        sparcl_plan_free(plan);
    for (int t = 0; t < nbuf; ++t)
        if (m[t])
            clReleaseMemObject(m[t]);
    free(q), free(k), free(v), free(o), free(bits), free(pi.bb);
    sparcl_layout_free(layout);
    return ok;
}

/* The SGEMM ceiling: wall-clock GFLOP/s and GFLOP per CPU-second. */
typedef struct ceiling {
    double wall, cpu;
} ceiling;

static void print_json(const bench_case *c, const result *r, const ceiling *sg,
                       const bench_peak *pk)
{
    const double gf_cpu = useful_flop(c, r) / (r->cpu_ms * 1e6);
    double frac, frac_cpu;
    const char *b = bound(c, r, pk, &frac, &frac_cpu);
    printf("{\"case\":\"%s\",\"dtype\":\"%s\",\"n\":%d,\"heads\":%d,\"head_dim\":%d,\"pattern\":\"%"
           "s\","
           "\"density\":%.6f,\"pairs\":%lld,\"ms\":%.4f,\"ms_min\":%.4f,\"ms_max\":%.4f,"
           "\"cpu_ms\":%.4f,\"cpu_ms_min\":%.4f,\"gflops\":%.3f,",
           c->name, sparcl_dtype_name(r->dtype), c->n, c->heads, c->dim, pattern_names[c->pattern],
           r->density, (long long)r->pairs, r->ms, r->ms_min, r->ms_max, r->cpu_ms, r->cpu_ms_min,
           r->gflops);
    printf("\"gflops_per_cpu_s\":%.3f,\"bound\":\"%s\",\"bandwidth_gbs\":%.3f,", gf_cpu, b,
           pk->bw_gbs);
    if (frac >= 0)
        printf("\"ratio_peak\":%.4f,", frac);
    else
        printf("\"ratio_peak\":null,");
    if (frac_cpu >= 0)
        printf("\"ratio_peak_cpu\":%.4f,", frac_cpu);
    else
        printf("\"ratio_peak_cpu\":null,");
    if (sg->wall > 0)
        printf("\"sgemm_gflops\":%.3f,\"ratio_sgemm\":%.4f,\"sgemm_gflops_per_cpu_s\":%.3f,"
               "\"ratio_sgemm_cpu\":%.4f,",
               sg->wall, r->gflops / sg->wall, sg->cpu, gf_cpu / sg->cpu);
    else
        printf("\"sgemm_gflops\":null,\"ratio_sgemm\":null,\"sgemm_gflops_per_cpu_s\":null,"
               "\"ratio_sgemm_cpu\":null,");
    if (r->base_ms > 0)
        printf("\"baseline_ms\":%.4f,\"speedup_baseline\":%.3f,\"baseline_cpu_ms\":%.4f,"
               "\"speedup_baseline_cpu\":%.3f,\"baseline_note\":null,",
               r->base_ms, r->base_ms / r->ms, r->base_cpu_ms, r->base_cpu_ms / r->cpu_ms);
    else
        printf("\"baseline_ms\":null,\"speedup_baseline\":null,\"baseline_cpu_ms\":null,"
               "\"speedup_baseline_cpu\":null,\"baseline_note\":\"%s\",",
               r->base_note ? r->base_note : "");
    if (r->replan_ms >= 0)
        printf("\"replan_ms\":%.3f,\"replan_first_ms\":%.3f,\"replan_scratch_ms\":%.3f,"
               "\"replan_of_call\":%.4f,",
               r->replan_ms, r->replan_first_ms, r->replan_scratch_ms, r->replan_ms / r->ms);
    else
        printf("\"replan_ms\":null,\"replan_first_ms\":null,\"replan_scratch_ms\":null,"
               "\"replan_of_call\":null,");
    printf("\"device_bytes\":%zu,\"max_err\":%.3g,\"params\":\"%s\",\"source\":\"%s\","
           "\"origin\":\"",
           r->device_bytes, r->err, r->params, r->source);
    for (const char *o = r->origin; *o; ++o) /* JSON string escapes */
        printf(*o == '"' || *o == '\\' ? "\\%c" : "%c", *o);
    printf("\"}\n");
}

static void print_row(const bench_case *c, const result *r, const ceiling *sg, const bench_peak *pk)
{
    const double gf_cpu = useful_flop(c, r) / (r->cpu_ms * 1e6);
    char ratio[16] = "n/a", ratio_cpu[16] = "n/a", base[32], speed[16] = "n/a",
         speed_cpu[16] = "n/a", peak[24] = "n/a", peak_cpu[16] = "n/a";
    double frac, frac_cpu;
    const char *b = bound(c, r, pk, &frac, &frac_cpu);
    if (frac >= 0)
        snprintf(peak, sizeof peak, "%s %.3f", b, frac);
    if (frac_cpu >= 0)
        snprintf(peak_cpu, sizeof peak_cpu, "%.3f", frac_cpu);
    if (sg->wall > 0) {
        snprintf(ratio, sizeof ratio, "%.3f", r->gflops / sg->wall);
        snprintf(ratio_cpu, sizeof ratio_cpu, "%.3f", gf_cpu / sg->cpu);
    }
    if (r->base_ms > 0) {
        snprintf(base, sizeof base, "%.1f", r->base_ms);
        snprintf(speed, sizeof speed, "%.2fx", r->base_ms / r->ms);
        snprintf(speed_cpu, sizeof speed_cpu, "%.2fx", r->base_cpu_ms / r->cpu_ms);
    } else {
        snprintf(base, sizeof base, "(%s)", r->base_note ? r->base_note : "n/a");
    }
    char replan[24] = "n/a";
    if (r->replan_ms >= 0)
        snprintf(replan, sizeof replan, "%.1f %.1f%%", r->replan_ms, 100.0 * r->replan_ms / r->ms);
    char bw[40] = "";
    if (strcmp(b, "mem") == 0)
        snprintf(bw, sizeof bw, " (bandwidth %.1f GB/s)", pk->bw_gbs);
    printf("%-14s %6d %2d %4d %8.4f %9.2f %8.2f %9s %6s %6s %8.2f %6s %8.2f %16s %8s %8s %8.1e%s "
           "%13s  %s [%s]%s\n",
           c->name, c->n, c->heads, c->dim, r->density, r->ms, r->gflops, peak, peak_cpu, ratio,
           gf_cpu, ratio_cpu, (double)r->device_bytes / (1024.0 * 1024.0), base, speed, speed_cpu,
           r->err, !(r->err <= max_err_allowed(r->dtype)) ? "!" : " ", replan, r->params,
           r->source, bw);
}

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--quick] [--cases a,b,...] [--json] [--reps R] [--baseline-reps R]\n"
            "          [--no-baseline] [--set NAME=VALUE]... [--bwd-set NAME=VALUE]...\n"
            "          [--max-kv N] [--dtype f32|f16|bf16] [--list]\n"
            "          [--select N [--select-heads H] [--select-parts fwd,bwd,dec]] [--varlen]\n"
            "          [--paged P]\n"
            "          [--multidev N]\n",
            argv0);
    return 2;
}

static int select_cases(options *opt, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    int ok = copy != NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok;
         tok = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int i = 0; i < N_CASES; ++i)
            if (strcmp(cases[i].name, tok) == 0 ||
                (atoi(tok) == i + 1 && strspn(tok, "0123456789") == strlen(tok)))
                opt->selected[i] = found = 1;
        if (!found) {
            fprintf(stderr, "sparcl-bench: unknown case '%s' (try --list)\n", tok);
            ok = 0;
        }
    }
    free(copy);
    return ok;
}

int main(int argc, char **argv)
{
    options opt = {.reps = 5, .baseline_reps = 0, .baseline = 1};
    int any_selected = 0;
    sparcl_params_clear(&opt.params);
    sparcl_params_clear(&opt.bwd_params);
    for (int a = 1; a < argc; ++a) {
        const char *s = argv[a];
        if (strcmp(s, "--json") == 0) {
            opt.json = 1;
        } else if (strcmp(s, "--quick") == 0) {
            opt.quick = 1;
        } else if (strcmp(s, "--no-baseline") == 0) {
            opt.baseline = 0;
        } else if (strcmp(s, "--list") == 0) {
            for (int i = 0; i < N_CASES; ++i)
                printf("%d %-14s %-8s n=%d heads=%d head_dim=%d%s\n", i + 1, cases[i].name,
                       pattern_names[cases[i].pattern], cases[i].n, cases[i].heads, cases[i].dim,
                       cases[i].quick ? " (quick)" : "");
            return 0;
        } else if (a + 1 < argc && strcmp(s, "--reps") == 0) {
            opt.reps = atoi(argv[++a]);
        } else if (strcmp(s, "--varlen") == 0) {
            opt.varlen = 1;
        } else if (a + 1 < argc && strcmp(s, "--paged") == 0) {
            opt.paged = atoi(argv[++a]);
            if (opt.paged < 1) {
                fprintf(stderr, "sparcl-bench: --paged takes a page size >= 1\n");
                return 2;
            }
        } else if (a + 1 < argc && strcmp(s, "--select") == 0) {
            opt.select_n = atoi(argv[++a]);
        } else if (a + 1 < argc && strcmp(s, "--select-heads") == 0) {
            opt.select_heads = atoi(argv[++a]);
        } else if (a + 1 < argc && strcmp(s, "--select-parts") == 0) {
            opt.select_parts = argv[++a];
        } else if (a + 1 < argc && strcmp(s, "--multidev") == 0) {
            opt.multidev = atoi(argv[++a]);
        } else if (a + 1 < argc && strcmp(s, "--max-kv") == 0) {
            opt.max_kv = atoi(argv[++a]);
        } else if (a + 1 < argc && strcmp(s, "--baseline-reps") == 0) {
            opt.baseline_reps = atoi(argv[++a]);
        } else if (a + 1 < argc && strcmp(s, "--cases") == 0) {
            if (!select_cases(&opt, argv[++a]))
                return 2;
            any_selected = 1;
        } else if (a + 1 < argc && strcmp(s, "--dtype") == 0) {
            const char *name = argv[++a];
            opt.dtype = -1;
            for (int t = SPARCL_DTYPE_F32; t <= SPARCL_DTYPE_BF16; ++t)
                if (strcmp(name, sparcl_dtype_name(t)) == 0)
                    opt.dtype = t;
            if (opt.dtype < 0) {
                fprintf(stderr, "sparcl-bench: --dtype must be f32, f16 or bf16\n");
                return 2;
            }
        } else if (a + 1 < argc && (strcmp(s, "--set") == 0 || strcmp(s, "--bwd-set") == 0)) {
            const int bwd = strcmp(s, "--bwd-set") == 0;
            const char *kv = argv[++a], *eq = strchr(kv, '=');
            char name[SPARCL_PARAM_NAME_MAX];
            if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof name)
                return usage(argv[0]);
            memcpy(name, kv, (size_t)(eq - kv));
            name[eq - kv] = '\0';
            if (sparcl_params_set(bwd ? &opt.bwd_params : &opt.params, name, atoi(eq + 1)) !=
                SPARCL_OK)
                return usage(argv[0]);
            *(bwd ? &opt.have_bwd_params : &opt.have_params) = 1;
        } else {
            return usage(argv[0]);
        }
    }
    if (!opt.baseline_reps) /* a big baseline run takes seconds: fewer in --quick */
        opt.baseline_reps = opt.quick ? 1 : 3;
    if (opt.reps < 5 || opt.baseline_reps < 1) {
        fprintf(stderr, "sparcl-bench: --reps must be >= 5 and --baseline-reps >= 1\n");
        return 2;
    }
    if (opt.multidev)
        return bench_multidev_run(opt.multidev, opt.reps);
    if (!any_selected && !opt.select_n && !opt.varlen && !opt.paged) /* extra rows only */
        for (int i = 0; i < N_CASES; ++i)
            opt.selected[i] = !opt.quick || cases[i].quick;

    sparcl_ctx *ctx;
    if (sparcl_ctx_init(&ctx) != SPARCL_OK) {
        fprintf(stderr, "sparcl-bench: %s\n", sparcl_ctx_errmsg(NULL));
        return 1;
    }
    tool_log_install(ctx, "sparcl-bench");
    ceiling sg = {0, 0};
    sg.wall = bench_sgemm_gflops(2048, 5, &sg.cpu);
    bench_peak pk;
    bench_peak_measure(ctx, 5, &pk);
    if (pk.error[0])
        fprintf(stderr, "sparcl-bench: %s\n", pk.error);
    if (!opt.json) {
        printf("device: %s\n", sparcl_ctx_device_string(ctx));
        printf("storage: %s (q, k, v and out; lse and arithmetic fp32)\n",
               sparcl_dtype_name(opt.dtype));
        printf("FMA peak (OpenCL probe, 12 FMA chains per work-item, best variant: %s): %.1f "
               "GFLOP/s wall, %.1f GFLOP per CPU-second\n",
               pk.fma_variant ? pk.fma_variant : "none", pk.fma_gflops, pk.fma_gflops_cpu);
        printf("bandwidth (OpenCL probe, %zu MiB buffers): copy %.1f GB/s, triad %.1f GB/s, "
               "read %.1f GB/s (the best is the ceiling); machine balance %.1f FLOP/byte\n",
               pk.stream_bytes >> 20, pk.copy_gbs, pk.triad_gbs, pk.read_gbs,
               pk.bw_gbs > 0 ? pk.fma_gflops / pk.bw_gbs : 0.0);
        printf("BLAS: %s\nSGEMM n=2048 (a second reference): ", bench_blas_string());
        if (sg.wall > 0)
            printf("%.1f GFLOP/s wall, %.1f GFLOP per CPU-second (%.2f of the FMA peak)\n", sg.wall,
                   sg.cpu, pk.fma_gflops > 0 ? sg.wall / pk.fma_gflops : 0.0);
        else
            printf("n/a\n");
        printf(
            "ms: median of %d calls after 2 warm-ups (OpenCL events); base_ms: median of %d "
            "runs of dense CPU attention through CBLAS.\nxPeak: fraction of the ceiling that "
            "bounds the case (fma: of the FMA peak; mem: of the bandwidth, by compulsory "
            "bytes; a memory-bound case against the bandwidth probe run again right after it, "
            "printed at "
            "the row's end).\nGF/cpu-s, xPeakc, xSGEMMc and speedup_c use CPU time instead of wall "
            "time (robust to other load).\nreplan_ms: the layout and a plan for a new length "
            "(n + 64, + 128, + 192; the median) made from the case's plan (desc.previous), with "
            "the programs built (what a new length costs), and its share of one call (the JSON "
            "also has the first of them, which pays for fresh host pages, and the median from "
            "scratch).\n\n",
            opt.reps, opt.baseline_reps);
        printf("%-14s %6s %2s %4s %8s %9s %8s %9s %6s %6s %8s %6s %8s %16s %8s %8s %8s  %13s  "
               "%s\n",
               "case", "n", "H", "D", "density", "ms", "GFLOP/s", "xPeak", "xPeakc", "xSGEMM",
               "GF/cpu-s", "xSGEMMc", "dev_MiB", "base_ms", "speedup", "speedupc", "max_err",
               "replan_ms %", "params");
    }
    int failures = 0;
    for (int i = 0; i < N_CASES; ++i) {
        if (!opt.selected[i])
            continue;
        if (opt.max_kv > 0 && cases[i].n > opt.max_kv) {
            if (!opt.json)
                printf("%-14s skipped: %d keys exceed --max-kv %d\n", cases[i].name, cases[i].n,
                       opt.max_kv);
            continue;
        }
        result r;
        if (!run_case(ctx, &cases[i], &opt, &r)) {
            ++failures;
            continue;
        }
        failures += !(r.err <= max_err_allowed(opt.dtype));
        /* A memory-bound case against the bandwidth right after it. */
        bench_peak near = pk;
        double frac, frac_cpu;
        if (strcmp(bound(&cases[i], &r, &pk, &frac, &frac_cpu), "mem") == 0) {
            bench_peak_measure_bandwidth(ctx, 5, &near);
            if (near.error[0] || near.bw_gbs <= 0)
                near = pk;
        }
        if (opt.json)
            print_json(&cases[i], &r, &sg, &near);
        else
            print_row(&cases[i], &r, &sg, &near);
        fflush(stdout);
    }
    if (opt.select_n > 0 && !opt.json)
        failures += bench_select(ctx, opt.select_n, opt.select_heads > 0 ? opt.select_heads : 8,
                                 opt.reps, opt.select_parts);
    if (opt.paged && !opt.json)
        failures += bench_paged(ctx, opt.paged, opt.dtype, opt.reps, pk.bw_gbs);
    if (opt.varlen && !opt.json)
        failures +=
            bench_varlen(ctx, 8, opt.reps, pk.fma_gflops, opt.have_params ? &opt.params : NULL);
    sparcl_ctx_free(ctx);
    if (failures && !opt.json)
        printf("\n%d case(s) failed or exceeded max_err %.2g (marked !)\n", failures,
               max_err_allowed(opt.dtype));
    return failures ? 1 : 0;
}
