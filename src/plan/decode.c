/*
 * decode.c -- the split-KV decoding kind: softmax attention of few query
 * rows (q_len <= SPARCL__DECODE_MAX_Q) over long key ranges.  attn_decode
 * (cl/attn_decode.cl) runs the heads of each KV group together over SPLITS
 * ranges of key tiles into a workspace of partial outputs and LSEs, and
 * attn_merge_stacked (merge.c) combines them into out and lse.  The layout
 * is the plan's tiled layout (plan_tiles.h) at BLOCK_M = q_len, so every
 * pattern keeps its token-exact semantics; the backward is the tiled one.
 */
#include <stdlib.h>

#include "kernels/kernel_registry.h"
#include "kernels/params.h"
#include "layout/layout.h"
#include "plan/attention_kinds.h"
#include "plan/kernel_build.h"
#include "plan/kind_fused.h"
#include "plan/merge.h"
#include "plan/plan_tiles.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/memory.h"

/* A cache call's pattern when the plan's follows the sequence (no layout,
 * or one that follows it: layout.h), as attn_decode's sink and sides in
 * tokens, the plan's causal flag folded in and open sides capped at
 * kv_len. */
typedef struct follow {
    cl_int sink, left, right;
} follow;

typedef struct decode {
    sparcl__tiled t; /* first: the backward entries take the state as one */
    cl_kernel kernel, merge;
    /* Partial outputs and LSEs of every split; calls share them, so each
     * call's kernels wait for the previous call's merge (t.last). */
    cl_mem part_o, part_lse;
    /* Cache calls: the lengths and the block table, written per call. */
    cl_mem lens, table;
    int max_pages; /* block table columns: ceil(kv_len / page_size), or 1 */
    size_t workspace_bytes;
    int splits, heads, lanes; /* SPLITS, HEADS and WG_SIZE */
    int follows; /* cache calls take any length, with pattern f */
    follow f;
} decode;

int sparcl__decode_selected(const sparcl_plan_desc *d, const sparcl__pset *params)
{
    if (d->attention != SPARCL_ATTENTION_EXACT ||
        d->normalization != SPARCL_NORMALIZATION_SOFTMAX || d->q_len > SPARCL__DECODE_MAX_Q)
        return 0;
    if (params) /* the choice of a family: attn_decode's sets SPLITS */
        return sparcl__pset_has(params, SPARCL__P_SPLITS);
    if (d->page_size > 0)
        return 1;
    int32_t value;
    if (d->params) /* an override picks its family by its names */
        return sparcl_params_get(d->params, "SPLITS", &value) ||
               sparcl_params_get(d->params, "HEADS", &value);
    /* Chosen by shape, for every storage type. */
    return d->kv_len >= SPARCL__DECODE_MIN_KV && d->kv_len >= 8 * d->q_len;
}

static void decode_free(void *state)
{
    decode *s = state;
    if (!s)
        return;
    if (s->kernel)
        clReleaseKernel(s->kernel);
    if (s->merge)
        clReleaseKernel(s->merge);
    if (s->part_o)
        clReleaseMemObject(s->part_o);
    if (s->part_lse)
        clReleaseMemObject(s->part_lse);
    if (s->lens)
        clReleaseMemObject(s->lens);
    if (s->table)
        clReleaseMemObject(s->table);
    sparcl__tiled_release(&s->t);
    free(s);
}

static size_t decode_bytes(const void *state)
{
    const decode *s = state;
    return sparcl__tiled_bytes(&s->t) + s->workspace_bytes;
}

/* Whether the plan's pattern follows the sequence, and then s->f. */
static void init_follow(decode *s, const sparcl_plan_desc *d)
{
    const sparcl_layout *l = s->t.layout;
    s->follows = !l || l->follow;
    if (!s->follows)
        return;
    const int64_t cap = d->kv_len;
    s->f.sink = l ? (cl_int)(l->follow_sink < cap ? l->follow_sink : cap) : 0;
    s->f.left = l ? (cl_int)(l->follow_left < cap ? l->follow_left : cap) : (cl_int)cap;
    s->f.right = l ? (cl_int)(l->follow_right < cap ? l->follow_right : cap) : (cl_int)cap;
    if (d->causal && s->f.right > 0)
        s->f.right = 0;
}

