/*
 * layout_combine.c -- combining patterns: rule sets (union and
 * intersection of rules, used by every literature pattern), existing
 * layouts read back as rules, and the public combinators built on them
 * (union, intersection, per-head assembly).
 *
 * Combining at the rule level keeps the cost O(result): a union asks each
 * part for its candidates and merges them, and a block that one part calls
 * FULL is never evaluated element by element.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"
#include "layout/layout_rules.h"

/* ---- Scratch column stamps -------------------------------------------- */

sparcl_status sparcl__scratch_init(sparcl_ctx *ctx, sparcl__set_scratch *s, int nbc)
{
    s->tag = 1;
    s->stamp = calloc((size_t)nbc + 1, sizeof *s->stamp);
    s->buf = malloc(sizeof *s->buf * ((size_t)nbc + 1));
    if (!s->stamp || !s->buf) {
        sparcl__scratch_free(s);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate column scratch");
    }
    return SPARCL_OK;
}

void sparcl__scratch_free(sparcl__set_scratch *s)
{
    free(s->stamp);
    free(s->buf);
    s->stamp = s->buf = NULL;
}

void sparcl__scratch_next(sparcl__set_scratch *s, int nbc)
{
    if (++s->tag == INT32_MAX) { /* never in practice; keep stamps valid */
        memset(s->stamp, 0, sizeof *s->stamp * (size_t)nbc);
        s->tag = 1;
    }
}

/* ---- Rule sets --------------------------------------------------------- */

sparcl_status sparcl__rule_set_init(sparcl_ctx *ctx, sparcl__rule_set *s, int nbc, int intersect)
{
    memset(s, 0, sizeof *s);
    s->nbc = nbc;
    s->intersect = intersect;
    s->scratch = malloc(sizeof *s->scratch);
    if (!s->scratch)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a rule set");
    sparcl_status st = sparcl__scratch_init(ctx, s->scratch, nbc);
    if (st != SPARCL_OK) {
        free(s->scratch);
        s->scratch = NULL;
    }
    return st;
}

void sparcl__rule_set_add(sparcl__rule_set *s, sparcl__rule r)
{
    if (s->n < SPARCL__SET_MAX) /* callers add a fixed, small number of parts */
        s->parts[s->n++] = r;
}

void sparcl__rule_set_free(sparcl__rule_set *s)
{
    if (!s || !s->scratch)
        return;
    sparcl__scratch_free(s->scratch);
    free(s->scratch);
    s->scratch = NULL;
}

static int set_candidates(const void *self, int h, int br, int32_t *cols)
{
    const sparcl__rule_set *s = self;
    if (s->intersect || s->n == 1)
        return s->n ? s->parts[0].candidates(s->parts[0].self, h, br, cols) : 0;
    sparcl__set_scratch *x = s->scratch;
    sparcl__scratch_next(x, s->nbc);
    int n = 0;
    for (int p = 0; p < s->n; ++p) {
        int m = s->parts[p].candidates(s->parts[p].self, h, br, x->buf);
        for (int k = 0; k < m; ++k)
            n = sparcl__scratch_add(x, x->buf[k], cols, n);
    }
    return n;
}

static int set_classify(const void *self, int h, int br, int bc)
{
    const sparcl__rule_set *s = self;
    int full = 0, empty = 0;
    for (int p = 0; p < s->n; ++p) {
        const sparcl__rule *r = &s->parts[p];
        int c = r->classify ? r->classify(r->self, h, br, bc) : SPARCL__BLOCK_PARTIAL;
        full += c == SPARCL__BLOCK_FULL;
        empty += c == SPARCL__BLOCK_EMPTY;
    }
    if (s->intersect)
        return empty ? SPARCL__BLOCK_EMPTY
               : full == s->n ? SPARCL__BLOCK_FULL
                              : SPARCL__BLOCK_PARTIAL;
    return full ? SPARCL__BLOCK_FULL : empty == s->n ? SPARCL__BLOCK_EMPTY : SPARCL__BLOCK_PARTIAL;
}

