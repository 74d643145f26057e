/*
 * multi_shards.c -- where a multi-device plan cuts one attention call: by
 * query heads, by query rows or by keys, each share a rectangle of the call
 * with its own slice of the pattern.  The causal flag is folded into the
 * pattern first (the "effective" layout), because a rectangle that does not
 * end at the bottom-right corner would align its rows with other keys than
 * the whole call does.  Row and key cuts fall on the effective layout's
 * block boundaries, so every slice takes its blocks over as stored, and
 * they balance the attended pairs, which causal and banded patterns spread
 * unevenly.  Each share then reads only the keys its rows attend.
 */
#include <stdlib.h>

#include "layout/layout.h"
#include "layout/layout_slice.h"
#include "plan/multi_plan.h"
#include "runtime/error.h"

/* The block of the causal pattern built for a plan without a layout: the
 * smallest power of two from 16 that keeps the block rows to 1024, so the
 * pattern stays small for long sequences and cuts stay fine for short
 * ones. */
static int causal_block(const sparcl_plan_desc *d)
{
    const int64_t n = d->q_len > d->kv_len ? d->q_len : d->kv_len;
    int b = 16;
    while (b < 1024 && (n + b - 1) / b > 1024)
        b *= 2;
    return b;
}

/* *eff: the pattern every share slices, the layout with the causal flag
 * folded in, or NULL for a dense call (no layout, not causal).  *owned is
 * what must be freed (NULL when *eff is the caller's layout). */
static sparcl_status effective_layout(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                      const sparcl_layout **eff, sparcl_layout **owned)
{
    *eff = d->layout;
    *owned = NULL;
    if (!d->causal)
        return SPARCL_OK;
    sparcl_layout *causal;
    const int block = d->layout ? d->layout->block : causal_block(d);
    sparcl_status st = sparcl_layout_init_causal(ctx, &causal, 1, d->q_len, d->kv_len, block);
    if (st != SPARCL_OK)
        return st;
    if (!d->layout) {
        *eff = *owned = causal;
        return SPARCL_OK;
    }
    const sparcl_layout *both[2] = {d->layout, causal};
    st = sparcl_layout_init_intersection(ctx, owned, both, 2);
    sparcl_layout_free(causal);
    *eff = *owned;
    return st;
}

/* Attended pairs of stored entry e of block row br. */
static int64_t entry_pairs(const sparcl_layout *l, int br, int64_t e)
{
    const int B = l->block;
    if (l->mask[e] < 0) {
        const int64_t rows = l->q_len - (int64_t)br * B, cols = l->kv_len - (int64_t)l->col[e] * B;
        return (rows < B ? rows : B) * (cols < B ? cols : B);
    }
    /* Bits outside the sequence are always 0 (layout.h). */
    const uint64_t *w = l->bits + l->mask[e] * l->words_per_mask;
    int64_t n = 0;
    for (int k = 0; k < l->words_per_mask; ++k)
        n += __builtin_popcountll(w[k]);
    return n;
}

/* Attended pairs per block row (axis 0) or block column (axis 1) of l,
 * summed over its heads; NULL when out of memory. */
static double *unit_weights(const sparcl_layout *l, int axis)
{
    const int n = axis == 0 ? l->nbr : l->nbc;
    double *w = calloc((size_t)n, sizeof *w);
    if (!w)
        return NULL;
    for (int h = 0; h < l->heads; ++h)
        for (int br = 0; br < l->nbr; ++br) {
            const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + br;
            for (int64_t e = rp[0]; e < rp[1]; ++e)
                w[axis == 0 ? br : l->col[e]] += (double)entry_pairs(l, br, e);
        }
    return w;
}

/* Cuts units [0, n) into `parts` (<= n) contiguous, non-empty ranges
 * [cut[k], cut[k + 1]) of about equal weight (w NULL, or all zero: equal
 * counts). */
static void split_units(const double *w, int64_t n, int parts, int64_t *cut)
{
    double total = 0;
    for (int64_t u = 0; w && u < n; ++u)
        total += w[u];
    cut[0] = 0;
    cut[parts] = n;
    if (!w || total <= 0) {
        for (int k = 1; k < parts; ++k)
            cut[k] = n * k / parts;
        return;
    }
    int64_t u = 0;
    double prefix = 0; /* weight of units [0, u) */
    for (int k = 1; k < parts; ++k) {
        const double target = total * k / parts;
        const int64_t lo = cut[k - 1] + 1, hi = n - (parts - k); /* leave a unit to each */
        while (u < lo || (u < hi && prefix + w[u] <= target))
            prefix += w[u++];
        /* u is the last cut at or below the target; the next may be nearer. */
        if (u < hi && target - prefix > prefix + w[u] - target)
            prefix += w[u++];
        cut[k] = u;
    }
}

/* Trims s's keys to those its rectangle attends and counts its pairs.  The
 * rectangle's rows and keys start on block boundaries of eff and end on
 * one or at the sequence's end, so it is a union of whole blocks. */
