/*
 * thread_jobs.c -- see thread_jobs.h.
 */
#include "thread_jobs.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "oracle.h"
#include "sparcl.h"

#define THREADS 4

typedef struct job {
    sparcl_ctx *ctx;
    sparcl_plan *shared; /* NULL: the thread makes its own plan */
    int dim, causal, seed;
    double err;
    sparcl_status st;
} job;

static int causal_pred(const void *self, int h, int i, int j)
{
    (void)h;
    return !*(const int *)self || j <= i;
}

static sparcl_plan_desc job_desc(int dim, int causal)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = d.kv_heads = 2;
    d.q_len = d.kv_len = 45;
    d.head_dim = dim;
    d.causal = causal;
    return d;
}

static void *worker(void *arg)
{
    job *jb = arg;
    sparcl_plan_desc d = job_desc(jb->dim, jb->causal);
    sparcl_plan *plan = jb->shared;
    if (!plan && (jb->st = sparcl_plan_init(jb->ctx, &plan, &d)) != SPARCL_OK)
        return NULL;
    cl_context cc = sparcl_ctx_cl_context(jb->ctx);
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(cc, sparcl_ctx_cl_device(jb->ctx), 0, &err);
    size_t n = (size_t)d.q_heads * d.q_len * d.head_dim;
    float *host[4];
    cl_mem buf[4];
    for (int t = 0; t < 4; ++t) {
        host[t] = malloc(n * 4);
        oracle_fill(host[t], n, (uint64_t)jb->seed * 4 + t);
        buf[t] = clCreateBuffer(cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * 4, host[t], &err);
    }
    cl_event ev = NULL;
    jb->st = sparcl_plan_forward_on_queue(plan, queue, buf[0], buf[1], buf[2], buf[3], NULL, 0,
                                          NULL, &ev);
    if (jb->st == SPARCL_OK) {
        clEnqueueReadBuffer(queue, buf[3], CL_TRUE, 0, n * 4, host[3], 1, &ev, NULL);
        clReleaseEvent(ev);
        double *ref = malloc(n * 8);
        oracle_attention(1, d.q_heads, d.kv_heads, d.q_len, d.kv_len, d.head_dim,
                         1.0 / sqrt(d.head_dim), causal_pred, &jb->causal, host[0], host[1],
                         host[2], ref, NULL);
        jb->err = oracle_max_abs_diff_f(host[3], ref, n);
        free(ref);
    }
    for (int t = 0; t < 4; ++t) {
        clReleaseMemObject(buf[t]);
        free(host[t]);
    }
    clReleaseCommandQueue(queue);
    if (!jb->shared)
        sparcl_plan_free(plan);
    return NULL;
}

/* Forward then backward of a shared plan on the thread's own queue; the
 * first backward calls race to build the plan's backward resources. */
