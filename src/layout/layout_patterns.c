/*
 * layout_patterns.c -- the published sparse-attention patterns (dilated
 * window, global tokens and blocks, strided and fixed from the Sparse
 * Transformer, BigBird, Longformer, streaming / A-shape, vertical-slash).
 *
 * Each generator validates its parameters at the API boundary, then
 * expresses its definition (see sparcl.h) as a union of the shapes of
 * layout_rules.h, intersected with the causal half-plane when asked, and
 * hands that to the builder.  The only state of its own is BigBird's table
 * of random blocks, drawn here with a splitmix64 stream.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"
#include "layout/layout_rules.h"
#include "runtime/struct_size.h"

#define FAIL_ARG(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* The common checks of every generator: out, then the shape. */
static sparcl_status check_nonneg(sparcl_ctx *ctx, const char *name, int v)
{
    return v < 0 ? FAIL_ARG("%s %d must be >= 0", name, v) : SPARCL_OK;
}

/* NULL or `heads` dilations >= 1. */
static sparcl_status check_dilation(sparcl_ctx *ctx, const int *dilation, int heads)
{
    for (int h = 0; dilation && h < heads; ++h)
        if (dilation[h] < 1)
            return FAIL_ARG("dilation[%d] %d must be >= 1", h, dilation[h]);
    return SPARCL_OK;
}

/* Builds the union of parts[0..n), intersected with j <= pos(i) if
 * causal. */
static sparcl_status build_union(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                 const sparcl__geom *g, const sparcl__rule *parts, int n,
                                 int causal)
{
    sparcl__rule_set any, all;
    sparcl__dband past = {*g, -SPARCL__UNBOUNDED, 0, NULL, 0};
    memset(&all, 0, sizeof all);
    sparcl_status st = sparcl__rule_set_init(ctx, &any, g->nbc, 0);
    if (st == SPARCL_OK && causal)
        st = sparcl__rule_set_init(ctx, &all, g->nbc, 1);
    if (st == SPARCL_OK) {
        for (int k = 0; k < n; ++k)
            sparcl__rule_set_add(&any, parts[k]);
        sparcl__rule rule = sparcl__rule_set_rule(&any);
        if (causal) {
            sparcl__rule_set_add(&all, rule);
            sparcl__rule_set_add(&all, sparcl__dband_rule(&past));
            rule = sparcl__rule_set_rule(&all);
        }
        st = sparcl__layout_build(ctx, out, heads, g->q_len, g->kv_len, g->block, &rule);
    }
    sparcl__rule_set_free(&any);
    sparcl__rule_set_free(&all);
    return st;
}

/* Key and query stripes over one set: the global-token shape. */
typedef struct globals {
    sparcl__stripes keys, queries;
} globals;

static sparcl_status globals_init(sparcl_ctx *ctx, globals *gl, const sparcl__geom *g,
                                  const sparcl__iset *set, int with_queries, sparcl__rule *parts,
                                  int *n)
{
    memset(gl, 0, sizeof *gl);
    sparcl_status st = sparcl__stripes_init(ctx, &gl->keys, g, SPARCL__AXIS_KEY, set, 1);
    if (st != SPARCL_OK)
        return st;
    parts[(*n)++] = sparcl__stripes_rule(&gl->keys);
    if (with_queries) {
        sparcl__stripes_init(ctx, &gl->queries, g, SPARCL__AXIS_QUERY, set, 1);
        parts[(*n)++] = sparcl__stripes_rule(&gl->queries);
    }
    return SPARCL_OK;
}

static void globals_free(globals *gl)
{
    sparcl__stripes_free(&gl->keys);
    sparcl__stripes_free(&gl->queries);
}

