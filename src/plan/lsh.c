/*
 * lsh.c -- the LSH attention kind (Reformer; sparcl.h, "LSH attention"):
 * the plan holds the seeded rotations on the device and the attn_lsh
 * kernels; a forward call hashes every token in every round
 * (attn_lsh_hash), sorts each (batch, head, round) by bucket on the device
 * (attn_lsh_sort), lays each round's keys out in sorted order
 * (attn_lsh_gather), attends within chunks of the sorted order
 * (attn_lsh_chunk, one partial output and LSE per round) and merges the
 * rounds by LSE with the stacked merge of merge.c.  q and v are read in the
 * plan's dtype and the merge rounds the output to it; everything between is
 * fp32.  Workspace is allocated per call and released once the work is
 * done, so calls share nothing but the kernels, whose arguments the plan's
 * lock guards.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_registry.h"
#include "plan/attention_kinds.h"
#include "plan/kernel_build.h"
#include "plan/lsh.h"
#include "plan/merge.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "runtime/lsh_draw.h"
#include "runtime/memory.h"

enum { K_HASH, K_SORT, K_GATHER, K_CHUNK, K_COUNT };
static const char *const kernel_names[K_COUNT] = {"attn_lsh_hash", "attn_lsh_sort",
                                                  "attn_lsh_gather", "attn_lsh_chunk"};

struct lsh {
    const sparcl__plan_view *view;
    cl_mem rot;   /* rounds x head_dim x buckets/2 floats */
    size_t bytes; /* of rot */
    cl_kernel kernel[K_COUNT], merge;
    int32_t block_m; /* the chunk kernel's rows per work-item */
    int32_t block_n; /* its keys per step: the tiles of the gathered keys */
    int32_t wg;      /* WG_SIZE: work-items per group of the hash and chunk kernels */
    pthread_mutex_t lock;
};

/* One call's workspace; keys and tokens hold attn_lsh_gather's sorted,
 * transposed keys and the token at each sorted position. */
typedef struct work {
    cl_mem buckets, order, counts, inv, keys, tokens, parts, lses;
} work;

static void work_free(work *w)
{
    cl_mem *all[] = {&w->buckets, &w->order,  &w->counts, &w->inv,
                     &w->keys,    &w->tokens, &w->parts,  &w->lses};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        if (*all[i])
            clReleaseMemObject(*all[i]);
}

static void lsh_free(void *state)
{
    struct lsh *l = state;
    if (!l)
        return;
    if (l->rot)
        clReleaseMemObject(l->rot);
    for (int i = 0; i < K_COUNT; ++i)
        if (l->kernel[i])
            clReleaseKernel(l->kernel[i]);
    if (l->merge)
        clReleaseKernel(l->merge);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static size_t lsh_bytes(const void *state)
{
    return ((const struct lsh *)state)->bytes;
}

static sparcl_status upload_rotations(struct lsh *l, uint64_t seed)
{
    const sparcl_plan_desc *d = &l->view->desc;
    const size_t n = sparcl__lsh_rotation_floats(d->lsh_rounds, d->head_dim, d->lsh_buckets / 2);
    float *rot = malloc(sizeof *rot * n);
    if (!rot)
        return sparcl__fail(l->view->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate %zu floats of LSH rotations", n);
    sparcl__lsh_draw(rot, d->lsh_rounds, d->head_dim, d->lsh_buckets / 2, seed);
    cl_int err = clEnqueueWriteBuffer(l->view->ctx->queue, l->rot, CL_TRUE, 0, sizeof *rot * n, rot,
                                      0, NULL, NULL);
    free(rot);
    return err == CL_SUCCESS ? SPARCL_OK
                             : sparcl__fail_cl(l->view->ctx, err, "clEnqueueWriteBuffer");
}

static sparcl_status lsh_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    (void)report; /* plan.c reports the attn_lsh choice */
    sparcl_ctx *ctx = v->ctx;
    struct lsh *l = calloc(1, sizeof *l);
    if (!l)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate an LSH plan");
    l->view = v;
    l->block_m = params->v[SPARCL__P_BLOCK_M];
    l->block_n = params->v[SPARCL__P_BLOCK_N];
    l->wg = params->v[SPARCL__P_WG_SIZE];
    pthread_mutex_init(&l->lock, NULL);
    const size_t bytes =
        sizeof(float) *
        sparcl__lsh_rotation_floats(desc->lsh_rounds, desc->head_dim, desc->lsh_buckets / 2);
    const sparcl__problem prob = sparcl__problem_from_desc(desc), no_problem = {0};
    const sparcl__pset no_params = {{0}, 0};
    sparcl_status st;
    if ((st = sparcl__mem_check_device(ctx, "the LSH rotations", bytes)) != SPARCL_OK ||
        (st = sparcl__family_kernels(ctx, &sparcl__schema_attn_lsh, &prob, params, 1,
                                     &kernel_names[K_HASH], &l->kernel[K_HASH])) != SPARCL_OK ||
        (st = sparcl__family_kernels(ctx, &sparcl__schema_attn_lsh, &prob, params, 1,
                                     &kernel_names[K_GATHER], &l->kernel[K_GATHER])) != SPARCL_OK ||
        (st = sparcl__family_kernels(ctx, &sparcl__schema_attn_lsh, &prob, params, 1,
                                     &kernel_names[K_CHUNK], &l->kernel[K_CHUNK])) != SPARCL_OK ||
        (st = sparcl__family_kernels(ctx, &sparcl__schema_attn_lsh_sort, &no_problem, &no_params, 1,
                                     &kernel_names[K_SORT], &l->kernel[K_SORT])) != SPARCL_OK ||
        (st = sparcl__merge_stacked_kernel(ctx, desc->dtype, &l->merge)) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, &l->rot, bytes, "LSH rotations")) != SPARCL_OK ||
        (st = upload_rotations(l, desc->seed)) != SPARCL_OK) {
        lsh_free(l);
        return st;
    }
    l->bytes = bytes;
    *state = l;
    return SPARCL_OK;
}

