/*
 * select_lists.c -- a dynamic block selection's tile lists at one tile
 * shape (select_lists.h).
 */
#include <stdlib.h>
#include <string.h>

#include "layout/tiling.h"
#include "layout/tiling_transpose.h"
#include "plan/plan_tiles.h"
#include "plan/select_lists.h"
#include "runtime/checked.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/memory.h"

enum { PIN_PTR, PIN_COL, PIN_MASK, EDGE_LO, EDGE_HI, EDGE_BASE, PINC_PTR, PINC_ROW, PINC_MASK };

/* Per tile row tr: lo[tr] (selected tiles left of it are FULL), hi[tr]
 * (tiles from it on show no key), base[tr] (its first edge mask), and the
 * edge masks' bits: every (i, j) inside the sequences and, with causal,
 * j <= i + kv_len - q_len.  n_masks: their count. */
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

/* lo, hi and base of every tile row; the count of edge masks. */
static void edges_bounds(const sparcl_plan_desc *d, int tm, int tn, int n_tr, int n_tc, edges *e)
{
    const int64_t off = (int64_t)d->kv_len - d->q_len;
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
    edges_bounds(d, tm, tn, n_tr, n_tc, e);
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

/* The most tiles one head can list: per tile row its visible tiles, and
 * with top-k at most the pinned tiles plus k blocks of block / tn tiles. */
static int capacity(const sparcl_plan_desc *d, const sparcl__tiling *g, const edges *e, int n_tr,
                    int tn, int block)
{
    const int64_t per_block = block / tn;
    const int64_t sel =
        d->select == SPARCL_SELECT_TOPK ? (int64_t)d->select_k * per_block : INT64_MAX / 4;
    int64_t cap = 0;
    for (int tr = 0; tr < n_tr; ++tr) {
        int64_t pinned = 0;
        for (int h = 0; d->layout && h < g->heads; ++h) {
            const int64_t n = g->ptr[h * (n_tr + 1) + tr + 1] - g->ptr[h * (n_tr + 1) + tr];
            pinned = n > pinned ? n : pinned;
        }
        const int64_t bound = sel + pinned;
        cap += bound < e->hi[tr] ? bound : e->hi[tr];
    }
    return cap > INT32_MAX ? INT32_MAX : (int)cap;
}

/* A device buffer of `bytes` the kernels write, counted in l->bytes. */
static sparcl_status alloc_rw(sparcl_ctx *ctx, sparcl__sel_lists *l, cl_mem *out, size_t bytes)
{
    bytes = bytes ? bytes : sizeof(int32_t);
    sparcl_status st = sparcl__mem_check_device(ctx, "the dynamic block selection's tile lists",
                                                sparcl__sat_add(l->bytes, bytes));
    if (st != SPARCL_OK)
        return st;
    cl_int err;
    *out = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!*out)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY,
                            "cannot allocate %zu bytes for the dynamic block selection: %s", bytes,
                            sparcl__cl_error_name(err));
    l->bytes += bytes;
    return SPARCL_OK;
}

/* Uploads the pinned tiling (g, and its columns c when l->cols), the edges
 * and the mask bits (pinned, then edge masks). */
static sparcl_status upload_fixed(sparcl_ctx *ctx, sparcl__sel_lists *l, const sparcl__tiling *g,
                                  const sparcl__tiling_cols *c, const edges *e, int pinned)
{
    const size_t words = (size_t)l->tm * (size_t)((l->tn + 31) / 32);
    const size_t n_bits = ((size_t)g->n_masks + (size_t)e->n_masks) * words;
    sparcl_status st = sparcl__mem_check_host(ctx, "the selection's masks", n_bits * 4);
    if (st != SPARCL_OK)
        return st;
    int32_t *zeros = calloc((size_t)(l->n_tr > l->n_tc ? l->n_tr : l->n_tc) + 1, sizeof *zeros);
    uint32_t *bits = malloc(n_bits ? n_bits * 4 : 4);
    if (!zeros || !bits) {
        free(zeros);
        free(bits);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot allocate the selection's masks");
    }
    if (g->n_masks)
        memcpy(bits, g->bits, (size_t)g->n_masks * words * 4);
    if (e->n_masks)
        memcpy(bits + (size_t)g->n_masks * words, e->bits, (size_t)e->n_masks * words * 4);
    const size_t rows = (size_t)l->pin_heads * ((size_t)l->n_tr + 1);
    const size_t colp = (size_t)l->pin_heads * ((size_t)l->n_tc + 1);
    const size_t nnz = (size_t)g->nnz, n_tr = (size_t)l->n_tr;
    const struct {
        const void *data;
        size_t bytes;
    } arrays[9] = {
        {pinned ? g->ptr : zeros, rows * 4},
        {g->col, nnz * 4},
        {g->mask, nnz * 4},
        {e->lo, n_tr * 4},
        {e->hi, n_tr * 4},
        {e->base, n_tr * 4},
        {pinned && l->cols ? c->ptr : zeros, colp * 4},
        {l->cols ? c->row : NULL, nnz * 4},
        {l->cols ? c->mask : NULL, nnz * 4},
    };
    for (int i = 0; i < 9 && st == SPARCL_OK; ++i)
        if (i < 6 || l->cols)
            st = sparcl__upload(ctx, &l->fixed[i], arrays[i].data, arrays[i].bytes, &l->bytes);
    if (st == SPARCL_OK)
        st = sparcl__upload(ctx, &l->out.mask_bits, bits, n_bits * 4, &l->bytes);
    free(zeros);
    free(bits);
    return st;
}

