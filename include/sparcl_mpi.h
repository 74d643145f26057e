/*
 * sparcl_mpi.h -- ring attention over MPI: one sequence split over the
 * ranks of a communicator (context parallelism), forward and backward.
 *
 * An optional component: libsparcl_mpi, built only where CMake finds MPI
 * (Open MPI from Debian's libopenmpi-dev).  The core library never depends
 * on MPI; this header and its library do, on top of the public sparcl.h.
 *
 * The split.  A sequence of N tokens (queries and keys are the same
 * sequence: q_len == kv_len == N) is cut into P contiguous shards, one per
 * rank of the communicator in rank order; rank r owns tokens
 * [sparcl_ring_shard_start(N, P, r), + sparcl_ring_shard_len(N, P, r)):
 * N / P each, the first N % P ranks one more.  A rank holds the queries,
 * keys and values (and their gradients, and out and lse) of its own tokens
 * only: memory per rank is O(N / P * D) plus the layout, which every rank
 * holds whole.
 *
 * The schedule.  At init each rank slices the layout (and the causal mask)
 * to (its query shard, each key shard) with sparcl_layout_init_slice(),
 * keeps a plan for every slice that attends at least one pair, and the
 * ranks exchange which pairs those are.  A shard the layout never attends
 * from a rank is neither sent to it nor computed there: a window touches
 * only the neighbouring shards, causal skips the future.  Of a shard that
 * is attended, only the rows of the block columns this rank's queries
 * attend travel (a window's neighbour sends one window of keys, not its
 * shard; the own shard is always used whole).  The call runs P
 * steps in ring order: at step s rank r computes against the key shard of
 * rank r - s (mod P, its own at step 0) while the shard of step s + 1 is in
 * flight (MPI_Irecv posted before the compute; the owner's MPI_Isend of its
 * shard posted at the start of the call; the ranks poll MPI_Testall while
 * the device computes, so the transfer progresses under the compute).  The
 * shards go directly from their owner to every rank that needs them, in
 * that ring order, rather than being forwarded hop by hop: each needed
 * shard crosses the network once, and an unneeded one never
 * (sparcl_ring_stats reports both counts).  Partial outputs are merged by
 * their LSEs with sparcl_merge() on the device.
 *
 * The backward follows the same schedule with the forward's out and its
 * full-row lse: each step gives this rank's dq for its queries over one key
 * shard (summed locally) and that shard's dk and dv from this rank's
 * queries, sent back to the shard's owner, which sums what it receives.
 *
 * Tensors are host arrays (contiguous [batch, heads, shard_len, head_dim]
 * floats, lse [batch, q_heads, shard_len]); each call copies them to the
 * context's device and back.  Every call is collective over the ring's
 * communicator: all ranks call it, in the same order, from one thread each
 * (MPI_THREAD_SINGLE suffices; the caller initializes MPI).
 *
 * Errors.  Every call returns the same status on every rank, and never
 * hangs on bad input: arguments are checked locally first, then the ranks
 * agree (MPI_Allreduce) before any point-to-point message is posted.  A
 * rank whose own argument was wrong has the message naming it; the others
 * say which rank failed.  A failure during the steps (an OpenCL error)
 * lets the exchange finish and is then reported on every rank.  Messages
 * are on the sparcl_ctx each rank passed (sparcl_ctx_errmsg()).
 */
#ifndef SPARCL_MPI_H
#define SPARCL_MPI_H

#include <mpi.h>

#include "sparcl.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SPARCL_MPI_BUILDING)
#define SPARCL_MPI_API __attribute__((visibility("default")))
#else
#define SPARCL_MPI_API
#endif

typedef struct sparcl_ring sparcl_ring;

/* The shard of rank `rank` of `ranks` over `len` tokens: its first token
 * and its length (len / ranks, plus one on the first len % ranks ranks).
 * Pure functions; 0 for arguments out of range. */
SPARCL_MPI_API int sparcl_ring_shard_start(int len, int ranks, int rank);
SPARCL_MPI_API int sparcl_ring_shard_len(int len, int ranks, int rank);

