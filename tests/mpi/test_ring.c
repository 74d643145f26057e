/*
 * test_ring.c -- libsparcl_mpi's ring attention against the single-process
 * library, run by CTest under mpirun with 2, 3 and 4 ranks (a plain MPI
 * program: Criterion forks its tests, which MPI does not survive).
 *
 * Every rank builds the whole problem from one seed, runs the unsplit
 * sparcl plan (forward and backward) itself, and compares the rows and
 * keys of its own shard with what the ring gave it.  One case is also
 * checked against the double-precision reference.  Bad input must fail
 * with the same status on every rank (and never hang: CTest's TIMEOUT
 * catches that).  Each rank counts its failures; the program exits 1 when
 * any rank saw one.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparcl_mpi.h"

static int rank, ranks, failures;
static sparcl_ctx *ctx;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            ++failures;                                                                            \
            fprintf(stderr, "[rank %d] %s:%d: ", rank, __FILE__, __LINE__);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

static float *randn(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return x;
}

/* The sequence rows [start, start + len) of a [B, H, N, D] array. */
static float *rows_of(const float *full, int B, int H, int N, int D, int start, int len)
{
    float *out = malloc((size_t)B * H * len * D * sizeof *out + 1);
    for (int bh = 0; bh < B * H; ++bh)
        memcpy(out + (size_t)bh * len * D, full + ((size_t)bh * N + start) * D,
               (size_t)len * D * sizeof *out);
    return out;
}

/* max |a - b| / max(1, max |b|) over n elements. */
static double rel_err(const float *a, const float *b, size_t n)
{
    double m = 0, scale = 1;
    for (size_t i = 0; i < n; ++i) {
        double e = fabs((double)a[i] - b[i]);
        if (isinf(b[i]) && a[i] == b[i])
            e = 0;
        m = e > m || isnan(e) ? e : m;
        scale = fabs(b[i]) > scale && isfinite(b[i]) ? fabs(b[i]) : scale;
    }
    return m / scale;
}

typedef struct problem {
    const char *name;
    int B, Hq, Hkv, N, D, causal;
    const sparcl_layout *layout;
    int expect_skips; /* with >= 3 ranks some shard must be skipped */
    int check_double; /* also compare with the double reference */
} problem;

