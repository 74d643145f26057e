/*
 * kind_select.c -- dynamic block selection: a plan whose every call chooses
 * its key blocks from q and k on the device (cl/block_select.cl), writes
 * them as the tiled layout attn_fwd walks, and runs the fused softmax
 * forward over it (kind_fused.h), all in the caller's queue, chained by
 * events, with no host round trip and no plan rebuild per call.
 *
 * The plan uploads once what does not depend on the data: the pinned
 * layout (desc.layout) re-blocked to the kernel's tile with the causal rule
 * folded in, and per tile row the "edge" masks a selected tile needs where
 * it crosses the diagonal or the end of the keys.  Selected tiles left of a
 * row's edge are FULL.  Capacity for every visible tile of every head is
 * allocated up front: O(batch x heads x tiles) ints, with the pooled Q and
 * K (O(N x D / block)) and the per-block scores (O(blocks)).
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
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/memory.h"

#define DEFAULT_BLOCK 64

enum { K_POOL, K_BLOCKS, K_TILES, K_SCAN, N_KERNELS };
enum { PIN_PTR, PIN_COL, PIN_MASK, EDGE_LO, EDGE_HI, EDGE_BASE, N_FIXED };
enum { POOL_Q, POOL_K, SEL, SCORE, WEIGHT, COUNTS, N_SCRATCH };

typedef struct dynsel {
    const sparcl__plan_view *view;
    sparcl__plan_view folded; /* what attn_fwd sees: batches folded into heads */
    void *fused;              /* the fused softmax state over `tiles` */
    cl_kernel kn[N_KERNELS];
    cl_mem fixed[N_FIXED];
    cl_mem scratch[N_SCRATCH];
    cl_mem tiles[4]; /* tile_ptr, tile_col, tile_mask, mask_bits */
    int block, n_qb, n_kb, n_tr, n_tc, tm, tn, pin_heads, n_pin_masks, cap;
    int rule, k;
    float tau;
    size_t bytes;
    sparcl_layout *pin; /* own copy (NULL: nothing pinned), for the read-back */
    pthread_mutex_t lock;
    cl_event last; /* the previous call's forward: the workspace's last user */
} dynsel;

static void select_free(void *state)
{
    dynsel *s = state;
    if (!s)
        return;
    sparcl__kind_fused.free(s->fused);
    for (int i = 0; i < N_KERNELS; ++i)
        if (s->kn[i])
            clReleaseKernel(s->kn[i]);
    cl_mem *all[3] = {s->fixed, s->scratch, s->tiles};
    const int n[3] = {N_FIXED, N_SCRATCH, 4};
    for (int g = 0; g < 3; ++g)
        for (int i = 0; i < n[g]; ++i)
            if (all[g][i])
                clReleaseMemObject(all[g][i]);
    if (s->last)
        clReleaseEvent(s->last);
    sparcl_layout_free(s->pin);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static size_t select_bytes(const void *state)
{
    const dynsel *s = state;
    return s->bytes + sparcl__kind_fused.device_bytes(s->fused);
}

/* A device buffer of `bytes` the kernels write, counted in *counted. */
static sparcl_status alloc_rw(sparcl_ctx *ctx, cl_mem *out, size_t bytes, size_t *counted)
{
    bytes = bytes ? bytes : sizeof(int32_t);
    sparcl_status st = sparcl__mem_check_device(ctx, "the dynamic block selection's workspace",
                                                sparcl__sat_add(*counted, bytes));
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    *out = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!*out)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate %zu bytes for the dynamic block selection: %s", bytes,
                            sparcl__cl_error_name(err));
    *counted += bytes;
    return SPARCL_OK;
}

/* Per tile row tr: lo[tr] (selected tiles left of it are FULL), hi[tr]
 * (tiles from it on show no key), base[tr] (its first edge mask), and the
 * edge masks' bits: every (i, j) inside the sequences and, with causal,
 * j <= i + kv_len - q_len.  *n_masks: their count. */
typedef struct edges {
    int32_t *lo, *hi, *base;
    uint32_t *bits;
    int64_t n_masks;
} edges;

static void edges_free(edges *e)
{
    free(e->lo);
    free(e->hi);
    free(e->base);
    free(e->bits);
}

