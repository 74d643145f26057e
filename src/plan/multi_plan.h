/*
 * multi_plan.h -- the multi-device plan object, shared by the file that
 * cuts a call into shares (multi_shards.c) and the one that creates and
 * runs them (multi_plan.c).
 */
#ifndef SPARCL_MULTI_PLAN_H
#define SPARCL_MULTI_PLAN_H

#include "sparcl.h"

/* One share: a rectangle of the call (query heads x query rows x keys) on
 * one context.  kv heads follow from the query heads (GQA). */
typedef struct sparcl__shard {
    int context;       /* index into the plan's contexts */
    int h0, nh;        /* query heads */
    int kh0, nkh;      /* kv heads */
    int i0, ni;        /* query rows */
    int j0, nj;        /* keys, trimmed to those the rectangle attends */
    int64_t pairs;     /* attended pairs over its query heads, one batch entry */
    sparcl_plan *plan; /* NULL when pairs == 0 */
} sparcl__shard;

struct sparcl_multi_plan {
    sparcl_ctx **ctx; /* borrowed contexts, count of them */
    int count;
    int mode;              /* sparcl_shard_mode */
    sparcl_plan_desc desc; /* the caller's, layout and params cleared */
    sparcl__shard *shards; /* n_shards <= count */
    int n_shards;
};

/* Cuts the call `d` (validated) into at most count shares as `mode` says
 * and fills *shards / *n (malloc'd; plans not created) and, for each
 * share, *slices[s]: the slice of the pattern it covers (NULL for a dense
 * share or one that attends nothing).  The causal flag is folded into the
 * slices, which are token-exact.  Errors on ctx: SPARCL_ERR_OUT_OF_MEMORY
 * and the layout builders'. */
sparcl_status sparcl__multi_shards(sparcl_ctx *ctx, const sparcl_plan_desc *d, int count, int mode,
                                   sparcl__shard **shards, int *n, sparcl_layout ***slices);

#endif