static void run_case(const problem *p)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = p->B;
    d.q_heads = p->Hq;
    d.kv_heads = p->Hkv;
    d.q_len = d.kv_len = p->N;
    d.head_dim = p->D;
    d.causal = p->causal;
    d.layout = p->layout;
    const size_t nq = (size_t)p->B * p->Hq * p->N * p->D, nk = (size_t)p->B * p->Hkv * p->N * p->D;
    const size_t rows = (size_t)p->B * p->Hq * p->N;
    float *q = randn(nq, 1), *k = randn(nk, 2), *v = randn(nk, 3), *dout = randn(nq, 4);
    float *out = malloc(nq * 4), *lse = malloc(rows * 4), *dq = malloc(nq * 4),
          *dk = malloc(nk * 4), *dv = malloc(nk * 4);

    /* The single-process result of the whole sequence. */
    sparcl_plan *plan = NULL;
    sparcl_status st = sparcl_plan_init(ctx, &plan, &d);
    CHECK(st == SPARCL_OK, "%s: plan: %s", p->name, sparcl_ctx_errmsg(ctx));
    if (st == SPARCL_OK) {
        st = sparcl_plan_forward_host(plan, q, k, v, out, lse);
        CHECK(st == SPARCL_OK, "%s: forward: %s", p->name, sparcl_ctx_errmsg(ctx));
        st = sparcl_plan_backward_host(plan, q, k, v, out, lse, dout, dq, dk, dv);
        CHECK(st == SPARCL_OK, "%s: backward: %s", p->name, sparcl_ctx_errmsg(ctx));
    }
    sparcl_plan_free(plan);

    sparcl_ring *ring = NULL;
    st = sparcl_ring_init(ctx, MPI_COMM_WORLD, &d, &ring);
    CHECK(st == SPARCL_OK, "%s: ring init: %s", p->name, sparcl_ctx_errmsg(ctx));
    if (st != SPARCL_OK)
        goto done;
    int start, len;
    sparcl_ring_local(ring, &start, &len);
    CHECK(start == sparcl_ring_shard_start(p->N, ranks, rank) &&
              len == sparcl_ring_shard_len(p->N, ranks, rank),
          "%s: shard [%d, +%d)", p->name, start, len);
    float *lq = rows_of(q, p->B, p->Hq, p->N, p->D, start, len),
          *lk = rows_of(k, p->B, p->Hkv, p->N, p->D, start, len),
          *lv = rows_of(v, p->B, p->Hkv, p->N, p->D, start, len),
          *ldo = rows_of(dout, p->B, p->Hq, p->N, p->D, start, len);
    float *eo = rows_of(out, p->B, p->Hq, p->N, p->D, start, len),
          *el = rows_of(lse, p->B, p->Hq, p->N, 1, start, len),
          *edq = rows_of(dq, p->B, p->Hq, p->N, p->D, start, len),
          *edk = rows_of(dk, p->B, p->Hkv, p->N, p->D, start, len),
          *edv = rows_of(dv, p->B, p->Hkv, p->N, p->D, start, len);
    const size_t lnq = (size_t)p->B * p->Hq * len * p->D, lnk = (size_t)p->B * p->Hkv * len * p->D,
                 lrows = (size_t)p->B * p->Hq * len;
    float *ro = malloc(lnq * 4), *rl = malloc(lrows * 4), *rdq = malloc(lnq * 4),
          *rdk = malloc(lnk * 4), *rdv = malloc(lnk * 4);
    st = sparcl_ring_forward(ring, lq, lk, lv, ro, rl);
    CHECK(st == SPARCL_OK, "%s: ring forward: %s", p->name, sparcl_ctx_errmsg(ctx));
    if (st == SPARCL_OK) {
        double eo_ = rel_err(ro, eo, lnq), el_ = rel_err(rl, el, lrows);
        CHECK(eo_ < 1e-5 && el_ < 1e-5, "%s: forward out err %.3g, lse err %.3g", p->name, eo_,
              el_);
    }
    sparcl_ring_stats stats;
    sparcl_ring_stats_init(&stats);
    CHECK(sparcl_ring_get_stats(ring, &stats) == SPARCL_OK, "stats");
    CHECK(stats.shards_computed + stats.shards_skipped == ranks, "%s: shard counts", p->name);
    if (p->expect_skips && ranks >= 3) {
        int total = 0;
        MPI_Allreduce(&stats.shards_skipped, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        CHECK(total > 0, "%s: no rank skipped a shard", p->name);
        long long mine[2] = {stats.bytes_sent, stats.bytes_ring}, sum[2];
        MPI_Allreduce(mine, sum, 2, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        CHECK(sum[0] < sum[1], "%s: the ranks sent %lld bytes, a plain ring %lld", p->name, sum[0],
              sum[1]);
    }
    st = sparcl_ring_backward(ring, lq, lk, lv, ro, rl, ldo, rdq, rdk, rdv);
    CHECK(st == SPARCL_OK, "%s: ring backward: %s", p->name, sparcl_ctx_errmsg(ctx));
    if (st == SPARCL_OK) {
        double a = rel_err(rdq, edq, lnq), b = rel_err(rdk, edk, lnk), c = rel_err(rdv, edv, lnk);
        CHECK(a < 1e-4 && b < 1e-4 && c < 1e-4, "%s: backward err dq %.3g dk %.3g dv %.3g", p->name,
              a, b, c);
    }
    if (p->check_double && st == SPARCL_OK) {
        double *xo = malloc(nq * 8), *xl = malloc(rows * 8), *xq = malloc(nq * 8),
               *xk = malloc(nk * 8), *xv = malloc(nk * 8);
        CHECK(sparcl_reference_forward(ctx, &d, q, k, v, xo, xl) == SPARCL_OK &&
                  sparcl_reference_backward(ctx, &d, q, k, v, dout, xq, xk, xv) == SPARCL_OK,
              "reference: %s", sparcl_ctx_errmsg(ctx));
        double mo = 0, mk = 0;
        for (int bh = 0; bh < p->B * p->Hq; ++bh)
            for (int i = 0; i < len * p->D; ++i) {
                size_t g = ((size_t)bh * p->N + start) * p->D + i, l = (size_t)bh * len * p->D + i;
                mo = fmax(mo, fabs(ro[l] - xo[g]));
            }
        for (int bh = 0; bh < p->B * p->Hkv; ++bh)
            for (int i = 0; i < len * p->D; ++i) {
                size_t g = ((size_t)bh * p->N + start) * p->D + i, l = (size_t)bh * len * p->D + i;
                mk = fmax(mk, fmax(fabs(rdk[l] - xk[g]), fabs(rdv[l] - xv[g])));
            }
        CHECK(mo < 1e-5 && mk < 1e-4, "%s: against double: out %.3g, dk/dv %.3g", p->name, mo, mk);
        free(xo), free(xl), free(xq), free(xk), free(xv);
    }
    free(lq), free(lk), free(lv), free(ldo), free(eo), free(el), free(edq), free(edk), free(edv);
    free(ro), free(rl), free(rdq), free(rdk), free(rdv);
    sparcl_ring_free(ring);
done:
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
}

/* Every rank must get `want`; the message must contain `text` on the rank
 * that caused it (or on all, when text_all). */
static void expect_all(const char *what, sparcl_status st, sparcl_status want, const char *text)
{
    CHECK(st == want, "%s: status %d, want %d (%s)", what, (int)st, (int)want,
          sparcl_ctx_errmsg(ctx));
    if (text)
        CHECK(strstr(sparcl_ctx_errmsg(ctx), text) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
              sparcl_ctx_errmsg(ctx), text);
}

/* One batch, `heads` query and kv heads, n tokens, head_dim 64. */
static sparcl_plan_desc small_desc(int heads, int n)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = 1;
    d.q_heads = d.kv_heads = heads;
    d.q_len = d.kv_len = n;
    d.head_dim = 64;
    return d;
}