static sparcl_status edges_build(sparcl_ctx *ctx, const sparcl_plan_desc *d, int tm, int tn,
                                 int n_tr, int n_tc, edges *e)
{
    memset(e, 0, sizeof *e);
    const int64_t off = (int64_t)d->kv_len - d->q_len;
    const int mw = (tn + 31) / 32;
    e->lo = malloc(sizeof *e->lo * (size_t)n_tr);
    e->hi = malloc(sizeof *e->hi * (size_t)n_tr);
    e->base = malloc(sizeof *e->base * (size_t)n_tr);
    if (!e->lo || !e->hi || !e->base)
        goto oom;
    for (int tr = 0; tr < n_tr; ++tr) {
        const int64_t r0 = (int64_t)tr * tm;
        const int64_t r1 = r0 + tm < d->q_len ? r0 + tm : d->q_len;
        int64_t hi = n_tc, lo = n_tc;
        if (d->causal) {
            const int64_t last = r1 - 1 + off, first = r0 + off + 1;
            hi = last < 0 ? 0 : last / tn + 1 < n_tc ? last / tn + 1 : n_tc;
            lo = first <= 0 ? 0 : first / tn;
        }
        if (d->kv_len % tn && hi == n_tc && lo > n_tc - 1)
            lo = n_tc - 1;
        lo = lo < hi ? lo : hi;
        e->lo[tr] = (int32_t)lo;
        e->hi[tr] = (int32_t)hi;
        e->base[tr] = (int32_t)e->n_masks;
        e->n_masks += hi - lo;
    }
    const size_t words = (size_t)tm * (size_t)mw;
    const size_t bytes = sparcl__sat_mul(sparcl__sat_mul((size_t)e->n_masks, words), 4);
    sparcl_status st = sparcl__mem_check_host(ctx, "the selection's edge masks", bytes);
    if (st != SPARCL_OK) {
        edges_free(e);
        return st;
    }
    e->bits = calloc(bytes ? bytes / 4 : 1, 4);
    if (!e->bits)
        goto oom;
    for (int tr = 0; tr < n_tr; ++tr)
        for (int c = e->lo[tr]; c < e->hi[tr]; ++c) {
            uint32_t *m = e->bits + (size_t)(e->base[tr] + c - e->lo[tr]) * words;
            for (int r = 0; r < tm; ++r) {
                const int64_t i = (int64_t)tr * tm + r;
                for (int x = 0; i < d->q_len && x < tn; ++x) {
                    const int64_t j = (int64_t)c * tn + x;
                    if (j < d->kv_len && (!d->causal || j <= i + off))
                        m[r * mw + x / 32] |= (uint32_t)1 << (x % 32);
                }
            }
        }
    return SPARCL_OK;
oom:
    edges_free(e);
    return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the selection's edges");
}

/* The pinned tiling and the edges, uploaded; mask_bits holds the pinned
 * masks, then the edge masks. */
