/*
 * test_hostile.c -- every public function of sparcl.h, called the way an
 * attacker would: NULL for each pointer; zero, negative, huge and
 * overflowing sizes, strides and counts; parameter maps with counts outside
 * [0, 16], unterminated or non-identifier names; mismatched layouts; shapes
 * whose sizes only fit after wrapping.  Each call must return its error
 * status with a message naming what was wrong, and never crash, read or
 * write out of bounds, or overflow a signed integer (the suite also runs in
 * the ASan/UBSan build).  The regressions of issue 11 are marked
 * "regression".
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expect_status.h"
#include "sparcl.h"

static sparcl_ctx *ctx;

static void setup(void)
{
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    /* No database: parameters come from the defaults, nothing is read. */
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_USER, ""), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
}

static void teardown(void)
{
    sparcl_ctx_free(ctx);
}

#define INVALID SPARCL_ERR_INVALID_ARGUMENT
#define OOM SPARCL_ERR_OUT_OF_MEMORY

static sparcl_plan_desc small_desc(void)
{
    sparcl_plan_desc d; /* 2 batches x 4 q heads (GQA 2) x 17 x 32 */
    sparcl_plan_desc_init(&d);
    d.batch = 2, d.q_heads = 4, d.kv_heads = 2, d.q_len = d.kv_len = 17, d.head_dim = 32;
    return d;
}

/* A map whose first entry has no NUL within its name array. */
static sparcl_params unterminated_params(void)
{
    sparcl_params p;
    memset(&p, 'A', sizeof p);
    p.count = 1;
    p.item[0].value = 8;
    return p;
}

/* ---- Status and context --------------------------------------------- */

Test(hostile, status_and_context_accessors_take_null)
{
    cr_assert_str_eq(sparcl_status_string((sparcl_status)12345), "unknown status");
    cr_assert_str_eq(sparcl_status_string((sparcl_status)INT_MIN), "unknown status");
    cr_assert_not_null(sparcl_ctx_errmsg(NULL));
    cr_assert_eq(sparcl_ctx_cl_error(NULL), CL_SUCCESS);
    cr_assert_str_eq(sparcl_ctx_build_log(NULL), "");
    sparcl_ctx_set_log(NULL, NULL, NULL);
    cr_assert_null(sparcl_ctx_cl_context(NULL));
    cr_assert_null(sparcl_ctx_cl_device(NULL));
    cr_assert_null(sparcl_ctx_cl_queue(NULL));
    cr_assert_str_eq(sparcl_ctx_device_string(NULL), "");
    sparcl_ctx_free(NULL);
    EXPECT0(sparcl_ctx_init(NULL), INVALID, "out");
    EXPECT0(sparcl_ctx_init_device(NULL, "0"), INVALID, "out");
    sparcl_ctx *c = (sparcl_ctx *)1;
    cr_assert_neq(sparcl_ctx_init_device(&c, "no device is called this"), SPARCL_OK);
    cr_assert_null(c);
    cr_assert_neq(sparcl_ctx_init_device(&c, "999999999999"), SPARCL_OK);
    cr_assert_null(c);
    EXPECT0(sparcl_ctx_init_wrap(NULL, NULL, NULL, NULL), INVALID, "out");
    c = (sparcl_ctx *)1;
    EXPECT0(sparcl_ctx_init_wrap(&c, NULL, NULL, NULL), INVALID, "context");
    cr_assert_null(c);
}

Test(hostile, context_wrap_rejects_foreign_objects, .init = setup, .fini = teardown)
{
    sparcl_ctx *c = NULL;
    EXPECT0(sparcl_ctx_init_wrap(&c, sparcl_ctx_cl_context(ctx), NULL, sparcl_ctx_cl_queue(ctx)),
            INVALID, "device");
    EXPECT0(sparcl_ctx_init_wrap(&c, sparcl_ctx_cl_context(ctx), sparcl_ctx_cl_device(ctx), NULL),
            INVALID, "queue");
    cr_assert_null(c);
}

Test(hostile, device_list_takes_null_and_tiny_buffers)
{
    int n = -1;
    sparcl_status st = sparcl_device_list(NULL, 0, &n);
    cr_assert(st == SPARCL_OK || st == SPARCL_ERR_OPENCL);
    cr_assert_geq(n, 0);
    char one[1] = {'x'};
    st = sparcl_device_list(one, sizeof one, NULL);
    cr_assert(st == SPARCL_OK || st == SPARCL_ERR_OPENCL);
    cr_assert_eq(one[0], '\0');
    char small[7];
    memset(small, 'x', sizeof small);
    sparcl_device_list(small, sizeof small, NULL);
    cr_assert(memchr(small, '\0', sizeof small) != NULL);
}

Test(hostile, memory_limit_is_a_context_setting, .init = setup, .fini = teardown)
{
    EXPECT0(sparcl_ctx_set_memory_limit(NULL, 1, 1), INVALID, "ctx");
    EXPECT0(sparcl_ctx_memory_limit(NULL, NULL, NULL), INVALID, "ctx");
    uint64_t host = 0, dev = 0;
    cr_assert_eq(sparcl_ctx_memory_limit(ctx, &host, &dev), SPARCL_OK);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    cr_assert_eq(host, (uint64_t)pages * (uint64_t)page, "default host limit %llu",
                 (unsigned long long)host);
    cl_ulong global = 0;
    clGetDeviceInfo(sparcl_ctx_cl_device(ctx), CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global,
                    NULL);
    cr_assert_eq(dev, global, "default device limit %llu", (unsigned long long)dev);
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 12345, 678), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_memory_limit(ctx, &host, NULL), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_memory_limit(ctx, NULL, &dev), SPARCL_OK);
    cr_assert_eq(host, 12345);
    cr_assert_eq(dev, 678);
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, 0), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_memory_limit(ctx, &host, &dev), SPARCL_OK);
    cr_assert_eq(host, (uint64_t)pages * (uint64_t)page);
}

/* ---- Layouts ----------------------------------------------------------- */

typedef sparcl_status (*shape_fn)(sparcl_ctx *, sparcl_layout **, int, int, int, int);

Test(hostile, foundation_layouts_reject_bad_shapes, .init = setup, .fini = teardown)
{
    const shape_fn fns[2] = {sparcl_layout_init_dense, sparcl_layout_init_causal};
    for (int f = 0; f < 2; ++f) {
        sparcl_layout *l = (sparcl_layout *)1;
        EXPECT(fns[f](ctx, NULL, 1, 8, 8, 4), INVALID, "out");
        EXPECT(fns[f](ctx, &l, 0, 8, 8, 4), INVALID, "heads 0");
        cr_assert_null(l);
        EXPECT(fns[f](ctx, &l, -1, 8, 8, 4), INVALID, "heads -1");
        EXPECT(fns[f](ctx, &l, INT_MAX, 8, 8, 4), INVALID, "heads");
        EXPECT(fns[f](ctx, &l, 1, 0, 8, 4), INVALID, "q_len 0");
        EXPECT(fns[f](ctx, &l, 1, INT_MIN, 8, 4), INVALID, "q_len");
        EXPECT(fns[f](ctx, &l, 1, INT_MAX, 8, 4), INVALID, "q_len");
        EXPECT(fns[f](ctx, &l, 1, (1 << 30) + 1, 8, 4), INVALID, "q_len");
        EXPECT(fns[f](ctx, &l, 1, 8, -3, 4), INVALID, "kv_len -3");
        EXPECT(fns[f](ctx, &l, 1, 8, INT_MAX, 4), INVALID, "kv_len");
        EXPECT(fns[f](ctx, &l, 1, 8, 8, 0), INVALID, "block 0");
        EXPECT(fns[f](ctx, &l, 1, 8, 8, -1), INVALID, "block -1");
        EXPECT(fns[f](ctx, &l, 1, 8, 8, 1025), INVALID, "block 1025");
        EXPECT(fns[f](ctx, &l, 1, 8, 8, INT_MAX), INVALID, "block");
        /* heads x block rows overflows an int */
        EXPECT(fns[f](ctx, &l, 1 << 20, 1 << 30, 8, 1), INVALID, "overflows");
        EXPECT0(fns[f](NULL, &l, 0, 8, 8, 4), INVALID, "heads 0");
    }
    sparcl_layout *l = NULL;
    EXPECT(sparcl_layout_init_window(ctx, &l, 1, 8, 8, 4, -1, 0), INVALID, "left -1");
    EXPECT(sparcl_layout_init_window(ctx, &l, 1, 8, 8, 4, 0, INT_MIN), INVALID, "right");
    EXPECT(sparcl_layout_init_window(ctx, NULL, 1, 8, 8, 4, 0, 0), INVALID, "out");
    EXPECT(sparcl_layout_init_block_mask(ctx, &l, 1, 8, 8, 4, NULL), INVALID, "mask is NULL");
    const uint8_t zeros[4] = {0};
    EXPECT(sparcl_layout_init_block_mask(ctx, &l, 1, 8, 8, 4, zeros), INVALID, "no block set");
    EXPECT(sparcl_layout_init_block_mask(ctx, &l, 1, 8, 8, 0, zeros), INVALID, "block 0");
    cr_assert_null(l);
}

