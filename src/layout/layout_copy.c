/*
 * layout_copy.c -- a deep copy of a layout.  Plans keep one so that passes
 * built after sparcl_plan_init (the backward, at its own tile) can re-block
 * the pattern once the caller has freed its layout.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"
#include "layout/layout.h"

static void *dup_array(const void *src, size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (p && bytes)
        memcpy(p, src, bytes);
    return p;
}

sparcl_status sparcl__layout_copy(sparcl_ctx *ctx, const sparcl_layout *l, sparcl_layout **out)
{
    *out = NULL;
    sparcl_layout *c = malloc(sizeof *c);
    if (!c)
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot copy the layout");
    *c = *l;
    /* A validated layout: its counts are non-negative sizes of its arrays. */
    c->row_ptr =
        dup_array(l->row_ptr, sizeof *l->row_ptr * (size_t)l->heads * (size_t)(l->nbr + 1));
    c->col = dup_array(l->col, sizeof *l->col * (size_t)l->nnz);
    c->mask = dup_array(l->mask, sizeof *l->mask * (size_t)l->nnz);
    c->bits = dup_array(l->bits,
                        sizeof *l->bits * (size_t)l->n_masks * (size_t)l->words_per_mask);
    if (!c->row_ptr || !c->col || !c->mask || !c->bits) {
        sparcl_layout_free(c);
        return sparcl__fail(ctx, SPARCL_ERR_OUT_OF_MEMORY, "cannot copy the layout");
    }
    *out = c;
    return SPARCL_OK;
}
