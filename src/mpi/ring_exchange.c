/*
 * ring_exchange.c -- what the ring's forward and backward share: the
 * agreement of all ranks on a status, the ring order of the steps, the
 * posting of K/V shards, and waiting on the device while MPI progresses.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mpi/ring_internal.h"

int64_t sparcl__ring_kv_elems(const sparcl_ring *ring, int rank)
{
    return (int64_t)ring->desc.batch * ring->desc.kv_heads * ring->lens[rank] * ring->desc.head_dim;
}

int64_t sparcl__ring_pair_elems(const sparcl_ring *ring, int i, int j)
{
    const int x = i * ring->ranks + j;
    return (int64_t)ring->desc.batch * ring->desc.kv_heads * (ring->hi[x] - ring->lo[x]) *
           ring->desc.head_dim;
}

int64_t sparcl__ring_max_piece(const sparcl_ring *ring, int incoming)
{
    const int P = ring->ranks, r = ring->rank;
    int64_t m = 1;
    for (int j = 0; j < P; ++j) {
        const int i = incoming ? j : r, k = incoming ? r : j;
        if (j != r && ring->need[i * P + k]) {
            const int64_t e = sparcl__ring_pair_elems(ring, i, k);
            m = e > m ? e : m;
        }
    }
    return m;
}

sparcl_status sparcl__ring_fail(sparcl_ctx *ctx, sparcl_status status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sparcl_ctx_fail(ctx, status, msg);
}

sparcl_status sparcl__ring_agree(sparcl_ctx *ctx, MPI_Comm comm, sparcl_status local)
{
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    struct {
        int status, rank;
    } mine = {(int)local, rank}, worst;
    MPI_Request req;
    MPI_Iallreduce(&mine, &worst, 1, MPI_2INT, MPI_MINLOC, comm, &req);
    sparcl__ring_idle(&req, 1);
    if (worst.status == SPARCL_OK)
        return SPARCL_OK;
    /* The failing rank tells the others what went wrong. */
    char msg[512] = "";
    if (rank == worst.rank)
        snprintf(msg, sizeof msg, "%s", sparcl_ctx_errmsg(ctx));
    MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, worst.rank, comm);
    if (rank != worst.rank)
        sparcl__ring_fail(ctx, (sparcl_status)worst.status, "rank %d failed: %s", worst.rank, msg);
    return (sparcl_status)worst.status;
}

sparcl_status sparcl__ring_begin(sparcl_ring *ring, int args_ok, const char *missing)
{
    sparcl_status st = SPARCL_OK;
    if (!args_ok)
        st = sparcl_ctx_fail(ring->ctx, SPARCL_ERR_INVALID_ARGUMENT, missing);
    if ((st = sparcl__ring_agree(ring->ctx, ring->comm, st)) != SPARCL_OK)
        return st;
    sparcl_ring_stats_init(&ring->stats);
    ring->stats.ranks = ring->ranks;
    ring->stats.rank = ring->rank;
    ring->stats.device_bytes = ring->plan_bytes;
    return SPARCL_OK;
}

int sparcl__ring_steps(const sparcl_ring *ring, int *order)
{
    int n = 0;
    for (int s = 0; s < ring->ranks; ++s) {
        int src = (ring->rank - s + ring->ranks) % ring->ranks;
        if (ring->need[ring->rank * ring->ranks + src])
            order[n++] = src;
    }
    return n;
}

int sparcl__ring_post_own(sparcl_ring *ring, const float *k, const float *v, MPI_Request *reqs)
{
    const int P = ring->ranks, r = ring->rank, D = ring->desc.head_dim;
    int n = 0;
    for (int s = 1; s < P; ++s) {
        int dst = (r + s) % P;
        if (!ring->need[dst * P + r])
            continue;
        /* Rows [lo, hi) of every (batch, head): one strided datatype. */
        const int lo = ring->lo[dst * P + r], hi = ring->hi[dst * P + r];
        MPI_Datatype rows;
        MPI_Type_vector(ring->desc.batch * ring->desc.kv_heads, (hi - lo) * D, ring->len * D,
                        MPI_FLOAT, &rows);
        MPI_Type_commit(&rows);
        const size_t at = (size_t)lo * (size_t)D;
        MPI_Isend(k + at, 1, rows, dst, RING_TAG_K, ring->comm, &reqs[n++]);
        MPI_Isend(v + at, 1, rows, dst, RING_TAG_V, ring->comm, &reqs[n++]);
        MPI_Type_free(&rows); /* the pending sends keep it */
        ring->stats.bytes_sent +=
            2 * sparcl__ring_pair_elems(ring, dst, r) * (int64_t)sizeof(float);
    }
    return n;
}