Test(hostile, layout_queries_take_null_and_out_of_range)
{
    cr_assert_eq(sparcl_layout_heads(NULL), 0);
    cr_assert_eq(sparcl_layout_q_len(NULL), 0);
    cr_assert_eq(sparcl_layout_kv_len(NULL), 0);
    cr_assert_eq(sparcl_layout_block(NULL), 0);
    cr_assert_eq(sparcl_layout_attends(NULL, 0, 0, 0), 0);
    cr_assert_eq(sparcl_layout_pairs(NULL), 0);
    cr_assert_eq(sparcl_layout_nnz_blocks(NULL), 0);
    cr_assert_eq(sparcl_layout_density(NULL), 0.0);
    sparcl_layout_free(NULL);
    sparcl_layout_stats stats;
    sparcl_layout_bsr bsr;
    EXPECT0(sparcl_layout_get_stats(NULL, &stats), INVALID, "NULL");
    EXPECT0(sparcl_layout_get_bsr(NULL, &bsr), INVALID, "NULL");
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_causal(NULL, &l, 2, 17, 17, 4), SPARCL_OK);
    EXPECT0(sparcl_layout_get_stats(l, NULL), INVALID, "NULL");
    EXPECT0(sparcl_layout_get_bsr(l, NULL), INVALID, "NULL");
    const int bad[] = {-1, INT_MIN, INT_MAX, 17, 2};
    for (int a = 0; a < 5; ++a) {
        cr_assert_eq(sparcl_layout_attends(l, bad[a], 0, 0), 0);
        if (bad[a] != 2) {
            cr_assert_eq(sparcl_layout_attends(l, 0, bad[a], 0), 0);
            cr_assert_eq(sparcl_layout_attends(l, 0, 0, bad[a]), 0);
        }
    }
    cr_assert_eq(sparcl_layout_attends(l, 1, 16, 16), 1);
    sparcl_layout_free(l);
}

Test(hostile, pattern_layouts_reject_bad_arguments, .init = setup, .fini = teardown)
{
    sparcl_layout *l = NULL;
    const int zero_dil[2] = {1, 0}, neg_dil[1] = {-7};
    EXPECT(sparcl_layout_init_dilated_window(ctx, &l, 2, 8, 8, 4, 2, 2, zero_dil), INVALID,
           "dilation[1] 0");
    EXPECT(sparcl_layout_init_dilated_window(ctx, &l, 1, 8, 8, 4, 2, 2, neg_dil), INVALID,
           "dilation[0] -7");
    EXPECT(sparcl_layout_init_dilated_window(ctx, &l, 1, 8, 8, 4, -1, 2, NULL), INVALID, "left");
    EXPECT(sparcl_layout_init_dilated_window(ctx, NULL, 1, 8, 8, 4, 1, 2, NULL), INVALID, "out");

    const int pos_bad[2] = {3, 8}, pos_neg[1] = {-1};
    EXPECT(sparcl_layout_init_global(ctx, &l, 1, 8, 8, 4, NULL, 2, 0), INVALID, "NULL");
    EXPECT(sparcl_layout_init_global(ctx, &l, 1, 8, 8, 4, pos_bad, -1, 0), INVALID, "-1");
    EXPECT(sparcl_layout_init_global(ctx, &l, 1, 8, 8, 4, pos_bad, 2, 0), INVALID, "8");
    EXPECT(sparcl_layout_init_global(ctx, &l, 1, 8, 8, 4, pos_neg, 1, 0), INVALID, "-1");
    EXPECT(sparcl_layout_init_global(ctx, &l, 0, 8, 8, 4, pos_neg, 1, 0), INVALID, "heads 0");

    EXPECT(sparcl_layout_init_global_blocks(ctx, &l, 1, 8, 8, 4, -1, 0, 0), INVALID, "-1");
    EXPECT(sparcl_layout_init_global_blocks(ctx, &l, 1, 8, 8, 4, 0, INT_MIN, 0), INVALID, "last");

    EXPECT(sparcl_layout_init_strided(ctx, &l, 1, 8, 8, 4, 0, 0), INVALID, "stride 0");
    EXPECT(sparcl_layout_init_strided(ctx, &l, 1, 8, 8, 4, INT_MIN, 1), INVALID, "stride");

    sparcl_fixed_desc fd;
    sparcl_fixed_desc_init(NULL);
    sparcl_fixed_desc_init(&fd);
    EXPECT(sparcl_layout_init_fixed(ctx, &l, 1, 8, 8, 4, NULL), INVALID, "desc is NULL");
    fd.stride = 0;
    EXPECT(sparcl_layout_init_fixed(ctx, &l, 1, 8, 8, 4, &fd), INVALID, "stride 0");
    sparcl_fixed_desc_init(&fd);
    fd.summary = fd.stride + 1;
    EXPECT(sparcl_layout_init_fixed(ctx, &l, 1, 8, 8, 4, &fd), INVALID, "summary");
    sparcl_fixed_desc_init(&fd);
    fd.patterns = 0;
    EXPECT(sparcl_layout_init_fixed(ctx, &l, 1, 8, 8, 4, &fd), INVALID, "patterns 0");
    sparcl_fixed_desc_init(&fd);
    fd.stride = INT_MAX, fd.summary = INT_MAX, fd.patterns = INT_MAX; /* product overflows */
    EXPECT(sparcl_layout_init_fixed(ctx, &l, 1, 8, 8, 4, &fd), INVALID, "exceeds stride");

    sparcl_bigbird_desc bd;
    sparcl_bigbird_desc_init(NULL);
    sparcl_bigbird_desc_init(&bd);
    EXPECT(sparcl_layout_init_bigbird(ctx, &l, 1, 8, 8, 4, NULL), INVALID, "desc is NULL");
    bd.window = -1;
    EXPECT(sparcl_layout_init_bigbird(ctx, &l, 1, 8, 8, 4, &bd), INVALID, "window -1");
    sparcl_bigbird_desc_init(&bd);
    bd.random = INT_MIN;
    EXPECT(sparcl_layout_init_bigbird(ctx, &l, 1, 8, 8, 4, &bd), INVALID, "random");
    sparcl_bigbird_desc_init(&bd);
    bd.random = INT_MAX; /* the table of random blocks would pass 2^31 entries */
    EXPECT(sparcl_layout_init_bigbird(ctx, &l, 64, 1 << 20, 1 << 20, 1, &bd), INVALID, "2^31");

    sparcl_longformer_desc ld;
    sparcl_longformer_desc_init(NULL);
    sparcl_longformer_desc_init(&ld);
    EXPECT(sparcl_layout_init_longformer(ctx, &l, 1, 8, 8, 4, NULL), INVALID, "desc is NULL");
    ld.n_global = 3; /* global is NULL */
    EXPECT(sparcl_layout_init_longformer(ctx, &l, 1, 8, 8, 4, &ld), INVALID, "NULL");
    sparcl_longformer_desc_init(&ld);
    ld.n_global = -1;
    EXPECT(sparcl_layout_init_longformer(ctx, &l, 1, 8, 8, 4, &ld), INVALID, "-1");
    sparcl_longformer_desc_init(&ld);
    ld.dilation = neg_dil;
    EXPECT(sparcl_layout_init_longformer(ctx, &l, 1, 8, 8, 4, &ld), INVALID, "dilation");

    EXPECT(sparcl_layout_init_streaming(ctx, &l, 1, 8, 8, 4, -1, 4), INVALID, "sink");
    EXPECT(sparcl_layout_init_streaming(ctx, &l, 1, 8, 8, 4, 1, INT_MIN), INVALID, "local");

    sparcl_vertical_slash_desc vd;
    sparcl_vertical_slash_desc_init(NULL);
    sparcl_vertical_slash_desc_init(&vd);
    EXPECT(sparcl_layout_init_vertical_slash(ctx, &l, 1, 8, 8, 4, NULL), INVALID, "desc is NULL");
    vd.n_columns = 2; /* columns is NULL */
    EXPECT(sparcl_layout_init_vertical_slash(ctx, &l, 1, 8, 8, 4, &vd), INVALID, "NULL");
    const int cols[2] = {0, 1}, counts[2] = {1, -5};
    sparcl_vertical_slash_desc_init(&vd);
    vd.columns = cols;
    vd.column_counts = counts;
    EXPECT(sparcl_layout_init_vertical_slash(ctx, &l, 2, 8, 8, 4, &vd), INVALID, "count -5");
    vd.column_counts = NULL;
    vd.n_columns = INT_MIN;
    EXPECT(sparcl_layout_init_vertical_slash(ctx, &l, 2, 8, 8, 4, &vd), INVALID, "count");
    const int offs[1] = {100};
    sparcl_vertical_slash_desc_init(&vd);
    vd.offsets = offs;
    vd.n_offsets = 1;
    EXPECT(sparcl_layout_init_vertical_slash(ctx, &l, 1, 8, 8, 4, &vd), INVALID, "100");
    cr_assert_null(l);
}