static void bad_input(void)
{
    sparcl_plan_desc d = small_desc(1, 40);
    sparcl_ring *ring = NULL;

    /* Shapes that differ between ranks. */
    sparcl_plan_desc e = d;
    e.q_len = e.kv_len = rank == 0 ? 40 : 41;
    expect_all("shape", sparcl_ring_init(ctx, MPI_COMM_WORLD, &e, &ring),
               SPARCL_ERR_INVALID_ARGUMENT, "ranks disagree on q_len: from 40 to 41");
    CHECK(ring == NULL, "ring set after a failure");

    /* Layouts that differ between ranks (same shape). */
    sparcl_layout *w = NULL;
    sparcl_layout_init_window(ctx, &w, 1, 40, 40, 8, rank == ranks - 1 ? 5 : 4, 0);
    e = d;
    e.layout = w;
    expect_all("layout", sparcl_ring_init(ctx, MPI_COMM_WORLD, &e, &ring),
               SPARCL_ERR_INVALID_ARGUMENT, "ranks disagree on layout contents");
    sparcl_layout_free(w);

    /* A layout on some ranks only. */
    sparcl_layout *dense = NULL;
    sparcl_layout_init_dense(ctx, &dense, 1, 40, 40, 8);
    e = d;
    e.layout = rank == 0 ? dense : NULL;
    expect_all("layout presence", sparcl_ring_init(ctx, MPI_COMM_WORLD, &e, &ring),
               SPARCL_ERR_INVALID_ARGUMENT, "ranks disagree on layout (NULL or not)");
    sparcl_layout_free(dense);

    /* One rank's own argument is wrong: every rank fails, the others name it. */
    expect_all("NULL desc on rank 1",
               sparcl_ring_init(ctx, MPI_COMM_WORLD, rank == 1 ? NULL : &d, &ring),
               SPARCL_ERR_INVALID_ARGUMENT, rank == 1 ? "desc is NULL" : "rank 1 failed");

    /* Fewer tokens than ranks. */
    e = d;
    e.q_len = e.kv_len = ranks - 1;
    expect_all("too short", sparcl_ring_init(ctx, MPI_COMM_WORLD, &e, &ring),
               SPARCL_ERR_INVALID_ARGUMENT, "shorter than");

    /* No communicator at all. */
    expect_all("MPI_COMM_NULL", sparcl_ring_init(ctx, MPI_COMM_NULL, &d, &ring),
               SPARCL_ERR_INVALID_ARGUMENT, "MPI_COMM_NULL");

    /* A call with a NULL array on one rank fails on all of them. */
    sparcl_status st = sparcl_ring_init(ctx, MPI_COMM_WORLD, &d, &ring);
    CHECK(st == SPARCL_OK, "good init: %s", sparcl_ctx_errmsg(ctx));
    if (st == SPARCL_OK) {
        int len;
        sparcl_ring_local(ring, NULL, &len);
        float *x = calloc((size_t)len * 64, sizeof *x), *o = malloc((size_t)len * 64 * 4);
        expect_all("NULL q on the last rank",
                   sparcl_ring_forward(ring, rank == ranks - 1 ? NULL : x, x, x, o, NULL),
                   SPARCL_ERR_INVALID_ARGUMENT, NULL);
        /* and the ring still works afterwards */
        CHECK(sparcl_ring_forward(ring, x, x, x, o, NULL) == SPARCL_OK, "after: %s",
              sparcl_ctx_errmsg(ctx));
        free(x), free(o);
        sparcl_ring_free(ring);
    }
}

