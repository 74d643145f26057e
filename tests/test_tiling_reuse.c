/*
 * test_tiling_reuse.c -- re-blocking a layout from a previous tiling
 * (layout/tiling.h, sparcl__tiling_build_from): the tile rows it copies must
 * leave every array exactly as a build from scratch makes it, and it must
 * copy the rows that did not change (else it saves nothing).  Internal
 * functions, linked from the library's objects; the last test makes plans
 * through desc.previous on the default device.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layout/tiling.h"
#include "plan/plan.h"
#include "plan/plan_tiles.h"
#include "runtime/ctx.h"
#include "sparcl.h"

/* A local pattern with partial and full blocks: a band from 40 keys back to
 * 8 ahead, thinned by a hash, 16 x 16 squares kept whole or dropped, and
 * the first 8 keys (sinks); two spots whose blocks stay FULL where a length
 * of 113 cuts them (a copy must still see that the tile there changes).  Rows from `redraw_from` on
 * use another hash (a layout that changed there). */
typedef struct pattern {
    int redraw_from;
} pattern;

static unsigned mix(unsigned x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

static int attends(void *user, int h, int i, int j)
{
    const pattern *p = user;
    const unsigned salt = i >= p->redraw_from ? 0x9e3779b9u : 0u;
    if (j < 8)
        return 1;
    if (i >= 104 && i < 128) /* sinks only: FULL blocks across q_len 113 */
        return 0;
    if (i >= 64 && i < 80 && j >= 96 && j < 120) /* FULL blocks across kv_len 113 */
        return 1;
    if (j < i - 40 || j > i + 8)
        return 0;
    if (mix((unsigned)(h * 1000003 + (i / 16) * 977 + (j / 16)) ^ salt) % 3 == 0)
        return 1; /* a whole 16 x 16 square */
    return mix((unsigned)(h * 7919 + i * 131 + j) ^ salt) % 4 != 0;
}

static sparcl_layout *make(int heads, int q_len, int kv_len, int block, int redraw_from)
{
    pattern p = {redraw_from};
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_predicate(NULL, &l, heads, q_len, kv_len, block, attends, &p),
                 SPARCL_OK);
    return l;
}

static void assert_same(const sparcl__tiling *a, const sparcl__tiling *b)
{
    cr_assert_eq(a->heads, b->heads);
    cr_assert_eq(a->ntr, b->ntr);
    cr_assert_eq(a->nnz, b->nnz);
    cr_assert_eq(a->n_masks, b->n_masks);
    cr_assert_eq(a->pairs, b->pairs);
    cr_assert(!memcmp(a->ptr, b->ptr, sizeof *a->ptr * (size_t)a->heads * (size_t)(a->ntr + 1)));
    cr_assert(!memcmp(a->col, b->col, sizeof *a->col * (size_t)a->nnz));
    cr_assert(!memcmp(a->mask, b->mask, sizeof *a->mask * (size_t)a->nnz));
    cr_assert(!memcmp(a->bits, b->bits,
                      sizeof *a->bits * (size_t)a->n_masks * (size_t)a->tm * (size_t)a->mw));
}

/* Tiles layout b (q_len x kv_len) from scratch and from a's tiling; asserts
 * they agree and returns the rows copied. */
static int64_t rebuild(const sparcl_layout *a, int qa, int ka, const sparcl_layout *b, int qb,
                       int kb, int causal, int tm, int tn, int tm_a, int tn_a)
{
    sparcl__tiling ta, fresh, from;
    cr_assert_eq(sparcl__tiling_build(NULL, a, qa, ka, causal, tm_a, tn_a, &ta), SPARCL_OK);
    cr_assert_eq(sparcl__tiling_build(NULL, b, qb, kb, causal, tm, tn, &fresh), SPARCL_OK);
    const sparcl__tiling_prev prev = {a, qa, ka, causal, &ta};
    cr_assert_eq(sparcl__tiling_build_from(NULL, b, qb, kb, causal, tm, tn, &prev, &from),
                 SPARCL_OK);
    assert_same(&fresh, &from);
    cr_assert_eq(fresh.rows_copied, 0);
    const int64_t copied = from.rows_copied;
    sparcl__tiling_free(&ta);
    sparcl__tiling_free(&fresh);
    sparcl__tiling_free(&from);
    return copied;
}

/* Lengths before and after: grown, shrunk, q alone, kv alone, the same. */
static const int lens[][4] = {{113, 113, 130, 130}, {300, 300, 250, 250}, {113, 300, 130, 300},
                              {17, 300, 17, 333},   {200, 200, 200, 200}, {1023, 1023, 1040, 1040}};