static int never(void *user, int h, int i, int j)
{
    (void)user, (void)h, (void)i, (void)j;
    return 0;
}

Test(hostile, user_layouts_reject_bad_arrays, .init = setup, .fini = teardown)
{
    sparcl_layout *l = NULL;
    /* 1 head, 8 x 8 at block 4: 2 block rows, 3 row pointers */
    const int64_t rp_ok[3] = {0, 1, 2}, rp_start[3] = {1, 1, 2}, rp_down[3] = {0, 2, 1},
                  rp_huge[3] = {0, INT64_MAX, INT64_MAX}, rp_neg[3] = {0, -1, 2};
    const int32_t col_ok[2] = {0, 1}, col_out[2] = {0, 2}, col_neg[2] = {-1, 0};
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, NULL, col_ok), INVALID, "row_ptr");
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, rp_ok, NULL), INVALID, "col");
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, rp_start, col_ok), INVALID, "row_ptr");
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, rp_down, col_ok), INVALID, "row_ptr");
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, rp_huge, col_ok), INVALID, "bsr row 0");
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, rp_neg, col_ok), INVALID, "row_ptr");
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, rp_ok, col_out), INVALID, "2");
    EXPECT(sparcl_layout_init_bsr(ctx, &l, 1, 8, 8, 4, rp_ok, col_neg), INVALID, "-1");
    EXPECT(sparcl_layout_init_bsr(ctx, NULL, 1, 8, 8, 4, rp_ok, col_ok), INVALID, "out");
    /* token CSR: 1 head, 2 queries, 3 row pointers */
    const int64_t crp_ok[3] = {0, 1, 2}, crp_down[3] = {0, 2, 1}, crp_neg[3] = {-1, 0, 1};
    const int32_t ccol_out[2] = {0, 5}, ccol_min[2] = {INT32_MIN, 0};
    EXPECT(sparcl_layout_init_csr(ctx, &l, 1, 2, 4, 4, NULL, col_ok), INVALID, "row_ptr");
    EXPECT(sparcl_layout_init_csr(ctx, &l, 1, 2, 4, 4, crp_ok, NULL), INVALID, "col");
    EXPECT(sparcl_layout_init_csr(ctx, &l, 1, 2, 4, 4, crp_down, col_ok), INVALID, "row_ptr");
    EXPECT(sparcl_layout_init_csr(ctx, &l, 1, 2, 4, 4, crp_neg, col_ok), INVALID, "row_ptr");
    EXPECT(sparcl_layout_init_csr(ctx, &l, 1, 2, 4, 4, crp_ok, ccol_out), INVALID, "5");
    EXPECT(sparcl_layout_init_csr(ctx, &l, 1, 2, 4, 4, crp_ok, ccol_min), INVALID, "col");
    EXPECT(sparcl_layout_init_predicate(ctx, &l, 1, 8, 8, 4, NULL, NULL), INVALID, "NULL");
    EXPECT(sparcl_layout_init_predicate(ctx, &l, 1, 8, 8, 4, never, NULL), INVALID, "no pair");
    cr_assert_null(l);
}

Test(hostile, combinators_reject_bad_lists, .init = setup, .fini = teardown)
{
    sparcl_layout *a = NULL, *b = NULL, *h3 = NULL, *h2 = NULL, *l = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &a, 1, 16, 16, 4), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_causal(ctx, &b, 1, 16, 17, 4), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_dense(ctx, &h3, 3, 16, 16, 4), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_dense(ctx, &h2, 2, 16, 16, 4), SPARCL_OK);
    const sparcl_layout *mismatch[2] = {a, b}, *with_null[2] = {a, NULL}, *heads[3] = {a, h3, h2};
    const sparcl_layout *heads2[2] = {h3, NULL};
    typedef sparcl_status (*combine_fn)(sparcl_ctx *, sparcl_layout **,
                                        const sparcl_layout *const *, int);
    const combine_fn fns[3] = {sparcl_layout_init_union, sparcl_layout_init_intersection,
                               sparcl_layout_init_per_head};
    for (int f = 0; f < 3; ++f) {
        EXPECT(fns[f](ctx, &l, NULL, 1), INVALID, "layouts is NULL");
        EXPECT(fns[f](ctx, NULL, mismatch, 1), INVALID, "out");
        EXPECT(fns[f](ctx, &l, mismatch, 0), INVALID, "count 0");
        EXPECT(fns[f](ctx, &l, mismatch, -1), INVALID, "count -1");
        EXPECT(fns[f](ctx, &l, with_null, 2), INVALID, "layouts[1] is NULL");
        EXPECT(fns[f](ctx, &l, mismatch, 2), INVALID, "layouts[1] is 16 x 17");
        EXPECT(fns[f](ctx, &l, heads2, 2), INVALID, "layouts[1] is NULL");
    }
    /* count is checked before the array is read: two entries, count INT_MAX */
    const sparcl_layout *same[2] = {a, a};
    EXPECT(sparcl_layout_init_union(ctx, &l, same, INT_MAX), INVALID, "count");
    EXPECT(sparcl_layout_init_intersection(ctx, &l, same, 9), INVALID, "count 9");
    EXPECT(sparcl_layout_init_union(ctx, &l, heads, 3), INVALID, "layouts[2] has 2 heads");
    cr_assert_null(l);
    sparcl_layout_free(a);
    sparcl_layout_free(b);
    sparcl_layout_free(h3);
    sparcl_layout_free(h2);
}

/* regression: a dense layout of 2^30 tokens at block 1 (2^60 blocks) and a
 * window of 2^30 tokens with left = INT_MAX passed every documented limit
 * and then allocated past 4 GiB.  They must be refused from the estimate,
 * before any allocation, naming the bytes and the limit. */