static sparcl_status upload_fixed(dynsel *s, const sparcl_plan_desc *d)
{
    sparcl_ctx *ctx = s->view->ctx;
    sparcl__tiling g;
    memset(&g, 0, sizeof g);
    sparcl_status st = SPARCL_OK;
    if (d->layout)
        st = sparcl__tiling_build(ctx, d->layout, d->q_len, d->kv_len, d->causal, s->tm, s->tn, &g);
    if (st != SPARCL_OK)
        return st;
    edges e;
    if ((st = edges_build(ctx, d, s->tm, s->tn, s->n_tr, s->n_tc, &e)) != SPARCL_OK) {
        sparcl__tiling_free(&g);
        return st;
    }
    s->pin_heads = d->layout ? g.heads : 1;
    s->n_pin_masks = (int)g.n_masks;
    int32_t *zeros = NULL;
    uint32_t *bits = NULL;
    const size_t words = (size_t)s->tm * (size_t)((s->tn + 31) / 32);
    const size_t n_bits = ((size_t)g.n_masks + (size_t)e.n_masks) * words;
    if (!d->layout)
        zeros = calloc((size_t)s->n_tr + 1, sizeof *zeros);
    if ((st = sparcl__mem_check_host(ctx, "the selection's masks", n_bits * 4)) == SPARCL_OK &&
        (bits = malloc(n_bits ? n_bits * 4 : 4)) != NULL && (d->layout || zeros)) {
        if (g.n_masks)
            memcpy(bits, g.bits, (size_t)g.n_masks * words * 4);
        if (e.n_masks)
            memcpy(bits + (size_t)g.n_masks * words, e.bits, (size_t)e.n_masks * words * 4);
        const size_t ptrs = (size_t)s->pin_heads * ((size_t)s->n_tr + 1);
        size_t *n = &s->bytes;
        (void)((st = sparcl__upload(ctx, &s->fixed[PIN_PTR], d->layout ? g.ptr : zeros, ptrs * 4,
                                    n)) ||
               (st = sparcl__upload(ctx, &s->fixed[PIN_COL], g.col, (size_t)g.nnz * 4, n)) ||
               (st = sparcl__upload(ctx, &s->fixed[PIN_MASK], g.mask, (size_t)g.nnz * 4, n)) ||
               (st = sparcl__upload(ctx, &s->fixed[EDGE_LO], e.lo, (size_t)s->n_tr * 4, n)) ||
               (st = sparcl__upload(ctx, &s->fixed[EDGE_HI], e.hi, (size_t)s->n_tr * 4, n)) ||
               (st = sparcl__upload(ctx, &s->fixed[EDGE_BASE], e.base, (size_t)s->n_tr * 4, n)) ||
               (st = sparcl__upload(ctx, &s->tiles[3], bits, n_bits * 4, n)));
    } else if (st == SPARCL_OK) {
        st = sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the selection's masks");
    }
    int64_t cap = 0;
    for (int tr = 0; tr < s->n_tr; ++tr)
        cap += e.hi[tr];
    s->cap = cap > INT32_MAX ? INT32_MAX : (int)cap;
    free(zeros);
    free(bits);
    edges_free(&e);
    sparcl__tiling_free(&g);
    return st;
}

/* The workspace: pooled Q and K, choices and scores, counts, tile lists. */
static sparcl_status alloc_workspace(dynsel *s, const sparcl_plan_desc *d)
{
    sparcl_ctx *ctx = s->view->ctx;
    const size_t bq = (size_t)d->batch * (size_t)d->q_heads,
                 bk = (size_t)d->batch * (size_t)d->kv_heads;
    const size_t rows = bq * (size_t)s->n_qb, blocks = rows * (size_t)s->n_kb;
    const size_t tiles = sparcl__sat_mul(bq, (size_t)s->cap);
    if (tiles > INT32_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "dynamic block selection needs room for %zu tiles (batch %d x "
                            "q_heads %d x %d per head at BLOCK_M %d x BLOCK_N %d), more than "
                            "2^31",
                            tiles, d->batch, d->q_heads, s->cap, s->tm, s->tn);
    const size_t hd = (size_t)d->head_dim * sizeof(float);
    const size_t sizes[N_SCRATCH] = {rows * hd,  bk * (size_t)s->n_kb * hd, blocks, blocks * 4,
                                     blocks * 4, bq * (size_t)s->n_tr * 4};
    sparcl_status st = SPARCL_OK;
    for (int i = 0; i < N_SCRATCH && st == SPARCL_OK; ++i)
        st = alloc_rw(ctx, &s->scratch[i], sizes[i], &s->bytes);
    if (st == SPARCL_OK)
        st = alloc_rw(ctx, &s->tiles[0], bq * ((size_t)s->n_tr + 1) * 4, &s->bytes);
    for (int i = 1; i < 3 && st == SPARCL_OK; ++i)
        st = alloc_rw(ctx, &s->tiles[i], tiles * 4, &s->bytes);
    return st;
}

/* Shrinks the tuned tile until it divides the selection block: BLOCK_M and
 * BLOCK_N halve (their choices are powers of two), WG_SIZE and VEC follow,
 * and a changed choice is checked again as any choice is. */
