/*
 * ring_forward.c -- sparcl_ring_forward: this rank's queries against every
 * key shard its layout rows attend, in ring order, the next shard in
 * flight while the current one computes, partial results merged by their
 * LSEs on the device.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpi/ring_internal.h"

typedef struct fwd_bufs {
    float *host[2][2]; /* receive slots: [slot][K or V] */
    cl_mem q, k, v, acc[2], acc_lse[2], part, part_lse;
} fwd_bufs;

static void free_bufs(fwd_bufs *b)
{
    for (int s = 0; s < 2; ++s)
        for (int t = 0; t < 2; ++t)
            free(b->host[s][t]);
    cl_mem all[] = {b->q,          b->k,          b->v,    b->acc[0],  b->acc[1],
                    b->acc_lse[0], b->acc_lse[1], b->part, b->part_lse};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i)
        if (all[i])
            clReleaseMemObject(all[i]);
}

static sparcl_status alloc_bufs(sparcl_ring *ring, fwd_bufs *b, int remote)
{
    const int64_t rows = (int64_t)ring->desc.batch * ring->desc.q_heads * ring->len;
    sparcl_status st = SPARCL_OK;
    const int64_t piece = sparcl__ring_max_piece(ring, 0);
    if (remote) {
        for (int s = 0; s < 2; ++s)
            for (int t = 0; t < 2; ++t)
                if (!(b->host[s][t] = malloc((size_t)piece * sizeof(float))))
                    st = sparcl__ring_fail(ring->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                           "sparcl_ring_forward: cannot allocate receive buffers");
        ring->stats.host_bytes = 4 * piece * (int64_t)sizeof(float);
    }
    if (st == SPARCL_OK)
        st = sparcl__ring_buffer(ring, ring->q_elems, &b->q);
    if (st == SPARCL_OK)
        st = sparcl__ring_buffer(ring, ring->kv_max, &b->k);
    if (st == SPARCL_OK)
        st = sparcl__ring_buffer(ring, ring->kv_max, &b->v);
    for (int s = 0; s < 2 && st == SPARCL_OK; ++s) {
        st = sparcl__ring_buffer(ring, ring->q_elems, &b->acc[s]);
        if (st == SPARCL_OK)
            st = sparcl__ring_buffer(ring, rows, &b->acc_lse[s]);
    }
    if (st == SPARCL_OK)
        st = sparcl__ring_buffer(ring, ring->q_elems, &b->part);
    if (st == SPARCL_OK)
        st = sparcl__ring_buffer(ring, rows, &b->part_lse);
    return st;
}

/* One step: shard `src`'s K and V against this rank's queries, the result
 * into acc[*cur] (first step) or merged with it into acc[!*cur]. */
static sparcl_status step(sparcl_ring *ring, fwd_bufs *b, int src, const float *kh, const float *vh,
                          int first, int *cur)
{
    const sparcl_plan_desc *d = &ring->desc;
    const int64_t n = sparcl__ring_pair_elems(ring, ring->rank, src);
    sparcl_status st = sparcl__ring_upload(ring, b->k, kh, n);
    if (st == SPARCL_OK)
        st = sparcl__ring_upload(ring, b->v, vh, n);
    if (st != SPARCL_OK)
        return st;
    if (first)
        return sparcl_plan_forward(ring->plans[src], b->q, b->k, b->v, b->acc[*cur],
                                   b->acc_lse[*cur], 0, NULL, NULL);
    st = sparcl_plan_forward(ring->plans[src], b->q, b->k, b->v, b->part, b->part_lse, 0, NULL,
                             NULL);
    if (st != SPARCL_OK)
        return st;
    const cl_mem outs[2] = {b->acc[*cur], b->part}, lses[2] = {b->acc_lse[*cur], b->part_lse};
    const sparcl_strides zero = {0, 0, 0};
    st = sparcl_merge(ring->ctx, NULL, d->batch, d->q_heads, ring->len, d->head_dim, 2, outs, lses,
                      zero, b->acc[!*cur], zero, b->acc_lse[!*cur], 0, NULL, NULL);
    if (st == SPARCL_OK)
        *cur = !*cur;
    return st;
}

