/*
 * layout_rules.c -- the shapes the literature patterns are made of (see
 * layout_rules.h): geometry helpers, integer sets, and the dilated band,
 * tile band, stripes and tile table rules.
 *
 * Each candidates() walks only what it returns; each classify() decides a
 * block from the ranges its rows and columns span, so FULL and EMPTY blocks
 * cost O(1) and only PARTIAL ones are evaluated element by element.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"
#include "layout/layout_rules.h"

#define MIN64(a, b) ((a) < (b) ? (a) : (b))
#define MAX64(a, b) ((a) > (b) ? (a) : (b))

void sparcl__geom_init(sparcl__geom *g, int q_len, int kv_len, int block)
{
    g->q_len = q_len;
    g->kv_len = kv_len;
    g->block = block;
    g->nbr = (int)(((int64_t)q_len + block - 1) / block);
    g->nbc = (int)(((int64_t)kv_len + block - 1) / block);
    g->off = (int64_t)kv_len - q_len;
}

sparcl_status sparcl__layout_begin(sparcl_ctx *ctx, sparcl_layout **out, sparcl__geom *g,
                                   int heads, int q_len, int kv_len, int block)
{
    if (!out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    sparcl_status st = sparcl__layout_check_shape(ctx, heads, q_len, kv_len, block);
    if (st == SPARCL_OK)
        sparcl__geom_init(g, q_len, kv_len, block);
    return st;
}

void sparcl__geom_rows(const sparcl__geom *g, int br, int64_t *p0, int64_t *p1)
{
    int64_t i0 = (int64_t)br * g->block;
    *p0 = i0 + g->off;
    *p1 = MIN64(i0 + g->block, g->q_len) - 1 + g->off;
}

void sparcl__geom_cols(const sparcl__geom *g, int bc, int64_t *j0, int64_t *j1)
{
    *j0 = (int64_t)bc * g->block;
    *j1 = MIN64(*j0 + g->block, g->kv_len) - 1;
}

int sparcl__emit_keys(const sparcl__geom *g, int64_t ja, int64_t jb, int dir, int32_t *edge,
                      int32_t *cols, int n)
{
    ja = MAX64(ja, 0);
    jb = MIN64(jb, (int64_t)g->kv_len - 1);
    if (ja > jb)
        return n;
    int32_t ca = (int32_t)(ja / g->block), cb = (int32_t)(jb / g->block);
    if (dir > 0) {
        for (int32_t c = MAX64(ca, *edge + 1); c <= cb; ++c)
            cols[n++] = c;
        *edge = MAX64(*edge, cb);
    } else {
        for (int32_t c = MIN64(cb, *edge - 1); c >= ca; --c)
            cols[n++] = c;
        *edge = MIN64(*edge, ca);
    }
    return n;
}

/* Element and block helpers shared by the shapes. */
static int64_t pos_of(const sparcl__geom *g, int i)
{
    return (int64_t)i + g->off;
}

/* The class of a block given how many of `total` candidates of one
 * coordinate are in. */
static int class_of(int64_t in, int64_t total)
{
    return in == 0 ? SPARCL__BLOCK_EMPTY : in == total ? SPARCL__BLOCK_FULL : SPARCL__BLOCK_PARTIAL;
}

/* ---- Integer sets ------------------------------------------------------ */

static int cmp_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

/* Sorts n [lo, hi) pairs in place and stores their merged union in s. */
static sparcl_status iset_from_pairs(sparcl_ctx *ctx, sparcl__iset *s, int64_t *pairs, int n)
{
    memset(s, 0, sizeof *s);
    qsort(pairs, (size_t)n, 2 * sizeof *pairs, cmp_pair);
    s->lo = malloc(sizeof *s->lo * (size_t)(n + 1));
    s->hi = malloc(sizeof *s->hi * (size_t)(n + 1));
    s->cum = malloc(sizeof *s->cum * (size_t)(n + 1));
    if (!s->lo || !s->hi || !s->cum) {
        sparcl__iset_free(s);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a position set");
    }
    s->cum[0] = 0;
    for (int k = 0; k < n; ++k) {
        int64_t lo = pairs[2 * k], hi = pairs[2 * k + 1];
        if (lo >= hi)
            continue;
        if (s->n > 0 && lo <= s->hi[s->n - 1]) { /* overlaps or touches the last one */
            if (hi > s->hi[s->n - 1]) {
                s->cum[s->n] += hi - s->hi[s->n - 1];
                s->hi[s->n - 1] = hi;
            }
            continue;
        }
        s->lo[s->n] = lo;
        s->hi[s->n] = hi;
        s->cum[s->n + 1] = s->cum[s->n] + (hi - lo);
        ++s->n;
    }
    return SPARCL_OK;
}