Test(hostile, huge_layouts_are_refused_from_the_estimate, .init = setup, .fini = teardown)
{
    sparcl_layout *l = (sparcl_layout *)1;
    const int n = 1 << 30;
    EXPECT(sparcl_layout_init_dense(ctx, &l, 1, n, n, 1), OOM, "bytes of host memory");
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "limit"));
    cr_assert_null(l);
    EXPECT(sparcl_layout_init_window(ctx, &l, 1, n, n, 1, INT_MAX, 0), OOM, "bytes of host memory");
    EXPECT(sparcl_layout_init_causal(ctx, &l, 1, n, n, 16), OOM, "limit");
    EXPECT0(sparcl_layout_init_dense(NULL, &l, 1, n, n, 1), OOM, "bytes of host memory");
    EXPECT0(sparcl_layout_init_window(NULL, &l, 1, n, n, 1, INT_MAX, INT_MAX), OOM, "limit");
    cr_assert_null(l);
}

Test(hostile, layouts_respect_the_context_limit, .init = setup, .fini = teardown)
{
    sparcl_layout *l = NULL;
    /* 1024 x 1024 dense at block 8: 16384 blocks, ~200 KB */
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 64 * 1024, 0), SPARCL_OK);
    EXPECT(sparcl_layout_init_dense(ctx, &l, 1, 1024, 1024, 8), OOM, "limit is 65536 bytes");
    cr_assert_null(l);
    /* A pattern whose size is only known while building stops at the limit. */
    uint8_t *mask = malloc(128 * 128);
    memset(mask, 1, 128 * 128);
    EXPECT(sparcl_layout_init_block_mask(ctx, &l, 1, 1024, 1024, 8, mask), OOM, "needs more than");
    cr_assert_null(l);
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, 0), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_block_mask(ctx, &l, 1, 1024, 1024, 8, mask), SPARCL_OK);
    cr_assert_eq(sparcl_layout_nnz_blocks(l), 128 * 128);
    sparcl_layout_free(l);
    cr_assert_eq(sparcl_layout_init_dense(ctx, &l, 1, 1024, 1024, 8), SPARCL_OK);
    sparcl_layout_free(l);
    free(mask);
}

/* ---- Parameter maps ------------------------------------------------------ */

/* regression: counts outside [0, 16] segfaulted every reader of a map. */
Test(hostile, params_with_bad_counts_are_refused)
{
    const int counts[4] = {-1, 17, INT_MAX, INT_MIN};
    for (int c = 0; c < 4; ++c) {
        sparcl_params p;
        sparcl_params_clear(&p);
        p.count = counts[c];
        EXPECT0(sparcl_params_set(&p, "BLOCK_M", 8), INVALID, "count");
        int32_t v = 77;
        cr_assert_eq(sparcl_params_get(&p, "BLOCK_M", &v), 0);
        cr_assert_eq(v, 77);
        char buf[64] = "x";
        sparcl_params_format(&p, buf, sizeof buf);
        cr_assert_str_eq(buf, "");
    }
    EXPECT0(sparcl_params_set(NULL, "BLOCK_M", 8), INVALID, "NULL");
    sparcl_params p;
    sparcl_params_clear(&p);
    sparcl_params_clear(NULL);
    EXPECT0(sparcl_params_set(&p, NULL, 8), INVALID, "NULL");
    cr_assert_eq(sparcl_params_get(NULL, "BLOCK_M", NULL), 0);
    cr_assert_eq(sparcl_params_get(&p, NULL, NULL), 0);
    sparcl_params_format(NULL, NULL, 0);
    sparcl_params_format(&p, NULL, 10);
    char buf[4] = "abc";
    sparcl_params_format(NULL, buf, sizeof buf);
    cr_assert_str_eq(buf, "");
    for (int i = 0; i < SPARCL_PARAMS_MAX; ++i) {
        char name[8];
        snprintf(name, sizeof name, "P%d", i);
        cr_assert_eq(sparcl_params_set(&p, name, i), SPARCL_OK);
    }
    EXPECT0(sparcl_params_set(&p, "ONE_MORE", 1), INVALID, "full");
    sparcl_params_format(&p, buf, sizeof buf); /* truncated, terminated */
    cr_assert_eq(strlen(buf), 3);
}

/* regression: names without NUL over-read; names that are not identifiers
 * became extra compiler tokens. */
Test(hostile, params_names_are_bounded_identifiers)
{
    sparcl_params p = unterminated_params();
    char buf[256];
    sparcl_params_format(&p, buf, sizeof buf);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(sparcl_params_get(&p, "AAAA", NULL), 0);
    char long_name[SPARCL_PARAM_NAME_MAX]; /* no NUL at all */
    memset(long_name, 'B', sizeof long_name);
    sparcl_params_clear(&p);
    cr_assert_eq(sparcl_params_get(&p, long_name, NULL), 0);
    /* The name is read through a pointer to exactly these bytes. */
    char *heap = malloc(SPARCL_PARAM_NAME_MAX);
    memcpy(heap, long_name, SPARCL_PARAM_NAME_MAX);
    EXPECT0(sparcl_params_set(&p, heap, 1), INVALID, "NUL-terminated");
    cr_assert_eq(sparcl_params_get(&p, heap, NULL), 0);
    free(heap);
    const char *bad[] = {"", "BLOCK_M -DEVIL=1", "1ST", "A-B", "A.B", "NAME\n", "É"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        cr_assert_neq(sparcl_params_set(&p, bad[i], 1), SPARCL_OK, "accepted \"%s\"", bad[i]);
        cr_assert_eq(p.count, 0);
    }
    EXPECT0(sparcl_params_set(&p, "BLOCK_M X", 1), INVALID, "identifier");
    cr_assert_eq(sparcl_params_set(&p, "_ok9", 1), SPARCL_OK);
}

Test(hostile, plan_init_validates_the_parameter_map, .init = setup, .fini = teardown)
{
    sparcl_plan_desc d = small_desc();
    sparcl_plan *plan = (sparcl_plan *)1;
    sparcl_params p;
    sparcl_params_clear(&p);
    d.params = &p;
    const int counts[3] = {-1, 17, INT_MAX};
    for (int c = 0; c < 3; ++c) {
        p.count = counts[c];
        EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "desc.params count");
        cr_assert_null(plan);
        d.unchecked_params = 1;
        EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "desc.params count");
        d.unchecked_params = 0;
    }
    p = unterminated_params();
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "NUL-terminated");
    /* regression: a space split one name into extra compiler tokens */
    sparcl_params_clear(&p);
    snprintf(p.item[0].name, sizeof p.item[0].name, "%s", "BLOCK_M -DX");
    p.item[0].value = 8;
    p.count = 1;
    d.unchecked_params = 1;
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "identifier");
    snprintf(p.item[0].name, sizeof p.item[0].name, "%s", "BLOCK_M");
    snprintf(p.item[1].name, sizeof p.item[1].name, "%s", "BLOCK_M");
    p.count = 2;
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "twice");
    cr_assert_null(plan);
}

/* ---- Plan descriptors: sizes and strides ------------------------------- */

/* regression: span() multiplied strides unchecked; batch 5 with a batch
 * stride of 2^61 wrapped to about 16.5 KB, a 16.5 KB buffer passed the
 * size check, and the kernel read or wrote at base + 2^63. */
Test(hostile, strides_that_overflow_the_span_are_refused, .init = setup, .fini = teardown)
{
    static const char *names[4] = {"q strides", "k strides", "v strides", "out strides"};
    for (int t = 0; t < 4; ++t) {
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.batch = 5;
        d.q_len = d.kv_len = 64;
        d.head_dim = 64;
        sparcl_strides s = {(int64_t)1 << 61, 64 * 64, 64};
        sparcl_strides *all[4] = {&d.q_strides, &d.k_strides, &d.v_strides, &d.o_strides};
        *all[t] = s;
        sparcl_plan *plan = (sparcl_plan *)1;
        EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, names[t]);
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), "2^63"), "%s", sparcl_ctx_errmsg(ctx));
        cr_assert_null(plan);
        /* each product alone overflowing, and a span whose bytes overflow */
        all[t]->batch = INT64_MAX;
        EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, names[t]);
        all[t]->batch = ((int64_t)1 << 61) / 4; /* 4 x 2^59 elements: 2^63 bytes */
        EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, names[t]);
        *all[t] = (sparcl_strides){64 * 64, INT64_MAX / 2, 64};
        d.q_heads = d.kv_heads = 3;
        EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, names[t]);
        d.q_heads = d.kv_heads = 1;
        *all[t] = (sparcl_strides){64 * 64 * 64, 64 * 64, INT64_MAX};
        EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, names[t]);
        static const char *axes[3] = {"batch", "head", "seq"};
        for (int a = 0; a < 3; ++a) {
            *all[t] = (sparcl_strides){64 * 64, 64 * 64, 64};
            int64_t *ax[3] = {&all[t]->batch, &all[t]->head, &all[t]->seq};
            *ax[a] = a == 1 ? INT64_MIN : -1;
            EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, axes[a]);
            cr_assert(strstr(sparcl_ctx_errmsg(ctx), names[t]));
        }
        cr_assert_null(plan);
    }
}