void sparcl__ring_post_recv(sparcl_ring *ring, int src, float *kbuf, float *vbuf,
                            MPI_Request reqs[2])
{
    const int count = (int)sparcl__ring_pair_elems(ring, ring->rank, src);
    MPI_Irecv(kbuf, count, MPI_FLOAT, src, RING_TAG_K, ring->comm, &reqs[0]);
    MPI_Irecv(vbuf, count, MPI_FLOAT, src, RING_TAG_V, ring->comm, &reqs[1]);
    ring->stats.bytes_received += 2 * (int64_t)count * (int64_t)sizeof(float);
}

void sparcl__ring_idle(MPI_Request *reqs, int nreqs)
{
    const struct timespec nap = {0, 50000}; /* 50 us between polls */
    for (;;) {
        int done = 0;
        MPI_Testall(nreqs, reqs, &done, MPI_STATUSES_IGNORE);
        if (done)
            return;
        nanosleep(&nap, NULL);
    }
}

void sparcl__ring_wait(sparcl_ring *ring, MPI_Request *reqs, int nreqs)
{
    if (nreqs <= 0)
        return;
    double t0 = MPI_Wtime();
    sparcl__ring_idle(reqs, nreqs);
    ring->stats.seconds_wait += MPI_Wtime() - t0;
}

sparcl_status sparcl__ring_finish(sparcl_ring *ring, MPI_Request *reqs, int nreqs)
{
    cl_command_queue queue = sparcl_ctx_cl_queue(ring->ctx);
    cl_event ev = NULL;
    cl_int err = clEnqueueMarkerWithWaitList(queue, 0, NULL, &ev);
    if (err == CL_SUCCESS)
        err = clFlush(queue);
    if (err != CL_SUCCESS) {
        if (ev)
            clReleaseEvent(ev);
        return sparcl__ring_fail(ring->ctx, SPARCL_ERR_OPENCL,
                                 "enqueueing a marker on the ring's queue failed (%d)", (int)err);
    }
    const struct timespec nap = {0, 50000}; /* 50 us between polls */
    for (;;) {
        cl_int state = CL_QUEUED;
        err = clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof state, &state, NULL);
        if (err != CL_SUCCESS || state <= CL_COMPLETE) {
            if (err == CL_SUCCESS && state < 0)
                err = state;
            break;
        }
        if (nreqs > 0) {
            int done = 0;
            MPI_Testall(nreqs, reqs, &done, MPI_STATUSES_IGNORE);
        }
        nanosleep(&nap, NULL);
    }
    clReleaseEvent(ev);
    if (err != CL_SUCCESS)
        return sparcl__ring_fail(ring->ctx, SPARCL_ERR_OPENCL,
                                 "the ring's device work failed (OpenCL status %d)", (int)err);
    return SPARCL_OK;
}

sparcl_status sparcl__ring_upload(sparcl_ring *ring, cl_mem buf, const float *host, int64_t n)
{
    cl_int err = clEnqueueWriteBuffer(sparcl_ctx_cl_queue(ring->ctx), buf, CL_FALSE, 0,
                                      (size_t)n * sizeof(float), host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return sparcl__ring_fail(ring->ctx, SPARCL_ERR_OPENCL,
                                 "clEnqueueWriteBuffer of a ring shard failed (%d)", (int)err);
    return SPARCL_OK;
}

sparcl_status sparcl__ring_buffer(sparcl_ring *ring, int64_t n, cl_mem *out)
{
    cl_int err = CL_SUCCESS;
    *out = clCreateBuffer(sparcl_ctx_cl_context(ring->ctx), CL_MEM_READ_WRITE,
                          (size_t)(n > 0 ? n : 1) * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS) {
        *out = NULL;
        return sparcl__ring_fail(ring->ctx,
                                 err == CL_MEM_OBJECT_ALLOCATION_FAILURE ||
                                         err == CL_OUT_OF_RESOURCES || err == CL_OUT_OF_HOST_MEMORY
                                     ? SPARCL_ERR_OUT_OF_MEMORY
                                     : SPARCL_ERR_OPENCL,
                                 "clCreateBuffer of %lld floats for the ring failed (%d)",
                                 (long long)n, (int)err);
    }
    ring->stats.device_bytes += n * (int64_t)sizeof(float);
    return SPARCL_OK;
}
