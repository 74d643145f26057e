/*
 * pattern_defs.c -- see pattern_defs.h.  The predicates follow the papers'
 * wording directly, with plain loops and no shared helpers with the
 * library, so that a misunderstanding there is not repeated here.
 */
#include "pattern_defs.h"

#include <stdio.h>
#include <string.h>

static const char *names[K_COUNT] = {"dilated", "global",    "global-blocks",
                                     "strided", "fixed",     "bigbird",
                                     "longformer", "streaming", "vslash"};

const char *pdef_name(int kind)
{
    return kind >= 0 && kind < K_COUNT ? names[kind] : "?";
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Uniform in [lo, hi]. */
static int rnd(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

static int floordiv(long a, long b)
{
    long q = a / b;
    if ((a % b) != 0 && ((a < 0) != (b < 0)))
        q--;
    return (int)q;
}

static long floormod(long a, long b)
{
    return a - (long)floordiv(a, b) * b;
}

void pdef_random(pdef *p, int kind, int heads, int lq, int lk, uint64_t seed)
{
    static const int blocks[] = {1, 3, 7, 16, 32, 64};
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->heads = heads;
    p->lq = lq;
    p->lk = lk;
    p->block = blocks[rnd(&s, 0, 5)];
    if (p->block == 1 && (long)lq * lk > 200000)
        p->block = 5; /* keep block-1 builds small */
    /* The window family and streaming have no causal flag of their own. */
    p->causal = kind == K_DILATED || kind == K_STREAMING ? 0 : rnd(&s, 0, 1);
    p->left = rnd(&s, 0, lk / 3 + 1);
    p->right = rnd(&s, 0, lk / 5 + 1);
    for (int h = 0; h < PD_MAX_HEADS; ++h)
        p->dil[h] = rnd(&s, 1, 4);
    p->n_glob = rnd(&s, 0, 5);
    for (int k = 0; k < p->n_glob; ++k)
        p->glob[k] = rnd(&s, 0, lk - 1);
    p->first = rnd(&s, 0, 2);
    p->last = rnd(&s, 0, 2);
    p->stride = rnd(&s, 1, lk / 4 + 2);
    p->summary = rnd(&s, 0, p->stride);
    p->patterns = 1;
    if (p->summary > 0 && p->stride / p->summary >= 2)
        p->patterns = rnd(&s, 1, p->stride / p->summary < 3 ? p->stride / p->summary : 3);
    p->horizontal = rnd(&s, 0, 1);
    p->window = rnd(&s, 0, 2);
    p->random = rnd(&s, 0, 3);
    p->per_head = rnd(&s, 0, 1);
    p->seed = rng_next(&s);
    p->sink = rnd(&s, 0, 8);
    p->local = rnd(&s, 0, lk / 4 + 1);
    int at = 0, ao = 0;
    for (int h = 0; h < heads; ++h) {
        p->col_counts[h] = rnd(&s, 0, 6);
        for (int k = 0; k < p->col_counts[h]; ++k)
            p->cols[at++] = rnd(&s, 0, lk - 1);
        p->off_counts[h] = rnd(&s, 0, 6);
        for (int k = 0; k < p->off_counts[h]; ++k)
            p->offs[ao++] = rnd(&s, p->causal ? 0 : 1 - lq, lk - 1);
    }
}

static int listed(const int *list, int n, long x)
{
    for (int k = 0; k < n; ++k)
        if (list[k] == x)
            return 1;
    return 0;
}

/* Start of head h's part of a concatenated per-head list. */
static int list_start(const int *counts, int h)
{
    int at = 0;
    for (int k = 0; k < h; ++k)
        at += counts[k];
    return at;
}

int pdef_attends(const void *self, int h, int i, int j)
{
    const pdef *p = self;
    long pos = (long)i + p->lk - p->lq;
    if (p->causal && j > pos)
        return 0;
    switch (p->kind) {
    case K_DILATED: {
        long d = j - pos;
        return d >= -p->left && d <= p->right && d % p->dil[h] == 0;
    }
    case K_GLOBAL: return listed(p->glob, p->n_glob, j) || listed(p->glob, p->n_glob, pos);
    case K_GLOBAL_BLOCKS:
    case K_BIGBIRD: {
        int nb = (p->lk + p->block - 1) / p->block;
        int kb = j / p->block, qb = floordiv(pos, p->block);
        int kglob = kb < p->first || kb >= nb - p->last;
        int qglob = (qb >= 0 && qb < p->first) || (qb >= nb - p->last && qb < nb);
        int win = p->kind == K_BIGBIRD && kb - qb >= -p->window && kb - qb <= p->window;
        return kglob || qglob || win;
    }
    case K_STRIDED: {
        long t = pos - j;
        return (t <= p->stride && t >= -p->stride) || t % p->stride == 0;
    }
    case K_FIXED: {
        long l = p->stride, c = p->summary, slot = h % p->patterns;
        long lo = l - (slot + 1) * c, hi = l - slot * c;
        if (floordiv(j, l) == floordiv(pos, l))
            return 1;
        if (floormod(j, l) >= lo && floormod(j, l) < hi)
            return 1;
        return p->horizontal && floormod(pos, l) >= lo && floormod(pos, l) < hi;
    }
    case K_LONGFORMER: {
        long d = j - pos;
        if (d >= -p->left && d <= p->right && d % p->dil[h] == 0)
            return 1;
        return listed(p->glob, p->n_glob, j) || listed(p->glob, p->n_glob, pos);
    }
    case K_STREAMING: return j <= pos && (j < p->sink || pos - j <= p->local);
    case K_VSLASH:
        return listed(p->cols + list_start(p->col_counts, h), p->col_counts[h], j) ||
               listed(p->offs + list_start(p->off_counts, h), p->off_counts[h], pos - j);
    }
    return 0;
}

sparcl_status pdef_build(sparcl_ctx *ctx, const pdef *p, sparcl_layout **out)
{
    int H = p->heads, lq = p->lq, lk = p->lk, B = p->block;
    switch (p->kind) {
    case K_DILATED:
        return sparcl_layout_init_dilated_window(ctx, out, H, lq, lk, B, p->left, p->right,
                                                 p->dil);
    case K_GLOBAL:
        return sparcl_layout_init_global(ctx, out, H, lq, lk, B, p->glob, p->n_glob, p->causal);
    case K_GLOBAL_BLOCKS:
        return sparcl_layout_init_global_blocks(ctx, out, H, lq, lk, B, p->first, p->last,
                                                p->causal);
    case K_STRIDED: return sparcl_layout_init_strided(ctx, out, H, lq, lk, B, p->stride, p->causal);
    case K_FIXED: {
        sparcl_fixed_desc d;
        sparcl_fixed_desc_init(&d);
        d.stride = p->stride;
        d.summary = p->summary;
        d.patterns = p->patterns;
        d.horizontal = p->horizontal;
        d.causal = p->causal;
        return sparcl_layout_init_fixed(ctx, out, H, lq, lk, B, &d);
    }
    case K_BIGBIRD: {
        sparcl_bigbird_desc d;
        sparcl_bigbird_desc_init(&d);
        d.window = p->window;
        d.global_first = p->first;
        d.global_last = p->last;
        d.random = p->random;
        d.seed = p->seed;
        d.per_head = p->per_head;
        d.causal = p->causal;
        return sparcl_layout_init_bigbird(ctx, out, H, lq, lk, B, &d);
    }
    case K_LONGFORMER: {
        sparcl_longformer_desc d;
        sparcl_longformer_desc_init(&d);
        d.left = p->left;
        d.right = p->right;
        d.dilation = p->dil;
        d.global = p->glob;
        d.n_global = p->n_glob;
        d.causal = p->causal;
        return sparcl_layout_init_longformer(ctx, out, H, lq, lk, B, &d);
    }
    case K_STREAMING:
        return sparcl_layout_init_streaming(ctx, out, H, lq, lk, B, p->sink, p->local);
    case K_VSLASH: {
        sparcl_vertical_slash_desc d;
        sparcl_vertical_slash_desc_init(&d);
        d.columns = p->cols;
        d.column_counts = p->col_counts;
        d.offsets = p->offs;
        d.offset_counts = p->off_counts;
        d.causal = p->causal;
        return sparcl_layout_init_vertical_slash(ctx, out, H, lq, lk, B, &d);
    }
    }
    return SPARCL_ERR_INTERNAL;
}

void pdef_describe(const pdef *p, char *buf, int size)
{
    snprintf(buf, (size_t)size,
             "%s h%d %dx%d b%d causal %d left %d right %d dil %d,%d glob %d first %d last %d "
             "stride %d summary %d patterns %d horiz %d window %d random %d per_head %d "
             "sink %d local %d",
             pdef_name(p->kind), p->heads, p->lq, p->lk, p->block, p->causal, p->left, p->right,
             p->dil[0], p->dil[1], p->n_glob, p->first, p->last, p->stride, p->summary,
             p->patterns, p->horizontal, p->window, p->random, p->per_head, p->sink, p->local);
}
