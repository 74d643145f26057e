/*
 * ring_backward.c -- sparcl_ring_backward: the forward's schedule again,
 * with each step's sparcl_plan_backward() giving this rank's dq over one
 * key shard (summed here) and that shard's dk and dv from this rank's
 * queries (sent back to the shard's owner, which sums what arrives).
 *
 * Every wait services the incoming partial gradients (a window of two
 * receive slots, consumed in ring order and re-posted), so no rank ever
 * blocks while a peer waits on it, and memory stays O(shard).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpi/ring_internal.h"

typedef struct bwd_state {
    sparcl_ring *ring;
    float *dk, *dv; /* this rank's outputs, summed into */
    /* incoming partial dk/dv of this rank's shard, in ring order */
    int *in_src, n_in, in_done, in_posted;
    float *in_buf[2][2];
    /* outgoing partials: two slots of dk/dv */
    float *out_buf[2][2];
    int out_next;
    /* kv shards in flight, as in the forward */
    float *kv_buf[2][2];
    float *dq_part;
    MPI_Request *reqs; /* [2P own sends][4 kv recv][4 dkv sends][4 dkv recv] */
    int nreq;
    cl_mem q, k, v, out, lse, dout, dq, dkp, dvp;
} bwd_state;

static MPI_Request *kv_rq(bwd_state *b, int slot)
{
    return b->reqs + 2 * b->ring->ranks + 2 * slot;
}
static MPI_Request *send_rq(bwd_state *b, int slot)
{
    return b->reqs + 2 * b->ring->ranks + 4 + 2 * slot;
}
static MPI_Request *in_rq(bwd_state *b, int slot)
{
    return b->reqs + 2 * b->ring->ranks + 8 + 2 * slot;
}

static void add(float *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
        dst[i] += src[i];
}

/* dst ([batch, kv_heads, len, D], this rank's shard) rows [lo, hi) += src
 * ([batch, kv_heads, hi - lo, D]). */
static void add_rows(const sparcl_ring *ring, float *dst, const float *src, int lo, int hi)
{
    const int64_t D = ring->desc.head_dim, w = (hi - lo) * D;
    for (int64_t bh = 0; bh < (int64_t)ring->desc.batch * ring->desc.kv_heads; ++bh)
        add(dst + (bh * ring->len + lo) * D, src + bh * w, w);
}

static void post_in(bwd_state *b)
{
    sparcl_ring *ring = b->ring;
    const int u = b->in_posted, slot = u % 2;
    const int count = (int)sparcl__ring_pair_elems(ring, b->in_src[u], ring->rank);
    MPI_Irecv(b->in_buf[slot][0], count, MPI_FLOAT, b->in_src[u], RING_TAG_DK, ring->comm,
              &in_rq(b, slot)[0]);
    MPI_Irecv(b->in_buf[slot][1], count, MPI_FLOAT, b->in_src[u], RING_TAG_DV, ring->comm,
              &in_rq(b, slot)[1]);
    ring->stats.bytes_received += 2 * (int64_t)count * (int64_t)sizeof(float);
    ++b->in_posted;
}

/* Sums every incoming partial that has arrived, in order, re-posting its
 * slot for the next one. */
static void service(bwd_state *b)
{
    sparcl_ring *ring = b->ring;
    while (b->in_done < b->n_in) {
        const int slot = b->in_done % 2, src = b->in_src[b->in_done];
        int done = 0;
        MPI_Testall(2, in_rq(b, slot), &done, MPI_STATUSES_IGNORE);
        if (!done)
            return;
        add_rows(ring, b->dk, b->in_buf[slot][0], ring->lo[src * ring->ranks + ring->rank],
                 ring->hi[src * ring->ranks + ring->rank]);
        add_rows(ring, b->dv, b->in_buf[slot][1], ring->lo[src * ring->ranks + ring->rank],
                 ring->hi[src * ring->ranks + ring->rank]);
        ++b->in_done;
        if (b->in_posted < b->n_in)
            post_in(b);
    }
}

/* Waits for reqs[0..n) while servicing the incoming partials. */
static void pump(bwd_state *b, MPI_Request *reqs, int n)
{
    const struct timespec nap = {0, 50000};
    const double t0 = MPI_Wtime();
    for (;;) {
        service(b);
        int done = 1;
        if (n > 0)
            MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (done)
            break;
        nanosleep(&nap, NULL);
    }
    b->ring->stats.seconds_wait += MPI_Wtime() - t0;
}

static void free_state(bwd_state *b)
{
    for (int s = 0; s < 2; ++s)
        for (int t = 0; t < 2; ++t) {
            free(b->in_buf[s][t]);
            free(b->out_buf[s][t]);
            free(b->kv_buf[s][t]);
        }
    free(b->dq_part);
    free(b->in_src);
    free(b->reqs);
    cl_mem all[] = {b->q, b->k, b->v, b->out, b->lse, b->dout, b->dq, b->dkp, b->dvp};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i)
        if (all[i])
            clReleaseMemObject(all[i]);
}

