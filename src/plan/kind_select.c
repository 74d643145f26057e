/*
 * kind_select.c -- dynamic block selection: a plan whose every call chooses
 * its key blocks from q and k on the device (cl/block_select.cl), writes
 * them as the tiled layout attn_fwd walks, and runs the fused softmax
 * forward over it (kind_fused.h), all in the caller's queue, chained by
 * events, with no host round trip and no plan rebuild per call.
 *
 * The forward's tile lists (select_lists.h) are sized once at plan
 * creation, with the pooled Q and K (O(N x D / block)) and the per-block
 * scores (O(blocks)); the backward (select_backward.c) chooses again from
 * its call's q and k and lists the choice at its own tile.
 *
 * attn_fwd indexes its tile lists by query head only, so the selection's
 * per-(batch, head) lists are given to it with the batches folded into the
 * heads (batch 1, batch x q_heads heads): exact when every tensor's batch
 * stride is heads times its head stride, as in contiguous [B, H, S, D];
 * other strides with batch > 1 are refused.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_registry.h"
#include "kernels/params.h"
#include "layout/layout.h"
#include "layout/tiling.h"
#include "plan/attention_kinds.h"
#include "plan/kernel_build.h"
#include "plan/kind_fused.h"
#include "plan/plan_tiles.h"
#include "plan/select.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/memory.h"

#define DEFAULT_BLOCK 64

typedef sparcl__dynsel dynsel;

static void select_free(void *state)
{
    dynsel *s = state;
    if (!s)
        return;
    if (s->inner)
        s->inner->free(s->fused);
    for (int i = 0; i < SPARCL__SEL_KERNELS; ++i)
        if (s->kn[i])
            clReleaseKernel(s->kn[i]);
    for (int i = 0; i < SPARCL__SEL_SCRATCH; ++i)
        if (s->scratch[i])
            clReleaseMemObject(s->scratch[i]);
    sparcl__sel_lists_release(&s->fwd);
    sparcl__sel_lists_release(&s->bwd_lists);
    sparcl__plan_bwd_free(s->bwd);
    if (s->last)
        clReleaseEvent(s->last);
    sparcl_layout_free(s->pin);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static size_t select_bytes(const void *state)
{
    const dynsel *s = state;
    return s->bytes + s->fwd.bytes + s->bwd_lists.bytes +
           (s->fused ? s->inner->device_bytes(s->fused) : 0);
}

/* The workspace: pooled Q and K, choices, scores and weights. */
static sparcl_status alloc_workspace(dynsel *s, const sparcl_plan_desc *d)
{
    sparcl_ctx *ctx = s->view->ctx;
    const size_t bq = (size_t)d->batch * (size_t)d->q_heads,
                 bk = (size_t)d->batch * (size_t)d->kv_heads;
    const size_t rows = bq * (size_t)s->n_qb, blocks = rows * (size_t)s->n_kb;
    const size_t hd = (size_t)d->head_dim * sizeof(float);
    const size_t sizes[SPARCL__SEL_SCRATCH] = {rows * hd, bk * (size_t)s->n_kb * hd, blocks,
                                               blocks * 4, blocks * 4};
    for (int i = 0; i < SPARCL__SEL_SCRATCH; ++i) {
        const size_t bytes = sizes[i] ? sizes[i] : sizeof(int32_t);
        sparcl_status st = sparcl__mem_check_device(ctx, "the dynamic block selection's workspace",
                                                    sparcl__sat_add(s->bytes, bytes));
        if (st != SPARCL_OK)
            return st;
        cl_int err;
        s->scratch[i] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (!s->scratch[i])
            return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                                "cannot allocate %zu bytes for the dynamic block selection: %s",
                                bytes, sparcl__cl_error_name(err));
        s->bytes += bytes;
    }
    return SPARCL_OK;
}

