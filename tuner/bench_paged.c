/*
 * bench_paged.c -- sparcl-bench's KV cache rows (see bench_paged.h).  Both
 * plans read the same keys and values, so their outputs must agree; only
 * where the rows live differs (the paged pool's page order is a fixed
 * shuffle, as an allocator's free list leaves it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_calls.h"
#include "bench_paged.h"

#define N 32768
#define HQ 32
#define HKV 8
#define DIM 128

typedef struct cache_run {
    sparcl_plan *plan;
    cl_mem k, v;
    int page, pool_pages;
    const int32_t *table;
} cache_run;

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static sparcl_plan *plan_of(sparcl_ctx *ctx, int page, int dtype)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = HQ;
    d.kv_heads = HKV;
    d.q_len = 1;
    d.kv_len = N;
    d.head_dim = DIM;
    d.page_size = page;
    d.dtype = dtype;
    sparcl_plan *p = NULL;
    if (sparcl_plan_init(ctx, &p, &d) != SPARCL_OK)
        fprintf(stderr, "sparcl-bench: paged: %s\n", sparcl_ctx_errmsg(ctx));
    return p;
}

typedef struct cache_call {
    const cache_run *run;
    cl_mem q, out, lse;
} cache_call;

static sparcl_status enqueue_cache_call(void *arg, cl_event *ev)
{
    const cache_call *c = arg;
    const int32_t lens[1] = {N};
    return sparcl_plan_forward_cache(c->run->plan, NULL, c->q, c->run->k, c->run->v, lens,
                                     c->run->page, c->run->table, c->run->pool_pages, c->out,
                                     c->lse, 0, NULL, ev);
}

/* One call's milliseconds, or -1. */
static double call_ms(sparcl_ctx *ctx, const cache_run *r, cl_mem q, cl_mem out, cl_mem lse)
{
    cache_call c = {r, q, out, lse};
    return bench_timed_ms(ctx, enqueue_cache_call, &c);
}

/* n floats of x stored as dtype on the device, or NULL. */
static cl_mem upload(sparcl_ctx *ctx, const float *x, size_t n, int dtype)
{
    uint16_t *h = dtype == SPARCL_DTYPE_F32 ? NULL : malloc(n * sizeof *h);
    if (dtype != SPARCL_DTYPE_F32 &&
        (!h || (dtype == SPARCL_DTYPE_F16 ? sparcl_convert_f32_to_f16(x, h, n)
                                          : sparcl_convert_f32_to_bf16(x, h, n)) != SPARCL_OK)) {
        free(h);
        return NULL;
    }
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                              n * sparcl_dtype_size(dtype), h ? (void *)h : (void *)x, NULL);
    free(h);
    return m;
}