/* Sorted positions of one segment of gathered keys: n rounded up to whole
 * tiles of block_n. */
static size_t tiled_len(int n, int block_n)
{
    return ((size_t)n + (size_t)block_n - 1) / (size_t)block_n * (size_t)block_n;
}

/* Allocates the workspace of one call; `attention` adds the gathered keys
 * and tokens (whole tiles of BLOCK_N sorted positions per segment) and the
 * partial outputs and LSEs of every round. */
static sparcl_status work_alloc(struct lsh *l, int attention, work *w)
{
    const sparcl_plan_desc *d = &l->view->desc;
    sparcl_ctx *ctx = l->view->ctx;
    memset(w, 0, sizeof *w);
    /* Extents the plan validated positive; the products saturate, so a
     * shape too large to address is refused by sparcl__scratch. */
    const size_t tokens =
        sparcl__sat_mul(sparcl__sat_mul((size_t)d->batch, (size_t)d->q_heads), (size_t)d->q_len);
    const size_t per_round = sparcl__sat_mul(tokens, (size_t)d->lsh_rounds);
    const size_t segments = (size_t)d->batch * (size_t)d->q_heads * (size_t)d->lsh_rounds;
    sparcl_status st;
    if ((st = sparcl__scratch(ctx, &w->buckets, sparcl__sat_mul(per_round, sizeof(cl_int)),
                              "LSH bucket ids")) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, &w->order, sparcl__sat_mul(per_round, sizeof(cl_int)),
                              "LSH sorted order")) != SPARCL_OK ||
        (st = sparcl__scratch(
             ctx, &w->counts,
             sparcl__sat_mul(sparcl__sat_mul(segments, (size_t)d->lsh_buckets), sizeof(cl_int)),
             "LSH bucket counts")) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, &w->inv, sparcl__sat_mul(tokens, sizeof(float)),
                              "LSH key norms")) != SPARCL_OK)
        return st;
    if (!attention)
        return SPARCL_OK;
    const size_t padded = sparcl__sat_mul(
        sparcl__sat_mul((size_t)d->batch * (size_t)d->q_heads, (size_t)d->lsh_rounds),
        tiled_len(d->q_len, l->block_n));
    if ((st = sparcl__scratch(
             ctx, &w->keys,
             sparcl__sat_mul(sparcl__sat_mul(padded, (size_t)d->head_dim), sizeof(float)),
             "LSH sorted keys")) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, &w->tokens, sparcl__sat_mul(padded, sizeof(cl_int)),
                              "LSH sorted tokens")) != SPARCL_OK ||
        (st = sparcl__scratch(
             ctx, &w->parts,
             sparcl__sat_mul(sparcl__sat_mul(per_round, (size_t)d->head_dim), sizeof(float)),
             "LSH partial outputs")) != SPARCL_OK ||
        (st = sparcl__scratch(ctx, &w->lses, sparcl__sat_mul(per_round, sizeof(float)),
                              "LSH partial LSEs")) != SPARCL_OK)
        return st;
    return SPARCL_OK;
}