sparcl_status sparcl__select_fit_tile(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                      const sparcl__kernel_schema *schema, sparcl__pset *p,
                                      int block)
{
    const int bwd = schema == &sparcl__schema_attn_bwd;
    const int32_t n_min = bwd ? 1 : 8;
    /* attn_decode's tile row is the call's q_len rows, within one block. */
    int32_t one = 1;
    int32_t *bm = schema == &sparcl__schema_attn_decode ? &one : &p->v[SPARCL__P_BLOCK_M];
    int32_t *bn = &p->v[SPARCL__P_BLOCK_N];
    int32_t *wg = &p->v[SPARCL__P_WG_SIZE], *vec = &p->v[SPARCL__P_VEC];
    const int32_t was_m = *bm, was_n = *bn;
    while (*bm > 1 && block % *bm)
        *bm /= 2;
    while (*bn > n_min && block % *bn)
        *bn /= 2;
    if (block % *bm || block % *bn)
        return sparcl__fail(v->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "select_block %d must be a multiple of the %s tile (BLOCK_M %d, "
                            "BLOCK_N %d; BLOCK_N is at least %d)",
                            block, bwd ? "backward" : "kernel", was_m, was_n, n_min);
    if (*bm == was_m && *bn == was_n)
        return SPARCL_OK;
    const int32_t wg_max = bwd && *bn < *bm ? *bn : *bm;
    if (bm != &one && *wg > wg_max)
        *wg = wg_max;
    while (!bwd && *vec > 1 && *bn % *vec)
        *vec /= 2;
    const sparcl__problem prob = sparcl__problem_from_desc(desc);
    return desc->unchecked_params ? SPARCL_OK
                                  : sparcl__pset_check(v->ctx, schema, p, &prob, &v->ctx->limits);
}

static sparcl_status select_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                   sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    (void)report;
    sparcl_ctx *ctx = v->ctx;
    const sparcl_plan_desc *d = &v->desc;
    const int block = desc->select_block ? desc->select_block : DEFAULT_BLOCK;
    const int decoding = sparcl__pset_has(params, SPARCL__P_SPLITS);
    const sparcl__kernel_schema *family =
        decoding ? &sparcl__schema_attn_decode : &sparcl__schema_attn_fwd;
    if (!decoding)
        params->v[SPARCL__P_ALGO] = 0; /* the dense path cannot walk a selected layout */
    sparcl_status st = sparcl__select_fit_tile(v, desc, family, params, block);
    if (st != SPARCL_OK)
        return st;
    const int tm = decoding ? d->q_len : params->v[SPARCL__P_BLOCK_M];
    const int tn = params->v[SPARCL__P_BLOCK_N];
    dynsel *s = calloc(1, sizeof *s);
    if (!s)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a plan");
    pthread_mutex_init(&s->lock, NULL);
    s->inner = decoding ? &sparcl__kind_decode : &sparcl__kind_fused;
    s->view = v;
    s->block = block;
    s->n_qb = (int)sparcl__ceil_div_i64(d->q_len, block);
    s->n_kb = (int)sparcl__ceil_div_i64(d->kv_len, block);
    s->folded = *v;
    s->folded.desc.batch = 1;
    s->folded.desc.q_heads = d->batch * d->q_heads;
    s->folded.desc.kv_heads = d->batch * d->kv_heads;
    const char *names[SPARCL__SEL_KERNELS] = {"select_tiles", "select_cols", "select_scan",
                                              "select_pool", "select_blocks"};
    const sparcl__problem prob = sparcl__problem_from_desc(d);
    const sparcl__pset none = {{0}, 0};
    st = sparcl__sel_lists_init(ctx, desc, desc->layout, tm, tn, block, 0, &s->fwd);
    if (st == SPARCL_OK)
        st = alloc_workspace(s, d);
    if (st == SPARCL_OK)
        st = sparcl__family_kernels(ctx, &sparcl__schema_block_select, &prob, &none,
                                    SPARCL__SEL_KERNELS, names, s->kn);
    if (st == SPARCL_OK) {
        const sparcl__bwd_tiles *o = &s->fwd.out;
        sparcl__fused_tiles t = {{o->row_ptr, o->row_col, o->row_mask, o->mask_bits},
                                 s->folded.desc.q_heads,
                                 s->fwd.n_tr};
        st = decoding ? sparcl__decode_create_external(&s->folded, params, &t, &s->fused)
                      : sparcl__fused_create_external(&s->folded, params, &t, &s->fused);
    }
    if (st == SPARCL_OK && desc->layout)
        st = sparcl__layout_copy(ctx, desc->layout, &s->pin);
    if (st != SPARCL_OK) {
        select_free(s);
        return st;
    }
    *state = s;
    return SPARCL_OK;
}