/* The global blocks [0, first) and [nb - last, nb) as a set of keys. */
static sparcl_status global_block_set(sparcl_ctx *ctx, sparcl__iset *set, const sparcl__geom *g,
                                      int first, int last)
{
    int64_t nb = g->nbc, f = first < nb ? first : nb, l = last < nb ? last : nb;
    int64_t lo[2] = {0, (nb - l) * g->block}, hi[2] = {f * g->block, g->kv_len};
    return sparcl__iset_ranges(ctx, set, lo, hi, 2);
}

/* ---- Window family ----------------------------------------------------- */

SPARCL_API sparcl_status sparcl_layout_init_dilated_window(sparcl_ctx *ctx, sparcl_layout **out,
                                                           int heads, int q_len, int kv_len,
                                                           int block, int left, int right,
                                                           const int *dilation)
{
    sparcl__geom g;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "window left", left);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "window right", right);
    if (st == SPARCL_OK)
        st = check_dilation(ctx, dilation, heads);
    if (st != SPARCL_OK)
        return st;
    sparcl__dband band = {g, -(int64_t)left, right, dilation, heads > 1};
    sparcl__rule rule = sparcl__dband_rule(&band);
    return sparcl__layout_build(ctx, out, heads, q_len, kv_len, block, &rule);
}

SPARCL_API sparcl_status sparcl_layout_init_streaming(sparcl_ctx *ctx, sparcl_layout **out,
                                                      int heads, int q_len, int kv_len, int block,
                                                      int sink, int local)
{
    sparcl__geom g;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "sink", sink);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "local", local);
    if (st != SPARCL_OK)
        return st;
    sparcl__dband band = {g, -(int64_t)local, 0, NULL, 0};
    sparcl__rule parts[2] = {sparcl__dband_rule(&band)};
    int n = 1;
    sparcl__iset sinks;
    int64_t lo = 0, hi = sink < kv_len ? sink : kv_len;
    globals gl;
    st = sparcl__iset_ranges(ctx, &sinks, &lo, &hi, 1);
    if (st == SPARCL_OK)
        st = globals_init(ctx, &gl, &g, &sinks, 0, parts, &n);
    if (st == SPARCL_OK) {
        st = build_union(ctx, out, heads, &g, parts, n, 1);
        globals_free(&gl);
    }
    sparcl__iset_free(&sinks);
    if (st == SPARCL_OK)
        sparcl__layout_set_follow(*out, (int)hi, local, 0);
    return st;
}

SPARCL_API sparcl_status sparcl_layout_init_strided(sparcl_ctx *ctx, sparcl_layout **out,
                                                    int heads, int q_len, int kv_len, int block,
                                                    int stride, int causal)
{
    sparcl__geom g;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st != SPARCL_OK)
        return st;
    if (stride < 1)
        return FAIL_ARG("stride %d must be >= 1", stride);
    /* Both shapes stop at the diagonal when causal, so no future block is
     * even proposed. */
    int64_t hi = causal ? 0 : SPARCL__UNBOUNDED;
    sparcl__dband local = {g, -(int64_t)stride, causal ? 0 : stride, NULL, 0};
    sparcl__dband every = {g, -SPARCL__UNBOUNDED, hi, &stride, 0};
    sparcl__rule parts[2] = {sparcl__dband_rule(&local), sparcl__dband_rule(&every)};
    return build_union(ctx, out, heads, &g, parts, 2, 0);
}

/* ---- Global tokens and blocks ------------------------------------------ */

static sparcl_status build_globals(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                   const sparcl__geom *g, const sparcl__iset *set, int causal)
{
    sparcl__rule parts[2];
    int n = 0;
    globals gl;
    sparcl_status st = globals_init(ctx, &gl, g, set, 1, parts, &n);
    if (st != SPARCL_OK)
        return st;
    st = build_union(ctx, out, heads, g, parts, n, causal);
    globals_free(&gl);
    return st;
}

SPARCL_API sparcl_status sparcl_layout_init_global(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                   int q_len, int kv_len, int block,
                                                   const int *positions, int count, int causal)
{
    sparcl__geom g;
    sparcl__iset set;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK)
        st = sparcl__iset_points(ctx, &set, positions, count, 0, kv_len - 1, "global position");
    if (st != SPARCL_OK)
        return st;
    st = build_globals(ctx, out, heads, &g, &set, causal);
    sparcl__iset_free(&set);
    return st;
}