static int set_attends(const void *self, int h, int i, int j)
{
    const sparcl__rule_set *s = self;
    for (int p = 0; p < s->n; ++p) {
        int a = s->parts[p].attends(s->parts[p].self, h, i, j);
        if (a != s->intersect) /* union: first yes decides; intersection: first no */
            return a;
    }
    return s->intersect;
}

sparcl__rule sparcl__rule_set_rule(const sparcl__rule_set *s)
{
    return (sparcl__rule){s, set_candidates, set_classify, set_attends, NULL, 0};
}

/* ---- Layouts as rules -------------------------------------------------- */

/* Result head h reads head `head[h]` of layout `src[which[h]]`. */
typedef struct layout_rule {
    sparcl__geom g;
    const sparcl_layout *const *src;
    int *which, *head;
    sparcl__set_scratch *scratch;
} layout_rule;

static int lr_candidates(const void *self, int h, int br, int32_t *cols)
{
    const layout_rule *r = self;
    const sparcl_layout *l = r->src[r->which[h]];
    int lh = r->head[h], B = l->block, n = 0;
    if (B == r->g.block) { /* same blocks: the row as stored */
        const int64_t *rp = l->row_ptr + (int64_t)lh * (l->nbr + 1) + br;
        for (int64_t e = rp[0]; e < rp[1]; ++e)
            cols[n++] = l->col[e];
        return n;
    }
    int64_t i0 = (int64_t)br * r->g.block;
    int64_t i1 = (i0 + r->g.block < r->g.q_len ? i0 + r->g.block : r->g.q_len) - 1;
    sparcl__scratch_next(r->scratch, r->g.nbc);
    for (int64_t sr = i0 / B; sr <= i1 / B; ++sr) {
        const int64_t *rp = l->row_ptr + (int64_t)lh * (l->nbr + 1) + sr;
        for (int64_t e = rp[0]; e < rp[1]; ++e) {
            int64_t ja = (int64_t)l->col[e] * B;
            int64_t jb = (ja + B < r->g.kv_len ? ja + B : r->g.kv_len) - 1;
            for (int64_t c = ja / r->g.block; c <= jb / r->g.block; ++c)
                n = sparcl__scratch_add(r->scratch, (int32_t)c, cols, n);
        }
    }
    return n;
}

static int lr_classify(const void *self, int h, int br, int bc)
{
    const layout_rule *r = self;
    const sparcl_layout *l = r->src[r->which[h]];
    if (l->block != r->g.block)
        return SPARCL__BLOCK_PARTIAL;
    int64_t e = sparcl__layout_find(l, r->head[h], br, bc);
    return e < 0 ? SPARCL__BLOCK_EMPTY
                 : l->mask[e] < 0 ? SPARCL__BLOCK_FULL : SPARCL__BLOCK_PARTIAL;
}

static int lr_attends(const void *self, int h, int i, int j)
{
    const layout_rule *r = self;
    return sparcl_layout_attends(r->src[r->which[h]], r->head[h], i, j);
}

/* Checks the inputs of a combinator: count >= 1, no NULL, equal lengths. */
static sparcl_status check_inputs(sparcl_ctx *ctx, const sparcl_layout *const *layouts, int count,
                                  int max)
{
    if (!layouts)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "layouts is NULL");
    if (count < 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "count %d must be >= 1", count);
    if (count > max) /* before reading the array: it cannot be longer */
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "count %d exceeds %d layouts", count,
                            max);
    for (int k = 0; k < count; ++k) {
        if (!layouts[k])
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "layouts[%d] is NULL", k);
        if (layouts[k]->q_len != layouts[0]->q_len || layouts[k]->kv_len != layouts[0]->kv_len)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "layouts[%d] is %d x %d, layouts[0] is %d x %d", k,
                                layouts[k]->q_len, layouts[k]->kv_len, layouts[0]->q_len,
                                layouts[0]->kv_len);
    }
    return SPARCL_OK;
}