/* regression: the contiguous strides of batch = INT_MAX and the element
 * counts of huge shapes overflowed int64 (UBSan: signed overflow). */
Test(hostile, shapes_whose_sizes_overflow_are_refused, .init = setup, .fini = teardown)
{
    sparcl_plan *plan = (sparcl_plan *)1;
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = INT_MAX;
    d.q_heads = d.kv_heads = INT_MAX;
    d.q_len = d.kv_len = INT_MAX;
    d.head_dim = SPARCL_MAX_HEAD_DIM;
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "overflow");
    cr_assert_null(plan);
    sparcl_plan_desc_init(&d);
    d.batch = INT_MAX;
    d.q_heads = d.kv_heads = 1 << 20;
    d.q_len = d.kv_len = 1 << 20;
    d.head_dim = 1;
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "overflow");
    /* kind checks and the reference see the same shapes */
    double out[1];
    float x[1] = {0};
    cr_assert_neq(sparcl_reference_forward(ctx, NULL, x, x, x, out, NULL), SPARCL_OK);
    sparcl_tuning_problem prob;
    EXPECT(sparcl_tuning_problem_init(ctx, &prob, "attn_fwd", &d, NULL), INVALID, "overflow");
}

/* regression: the tiling's ceiling division (q_len + BLOCK_M - 1) overflowed
 * at q_len = INT_MAX. */
Test(hostile, tiling_at_int_max_lengths, .init = setup, .fini = teardown)
{
    sparcl_plan *plan = (sparcl_plan *)1;
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = INT_MAX;
    d.kv_len = INT_MAX;
    d.head_dim = 1;
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "2^31");
    cr_assert_null(plan);
    d.causal = 1;
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "2^31");
    /* INT_MAX queries against one key: 2^28 tile rows, refused by the
     * estimate under a 64 MiB limit instead of being built */
    d.causal = 0;
    d.kv_len = 1;
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 64u << 20, 0), SPARCL_OK);
    EXPECT(sparcl_plan_init(ctx, &plan, &d), OOM, "bytes of host memory");
    cr_assert_null(plan);
}

Test(hostile, plans_respect_the_memory_limits, .init = setup, .fini = teardown)
{
    sparcl_plan *plan = (sparcl_plan *)1;
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = 1 << 18; /* 2^28 tiles at the CPU defaults */
    d.head_dim = 16;
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 64u << 20, 0), SPARCL_OK);
    EXPECT(sparcl_plan_init(ctx, &plan, &d), OOM, "limit is 67108864 bytes");
    cr_assert_null(plan);
    d = small_desc();
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, 16), SPARCL_OK);
    EXPECT(sparcl_plan_init(ctx, &plan, &d), OOM, "bytes of device memory");
    cr_assert_null(plan);
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, 0), SPARCL_OK);
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_gt(sparcl_plan_device_bytes(plan), 16);
    sparcl_plan_free(plan);
    /* Linformer: proj_len x kv_len projections of 2^31 x 2^31 floats */
    sparcl_plan_desc_init(&d);
    d.q_len = 4;
    d.kv_len = d.proj_len = INT_MAX;
    d.head_dim = 8;
    d.attention = SPARCL_ATTENTION_LINFORMER;
    EXPECT(sparcl_plan_init(ctx, &plan, &d), OOM, "Linformer projections");
    cr_assert_null(plan);
}

/* Overlapping output strides are a race between work-items: refused. */
Test(hostile, overlapping_output_strides_are_refused, .init = setup, .fini = teardown)
{
    sparcl_plan *plan = (sparcl_plan *)1;
    sparcl_plan_desc d = small_desc(); /* 2 x 4 heads x 17 x 32 */
    d.o_strides = (sparcl_strides){4 * 17 * 32, 1, 1};
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "out strides");
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "overlap"));
    d.o_strides = (sparcl_strides){0, 17 * 32, 32}; /* every batch on the same rows */
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "batch stride 0");
    d.o_strides = (sparcl_strides){4 * 17 * 32, 17 * 32, 16}; /* rows overlap in dim */
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "seq stride 16");
    d.o_strides = (sparcl_strides){4 * 17 * 32, 32, 32}; /* head = seq */
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "overlap");
    d.o_strides = (sparcl_strides){17 * 32, 17 * 32, 32}; /* batch = head */
    EXPECT(sparcl_plan_init(ctx, &plan, &d), INVALID, "overlap");
    cr_assert_null(plan);
    /* [B, S, H, D] does not overlap; a padded layout neither. */
    d.o_strides = (sparcl_strides){17 * 4 * 32, 32, 4 * 32};
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    d.o_strides = (sparcl_strides){1 << 20, 1 << 14, 40};
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
    /* Extents of 1 never overlap, whatever their stride. */
    d.batch = 1;
    d.o_strides = (sparcl_strides){0, 17 * 32, 32};
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(plan);
}

/* Inputs may be broadcast (stride 0), but the backward writes dk with k's
 * strides: it refuses them. */
Test(hostile, backward_refuses_overlapping_gradient_strides, .init = setup, .fini = teardown)
{
    sparcl_plan_desc d = small_desc();
    d.k_strides = (sparcl_strides){0, 17 * 32, 32}; /* one K for both batches */
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_context c = sparcl_ctx_cl_context(ctx);
    size_t big = 2 * 4 * 17 * 32 * sizeof(float);
    cl_mem m[9];
    for (int i = 0; i < 9; ++i)
        m[i] = clCreateBuffer(c, CL_MEM_READ_WRITE, big, NULL, NULL);
    EXPECT(sparcl_plan_backward(plan, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], 0, NULL,
                                NULL),
           INVALID, "k strides");
    cr_assert(strstr(sparcl_ctx_errmsg(ctx), "overlap"));
    for (int i = 0; i < 9; ++i)
        clReleaseMemObject(m[i]);
    sparcl_plan_free(plan);
}

/* ---- Plans: NULL objects and buffers ------------------------------------ */

