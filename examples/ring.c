/*
 * ring.c -- ring attention over MPI with libsparcl_mpi: one sequence split
 * over the ranks, a causal sliding window, forward and backward.
 *
 *   mpirun -np 4 ./sparcl-ring-example [N] [window]
 *   mpirun -np 4 --hostfile hosts ./sparcl-ring-example 65536 1024
 *
 * Each rank makes only its own shard of q, k, v and dout, drawn from the
 * token's global position, so the inputs -- and the printed checksums --
 * are the same whatever the number of ranks: run it with 1 and with 4
 * ranks and compare.  Each rank prints what its calls cost.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ring_setup.h"

/* A value in [-1, 1) from (tensor, batch*head, position, column). */
static float value_at(unsigned tensor, long bh, long pos, long col)
{
    unsigned long long x = tensor * 0x9E3779B97F4A7C15ull ^ (unsigned long long)bh << 48 ^
                           (unsigned long long)pos << 16 ^ (unsigned long long)col;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *shard(unsigned tensor, int heads, int start, int len, int dim)
{
    float *x = malloc(sizeof *x * (size_t)heads * (size_t)len * (size_t)dim);
    for (int h = 0; h < heads; ++h)
        for (int i = 0; i < len; ++i)
            for (int c = 0; c < dim; ++c)
                x[((size_t)h * len + i) * dim + c] = value_at(tensor, h, start + i, c);
    return x;
}

static double sum(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; ++i)
        s += x[i];
    return s;
}

int main(int argc, char **argv)
{
    int rank, ranks;
    ring_setup_mpi(&argc, &argv, &rank, &ranks);
    const int n = argc > 1 ? atoi(argv[1]) : 4096;
    const int window = argc > 2 ? atoi(argv[2]) : 256;
    const int heads = 4, kv_heads = 2, dim = 64;

    sparcl_ctx *ctx = NULL;
    sparcl_layout *layout = NULL;
    sparcl_ring *ring = NULL;
    sparcl_status st = sparcl_ctx_init(&ctx);
    if (st == SPARCL_OK) /* every rank builds the same whole-sequence layout */
        st = sparcl_layout_init_window(ctx, &layout, 1, n, n, 64, window, 0);
    sparcl_plan_desc desc;
    ring_setup_desc(&desc, heads, kv_heads, n, dim, layout);
    /* A collective call: it fails on every rank or on none. */
    st = ring_setup_init(ctx, st, &desc, &ring);
    sparcl_layout_free(layout); /* the ring keeps what it needs */
    if (st != SPARCL_OK) {
        sparcl_ctx_free(ctx);
        MPI_Finalize();
        return 1;
    }

    int start, len;
    sparcl_ring_local(ring, &start, &len);
    const size_t nq = (size_t)heads * len * dim, nk = (size_t)kv_heads * len * dim;
    float *q = shard(1, heads, start, len, dim), *k = shard(2, kv_heads, start, len, dim),
          *v = shard(3, kv_heads, start, len, dim), *dout = shard(4, heads, start, len, dim);
    float *out = malloc(nq * sizeof *out), *lse = malloc((size_t)heads * len * sizeof *lse);
    float *dq = malloc(nq * sizeof *dq), *dk = malloc(nk * sizeof *dk),
          *dv = malloc(nk * sizeof *dv);

    sparcl_ring_stats fs, bs;
    sparcl_ring_stats_init(&fs);
    sparcl_ring_stats_init(&bs);
    st = sparcl_ring_forward(ring, q, k, v, out, lse);
    sparcl_ring_get_stats(ring, &fs);
    if (st == SPARCL_OK) {
        st = sparcl_ring_backward(ring, q, k, v, out, lse, dout, dq, dk, dv);
        sparcl_ring_get_stats(ring, &bs);
    }
    if (st != SPARCL_OK)
        fprintf(stderr, "rank %d: %s\n", rank, sparcl_ctx_errmsg(ctx));
    else {
        printf("rank %d/%d tokens [%d, %d): forward %.3f s (%.0f%% waiting), backward %.3f s "
               "(%.0f%% waiting), %d of %d key shards, sent %.2f + %.2f MB\n",
               rank, ranks, start, start + len, fs.seconds,
               100 * fs.seconds_wait / fmax(fs.seconds, 1e-9), bs.seconds,
               100 * bs.seconds_wait / fmax(bs.seconds, 1e-9), fs.shards_computed, ranks,
               fs.bytes_sent / 1e6, bs.bytes_sent / 1e6);
        double local[4] = {sum(out, nq), sum(dq, nq), sum(dk, nk), sum(dv, nk)}, total[4];
        MPI_Reduce(local, total, 4, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0)
            printf("checksums (the same for any number of ranks): out %.6f dq %.6f dk %.6f "
                   "dv %.6f\n",
                   total[0], total[1], total[2], total[3]);
    }
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    sparcl_ring_free(ring);
    sparcl_ctx_free(ctx);
    MPI_Finalize();
    return st == SPARCL_OK ? 0 : 1;
}
