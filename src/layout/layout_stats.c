/*
 * layout_stats.c -- looking at a built layout from outside: summary
 * statistics (density, blocks per block row, memory) and a read-only view
 * of the BSR arrays for export.
 *
 * Both read the stored arrays only, so they cost O(heads * block rows) and
 * never touch q_len * kv_len.
 */
#include <string.h>

#include "runtime/error.h"
#include "layout/layout.h"

SPARCL_API sparcl_status sparcl_layout_get_stats(const sparcl_layout *l, sparcl_layout_stats *s)
{
    if (!l || !s)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            l ? "stats" : "layout");
    memset(s, 0, sizeof *s);
    s->heads = l->heads;
    s->q_len = l->q_len;
    s->kv_len = l->kv_len;
    s->block = l->block;
    s->block_rows = l->nbr;
    s->block_cols = l->nbc;
    s->nnz_blocks = l->nnz;
    s->partial_blocks = l->n_masks;
    s->full_blocks = l->nnz - l->n_masks;
    s->pairs = l->pairs;
    s->density = sparcl_layout_density(l);
    s->row_blocks_min = INT64_MAX;
    for (int h = 0; h < l->heads; ++h)
        for (int r = 0; r < l->nbr; ++r) {
            const int64_t *rp = l->row_ptr + (int64_t)h * (l->nbr + 1) + r;
            int64_t n = rp[1] - rp[0];
            s->row_blocks_min = n < s->row_blocks_min ? n : s->row_blocks_min;
            s->row_blocks_max = n > s->row_blocks_max ? n : s->row_blocks_max;
        }
    s->row_blocks_mean = (double)l->nnz / ((double)l->heads * l->nbr);
    s->bytes = sizeof *l + sizeof *l->row_ptr * (size_t)l->heads * (size_t)(l->nbr + 1) +
               (sizeof *l->col + sizeof *l->mask) * (size_t)l->nnz +
               sizeof *l->bits * (size_t)l->n_masks * (size_t)l->words_per_mask;
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_layout_get_bsr(const sparcl_layout *l, sparcl_layout_bsr *v)
{
    if (!l || !v)
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL",
                            l ? "view" : "layout");
    v->heads = l->heads;
    v->block = l->block;
    v->block_rows = l->nbr;
    v->block_cols = l->nbc;
    v->words_per_mask = l->words_per_mask;
    v->nnz = l->nnz;
    v->n_masks = l->n_masks;
    v->row_ptr = l->row_ptr;
    v->col = l->col;
    v->mask = l->mask;
    v->bits = l->bits;
    return SPARCL_OK;
}