/* Enqueues kernel `which` over global[0..3) after `wait`, into *ev. */
static sparcl_status launch(dynsel *s, cl_command_queue q, int which, const size_t *global,
                            cl_uint nw, const cl_event *wait, cl_event *ev)
{
    cl_int err =
        clEnqueueNDRangeKernel(q, s->kn[which], 3, NULL, global, NULL, nw, nw ? wait : NULL, ev);
    return err == CL_SUCCESS ? SPARCL_OK
                             : sparcl__fail_cl(s->view->ctx, err,
                                               which == SPARCL__SEL_POOL
                                                   ? "clEnqueueNDRangeKernel(select_pool)"
                                                   : "clEnqueueNDRangeKernel(select_blocks)");
}

/* Pools rows of x (q when t == 0, else k; strides ts[t]) into pooled. */
static sparcl_status enqueue_pool(dynsel *s, cl_command_queue q, const sparcl_strides *ts, int t,
                                  cl_mem x, cl_uint nw, const cl_event *wait, cl_event *ev)
{
    const sparcl_plan_desc *d = &s->view->desc;
    const cl_int len = t ? d->kv_len : d->q_len, heads = t ? d->kv_heads : d->q_heads;
    const cl_long st[3] = {ts[t].batch, ts[t].head, ts[t].seq};
    cl_kernel kn = s->kn[SPARCL__SEL_POOL];
    cl_mem pooled = s->scratch[t ? SPARCL__SEL_POOL_K : SPARCL__SEL_POOL_Q];
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &x);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &pooled);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &len);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &heads);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &d->head_dim);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &s->block);
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &st[i]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->view->ctx, err, "clSetKernelArg(select_pool)");
    const size_t global[3] = {(size_t)(t ? s->n_kb : s->n_qb) * (size_t)d->head_dim,
                              (size_t)heads, (size_t)d->batch};
    return launch(s, q, SPARCL__SEL_POOL, global, nw, wait, ev);
}

static sparcl_status enqueue_blocks(dynsel *s, cl_command_queue q, cl_uint nw, const cl_event *wait,
                                    cl_event *ev)
{
    const sparcl_plan_desc *d = &s->view->desc;
    const cl_int group = d->q_heads / d->kv_heads, causal = d->causal != 0;
    const cl_float scale = s->view->scale;
    cl_kernel kn = s->kn[SPARCL__SEL_BLOCKS];
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < SPARCL__SEL_SCRATCH; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->scratch[i]);
    const cl_int ints[8] = {s->n_qb,    s->n_kb, d->q_len, d->kv_len,
                            d->q_heads, group,   s->block, d->head_dim};
    for (int i = 0; i < 8; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_int), &ints[i]);
    const cl_int rule = d->select, k = d->select_k;
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &causal);
    err |= clSetKernelArg(kn, a++, sizeof(cl_float), &scale);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &rule);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &k);
    err |= clSetKernelArg(kn, a++, sizeof(cl_float), &d->select_tau);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->view->ctx, err, "clSetKernelArg(select_blocks)");
    const size_t global[3] = {(size_t)s->n_qb, (size_t)d->q_heads, (size_t)d->batch};
    return launch(s, q, SPARCL__SEL_BLOCKS, global, nw, wait, ev);
}