SPARCL_API sparcl_status sparcl_layout_init_global_blocks(sparcl_ctx *ctx, sparcl_layout **out,
                                                          int heads, int q_len, int kv_len,
                                                          int block, int first, int last,
                                                          int causal)
{
    sparcl__geom g;
    sparcl__iset set;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "global first", first);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "global last", last);
    if (st == SPARCL_OK)
        st = global_block_set(ctx, &set, &g, first, last);
    if (st != SPARCL_OK)
        return st;
    st = build_globals(ctx, out, heads, &g, &set, causal);
    sparcl__iset_free(&set);
    return st;
}

/* ---- Fixed ------------------------------------------------------------- */

/* The _init_sized function of a pattern descriptor T, from its defaults,
 * and T_read, the library's full copy of a caller's T (struct_size.h).
 * Every field is in the oldest layout so far, so min = the full size. */
#define SIZED_DESC(T, defaults)                                                                    \
    SPARCL_API sparcl_status T##_init_sized(T *desc, size_t size)                                  \
    {                                                                                              \
        T d;                                                                                       \
        defaults(&d);                                                                              \
        d.struct_size = size;                                                                      \
        return sparcl__struct_init(desc, size, &d, sizeof d, sizeof d, #T);                        \
    }                                                                                              \
    static sparcl_status T##_read(sparcl_ctx *ctx, const T *in, T *out)                            \
    {                                                                                              \
        defaults(out);                                                                             \
        return sparcl__struct_read(ctx, in, out, sizeof *out, sizeof *out, #T);                    \
    }

static void fixed_defaults(sparcl_fixed_desc *d)
{
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    d->stride = 128;
    d->summary = 16;
    d->patterns = 1;
    d->horizontal = 0;
    d->causal = 1;
}

SIZED_DESC(sparcl_fixed_desc, fixed_defaults)

static sparcl_status check_fixed(sparcl_ctx *ctx, const sparcl_fixed_desc *d)
{
    if (!d)
        return FAIL_ARG("desc is NULL");
    if (d->stride < 1)
        return FAIL_ARG("fixed stride %d must be >= 1", d->stride);
    if (d->summary < 0 || d->summary > d->stride)
        return FAIL_ARG("fixed summary %d must be in [0, stride %d]", d->summary, d->stride);
    if (d->patterns < 1)
        return FAIL_ARG("fixed patterns %d must be >= 1", d->patterns);
    if ((int64_t)d->patterns * d->summary > d->stride)
        return FAIL_ARG("fixed patterns %d x summary %d exceeds stride %d", d->patterns,
                        d->summary, d->stride);
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_layout_init_fixed(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                  int q_len, int kv_len, int block,
                                                  const sparcl_fixed_desc *d)
{
    sparcl__geom g;
    sparcl_fixed_desc copy;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK && d)
        st = sparcl_fixed_desc_read(ctx, d, &copy), d = &copy;
    if (st == SPARCL_OK)
        st = check_fixed(ctx, d);
    if (st != SPARCL_OK)
        return st;
    int nsets = d->patterns > 1 ? heads : 1;
    sparcl__iset *sets = calloc((size_t)nsets, sizeof *sets);
    if (!sets)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate summary sets");
    for (int h = 0; h < nsets; ++h) {
        int64_t slot = h % d->patterns, l = d->stride, c = d->summary;
        sparcl__iset_periodic(&sets[h], l, l - (slot + 1) * c, l - slot * c);
    }
    sparcl__tband window = {g, d->stride, 0, 0};
    sparcl__stripes cols, rows;
    memset(&rows, 0, sizeof rows);
    sparcl__rule parts[3] = {sparcl__tband_rule(&window)};
    int n = 1;
    st = sparcl__stripes_init(ctx, &cols, &g, SPARCL__AXIS_KEY, sets, nsets);
    if (st == SPARCL_OK) {
        if (d->summary > 0)
            parts[n++] = sparcl__stripes_rule(&cols);
        if (d->summary > 0 && d->horizontal) {
            sparcl__stripes_init(ctx, &rows, &g, SPARCL__AXIS_QUERY, sets, nsets);
            parts[n++] = sparcl__stripes_rule(&rows);
        }
        st = build_union(ctx, out, heads, &g, parts, n, d->causal);
    }
    sparcl__stripes_free(&cols);
    sparcl__stripes_free(&rows);
    free(sets);
    return st;
}

/* ---- BigBird ----------------------------------------------------------- */

static void bigbird_defaults(sparcl_bigbird_desc *d)
{
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    d->window = 1;
    d->global_first = 1;
    d->global_last = 1;
    d->random = 3;
    d->per_head = 1;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Draws the random blocks of query block q into row[0..r), ascending,
 * padded with -1: min(r, A) distinct blocks among the A not excluded. */
SIZED_DESC(sparcl_bigbird_desc, bigbird_defaults)

static void draw_random(const sparcl_bigbird_desc *d, int64_t nb, int64_t set, int64_t q,
                        int32_t *row, int64_t *pick)
{
    int64_t w = d->window, r = d->random;
    /* Excluded blocks as inclusive intervals, merged in ascending order. */
    int64_t ex[3][2] = {{q - w, d->causal ? nb - 1 : q + w},
                        {0, (int64_t)d->global_first - 1},
                        {nb - d->global_last, nb - 1}};
    qsort(ex, 3, sizeof ex[0], cmp_i64);
    int64_t merged[4][2], nm = 0, covered = 0;
    for (int k = 0; k < 3; ++k) {
        int64_t a = ex[k][0] < 0 ? 0 : ex[k][0], b = ex[k][1] > nb - 1 ? nb - 1 : ex[k][1];
        if (a > b)
            continue;
        if (nm && a <= merged[nm - 1][1] + 1) {
            if (b > merged[nm - 1][1])
                merged[nm - 1][1] = b;
        } else {
            merged[nm][0] = a, merged[nm][1] = b, ++nm;
        }
    }
    for (int k = 0; k < nm; ++k)
        covered += merged[k][1] - merged[k][0] + 1;
    int64_t avail = nb - covered, m = r < avail ? r : avail;
    uint64_t state = d->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(set + 1)) ^
                     (0x8CB92BA72F3D8DD7ull * (uint64_t)(q + 1));
    /* Floyd's sampling: m distinct ranks in [0, avail). */
    for (int64_t t = avail - m, n = 0; t < avail; ++t, ++n) {
        int64_t x = (int64_t)(splitmix64(&state) % (uint64_t)(t + 1)), dup = 0;
        for (int64_t k = 0; k < n; ++k)
            dup |= pick[k] == x;
        pick[n] = dup ? t : x;
    }
    qsort(pick, (size_t)m, sizeof *pick, cmp_i64);
    for (int64_t k = 0; k < r; ++k) {
        if (k >= m) {
            row[k] = -1;
            continue;
        }
        int64_t b = pick[k]; /* rank -> block: skip the excluded intervals */
        for (int e = 0; e < nm; ++e)
            if (b >= merged[e][0])
                b += merged[e][1] - merged[e][0] + 1;
        row[k] = (int32_t)b;
    }
}

static sparcl_status check_bigbird(sparcl_ctx *ctx, const sparcl_bigbird_desc *d)
{
    if (!d)
        return FAIL_ARG("desc is NULL");
    sparcl_status st = check_nonneg(ctx, "bigbird window", d->window);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "bigbird global_first", d->global_first);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "bigbird global_last", d->global_last);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "bigbird random", d->random);
    return st;
}