Test(hostile, plan_calls_take_null, .init = setup, .fini = teardown)
{
    float x[1];
    double y[1];
    sparcl_plan_desc d = small_desc();
    sparcl_plan_desc_init(NULL);
    EXPECT(sparcl_plan_init(ctx, NULL, &d), INVALID, "out");
    sparcl_plan *plan = (sparcl_plan *)1;
    EXPECT0(sparcl_plan_init(NULL, &plan, &d), INVALID, "ctx");
    EXPECT(sparcl_plan_init(ctx, &plan, NULL), INVALID, "desc");
    sparcl_plan_free(NULL);
    EXPECT0(sparcl_plan_forward(NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL), INVALID,
            "plan");
    EXPECT0(sparcl_plan_forward_on_queue(NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL),
            INVALID, "plan");
    EXPECT0(sparcl_plan_forward_host(NULL, x, x, x, x, x), INVALID, "plan");
    sparcl_plan_params(NULL, NULL, NULL);
    cr_assert_eq(sparcl_plan_device_bytes(NULL), 0);
    cr_assert_str_eq(sparcl_plan_params_origin(NULL), "");
    EXPECT0(sparcl_plan_redraw(NULL, 1), INVALID, "NULL");
    EXPECT0(sparcl_plan_read_features(NULL, x), INVALID, "NULL");
    EXPECT0(sparcl_plan_read_projections(NULL, x, x), INVALID, "NULL");
    EXPECT0(sparcl_plan_prepare_backward(NULL, NULL), INVALID, "plan");
    EXPECT0(sparcl_plan_backward_params(NULL, NULL, NULL), INVALID, "plan");
    EXPECT0(sparcl_plan_backward(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0,
                                 NULL, NULL),
            INVALID, "plan");
    EXPECT0(sparcl_plan_backward_on_queue(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                          NULL, NULL, 0, NULL, NULL),
            INVALID, "plan");
    EXPECT0(sparcl_plan_backward_host(NULL, x, x, x, x, x, x, x, x, x), INVALID, "plan");
    EXPECT0(sparcl_plan_backward_proj(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                      NULL, NULL, NULL, 0, NULL, NULL),
            INVALID, "plan");
    EXPECT0(sparcl_plan_backward_proj_host(NULL, x, x, x, x, x, x, x, x, x, x, x), INVALID, "plan");
    EXPECT0(sparcl_plan_write_projections(NULL, x, x), INVALID, "plan");
    EXPECT(sparcl_reference_forward(ctx, NULL, x, x, x, y, NULL), INVALID, "desc");
    EXPECT(sparcl_reference_forward(ctx, &d, NULL, x, x, y, NULL), INVALID, "q");
    EXPECT(sparcl_reference_forward(ctx, &d, x, x, x, NULL, NULL), INVALID, "out");
    EXPECT0(sparcl_reference_forward(NULL, &d, x, NULL, x, y, NULL), INVALID, "k");
    EXPECT(sparcl_reference_backward(ctx, NULL, x, x, x, x, y, y, y), INVALID, "desc");
    EXPECT(sparcl_reference_backward(ctx, &d, x, x, x, NULL, y, y, y), INVALID, "dout");
    EXPECT(sparcl_reference_backward(ctx, &d, x, x, x, x, y, y, NULL), INVALID, "dv");
    EXPECT(sparcl_reference_backward_proj(ctx, NULL, x, x, x, x, y, y, y, NULL, NULL), INVALID,
           "desc");
    EXPECT(sparcl_reference_backward_proj(ctx, &d, x, x, x, x, y, y, y, y, NULL), INVALID,
           "Linformer only");
    d.batch = 0;
    EXPECT(sparcl_reference_forward(ctx, &d, x, x, x, y, NULL), INVALID, "batch 0");
    EXPECT(sparcl_reference_backward(ctx, &d, x, x, x, x, y, y, y), INVALID, "batch 0");
    d = small_desc();
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &l, 1, 16, 17, 4), SPARCL_OK);
    d.layout = l;
    EXPECT(sparcl_reference_forward(ctx, &d, x, x, x, y, NULL), INVALID, "layout");
    EXPECT(sparcl_reference_backward(ctx, &d, x, x, x, x, y, y, y), INVALID, "layout");
    sparcl_layout_free(l);
}

Test(hostile, plan_calls_check_their_buffers, .init = setup, .fini = teardown)
{
    sparcl_plan_desc d = small_desc();
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &plan, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cl_context c = sparcl_ctx_cl_context(ctx);
    size_t nq = 2 * 4 * 17 * 32 * sizeof(float), nk = nq / 2;
    cl_mem q = clCreateBuffer(c, CL_MEM_READ_WRITE, nq, NULL, NULL);
    cl_mem k = clCreateBuffer(c, CL_MEM_READ_WRITE, nk, NULL, NULL);
    cl_mem v = clCreateBuffer(c, CL_MEM_READ_WRITE, nk, NULL, NULL);
    cl_mem o = clCreateBuffer(c, CL_MEM_READ_WRITE, nq, NULL, NULL);
    cl_mem tiny = clCreateBuffer(c, CL_MEM_READ_WRITE, 4, NULL, NULL);
    EXPECT(sparcl_plan_forward(plan, NULL, k, v, o, NULL, 0, NULL, NULL), INVALID, "q buffer");
    EXPECT(sparcl_plan_forward(plan, q, NULL, v, o, NULL, 0, NULL, NULL), INVALID, "k buffer");
    EXPECT(sparcl_plan_forward(plan, q, k, NULL, o, NULL, 0, NULL, NULL), INVALID, "v buffer");
    EXPECT(sparcl_plan_forward(plan, q, k, v, NULL, NULL, 0, NULL, NULL), INVALID, "out buffer");
    EXPECT(sparcl_plan_forward(plan, q, k, v, tiny, NULL, 0, NULL, NULL), INVALID, "out buffer");
    EXPECT(sparcl_plan_forward(plan, q, k, v, o, tiny, 0, NULL, NULL), INVALID, "lse buffer");
    EXPECT(sparcl_plan_forward(plan, q, k, v, q, NULL, 0, NULL, NULL), INVALID, "alias");
    EXPECT(sparcl_plan_forward(plan, q, k, v, o, NULL, 3, NULL, NULL), INVALID, "num_wait 3");
    EXPECT(sparcl_plan_forward(plan, q, k, v, o, NULL, UINT_MAX, NULL, NULL), INVALID, "num_wait");
    /* A queue of another context on the same device.  (A handle that is not
     * a queue at all is undefined behaviour in OpenCL: POCL refuses it, but
     * NVIDIA's driver crashed on it in this test on an H200.) */
    cl_device_id dev = sparcl_ctx_cl_device(ctx);
    cl_int cerr = CL_SUCCESS;
    cl_context other = clCreateContext(NULL, 1, &dev, NULL, NULL, &cerr);
    cr_assert_not_null(other, "clCreateContext: %d", cerr);
    cl_command_queue foreign = clCreateCommandQueue(other, dev, 0, &cerr);
    cr_assert_not_null(foreign, "clCreateCommandQueue: %d", cerr);
    EXPECT(sparcl_plan_forward_on_queue(plan, foreign, q, k, v, o, NULL, 0, NULL, NULL), INVALID,
           "queue");
    clReleaseCommandQueue(foreign);
    clReleaseContext(other);
    float x[1];
    EXPECT(sparcl_plan_forward_host(plan, NULL, x, x, x, NULL), INVALID, "q is NULL");
    EXPECT(sparcl_plan_forward_host(plan, x, x, x, NULL, NULL), INVALID, "out is NULL");
    EXPECT(sparcl_plan_backward(plan, q, k, v, o, NULL, o, q, k, v, 0, NULL, NULL), INVALID, "lse");
    EXPECT(sparcl_plan_backward(plan, q, k, v, o, tiny, o, q, k, v, 0, NULL, NULL), INVALID,
           "lse buffer");
    EXPECT(sparcl_plan_backward_host(plan, x, x, x, x, NULL, x, x, x, x), INVALID, "NULL");
    /* not a FAVOR+ or Linformer plan */
    EXPECT(sparcl_plan_redraw(plan, 7), INVALID, "");
    EXPECT(sparcl_plan_read_features(plan, x), INVALID, "");
    EXPECT(sparcl_plan_read_projections(plan, x, x), INVALID, "");
    EXPECT(sparcl_plan_write_projections(plan, x, x), INVALID, "not a Linformer plan");
    EXPECT(sparcl_plan_backward_proj(plan, NULL, q, k, v, o, tiny, o, q, k, v, tiny, NULL, 0, NULL,
                                     NULL),
           INVALID, "dproj_e");
    /* bad maps for the backward's parameters */
    sparcl_params p;
    sparcl_params_clear(&p);
    p.count = 17;
    EXPECT(sparcl_plan_prepare_backward(plan, &p), INVALID, "count 17");
    p = unterminated_params();
    EXPECT(sparcl_plan_prepare_backward(plan, &p), INVALID, "NUL-terminated");
    sparcl_params got;
    sparcl_param_source src;
    sparcl_plan_params(plan, NULL, NULL);
    sparcl_plan_params(plan, &got, &src);
    cr_assert_geq(got.count, 1);
    cl_mem all[5] = {q, k, v, o, tiny};
    for (int i = 0; i < 5; ++i)
        clReleaseMemObject(all[i]);
    sparcl_plan_free(plan);
}

/* ---- Tuning interface --------------------------------------------------- */