/* The partial outputs and LSEs, and the buffers of cache calls. */
static sparcl_status alloc_workspace(sparcl_ctx *ctx, decode *s, const sparcl_plan_desc *d)
{
    const size_t rows = (size_t)d->batch * (size_t)d->q_heads * (size_t)d->q_len;
    const size_t lse_bytes = (size_t)s->splits * rows * sizeof(float);
    const size_t o_bytes = lse_bytes * (size_t)d->head_dim;
    s->max_pages = d->page_size > 0 ? (int)sparcl__ceil_div_i64(d->kv_len, d->page_size) : 1;
    const size_t lens_bytes = (size_t)d->batch * sizeof(int32_t);
    const size_t table_bytes = lens_bytes * (size_t)s->max_pages;
    const size_t all = sparcl__sat_add(sparcl__sat_add(o_bytes, lse_bytes),
                                       sparcl__sat_add(lens_bytes, table_bytes));
    sparcl_status st = sparcl__mem_check_device(ctx, "the plan with its split-KV workspace",
                                                sparcl__sat_add(sparcl__tiled_bytes(&s->t), all));
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    cl_mem *bufs[4] = {&s->part_o, &s->part_lse, &s->lens, &s->table};
    const size_t sizes[4] = {o_bytes, lse_bytes, lens_bytes, table_bytes};
    for (int i = 0; i < 4; ++i)
        if (!(*bufs[i] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, sizes[i], NULL, &err)))
            return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                "cannot allocate the %zu-byte split-KV workspace: %s", all,
                                sparcl__cl_error_name(err));
    s->workspace_bytes = all;
    return SPARCL_OK;
}

/* The kind's state for view v over the plan's layout, or over `ext` (lists
 * another kind fills on the device) when given. */
static sparcl_status create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                            const sparcl__pset *params, const sparcl__fused_tiles *ext,
                            void **state)
{
    sparcl_ctx *ctx = v->ctx;
    decode *s = calloc(1, sizeof *s);
    if (!s)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a plan");
    s->splits = params->v[SPARCL__P_SPLITS];
    s->heads = params->v[SPARCL__P_HEADS];
    s->lanes = params->v[SPARCL__P_WG_SIZE];
    /* One tile row per layout head: BLOCK_M = q_len, one work-item. */
    sparcl__pset tile = *params;
    sparcl__pset_put(&tile, SPARCL__P_BLOCK_M, desc->q_len);
    sparcl__pset_put(&tile, SPARCL__P_WG_SIZE, 1);
    const sparcl__problem prob = sparcl__problem_from_desc(desc);
    const char *name = "attn_decode";
    sparcl_status st = SPARCL_OK;
    if (ext)
        sparcl__tiled_init_external(&s->t, v, &tile, ext->bufs, ext->layout_heads,
                                    ext->n_tile_rows);
    else
        st = sparcl__tiled_init(&s->t, v, desc->layout, desc->previous, &tile);
    if (st == SPARCL_OK) {
        init_follow(s, desc);
        st = alloc_workspace(ctx, s, desc);
    }
    if (st == SPARCL_OK)
        st = sparcl__family_kernels(ctx, &sparcl__schema_attn_decode, &prob, params, 1, &name,
                                    &s->kernel);
    if (st == SPARCL_OK)
        st = sparcl__merge_stacked_kernel(ctx, desc->dtype, &s->merge);
    if (st != SPARCL_OK) {
        decode_free(s);
        return st;
    }
    *state = s;
    return SPARCL_OK;
}

static sparcl_status decode_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                   sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    (void)report;
    return create(v, desc, params, NULL, state);
}