SPARCL_API sparcl_status sparcl_layout_init_bigbird(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                    int q_len, int kv_len, int block,
                                                    const sparcl_bigbird_desc *d)
{
    sparcl__geom g;
    sparcl_bigbird_desc copy;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK && d)
        st = sparcl_bigbird_desc_read(ctx, d, &copy), d = &copy;
    if (st == SPARCL_OK)
        st = check_bigbird(ctx, d);
    if (st != SPARCL_OK)
        return st;
    int64_t nb = g.nbc, r = d->random < nb ? d->random : nb;
    int64_t nsets = d->per_head ? heads : 1;
    /* Query blocks below 0 (q_len > kv_len) draw nothing: not stored. */
    int64_t qt0 = sparcl__fdiv(g.off, block) > 0 ? sparcl__fdiv(g.off, block) : 0;
    sparcl__ttable table = {g, block, qt0, nb - qt0, (int)r, d->per_head != 0, NULL};
    if (r > 0 && (double)nsets * (double)table.nqt * (double)r > (double)((int64_t)1 << 31))
        return FAIL_ARG("bigbird random %d x %lld heads x %lld blocks exceeds 2^31 entries",
                        d->random, (long long)nsets, (long long)table.nqt);
    int32_t *tab = NULL;
    int64_t *pick = NULL;
    if (r > 0) {
        tab = malloc(sizeof *tab * (size_t)(nsets * table.nqt * r));
        pick = malloc(sizeof *pick * (size_t)r);
        if (!tab || !pick) {
            free(tab);
            free(pick);
            return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate random blocks");
        }
        sparcl_bigbird_desc dr = *d;
        dr.random = (int)r;
        for (int64_t s = 0; s < nsets; ++s)
            for (int64_t q = table.qt0; q < nb; ++q)
                draw_random(&dr, nb, s, q, tab + (s * table.nqt + q - table.qt0) * r, pick);
        free(pick);
        table.tab = tab;
    }
    sparcl__tband window = {g, block, -(int64_t)d->window, d->window};
    sparcl__rule parts[4] = {sparcl__tband_rule(&window)};
    int n = 1;
    if (r > 0)
        parts[n++] = sparcl__ttable_rule(&table);
    sparcl__iset set;
    globals gl;
    st = global_block_set(ctx, &set, &g, d->global_first, d->global_last);
    if (st == SPARCL_OK) {
        st = globals_init(ctx, &gl, &g, &set, 1, parts, &n);
        if (st == SPARCL_OK) {
            st = build_union(ctx, out, heads, &g, parts, n, d->causal);
            globals_free(&gl);
        }
        sparcl__iset_free(&set);
    }
    free(tab);
    return st;
}