typedef struct arg {
    size_t size;
    const void *value;
} arg;
#define ARG(x)                                                                                     \
    {                                                                                              \
        sizeof(x), &(x)                                                                            \
    }

/* Enqueues kernel `which` over global[0] x global[1] x global[2]; the hash,
 * gather and chunk kernels run WG_SIZE work-items per group along the first axis
 * (rounded up: they skip the items past the end), the sort lets the
 * driver choose. */
static sparcl_status launch(struct lsh *l, cl_command_queue queue, int which, const arg *args,
                            int n_args, const size_t global[3], cl_uint num_wait,
                            const cl_event *wait, cl_event *event)
{
    cl_kernel kn = l->kernel[which];
    cl_int err = CL_SUCCESS;
    for (int a = 0; a < n_args; ++a)
        err |= clSetKernelArg(kn, (cl_uint)a, args[a].size, args[a].value);
    const size_t wg = which == K_SORT ? 1 : (size_t)l->wg;
    const size_t g[3] = {(global[0] + wg - 1) / wg * wg, global[1], global[2]};
    const size_t local[3] = {wg, 1, 1};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(queue, kn, 3, NULL, g, which == K_SORT ? NULL : local,
                                     num_wait, wait, event);
    return err == CL_SUCCESS ? SPARCL_OK : sparcl__fail_cl(l->view->ctx, err, kernel_names[which]);
}

/* Enqueues the hash and the sort of q (strides qs) into w after the wait
 * list; *done receives the sort's event (each kernel waits for the one
 * before, so out-of-order queues work too).  Lock held. */
static sparcl_status hash_and_sort(struct lsh *l, cl_command_queue queue, sparcl_strides qs,
                                   cl_mem q, const work *w, cl_uint num_wait, const cl_event *wait,
                                   cl_event *done)
{
    const sparcl_plan_desc *d = &l->view->desc;
    const cl_long q_sb = qs.batch, q_sh = qs.head, q_ss = qs.seq;
    const cl_int rounds = d->lsh_rounds, half = d->lsh_buckets / 2, n = d->q_len;
    const cl_int heads = d->q_heads, nb = d->lsh_buckets;
    const arg hash[] = {ARG(q),    ARG(q_sb), ARG(q_sh),  ARG(q_ss),       ARG(l->rot), ARG(rounds),
                        ARG(half), ARG(n),    ARG(heads), ARG(w->buckets), ARG(w->inv)};
    const size_t hg[3] = {(size_t)n, (size_t)heads, (size_t)d->batch};
    cl_event hashed = NULL;
    sparcl_status st = launch(l, queue, K_HASH, hash, (int)(sizeof hash / sizeof *hash), hg,
                              num_wait, wait, &hashed);
    if (st != SPARCL_OK)
        return st;
    const arg sort[] = {ARG(w->buckets), ARG(n), ARG(nb), ARG(w->counts), ARG(w->order)};
    const size_t sg[3] = {(size_t)d->batch * (size_t)heads * (size_t)rounds, 1, 1};
    st = launch(l, queue, K_SORT, sort, (int)(sizeof sort / sizeof *sort), sg, 1, &hashed, done);
    clReleaseEvent(hashed);
    return st;
}