Test(hostile, kernel_interface_rejects_bad_arguments, .init = setup, .fini = teardown)
{
    cr_assert_null(sparcl_kernel_name(-1));
    cr_assert_null(sparcl_kernel_name(INT_MAX));
    cr_assert_null(sparcl_kernel_name(INT_MIN));
    cr_assert_null(sparcl_kernel_name(sparcl_kernel_count()));
    sparcl_param_space space;
    EXPECT(sparcl_kernel_space(ctx, NULL, &space), INVALID, "kernel is NULL");
    EXPECT(sparcl_kernel_space(ctx, "attn_fwd", NULL), INVALID, "NULL");
    EXPECT(sparcl_kernel_space(ctx, "no_such_kernel", &space), INVALID, "no_such_kernel");
    EXPECT0(sparcl_kernel_space(NULL, "no_such_kernel", &space), INVALID, "no_such_kernel");
    sparcl_plan_desc d = small_desc();
    sparcl_params p;
    cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_fwd", &d, &p), SPARCL_OK);
    EXPECT0(sparcl_kernel_check_params(NULL, "attn_fwd", &d, &p), INVALID, "ctx");
    EXPECT(sparcl_kernel_check_params(ctx, "attn_fwd", NULL, &p), INVALID, "desc");
    EXPECT(sparcl_kernel_check_params(ctx, "attn_fwd", &d, NULL), INVALID, "params");
    EXPECT(sparcl_kernel_check_params(ctx, NULL, &d, &p), INVALID, "NULL");
    const int counts[3] = {-1, 17, INT_MAX};
    for (int c = 0; c < 3; ++c) {
        sparcl_params bad = p;
        bad.count = counts[c];
        EXPECT(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &bad), INVALID, "count");
    }
    sparcl_params bad = unterminated_params();
    EXPECT(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &bad), INVALID, "NUL-terminated");
    d.head_dim = INT_MAX;
    EXPECT(sparcl_kernel_check_params(ctx, "attn_fwd", &d, &p), INVALID, "head_dim");
    EXPECT(sparcl_kernel_default_params(ctx, "attn_fwd", &d, &p), INVALID, "head_dim");
    d = small_desc();
    EXPECT(sparcl_kernel_default_params(ctx, "attn_fwd", &d, NULL), INVALID, "params");
    EXPECT0(sparcl_kernel_default_params(NULL, "attn_fwd", &d, &p), INVALID, "ctx");
    char hash[17];
    EXPECT(sparcl_kernel_hash(ctx, "attn_fwd", NULL, 17), INVALID, "");
    EXPECT(sparcl_kernel_hash(ctx, "attn_fwd", hash, 16), INVALID, "");
    EXPECT(sparcl_kernel_hash(ctx, "attn_fwd", hash, 0), INVALID, "");
    EXPECT(sparcl_kernel_hash(ctx, "nope", hash, sizeof hash), INVALID, "nope");
    sparcl_device_info info;
    EXPECT0(sparcl_ctx_device_info(NULL, &info), INVALID, "");
    EXPECT(sparcl_ctx_device_info(ctx, NULL), INVALID, "");
    sparcl_tuning_problem prob;
    EXPECT(sparcl_tuning_problem_init(ctx, NULL, "attn_fwd", &d, NULL), INVALID, "");
    EXPECT(sparcl_tuning_problem_init(ctx, &prob, NULL, &d, NULL), INVALID, "");
    EXPECT(sparcl_tuning_problem_init(ctx, &prob, "attn_fwd", NULL, NULL), INVALID, "");
    d.batch = -4;
    EXPECT(sparcl_tuning_problem_init(ctx, &prob, "attn_fwd", &d, NULL), INVALID, "batch -4");
    cr_assert_str_eq(sparcl_tuning_status_string((sparcl_tuning_status)99), "unknown");
    cr_assert_str_eq(sparcl_tuning_status_string((sparcl_tuning_status)-1), "unknown");
}

typedef struct scratch_db {
    char dir[64], path[128];
    sparcl_tuning_db *db;
    sparcl_device_info dev;
    sparcl_tuning_problem prob;
    sparcl_tuning_result res;
} scratch_db;

static void open_scratch(scratch_db *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/sparcl-hostile-XXXXXX");
    cr_assert_not_null(mkdtemp(s->dir));
    snprintf(s->path, sizeof s->path, "%s/t.db", s->dir);
    cr_assert_eq(sparcl_tuning_db_init(ctx, &s->db, s->path, SPARCL_TUNING_DB_WRITE), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_desc d = small_desc();
    cr_assert_eq(sparcl_ctx_device_info(ctx, &s->dev), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_problem_init(ctx, &s->prob, "attn_fwd", &d, NULL), SPARCL_OK);
    memset(&s->res, 0, sizeof s->res);
    cr_assert_eq(sparcl_kernel_default_params(ctx, "attn_fwd", &d, &s->res.params), SPARCL_OK);
    s->res.status = SPARCL_TUNING_OK;
    s->res.median_ms = s->res.min_ms = s->res.max_ms = 1.0;
    s->res.runs = 3;
}

static void close_scratch(scratch_db *s)
{
    sparcl_tuning_db_free(s->db);
    char cmd[192];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
    cr_assert_eq(system(cmd), 0);
}

Test(hostile, tuning_database_calls_reject_bad_arguments, .init = setup, .fini = teardown)
{
    char buf[8];
    EXPECT0(sparcl_tuning_db_default_path(NULL, 100), INVALID, "");
    EXPECT0(sparcl_tuning_db_default_path(buf, 0), INVALID, "");
    EXPECT0(sparcl_tuning_db_default_path(buf, 1), INVALID, "");
    sparcl_tuning_db *db = (sparcl_tuning_db *)1;
    EXPECT(sparcl_tuning_db_init(ctx, NULL, "/tmp/x.db", SPARCL_TUNING_DB_READ), INVALID, "");
    EXPECT(sparcl_tuning_db_init(ctx, &db, NULL, SPARCL_TUNING_DB_READ), INVALID, "");
    cr_assert_null(db);
    cr_assert_neq(sparcl_tuning_db_init(ctx, &db, "/nonexistent/dir/x.db", SPARCL_TUNING_DB_READ),
                  SPARCL_OK);
    cr_assert_null(db);
    sparcl_tuning_db_free(NULL);
    scratch_db s;
    open_scratch(&s);
    int found = 0;
    int64_t count = 0;
    EXPECT0(sparcl_tuning_db_record(NULL, &s.dev, &s.prob, &s.res), INVALID, "NULL");
    EXPECT(sparcl_tuning_db_record(s.db, NULL, &s.prob, &s.res), INVALID, "NULL");
    EXPECT(sparcl_tuning_db_record(s.db, &s.dev, NULL, &s.res), INVALID, "NULL");
    EXPECT(sparcl_tuning_db_record(s.db, &s.dev, &s.prob, NULL), INVALID, "NULL");
    EXPECT0(sparcl_tuning_db_find(NULL, &s.dev, &s.prob, &s.res.params, &s.res, &found), INVALID,
            "NULL");
    EXPECT(sparcl_tuning_db_find(s.db, &s.dev, &s.prob, NULL, &s.res, &found), INVALID, "params");
    EXPECT(sparcl_tuning_db_find(s.db, &s.dev, &s.prob, &s.res.params, NULL, &found), INVALID,
           "NULL");
    EXPECT(sparcl_tuning_db_find(s.db, &s.dev, &s.prob, &s.res.params, &s.res, NULL), INVALID,
           "NULL");
    EXPECT(sparcl_tuning_db_best(s.db, NULL, &s.prob, &s.res, &found), INVALID, "NULL");
    EXPECT(sparcl_tuning_db_best(s.db, &s.dev, &s.prob, &s.res, NULL), INVALID, "NULL");
    EXPECT(sparcl_tuning_db_count(s.db, &s.dev, NULL, &count), INVALID, "NULL");
    EXPECT(sparcl_tuning_db_count(s.db, &s.dev, &s.prob, NULL), INVALID, "NULL");
    EXPECT0(sparcl_tuning_db_export(NULL, "/tmp/x.sql"), INVALID, "");
    EXPECT(sparcl_tuning_db_export(s.db, NULL), INVALID, "");
    EXPECT0(sparcl_tuning_db_import(NULL, "/tmp/x.sql", NULL), INVALID, "");
    EXPECT(sparcl_tuning_db_import(s.db, NULL, NULL), INVALID, "");
    cr_assert_neq(sparcl_tuning_db_import(s.db, "/nonexistent/x.csv", NULL), SPARCL_OK);
    EXPECT0(sparcl_ctx_set_tuning_db(NULL, SPARCL_TUNING_DB_USER, NULL), INVALID, "");
    EXPECT(sparcl_ctx_set_tuning_db(ctx, (sparcl_tuning_db_role)7, NULL), INVALID, "role");
    EXPECT(sparcl_ctx_set_tuning_db(ctx, (sparcl_tuning_db_role)-1, NULL), INVALID, "role");
    char *long_path = malloc(1 << 16);
    memset(long_path, 'p', (1 << 16) - 1);
    long_path[(1 << 16) - 1] = '\0';
    EXPECT(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_USER, long_path), INVALID, "");
    cr_assert_neq(sparcl_tuning_db_init(ctx, &db, long_path, SPARCL_TUNING_DB_WRITE), SPARCL_OK);
    free(long_path);
    cr_assert_eq(sparcl_tuning_db_record(s.db, &s.dev, &s.prob, &s.res), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_tuning_db_count(s.db, &s.dev, &s.prob, &count), SPARCL_OK);
    cr_assert_eq(count, 1);
    close_scratch(&s);
}

