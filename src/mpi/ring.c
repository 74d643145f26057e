/*
 * ring.c -- the ring object of libsparcl_mpi: checking a descriptor on
 * every rank and agreeing on it, slicing the layout to this rank's
 * (query shard, key shard) pairs, one plan per attended pair, and the
 * exchange of which pairs those are.  The calls are ring_forward.c and
 * ring_backward.c.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpi/ring_internal.h"

SPARCL_MPI_API int sparcl_ring_shard_len(int len, int ranks, int rank)
{
    if (len < 0 || ranks < 1 || rank < 0 || rank >= ranks)
        return 0;
    return len / ranks + (rank < len % ranks);
}

SPARCL_MPI_API int sparcl_ring_shard_start(int len, int ranks, int rank)
{
    if (len < 0 || ranks < 1 || rank < 0 || rank >= ranks)
        return 0;
    int rem = len % ranks;
    return rank * (len / ranks) + (rank < rem ? rank : rem);
}

/* FNV-1a over bytes, folded into *h. */
static void fnv(uint64_t *h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; ++i) {
        *h ^= p[i];
        *h *= 1099511628211ull;
    }
}

/* A hash of everything a layout says (its shape and BSR contents). */
static uint64_t layout_hash(const sparcl_layout *l)
{
    uint64_t h = 1469598103934665603ull;
    if (!l)
        return h;
    sparcl_layout_bsr b;
    if (sparcl_layout_get_bsr(l, &b) != SPARCL_OK)
        return 0;
    int shape[4] = {b.heads, sparcl_layout_q_len(l), sparcl_layout_kv_len(l), b.block};
    fnv(&h, shape, sizeof shape);
    const size_t rows = (size_t)b.heads * (size_t)(b.block_rows + 1);
    fnv(&h, b.row_ptr, rows * sizeof *b.row_ptr);
    fnv(&h, b.col, (size_t)b.nnz * sizeof *b.col);
    fnv(&h, b.mask, (size_t)b.nnz * sizeof *b.mask);
    fnv(&h, b.bits, (size_t)b.n_masks * (size_t)b.words_per_mask * sizeof *b.bits);
    return h;
}

static uint64_t params_hash(const sparcl_params *p)
{
    uint64_t h = 1469598103934665603ull;
    if (!p)
        return h;
    fnv(&h, &p->count, sizeof p->count);
    for (int i = 0; i < p->count && i < SPARCL_PARAMS_MAX; ++i) {
        fnv(&h, p->item[i].name, strnlen(p->item[i].name, SPARCL_PARAM_NAME_MAX));
        fnv(&h, &p->item[i].value, sizeof p->item[i].value);
    }
    return h;
}

static int strides_zero(sparcl_strides s)
{
    return s.batch == 0 && s.head == 0 && s.seq == 0;
}

