/*
 * attention_kinds.c -- the registry of attention kinds: validation of the
 * normalization and attention-kind fields of a plan descriptor, the mapping
 * of alpha to the attn_entmax solver, and the choice of the kind's table.
 * Kept apart from plan.c so that a kind adds a rule here, not a branch
 * there.
 */
#include <math.h>

#include "kernels/params.h"
#include "plan/attention_kinds.h"
#include "runtime/error.h"

/* Dynamic block selection: its fields, and what it runs with (exact
 * softmax, no paged cache). */
static sparcl_status select_check(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
#define BAD(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
#define UNSUPPORTED(...) sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED, __VA_ARGS__)
    if (d->select != SPARCL_SELECT_TOPK && d->select != SPARCL_SELECT_MASS)
        return BAD("select %d is not a sparcl_select_rule (0 none, 1 top-k, 2 mass)", d->select);
    if (d->select == SPARCL_SELECT_TOPK && d->select_k <= 0)
        return BAD("select_k %d must be >= 1 for SPARCL_SELECT_TOPK", d->select_k);
    if (d->select == SPARCL_SELECT_MASS && !(d->select_tau > 0.0f && d->select_tau <= 1.0f))
        return BAD("select_tau %g must be in (0, 1] for SPARCL_SELECT_MASS", (double)d->select_tau);
    if (d->select_block < 0)
        return BAD("select_block %d must be >= 0 (0 means 64)", d->select_block);
    if (d->attention != SPARCL_ATTENTION_EXACT || d->normalization != SPARCL_NORMALIZATION_SOFTMAX)
        return UNSUPPORTED("dynamic block selection (select %d) runs exact softmax attention "
                           "only; attention %d, normalization %d are not supported",
                           d->select, d->attention, d->normalization);
    if (d->page_size > 0)
        return UNSUPPORTED("dynamic block selection does not read a paged KV cache (page_size "
                           "%d)",
                           d->page_size);
    return SPARCL_OK; /* any storage: the selection pools q and k as stored */
#undef BAD
#undef UNSUPPORTED
}