/* regression: a result whose params count lies outside [0, 16], or whose
 * names or message lack a NUL, segfaulted or over-read in record. */
Test(hostile, tuning_rows_with_bad_fields_are_refused, .init = setup, .fini = teardown)
{
    scratch_db s;
    open_scratch(&s);
    sparcl_tuning_result r = s.res;
    const int counts[3] = {-1, 17, INT_MAX};
    for (int c = 0; c < 3; ++c) {
        r.params.count = counts[c];
        EXPECT(sparcl_tuning_db_record(s.db, &s.dev, &s.prob, &r), INVALID, "count");
        int found = 1;
        EXPECT(sparcl_tuning_db_find(s.db, &s.dev, &s.prob, &r.params, &r, &found), INVALID,
               "count");
        r = s.res;
    }
    r.params = unterminated_params();
    EXPECT(sparcl_tuning_db_record(s.db, &s.dev, &s.prob, &r), INVALID, "NUL-terminated");
    r = s.res;
    snprintf(r.params.item[0].name, sizeof r.params.item[0].name, "%s", "BLOCK_M\":1,\"X");
    EXPECT(sparcl_tuning_db_record(s.db, &s.dev, &s.prob, &r), INVALID, "identifier");
    r = s.res;
    memset(r.message, 'm', sizeof r.message);
    EXPECT(sparcl_tuning_db_record(s.db, &s.dev, &s.prob, &r), INVALID, "message");
    sparcl_device_info dev = s.dev;
    memset(dev.name, 'n', sizeof dev.name);
    EXPECT(sparcl_tuning_db_record(s.db, &dev, &s.prob, &s.res), INVALID, "device name");
    int64_t count = 0;
    EXPECT(sparcl_tuning_db_count(s.db, &dev, &s.prob, &count), INVALID, "device name");
    dev = s.dev;
    memset(dev.type, 'T', sizeof dev.type);
    int found = 0;
    EXPECT(sparcl_tuning_db_best(s.db, &dev, &s.prob, &r, &found), INVALID, "device type");
    sparcl_tuning_problem prob = s.prob;
    memset(prob.kernel_hash, 'f', sizeof prob.kernel_hash);
    EXPECT(sparcl_tuning_db_record(s.db, &s.dev, &prob, &s.res), INVALID, "kernel_hash");
    prob = s.prob;
    memset(prob.pattern, 'p', sizeof prob.pattern);
    EXPECT(sparcl_tuning_db_count(s.db, &s.dev, &prob, &count), INVALID, "pattern");
    cr_assert_eq(sparcl_tuning_db_count(s.db, &s.dev, &s.prob, &count), SPARCL_OK);
    cr_assert_eq(count, 0, "a refused row was stored");
    close_scratch(&s);
}

/* desc.previous naming a plan that has nothing to give: another kind
 * (FAVOR+, LSH, dense, decoding), another layout shape, heads or block
 * size, another tile, causal where the new one is not.  Each plan is built as without it:
 * its forward equals that of a plan made with previous NULL, bit for bit. */
Test(hostile, previous_plans_that_do_not_fit_are_ignored, .init = setup, .fini = teardown)
{
    enum { N = 77, H = 2, D = 40 };
    sparcl_layout *win = NULL, *other = NULL, *heads = NULL, *coarse = NULL;
    cr_assert_eq(sparcl_layout_init_window(ctx, &win, 1, N, N, 8, 9, 3), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_window(ctx, &coarse, 1, N, N, 16, 9, 3), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_window(ctx, &other, 1, 33, 33, 16, 9, 3), SPARCL_OK);
    cr_assert_eq(sparcl_layout_init_causal(ctx, &heads, H, N, N, 8), SPARCL_OK);
    sparcl_plan *prevs[8] = {NULL};
    sparcl_plan_desc p;
    for (int i = 0; i < 8; ++i) {
        sparcl_plan_desc_init(&p);
        p.q_heads = p.kv_heads = H;
        p.q_len = p.kv_len = N;
        p.head_dim = D;
        sparcl_params tile;
        sparcl_params_clear(&tile);
        switch (i) {
        case 0: p.attention = SPARCL_ATTENTION_FAVOR, p.features = 8; break;
        case 1:
            p.attention = SPARCL_ATTENTION_LSH, p.lsh_rounds = 1, p.lsh_buckets = 4;
            p.lsh_chunk = 8;
            break;
        case 2: break; /* dense */
        case 3: p.q_len = 1; break; /* decoding */
        case 4: p.q_len = p.kv_len = 33, p.layout = other; break;
        case 5: p.layout = heads; break;
        case 6:
            p.layout = win, p.causal = 1;
            cr_assert_eq(sparcl_params_set(&tile, "BLOCK_M", 4), SPARCL_OK);
            p.params = &tile;
            break;
        case 7: p.layout = coarse; break; /* the same pattern in other blocks */
        }
        cr_assert_eq(sparcl_plan_init(ctx, &prevs[i], &p), SPARCL_OK, "previous %d: %s", i,
                     sparcl_ctx_errmsg(ctx));
    }
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = d.kv_heads = H;
    d.q_len = d.kv_len = N;
    d.head_dim = D;
    d.layout = win;
    const size_t n = (size_t)H * N * D;
    float *q = malloc(sizeof *q * n), *o1 = malloc(sizeof *o1 * n), *o2 = malloc(sizeof *o2 * n);
    cr_assert(q && o1 && o2);
    for (size_t i = 0; i < n; ++i)
        q[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    sparcl_plan *fresh = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &fresh, &d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_forward_host(fresh, q, q, q, o1, NULL), SPARCL_OK);
    for (int i = 0; i < 8; ++i) {
        d.previous = prevs[i];
        sparcl_plan *got = NULL;
        cr_assert_eq(sparcl_plan_init(ctx, &got, &d), SPARCL_OK, "previous %d: %s", i,
                     sparcl_ctx_errmsg(ctx));
        cr_assert_eq(sparcl_plan_forward_host(got, q, q, q, o2, NULL), SPARCL_OK);
        cr_assert(!memcmp(o1, o2, sizeof *o1 * n), "previous %d changed the result", i);
        sparcl_plan_free(got);
    }
    sparcl_plan_free(fresh);
    for (int i = 0; i < 8; ++i)
        sparcl_plan_free(prevs[i]);
    free(q), free(o1), free(o2);
    sparcl_layout_free(win);
    sparcl_layout_free(other);
    sparcl_layout_free(heads);
    sparcl_layout_free(coarse);
}