static void measure(const sparcl_layout *eff, sparcl__shard *s)
{
    if (!eff) {
        s->pairs = (int64_t)s->nh * s->ni * s->nj;
        return;
    }
    const int B = eff->block, c0 = s->j0 / B, c1 = (s->j0 + s->nj - 1) / B;
    const int one = eff->heads == 1, ha = one ? 0 : s->h0, hb = one ? 1 : s->h0 + s->nh;
    int64_t pairs = 0, lo = c1 + 1, hi = c0 - 1;
    for (int h = ha; h < hb; ++h)
        for (int br = s->i0 / B; br <= (s->i0 + s->ni - 1) / B; ++br) {
            const int64_t *rp = eff->row_ptr + (int64_t)h * (eff->nbr + 1) + br;
            for (int64_t e = rp[0]; e < rp[1]; ++e) {
                const int c = eff->col[e];
                if (c < c0 || c > c1)
                    continue;
                pairs += entry_pairs(eff, br, e);
                lo = c < lo ? c : lo;
                hi = c > hi ? c : hi;
            }
        }
    s->pairs = one ? pairs * s->nh : pairs;
    if (s->pairs == 0) {
        s->nj = 0;
        return;
    }
    const int64_t end = s->j0 + (int64_t)s->nj, j1 = (hi + 1) * (int64_t)B;
    s->j0 = (int)(lo * B);
    s->nj = (int)((j1 < end ? j1 : end) - s->j0);
}

/* The shares of a cut by heads. */
static int cut_heads(const sparcl_plan_desc *d, int count, sparcl__shard *sh)
{
    const int g = d->q_heads / d->kv_heads;
    int n = 0;
    int64_t cut[SPARCL_MULTI_MAX_DEVICES + 1];
    if (d->kv_heads >= count) { /* whole kv groups */
        split_units(NULL, d->kv_heads, count, cut);
        for (int k = 0; k < count; ++k, ++n) {
            sh[n].kh0 = (int)cut[k];
            sh[n].nkh = (int)(cut[k + 1] - cut[k]);
            sh[n].h0 = sh[n].kh0 * g;
            sh[n].nh = sh[n].nkh * g;
        }
        return n;
    }
    /* Fewer kv heads than devices: each kv head's q heads over its devices. */
    for (int c = 0; c < d->kv_heads; ++c) {
        const int devices = count / d->kv_heads + (c < count % d->kv_heads);
        const int parts = devices < g ? devices : g;
        split_units(NULL, g, parts, cut);
        for (int k = 0; k < parts; ++k, ++n) {
            sh[n].kh0 = c;
            sh[n].nkh = 1;
            sh[n].h0 = c * g + (int)cut[k];
            sh[n].nh = (int)(cut[k + 1] - cut[k]);
        }
    }
    return n;
}

/* The shares of a cut along rows (axis 0) or keys (axis 1), in units of
 * eff's blocks (single positions for a dense call). */
static sparcl_status cut_axis(sparcl_ctx *ctx, const sparcl_plan_desc *d, const sparcl_layout *eff,
                              int axis, int count, sparcl__shard *sh, int *n)
{
    const int len = axis == 0 ? d->q_len : d->kv_len;
    const int unit = eff ? eff->block : 1;
    const int64_t units = (len + (int64_t)unit - 1) / unit;
    double *w = NULL;
    if (eff && !(w = unit_weights(eff, axis)))
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the cut's weights");
    const int parts = units < count ? (int)units : count;
    int64_t cut[SPARCL_MULTI_MAX_DEVICES + 1];
    split_units(w, units, parts, cut);
    free(w);
    for (int k = 0; k < parts; ++k) {
        const int64_t a = cut[k] * unit, b = cut[k + 1] * unit < len ? cut[k + 1] * unit : len;
        sh[k].h0 = sh[k].kh0 = 0;
        sh[k].nh = d->q_heads;
        sh[k].nkh = d->kv_heads;
        if (axis == 0) {
            sh[k].i0 = (int)a;
            sh[k].ni = (int)(b - a);
        } else {
            sh[k].j0 = (int)a;
            sh[k].nj = (int)(b - a);
        }
    }
    *n = parts;
    return SPARCL_OK;
}

sparcl_status sparcl__multi_shards(sparcl_ctx *ctx, const sparcl_plan_desc *d, int count, int mode,
                                   sparcl__shard **shards, int *n, sparcl_layout ***slices)
{
    *shards = NULL;
    *slices = NULL;
    *n = 0;
    const sparcl_layout *eff;
    sparcl_layout *owned;
    sparcl_status st = effective_layout(ctx, d, &eff, &owned);
    if (st != SPARCL_OK)
        return st;
    sparcl__shard *sh = calloc((size_t)count, sizeof *sh);
    sparcl_layout **sl = calloc((size_t)count, sizeof *sl);
    int m = 0;
    if (!sh || !sl) {
        st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate %d shares", count);
        goto done;
    }
    for (int k = 0; k < count; ++k) { /* the whole call; each mode narrows one axis */
        sh[k].ni = d->q_len;
        sh[k].nj = d->kv_len;
    }
    if (mode == SPARCL_SHARD_HEADS)
        m = cut_heads(d, count, sh);
    else
        st = cut_axis(ctx, d, eff, mode == SPARCL_SHARD_QUERIES ? 0 : 1, count, sh, &m);
    for (int k = 0; k < m && st == SPARCL_OK; ++k) {
        sh[k].context = k;
        measure(eff, &sh[k]);
        if (eff && sh[k].pairs > 0)
            st = sparcl__layout_slice(ctx, eff, sh[k].h0, sh[k].nh, sh[k].i0, sh[k].ni, sh[k].j0,
                                      sh[k].nj, &sl[k]);
    }
done:
    sparcl_layout_free(owned);
    if (st != SPARCL_OK) {
        for (int k = 0; sl && k < count; ++k)
            sparcl_layout_free(sl[k]);
        free(sl);
        free(sh);
        return st;
    }
    *shards = sh;
    *slices = sl;
    *n = m;
    return SPARCL_OK;
}