sparcl_status sparcl__select_enqueue_choice(dynsel *s, cl_command_queue queue,
                                            const sparcl_strides *ts, cl_mem q, cl_mem k,
                                            cl_uint num_wait, const cl_event *wait, cl_event *ev)
{
    cl_event *all = malloc(sizeof *all * (num_wait + 1));
    if (!all)
        return sparcl__fail(s->view->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
    cl_uint nw = 0;
    for (; nw < num_wait; ++nw)
        all[nw] = wait[nw];
    if (s->last)
        all[nw++] = s->last;
    cl_event pooled[2] = {NULL, NULL};
    sparcl_status st;
    if ((st = enqueue_pool(s, queue, ts, 0, q, nw, all, &pooled[0])) == SPARCL_OK &&
        (st = enqueue_pool(s, queue, ts, 1, k, nw, all, &pooled[1])) == SPARCL_OK)
        st = enqueue_blocks(s, queue, 2, pooled, ev);
    free(all);
    for (int i = 0; i < 2; ++i)
        if (pooled[i])
            clReleaseEvent(pooled[i]);
    return st;
}

void sparcl__select_set_last(dynsel *s, cl_event ev)
{
    clRetainEvent(ev);
    if (s->last)
        clReleaseEvent(s->last);
    s->last = ev;
}

/* Batches fold into heads when each tensor's batch stride is its heads
 * times its head stride (b * sb + h * sh == (b * heads + h) * sh). */
sparcl_status sparcl__select_check_fold(const dynsel *s, const sparcl_strides *ts)
{
    const sparcl_plan_desc *d = &s->view->desc;
    static const char *const names[4] = {"q", "k", "v", "out"};
    for (int t = 0; d->batch > 1 && t < 4; ++t) {
        const int heads = t == 1 || t == 2 ? d->kv_heads : d->q_heads;
        if (ts[t].batch != (int64_t)heads * ts[t].head)
            return sparcl__fail(s->view->ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "dynamic block selection with batch %d needs %s's batch stride "
                                "(%lld) to be heads %d x its head stride (%lld), as in "
                                "contiguous [B, H, S, D]",
                                d->batch, names[t], (long long)ts[t].batch, heads,
                                (long long)ts[t].head);
    }
    return SPARCL_OK;
}

static sparcl_status select_forward(void *state, const sparcl__fwd_call *c)
{
    dynsel *s = state;
    sparcl_status st = sparcl__select_check_fold(s, c->ts);
    if (st != SPARCL_OK)
        return st;
    pthread_mutex_lock(&s->lock);
    cl_event chosen = NULL, listed = NULL, fwd = NULL;
    if ((st = sparcl__select_enqueue_choice(s, c->queue, c->ts, c->q, c->k, c->num_wait, c->wait,
                                            &chosen)) == SPARCL_OK &&
        (st = sparcl__sel_lists_enqueue(s->view->ctx, &s->fwd, s->kn, &s->view->desc, s->block,
                                        s->scratch[SPARCL__SEL_CHOICE], c->queue, chosen,
                                        &listed)) == SPARCL_OK) {
        sparcl__fwd_call inner = *c;
        inner.num_wait = 1;
        inner.wait = &listed;
        inner.event = &fwd;
        st = s->inner->forward(s->fused, &inner);
    }
    if (chosen)
        clReleaseEvent(chosen);
    if (listed)
        clReleaseEvent(listed);
    if (fwd)
        sparcl__select_set_last(s, fwd);
    pthread_mutex_unlock(&s->lock);
    if (fwd && c->event)
        *c->event = fwd;
    else if (fwd)
        clReleaseEvent(fwd);
    return st;
}

const sparcl__kind_ops sparcl__kind_dynsel = {
    .name = "dynamic block selection",
    .family = &sparcl__schema_attn_fwd,
    .create = select_create,
    .forward = select_forward,
    .prepare_backward = sparcl__select_prepare_backward,
    .backward = sparcl__select_backward,
    .half_forward = 1,
    .half_no_backward = 1,
    .device_bytes = select_bytes,
    .free = select_free,
};

/* The same over split-KV decoding (attn_decode's parameters). */
const sparcl__kind_ops sparcl__kind_dynsel_decode = {
    .name = "dynamic block selection",
    .family = &sparcl__schema_attn_decode,
    .create = select_create,
    .forward = select_forward,
    .prepare_backward = sparcl__select_prepare_backward,
    .backward = sparcl__select_backward,
    .half_forward = 1,
    .half_no_backward = 1,
    .device_bytes = select_bytes,
    .free = select_free,
};

int sparcl__select_decodes(const sparcl_plan_desc *d, const sparcl__pset *params)
{
    const int block = d->select_block ? d->select_block : DEFAULT_BLOCK;
    return d->q_len <= block && sparcl__decode_selected(d, params);
}

/* ---- reading the choice back ------------------------------------------- */

SPARCL_API sparcl_status sparcl_plan_read_selection(sparcl_plan *plan, int batch,
                                                    sparcl_layout **out)
{
    if (out)
        *out = NULL;
    const sparcl__plan_view *v = sparcl__plan_view_of(plan);
    if (!v || !out)
        return sparcl__fail(v ? v->ctx : NULL, SPARCL_ERR_INVALID_ARGUMENT,
                            "sparcl_plan_read_selection: %s is NULL", v ? "out" : "plan");
    dynsel *s = sparcl__plan_state(plan, &sparcl__kind_dynsel);
    if (!s)
        s = sparcl__plan_state(plan, &sparcl__kind_dynsel_decode);
    sparcl_ctx *ctx = v->ctx;
    const sparcl_plan_desc *d = &v->desc;
    if (!s)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "the plan does not select blocks (desc.select is 0)");
    if (batch < 0 || batch >= d->batch)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "batch %d is outside [0, %d)", batch,
                            d->batch);
    const size_t row = (size_t)d->q_heads * (size_t)s->n_qb * (size_t)s->n_kb;
    uint8_t *mask = malloc(row ? row : 1);
    if (!mask)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes", row);
    pthread_mutex_lock(&s->lock);
    cl_event last = s->last;
    if (last)
        clRetainEvent(last);
    pthread_mutex_unlock(&s->lock);
    if (!last) {
        free(mask);
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "no forward call has run on this plan: nothing is selected yet");
    }
    cl_int err = clEnqueueReadBuffer(ctx->queue, s->scratch[SPARCL__SEL_CHOICE], CL_TRUE,
                                     (size_t)batch * row, row, mask, 1, &last, NULL);
    clReleaseEvent(last);
    if (err != CL_SUCCESS) {
        free(mask);
        return sparcl__fail_cl(ctx, err, "clEnqueueReadBuffer(selected blocks)");
    }
    sparcl_layout *sel = NULL, *causal = NULL, *both = NULL;
    sparcl_status st =
        sparcl_layout_init_block_mask(ctx, &sel, d->q_heads, d->q_len, d->kv_len, s->block, mask);
    free(mask);
    if (st == SPARCL_OK && s->pin) {
        const sparcl_layout *u[2] = {sel, s->pin};
        st = sparcl_layout_init_union(ctx, &both, u, 2);
        sparcl_layout_free(sel);
        sel = both;
    }
    if (st == SPARCL_OK && d->causal &&
        (st = sparcl_layout_init_causal(ctx, &causal, 1, d->q_len, d->kv_len, s->block)) ==
            SPARCL_OK) {
        const sparcl_layout *x[2] = {sel, causal};
        st = sparcl_layout_init_intersection(ctx, &both, x, 2);
        sparcl_layout_free(sel);
        sel = both;
    }
    sparcl_layout_free(causal);
    if (st != SPARCL_OK) {
        sparcl_layout_free(sel);
        return st;
    }
    *out = sel;
    return SPARCL_OK;
}