sparcl_status sparcl__decode_create_external(const sparcl__plan_view *v, const sparcl__pset *params,
                                             const sparcl__fused_tiles *tiles, void **state)
{
    return create(v, &v->desc, params, tiles, state);
}

/* attn_decode's arguments for a call in splits of tiles_per_split tiles. */
static cl_int set_args(const decode *s, const sparcl__fwd_call *c, cl_int tiles_per_split)
{
    const sparcl_plan_desc *d = &s->t.view->desc;
    /* 1: lengths, the pattern applied to each sequence's own length;
     * 2: lengths equal to kv_len, the layout's tiles */
    const follow f = c->kv_lens && s->follows ? s->f : (follow){0, 0, 0};
    const cl_int use_lens = !c->kv_lens ? 0 : s->follows ? 1 : 2, causal = d->causal != 0;
    const cl_int page_size = d->page_size, max_pages = s->max_pages;
    const sparcl__plan_view *v = s->t.view;
    const cl_float scale_log2 = v->scale * (cl_float)CL_M_LOG2E;
    cl_long strides[9];
    for (int t = 0; t < 3; ++t) {
        strides[3 * t] = c->ts[t].batch;
        strides[3 * t + 1] = c->ts[t].head;
        strides[3 * t + 2] = c->ts[t].seq;
    }
    cl_kernel kn = s->kernel;
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &c->q);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &c->k);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &c->v);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->part_o);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->part_lse);
    err |= sparcl__tiled_set_layout_args(&s->t, kn, &a);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &tiles_per_split);
    err |= clSetKernelArg(kn, a++, sizeof(cl_float), &scale_log2);
    for (int k = 0; k < 9; ++k)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &strides[k]);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->lens);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &use_lens);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &causal);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->table);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &page_size);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &max_pages);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &f.sink);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &f.left);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &f.right);
    return err;
}

/* A cache call's lengths and block table into the plan's buffers, after
 * the wait list (which holds the previous call that read them). */
static sparcl_status write_cache(decode *s, const sparcl__fwd_call *c, cl_uint nw,
                                 const cl_event *all)
{
    const sparcl_plan_desc *d = &s->t.view->desc;
    const size_t lens_bytes = (size_t)d->batch * sizeof(int32_t);
    cl_int err = clEnqueueWriteBuffer(c->queue, s->lens, CL_TRUE, 0, lens_bytes, c->kv_lens, nw,
                                      nw ? all : NULL, NULL);
    if (err == CL_SUCCESS && c->block_table)
        err =
            clEnqueueWriteBuffer(c->queue, s->table, CL_TRUE, 0, lens_bytes * (size_t)s->max_pages,
                                 c->block_table, 0, NULL, NULL);
    return err == CL_SUCCESS ? SPARCL_OK
                             : sparcl__fail_cl(s->t.view->ctx, err, "clEnqueueWriteBuffer");
}

/* Key tiles the splits share: the plan's kv_len; or, in a call that
 * follows the sequence, the most any sequence visits (its sinks' tiles and
 * its rows' windows', as attn_decode counts them); or the longest
 * sequence's. */
static int call_tiles(const decode *s, const sparcl__fwd_call *c)
{
    const sparcl_plan_desc *d = &s->t.view->desc;
    const int64_t bn = s->t.block_n;
    int64_t tiles = sparcl__ceil_div_i64(d->kv_len, bn);
    if (c->kv_lens) {
        tiles = 0;
        const int64_t sink_tiles = sparcl__ceil_div_i64(s->f.sink, bn);
        for (int b = 0; b < d->batch; ++b) {
            const int64_t nt = sparcl__ceil_div_i64(c->kv_lens[b], bn);
            int64_t visits = nt;
            if (s->follows) {
                const int64_t st = sink_tiles < nt ? sink_tiles : nt;
                int64_t lo = (int64_t)c->kv_lens[b] - d->q_len - s->f.left;
                int64_t lt = (lo > 0 ? lo : 0) / bn;
                lt = lt < nt ? lt : nt;
                lt = lt > st ? lt : st;
                visits = st + nt - lt;
            }
            tiles = visits > tiles ? visits : tiles;
        }
    }
    return tiles > 0 ? (int)tiles : 1;
}