static void *backward_worker(void *arg)
{
    job *jb = arg;
    const sparcl_plan_desc d = job_desc(jb->dim, jb->causal);
    cl_context cc = sparcl_ctx_cl_context(jb->ctx);
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(cc, sparcl_ctx_cl_device(jb->ctx), 0, &err);
    const size_t n = (size_t)d.q_heads * d.q_len * d.head_dim, nl = (size_t)d.q_heads * d.q_len;
    /* q k v out dout dq dk dv (all n floats: q_heads == kv_heads), lse */
    float *host[8];
    cl_mem buf[9];
    for (int t = 0; t < 8; ++t) {
        host[t] = malloc(n * 4);
        oracle_fill(host[t], n, (uint64_t)jb->seed * 8 + t);
        buf[t] = clCreateBuffer(cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * 4, host[t], &err);
    }
    buf[8] = clCreateBuffer(cc, CL_MEM_READ_WRITE, nl * 4, NULL, &err);
    cl_event ev = NULL;
    jb->st = sparcl_plan_forward_on_queue(jb->shared, queue, buf[0], buf[1], buf[2], buf[3],
                                          buf[8], 0, NULL, NULL);
    if (jb->st == SPARCL_OK)
        jb->st = sparcl_plan_backward_on_queue(jb->shared, queue, buf[0], buf[1], buf[2], buf[3],
                                               buf[8], buf[4], buf[5], buf[6], buf[7], 0, NULL,
                                               &ev);
    if (jb->st == SPARCL_OK) {
        for (int t = 5; t < 8; ++t)
            clEnqueueReadBuffer(queue, buf[t], CL_TRUE, 0, n * 4, host[t], 1, &ev, NULL);
        clReleaseEvent(ev);
        double *ref[3] = {malloc(n * 8), malloc(n * 8), malloc(n * 8)};
        sparcl_reference_backward(NULL, &d, host[0], host[1], host[2], host[4], ref[0], ref[1],
                                  ref[2]);
        jb->err = 0;
        for (int t = 0; t < 3; ++t) {
            jb->err = fmax(jb->err, oracle_max_abs_diff_f(host[5 + t], ref[t], n));
            free(ref[t]);
        }
    }
    for (int t = 0; t < 9; ++t)
        clReleaseMemObject(buf[t]);
    for (int t = 0; t < 8; ++t)
        free(host[t]);
    clReleaseCommandQueue(queue);
    return NULL;
}

static char failure[512];

static const char *run_jobs(job *jobs, void *(*fn)(void *))
{
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; ++t)
        if (pthread_create(&th[t], NULL, fn, &jobs[t]) != 0)
            return "pthread_create failed";
    for (int t = 0; t < THREADS; ++t)
        pthread_join(th[t], NULL);
    for (int t = 0; t < THREADS; ++t) {
        if (jobs[t].st != SPARCL_OK) {
            snprintf(failure, sizeof failure, "thread %d: %s", t,
                     sparcl_ctx_errmsg(jobs[t].ctx));
            return failure;
        }
        if (!(jobs[t].err <= 1e-4)) {
            snprintf(failure, sizeof failure, "thread %d: error %g", t, jobs[t].err);
            return failure;
        }
    }
    return NULL;
}

const char *thread_scenario_concurrent_plans(void)
{
    sparcl_ctx *ctx = NULL;
    if (sparcl_ctx_init(&ctx) != SPARCL_OK)
        return sparcl_ctx_errmsg(NULL);
    job jobs[THREADS] = {{ctx, NULL, 32, 0, 1, 0, 0}, {ctx, NULL, 32, 0, 2, 0, 0},
                         {ctx, NULL, 40, 1, 3, 0, 0}, {ctx, NULL, 24, 1, 4, 0, 0}};
    const char *res = run_jobs(jobs, worker);
    sparcl_ctx_free(ctx);
    return res;
}

/* THREADS jobs of `fn` on one plan (dim, causal) shared by all. */
static const char *shared_plan_jobs(int dim, int seed0, void *(*fn)(void *))
{
    sparcl_ctx *ctx = NULL;
    if (sparcl_ctx_init(&ctx) != SPARCL_OK)
        return sparcl_ctx_errmsg(NULL);
    sparcl_plan_desc d = job_desc(dim, 1);
    sparcl_plan *plan = NULL;
    const char *res = "plan creation failed";
    if (sparcl_plan_init(ctx, &plan, &d) == SPARCL_OK) {
        job jobs[THREADS];
        for (int t = 0; t < THREADS; ++t)
            jobs[t] = (job){ctx, plan, dim, 1, seed0 + t, 0, 0};
        res = run_jobs(jobs, fn);
    }
    sparcl_plan_free(plan);
    sparcl_ctx_free(ctx);
    return res;
}

const char *thread_scenario_shared_plan(void)
{
    return shared_plan_jobs(32, 10, worker);
}

const char *thread_scenario_shared_backward(void)
{
    return shared_plan_jobs(24, 20, backward_worker);
}
