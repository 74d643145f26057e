/*
 * layout_rules.h -- the building blocks that the literature patterns are
 * made of, as sparcl__rule values for sparcl__layout_build().
 *
 * Every published pattern is a union of a few shapes (a band around the
 * diagonal, a band of tiles, stripes of key columns or query rows or
 * diagonals, a table of chosen tiles), sometimes intersected with the causal
 * half-plane.  Each shape here answers the three questions of a rule
 * (candidate block columns, block class, element predicate) exactly and in
 * time proportional to its answer; rule sets (union, intersection) combine
 * them.  Patterns and combinators then stay short and cannot disagree about
 * geometry.
 *
 * Coordinates: query i sits at key position pos(i) = i + (kv_len - q_len)
 * (bottom-right alignment).  Every classify() is exact for any block, not
 * only for the rule's own candidates, because a union asks all its parts.
 */
#ifndef SPARCL_LAYOUT_RULES_H
#define SPARCL_LAYOUT_RULES_H

#include "layout/layout.h"

/* An offset bound meaning "unbounded": far beyond any 2^30 length, yet safe
 * to add to positions and to multiply by a 2^10 block in int64. */
#define SPARCL__UNBOUNDED ((int64_t)1 << 40)

static inline int64_t sparcl__fdiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static inline int64_t sparcl__fmod(int64_t a, int64_t b)
{
    return a - sparcl__fdiv(a, b) * b;
}

/* The shape every rule needs. */
typedef struct sparcl__geom {
    int q_len, kv_len, block, nbr, nbc;
    int64_t off; /* kv_len - q_len */
} sparcl__geom;

void sparcl__geom_init(sparcl__geom *g, int q_len, int kv_len, int block);
/* The common start of every constructor: checks out (then sets *out to
 * NULL) and the shape, naming the wrong argument, and fills g. */
sparcl_status sparcl__layout_begin(sparcl_ctx *ctx, sparcl_layout **out, sparcl__geom *g,
                                   int heads, int q_len, int kv_len, int block);
/* Key positions [*p0, *p1] of the queries of block row br. */
void sparcl__geom_rows(const sparcl__geom *g, int br, int64_t *p0, int64_t *p1);
/* Keys [*j0, *j1] of block column bc. */
void sparcl__geom_cols(const sparcl__geom *g, int bc, int64_t *j0, int64_t *j1);

/* Appends the block columns holding keys [ja, jb] (clipped to the sequence)
 * to cols[n...], returns the new count.  Calls made with non-decreasing ja
 * (dir > 0, *edge starting at -1) or non-increasing jb (dir < 0, *edge
 * starting at nbc) never append a column twice. */
int sparcl__emit_keys(const sparcl__geom *g, int64_t ja, int64_t jb, int dir, int32_t *edge,
                      int32_t *cols, int n);

/* ---- Integer sets ------------------------------------------------------ */

/* A set of integers: periodic {x : a <= x mod period < b} when period > 0,
 * else n sorted, disjoint, non-adjacent intervals [lo[k], hi[k]). */
typedef struct sparcl__iset {
    int64_t period, a, b;
    int64_t n;
    int64_t *lo, *hi, *cum; /* cum[k] = total length of intervals < k (n + 1) */
} sparcl__iset;

/* From points (any order, duplicates allowed); each must lie in [min, max],
 * else SPARCL_ERR_INVALID_ARGUMENT naming `what`. */
sparcl_status sparcl__iset_points(sparcl_ctx *ctx, sparcl__iset *s, const int *pts, int n,
                                  int64_t min, int64_t max, const char *what);
/* From intervals [lo[k], hi[k]) (any order, may overlap; empty ones are
 * skipped). */
sparcl_status sparcl__iset_ranges(sparcl_ctx *ctx, sparcl__iset *s, const int64_t *lo,
                                  const int64_t *hi, int n);
void sparcl__iset_periodic(sparcl__iset *s, int64_t period, int64_t a, int64_t b);
void sparcl__iset_free(sparcl__iset *s);
/* |s ∩ [x0, x1]| */
int64_t sparcl__iset_count(const sparcl__iset *s, int64_t x0, int64_t x1);
/* The first interval of s ending after x: 1 and [*lo, *hi), or 0. */
int sparcl__iset_next(const sparcl__iset *s, int64_t x, int64_t *lo, int64_t *hi);

