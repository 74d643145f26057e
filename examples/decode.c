/*
 * decode.c -- sparcl-decode-example: an autoregressive loop over a paged KV
 * cache.  Two sequences of different prompt lengths share one pool of
 * pages; each step appends one token's keys and values to each sequence
 * (taking a fresh page from a free list when the last one is full), then
 * runs one decoding call of the same plan with the new lengths, and checks
 * the output against the double-precision reference over the sequence so
 * far.  The plan is made once, for the cache's capacity: appending never
 * makes a new plan.  Exits non-zero if any error exceeds 1e-4.
 *
 * Each step also runs streaming attention (StreamingLLM: SINK attention
 * sinks and the last LOCAL tokens) over the same paged cache, with a second
 * plan made once: a streaming layout follows the sequence, so the plan
 * made at the capacity applies it to every length, reading only the sinks'
 * and the window's keys.  The example prints how many programs were
 * compiled (none after the first step).
 *
 * usage: sparcl-decode-example [--steps N]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sparcl.h"

enum { BATCH = 2, Q_HEADS = 8, KV_HEADS = 2, DIM = 64, CAPACITY = 512, PAGE = 32 };
enum { MAX_PAGES = CAPACITY / PAGE, POOL_PAGES = BATCH * MAX_PAGES };
enum { SINK = 4, LOCAL = 32 };

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void fill(float *x, size_t n, unsigned *seed)
{
    for (size_t i = 0; i < n; ++i) {
        *seed = *seed * 1664525u + 1013904223u;
        x[i] = (float)((*seed >> 8) / 8388608.0 - 1.0);
    }
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        sparcl_status st_ = (call);                                                                \
        if (st_ != SPARCL_OK) {                                                                    \
            fprintf(stderr, "sparcl-decode-example: %s: %s\n", #call, sparcl_ctx_errmsg(ctx));     \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* The application's view of its cache: every sequence's keys and values
 * in order ([KV_HEADS][CAPACITY][DIM], for the reference), the block
 * tables, and a free list of pool pages. */
typedef struct cache {
    float *k[BATCH], *v[BATCH];
    int32_t len[BATCH];
    int32_t table[BATCH * MAX_PAGES];
    int free_pages[POOL_PAGES], n_free;
} cache;

/* Appends one token (k, v: [KV_HEADS][DIM]) to sequence b: into the
 * application's copy and into the pool on the device. */
static int append(cache *c, cl_command_queue queue, cl_mem kpool, cl_mem vpool, int b,
                  const float *k, const float *v)
{
    const int pos = c->len[b], page = pos / PAGE, row = pos % PAGE;
    if (row == 0) /* the last page is full (or there is none): take a fresh one */
        c->table[b * MAX_PAGES + page] = c->free_pages[--c->n_free];
    const int pg = c->table[b * MAX_PAGES + page];
    for (int h = 0; h < KV_HEADS; ++h) {
        memcpy(c->k[b] + ((size_t)h * CAPACITY + pos) * DIM, k + h * DIM, DIM * sizeof(float));
        memcpy(c->v[b] + ((size_t)h * CAPACITY + pos) * DIM, v + h * DIM, DIM * sizeof(float));
        /* pool layout [page][kv head][row][dim] */
        const size_t at = (((size_t)pg * KV_HEADS + h) * PAGE + row) * DIM * sizeof(float);
        if (clEnqueueWriteBuffer(queue, kpool, CL_TRUE, at, DIM * sizeof(float), k + h * DIM, 0,
                                 NULL, NULL) != CL_SUCCESS ||
            clEnqueueWriteBuffer(queue, vpool, CL_TRUE, at, DIM * sizeof(float), v + h * DIM, 0,
                                 NULL, NULL) != CL_SUCCESS)
            return 0;
    }
    c->len[b] = pos + 1;
    return 1;
}

/* The descriptor of one sequence of n tokens (batch 1): causal, or with
 * `layout`. */
static sparcl_plan_desc sequence_desc(int n, const sparcl_layout *layout)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = Q_HEADS;
    d.kv_heads = KV_HEADS;
    d.q_len = 1;
    d.kv_len = n;
    d.head_dim = DIM;
    d.causal = layout == NULL;
    d.layout = layout;
    return d;
}

/* Max |out - reference| of sequence b's query q ([Q_HEADS][DIM]) over its
 * keys so far, causal or under `layout`. */
