/*
 * ring_internal.h -- the ring object of libsparcl_mpi and the helpers its
 * calls share (src/mpi/).  Built on the public API only (sparcl.h): the
 * component links against libsparcl like any application.
 */
#ifndef SPARCL_RING_INTERNAL_H
#define SPARCL_RING_INTERNAL_H

#include "sparcl_mpi.h"

/* Message tags: one message per tag between two ranks in one call. */
enum { RING_TAG_K = 1, RING_TAG_V = 2, RING_TAG_DK = 3, RING_TAG_DV = 4 };

struct sparcl_ring {
    sparcl_ctx *ctx;
    MPI_Comm comm;
    int ranks, rank;
    sparcl_plan_desc desc; /* the whole sequence's; layout not kept */
    int start, len;        /* this rank's shard */
    int *starts, *lens;    /* every rank's */
    unsigned char *need;   /* need[i * ranks + j]: query shard i attends key shard j */
    int *lo, *hi;          /* [i * ranks + j]: the keys [lo, hi) of shard j (shard
                              offsets) that query shard i attends; 0, len when none */
    sparcl_plan **plans;   /* per key shard, NULL where not needed */
    int64_t q_elems;       /* batch * q_heads * len * head_dim */
    int64_t kv_max;        /* batch * kv_heads * max shard len * head_dim */
    int64_t plan_bytes;    /* device memory of the plans */
    sparcl_ring_stats stats;
};

/* Floats of one rank's K (or V) shard. */
int64_t sparcl__ring_kv_elems(const sparcl_ring *ring, int rank);

/* Floats of the part of key shard j's K (or V) that query shard i attends
 * (rows [lo, hi) of each batch and head). */
int64_t sparcl__ring_pair_elems(const sparcl_ring *ring, int i, int j);

/* Collective agreement on a local status: returns the lowest (worst)
 * status over the ranks.  A rank whose own status was OK while another
 * failed records "rank R failed: <R's message>" on its context. */
sparcl_status sparcl__ring_agree(sparcl_ctx *ctx, MPI_Comm comm, sparcl_status local);

/* The start of every collective call: records `missing` (a sentence naming
 * the required arguments) when args_ok is 0, agrees on the status, and
 * resets the call's statistics. */
sparcl_status sparcl__ring_begin(sparcl_ring *ring, int args_ok, const char *missing);

/* The largest remote piece this rank receives: K (or V) rows of another
 * rank's shard (incoming 0), or dK (or dV) rows of its own shard from
 * another rank (incoming 1); floats, at least 1. */
int64_t sparcl__ring_max_piece(const sparcl_ring *ring, int incoming);

/* Records a formatted failure on ctx (sparcl_ctx_fail) and returns status. */
sparcl_status sparcl__ring_fail(sparcl_ctx *ctx, sparcl_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Waits for everything enqueued on the context's queue while polling the
 * requests (so that MPI progresses transfers under the compute).  Records
 * an OpenCL failure. */
sparcl_status sparcl__ring_finish(sparcl_ring *ring, MPI_Request *reqs, int nreqs);

/* Waits for requests by polling with short sleeps: Open MPI's blocking
 * waits spin, which on an oversubscribed host (more ranks than cores, as
 * in the tests) takes the cores from the ranks still computing. */
void sparcl__ring_idle(MPI_Request *reqs, int nreqs);

/* Waits for requests (as sparcl__ring_idle), adding the time to
 * stats.seconds_wait. */
void sparcl__ring_wait(sparcl_ring *ring, MPI_Request *reqs, int nreqs);

/* Non-blocking upload of n floats from host to a device buffer. */
sparcl_status sparcl__ring_upload(sparcl_ring *ring, cl_mem buf, const float *host, int64_t n);

/* A device buffer of n floats (host pointer NULL) or an OpenCL failure. */
sparcl_status sparcl__ring_buffer(sparcl_ring *ring, int64_t n, cl_mem *out);

/* The key shards this rank computes against, in ring order (step s is
 * rank (rank - s) mod ranks): fills order[0..] and returns the count. */
int sparcl__ring_steps(const sparcl_ring *ring, int *order);

/* Posts this rank's own K and V shards to every rank that needs them, in
 * ring order, into reqs (2 per receiver); returns the request count. */
int sparcl__ring_post_own(sparcl_ring *ring, const float *k, const float *v, MPI_Request *reqs);

/* Posts the receive of key shard `src`'s K and V into kbuf, vbuf. */
void sparcl__ring_post_recv(sparcl_ring *ring, int src, float *kbuf, float *vbuf,
                            MPI_Request reqs[2]);

#endif