int bench_paged(sparcl_ctx *ctx, int page, int dtype, int reps, double bw_gbs)
{
    const size_t es = sparcl_dtype_size(dtype);
    const size_t kv = (size_t)HKV * N * DIM, nq = (size_t)HQ * DIM;
    const int pages = (N + page - 1) / page;
    float *k = malloc(kv * sizeof *k), *v = malloc(kv * sizeof *v);
    float *pk = calloc((size_t)pages * HKV * page * DIM, sizeof *pk);
    float *pv = calloc((size_t)pages * HKV * page * DIM, sizeof *pv);
    float *q = malloc(nq * sizeof *q), *o[2] = {malloc(nq * sizeof(float)), malloc(nq * 4)};
    int32_t *table = malloc((size_t)pages * sizeof *table);
    double *ms = malloc(sizeof *ms * 2 * (size_t)reps);
    cache_run runs[2] = {{NULL, NULL, NULL, 0, 0, NULL}, {NULL, NULL, NULL, page, pages, table}};
    cl_mem qm = NULL, out[2] = {NULL, NULL}, lse = NULL;
    int failures = 1;
    if (!k || !v || !pk || !pv || !q || !o[0] || !o[1] || !table || !ms)
        goto done;
    srand(11);
    for (size_t i = 0; i < kv; ++i) {
        k[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
        v[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
    }
    for (size_t i = 0; i < nq; ++i)
        q[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
    for (int p = 0; p < pages; ++p) /* a fixed shuffle of the pool */
        table[p] = p;
    for (int p = pages - 1; p > 0; --p) {
        const int x = rand() % (p + 1), t = table[p];
        table[p] = table[x];
        table[x] = t;
    }
    /* pool [pages, HKV, page, DIM]: token j of head h in page table[j / page] */
    for (int h = 0; h < HKV; ++h)
        for (int j = 0; j < N; ++j) {
            const size_t to = (((size_t)table[j / page] * HKV + h) * page + j % page) * DIM;
            memcpy(pk + to, k + ((size_t)h * N + j) * DIM, DIM * sizeof(float));
            memcpy(pv + to, v + ((size_t)h * N + j) * DIM, DIM * sizeof(float));
        }
    runs[0].k = upload(ctx, k, kv, dtype);
    runs[0].v = upload(ctx, v, kv, dtype);
    runs[1].k = upload(ctx, pk, (size_t)pages * HKV * page * DIM, dtype);
    runs[1].v = upload(ctx, pv, (size_t)pages * HKV * page * DIM, dtype);
    qm = upload(ctx, q, nq, dtype);
    for (int r = 0; r < 2; ++r)
        out[r] = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE, nq * es, NULL, NULL);
    lse = clCreateBuffer(sparcl_ctx_cl_context(ctx), CL_MEM_READ_WRITE, HQ * 4, NULL, NULL);
    runs[0].plan = plan_of(ctx, 0, dtype);
    runs[1].plan = plan_of(ctx, page, dtype);
    if (!runs[0].k || !runs[0].v || !runs[1].k || !runs[1].v || !qm || !out[0] || !out[1] || !lse ||
        !runs[0].plan || !runs[1].plan)
        goto done;
    for (int i = -2; i < reps; ++i)
        for (int r = 0; r < 2; ++r) {
            const double t = call_ms(ctx, &runs[r], qm, out[r], lse);
            if (t < 0)
                goto done;
            if (i >= 0)
                ms[r * reps + i] = t;
        }
    double diff = 0;
    for (int r = 0; r < 2; ++r) {
        if (clEnqueueReadBuffer(sparcl_ctx_cl_queue(ctx), out[r], CL_TRUE, 0, nq * es, o[r], 0,
                                NULL, NULL) != CL_SUCCESS)
            goto done;
        qsort(ms + r * reps, (size_t)reps, sizeof *ms, cmp);
    }
    if (es == 2) /* the stored bits compared: any difference counts as 1 */
        diff = memcmp(o[0], o[1], nq * es) != 0;
    else
        for (size_t i = 0; i < nq; ++i)
            diff = fmax(diff, fabs((double)o[0][i] - o[1][i]));
    const double bytes = 2.0 * (double)kv * (double)es;
    printf("\nKV cache: one decoding step, %d query heads over %d KV heads, head_dim %d, %d "
           "tokens (%.0f MiB of K and V in %s), through sparcl_plan_forward_cache()\n",
           HQ, HKV, DIM, N, bytes / (1 << 20), sparcl_dtype_name(dtype));
    printf("%-26s %9s %8s %6s  %s\n", "cache", "ms", "GB/s", "xBW", "params");
    const char *names[2] = {"contiguous", "paged"};
    for (int r = 0; r < 2; ++r) {
        const double t = ms[r * reps + reps / 2], gbs = bytes / (t * 1e6);
        sparcl_params used;
        char text[160], name[40];
        sparcl_plan_params(runs[r].plan, &used, NULL);
        sparcl_params_format(&used, text, sizeof text);
        snprintf(name, sizeof name, r ? "%s (pages of %d)" : "%s", names[r], page);
        printf("%-26s %9.2f %8.2f %6.3f  %s\n", name, t, gbs, bw_gbs > 0 ? gbs / bw_gbs : 0, text);
    }
    printf("max |paged - contiguous| %.2g\n", diff);
    failures = !(diff <= 1e-6);
done:
    if (failures)
        fprintf(stderr, "sparcl-bench: paged rows failed\n");
    for (int r = 0; r < 2; ++r) {
        sparcl_plan_free(runs[r].plan);
        if (runs[r].k)
            clReleaseMemObject(runs[r].k);
        if (runs[r].v)
            clReleaseMemObject(runs[r].v);
        if (out[r])
            clReleaseMemObject(out[r]);
        free(o[r]);
    }
    if (qm)
        clReleaseMemObject(qm);
    if (lse)
        clReleaseMemObject(lse);
    free(k), free(v), free(pk), free(pv), free(q), free(table), free(ms);
    return failures;
}