static double check(sparcl_ctx *ctx, const cache *c, int b, const float *q, const float *out,
                    const sparcl_layout *layout)
{
    const int n = c->len[b];
    const sparcl_plan_desc d = sequence_desc(n, layout);
    float *k = malloc(sizeof *k * KV_HEADS * (size_t)n * DIM);
    float *v = malloc(sizeof *v * KV_HEADS * (size_t)n * DIM);
    double want[Q_HEADS * DIM];
    double err = INFINITY;
    if (k && v) {
        for (int h = 0; h < KV_HEADS; ++h) {
            memcpy(k + (size_t)h * n * DIM, c->k[b] + (size_t)h * CAPACITY * DIM,
                   sizeof *k * (size_t)n * DIM);
            memcpy(v + (size_t)h * n * DIM, c->v[b] + (size_t)h * CAPACITY * DIM,
                   sizeof *v * (size_t)n * DIM);
        }
        if (sparcl_reference_forward(ctx, &d, q, k, v, want, NULL) == SPARCL_OK) {
            err = 0;
            for (int i = 0; i < Q_HEADS * DIM; ++i)
                err = fmax(err, fabs(out[i] - want[i]));
        }
    }
    free(k);
    free(v);
    return err;
}

int main(int argc, char **argv)
{
    int steps = 48;
    if (argc == 3 && strcmp(argv[1], "--steps") == 0)
        steps = atoi(argv[2]);
    else if (argc != 1) {
        fprintf(stderr, "usage: %s [--steps N]\n", argv[0]);
        return 2;
    }
    const int prompt[BATCH] = {20, 45};
    if (steps < 1 || prompt[1] + steps > CAPACITY) {
        fprintf(stderr, "sparcl-decode-example: --steps must be in [1, %d]\n",
                CAPACITY - prompt[1]);
        return 2;
    }
    sparcl_ctx *ctx = NULL;
    if (sparcl_ctx_init(&ctx) != SPARCL_OK) {
        fprintf(stderr, "sparcl-decode-example: %s\n", sparcl_ctx_errmsg(NULL));
        return 1;
    }
    printf("device: %s\n", sparcl_ctx_device_string(ctx));

    /* One plan for the capacity; page_size makes it a paged-cache plan. */
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = BATCH;
    d.q_heads = Q_HEADS;
    d.kv_heads = KV_HEADS;
    d.q_len = 1;
    d.kv_len = CAPACITY;
    d.head_dim = DIM;
    d.causal = 1;
    d.page_size = PAGE;
    sparcl_plan *plan;
    CHECK(sparcl_plan_init(ctx, &plan, &d));
    sparcl_params used;
    char text[256];
    sparcl_plan_params(plan, &used, NULL);
    sparcl_params_format(&used, text, sizeof text);
    printf("plan: batch %d, %d query heads on %d KV heads, head_dim %d, capacity %d in pages "
           "of %d; parameters %s\n",
           BATCH, Q_HEADS, KV_HEADS, DIM, CAPACITY, PAGE, text);

    /* Streaming over the same pool: the layout made once at the capacity. */
    sparcl_layout *stream_layout;
    CHECK(sparcl_layout_init_streaming(ctx, &stream_layout, 1, 1, CAPACITY, PAGE, SINK, LOCAL));
    sparcl_plan_desc sd = d;
    sd.causal = 0;
    sd.layout = stream_layout;
    sparcl_plan *stream_plan;
    CHECK(sparcl_plan_init(ctx, &stream_plan, &sd));
    sparcl_layout_free(stream_layout);

    cl_context cc = sparcl_ctx_cl_context(ctx);
    cl_command_queue queue = sparcl_ctx_cl_queue(ctx);
    const size_t pool = (size_t)POOL_PAGES * KV_HEADS * PAGE * DIM * sizeof(float);
    const size_t qn = (size_t)BATCH * Q_HEADS * DIM;
    cl_int err;
    cl_mem kpool = clCreateBuffer(cc, CL_MEM_READ_WRITE, pool, NULL, &err);
    cl_mem vpool = clCreateBuffer(cc, CL_MEM_READ_WRITE, pool, NULL, &err);
    cl_mem qbuf = clCreateBuffer(cc, CL_MEM_READ_WRITE, qn * sizeof(float), NULL, &err);
    cl_mem obuf = clCreateBuffer(cc, CL_MEM_READ_WRITE, qn * sizeof(float), NULL, &err);
    cache c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < POOL_PAGES; ++i) /* handed out in a scattered order */
        c.free_pages[c.n_free++] = (i * 7) % POOL_PAGES;
    for (int b = 0; b < BATCH; ++b) {
        c.k[b] = calloc((size_t)KV_HEADS * CAPACITY * DIM, sizeof(float));
        c.v[b] = calloc((size_t)KV_HEADS * CAPACITY * DIM, sizeof(float));
    }
    if (!kpool || !vpool || !qbuf || !obuf || !c.k[0] || !c.k[1] || !c.v[0] || !c.v[1]) {
        fprintf(stderr, "sparcl-decode-example: out of memory\n");
        return 1;
    }

    unsigned seed = 1;
    float k[KV_HEADS * DIM], v[KV_HEADS * DIM], q[BATCH * Q_HEADS * DIM],
        out[BATCH * Q_HEADS * DIM];
    for (int b = 0; b < BATCH; ++b) /* the prompts */
        for (int t = 0; t < prompt[b]; ++t) {
            fill(k, KV_HEADS * DIM, &seed);
            fill(v, KV_HEADS * DIM, &seed);
            if (!append(&c, queue, kpool, vpool, b, k, v))
                return 1;
        }
    double worst = 0;
    for (int s = 0; s < steps; ++s) {
        for (int b = 0; b < BATCH; ++b) { /* the new token of each sequence */
            fill(k, KV_HEADS * DIM, &seed);
            fill(v, KV_HEADS * DIM, &seed);
            if (!append(&c, queue, kpool, vpool, b, k, v))
                return 1;
        }
        fill(q, qn, &seed);
        if (clEnqueueWriteBuffer(queue, qbuf, CL_TRUE, 0, sizeof q, q, 0, NULL, NULL) != CL_SUCCESS)
            return 1;
        CHECK(sparcl_plan_forward_cache(plan, NULL, qbuf, kpool, vpool, c.len, PAGE, c.table,
                                        POOL_PAGES, obuf, NULL, 0, NULL, NULL));
        if (clEnqueueReadBuffer(queue, obuf, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL) !=
            CL_SUCCESS)
            return 1;
        double e = 0;
        for (int b = 0; b < BATCH; ++b)
            e = fmax(e, check(ctx, &c, b, q + b * Q_HEADS * DIM, out + b * Q_HEADS * DIM, NULL));
        /* Streaming: the same call on the streaming plan; each sequence is
         * checked against the reference under the streaming layout at its
         * own length. */
        const double t0 = now_ms();
        CHECK(sparcl_plan_forward_cache(stream_plan, NULL, qbuf, kpool, vpool, c.len, PAGE, c.table,
                                        POOL_PAGES, obuf, NULL, 0, NULL, NULL));
        if (clEnqueueReadBuffer(queue, obuf, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL) !=
            CL_SUCCESS)
            return 1;
        const double call_ms = now_ms() - t0;
        double es = 0;
        for (int b = 0; b < BATCH; ++b) {
            sparcl_layout *layout;
            CHECK(sparcl_layout_init_streaming(ctx, &layout, 1, 1, c.len[b], PAGE, SINK, LOCAL));
            es = fmax(es, check(ctx, &c, b, q + b * Q_HEADS * DIM, out + b * Q_HEADS * DIM, layout));
            sparcl_layout_free(layout);
        }
        worst = fmax(worst, fmax(e, es));
        if (s % 8 == 0 || s == steps - 1) {
            sparcl_program_stats ps;
            sparcl_program_stats_init(&ps);
            sparcl_ctx_program_stats(ctx, &ps);
            printf("step %3d: lengths %3d %3d, pages in use %2d, max error causal %.2e, "
                   "streaming %.2e (its call %.2f ms; %lld programs compiled so far)\n",
                   s, c.len[0], c.len[1], POOL_PAGES - c.n_free, e, es, call_ms,
                   (long long)ps.builds);
        }
    }
    printf("%d steps, max error %.2e: %s\n", steps, worst, worst <= 1e-4 ? "ok" : "FAILED");
    clReleaseMemObject(kpool);
    clReleaseMemObject(vpool);
    clReleaseMemObject(qbuf);
    clReleaseMemObject(obuf);
    for (int b = 0; b < BATCH; ++b) {
        free(c.k[b]);
        free(c.v[b]);
    }
    sparcl_plan_free(plan);
    sparcl_plan_free(stream_plan);
    sparcl_ctx_free(ctx);
    return worst <= 1e-4 ? 0 : 1;
}