/* ---- Shapes ------------------------------------------------------------ */

/* Dilated band: i attends j iff d = j - pos(i) lies in [lo, hi] and is a
 * multiple of the head's dilation (dilation NULL: 1; per_head: one entry per
 * head, else dilation[0] for all). */
typedef struct sparcl__dband {
    sparcl__geom g;
    int64_t lo, hi;
    const int *dilation;
    int per_head;
} sparcl__dband;
sparcl__rule sparcl__dband_rule(const sparcl__dband *b);

/* Tile band: i attends j iff floor(j / tile) - floor(pos(i) / tile) lies in
 * [lo, hi] (bounds are clamped to +-2^31 by the rule). */
typedef struct sparcl__tband {
    sparcl__geom g;
    int64_t tile, lo, hi;
} sparcl__tband;
sparcl__rule sparcl__tband_rule(const sparcl__tband *b);

/* Stripes: i attends j iff x is in the head's set, where x is j (keys),
 * pos(i) (queries: those rows see every key) or pos(i) - j (diagonals).
 * sets[per_head ? h : 0]. */
enum { SPARCL__AXIS_KEY = 0, SPARCL__AXIS_QUERY = 1, SPARCL__AXIS_DIAG = 2 };
typedef struct sparcl__stripes {
    sparcl__geom g;
    int axis, per_head, nsets;
    const sparcl__iset *sets;
    int32_t *blocks; /* keys: block columns hit by each set */
    int64_t *bptr;   /* nsets + 1 */
} sparcl__stripes;
/* Fills s (and, for keys, its block lists).  Free with _stripes_free(). */
sparcl_status sparcl__stripes_init(sparcl_ctx *ctx, sparcl__stripes *s, const sparcl__geom *g,
                                   int axis, const sparcl__iset *sets, int nsets);
void sparcl__stripes_free(sparcl__stripes *s);
sparcl__rule sparcl__stripes_rule(const sparcl__stripes *s);

/* Tile table: i attends j iff floor(j / tile) is listed for the query tile
 * floor(pos(i) / tile): tab[((set * nqt) + q - qt0) * k + m], ascending,
 * padded with -1.  tile >= block, so a block row meets at most two query
 * tiles. */
typedef struct sparcl__ttable {
    sparcl__geom g;
    int64_t tile, qt0, nqt;
    int k, per_head;
    const int32_t *tab;
} sparcl__ttable;
sparcl__rule sparcl__ttable_rule(const sparcl__ttable *t);

/* ---- Rule sets ---------------------------------------------------------- */

#define SPARCL__SET_MAX 8

/* The union (or intersection) of up to SPARCL__SET_MAX rules.  A union
 * merges and de-duplicates the parts' candidates; an intersection takes the
 * first part's candidates, so put the sparsest part first. */
typedef struct sparcl__set_scratch {
    int32_t *stamp, *buf;
    int32_t tag;
} sparcl__set_scratch;

typedef struct sparcl__rule_set {
    sparcl__rule parts[SPARCL__SET_MAX];
    int n, intersect, nbc;
    sparcl__set_scratch *scratch;
} sparcl__rule_set;

sparcl_status sparcl__rule_set_init(sparcl_ctx *ctx, sparcl__rule_set *s, int nbc, int intersect);
void sparcl__rule_set_add(sparcl__rule_set *s, sparcl__rule r);
sparcl__rule sparcl__rule_set_rule(const sparcl__rule_set *s);
void sparcl__rule_set_free(sparcl__rule_set *s);

/* A de-duplicating column stamp for rules whose candidates can repeat. */
sparcl_status sparcl__scratch_init(sparcl_ctx *ctx, sparcl__set_scratch *s, int nbc);
void sparcl__scratch_free(sparcl__set_scratch *s);
/* Appends c to cols[n] unless already appended since the last _next(). */
static inline int sparcl__scratch_add(sparcl__set_scratch *s, int32_t c, int32_t *cols, int n)
{
    if (s->stamp[c] == s->tag)
        return n;
    s->stamp[c] = s->tag;
    cols[n] = c;
    return n + 1;
}
void sparcl__scratch_next(sparcl__set_scratch *s, int nbc);

#endif