/* A one-rank ring (MPI_COMM_SELF) on every rank equals the local plan. */
static void self_ring(void)
{
    sparcl_plan_desc d = small_desc(2, 17);
    d.causal = 1;
    size_t n = 2 * 17 * 64;
    float *q = randn(n, 7), *o = malloc(n * 4), *e = malloc(n * 4);
    sparcl_plan *plan = NULL;
    sparcl_ring *ring = NULL;
    CHECK(sparcl_plan_init(ctx, &plan, &d) == SPARCL_OK &&
              sparcl_plan_forward_host(plan, q, q, q, e, NULL) == SPARCL_OK,
          "self plan: %s", sparcl_ctx_errmsg(ctx));
    CHECK(sparcl_ring_init(ctx, MPI_COMM_SELF, &d, &ring) == SPARCL_OK &&
              sparcl_ring_forward(ring, q, q, q, o, NULL) == SPARCL_OK,
          "self ring: %s", sparcl_ctx_errmsg(ctx));
    CHECK(rel_err(o, e, n) < 1e-6, "self ring differs: %.3g", rel_err(o, e, n));
    sparcl_ring_free(ring);
    sparcl_plan_free(plan);
    free(q), free(o), free(e);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (sparcl_ctx_init(&ctx) != SPARCL_OK) {
        fprintf(stderr, "[rank %d] no context: %s\n", rank, sparcl_ctx_errmsg(NULL));
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    sparcl_layout *win = NULL, *bb = NULL, *ph = NULL, *parts[2] = {NULL, NULL};
    sparcl_layout_init_window(ctx, &win, 1, 113, 113, 16, 12, 5);
    sparcl_bigbird_desc bd;
    sparcl_bigbird_desc_init(&bd);
    bd.random = 1;
    sparcl_layout_init_bigbird(ctx, &bb, 2, 113, 113, 8, &bd);
    sparcl_layout_init_causal(ctx, &parts[0], 1, 100, 100, 16);
    sparcl_layout_init_window(ctx, &parts[1], 1, 100, 100, 16, 7, 7);
    sparcl_layout_init_per_head(ctx, &ph, (const sparcl_layout *const *)parts, 2);
    const problem cases[] = {
        {"dense", 1, 2, 2, 113, 64, 0, NULL, 0, 1},
        {"causal GQA", 2, 4, 2, 113, 72, 1, NULL, 0, 0},
        {"window", 1, 2, 1, 113, 64, 0, win, 1, 0},
        {"window + causal", 1, 1, 1, 113, 72, 1, win, 1, 0},
        {"BigBird", 1, 2, 2, 113, 64, 0, bb, 0, 0},
        {"per-head causal|window", 1, 2, 1, 100, 64, 0, ph, 0, 0},
        {"short dense", 2, 1, 1, 17, 64, 0, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i)
        run_case(&cases[i]);
    sparcl_layout_free(win);
    sparcl_layout_free(bb);
    sparcl_layout_free(ph);
    sparcl_layout_free(parts[0]);
    sparcl_layout_free(parts[1]);
    bad_input();
    self_ring();

    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_ring: %d ranks, %zu cases, %d failures\n", ranks, sizeof cases / sizeof *cases,
               total);
    sparcl_ctx_free(ctx);
    MPI_Finalize();
    return total ? 1 : 0;
}
