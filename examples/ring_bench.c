/*
 * ring_bench.c -- sparcl-ring-bench: what ring attention over MPI costs per
 * rank, for a causal sliding window or full causal attention over one long
 * sequence.
 *
 *   mpirun -np P sparcl-ring-bench window|causal N [window] [--backward]
 *
 * Rank 0 prints one line per rank and a summary: the slowest rank's time
 * (compare it with the 1-rank run divided by P), the share of it spent
 * waiting in MPI, the K/V bytes each rank received against the ideal (the keys
 * outside its own shard that its queries attend, token-exact, as K and V
 * floats), the host memory the ring held and the peak resident memory of
 * the process (on a CPU OpenCL device the device buffers live there too).
 * Inputs are random; only the cost is measured.  The forward's kernels
 * are built by the init; with --backward one warm-up forward and backward
 * run first, since the backward builds its kernels on its first call.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ring_setup.h"

static float *noise(size_t n, unsigned seed)
{
    float *x = malloc(n * sizeof *x);
    unsigned long long s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; x && i < n; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
    return x;
}

int main(int argc, char **argv)
{
    int rank, ranks;
    ring_setup_mpi(&argc, &argv, &rank, &ranks);
    if (argc < 3) {
        if (rank == 0)
            fprintf(stderr, "usage: sparcl-ring-bench window|causal N [window] [--backward]\n");
        MPI_Finalize();
        return 2;
    }
    const int is_window = strcmp(argv[1], "window") == 0;
    const int n = atoi(argv[2]);
    const int w = argc > 3 && argv[3][0] != '-' ? atoi(argv[3]) : 1024;
    const int backward = strcmp(argv[argc - 1], "--backward") == 0;
    const int heads = 2, kv_heads = 1, dim = 64;

    sparcl_ctx *ctx = NULL;
    sparcl_layout *layout = NULL;
    sparcl_ring *ring = NULL;
    sparcl_status st = sparcl_ctx_init(&ctx);
    if (st == SPARCL_OK && is_window)
        st = sparcl_layout_init_window(ctx, &layout, 1, n, n, 64, w, 0);
    sparcl_plan_desc desc;
    ring_setup_desc(&desc, heads, kv_heads, n, dim, layout);
    double t0 = MPI_Wtime();
    st = ring_setup_init(ctx, st, &desc, &ring);
    double t_init = MPI_Wtime() - t0;
    sparcl_layout_free(layout);
    if (st != SPARCL_OK) {
        MPI_Finalize();
        return 1;
    }
    int start, len;
    sparcl_ring_local(ring, &start, &len);
    const size_t nq = (size_t)heads * len * dim, nk = (size_t)kv_heads * len * dim;
    float *q = noise(nq, 1 + (unsigned)rank), *k = noise(nk, 100 + (unsigned)rank),
          *v = noise(nk, 200 + (unsigned)rank), *out = malloc(nq * 4),
          *lse = malloc((size_t)heads * len * 4);
    float *dq = backward ? malloc(nq * 4) : NULL, *dk = backward ? malloc(nk * 4) : NULL,
          *dv = backward ? malloc(nk * 4) : NULL;
    /* With --backward, a warm-up pair first (the backward's kernels are
     * built on its first call; the forward's were built by the init). */
    if (backward) {
        st = sparcl_ring_forward(ring, q, k, v, out, lse);
        if (st == SPARCL_OK)
            st = sparcl_ring_backward(ring, q, k, v, out, lse, q, dq, dk, dv);
    }
    sparcl_ring_stats f, b;
    sparcl_ring_stats_init(&f);
    sparcl_ring_stats_init(&b);
    if (st == SPARCL_OK) {
        st = sparcl_ring_forward(ring, q, k, v, out, lse);
        sparcl_ring_get_stats(ring, &f);
    }
    if (st == SPARCL_OK && backward) {
        st = sparcl_ring_backward(ring, q, k, v, out, lse, q, dq, dk, dv);
        sparcl_ring_get_stats(ring, &b);
    }
    if (st != SPARCL_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, sparcl_ctx_errmsg(ctx));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* On one rank, the unsplit plan too: what the ring's own overhead is. */
    double t_plain = 0;
    if (ranks == 1) {
        sparcl_layout *again = NULL;
        sparcl_plan *plan = NULL;
        if (is_window)
            sparcl_layout_init_window(ctx, &again, 1, n, n, 64, w, 0);
        desc.layout = again;
        if (sparcl_plan_init(ctx, &plan, &desc) == SPARCL_OK) {
            double t1 = MPI_Wtime();
            if (sparcl_plan_forward_host(plan, q, k, v, out, lse) == SPARCL_OK)
                t_plain = MPI_Wtime() - t1;
        }
        sparcl_plan_free(plan);
        sparcl_layout_free(again);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* The ideal: every foreign key this rank's queries attend, once. */
    const long foreign = is_window ? (start < w ? start : w) : start;
    const double ideal = 2.0 * foreign * kv_heads * dim * 4;
    double row[10] = {f.seconds,
                      f.seconds_wait,
                      (double)f.bytes_received,
                      ideal,
                      (double)f.bytes_ring,
                      (double)f.host_bytes,
                      ru.ru_maxrss / 1024.0,
                      b.seconds,
                      b.seconds_wait,
                      (double)b.bytes_sent};
    double *rows = rank == 0 ? malloc(sizeof *rows * 10 * (size_t)ranks) : NULL;
    MPI_Gather(row, 10, MPI_DOUBLE, rows, 10, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("%s N=%d w=%d, %d q heads / %d kv heads, head_dim %d, %d rank(s); init %.2f s\n",
               is_window ? "causal window" : "causal", n, is_window ? w : n, heads, kv_heads, dim,
               ranks, t_init);
        printf("rank  fwd_s  wait%%  recv_MB  ideal_MB  ring_MB  ring_host_MB  maxrss_MB%s\n",
               backward ? "  bwd_s  wait%  sent_MB" : "");
        double tmax = 0, wmax = 0, smax = 0, imax = 0, rss = 0, bmax = 0;
        for (int p = 0; p < ranks; ++p) {
            const double *x = rows + 10 * p;
            printf("%4d %6.2f %6.1f %8.2f %9.2f %8.2f %13.1f %10.1f", p, x[0],
                   100 * x[1] / fmax(x[0], 1e-9), x[2] / 1e6, x[3] / 1e6, x[4] / 1e6, x[5] / 1e6,
                   x[6]);
            if (backward)
                printf(" %6.2f %6.1f %8.2f", x[7], 100 * x[8] / fmax(x[7], 1e-9), x[9] / 1e6);
            printf("\n");
            tmax = fmax(tmax, x[0]);
            wmax = fmax(wmax, x[1] / fmax(x[0], 1e-9));
            smax = fmax(smax, x[2]);
            imax = fmax(imax, x[3]);
            rss = fmax(rss, x[6]);
            bmax = fmax(bmax, x[7]);
        }
        printf("summary: P=%d forward %.2f s (slowest rank), max wait %.0f%%, max received %.2f MB "
               "(ideal %.2f MB), max rss %.0f MB%s",
               ranks, tmax, 100 * wmax, smax / 1e6, imax / 1e6, rss, backward ? "" : "\n");
        if (backward)
            printf(", backward %.2f s\n", bmax);
        if (ranks == 1)
            printf("the unsplit sparcl plan's forward: %.2f s\n", t_plain);
        free(rows);
    }
    free(q), free(k), free(v), free(out), free(lse), free(dq), free(dk), free(dv);
    sparcl_ring_free(ring);
    sparcl_ctx_free(ctx);
    MPI_Finalize();
    return 0;
}