sparcl_status sparcl__iset_points(sparcl_ctx *ctx, sparcl__iset *s, const int *pts, int n,
                                  int64_t min, int64_t max, const char *what)
{
    memset(s, 0, sizeof *s);
    if (n < 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s count %d must be >= 0", what,
                            n);
    if (n > 0 && !pts)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL", what);
    for (int k = 0; k < n; ++k)
        if (pts[k] < min || pts[k] > max)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s %d (entry %d) must be in [%lld, %lld]", what, pts[k], k,
                                (long long)min, (long long)max);
    int64_t *pairs = malloc(sizeof *pairs * 2 * (size_t)(n + 1));
    if (!pairs)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a position set");
    for (int k = 0; k < n; ++k) {
        pairs[2 * k] = pts[k];
        pairs[2 * k + 1] = (int64_t)pts[k] + 1;
    }
    sparcl_status st = iset_from_pairs(ctx, s, pairs, n);
    free(pairs);
    return st;
}

sparcl_status sparcl__iset_ranges(sparcl_ctx *ctx, sparcl__iset *s, const int64_t *lo,
                                  const int64_t *hi, int n)
{
    int64_t *pairs = malloc(sizeof *pairs * 2 * (size_t)(n + 1));
    if (!pairs) {
        memset(s, 0, sizeof *s);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a position set");
    }
    for (int k = 0; k < n; ++k) {
        pairs[2 * k] = lo[k];
        pairs[2 * k + 1] = hi[k];
    }
    sparcl_status st = iset_from_pairs(ctx, s, pairs, n);
    free(pairs);
    return st;
}

void sparcl__iset_periodic(sparcl__iset *s, int64_t period, int64_t a, int64_t b)
{
    memset(s, 0, sizeof *s);
    s->period = period;
    s->a = a;
    s->b = b;
}

void sparcl__iset_free(sparcl__iset *s)
{
    if (!s)
        return;
    free(s->lo);
    free(s->hi);
    free(s->cum);
    memset(s, 0, sizeof *s);
}

/* Members below x; for periodic sets counted from an arbitrary origin,
 * which differences cancel. */