static sparcl_status fit_tile(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                              sparcl__pset *p, int block)
{
    int32_t *bm = &p->v[SPARCL__P_BLOCK_M], *bn = &p->v[SPARCL__P_BLOCK_N];
    int32_t *wg = &p->v[SPARCL__P_WG_SIZE], *vec = &p->v[SPARCL__P_VEC];
    const int32_t was_m = *bm, was_n = *bn;
    while (*bm > 1 && block % *bm)
        *bm /= 2;
    while (*bn > 8 && block % *bn)
        *bn /= 2;
    if (block % *bm || block % *bn)
        return sparcl__fail(v->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "select_block %d must be a multiple of the kernel tile (BLOCK_M %d, "
                            "BLOCK_N %d; BLOCK_N is at least 8)",
                            block, was_m, was_n);
    if (*bm == was_m && *bn == was_n)
        return SPARCL_OK;
    if (*wg > *bm)
        *wg = *bm;
    while (*vec > 1 && *bn % *vec)
        *vec /= 2;
    const sparcl__problem prob = sparcl__problem_from_desc(desc);
    return desc->unchecked_params
               ? SPARCL_OK
               : sparcl__pset_check(v->ctx, &sparcl__schema_attn_fwd, p, &prob, &v->ctx->limits);
}

static sparcl_status select_create(const sparcl__plan_view *v, const sparcl_plan_desc *desc,
                                   sparcl__pset *params, sparcl__plan_report *report, void **state)
{
    (void)report;
    sparcl_ctx *ctx = v->ctx;
    const sparcl_plan_desc *d = &v->desc;
    const int block = desc->select_block ? desc->select_block : DEFAULT_BLOCK;
    params->v[SPARCL__P_ALGO] = 0; /* the dense path cannot walk a selected layout */
    sparcl_status st = fit_tile(v, desc, params, block);
    if (st != SPARCL_OK)
        return st;
    const int tm = params->v[SPARCL__P_BLOCK_M], tn = params->v[SPARCL__P_BLOCK_N];
    dynsel *s = calloc(1, sizeof *s);
    if (!s)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a plan");
    pthread_mutex_init(&s->lock, NULL);
    s->view = v;
    s->block = block;
    s->tm = tm;
    s->tn = tn;
    s->n_qb = (int)sparcl__ceil_div_i64(d->q_len, block);
    s->n_kb = (int)sparcl__ceil_div_i64(d->kv_len, block);
    s->n_tr = (int)sparcl__ceil_div_i64(d->q_len, tm);
    s->n_tc = (int)sparcl__ceil_div_i64(d->kv_len, tn);
    s->rule = desc->select;
    s->k = desc->select_k;
    s->tau = desc->select_tau;
    s->folded = *v;
    s->folded.desc.batch = 1;
    s->folded.desc.q_heads = d->batch * d->q_heads;
    s->folded.desc.kv_heads = d->batch * d->kv_heads;
    const char *names[N_KERNELS] = {"select_pool", "select_blocks", "select_tiles", "select_scan"};
    const sparcl__problem prob = sparcl__problem_from_desc(d);
    const sparcl__pset none = {{0}, 0};
    st = upload_fixed(s, desc);
    if (st == SPARCL_OK)
        st = alloc_workspace(s, d);
    if (st == SPARCL_OK)
        st = sparcl__family_kernels(ctx, &sparcl__schema_block_select, &prob, &none, N_KERNELS,
                                    names, s->kn);
    if (st == SPARCL_OK) {
        sparcl__fused_tiles t = {
            {s->tiles[0], s->tiles[1], s->tiles[2], s->tiles[3]}, s->folded.desc.q_heads, s->n_tr};
        st = sparcl__fused_create_external(&s->folded, params, &t, &s->fused);
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

/* Enqueues `kn` over global[0..3) after `wait`, into *ev. */
static sparcl_status launch(dynsel *s, cl_command_queue q, int which, const size_t *global,
                            cl_uint nw, const cl_event *wait, cl_event *ev)
{
    static const char *const what[N_KERNELS] = {
        "clEnqueueNDRangeKernel(select_pool)", "clEnqueueNDRangeKernel(select_blocks)",
        "clEnqueueNDRangeKernel(select_tiles)", "clEnqueueNDRangeKernel(select_scan)"};
    cl_int err =
        clEnqueueNDRangeKernel(q, s->kn[which], 3, NULL, global, NULL, nw, nw ? wait : NULL, ev);
    return err == CL_SUCCESS ? SPARCL_OK : sparcl__fail_cl(s->view->ctx, err, what[which]);
}

/* Pools rows of x (len rows, `heads` heads, strides ts) into pooled. */
static sparcl_status enqueue_pool(dynsel *s, const sparcl__fwd_call *c, int t, cl_uint nw,
                                  const cl_event *wait, cl_event *ev)
{
    const sparcl_plan_desc *d = &s->view->desc;
    const cl_int len = t ? d->kv_len : d->q_len, heads = t ? d->kv_heads : d->q_heads;
    const cl_long st[3] = {c->ts[t].batch, c->ts[t].head, c->ts[t].seq};
    cl_kernel kn = s->kn[K_POOL];
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), t ? &c->k : &c->q);
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->scratch[t ? POOL_K : POOL_Q]);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &len);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &heads);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &d->head_dim);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &s->block);
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_long), &st[i]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->view->ctx, err, "clSetKernelArg(select_pool)");
    const size_t global[3] = {(size_t)(t ? s->n_kb : s->n_qb), (size_t)heads, (size_t)d->batch};
    return launch(s, c->queue, K_POOL, global, nw, wait, ev);
}