/* Collective over `comm`.  Creates this rank's part of a ring for the
 * attention described by `desc`, with desc->q_len == desc->kv_len == N the
 * WHOLE sequence (not the shard): batch, q_heads, kv_heads (GQA/MQA
 * allowed), head_dim, scale, causal, layout (NULL for dense, else a
 * layout of N x N with 1 or q_heads heads, the same on every rank) and
 * params (passed to every shard's plan) are read; the strides must be zero
 * (contiguous), and the normalization, attention kind, dtype and page size
 * their defaults (softmax, exact, F32, unpaged).  N >= P: every rank owns
 * at least one token.
 *
 * comm is borrowed and must stay valid until sparcl_ring_free(); all
 * ranks pass the same communicator.  A communicator of one rank is
 * allowed and runs the whole sequence locally (no message is sent): the
 * same program then runs on 1 or P ranks, and it is the baseline the
 * benchmark compares against.  MPI_COMM_NULL (no ranks) and
 * intercommunicators are refused with SPARCL_ERR_INVALID_ARGUMENT before
 * any communication (there is nobody to agree with).  MPI must be
 * initialized.
 *
 * The ranks compare the descriptor's fields and a hash of the layout's
 * contents (one MPI_Allreduce); any difference fails on every rank with
 * SPARCL_ERR_INVALID_ARGUMENT naming the first field that differs and its
 * range over the ranks, e.g. "ranks disagree on q_len: from 100 to 101".
 * Init builds programs as sparcl_plan_init() does (the first rank to
 * build on a machine fills the program cache the others then read).
 * On failure *out is NULL on every rank.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT, and those of sparcl_plan_init()
 * and sparcl_layout_init_slice() on any rank. */
SPARCL_MPI_API sparcl_status sparcl_ring_init(sparcl_ctx *ctx, MPI_Comm comm,
                                              const sparcl_plan_desc *desc, sparcl_ring **out);

/* Frees this rank's part of the ring (not collective).  NULL does
 * nothing.  The context must outlive the ring. */
SPARCL_MPI_API void sparcl_ring_free(sparcl_ring *ring);

/* This rank's shard: first token and length.  Either pointer may be NULL. */
SPARCL_MPI_API void sparcl_ring_local(const sparcl_ring *ring, int *start, int *len);

/* Collective.  Softmax attention of this rank's queries over the whole
 * sequence's keys, as sparcl_plan_forward() of the unsplit descriptor
 * would give for these rows (within fp32 rounding of the merge):
 *   q:   [batch, q_heads, n, head_dim]     (n = this rank's shard length)
 *   k, v:[batch, kv_heads, n, head_dim]    this rank's keys and values
 *   out: [batch, q_heads, n, head_dim]     written
 *   lse: [batch, q_heads, n] or NULL       written (the backward needs it)
 * A row that attends to no key gets out 0 and lse -inf.  Inputs are read
 * during the call only.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL ring or array on any rank),
 * SPARCL_ERR_OPENCL, SPARCL_ERR_OUT_OF_MEMORY, on every rank. */
SPARCL_MPI_API sparcl_status sparcl_ring_forward(sparcl_ring *ring, const float *q, const float *k,
                                                 const float *v, float *out, float *lse);

/* Collective.  The gradients of sparcl_ring_forward() for this rank's
 * tokens, given dout for its rows: q, k, v as for the forward, out and lse
 * exactly as the forward wrote them (lse required), dout shaped as out;
 * dq ([batch, q_heads, n, head_dim]), dk and dv ([batch, kv_heads, n,
 * head_dim]) are overwritten: dq over every key its rows attend, dk and dv
 * summed over every query of the sequence that attends these keys (and
 * over the q heads of each kv head), as sparcl_plan_backward() of the
 * unsplit descriptor.  Errors: as sparcl_ring_forward(). */
SPARCL_MPI_API sparcl_status sparcl_ring_backward(sparcl_ring *ring, const float *q, const float *k,
                                                  const float *v, const float *out,
                                                  const float *lse, const float *dout, float *dq,
                                                  float *dk, float *dv);

/* What the last forward or backward call of this rank cost.  A versioned
 * struct (see "Versioned structs" in sparcl.h). */
typedef struct sparcl_ring_stats {
    size_t struct_size; /* set by sparcl_ring_stats_init() */
    int ranks, rank;
    int shards_computed;    /* key shards this rank computed against */
    int shards_skipped;     /* key shards its layout rows never attend */
    double seconds;         /* the whole call on this rank */
    double seconds_wait;    /* in MPI waits with nothing to compute: for a shard, for
                               sends to drain, and for the slowest rank at the end */
    int64_t bytes_sent;     /* payload this rank sent (K, V; dK, dV) */
    int64_t bytes_received; /* payload this rank received */
    int64_t bytes_ring;     /* what a plain ring forwarding every shard would send */
    int64_t host_bytes;     /* host memory the ring holds for a call */
    int64_t device_bytes;   /* device memory: buffers plus the plans' own */
} sparcl_ring_stats;

static inline void sparcl_ring_stats_init(sparcl_ring_stats *stats)
{
    if (stats) {
        sparcl_ring_stats zero = {0};
        *stats = zero;
        stats->struct_size = sizeof *stats;
    }
}

/* Fills *stats (not collective).  Errors: SPARCL_ERR_INVALID_ARGUMENT for
 * NULL or a struct_size other than this header's. */
SPARCL_MPI_API sparcl_status sparcl_ring_get_stats(const sparcl_ring *ring,
                                                   sparcl_ring_stats *stats);

#ifdef __cplusplus
}
#endif
#endif /* SPARCL_MPI_H */
