/*
 * layout.h -- the layout object and the rule-driven builder that every
 * pattern generator uses.
 *
 * Storage is BSR per head at block size B.  Block rows of all heads are
 * concatenated: head h, block row r owns entries
 * [row_ptr[h*(nbr+1)+r], row_ptr[h*(nbr+1)+r+1]), with ascending columns.
 * Each entry is FULL (mask == -1: every in-range element attends) or PARTIAL
 * (mask = index of a B*B-bit mask in `bits`, bit r*B+c for element (r, c)).
 * Bits outside q_len x kv_len are always 0, and a stored block always has at
 * least one attended element.
 */
#ifndef SPARCL_LAYOUT_H
#define SPARCL_LAYOUT_H

#include "sparcl.h"

struct sparcl_layout {
    int heads, q_len, kv_len, block;
    int nbr, nbc;          /* block rows and columns */
    int64_t *row_ptr;      /* heads * (nbr + 1) */
    int32_t *col;          /* nnz */
    int64_t *mask;         /* nnz: -1 FULL, else mask index */
    uint64_t *bits;        /* n_masks * words_per_mask */
    int64_t nnz, n_masks;
    int words_per_mask;    /* ceil(B*B / 64) */
    int64_t pairs;         /* attended pairs over all heads */
    /* Nonzero for a pattern that follows the sequence, the same for every
     * head (dense, causal, window and streaming): the query at position pos
     * attends key j iff j <= pos + follow_right and (j < follow_sink or
     * j >= pos - follow_left), SPARCL__UNBOUNDED for an open side, so it
     * applies to any length (decoding over a growing KV cache).  0 for
     * every other layout, and for unions and the like. */
    int follow;
    int follow_sink;
    int64_t follow_left, follow_right;
};

/* What a block is, as a rule sees it. */
enum { SPARCL__BLOCK_EMPTY = 0, SPARCL__BLOCK_FULL = 1, SPARCL__BLOCK_PARTIAL = 2 };

/* A pattern as the builder consumes it.
 * - candidates: appends to cols[] (capacity nbc) the block columns of head h,
 *   block row br that may hold attended elements, and returns how many.  Any
 *   order; duplicates allowed.  Must be O(result), not O(nbc), for sparse
 *   patterns.
 * - classify (optional): SPARCL__BLOCK_EMPTY/FULL/PARTIAL for block
 *   (br, bc) considering only in-range elements; PARTIAL means "evaluate
 *   attends() per element".  NULL means always PARTIAL.
 * - attends: the token-exact predicate. */
typedef struct sparcl__rule {
    const void *self;
    int (*candidates)(const void *self, int h, int br, int32_t *cols);
    int (*classify)(const void *self, int h, int br, int bc);
    int (*attends)(const void *self, int h, int i, int j);
    /* Optional, for patterns whose rows are one interval of keys: sets
     * [*j0, *j1) to the keys query i attends (may extend past [0, kv_len);
     * empty when *j1 <= *j0).  PARTIAL blocks are then filled a row at a
     * time, O(B) instead of O(B^2) predicate calls. */
    void (*row_span)(const void *self, int h, int i, int64_t *j0, int64_t *j1);
    /* Optional: an upper bound on the stored blocks of any one block row (0
     * when unknown), from which the builder estimates the layout's memory
     * before building it. */
    int64_t row_blocks_max;
} sparcl__rule;

/* Bit helpers shared by the layout builder and the tiling: sets bits
 * [a, b) of a bit row, and copies n bits from src (bit offset so) into dst
 * (bit offset dofs) with OR.  Rows are arrays of 64-bit words. */
void sparcl__bits_set_range(uint64_t *row, int64_t a, int64_t b);
uint64_t sparcl__bits_get64(const uint64_t *src, int64_t so, int n);

/* Validates the common shape arguments, naming the wrong one. */
sparcl_status sparcl__layout_check_shape(sparcl_ctx *ctx, int heads, int q_len, int kv_len,
                                         int block);

/* Builds a layout from a rule.  Time O(candidates + B^2 * partial blocks)
 * (B per partial block with row_span),
 * memory O(nnz blocks). */
sparcl_status sparcl__layout_build(sparcl_ctx *ctx, sparcl_layout **out, int heads, int q_len,
                                   int kv_len, int block, const sparcl__rule *rule);

/* Marks `l` as a pattern that follows the sequence (see the struct). */
void sparcl__layout_set_follow(sparcl_layout *l, int sink, int64_t left, int64_t right);

/* A deep copy of `l` (layout_copy.c); on failure *out is NULL. */
sparcl_status sparcl__layout_copy(sparcl_ctx *ctx, const sparcl_layout *l, sparcl_layout **out);

/* The first stored entry of head h, block row br whose column is >= bc (the
 * row's end when none).  O(log row nnz). */
int64_t sparcl__layout_lower_bound(const sparcl_layout *l, int h, int br, int bc);

/* The stored entry of block (br, bc) of head h, or -1.  O(log row nnz). */
int64_t sparcl__layout_find(const sparcl_layout *l, int h, int br, int bc);

/* What the stored blocks of head h in block rows [r0, r1] and block columns
 * [c0, c1] of l are together: SPARCL__BLOCK_EMPTY when none is stored,
 * SPARCL__BLOCK_FULL when every one is stored FULL, else PARTIAL.  For
 * rules that read another layout (slices, packed batches).
 * O(blocks * log row nnz). */
int sparcl__layout_blocks_class(const sparcl_layout *l, int h, int r0, int r1, int c0, int c1);

/* 1 if element (r, c) of stored entry e (in block coordinates) attends. */
static inline int sparcl__layout_entry_bit(const sparcl_layout *l, int64_t e, int r, int c)
{
    int64_t m = l->mask[e];
    if (m < 0)
        return 1;
    int64_t bit = (int64_t)r * l->block + c;
    return (int)((l->bits[m * l->words_per_mask + bit / 64] >> (bit % 64)) & 1u);
}

#endif