static sparcl_status enqueue_blocks(dynsel *s, cl_command_queue q, cl_uint nw, const cl_event *wait,
                                    cl_event *ev)
{
    const sparcl_plan_desc *d = &s->view->desc;
    const cl_int group = d->q_heads / d->kv_heads, causal = d->causal != 0;
    const cl_float scale = s->view->scale;
    cl_kernel kn = s->kn[K_BLOCKS];
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    const int bufs[5] = {POOL_Q, POOL_K, SEL, SCORE, WEIGHT};
    for (int i = 0; i < 5; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->scratch[bufs[i]]);
    const cl_int ints[8] = {s->n_qb,    s->n_kb, d->q_len, d->kv_len,
                            d->q_heads, group,   s->block, d->head_dim};
    for (int i = 0; i < 8; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_int), &ints[i]);
    const cl_int rule = s->rule, k = s->k;
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &causal);
    err |= clSetKernelArg(kn, a++, sizeof(cl_float), &scale);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &rule);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &k);
    err |= clSetKernelArg(kn, a++, sizeof(cl_float), &s->tau);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->view->ctx, err, "clSetKernelArg(select_blocks)");
    const size_t global[3] = {(size_t)s->n_qb, (size_t)d->q_heads, (size_t)d->batch};
    return launch(s, q, K_BLOCKS, global, nw, wait, ev);
}

/* select_tiles in counting (write 0) or writing (write 1) mode. */
static sparcl_status enqueue_tiles(dynsel *s, cl_command_queue q, cl_int write, cl_uint nw,
                                   const cl_event *wait, cl_event *ev)
{
    const sparcl_plan_desc *d = &s->view->desc;
    cl_kernel kn = s->kn[K_TILES];
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    const cl_mem mems[12] = {s->scratch[SEL],
                             s->fixed[PIN_PTR],
                             s->fixed[PIN_COL],
                             s->fixed[PIN_MASK],
                             NULL,
                             s->fixed[EDGE_LO],
                             s->fixed[EDGE_HI],
                             s->fixed[EDGE_BASE],
                             NULL,
                             s->scratch[COUNTS],
                             s->tiles[0],
                             s->tiles[1]};
    for (int i = 0; i < 12; ++i) {
        if (i == 4)
            err |= clSetKernelArg(kn, a++, sizeof(cl_int), &s->pin_heads);
        else if (i == 8)
            err |= clSetKernelArg(kn, a++, sizeof(cl_int), &s->n_pin_masks);
        else
            err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &mems[i]);
    }
    err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &s->tiles[2]);
    const cl_int ints[9] = {write, s->n_tr, s->n_tc,  s->n_qb,   s->n_kb,
                            s->tm, s->tn,   s->block, d->q_heads};
    for (int i = 0; i < 9; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_int), &ints[i]);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->view->ctx, err, "clSetKernelArg(select_tiles)");
    const size_t global[3] = {(size_t)s->n_tr, (size_t)d->q_heads, (size_t)d->batch};
    return launch(s, q, K_TILES, global, nw, wait, ev);
}