/* The lists and counts, for l->heads folded heads of l->cap tiles each. */
static sparcl_status alloc_lists(sparcl_ctx *ctx, const sparcl_plan_desc *d, sparcl__sel_lists *l)
{
    const size_t heads = (size_t)l->heads;
    const size_t tiles = sparcl__sat_mul(heads, (size_t)l->cap);
    if (tiles > INT32_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "dynamic block selection needs room for %zu tiles (batch %d x "
                            "q_heads %d x %d per head at BLOCK_M %d x BLOCK_N %d), more than "
                            "2^31",
                            tiles, d->batch, d->q_heads, l->cap, l->tm, l->tn);
    sparcl__bwd_tiles *o = &l->out;
    sparcl_status st = SPARCL_OK;
    (void)((st = alloc_rw(ctx, l, &l->counts[0], heads * (size_t)l->n_tr * 4)) ||
           (st = alloc_rw(ctx, l, &o->row_ptr, heads * ((size_t)l->n_tr + 1) * 4)) ||
           (st = alloc_rw(ctx, l, &o->row_col, tiles * 4)) ||
           (st = alloc_rw(ctx, l, &o->row_mask, tiles * 4)));
    if (st == SPARCL_OK && l->cols)
        (void)((st = alloc_rw(ctx, l, &l->counts[1], heads * (size_t)l->n_tc * 4)) ||
               (st = alloc_rw(ctx, l, &o->col_ptr, heads * ((size_t)l->n_tc + 1) * 4)) ||
               (st = alloc_rw(ctx, l, &o->col_row, tiles * 4)) ||
               (st = alloc_rw(ctx, l, &o->col_mask, tiles * 4)));
    return st;
}

sparcl_status sparcl__sel_lists_init(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                     const sparcl_layout *pin, int tm, int tn, int block, int cols,
                                     sparcl__sel_lists *out)
{
    memset(out, 0, sizeof *out);
    sparcl__sel_lists *l = out;
    l->tm = tm;
    l->tn = tn;
    l->n_tr = (int)sparcl__ceil_div_i64(d->q_len, tm);
    l->n_tc = (int)sparcl__ceil_div_i64(d->kv_len, tn);
    l->heads = d->batch * d->q_heads;
    l->cols = cols;
    l->out.layout_heads = l->heads;
    l->out.ntr = l->n_tr;
    l->out.ntc = l->n_tc;
    sparcl__tiling g;
    sparcl__tiling_cols c;
    memset(&g, 0, sizeof g);
    memset(&c, 0, sizeof c);
    sparcl_status st = SPARCL_OK;
    if (pin)
        st = sparcl__tiling_build(ctx, pin, d->q_len, d->kv_len, d->causal, tm, tn, &g);
    if (st == SPARCL_OK && pin && cols)
        st = sparcl__tiling_transpose(ctx, &g, &c);
    edges e;
    memset(&e, 0, sizeof e);
    if (st == SPARCL_OK)
        st = edges_build(ctx, d, tm, tn, l->n_tr, l->n_tc, &e);
    if (st == SPARCL_OK) {
        l->pin_heads = pin ? g.heads : 1;
        l->n_pin_masks = (int)g.n_masks;
        l->cap = capacity(d, &g, &e, l->n_tr, tn, block);
        st = upload_fixed(ctx, l, &g, &c, &e, pin != NULL);
    }
    if (st == SPARCL_OK)
        st = alloc_lists(ctx, d, l);
    edges_free(&e);
    if (pin && cols)
        sparcl__tiling_cols_free(&c);
    if (pin)
        sparcl__tiling_free(&g);
    return st;
}

void sparcl__sel_lists_release(sparcl__sel_lists *l)
{
    for (int i = 0; i < 9; ++i)
        if (l->fixed[i])
            clReleaseMemObject(l->fixed[i]);
    for (int i = 0; i < 2; ++i)
        if (l->counts[i])
            clReleaseMemObject(l->counts[i]);
    sparcl__bwd_tiles_release(&l->out);
    memset(l, 0, sizeof *l);
}

sparcl__bwd_tiles sparcl__sel_lists_share(const sparcl__sel_lists *l)
{
    sparcl__bwd_tiles t = l->out;
    cl_mem ms[7] = {t.row_ptr, t.row_col,  t.row_mask, t.col_ptr,
                    t.col_row, t.col_mask, t.mask_bits};
    for (int i = 0; i < 7; ++i)
        if (ms[i])
            clRetainMemObject(ms[i]);
    t.bytes = 0; /* counted by the lists */
    return t;
}

/* select_tiles (rows) or select_cols (columns) in counting (write 0) or
 * writing (write 1) mode. */