/* ---- Longformer -------------------------------------------------------- */

static void longformer_defaults(sparcl_longformer_desc *d)
{
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    d->left = 256;
    d->right = 256;
}

SIZED_DESC(sparcl_longformer_desc, longformer_defaults)

SPARCL_API sparcl_status sparcl_layout_init_longformer(sparcl_ctx *ctx, sparcl_layout **out,
                                                       int heads, int q_len, int kv_len, int block,
                                                       const sparcl_longformer_desc *d)
{
    sparcl__geom g;
    sparcl__iset set;
    sparcl_longformer_desc copy;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK && !d)
        st = FAIL_ARG("desc is NULL");
    if (st == SPARCL_OK)
        st = sparcl_longformer_desc_read(ctx, d, &copy), d = &copy;
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "window left", d->left);
    if (st == SPARCL_OK)
        st = check_nonneg(ctx, "window right", d->right);
    if (st == SPARCL_OK)
        st = check_dilation(ctx, d->dilation, heads);
    if (st == SPARCL_OK)
        st = sparcl__iset_points(ctx, &set, d->global, d->n_global, 0, kv_len - 1,
                                 "global position");
    if (st != SPARCL_OK)
        return st;
    sparcl__dband band = {g, -(int64_t)d->left, d->right, d->dilation, heads > 1};
    sparcl__rule parts[3] = {sparcl__dband_rule(&band)};
    int n = 1;
    globals gl;
    memset(&gl, 0, sizeof gl);
    if (d->n_global > 0)
        st = globals_init(ctx, &gl, &g, &set, 1, parts, &n);
    if (st == SPARCL_OK)
        st = build_union(ctx, out, heads, &g, parts, n, d->causal);
    globals_free(&gl);
    sparcl__iset_free(&set);
    return st;
}