/* What this rank alone can say about the descriptor. */
static sparcl_status check_local(sparcl_ctx *ctx, const sparcl_plan_desc *d, size_t size, int ranks,
                                 sparcl_ring **out)
{
#define BAD(...) sparcl__ring_fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    if (!out)
        return BAD("sparcl_ring_init: out is NULL");
    if (!ctx)
        return BAD("sparcl_ring_init: ctx is NULL");
    if (!d)
        return BAD("sparcl_ring_init: desc is NULL");
    if (size < sizeof(size_t) || size > sizeof *d)
        return BAD("sparcl_ring_init: desc.struct_size %zu is not that of a sparcl_plan_desc "
                   "(use sparcl_plan_desc_init)",
                   size);
    if (d->q_len != d->kv_len)
        return BAD("sparcl_ring_init: q_len %d and kv_len %d differ; a ring splits one sequence "
                   "(self-attention)",
                   d->q_len, d->kv_len);
    if (d->q_len < ranks)
        return BAD("sparcl_ring_init: q_len %d is shorter than the %d ranks (each rank needs a "
                   "token)",
                   d->q_len, ranks);
    if (!strides_zero(d->q_strides) || !strides_zero(d->k_strides) || !strides_zero(d->v_strides) ||
        !strides_zero(d->o_strides))
        return BAD("sparcl_ring_init: strides must be zero (the ring takes contiguous arrays)");
    if (d->normalization != 0 || d->attention != 0 || d->dtype != 0 || d->page_size != 0)
        return BAD("sparcl_ring_init: only softmax, exact attention, F32 and unpaged K/V are "
                   "supported (normalization %d, attention %d, dtype %d, page_size %d)",
                   d->normalization, d->attention, d->dtype, d->page_size);
    if (d->batch < 1 || d->q_heads < 1 || d->kv_heads < 1 || d->q_heads % d->kv_heads != 0 ||
        d->head_dim < 1 || d->head_dim > SPARCL_MAX_HEAD_DIM)
        return BAD("sparcl_ring_init: batch %d, q_heads %d, kv_heads %d, head_dim %d are not a "
                   "valid shape",
                   d->batch, d->q_heads, d->kv_heads, d->head_dim);
    if (d->layout) {
        const sparcl_layout *l = d->layout;
        int h = sparcl_layout_heads(l);
        if ((h != 1 && h != d->q_heads) || sparcl_layout_q_len(l) != d->q_len ||
            sparcl_layout_kv_len(l) != d->kv_len)
            return BAD("sparcl_ring_init: the layout (%d heads, %d x %d) does not fit the "
                       "descriptor (%d q_heads, %d x %d)",
                       h, sparcl_layout_q_len(l), sparcl_layout_kv_len(l), d->q_heads, d->q_len,
                       d->kv_len);
    }
    /* Every message is one MPI count of floats. */
    int64_t shard = d->q_len / ranks + 1;
    int64_t elems = (int64_t)d->batch * (d->q_heads > d->kv_heads ? d->q_heads : d->kv_heads) *
                    shard * d->head_dim;
    if (elems > INT_MAX)
        return BAD("sparcl_ring_init: a shard of %lld floats exceeds one MPI message (2^31 - 1); "
                   "use more ranks",
                   (long long)elems);
    return SPARCL_OK;
#undef BAD
}

/* The ranks compare their descriptors field by field. */
static sparcl_status agree_fields(sparcl_ctx *ctx, MPI_Comm comm, const sparcl_plan_desc *d)
{
    enum { F = 11 };
    static const char *names[F] = {"batch",           "q_heads", "kv_heads",
                                   "q_len",           "kv_len",  "head_dim",
                                   "scale",           "causal",  "layout (NULL or not)",
                                   "layout contents", "params"};
    uint32_t scale_bits;
    memcpy(&scale_bits, &d->scale, sizeof scale_bits);
    uint64_t lh = layout_hash(d->layout), ph = params_hash(d->params);
    int64_t v[2 * F] = {d->batch,          d->q_heads,         d->kv_heads,         d->q_len,
                        d->kv_len,         d->head_dim,        (int64_t)scale_bits, d->causal != 0,
                        d->layout != NULL, (int64_t)(lh >> 1), (int64_t)(ph >> 1)};
    for (int i = 0; i < F; ++i)
        v[F + i] = -v[i];
    int64_t r[2 * F];
    MPI_Allreduce(v, r, 2 * F, MPI_INT64_T, MPI_MIN, comm);
    for (int i = 0; i < F; ++i)
        if (r[i] != -r[F + i]) {
            if (i >= 6 && i != 7 && i != 8)
                return sparcl__ring_fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                         "sparcl_ring_init: ranks disagree on %s", names[i]);
            return sparcl__ring_fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                     "sparcl_ring_init: ranks disagree on %s: from %lld to %lld",
                                     names[i], (long long)r[i], (long long)-r[F + i]);
        }
    return SPARCL_OK;
}

/* Cuts another rank's key shard j to the block columns this rank's
 * queries attend (a window needs only the edge of its neighbour), so that
 * only those rows travel: re-slices *slice and sets lo/hi. */
static sparcl_status narrow(sparcl_ring *ring, const sparcl_layout *parent, int j, int block,
                            sparcl_layout **slice)
{
    sparcl_layout_bsr b;
    sparcl_status st = sparcl_layout_get_bsr(*slice, &b);
    if (st != SPARCL_OK)
        return st;
    int32_t cmin = INT32_MAX, cmax = -1;
    for (int64_t e = 0; e < b.nnz; ++e) {
        cmin = b.col[e] < cmin ? b.col[e] : cmin;
        cmax = b.col[e] > cmax ? b.col[e] : cmax;
    }
    const int lo = cmin * block, len = ring->lens[j];
    const int hi = (int64_t)(cmax + 1) * block < len ? (cmax + 1) * block : len;
    if (lo == 0 && hi == len)
        return SPARCL_OK;
    sparcl_layout *cut = NULL;
    st = sparcl_layout_init_slice(ring->ctx, &cut, parent, ring->desc.causal, ring->start,
                                  ring->len, ring->starts[j] + lo, hi - lo, block);
    if (st != SPARCL_OK)
        return st;
    sparcl_layout_free(*slice);
    *slice = cut;
    ring->lo[ring->rank * ring->ranks + j] = lo;
    ring->hi[ring->rank * ring->ranks + j] = hi;
    return SPARCL_OK;
}