static sparcl_status enqueue_scan(dynsel *s, cl_command_queue q, cl_uint nw, const cl_event *wait,
                                  cl_event *ev)
{
    const sparcl_plan_desc *d = &s->view->desc;
    cl_kernel kn = s->kn[K_SCAN];
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, 0, sizeof(cl_mem), &s->scratch[COUNTS]);
    err |= clSetKernelArg(kn, 1, sizeof(cl_mem), &s->tiles[0]);
    err |= clSetKernelArg(kn, 2, sizeof(cl_int), &s->n_tr);
    err |= clSetKernelArg(kn, 3, sizeof(cl_int), &d->q_heads);
    err |= clSetKernelArg(kn, 4, sizeof(cl_int), &s->cap);
    if (err != CL_SUCCESS)
        return sparcl__fail_cl(s->view->ctx, err, "clSetKernelArg(select_scan)");
    const size_t global[3] = {(size_t)d->q_heads, (size_t)d->batch, 1};
    return launch(s, q, K_SCAN, global, nw, wait, ev);
}

/* Batches fold into heads when each tensor's batch stride is its heads
 * times its head stride (b * sb + h * sh == (b * heads + h) * sh). */
static sparcl_status check_fold(const dynsel *s, const sparcl__fwd_call *c)
{
    const sparcl_plan_desc *d = &s->view->desc;
    static const char *const names[4] = {"q", "k", "v", "out"};
    for (int t = 0; d->batch > 1 && t < 4; ++t) {
        const int heads = t == 1 || t == 2 ? d->kv_heads : d->q_heads;
        if (c->ts[t].batch != (int64_t)heads * c->ts[t].head)
            return sparcl__fail(s->view->ctx, SPARCL_ERR_NOT_SUPPORTED,
                                "dynamic block selection with batch %d needs %s's batch stride "
                                "(%lld) to be heads %d x its head stride (%lld), as in "
                                "contiguous [B, H, S, D]",
                                d->batch, names[t], (long long)c->ts[t].batch, heads,
                                (long long)c->ts[t].head);
    }
    return SPARCL_OK;
}

static sparcl_status select_forward(void *state, const sparcl__fwd_call *c)
{
    dynsel *s = state;
    sparcl_status st = check_fold(s, c);
    if (st != SPARCL_OK)
        return st;
    pthread_mutex_lock(&s->lock);
    cl_event *wait = malloc(sizeof *wait * (c->num_wait + 1));
    cl_event ev[6] = {NULL};
    cl_event fwd = NULL;
    cl_uint nw = 0;
    if (!wait) {
        pthread_mutex_unlock(&s->lock);
        return sparcl__fail(s->view->ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate a wait list");
    }
    for (; nw < c->num_wait; ++nw)
        wait[nw] = c->wait[nw];
    if (s->last)
        wait[nw++] = s->last;
    if ((st = enqueue_pool(s, c, 0, nw, wait, &ev[0])) == SPARCL_OK &&
        (st = enqueue_pool(s, c, 1, nw, wait, &ev[1])) == SPARCL_OK &&
        (st = enqueue_blocks(s, c->queue, 2, ev, &ev[2])) == SPARCL_OK &&
        (st = enqueue_tiles(s, c->queue, 0, 1, &ev[2], &ev[3])) == SPARCL_OK &&
        (st = enqueue_scan(s, c->queue, 1, &ev[3], &ev[4])) == SPARCL_OK &&
        (st = enqueue_tiles(s, c->queue, 1, 1, &ev[4], &ev[5])) == SPARCL_OK) {
        sparcl__fwd_call inner = *c;
        inner.num_wait = 1;
        inner.wait = &ev[5];
        inner.event = &fwd;
        st = sparcl__kind_fused.forward(s->fused, &inner);
    }
    free(wait);
    for (int i = 0; i < 6; ++i)
        if (ev[i])
            clReleaseEvent(ev[i]);
    if (fwd) {
        if (s->last)
            clReleaseEvent(s->last);
        s->last = fwd;
        clRetainEvent(fwd);
    }
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
    .device_bytes = select_bytes,
    .free = select_free,
};

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
    cl_int err = clEnqueueReadBuffer(ctx->queue, s->scratch[SEL], CL_TRUE, (size_t)batch * row, row,
                                     mask, 1, &last, NULL);
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