static const int tiles[][2] = {{8, 16}, {16, 8}, {4, 32}, {16, 16}, {1, 64}};
static const int blocks[] = {4, 8, 16, 32};

Test(tiling_reuse, copies_only_what_a_fresh_build_makes_the_same, .timeout = 300)
{
    int64_t copied_total = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; ++li)
        for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; ++bi)
            for (int causal = 0; causal < 2; ++causal) {
                const int qa = lens[li][0], ka = lens[li][1], qb = lens[li][2], kb = lens[li][3];
                /* the new layout changed from row 150 on (where it has one) */
                sparcl_layout *a = make(2, qa, ka, blocks[bi], 1 << 30);
                sparcl_layout *b = make(2, qb, kb, blocks[bi], 150);
                for (size_t ti = 0; ti < sizeof tiles / sizeof tiles[0]; ++ti) {
                    const int tm = tiles[ti][0], tn = tiles[ti][1];
                    const int64_t copied = rebuild(a, qa, ka, b, qb, kb, causal, tm, tn, tm, tn);
                    const int same_diagonal = ka - qa == kb - qb;
                    if (causal && !same_diagonal)
                        cr_assert_eq(copied, 0, "a moved causal diagonal changes every row");
                    else if (qb > 40 + tm)
                        /* the first tile row reaches key 8 + tm at most: it is
                         * the same in both, clear of both lengths */
                        cr_assert_gt(copied, 0, "lens %zu block %d tile %dx%d causal %d", li,
                                     blocks[bi], tm, tn, causal);
                    copied_total += copied;
                    /* another tile: nothing to copy, the same result */
                    cr_assert_eq(rebuild(a, qa, ka, b, qb, kb, causal, tm, tn, tm * 2, tn), 0);
                }
                sparcl_layout_free(a);
                sparcl_layout_free(b);
            }
    cr_assert_gt(copied_total, 0);
}

Test(tiling_reuse, an_unchanged_layout_is_copied_whole_and_a_changed_row_is_not, .timeout = 300)
{
    sparcl_layout *a = make(3, 500, 500, 8, 1 << 30);
    sparcl_layout *same = make(3, 500, 500, 8, 1 << 30);
    sparcl_layout *changed = make(3, 500, 500, 8, 200);
    for (size_t ti = 0; ti < sizeof tiles / sizeof tiles[0]; ++ti) {
        const int tm = tiles[ti][0], tn = tiles[ti][1], ntr = (500 + tm - 1) / tm;
        /* every row, but those whose blocks reach the last, clipped tile
         * column (500 is no multiple of tn here but 4) */
        const int64_t all = rebuild(a, 500, 500, same, 500, 500, 0, tm, tn, tm, tn);
        cr_assert_gt(all, (int64_t)3 * ntr * 8 / 10, "tile %dx%d: %lld of %d", tm, tn,
                     (long long)all, 3 * ntr);
        /* rows from 200 on drew other blocks: at most those before it */
        const int64_t some = rebuild(a, 500, 500, changed, 500, 500, 1, tm, tn, tm, tn);
        cr_assert_leq(some, (int64_t)3 * ((200 + tm - 1) / tm), "tile %dx%d", tm, tn);
        cr_assert_gt(some, 0);
    }
    sparcl_layout_free(a);
    sparcl_layout_free(same);
    sparcl_layout_free(changed);
}

Test(tiling_reuse, other_heads_or_block_size_copy_nothing, .timeout = 300)
{
    sparcl_layout *a = make(2, 300, 300, 8, 1 << 30);
    sparcl_layout *heads = make(1, 300, 300, 8, 1 << 30);
    sparcl_layout *block = make(2, 300, 300, 16, 1 << 30);
    cr_assert_eq(rebuild(a, 300, 300, heads, 300, 300, 0, 8, 16, 8, 16), 0);
    cr_assert_eq(rebuild(a, 300, 300, block, 300, 300, 0, 8, 16, 8, 16), 0);
    sparcl_layout_free(a);
    sparcl_layout_free(heads);
    sparcl_layout_free(block);
}

/* Through the public API: a plan for 17 more tokens of a causal sliding
 * window, made with desc.previous, copies most tile rows from the first
 * plan, and its forward is bit for bit the forward of a plan made without
 * it, and matches the double-precision definition.  Twice: with the tile
 * arrays used in place where the device shares host memory (POCL), and as
 * on a device that does not (copies, read back for the next plan). */