static sparcl_status alloc_state(bwd_state *b)
{
    sparcl_ring *ring = b->ring;
    const int P = ring->ranks, r = ring->rank;
    const size_t kv = (size_t)ring->kv_max * sizeof(float),
                 kv_in = (size_t)sparcl__ring_max_piece(ring, 0) * sizeof(float),
                 dkv_in = (size_t)sparcl__ring_max_piece(ring, 1) * sizeof(float);
    const int64_t rows = (int64_t)ring->desc.batch * ring->desc.q_heads * ring->len;
    b->in_src = malloc(sizeof *b->in_src * (size_t)P);
    b->nreq = 2 * P + 12;
    b->reqs = malloc(sizeof *b->reqs * (size_t)b->nreq);
    b->dq_part = malloc((size_t)ring->q_elems * sizeof(float));
    int ok = b->in_src && b->reqs && b->dq_part;
    for (int s = 0; s < 2; ++s)
        for (int t = 0; t < 2; ++t) {
            ok &= (b->in_buf[s][t] = malloc(dkv_in)) != NULL;
            ok &= (b->out_buf[s][t] = malloc(kv)) != NULL; /* the own shard's too */
            ok &= (b->kv_buf[s][t] = malloc(kv_in)) != NULL;
        }
    if (!ok)
        return sparcl__ring_fail(ring->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                 "sparcl_ring_backward: cannot allocate host buffers");
    ring->stats.host_bytes =
        (int64_t)(4 * (kv + kv_in + dkv_in)) + ring->q_elems * (int64_t)sizeof(float);
    for (int i = 0; i < b->nreq; ++i)
        b->reqs[i] = MPI_REQUEST_NULL;
    for (int s = 1; s < P; ++s) { /* who computes with this rank's shard at step s */
        int src = (r + s) % P;
        if (ring->need[src * P + r])
            b->in_src[b->n_in++] = src;
    }
    sparcl_status st = SPARCL_OK;
    cl_mem *q_sized[] = {&b->q, &b->out, &b->dout, &b->dq};
    for (size_t i = 0; i < 4 && st == SPARCL_OK; ++i)
        st = sparcl__ring_buffer(ring, ring->q_elems, q_sized[i]);
    cl_mem *kv_sized[] = {&b->k, &b->v, &b->dkp, &b->dvp};
    for (size_t i = 0; i < 4 && st == SPARCL_OK; ++i)
        st = sparcl__ring_buffer(ring, ring->kv_max, kv_sized[i]);
    if (st == SPARCL_OK)
        st = sparcl__ring_buffer(ring, rows, &b->lse);
    return st;
}

/* One step against key shard src: gradients into dq_part and the send
 * slot `slot` (dk, dv), read back to the host. */