sparcl_status sparcl__kind_check(sparcl_ctx *ctx, const sparcl_plan_desc *d)
{
#define BAD(...) sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, __VA_ARGS__)
#define UNSUPPORTED(...) sparcl__fail(ctx, SPARCL_ERR_NOT_SUPPORTED, __VA_ARGS__)
    if (d->normalization < SPARCL_NORMALIZATION_SOFTMAX ||
        d->normalization > SPARCL_NORMALIZATION_ENTMAX)
        return BAD("normalization %d is not a sparcl_normalization", d->normalization);
    if (d->normalization == SPARCL_NORMALIZATION_ENTMAX && !(d->alpha > 1.0f && d->alpha <= 2.0f))
        return BAD("alpha %g must be in (1, 2] for entmax", (double)d->alpha);
    if (d->page_size > 0 &&
        (d->attention != SPARCL_ATTENTION_EXACT ||
         d->normalization != SPARCL_NORMALIZATION_SOFTMAX || d->q_len > SPARCL__DECODE_MAX_Q))
        return UNSUPPORTED("page_size %d: a paged KV cache needs a decoding plan (exact softmax, "
                           "q_len <= %d)",
                           d->page_size, SPARCL__DECODE_MAX_Q);
    sparcl_status st;
    if (d->select != SPARCL_SELECT_NONE && (st = select_check(ctx, d)) != SPARCL_OK)
        return st;
    /* Every kind takes every dtype: those without half kernels are staged
     * through fp32 (dtype_stage.h). */
    switch (d->attention) {
    case SPARCL_ATTENTION_EXACT: return SPARCL_OK;
    case SPARCL_ATTENTION_FAVOR:
        if (d->features < 1 || d->features > SPARCL_MAX_FEATURES)
            return BAD("features %d must be in [1, %d] for FAVOR+", d->features,
                       SPARCL_MAX_FEATURES);
        if (d->normalization != SPARCL_NORMALIZATION_SOFTMAX)
            return UNSUPPORTED("FAVOR+ approximates softmax; normalization %d is not supported",
                               d->normalization);
        if (d->layout)
            return UNSUPPORTED("FAVOR+ attends to every key; a layout is not supported");
        if (d->causal && d->q_len != d->kv_len)
            return UNSUPPORTED("causal FAVOR+ needs q_len %d == kv_len %d", d->q_len, d->kv_len);
        return SPARCL_OK;
    case SPARCL_ATTENTION_LINFORMER:
        if (d->proj_len < 1 || d->proj_len > d->kv_len)
            return BAD("proj_len %d must be in [1, kv_len %d] for Linformer", d->proj_len,
                       d->kv_len);
        if (d->causal)
            return UNSUPPORTED("causal Linformer is not supported (projections mix all "
                               "positions)");
        if (d->layout)
            return UNSUPPORTED("Linformer attends to projected keys; a layout is not "
                               "supported");
        return SPARCL_OK;
    case SPARCL_ATTENTION_SPAN:
        if (d->normalization != SPARCL_NORMALIZATION_SOFTMAX)
            return UNSUPPORTED("adaptive span masks softmax weights; normalization %d is not "
                               "supported",
                               d->normalization);
        if (d->layout)
            return UNSUPPORTED("adaptive span chooses its keys by distance; a layout is not "
                               "supported");
        if (!d->causal)
            return UNSUPPORTED("adaptive span is causal attention; set causal");
        return sparcl__span_desc_check(ctx, d);
    case SPARCL_ATTENTION_LSH:
        if (d->lsh_rounds < 1 || d->lsh_rounds > SPARCL_LSH_MAX_ROUNDS)
            return BAD("lsh_rounds %d must be in [1, %d] for LSH attention", d->lsh_rounds,
                       SPARCL_LSH_MAX_ROUNDS);
        if (d->lsh_buckets < 2 || d->lsh_buckets > SPARCL_LSH_MAX_BUCKETS || d->lsh_buckets % 2)
            return BAD("lsh_buckets %d must be even and in [2, %d] for LSH attention (the "
                       "argmax of [xR; -xR])",
                       d->lsh_buckets, SPARCL_LSH_MAX_BUCKETS);
        if (d->lsh_chunk < 1)
            return BAD("lsh_chunk %d must be >= 1 for LSH attention", d->lsh_chunk);
        if (d->normalization != SPARCL_NORMALIZATION_SOFTMAX)
            return UNSUPPORTED("LSH attention is softmax only; normalization %d is not supported",
                               d->normalization);
        if (d->layout)
            return UNSUPPORTED("LSH attention chooses its keys by hashing; a layout is not "
                               "supported");
        if (d->q_len != d->kv_len)
            return UNSUPPORTED("LSH attention shares queries and keys: q_len %d must equal "
                               "kv_len %d",
                               d->q_len, d->kv_len);
        return SPARCL_OK;
    default: return BAD("attention %d is not a sparcl_attention_kind", d->attention);
    }
#undef BAD
#undef UNSUPPORTED
}

const sparcl__kind_ops *sparcl__kind_select(const sparcl_plan_desc *d, const sparcl__pset *params)
{
    float alpha;
    if (d->select != SPARCL_SELECT_NONE)
        return sparcl__select_decodes(d, params) ? &sparcl__kind_dynsel_decode
                                                 : &sparcl__kind_dynsel;
    if (d->attention == SPARCL_ATTENTION_SPAN)
        return &sparcl__kind_span;
    if (d->attention == SPARCL_ATTENTION_FAVOR)
        return &sparcl__kind_favor;
    if (d->attention == SPARCL_ATTENTION_LINFORMER)
        return &sparcl__kind_linformer;
    if (d->attention == SPARCL_ATTENTION_LSH)
        return &sparcl__kind_lsh;
    if (sparcl__entmax_norm(d, &alpha))
        return &sparcl__kind_entmax;
    if (sparcl__decode_selected(d, params))
        return &sparcl__kind_decode;
    if (params && params->v[SPARCL__P_ALGO] == 1)
        return &sparcl__kind_dense;
    return &sparcl__kind_fused;
}