static sparcl_status lsh_forward(void *state, const sparcl__fwd_call *c)
{
    struct lsh *l = state;
    const sparcl__plan_view *v = l->view;
    const sparcl_plan_desc *d = &v->desc;
    work w;
    sparcl_status st = work_alloc(l, 1, &w);
    if (st != SPARCL_OK) {
        work_free(&w);
        return st;
    }
    cl_event sorted = NULL, gathered = NULL, attended = NULL;
    pthread_mutex_lock(&l->lock);
    st = hash_and_sort(l, c->queue, c->ts[0], c->q, &w, c->num_wait, c->wait, &sorted);
    const sparcl_strides qs = c->ts[0], vs = c->ts[2];
    const cl_long q_sb = qs.batch, q_sh = qs.head, q_ss = qs.seq;
    const cl_int n = d->q_len, heads = d->q_heads, rounds = d->lsh_rounds;
    if (st == SPARCL_OK) {
        const arg a[] = {ARG(c->q),    ARG(q_sb),  ARG(q_sh),   ARG(q_ss),
                         ARG(w.order), ARG(w.inv), ARG(w.keys), ARG(w.tokens),
                         ARG(n),       ARG(heads), ARG(rounds)};
        const size_t g[3] = {tiled_len(n, l->block_n) / (size_t)l->block_n,
                             (size_t)heads * (size_t)rounds, (size_t)d->batch};
        st =
            launch(l, c->queue, K_GATHER, a, (int)(sizeof a / sizeof *a), g, 1, &sorted, &gathered);
    }
    if (st == SPARCL_OK) {
        const cl_long v_sb = vs.batch, v_sh = vs.head, v_ss = vs.seq;
        const cl_long rows = (cl_long)d->batch * d->q_heads * d->q_len;
        const cl_int group = d->q_heads / d->kv_heads;
        const cl_int chunk = d->lsh_chunk, causal = d->causal != 0;
        const cl_float scale_log2 = v->scale * 1.4426950408889634f;
        const arg a[] = {ARG(c->q),      ARG(q_sb),    ARG(q_sh),   ARG(q_ss),   ARG(c->v),
                         ARG(v_sb),      ARG(v_sh),    ARG(v_ss),   ARG(w.keys), ARG(w.tokens),
                         ARG(w.inv),     ARG(w.parts), ARG(w.lses), ARG(rows),   ARG(n),
                         ARG(heads),     ARG(group),   ARG(rounds), ARG(chunk),  ARG(causal),
                         ARG(scale_log2)};
        const size_t g[3] = {((size_t)n + (size_t)l->block_m - 1) / (size_t)l->block_m,
                             (size_t)heads * (size_t)rounds, (size_t)d->batch};
        st = launch(l, c->queue, K_CHUNK, a, (int)(sizeof a / sizeof *a), g, 1, &gathered,
                    &attended);
    }
    if (st == SPARCL_OK) {
        const sparcl__merge_stacked m = {w.parts,    w.lses,   d->lsh_rounds, d->batch,
                                         d->q_heads, d->q_len, d->head_dim};
        st = sparcl__merge_stacked_enqueue(v->ctx, c->queue, l->merge, &m, c->out, c->ts[3], c->lse,
                                           1, &attended, c->event);
    }
    pthread_mutex_unlock(&l->lock);
    if (sorted)
        clReleaseEvent(sorted);
    if (gathered)
        clReleaseEvent(gathered);
    if (attended)
        clReleaseEvent(attended);
    work_free(&w);
    return st;
}

sparcl_status sparcl__lsh_order(void *state, cl_command_queue queue, sparcl_strides qs, cl_mem q,
                                int32_t *buckets, int32_t *order)
{
    struct lsh *l = state;
    const sparcl_plan_desc *d = &l->view->desc;
    work w;
    cl_event sorted = NULL;
    sparcl_status st = work_alloc(l, 0, &w);
    if (st == SPARCL_OK) {
        pthread_mutex_lock(&l->lock);
        st = hash_and_sort(l, queue, qs, q, &w, 0, NULL, &sorted);
        pthread_mutex_unlock(&l->lock);
    }
    if (sorted) { /* the reads below then need no wait list */
        clWaitForEvents(1, &sorted);
        clReleaseEvent(sorted);
    }
    const size_t bytes = sizeof(int32_t) * (size_t)d->batch * (size_t)d->q_heads *
                         (size_t)d->lsh_rounds * (size_t)d->q_len;
    cl_int err = CL_SUCCESS;
    if (st == SPARCL_OK && buckets)
        err = clEnqueueReadBuffer(queue, w.buckets, CL_TRUE, 0, bytes, buckets, 0, NULL, NULL);
    if (st == SPARCL_OK && order && err == CL_SUCCESS)
        err = clEnqueueReadBuffer(queue, w.order, CL_TRUE, 0, bytes, order, 0, NULL, NULL);
    if (st == SPARCL_OK && err == CL_SUCCESS)
        err = clFinish(queue);
    if (st == SPARCL_OK && err != CL_SUCCESS)
        st = sparcl__fail_cl(l->view->ctx, err, "reading the LSH order");
    work_free(&w);
    return st;
}

const sparcl__kind_ops sparcl__kind_lsh = {
    .name = "LSH attention",
    .family = &sparcl__schema_attn_lsh,
    .create = lsh_create,
    .forward = lsh_forward,
    .half_forward = 1,
    .device_bytes = lsh_bytes,
    .free = lsh_free,
};