/* Slices and plans of this rank's row of pairs. */
static sparcl_status build_plans(sparcl_ring *ring)
{
    const sparcl_plan_desc *d = &ring->desc;
    sparcl_ctx *ctx = ring->ctx;
    const sparcl_layout *parent = d->layout;
    sparcl_layout *dense = NULL;
    int block = parent ? sparcl_layout_block(parent) : 64;
    sparcl_status st = SPARCL_OK;
    if (!parent) { /* dense: one FULL block per 1024 x 1024 tokens is all it takes */
        st = sparcl_layout_init_dense(ctx, &dense, 1, d->q_len, d->kv_len, 1024);
        parent = dense;
    }
    const int me = ring->rank * ring->ranks;
    for (int j = 0; st == SPARCL_OK && j < ring->ranks; ++j) {
        sparcl_layout *slice = NULL;
        ring->lo[me + j] = 0;
        ring->hi[me + j] = ring->lens[j];
        st = sparcl_layout_init_slice(ctx, &slice, parent, d->causal, ring->start, ring->len,
                                      ring->starts[j], ring->lens[j], block);
        if (st == SPARCL_OK && sparcl_layout_pairs(slice) > 0 && j != ring->rank)
            st = narrow(ring, parent, j, block, &slice);
        if (st == SPARCL_OK && sparcl_layout_pairs(slice) > 0) {
            sparcl_plan_desc pd = *d;
            pd.q_len = ring->len;
            pd.kv_len = ring->hi[me + j] - ring->lo[me + j];
            pd.causal = 0; /* folded into the slice */
            pd.layout = slice;
            st = sparcl_plan_init(ctx, &ring->plans[j], &pd);
            if (st == SPARCL_OK) {
                ring->need[ring->rank * ring->ranks + j] = 1;
                ring->plan_bytes += (int64_t)sparcl_plan_device_bytes(ring->plans[j]);
            }
        }
        sparcl_layout_free(slice);
    }
    sparcl_layout_free(dense);
    return st;
}

static sparcl_status alloc_ring(sparcl_ring *ring, int ranks)
{
    ring->starts = calloc((size_t)ranks, sizeof *ring->starts);
    ring->lens = calloc((size_t)ranks, sizeof *ring->lens);
    ring->need = calloc((size_t)ranks * (size_t)ranks, 1);
    ring->lo = calloc((size_t)ranks * (size_t)ranks, sizeof *ring->lo);
    ring->hi = calloc((size_t)ranks * (size_t)ranks, sizeof *ring->hi);
    ring->plans = calloc((size_t)ranks, sizeof *ring->plans);
    if (!ring->starts || !ring->lens || !ring->need || !ring->plans || !ring->lo || !ring->hi)
        return sparcl__ring_fail(ring->ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                 "sparcl_ring_init: cannot allocate the ring's tables");
    return SPARCL_OK;
}