static int64_t iset_below(const sparcl__iset *s, int64_t x)
{
    if (s->period > 0) {
        int64_t in = sparcl__fmod(x, s->period) - s->a;
        in = in < 0 ? 0 : MIN64(in, s->b - s->a);
        return sparcl__fdiv(x, s->period) * (s->b - s->a) + in;
    }
    int64_t lo = 0, hi = s->n; /* number of intervals starting below x */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (s->lo[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 0;
    return s->cum[lo - 1] + MIN64(s->hi[lo - 1], x) - s->lo[lo - 1];
}

int64_t sparcl__iset_count(const sparcl__iset *s, int64_t x0, int64_t x1)
{
    if (x1 < x0)
        return 0;
    return iset_below(s, x1 + 1) - iset_below(s, x0);
}

int sparcl__iset_next(const sparcl__iset *s, int64_t x, int64_t *lo, int64_t *hi)
{
    if (s->period > 0) {
        if (s->b <= s->a)
            return 0;
        int64_t m = sparcl__fdiv(x - s->b, s->period) + 1;
        *lo = m * s->period + s->a;
        *hi = m * s->period + s->b;
        return 1;
    }
    int64_t a = 0, b = s->n; /* first interval with hi > x */
    while (a < b) {
        int64_t mid = a + (b - a) / 2;
        if (s->hi[mid] <= x)
            a = mid + 1;
        else
            b = mid;
    }
    if (a >= s->n)
        return 0;
    *lo = s->lo[a];
    *hi = s->hi[a];
    return 1;
}

/* ---- Dilated band ------------------------------------------------------ */

static int64_t dband_dilation(const sparcl__dband *b, int h)
{
    return b->dilation ? b->dilation[b->per_head ? h : 0] : 1;
}

static int dband_candidates(const void *self, int h, int br, int32_t *cols)
{
    const sparcl__dband *b = self;
    int64_t d = dband_dilation(b, h), p0, p1;
    sparcl__geom_rows(&b->g, br, &p0, &p1);
    /* Offsets that can reach a key of the sequence from some row. */
    int64_t lo = MAX64(b->lo, -p1), hi = MIN64(b->hi, (int64_t)b->g.kv_len - 1 - p0);
    int64_t kmin = -sparcl__fdiv(-lo, d), kmax = sparcl__fdiv(hi, d);
    int32_t edge = -1;
    if (kmin > kmax)
        return 0;
    if (p1 - p0 + 1 >= d) /* consecutive offsets' key ranges touch */
        return sparcl__emit_keys(&b->g, p0 + kmin * d, p1 + kmax * d, 1, &edge, cols, 0);
    int n = 0;
    for (int64_t k = kmin; k <= kmax; ++k)
        n = sparcl__emit_keys(&b->g, p0 + k * d, p1 + k * d, 1, &edge, cols, n);
    return n;
}

static int dband_classify(const void *self, int h, int br, int bc)
{
    const sparcl__dband *b = self;
    int64_t d = dband_dilation(b, h), p0, p1, j0, j1;
    sparcl__geom_rows(&b->g, br, &p0, &p1);
    sparcl__geom_cols(&b->g, bc, &j0, &j1);
    int64_t dmin = j0 - p1, dmax = j1 - p0;
    int64_t x = MAX64(dmin, b->lo), y = MIN64(dmax, b->hi);
    if (x > y || sparcl__fdiv(y, d) * d < x)
        return SPARCL__BLOCK_EMPTY;
    if ((d == 1 || dmin == dmax) && dmin >= b->lo && dmax <= b->hi)
        return SPARCL__BLOCK_FULL;
    return SPARCL__BLOCK_PARTIAL;
}

static int dband_attends(const void *self, int h, int i, int j)
{
    const sparcl__dband *b = self;
    int64_t x = (int64_t)j - pos_of(&b->g, i);
    return x >= b->lo && x <= b->hi && sparcl__fmod(x, dband_dilation(b, h)) == 0;
}

static void dband_row_span(const void *self, int h, int i, int64_t *j0, int64_t *j1)
{
    (void)h;
    const sparcl__dband *b = self;
    int64_t p = pos_of(&b->g, i);
    *j0 = p + b->lo;
    *j1 = p + b->hi + 1;
}

sparcl__rule sparcl__dband_rule(const sparcl__dband *b)
{
    /* Rows are one interval of keys only without dilation.  A block row's
     * queries reach keys [p0 + lo, p1 + hi], at most hi - lo + block wide,
     * so at most (hi - lo + block - 1) / block + 2 block columns. */
    sparcl__rule r = {
        b, dband_candidates, dband_classify, dband_attends, b->dilation ? NULL : dband_row_span, 0};
    if (b->g.block > 0 && b->hi >= b->lo)
        r.row_blocks_max = MIN64((b->hi - b->lo + b->g.block - 1) / b->g.block + 2, b->g.nbc);
    return r;
}

/* ---- Tile band --------------------------------------------------------- */

static int64_t tband_clamp(int64_t x)
{
    const int64_t lim = (int64_t)1 << 31;
    return x < -lim ? -lim : x > lim ? lim : x;
}

static int tband_candidates(const void *self, int h, int br, int32_t *cols)
{
    (void)h;
    const sparcl__tband *b = self;
    int64_t p0, p1, t = b->tile;
    sparcl__geom_rows(&b->g, br, &p0, &p1);
    int64_t ta = sparcl__fdiv(p0, t) + tband_clamp(b->lo);
    int64_t tb = sparcl__fdiv(p1, t) + tband_clamp(b->hi);
    int32_t edge = -1;
    if (ta > tb)
        return 0;
    return sparcl__emit_keys(&b->g, ta * t, (tb + 1) * t - 1, 1, &edge, cols, 0);
}

static int tband_classify(const void *self, int h, int br, int bc)
{
    (void)h;
    const sparcl__tband *b = self;
    int64_t p0, p1, j0, j1, t = b->tile;
    sparcl__geom_rows(&b->g, br, &p0, &p1);
    sparcl__geom_cols(&b->g, bc, &j0, &j1);
    int64_t dmin = sparcl__fdiv(j0, t) - sparcl__fdiv(p1, t);
    int64_t dmax = sparcl__fdiv(j1, t) - sparcl__fdiv(p0, t);
    if (dmax < b->lo || dmin > b->hi)
        return SPARCL__BLOCK_EMPTY;
    if (dmin >= b->lo && dmax <= b->hi)
        return SPARCL__BLOCK_FULL;
    return SPARCL__BLOCK_PARTIAL;
}

static int tband_attends(const void *self, int h, int i, int j)
{
    (void)h;
    const sparcl__tband *b = self;
    int64_t d = sparcl__fdiv(j, b->tile) - sparcl__fdiv(pos_of(&b->g, i), b->tile);
    return d >= b->lo && d <= b->hi;
}

sparcl__rule sparcl__tband_rule(const sparcl__tband *b)
{
    return (sparcl__rule){b, tband_candidates, tband_classify, tband_attends, NULL, 0};
}

/* ---- Stripes ----------------------------------------------------------- */

static const sparcl__iset *stripes_set(const sparcl__stripes *s, int h)
{
    return &s->sets[s->per_head ? h : 0];
}

sparcl_status sparcl__stripes_init(sparcl_ctx *ctx, sparcl__stripes *s, const sparcl__geom *g,
                                   int axis, const sparcl__iset *sets, int nsets)
{
    memset(s, 0, sizeof *s);
    s->g = *g;
    s->axis = axis;
    s->sets = sets;
    s->nsets = nsets;
    s->per_head = nsets > 1;
    if (axis != SPARCL__AXIS_KEY)
        return SPARCL_OK;
    /* Key stripes hit the same block columns in every block row: list them
     * once per set. */
    s->bptr = malloc(sizeof *s->bptr * (size_t)(nsets + 1));
    s->blocks = malloc(sizeof *s->blocks * (size_t)nsets * (size_t)g->nbc);
    if (!s->bptr || !s->blocks) {
        sparcl__stripes_free(s);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate stripe lists");
    }
    int64_t n = 0;
    for (int k = 0; k < nsets; ++k) {
        s->bptr[k] = n;
        int32_t edge = -1;
        int cnt = 0;
        int64_t lo, hi, x = 0;
        while (x < g->kv_len && edge < g->nbc - 1 && sparcl__iset_next(&sets[k], x, &lo, &hi)) {
            if (lo >= g->kv_len)
                break;
            cnt = sparcl__emit_keys(g, lo, hi - 1, 1, &edge, s->blocks + n, cnt);
            x = hi;
        }
        n += cnt;
    }
    s->bptr[nsets] = n;
    return SPARCL_OK;
}

void sparcl__stripes_free(sparcl__stripes *s)
{
    if (!s)
        return;
    free(s->blocks);
    free(s->bptr);
    s->blocks = NULL;
    s->bptr = NULL;
}

static int stripes_candidates(const void *self, int h, int br, int32_t *cols)
{
    const sparcl__stripes *s = self;
    const sparcl__iset *set = stripes_set(s, h);
    int64_t p0, p1;
    int n = 0;
    sparcl__geom_rows(&s->g, br, &p0, &p1);
    if (s->axis == SPARCL__AXIS_KEY) {
        int k = s->per_head ? h : 0;
        n = (int)(s->bptr[k + 1] - s->bptr[k]);
        memcpy(cols, s->blocks + s->bptr[k], sizeof *cols * (size_t)n);
    } else if (s->axis == SPARCL__AXIS_QUERY) {
        if (sparcl__iset_count(set, p0, p1) > 0)
            for (int c = 0; c < s->g.nbc; ++c)
                cols[n++] = c;
    } else { /* diagonal x = pos - j: walk x upwards, keys come downwards */
        int64_t lo, hi, x = p0 - (s->g.kv_len - 1);
        int32_t edge = s->g.nbc;
        while (x <= p1 && edge > 0 && sparcl__iset_next(set, x, &lo, &hi) && lo <= p1) {
            int64_t xa = MAX64(lo, x), xb = MIN64(hi - 1, p1);
            n = sparcl__emit_keys(&s->g, p0 - xb, p1 - xa, -1, &edge, cols, n);
            x = hi;
        }
    }
    return n;
}

static int stripes_classify(const void *self, int h, int br, int bc)
{
    const sparcl__stripes *s = self;
    const sparcl__iset *set = stripes_set(s, h);
    int64_t p0, p1, j0, j1, x0, x1;
    sparcl__geom_rows(&s->g, br, &p0, &p1);
    sparcl__geom_cols(&s->g, bc, &j0, &j1);
    if (s->axis == SPARCL__AXIS_KEY)
        x0 = j0, x1 = j1;
    else if (s->axis == SPARCL__AXIS_QUERY)
        x0 = p0, x1 = p1;
    else
        x0 = p0 - j1, x1 = p1 - j0;
    return class_of(sparcl__iset_count(set, x0, x1), x1 - x0 + 1);
}

static int stripes_attends(const void *self, int h, int i, int j)
{
    const sparcl__stripes *s = self;
    int64_t p = pos_of(&s->g, i);
    int64_t x = s->axis == SPARCL__AXIS_KEY ? j : s->axis == SPARCL__AXIS_QUERY ? p : p - j;
    return sparcl__iset_count(stripes_set(s, h), x, x) > 0;
}

sparcl__rule sparcl__stripes_rule(const sparcl__stripes *s)
{
    return (sparcl__rule){s, stripes_candidates, stripes_classify, stripes_attends, NULL, 0};
}

/* ---- Tile table -------------------------------------------------------- */

/* The listed key tiles of query tile q (k entries, -1 padded), or NULL. */
static const int32_t *ttable_row(const sparcl__ttable *t, int h, int64_t q)
{
    if (q < t->qt0 || q >= t->qt0 + t->nqt)
        return NULL;
    int64_t set = t->per_head ? h : 0;
    return t->tab + ((set * t->nqt) + q - t->qt0) * t->k;
}

static int ttable_lists(const sparcl__ttable *t, int64_t key_tile, const int32_t *row)
{
    for (int m = 0; row && m < t->k && row[m] >= 0; ++m)
        if (row[m] == key_tile)
            return 1;
    return 0;
}

static int ttable_candidates(const void *self, int h, int br, int32_t *cols)
{
    const sparcl__ttable *t = self;
    int64_t p0, p1;
    sparcl__geom_rows(&t->g, br, &p0, &p1);
    int64_t q0 = sparcl__fdiv(p0, t->tile), q1 = sparcl__fdiv(p1, t->tile);
    const int32_t *a = ttable_row(t, h, q0), *b = q1 != q0 ? ttable_row(t, h, q1) : NULL;
    int ia = 0, ib = 0, n = 0;
    int32_t edge = -1;
    /* Merge the (at most two) ascending lists so key ranges come in order. */
    for (;;) {
        int32_t x = a && ia < t->k ? a[ia] : -1, y = b && ib < t->k ? b[ib] : -1;
        if (x < 0 && y < 0)
            break;
        int32_t kt;
        if (y < 0 || (x >= 0 && x <= y))
            kt = x, ++ia;
        else
            kt = y, ++ib;
        n = sparcl__emit_keys(&t->g, kt * t->tile, (kt + 1) * t->tile - 1, 1, &edge, cols, n);
    }
    return n;
}

static int ttable_classify(const void *self, int h, int br, int bc)
{
    const sparcl__ttable *t = self;
    int64_t p0, p1, j0, j1;
    sparcl__geom_rows(&t->g, br, &p0, &p1);
    sparcl__geom_cols(&t->g, bc, &j0, &j1);
    int64_t q0 = sparcl__fdiv(p0, t->tile), q1 = sparcl__fdiv(p1, t->tile);
    int64_t k0 = sparcl__fdiv(j0, t->tile), k1 = sparcl__fdiv(j1, t->tile);
    int64_t hits = 0;
    for (int64_t q = q0; q <= q1; ++q)
        for (int64_t kt = k0; kt <= k1; ++kt)
            hits += ttable_lists(t, kt, ttable_row(t, h, q));
    return class_of(hits, (q1 - q0 + 1) * (k1 - k0 + 1));
}

static int ttable_attends(const void *self, int h, int i, int j)
{
    const sparcl__ttable *t = self;
    int64_t q = sparcl__fdiv(pos_of(&t->g, i), t->tile);
    return ttable_lists(t, sparcl__fdiv(j, t->tile), ttable_row(t, h, q));
}

sparcl__rule sparcl__ttable_rule(const sparcl__ttable *t)
{
    return (sparcl__rule){t, ttable_candidates, ttable_classify, ttable_attends, NULL, 0};
}
