/*
 * test_layout.c -- the foundation layouts (dense, causal, window, block
 * mask) against predicates written from their definitions, on odd shapes and
 * block sizes; statistics; invalid arguments.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "sparcl.h"

typedef struct shape {
    int lq, lk, block, left, right;
} shape;

static int in_window(const shape *s, int i, int j)
{
    long pos = (long)i + s->lk - s->lq;
    return j >= pos - s->left && j <= pos + s->right;
}

/* Compares every (i, j) of head 0 with `want` and the pair count. */
static void check_layout(const sparcl_layout *l, const shape *s, int kind)
{
    long pairs = 0;
    for (int i = 0; i < s->lq; ++i)
        for (int j = 0; j < s->lk; ++j) {
            int want = kind == 0   ? 1
                       : kind == 1 ? j <= i + s->lk - s->lq
                                   : in_window(s, i, j);
            pairs += want;
            cr_assert_eq(sparcl_layout_attends(l, 0, i, j), want,
                         "kind %d lq %d lk %d block %d: (%d, %d)", kind, s->lq, s->lk, s->block,
                         i, j);
        }
    cr_assert_eq(sparcl_layout_pairs(l), pairs);
    cr_assert_float_eq(sparcl_layout_density(l), (double)pairs / ((double)s->lq * s->lk), 1e-12);
    cr_assert_eq(sparcl_layout_attends(l, 0, -1, 0), 0);
    cr_assert_eq(sparcl_layout_attends(l, 0, 0, s->lk), 0);
    cr_assert_eq(sparcl_layout_attends(l, 1, 0, 0), 0);
}

ParameterizedTestParameters(layout, basic_patterns_are_token_exact)
{
    static shape shapes[] = {
        {1, 1, 1, 0, 0},     {17, 17, 4, 3, 0},  {113, 113, 16, 7, 5}, {113, 239, 64, 50, 9},
        {239, 113, 7, 0, 20}, {64, 64, 64, 63, 63}, {100, 37, 13, 1, 1}, {5, 300, 32, 200, 0},
    };
    return cr_make_param_array(shape, shapes, sizeof shapes / sizeof shapes[0]);
}

ParameterizedTest(shape *s, layout, basic_patterns_are_token_exact)
{
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_dense(NULL, &l, 1, s->lq, s->lk, s->block), SPARCL_OK);
    check_layout(l, s, 0);
    sparcl_layout_free(l);
    cr_assert_eq(sparcl_layout_init_causal(NULL, &l, 1, s->lq, s->lk, s->block), SPARCL_OK);
    check_layout(l, s, 1);
    sparcl_layout_free(l);
    cr_assert_eq(sparcl_layout_init_window(NULL, &l, 1, s->lq, s->lk, s->block, s->left, s->right),
                 SPARCL_OK);
    check_layout(l, s, 2);
    cr_assert_eq(sparcl_layout_block(l), s->block);
    cr_assert_eq(sparcl_layout_q_len(l), s->lq);
    cr_assert_eq(sparcl_layout_kv_len(l), s->lk);
    sparcl_layout_free(l);
}

Test(layout, block_mask_per_head)
{
    int heads = 3, lq = 50, lk = 37, B = 8, nbr = 7, nbc = 5;
    uint8_t *mask = calloc((size_t)heads * nbr * nbc, 1);
    for (int h = 0; h < heads; ++h)
        for (int r = 0; r < nbr; ++r)
            for (int c = 0; c < nbc; ++c)
                mask[(h * nbr + r) * nbc + c] = (r + c + h) % 3 == 0;
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_block_mask(NULL, &l, heads, lq, lk, B, mask), SPARCL_OK);
    cr_assert_eq(sparcl_layout_heads(l), heads);
    long pairs = 0, blocks = 0;
    for (int h = 0; h < heads; ++h) {
        for (int r = 0; r < nbr; ++r)
            for (int c = 0; c < nbc; ++c)
                blocks += mask[(h * nbr + r) * nbc + c] != 0;
        for (int i = 0; i < lq; ++i)
            for (int j = 0; j < lk; ++j) {
                int want = mask[(h * nbr + i / B) * nbc + j / B] != 0;
                pairs += want;
                cr_assert_eq(sparcl_layout_attends(l, h, i, j), want, "h %d (%d, %d)", h, i, j);
            }
    }
    cr_assert_eq(sparcl_layout_pairs(l), pairs);
    cr_assert_eq(sparcl_layout_nnz_blocks(l), blocks);
    sparcl_layout_free(l);
    free(mask);
}

Test(layout, sparse_patterns_store_only_their_blocks)
{
    /* A +-64 window over 1M tokens stores about 3 blocks per block row. */
    sparcl_layout *l = NULL;
    int n = 1 << 20;
    cr_assert_eq(sparcl_layout_init_window(NULL, &l, 1, n, n, 64, 64, 64), SPARCL_OK);
    cr_assert_leq(sparcl_layout_nnz_blocks(l), 3L * (n / 64));
    cr_assert_eq(sparcl_layout_pairs(l), 129L * n - 2L * (64 * 65 / 2));
    sparcl_layout_free(l);
}

Test(layout, invalid_arguments_name_the_parameter)
{
    sparcl_layout *l = (sparcl_layout *)1;
    struct {
        sparcl_status st;
        const char *word;
    } cases[] = {
        {sparcl_layout_init_dense(NULL, &l, 0, 4, 4, 4), "heads"},
        {sparcl_layout_init_dense(NULL, &l, 1, 0, 4, 4), "q_len"},
        {sparcl_layout_init_dense(NULL, &l, 1, 4, -3, 4), "kv_len"},
        {sparcl_layout_init_dense(NULL, &l, 1, 4, 4, 0), "block"},
        {sparcl_layout_init_window(NULL, &l, 1, 4, 4, 4, -1, 0), "left"},
        {sparcl_layout_init_window(NULL, &l, 1, 4, 4, 4, 0, -2), "right"},
        {sparcl_layout_init_block_mask(NULL, &l, 1, 4, 4, 4, NULL), "mask"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        cr_assert_eq(cases[c].st, SPARCL_ERR_INVALID_ARGUMENT, "case %zu", c);
        cr_assert_null(l);
    }
    /* The messages, one at a time (each call overwrites the last). */
    cr_assert_eq(sparcl_layout_init_dense(NULL, &l, 1, 4, 4, 2000), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "block 2000"), "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_layout_init_window(NULL, &l, 1, 4, 4, 4, -1, 0),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "left -1"), "%s", sparcl_ctx_errmsg(NULL));
    uint8_t empty[4] = {0};
    cr_assert_eq(sparcl_layout_init_block_mask(NULL, &l, 1, 4, 4, 2, empty),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "no block set"), "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_layout_init_dense(NULL, NULL, 1, 4, 4, 4), SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_layout_free(NULL);
}