static void plan_from_previous(int in_place)
{
    enum { H = 2, D = 72, N0 = 1000, N = 1017, LEFT = 100 };
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    if (!in_place)
        ctx->limits.host_unified = CL_FALSE;
    sparcl_layout *l0 = NULL, *l1 = NULL;
    cr_assert_eq(sparcl_layout_init_window(ctx, &l0, 1, N0, N0, 16, LEFT, 0), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_window(ctx, &l1, 1, N, N, 16, LEFT, 0), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = d.kv_heads = H;
    d.head_dim = D;
    d.causal = 1;
    d.q_len = d.kv_len = N0;
    d.layout = l0;
    sparcl_plan *first = NULL, *with = NULL, *without = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &first, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    d.q_len = d.kv_len = N;
    d.layout = l1;
    cr_assert_eq(sparcl_plan_init(ctx, &without, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    d.previous = first;
    cr_assert_eq(sparcl_plan_init(ctx, &with, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    const sparcl__tiled *tw = sparcl__plan_tiled(with), *to = sparcl__plan_tiled(without);
    cr_assert(tw && to);
    cr_assert_eq(to->in_place.rows_copied, 0);
    if (!in_place)
        cr_assert(!tw->in_place.col && !tw->in_place.ptr, "arrays kept on a copying device");
    else if (ctx->limits.host_unified)
        cr_assert(tw->in_place.col && tw->in_place.ptr, "a device sharing host memory copied");
    /* every tile row but those reaching key 992 or beyond (the last tile
     * column of 1000 at a BLOCK_N dividing 16 ... 64) */
    const int ntr = tw->n_tile_rows;
    cr_assert_gt(tw->in_place.rows_copied, ntr * 8 / 10, "%lld of %d rows copied",
                 (long long)tw->in_place.rows_copied, ntr);

    const size_t n = (size_t)H * N * D;
    float *q = malloc(sizeof *q * n), *k = malloc(sizeof *k * n), *v = malloc(sizeof *v * n);
    float *o1 = malloc(sizeof *o1 * n), *o2 = malloc(sizeof *o2 * n);
    cr_assert(q && k && v && o1 && o2);
    unsigned seed = 12345u;
    for (size_t i = 0; i < n; ++i) {
        seed = seed * 1664525u + 1013904223u;
        q[i] = (float)((seed >> 8) / 8388608.0 - 1.0);
        k[i] = (float)((seed >> 9) / 4194304.0 - 1.0);
        v[i] = (float)((seed >> 10) / 2097152.0 - 1.0);
    }
    cr_assert_eq(sparcl_plan_forward_host(with, q, k, v, o1, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_forward_host(without, q, k, v, o2, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert(!memcmp(o1, o2, sizeof *o1 * n), "the copied rows changed the result");
    const double scale = 1.0 / sqrt((double)D);
    double worst = 0.0;
    for (int h = 0; h < H; ++h)
        for (int i = 0; i < N; i += 7) {
            const float *qi = q + ((size_t)h * N + (size_t)i) * D;
            const int j0 = i - LEFT > 0 ? i - LEFT : 0;
            double w[LEFT + 1], m = -INFINITY, sum = 0.0;
            for (int j = j0; j <= i; ++j) {
                const float *kj = k + ((size_t)h * N + (size_t)j) * D;
                double dot = 0.0;
                for (int c = 0; c < D; ++c)
                    dot += (double)qi[c] * kj[c];
                w[j - j0] = dot * scale;
                m = w[j - j0] > m ? w[j - j0] : m;
            }
            for (int j = j0; j <= i; ++j)
                sum += (w[j - j0] = exp(w[j - j0] - m));
            for (int c = 0; c < D; ++c) {
                double acc = 0.0;
                for (int j = j0; j <= i; ++j)
                    acc += w[j - j0] * v[((size_t)h * N + (size_t)j) * D + (size_t)c];
                const double err =
                    fabs(acc / sum - o1[((size_t)h * N + (size_t)i) * D + (size_t)c]);
                worst = err > worst ? err : worst;
            }
        }
    cr_assert_lt(worst, 1e-5, "max error %g against the definition", worst);
    free(q);
    free(k);
    free(v);
    free(o1);
    free(o2);
    sparcl_plan_free(with);
    sparcl_plan_free(without);
    sparcl_plan_free(first);
    sparcl_layout_free(l0);
    sparcl_layout_free(l1);
    sparcl_ctx_free(ctx);
}

Test(tiling_reuse, a_plan_copies_rows_from_desc_previous, .timeout = 600)
{
    plan_from_previous(1);
}

Test(tiling_reuse, a_plan_copies_rows_from_desc_previous_read_back, .timeout = 600)
{
    plan_from_previous(0);
}