/* ---- Vertical-slash ---------------------------------------------------- */

static void vertical_slash_defaults(sparcl_vertical_slash_desc *d)
{
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    d->causal = 1;
}

SIZED_DESC(sparcl_vertical_slash_desc, vertical_slash_defaults)

/* One set per head (counts given) or one shared set, from concatenated
 * lists; *nsets receives how many. */
static sparcl_status vs_sets(sparcl_ctx *ctx, sparcl__iset **out, int *nsets, int heads,
                             const int *list, const int *counts, int n_shared, int64_t min,
                             int64_t max, const char *what)
{
    *nsets = counts ? heads : 1;
    *out = calloc((size_t)*nsets, sizeof **out);
    if (!*out)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate %s sets", what);
    int64_t at = 0;
    sparcl_status st = SPARCL_OK;
    for (int h = 0; h < *nsets && st == SPARCL_OK; ++h) {
        int n = counts ? counts[h] : n_shared;
        if (n < 0 || at + n > INT32_MAX)
            st = FAIL_ARG("%s count %d (head %d) must be in [0, 2^31 - total]", what, n, h);
        else
            st = sparcl__iset_points(ctx, &(*out)[h], list ? list + at : NULL, n, min, max, what);
        at += n;
    }
    return st;
}

static void free_sets(sparcl__iset *sets, int n)
{
    for (int k = 0; sets && k < n; ++k)
        sparcl__iset_free(&sets[k]);
    free(sets);
}

SPARCL_API sparcl_status sparcl_layout_init_vertical_slash(sparcl_ctx *ctx, sparcl_layout **out,
                                                           int heads, int q_len, int kv_len,
                                                           int block,
                                                           const sparcl_vertical_slash_desc *d)
{
    sparcl__geom g;
    sparcl_vertical_slash_desc copy;
    sparcl_status st = sparcl__layout_begin(ctx, out, &g, heads, q_len, kv_len, block);
    if (st == SPARCL_OK && !d)
        st = FAIL_ARG("desc is NULL");
    if (st == SPARCL_OK)
        st = sparcl_vertical_slash_desc_read(ctx, d, &copy), d = &copy;
    if (st != SPARCL_OK)
        return st;
    sparcl__iset *cols = NULL, *diags = NULL;
    int ncols = 0, ndiags = 0;
    sparcl__stripes vs, ss;
    memset(&vs, 0, sizeof vs);
    st = vs_sets(ctx, &cols, &ncols, heads, d->columns, d->column_counts, d->n_columns, 0,
                 kv_len - 1, "vertical column");
    if (st == SPARCL_OK)
        st = vs_sets(ctx, &diags, &ndiags, heads, d->offsets, d->offset_counts, d->n_offsets,
                     1 - (int64_t)q_len, kv_len - 1, "slash offset");
    if (st == SPARCL_OK)
        st = sparcl__stripes_init(ctx, &vs, &g, SPARCL__AXIS_KEY, cols, ncols);
    if (st == SPARCL_OK) {
        sparcl__stripes_init(ctx, &ss, &g, SPARCL__AXIS_DIAG, diags, ndiags);
        sparcl__rule parts[2] = {sparcl__stripes_rule(&vs), sparcl__stripes_rule(&ss)};
        st = build_union(ctx, out, heads, &g, parts, 2, d->causal);
    }
    sparcl__stripes_free(&vs);
    free_sets(cols, ncols);
    free_sets(diags, ndiags);
    return st;
}