static sparcl_status read_back(sparcl_ring *ring, fwd_bufs *b, int steps, int cur, float *out,
                               float *lse)
{
    const int64_t rows = (int64_t)ring->desc.batch * ring->desc.q_heads * ring->len;
    if (steps == 0) { /* no key attended by any row of this shard */
        memset(out, 0, (size_t)ring->q_elems * sizeof *out);
        for (int64_t i = 0; lse && i < rows; ++i)
            lse[i] = -INFINITY;
        return SPARCL_OK;
    }
    cl_command_queue queue = sparcl_ctx_cl_queue(ring->ctx);
    cl_int err = clEnqueueReadBuffer(queue, b->acc[cur], CL_TRUE, 0,
                                     (size_t)ring->q_elems * sizeof(float), out, 0, NULL, NULL);
    if (err == CL_SUCCESS && lse)
        err = clEnqueueReadBuffer(queue, b->acc_lse[cur], CL_TRUE, 0, (size_t)rows * sizeof(float),
                                  lse, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return sparcl__ring_fail(ring->ctx, SPARCL_ERR_OPENCL,
                                 "sparcl_ring_forward: reading the result failed (%d)", (int)err);
    return SPARCL_OK;
}

SPARCL_MPI_API sparcl_status sparcl_ring_forward(sparcl_ring *ring, const float *q, const float *k,
                                                 const float *v, float *out, float *lse)
{
    if (!ring)
        return sparcl__ring_fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                                 "sparcl_ring_forward: ring is NULL");
    const double t0 = MPI_Wtime();
    const int P = ring->ranks, r = ring->rank;
    sparcl_status st = sparcl__ring_begin(ring, q && k && v && out,
                                          "sparcl_ring_forward: q, k, v and out are required");
    if (st != SPARCL_OK)
        return st;
    int *order = malloc(sizeof *order * (size_t)P);
    MPI_Request *reqs = malloc(sizeof *reqs * (2 * (size_t)P + 4));
    fwd_bufs b;
    memset(&b, 0, sizeof b);
    int n = 0;
    if (!order || !reqs)
        st = sparcl__ring_fail(ring->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                               "sparcl_ring_forward: out of "
                               "memory");
    else {
        n = sparcl__ring_steps(ring, order);
        int remote = 0;
        for (int t = 0; t < n; ++t)
            remote |= order[t] != r;
        st = alloc_bufs(ring, &b, remote);
    }
    /* Nothing has been sent yet: every rank can still back out together. */
    if ((st = sparcl__ring_agree(ring->ctx, ring->comm, st)) != SPARCL_OK) {
        free_bufs(&b);
        free(order);
        free(reqs);
        return st;
    }
    for (int p = 0; p < P; ++p)
        if (p != (r + 1) % P || P == 1)
            ring->stats.bytes_ring += P > 1 ? 2 * sparcl__ring_kv_elems(ring, p) * 4 : 0;
    ring->stats.shards_computed = n;
    ring->stats.shards_skipped = P - n;

    /* reqs: this rank's sends (2 per receiver), then the two receive
     * slots (K and V each); null requests are allowed everywhere. */
    const int nreq = 2 * P + 4;
    for (int i = 0; i < nreq; ++i)
        reqs[i] = MPI_REQUEST_NULL;
    MPI_Request *rq[2] = {reqs + 2 * P, reqs + 2 * P + 2};
    sparcl__ring_post_own(ring, k, v, reqs);
    if (n > 0 && order[0] != r)
        sparcl__ring_post_recv(ring, order[0], b.host[0][0], b.host[0][1], rq[0]);
    st = sparcl__ring_upload(ring, b.q, q, ring->q_elems);
    int cur = 0;
    for (int t = 0; t < n; ++t) {
        const int src = order[t], slot = t % 2, next = (t + 1) % 2;
        sparcl__ring_wait(ring, rq[slot], 2);
        if (t + 1 < n && order[t + 1] != r)
            sparcl__ring_post_recv(ring, order[t + 1], b.host[next][0], b.host[next][1], rq[next]);
        if (st == SPARCL_OK)
            st = step(ring, &b, src, src == r ? k : b.host[slot][0], src == r ? v : b.host[slot][1],
                      t == 0, &cur);
        /* The device computes; MPI moves the next shard meanwhile. */
        sparcl_status fin = sparcl__ring_finish(ring, reqs, nreq);
        if (st == SPARCL_OK)
            st = fin;
    }
    sparcl__ring_wait(ring, reqs, nreq);
    if (st == SPARCL_OK)
        st = read_back(ring, &b, n, cur, out, lse);
    free_bufs(&b);
    free(order);
    free(reqs);
    const double t_agree = MPI_Wtime(); /* waiting for the slowest rank */
    st = sparcl__ring_agree(ring->ctx, ring->comm, st);
    ring->stats.seconds_wait += MPI_Wtime() - t_agree;
    ring->stats.seconds = MPI_Wtime() - t0;
    return st;
}