SPARCL_MPI_API sparcl_status sparcl_ring_init(sparcl_ctx *ctx, MPI_Comm comm,
                                              const sparcl_plan_desc *desc, sparcl_ring **out)
{
    if (out)
        *out = NULL;
    int inited = 0, inter = 0, ranks = 0, rank = 0;
    MPI_Initialized(&inited);
    if (!inited)
        return sparcl__ring_fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                 "sparcl_ring_init: MPI is not initialized (call MPI_Init first)");
    if (comm == MPI_COMM_NULL)
        return sparcl__ring_fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                 "sparcl_ring_init: the communicator is MPI_COMM_NULL (no ranks)");
    MPI_Comm_test_inter(comm, &inter);
    if (inter)
        return sparcl__ring_fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                 "sparcl_ring_init: an intercommunicator cannot hold a ring");
    MPI_Comm_size(comm, &ranks);
    MPI_Comm_rank(comm, &rank);

    /* Read by struct_size as every versioned struct is; defaults beyond it. */
    sparcl_plan_desc full;
    sparcl_plan_desc_init(&full);
    if (desc && desc->struct_size >= sizeof(size_t) && desc->struct_size <= sizeof full) {
        memcpy(&full, desc, desc->struct_size);
        full.struct_size = sizeof full;
    }
    sparcl_status st =
        check_local(ctx, desc ? &full : NULL, desc ? desc->struct_size : 0, ranks, out);
    desc = &full;
    if ((st = sparcl__ring_agree(ctx, comm, st)) != SPARCL_OK)
        return st;
    if ((st = agree_fields(ctx, comm, desc)) != SPARCL_OK)
        return st;

    sparcl_ring *ring = calloc(1, sizeof *ring);
    if (!ring)
        st = sparcl__ring_fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "sparcl_ring_init: out of memory");
    else {
        ring->ctx = ctx;
        ring->comm = comm;
        ring->ranks = ranks;
        ring->rank = rank;
        ring->desc = *desc;
        sparcl_ring_stats_init(&ring->stats);
        st = alloc_ring(ring, ranks);
    }
    if (st == SPARCL_OK) {
        int64_t maxlen = 0;
        for (int p = 0; p < ranks; ++p) {
            ring->starts[p] = sparcl_ring_shard_start(desc->q_len, ranks, p);
            ring->lens[p] = sparcl_ring_shard_len(desc->q_len, ranks, p);
            maxlen = ring->lens[p] > maxlen ? ring->lens[p] : maxlen;
        }
        ring->start = ring->starts[rank];
        ring->len = ring->lens[rank];
        ring->q_elems = (int64_t)desc->batch * desc->q_heads * ring->len * desc->head_dim;
        ring->kv_max = (int64_t)desc->batch * desc->kv_heads * maxlen * desc->head_dim;
        st = build_plans(ring);
    }
    if ((st = sparcl__ring_agree(ctx, comm, st)) != SPARCL_OK) {
        sparcl_ring_free(ring);
        return st;
    }
    /* Every rank learns every rank's row of needed pairs and key ranges. */
    int *row = malloc(sizeof *row * 3 * (size_t)ranks);
    int *all = malloc(sizeof *all * 3 * (size_t)ranks * (size_t)ranks);
    st = row && all
             ? SPARCL_OK
             : sparcl__ring_fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "sparcl_ring_init: out of memory");
    if ((st = sparcl__ring_agree(ctx, comm, st)) == SPARCL_OK) {
        for (int j = 0; j < ranks; ++j) {
            row[3 * j] = ring->need[rank * ranks + j];
            row[3 * j + 1] = ring->lo[rank * ranks + j];
            row[3 * j + 2] = ring->hi[rank * ranks + j];
        }
        MPI_Allgather(row, 3 * ranks, MPI_INT, all, 3 * ranks, MPI_INT, comm);
        for (int x = 0; x < ranks * ranks; ++x) {
            ring->need[x] = (unsigned char)all[3 * x];
            ring->lo[x] = all[3 * x + 1];
            ring->hi[x] = all[3 * x + 2];
        }
    }
    free(row);
    free(all);
    if (st != SPARCL_OK) {
        sparcl_ring_free(ring);
        return st;
    }
    ring->desc.layout = NULL;
    ring->desc.params = NULL;
    ring->stats.ranks = ranks;
    ring->stats.rank = rank;
    *out = ring;
    return SPARCL_OK;
}

SPARCL_MPI_API void sparcl_ring_free(sparcl_ring *ring)
{
    if (!ring)
        return;
    if (ring->plans)
        for (int j = 0; j < ring->ranks; ++j)
            sparcl_plan_free(ring->plans[j]);
    free(ring->plans);
    free(ring->need);
    free(ring->lo);
    free(ring->hi);
    free(ring->starts);
    free(ring->lens);
    free(ring);
}

SPARCL_MPI_API void sparcl_ring_local(const sparcl_ring *ring, int *start, int *len)
{
    if (start)
        *start = ring ? ring->start : 0;
    if (len)
        *len = ring ? ring->len : 0;
}

SPARCL_MPI_API sparcl_status sparcl_ring_get_stats(const sparcl_ring *ring,
                                                   sparcl_ring_stats *stats)
{
    if (!ring || !stats || stats->struct_size != sizeof *stats)
        return sparcl__ring_fail(ring ? ring->ctx : NULL, SPARCL_ERR_INVALID_ARGUMENT,
                                 "sparcl_ring_get_stats: NULL ring or stats, or a struct_size "
                                 "other than sizeof(sparcl_ring_stats)");
    *stats = ring->stats;
    return SPARCL_OK;
}