static sparcl_status step(bwd_state *b, int src, const float *kh, const float *vh, int slot)
{
    sparcl_ring *ring = b->ring;
    const int64_t n = sparcl__ring_pair_elems(ring, ring->rank, src);
    cl_command_queue queue = sparcl_ctx_cl_queue(ring->ctx);
    sparcl_status st = sparcl__ring_upload(ring, b->k, kh, n);
    if (st == SPARCL_OK)
        st = sparcl__ring_upload(ring, b->v, vh, n);
    if (st == SPARCL_OK)
        st = sparcl_plan_backward(ring->plans[src], b->q, b->k, b->v, b->out, b->lse, b->dout,
                                  b->dq, b->dkp, b->dvp, 0, NULL, NULL);
    if (st != SPARCL_OK)
        return st;
    cl_int err =
        clEnqueueReadBuffer(queue, b->dq, CL_FALSE, 0, (size_t)ring->q_elems * sizeof(float),
                            b->dq_part, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueReadBuffer(queue, b->dkp, CL_FALSE, 0, (size_t)n * sizeof(float),
                                  b->out_buf[slot][0], 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueReadBuffer(queue, b->dvp, CL_FALSE, 0, (size_t)n * sizeof(float),
                                  b->out_buf[slot][1], 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return sparcl__ring_fail(ring->ctx, SPARCL_ERR_OPENCL,
                                 "sparcl_ring_backward: reading gradients failed (%d)", (int)err);
    return SPARCL_OK;
}

static sparcl_status upload_inputs(bwd_state *b, const float *q, const float *out, const float *lse,
                                   const float *dout)
{
    sparcl_ring *ring = b->ring;
    const int64_t rows = (int64_t)ring->desc.batch * ring->desc.q_heads * ring->len;
    sparcl_status st = sparcl__ring_upload(ring, b->q, q, ring->q_elems);
    if (st == SPARCL_OK)
        st = sparcl__ring_upload(ring, b->out, out, ring->q_elems);
    if (st == SPARCL_OK)
        st = sparcl__ring_upload(ring, b->dout, dout, ring->q_elems);
    if (st == SPARCL_OK)
        st = sparcl__ring_upload(ring, b->lse, lse, rows);
    return st;
}

SPARCL_MPI_API sparcl_status sparcl_ring_backward(sparcl_ring *ring, const float *q, const float *k,
                                                  const float *v, const float *out,
                                                  const float *lse, const float *dout, float *dq,
                                                  float *dk, float *dv)
{
    if (!ring)
        return sparcl__ring_fail(NULL, SPARCL_ERR_INVALID_ARGUMENT,
                                 "sparcl_ring_backward: ring is NULL");
    const double t0 = MPI_Wtime();
    const int P = ring->ranks, r = ring->rank;
    sparcl_status st = sparcl__ring_begin(
        ring, q && k && v && out && lse && dout && dq && dk && dv,
        "sparcl_ring_backward: q, k, v, out, lse, dout, dq, dk and dv are required");
    if (st != SPARCL_OK)
        return st;
    bwd_state b;
    memset(&b, 0, sizeof b);
    b.ring = ring;
    b.dk = dk;
    b.dv = dv;
    int *order = malloc(sizeof *order * (size_t)P), n = 0;
    if (!order)
        st = sparcl__ring_fail(ring->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                               "sparcl_ring_backward: out of memory");
    else {
        n = sparcl__ring_steps(ring, order);
        st = alloc_state(&b);
    }
    if ((st = sparcl__ring_agree(ring->ctx, ring->comm, st)) != SPARCL_OK) {
        free_state(&b);
        free(order);
        return st;
    }
    ring->stats.shards_computed = n;
    ring->stats.shards_skipped = P - n;
    for (int p = 0; p < P && P > 1; ++p) /* K, V forwarded; dK, dV travel home */
        ring->stats.bytes_ring += (p != (r + 1) % P ? 16 : 8) * sparcl__ring_kv_elems(ring, p);
    const int64_t own = sparcl__ring_kv_elems(ring, r);
    memset(dq, 0, (size_t)ring->q_elems * sizeof *dq);
    memset(dk, 0, (size_t)own * sizeof *dk);
    memset(dv, 0, (size_t)own * sizeof *dv);

    sparcl__ring_post_own(ring, k, v, b.reqs);
    while (b.in_posted < b.n_in && b.in_posted < 2)
        post_in(&b);
    if (n > 0 && order[0] != r)
        sparcl__ring_post_recv(ring, order[0], b.kv_buf[0][0], b.kv_buf[0][1], kv_rq(&b, 0));
    st = upload_inputs(&b, q, out, lse, dout);
    for (int t = 0; t < n; ++t) {
        const int src = order[t], slot = t % 2, next = (t + 1) % 2;
        pump(&b, kv_rq(&b, slot), 2);
        if (t + 1 < n && order[t + 1] != r)
            sparcl__ring_post_recv(ring, order[t + 1], b.kv_buf[next][0], b.kv_buf[next][1],
                                   kv_rq(&b, next));
        const int oslot = b.out_next;
        pump(&b, send_rq(&b, oslot), 2); /* the slot's previous partial has left */
        if (st == SPARCL_OK)
            st = step(&b, src, src == r ? k : b.kv_buf[slot][0], src == r ? v : b.kv_buf[slot][1],
                      oslot);
        sparcl_status fin = sparcl__ring_finish(ring, b.reqs, b.nreq);
        if (st == SPARCL_OK)
            st = fin;
        service(&b);
        add(dq, b.dq_part, ring->q_elems);
        const int64_t cnt = sparcl__ring_pair_elems(ring, r, src);
        if (src == r) { /* the own shard is never narrowed */
            add(dk, b.out_buf[oslot][0], cnt);
            add(dv, b.out_buf[oslot][1], cnt);
        } else { /* sent even after a failure, so the owner's receive completes */
            MPI_Isend(b.out_buf[oslot][0], (int)cnt, MPI_FLOAT, src, RING_TAG_DK, ring->comm,
                      &send_rq(&b, oslot)[0]);
            MPI_Isend(b.out_buf[oslot][1], (int)cnt, MPI_FLOAT, src, RING_TAG_DV, ring->comm,
                      &send_rq(&b, oslot)[1]);
            ring->stats.bytes_sent += 2 * cnt * (int64_t)sizeof(float);
            b.out_next = !b.out_next;
        }
    }
    pump(&b, b.reqs, b.nreq);
    while (b.in_done < b.n_in) /* the last partials, already posted */
        pump(&b, in_rq(&b, b.in_done % 2), 2);
    free_state(&b);
    free(order);
    const double t_agree = MPI_Wtime(); /* waiting for the slowest rank */
    st = sparcl__ring_agree(ring->ctx, ring->comm, st);
    ring->stats.seconds_wait += MPI_Wtime() - t_agree;
    ring->stats.seconds = MPI_Wtime() - t0;
    return st;
}