static cl_int set_list_args(const sparcl__sel_lists *l, cl_kernel kn, int by_cols, cl_int write,
                            const sparcl_plan_desc *d, int block, cl_mem sel)
{
    const sparcl__bwd_tiles *o = &l->out;
    const int f = by_cols ? PINC_PTR : PIN_PTR;
    const cl_mem first[4] = {sel, l->fixed[f], l->fixed[f + 1], l->fixed[f + 2]};
    const cl_mem edge[3] = {l->fixed[EDGE_LO], l->fixed[EDGE_HI], l->fixed[EDGE_BASE]};
    const cl_mem lists[4] = {l->counts[by_cols], by_cols ? o->col_ptr : o->row_ptr,
                             by_cols ? o->col_row : o->row_col,
                             by_cols ? o->col_mask : o->row_mask};
    const cl_int n_qb = (cl_int)sparcl__ceil_div_i64(d->q_len, block);
    const cl_int n_kb = (cl_int)sparcl__ceil_div_i64(d->kv_len, block);
    const cl_int ints[9] = {write, l->n_tr, l->n_tc, n_qb, n_kb, l->tm, l->tn, block, d->q_heads};
    cl_uint a = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < 4; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &first[i]);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &l->pin_heads);
    for (int i = 0; i < 3; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &edge[i]);
    err |= clSetKernelArg(kn, a++, sizeof(cl_int), &l->n_pin_masks);
    for (int i = 0; i < 4; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_mem), &lists[i]);
    for (int i = 0; i < 9; ++i)
        err |= clSetKernelArg(kn, a++, sizeof(cl_int), &ints[i]);
    return err;
}

static cl_int set_scan_args(const sparcl__sel_lists *l, cl_kernel kn, int by_cols,
                            const sparcl_plan_desc *d)
{
    const cl_mem ptr = by_cols ? l->out.col_ptr : l->out.row_ptr;
    const cl_int n = by_cols ? l->n_tc : l->n_tr;
    cl_int err = CL_SUCCESS;
    err |= clSetKernelArg(kn, 0, sizeof(cl_mem), &l->counts[by_cols]);
    err |= clSetKernelArg(kn, 1, sizeof(cl_mem), &ptr);
    err |= clSetKernelArg(kn, 2, sizeof(cl_int), &n);
    err |= clSetKernelArg(kn, 3, sizeof(cl_int), &d->q_heads);
    err |= clSetKernelArg(kn, 4, sizeof(cl_int), &l->cap);
    return err;
}

sparcl_status sparcl__sel_lists_enqueue(sparcl_ctx *ctx, const sparcl__sel_lists *l,
                                        const cl_kernel kn[SPARCL__SEL_LIST_KERNELS],
                                        const sparcl_plan_desc *d, int block, cl_mem sel,
                                        cl_command_queue queue, cl_event wait, cl_event *ev)
{
    const size_t heads = (size_t)d->q_heads, batch = (size_t)d->batch;
    const size_t scan_global[3] = {heads, batch, 1};
    cl_event done[2] = {NULL, NULL};
    cl_int err = CL_SUCCESS;
    const char *what = "clSetKernelArg(select_tiles)";
    for (int by_cols = 0; by_cols <= (l->cols != 0) && err == CL_SUCCESS; ++by_cols) {
        cl_kernel list = kn[by_cols ? SPARCL__SEL_COLS : SPARCL__SEL_TILES];
        const size_t global[3] = {(size_t)(by_cols ? l->n_tc : l->n_tr), heads, batch};
        cl_event e[2] = {NULL, NULL};
        /* Arguments are captured at enqueue: one kernel object serves the
         * count and the write pass. */
        what = by_cols ? "select_cols (count)" : "select_tiles (count)";
        err = set_list_args(l, list, by_cols, 0, d, block, sel);
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(queue, list, 3, NULL, global, NULL, 1, &wait, &e[0]);
        if (err == CL_SUCCESS) {
            what = "select_scan";
            err = set_scan_args(l, kn[SPARCL__SEL_SCAN], by_cols, d);
        }
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(queue, kn[SPARCL__SEL_SCAN], 3, NULL, scan_global, NULL, 1,
                                         &e[0], &e[1]);
        if (err == CL_SUCCESS) {
            what = by_cols ? "select_cols (write)" : "select_tiles (write)";
            err = set_list_args(l, list, by_cols, 1, d, block, sel);
        }
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(queue, list, 3, NULL, global, NULL, 1, &e[1],
                                         &done[by_cols]);
        for (int i = 0; i < 2; ++i)
            if (e[i])
                clReleaseEvent(e[i]);
    }
    if (err == CL_SUCCESS && done[1]) {
        what = "clEnqueueMarkerWithWaitList(selection lists)";
        err = clEnqueueMarkerWithWaitList(queue, 2, done, ev);
    } else if (err == CL_SUCCESS) {
        *ev = done[0];
        done[0] = NULL;
    }
    for (int i = 0; i < 2; ++i)
        if (done[i])
            clReleaseEvent(done[i]);
    return err == CL_SUCCESS ? SPARCL_OK : sparcl__fail_cl(ctx, err, what);
}