/* Builds from `count` layout rules combined as `mode` (0 union, 1
 * intersection, 2 per-head concatenation). */
static sparcl_status combine(sparcl_ctx *ctx, sparcl_layout **out,
                             const sparcl_layout *const *layouts, int count, int mode)
{
    if (!out)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    sparcl_status st = check_inputs(ctx, layouts, count, mode == 2 ? INT_MAX : SPARCL__SET_MAX);
    if (st != SPARCL_OK)
        return st;
    int64_t heads = 0;
    for (int k = 0; k < count; ++k) {
        int lh = layouts[k]->heads;
        if (mode == 2)
            heads += lh;
        else if (lh != 1 && heads > 1 && lh != heads)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "layouts[%d] has %d heads, others %lld (must be 1 or equal)", k,
                                lh, (long long)heads);
        else if (lh > heads)
            heads = lh;
    }
    if (heads > (1 << 24))
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "total heads %lld exceeds 2^24",
                            (long long)heads);
    int nrules = mode == 2 ? 1 : count;
    layout_rule rules[SPARCL__SET_MAX];
    sparcl__set_scratch scratch[SPARCL__SET_MAX];
    sparcl__rule_set set;
    memset(scratch, 0, sizeof scratch);
    memset(rules, 0, sizeof rules);
    const sparcl_layout *l0 = layouts[0];
    const size_t uheads = (size_t)heads; /* 1 .. 2^24, checked above */
    int *maps = malloc(sizeof *maps * 2 * uheads * (size_t)nrules);
    st = sparcl__rule_set_init(ctx, &set, (int)((l0->kv_len + (int64_t)l0->block - 1) / l0->block),
                               mode == 1);
    if (st == SPARCL_OK && !maps)
        st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate head maps");
    for (int k = 0; k < nrules && st == SPARCL_OK; ++k) {
        layout_rule *r = &rules[k];
        sparcl__geom_init(&r->g, l0->q_len, l0->kv_len, l0->block);
        r->src = layouts;
        r->which = maps + (size_t)k * 2 * uheads;
        r->head = r->which + heads;
        for (int h = 0, base = 0, src = 0; h < heads; ++h) {
            if (mode == 2) { /* concatenate the heads of all layouts */
                while (h - base >= layouts[src]->heads)
                    base += layouts[src++]->heads;
                r->which[h] = src;
                r->head[h] = h - base;
            } else { /* broadcast one-head layouts */
                r->which[h] = k;
                r->head[h] = layouts[k]->heads == 1 ? 0 : h;
            }
        }
        r->scratch = &scratch[k];
        st = sparcl__scratch_init(ctx, r->scratch, r->g.nbc);
        sparcl__rule_set_add(&set,
                             (sparcl__rule){r, lr_candidates, lr_classify, lr_attends, NULL, 0});
    }
    if (st == SPARCL_OK) {
        sparcl__rule rule = sparcl__rule_set_rule(&set);
        st = sparcl__layout_build(ctx, out, (int)heads, l0->q_len, l0->kv_len, l0->block, &rule);
    }
    for (int k = 0; k < nrules; ++k)
        sparcl__scratch_free(&scratch[k]);
    sparcl__rule_set_free(&set);
    free(maps);
    return st;
}

SPARCL_API sparcl_status sparcl_layout_init_union(sparcl_ctx *ctx, sparcl_layout **out,
                                                  const sparcl_layout *const *layouts, int count)
{
    return combine(ctx, out, layouts, count, 0);
}

SPARCL_API sparcl_status sparcl_layout_init_intersection(sparcl_ctx *ctx, sparcl_layout **out,
                                                         const sparcl_layout *const *layouts,
                                                         int count)
{
    return combine(ctx, out, layouts, count, 1);
}

SPARCL_API sparcl_status sparcl_layout_init_per_head(sparcl_ctx *ctx, sparcl_layout **out,
                                                     const sparcl_layout *const *layouts,
                                                     int count)
{
    return combine(ctx, out, layouts, count, 2);
}
