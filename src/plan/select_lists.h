/*
 * select_lists.h -- the tile lists a dynamic block selection writes on the
 * device at one tile shape (BLOCK_M x BLOCK_N): the forward's row lists,
 * and for the backward its column lists too.  What does not depend on the
 * data is uploaded once: the pinned layout re-blocked to the tile with the
 * causal rule folded in (and its column view), and per tile row the "edge"
 * masks a selected tile needs where it crosses the diagonal or the end of
 * the keys.  Per call, cl/block_select.cl's select_tiles / select_cols
 * count, select_scan places and select_tiles / select_cols write the union
 * of the pinned tiles and those of the selected blocks.
 *
 * Capacity per head is a bound on what one head can list: per tile row the
 * visible tiles, and with top-k no more than the pinned tiles plus k
 * blocks' tiles.  Lists are indexed by the folded head b x q_heads + h.
 */
#ifndef SPARCL_SELECT_LISTS_H
#define SPARCL_SELECT_LISTS_H

#include "plan/bwd_tiles.h"
#include "sparcl.h"

enum { SPARCL__SEL_TILES, SPARCL__SEL_COLS, SPARCL__SEL_SCAN, SPARCL__SEL_LIST_KERNELS };

typedef struct sparcl__sel_lists {
    int tm, tn, n_tr, n_tc, pin_heads, n_pin_masks, cap, heads, cols;
    /* pinned rows (ptr, col, mask), edges (lo, hi, base), pinned columns
     * (ptr, row, mask; with cols only) */
    cl_mem fixed[9];
    cl_mem counts[2]; /* per folded head and tile row / tile column */
    /* The lists (row_* always; col_* with cols) and the mask bits: the
     * pinned masks, then the edge masks. */
    sparcl__bwd_tiles out;
    size_t bytes; /* device bytes of everything above */
} sparcl__sel_lists;

/* Builds the lists' fixed part and workspace for the plan `d` (batch x
 * q_heads folded heads) at tm x tn, both dividing `block`; `pin` is the
 * pinned layout or NULL; rule and k as desc.select and select_k; cols
 * nonzero adds the column view.  On failure call sparcl__sel_lists_release. */
sparcl_status sparcl__sel_lists_init(sparcl_ctx *ctx, const sparcl_plan_desc *d,
                                     const sparcl_layout *pin, int tm, int tn, int block, int cols,
                                     sparcl__sel_lists *out);

void sparcl__sel_lists_release(sparcl__sel_lists *l);

/* Enqueues the count, scan and write passes on `queue` from the selected
 * blocks `sel` (batch x q_heads x n_qb x n_kb bytes) after `wait`; *ev: the
 * last pass.  kn: block_select's select_tiles, select_cols, select_scan
 * kernels (the caller serializes their use). */
sparcl_status sparcl__sel_lists_enqueue(sparcl_ctx *ctx, const sparcl__sel_lists *l,
                                        const cl_kernel kn[SPARCL__SEL_LIST_KERNELS],
                                        const sparcl_plan_desc *d, int block, cl_mem sel,
                                        cl_command_queue queue, cl_event wait, cl_event *ev);

/* A copy of l->out whose arrays are retained (for an owner that releases
 * them, sparcl__plan_bwd_create). */
sparcl__bwd_tiles sparcl__sel_lists_share(const sparcl__sel_lists *l);

#endif
