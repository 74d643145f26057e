/*
 * test_layout_slice.c -- sparcl_layout_init_slice against the parent
 * layout read element by element: every rectangle of a few patterns, with
 * and without the parent's causal mask, at the parent's block and others;
 * empty slices; refused arguments.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "sparcl.h"

/* Checks every element of slice against parent (and the pair count). */
static void check_slice(const sparcl_layout *parent, int causal, int q0, int ql, int k0, int kl,
                        int block)
{
    sparcl_layout *s = NULL;
    sparcl_status st = sparcl_layout_init_slice(NULL, &s, parent, causal, q0, ql, k0, kl, block);
    cr_assert_eq(st, SPARCL_OK, "slice [%d,+%d) x [%d,+%d): %s", q0, ql, k0, kl,
                 sparcl_ctx_errmsg(NULL));
    const int heads = sparcl_layout_heads(parent);
    const int off = sparcl_layout_kv_len(parent) - sparcl_layout_q_len(parent);
    cr_assert_eq(sparcl_layout_heads(s), heads);
    cr_assert_eq(sparcl_layout_q_len(s), ql);
    cr_assert_eq(sparcl_layout_kv_len(s), kl);
    cr_assert_eq(sparcl_layout_block(s), block ? block : sparcl_layout_block(parent));
    int64_t pairs = 0;
    for (int h = 0; h < heads; ++h)
        for (int i = 0; i < ql; ++i)
            for (int j = 0; j < kl; ++j) {
                int want = sparcl_layout_attends(parent, h, q0 + i, k0 + j) &&
                           (!causal || k0 + j <= q0 + i + off);
                pairs += want;
                cr_assert_eq(sparcl_layout_attends(s, h, i, j), want,
                             "head %d (%d, %d) of slice [%d,+%d) x [%d,+%d) causal %d block %d", h,
                             i, j, q0, ql, k0, kl, causal, block);
            }
    cr_assert_eq(sparcl_layout_pairs(s), pairs);
    sparcl_layout_free(s);
}

/* Rectangles cut at shard boundaries of 1..4 ranks over n tokens. */
static void check_shards(const sparcl_layout *parent, int block)
{
    const int n = sparcl_layout_q_len(parent);
    for (int p = 1; p <= 4; ++p)
        for (int a = 0; a < p; ++a)
            for (int b = 0; b < p; ++b) {
                int qa = a * (n / p) + (a < n % p ? a : n % p), ql = n / p + (a < n % p);
                int kb = b * (n / p) + (b < n % p ? b : n % p), kl = n / p + (b < n % p);
                check_slice(parent, 0, qa, ql, kb, kl, block);
                check_slice(parent, 1, qa, ql, kb, kl, block);
            }
}

Test(layout_slice, window_every_shard)
{
    sparcl_layout *w = NULL;
    cr_assert_eq(sparcl_layout_init_window(NULL, &w, 1, 113, 113, 16, 12, 5), SPARCL_OK);
    check_shards(w, 0);
    check_shards(w, 7);
    sparcl_layout_free(w);
}

Test(layout_slice, bigbird_per_head_and_odd_rectangles)
{
    sparcl_bigbird_desc bd;
    sparcl_bigbird_desc_init(&bd);
    sparcl_layout *bb = NULL;
    cr_assert_eq(sparcl_layout_init_bigbird(NULL, &bb, 2, 100, 100, 8, &bd), SPARCL_OK);
    check_shards(bb, 0);
    check_slice(bb, 0, 1, 17, 50, 1, 0);
    check_slice(bb, 1, 3, 1, 0, 99, 16);
    check_slice(bb, 0, 0, 100, 0, 100, 64); /* the whole layout, re-blocked */
    sparcl_layout_free(bb);
}

Test(layout_slice, dense_parent_at_a_large_block)
{
    /* The ring slices a dense layout stored in 1024-token blocks. */
    sparcl_layout *d = NULL;
    cr_assert_eq(sparcl_layout_init_dense(NULL, &d, 1, 300, 300, 1024), SPARCL_OK);
    check_slice(d, 1, 100, 100, 50, 113, 16);
    check_slice(d, 0, 17, 1, 0, 300, 64);
    sparcl_layout_free(d);
}

Test(layout_slice, rectangular_parent_keeps_its_alignment)
{
    /* q_len < kv_len: the causal edge sits at i + (kv_len - q_len). */
    sparcl_layout *d = NULL;
    cr_assert_eq(sparcl_layout_init_dense(NULL, &d, 1, 40, 100, 8), SPARCL_OK);
    check_slice(d, 1, 5, 20, 50, 50, 0);
    sparcl_layout_free(d);
}

Test(layout_slice, never_attended_rectangle_is_empty)
{
    sparcl_layout *w = NULL, *s = NULL;
    cr_assert_eq(sparcl_layout_init_window(NULL, &w, 1, 113, 113, 16, 4, 4), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_slice(NULL, &s, w, 0, 80, 33, 0, 40, 0), SPARCL_OK);
    cr_assert_eq(sparcl_layout_pairs(s), 0);
    cr_assert_eq(sparcl_layout_nnz_blocks(s), 0);
    sparcl_layout_free(s);
    /* causal: the future is empty */
    sparcl_layout *c = NULL;
    cr_assert_eq(sparcl_layout_init_dense(NULL, &c, 1, 64, 64, 16), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_slice(NULL, &s, c, 1, 0, 32, 32, 32, 0), SPARCL_OK);
    cr_assert_eq(sparcl_layout_pairs(s), 0);
    sparcl_layout_free(s);
    sparcl_layout_free(c);
    sparcl_layout_free(w);
}

Test(layout_slice, refuses_bad_arguments)
{
    sparcl_layout *w = NULL, *s = (sparcl_layout *)&s;
    cr_assert_eq(sparcl_layout_init_window(NULL, &w, 1, 50, 50, 16, 4, 4), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_slice(NULL, &s, NULL, 0, 0, 1, 0, 1, 0),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_null(s);
    cr_assert_eq(sparcl_layout_init_slice(NULL, NULL, w, 0, 0, 1, 0, 1, 0),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_layout_init_slice(NULL, &s, w, 0, 40, 11, 0, 1, 0),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "[40, 51)") != NULL, "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_layout_init_slice(NULL, &s, w, 0, 0, 1, -1, 1, 0),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_layout_init_slice(NULL, &s, w, 0, 0, 0, 0, 1, 0),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_layout_init_slice(NULL, &s, w, 0, 0, 1, 0, 1, 2000),
                 SPARCL_ERR_INVALID_ARGUMENT);
    sparcl_layout_free(w);
}

Test(layout_slice, ctx_fail_records_the_message)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_fail(ctx, SPARCL_ERR_NOT_SUPPORTED, "from a component"),
                 SPARCL_ERR_NOT_SUPPORTED);
    cr_assert_str_eq(sparcl_ctx_errmsg(ctx), "from a component");
    cr_assert_eq(sparcl_ctx_fail(NULL, SPARCL_ERR_INTERNAL, NULL), SPARCL_ERR_INTERNAL);
    cr_assert_str_eq(sparcl_ctx_errmsg(NULL), "");
    sparcl_ctx_free(ctx);
}