static sparcl_status decode_forward(void *state, const sparcl__fwd_call *c)
{
    decode *s = state;
    const sparcl__plan_view *v = s->t.view;
    const sparcl_plan_desc *d = &v->desc;
    for (int b = 0; c->kv_lens && !s->follows && b < d->batch; ++b)
        if (c->kv_lens[b] != d->kv_len)
            return sparcl__fail(v->ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "kv_lens[%d] = %d: a plan with this layout takes lengths equal "
                                "to its kv_len %d (the layout is fixed at that length; make a "
                                "plan per length, or use a layout that follows the sequence: "
                                "dense, causal, window or streaming)",
                                b, c->kv_lens[b], d->kv_len);
    if (!c->kv_lens && d->page_size > 0)
        return sparcl__fail(v->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "a plan of a paged cache (page_size %d) runs through "
                            "sparcl_plan_forward_cache()",
                            d->page_size);
    const int tiles = call_tiles(s, c);
    const int per = (int)sparcl__ceil_div_i64(tiles, s->splits);
    const int n = (int)sparcl__ceil_div_i64(tiles, per);
    sparcl_status st = SPARCL_OK;
    pthread_mutex_lock(&s->t.lock);
    cl_event dec_ev = NULL, ev = NULL;
    cl_int err = set_args(s, c, per);
    if (err != CL_SUCCESS) {
        st = sparcl__fail_cl(v->ctx, err, "clSetKernelArg(attn_decode)");
    } else {
        cl_uint nw;
        cl_event *all = sparcl__tiled_wait_list(&s->t, c->num_wait, c->wait, &nw);
        if (!all)
            st = sparcl__fail(v->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
        else if (c->kv_lens)
            st = write_cache(s, c, nw, all);
        if (st != SPARCL_OK) {
            free(all);
        } else {
            const size_t local[3] = {(size_t)s->lanes, 1, 1};
            const size_t global[3] = {(size_t)n * (size_t)s->lanes,
                                      (size_t)d->kv_heads *
                                          (size_t)(d->q_heads / d->kv_heads / s->heads),
                                      (size_t)d->batch};
            err = clEnqueueNDRangeKernel(c->queue, s->kernel, 3, NULL, global, local, nw,
                                         nw ? all : NULL, &dec_ev);
            free(all);
            if (err != CL_SUCCESS)
                st = sparcl__fail_cl(v->ctx, err, "clEnqueueNDRangeKernel(attn_decode)");
        }
    }
    if (st == SPARCL_OK) {
        const sparcl__merge_stacked m = {s->part_o,  s->part_lse, n,          d->batch,
                                         d->q_heads, d->q_len,    d->head_dim};
        st = sparcl__merge_stacked_enqueue(v->ctx, c->queue, s->merge, &m, c->out, c->ts[3], c->lse,
                                           1, &dec_ev, &ev);
    }
    if (dec_ev)
        clReleaseEvent(dec_ev);
    if (ev)
        sparcl__tiled_set_last(&s->t, ev);
    pthread_mutex_unlock(&s->t.lock);
    if (ev && c->event)
        *c->event = ev;
    else if (ev)
        clReleaseEvent(ev);
    return st;
}

const sparcl__kind_ops sparcl__kind_decode = {
    .name = "split-KV decoding",
    .family = &sparcl__schema_attn_decode,
    .create = decode_create,
    .forward = decode_forward,
    .takes_lengths = 1,
    .prepare_backward = sparcl__tiled_prepare_backward,
    .backward = sparcl__tiled_backward,
    .half_forward = 1,
    .half_backward = 1, /* backward.c, as the fused softmax's */
    .tiled = 1,
    .device_bytes = decode_bytes,
    .free = decode_free,
};
