/*
 * test_hostile_kinds.c -- the calls that came with the newer plan kinds and
 * components, called the way test_hostile.c calls the older API: multi-
 * device plans (sparcl_multi_plan_*), layout slices, sparcl_ctx_fail,
 * dynamic block selection (sparcl_plan_read_selection), adaptive spans
 * (sparcl_plan_write_spans / _read_spans / _backward_span[_host]) and LSH
 * inspection (sparcl_plan_lsh_order).  NULL for every pointer, plans of the
 * wrong kind, indices and ranges outside their bounds, zero, negative and
 * wrapping sizes, freeing NULL, and out pointers reset after a failed init:
 * each call must return its documented status with a message naming the
 * bad argument, on the context the header says, and never crash or leak
 * (the suite also runs in the ASan/UBSan build).  Shapes are tiny: what is
 * checked here is the refusal, not the arithmetic.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "device_io.h"
#include "expect_status.h"
#include "sparcl.h"

static sparcl_ctx *ctx;

static void setup(void)
{
    ctx = dev_ctx();
    /* No database: parameters come from the defaults, nothing is read. */
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_USER, ""), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
}

static void teardown(void)
{
    sparcl_ctx_free(ctx);
}

TestSuite(hostile_kinds, .init = setup, .fini = teardown, .timeout = 120);

#define INVALID SPARCL_ERR_INVALID_ARGUMENT
#define UNSUPPORTED SPARCL_ERR_NOT_SUPPORTED

/* Clears the message slots, so a later EXPECT cannot pass on an old one. */
static void forget(sparcl_ctx *c)
{
    sparcl_ctx_fail(c, SPARCL_OK, "");
    sparcl_ctx_fail(NULL, SPARCL_OK, "");
}

/* 1 batch x 2 q heads (1 kv head) x 9 x 8: every kind below accepts it. */
static sparcl_plan_desc tiny_desc(int attention)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = 2, d.kv_heads = 1, d.q_len = d.kv_len = 9, d.head_dim = 8;
    d.attention = attention;
    if (attention == SPARCL_ATTENTION_SPAN) {
        d.causal = 1;
        d.span_ramp = 2.0f;
    } else if (attention == SPARCL_ATTENTION_LSH) {
        d.lsh_rounds = 1, d.lsh_buckets = 2, d.lsh_chunk = 4;
    }
    return d;
}

static sparcl_plan *plan_of(const sparcl_plan_desc *d)
{
    sparcl_plan *p = NULL;
    cr_assert_eq(sparcl_plan_init(ctx, &p, d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    return p;
}

/* Another cl_context on the same device, and a queue of it: objects a
 * plan of ctx must not take. */
typedef struct foreign {
    cl_context context;
    cl_command_queue queue;
} foreign;

static foreign foreign_open(void)
{
    cl_device_id dev = sparcl_ctx_cl_device(ctx);
    cl_int err = CL_SUCCESS;
    foreign f;
    f.context = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    cr_assert_not_null(f.context, "clCreateContext %d", err);
    f.queue = clCreateCommandQueue(f.context, dev, 0, &err);
    cr_assert_not_null(f.queue, "clCreateCommandQueue %d", err);
    return f;
}

static void foreign_close(foreign *f)
{
    clReleaseCommandQueue(f->queue);
    clReleaseContext(f->context);
}

/* The tensors of a backward call on tiny_desc() in sparcl_plan_backward_span()
 * order, with their sizes in floats. */
#define NQ (2 * 9 * 8)
#define NK (9 * 8)
#define NL (2 * 9)
static const size_t span_sizes[10] = {NQ, NK, NK, NQ, NL, NQ, NQ, NK, NK, 2};
static const char *const span_names[10] = {"q",    "k",  "v",  "out", "lse",
                                           "dout", "dq", "dk", "dv",  "dspans"};

static void span_buffers(cl_mem m[10])
{
    for (int i = 0; i < 10; ++i)
        m[i] = dev_buffer(ctx, span_sizes[i]);
}

static void release_all(cl_mem *m, int n)
{
    for (int i = 0; i < n; ++i)
        clReleaseMemObject(m[i]);
}

/* A plan of each kind in kinds[0 .. n) refuses `call` with INVALID and a
 * message containing `word`. */
typedef sparcl_status (*plan_call)(sparcl_plan *p);

static void kinds_refuse(const int *kinds, int n, plan_call call, const char *word)
{
    for (int k = 0; k < n; ++k) {
        sparcl_plan_desc d = tiny_desc(kinds[k]);
        sparcl_plan *p = plan_of(&d);
        forget(ctx);
        sparcl_status st = call(p);
        cr_assert_eq(st, INVALID, "kind %d gave %d: %s", kinds[k], st, sparcl_ctx_errmsg(ctx));
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), word), "kind %d: \"%s\" lacks \"%s\"", kinds[k],
                  sparcl_ctx_errmsg(ctx), word);
        sparcl_plan_free(p);
    }
}

/* ---- Multi-device plans ------------------------------------------------- */

/* Two contexts on the default device (a multi-plan allows that). */
static void two_contexts(sparcl_ctx *c[2])
{
    c[0] = ctx;
    cr_assert_eq(sparcl_ctx_init(&c[1]), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
}

static void multi_refused(sparcl_ctx *const *c, int n, const sparcl_plan_desc *d, int mode,
                          sparcl_status want, const sparcl_ctx *where, const char *word)
{
    sparcl_multi_plan *mp = (sparcl_multi_plan *)&mp; /* must come back NULL */
    forget(ctx);
    EXPECT_ON(where, sparcl_multi_plan_init(c, n, &mp, d, mode), want, word);
    cr_assert_null(mp, "a failed init left *out set (%s)", word);
}

Test(hostile_kinds, multi_plan_init_refuses_bad_arguments)
{
    sparcl_ctx *c[2];
    two_contexts(c);
    sparcl_plan_desc d = tiny_desc(SPARCL_ATTENTION_EXACT);
    EXPECT0(sparcl_multi_plan_init(c, 2, NULL, &d, 0), INVALID, "out");
    multi_refused(NULL, 2, &d, 0, INVALID, NULL, "contexts");
    multi_refused(c, -1, &d, 0, INVALID, NULL, "count -1");
    multi_refused(c, INT_MIN, &d, 0, INVALID, NULL, "count");
    multi_refused(c, INT_MAX, &d, 0, INVALID, NULL, "count");
    sparcl_ctx *first_null[2] = {NULL, c[1]};
    multi_refused(first_null, 2, &d, 0, INVALID, NULL, "contexts[0]");
    multi_refused(c, 2, NULL, 0, INVALID, ctx, "desc");
    multi_refused(c, 2, &d, INT_MIN, INVALID, ctx, "mode");
    multi_refused(c, 2, &d, SPARCL_SHARD_KEYS + 1, INVALID, ctx, "mode");

    /* The descriptor's own errors, named as sparcl_plan_init() names them. */
    sparcl_plan_desc bad = d;
    bad.batch = 0;
    multi_refused(c, 2, &bad, 0, INVALID, ctx, "batch");
    bad = d;
    bad.head_dim = -8;
    multi_refused(c, 2, &bad, 0, INVALID, ctx, "head_dim");
    bad = d;
    bad.q_len = INT_MIN;
    multi_refused(c, 2, &bad, SPARCL_SHARD_QUERIES, INVALID, ctx, "q_len");
    bad = d;
    bad.struct_size = 3;
    multi_refused(c, 2, &bad, 0, INVALID, ctx, "struct_size");
    /* Attended pairs that do not fit in int64 (regression: signed overflow
     * counting a share's pairs, under UBSan). */
    bad = d;
    bad.q_heads = bad.kv_heads = 65536, bad.q_len = bad.kv_len = INT_MAX / 2, bad.head_dim = 1;
    for (int mode = 0; mode < 3; ++mode)
        multi_refused(c, 2, &bad, mode, INVALID, ctx, "kv_len");
    sparcl_layout *wrong = NULL;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &wrong, 1, 16, 9, 4), SPARCL_OK);
    bad = d;
    bad.layout = wrong; /* q_len 16 for a call of 9 */
    multi_refused(c, 2, &bad, SPARCL_SHARD_KEYS, INVALID, ctx, "layout");
    sparcl_layout_free(wrong);

    /* Kinds a multi-plan does not run. */
    bad = tiny_desc(SPARCL_ATTENTION_SPAN);
    multi_refused(c, 2, &bad, 0, UNSUPPORTED, ctx, "attention");
    bad = tiny_desc(SPARCL_ATTENTION_LSH);
    multi_refused(c, 2, &bad, SPARCL_SHARD_QUERIES, UNSUPPORTED, ctx, "attention");
    bad = d;
    bad.normalization = SPARCL_NORMALIZATION_ENTMAX15;
    multi_refused(c, 2, &bad, SPARCL_SHARD_KEYS, UNSUPPORTED, ctx, "normalization");
    /* Selection per share is not the whole call's: every mode refuses it
     * (regression: KEYS and causal cuts returned OK and other outputs). */
    for (int mode = 0; mode < 3; ++mode) {
        bad = d;
        bad.q_len = bad.kv_len = 16, bad.select = SPARCL_SELECT_TOPK, bad.select_k = 1;
        bad.select_block = 8;
        multi_refused(c, 2, &bad, mode, UNSUPPORTED, ctx, "select");
    }
    sparcl_ctx_free(c[1]);
}

Test(hostile_kinds, multi_plan_calls_refuse_bad_arguments)
{
    sparcl_ctx *c[2];
    two_contexts(c);
    sparcl_plan_desc d = tiny_desc(SPARCL_ATTENTION_EXACT);
    sparcl_multi_plan *mp = NULL;
    cr_assert_eq(sparcl_multi_plan_init(c, 2, &mp, &d, SPARCL_SHARD_HEADS), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    static float x[2 * 9 * 8], l[2 * 9];
    float *const in[3] = {x, x, x};
    static const char *const fwd_names[4] = {"q", "k", "v", "out"};
    for (int t = 0; t < 4; ++t) {
        const float *a[4] = {in[0], in[1], in[2], x};
        a[t] = NULL;
        forget(ctx);
        EXPECT(sparcl_multi_plan_forward_host(mp, a[0], a[1], a[2], (float *)a[3], l), INVALID,
               fwd_names[t]);
    }
    EXPECT0(sparcl_multi_plan_forward_host(NULL, x, x, x, x, l), INVALID, "plan");
    static const char *const bwd_names[9] = {"q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv"};
    for (int t = 0; t < 9; ++t) {
        float *a[9] = {x, x, x, x, l, x, x, x, x};
        a[t] = NULL;
        forget(ctx);
        EXPECT(sparcl_multi_plan_backward_host(mp, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
                                               a[8]),
               INVALID, bwd_names[t]);
    }
    EXPECT0(sparcl_multi_plan_backward_host(NULL, x, x, x, x, l, x, x, x, x), INVALID, "plan");
    EXPECT0(sparcl_multi_plan_prepare_backward(NULL), INVALID, "plan");

    /* Shares: the index, the struct and the plan. */
    cr_assert_eq(sparcl_multi_plan_shard_count(NULL), 0);
    const int n = sparcl_multi_plan_shard_count(mp);
    cr_assert(n >= 1 && n <= 2);
    sparcl_shard_info info;
    sparcl_shard_info_init(&info);
    EXPECT0(sparcl_multi_plan_shard(NULL, 0, &info), INVALID, "plan");
    forget(ctx);
    EXPECT(sparcl_multi_plan_shard(mp, 0, NULL), INVALID, "info");
    const int bad_index[4] = {-1, n, INT_MIN, INT_MAX};
    for (int k = 0; k < 4; ++k) {
        forget(ctx);
        EXPECT(sparcl_multi_plan_shard(mp, bad_index[k], &info), INVALID, "shard");
    }
    const size_t bad_size[3] = {0, sizeof info + 1, SIZE_MAX};
    for (int k = 0; k < 3; ++k) {
        info.struct_size = bad_size[k];
        forget(ctx);
        EXPECT(sparcl_multi_plan_shard(mp, 0, &info), INVALID, "struct_size");
    }
    /* A struct from before device_bytes: that field is left alone. */
    sparcl_shard_info_init(&info);
    info.struct_size = offsetof(sparcl_shard_info, device_bytes);
    info.device_bytes = 12345;
    cr_assert_eq(sparcl_multi_plan_shard(mp, n - 1, &info), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(info.device_bytes, 12345);
    cr_assert_eq(info.struct_size, offsetof(sparcl_shard_info, device_bytes));
    cr_assert_gt(info.heads, 0);
    sparcl_multi_plan_free(mp);
    sparcl_multi_plan_free(NULL);
    sparcl_ctx_free(c[1]);
}

/* ---- Layout slices and sparcl_ctx_fail ---------------------------------- */

/* Packed variable-length batches: extreme and inconsistent offsets are
 * refused by name before anything is read past count + 1 entries, *out
 * stays NULL, and the message lands on the calling thread without a
 * context too. */
Test(hostile_kinds, layout_varlen_names_the_bad_argument)
{
    sparcl_layout *c3 = NULL, *l = (sparcl_layout *)&l;
    cr_assert_eq(sparcl_layout_init_causal(ctx, &c3, 1, 3, 3, 16), SPARCL_OK);
    const sparcl_layout *seqs[2] = {c3, NULL};
    const int32_t ok[3] = {0, 3, 5};
    EXPECT(sparcl_layout_init_varlen(ctx, &l, INT_MIN, ok, ok, seqs, 0), INVALID, "count");
    cr_assert_null(l);
    EXPECT0(sparcl_layout_init_varlen(NULL, &l, 2, ok, NULL, seqs, 0), INVALID, "cu_k");
    struct {
        int32_t q[3], k[3];
        int block;
        const char *word;
    } bad[] = {
        {{0, 3, INT_MIN}, {0, 3, 5}, 0, "cu_q decreases at sequence 1"},
        {{INT_MAX, 3, 5}, {0, 3, 5}, 0, "cu_q[0]"},
        {{0, 3, 5}, {-1, 3, 5}, 0, "cu_k[0]"},
        {{0, 3, INT_MAX}, {0, 3, INT_MAX}, 0, "q_len"}, /* beyond the layout limits */
        {{0, 3, 5}, {0, 3, 5}, INT_MAX, "block"},       /* too large a block */
        {{0, 3, 5}, {0, 3, 5}, INT_MIN, "block"},
        {{0, 2, 5}, {0, 3, 5}, 0, "seqs[0] is 3 x 3"}, /* layout and offsets disagree */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        l = (sparcl_layout *)&l;
        EXPECT(sparcl_layout_init_varlen(ctx, &l, 2, bad[i].q, bad[i].k, seqs, bad[i].block),
               INVALID, bad[i].word);
        cr_assert_null(l, "case %zu", i);
    }
    cr_assert_eq(sparcl_layout_init_varlen(ctx, &l, 2, ok, ok, seqs, 0), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_layout_pairs(l), 6 + 4);
    sparcl_layout_free(l);
    sparcl_layout_free(c3);
}

Test(hostile_kinds, layout_slice_names_the_bad_argument)
{
    sparcl_layout *w = NULL, *s = (sparcl_layout *)&s;
    cr_assert_eq(sparcl_layout_init_window(ctx, &w, 2, 50, 40, 16, 2, 2), SPARCL_OK);
    EXPECT(sparcl_layout_init_slice(ctx, NULL, w, 0, 0, 1, 0, 1, 0), INVALID, "out");
    EXPECT(sparcl_layout_init_slice(ctx, &s, NULL, 0, 0, 1, 0, 1, 0), INVALID, "layout");
    cr_assert_null(s);
    EXPECT0(sparcl_layout_init_slice(NULL, &s, NULL, 0, 0, 1, 0, 1, 0), INVALID, "layout");
    struct {
        int q0, q_len, k0, kv_len, block;
        const char *word;
    } bad[] = {
        {0, 0, 0, 1, 0, "q_len"},        {0, -1, 0, 1, 0, "q_len"},
        {0, INT_MIN, 0, 1, 0, "q_len"},  {0, 1, 0, 0, 0, "kv_len"},
        {0, 1, 0, INT_MIN, 0, "kv_len"}, {0, 1, 0, 1, -16, "block"},
        {0, 1, 0, 1, INT_MIN, "block"},  {0, 1, 0, 1, INT_MAX, "block"},
        {-1, 1, 0, 1, 0, "q0"},          {INT_MIN, 1, 0, 1, 0, "q0"},
        {INT_MAX, 1, 0, 1, 0, "q0"},     {1, 50, 0, 1, 0, "q0"},
        {0, 51, 0, 1, 0, "q_len"},       {0, INT_MAX, 0, 1, 0, "q_len"},
        {0, 1, -1, 1, 0, "k0"},          {0, 1, INT_MIN, 1, 0, "k0"},
        {0, 1, INT_MAX, 1, 0, "k0"},     {0, 1, 39, 2, 0, "k0"},
        {0, 1, 0, 41, 0, "kv_len"},      {0, 1, 0, INT_MAX, 0, "kv_len"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        s = (sparcl_layout *)&s;
        forget(ctx);
        sparcl_status st = sparcl_layout_init_slice(ctx, &s, w, 0, bad[i].q0, bad[i].q_len,
                                                    bad[i].k0, bad[i].kv_len, bad[i].block);
        cr_assert_eq(st, INVALID, "case %zu gave %d: %s", i, st, sparcl_ctx_errmsg(ctx));
        cr_assert_null(s, "case %zu left *out set", i);
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), bad[i].word), "case %zu: \"%s\" lacks \"%s\"", i,
                  sparcl_ctx_errmsg(ctx), bad[i].word);
    }
    /* The last row and column fit exactly; causal takes any nonzero. */
    cr_assert_eq(sparcl_layout_init_slice(ctx, &s, w, INT_MIN, 49, 1, 39, 1, 1), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_layout_heads(s), 2);
    sparcl_layout_free(s);
    sparcl_layout_free(w);
}

/* regression: a slice at block 1 of a 2^16-token dense parent (2^32
 * blocks) had no estimate and was built until the memory limit stopped it.
 * It must be refused from the estimate, before it is built. */
Test(hostile_kinds, huge_slices_are_refused_from_the_estimate)
{
    const int n = 1 << 16;
    sparcl_layout *dense = NULL, *s = (sparcl_layout *)&s;
    cr_assert_eq(sparcl_layout_init_dense(ctx, &dense, 1, n, n, 1024), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 64u << 20, 0), SPARCL_OK);
    EXPECT(sparcl_layout_init_slice(ctx, &s, dense, 0, 0, n, 0, n, 1), SPARCL_ERR_OUT_OF_MEMORY,
           "bytes of host memory");
    cr_assert_null(s);
    cr_assert_null(strstr(sparcl_ctx_errmsg(ctx), "needs more than"), "built, then stopped: %s",
                   sparcl_ctx_errmsg(ctx));
    /* The bound stays near what a slice at the parent's block stores. */
    cr_assert_eq(sparcl_layout_init_slice(ctx, &s, dense, 1, 5, n - 5, 3, n - 3, 0), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(ctx));
    sparcl_layout_free(s);
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx, 0, 0), SPARCL_OK);
    sparcl_layout_free(dense);
}

static int logged;
/* Longer than any message the library keeps (1 KiB). */
#define LONG_TEXT 4096
static char last_log[LONG_TEXT];

static void log_fn(void *user, sparcl_log_level level, const char *msg)
{
    (void)level;
    ++*(int *)user;
    strncpy(last_log, msg, sizeof last_log - 1);
}

Test(hostile_kinds, ctx_fail_takes_any_text)
{
    /* NULL message: "" on the context; the status comes back as given. */
    EXPECT(sparcl_ctx_fail(ctx, SPARCL_ERR_OPENCL, "before"), SPARCL_ERR_OPENCL, "before");
    cr_assert_eq(sparcl_ctx_fail(ctx, SPARCL_ERR_CONFIG, NULL), SPARCL_ERR_CONFIG);
    cr_assert_str_eq(sparcl_ctx_errmsg(ctx), "");
    cr_assert_eq(sparcl_ctx_fail(ctx, (sparcl_status)-12345, "odd"), (sparcl_status)-12345);
    /* Format directives are text, not a format. */
    EXPECT(sparcl_ctx_fail(ctx, INVALID, "%s%n%s%p"), INVALID, "%s%n%s%p");
    /* A message longer than the slot is cut, NUL-terminated. */
    static char big[LONG_TEXT];
    memset(big, 'x', sizeof big - 1);
    cr_assert_eq(sparcl_ctx_fail(ctx, INVALID, big), INVALID);
    const size_t len = strlen(sparcl_ctx_errmsg(ctx));
    cr_assert(len > 0 && len < LONG_TEXT - 1, "kept %zu characters", len);
    /* The thread's slot, not the context's. */
    cr_assert_eq(sparcl_ctx_fail(NULL, INVALID, big + sizeof big - 8), INVALID);
    cr_assert_str_eq(sparcl_ctx_errmsg(NULL), "xxxxxxx");
    cr_assert_eq(strlen(sparcl_ctx_errmsg(ctx)), len);
    /* The log callback hears it, as it hears the library's own. */
    logged = 0;
    sparcl_ctx_set_log(ctx, log_fn, &logged);
    cr_assert_eq(sparcl_ctx_fail(ctx, SPARCL_ERR_BUILD, "component said so"), SPARCL_ERR_BUILD);
    cr_assert_eq(logged, 1);
    cr_assert_str_eq(last_log, "component said so");
    sparcl_ctx_set_log(ctx, NULL, NULL);
}

/* ---- Dynamic block selection -------------------------------------------- */

static sparcl_status read_selection(sparcl_plan *p)
{
    sparcl_layout *out = (sparcl_layout *)&out;
    sparcl_status st = sparcl_plan_read_selection(p, 0, &out);
    cr_assert_null(out, "*out must be NULL after a failure");
    return st;
}

Test(hostile_kinds, read_selection_refuses_bad_arguments)
{
    sparcl_layout *out = (sparcl_layout *)&out;
    EXPECT0(sparcl_plan_read_selection(NULL, 0, &out), INVALID, "plan");
    cr_assert_null(out, "*out must be NULL after a failure");
    EXPECT0(sparcl_plan_read_selection(NULL, 0, NULL), INVALID, "plan");

    sparcl_plan_desc d = tiny_desc(SPARCL_ATTENTION_EXACT);
    d.batch = 2, d.q_len = d.kv_len = 16, d.select = SPARCL_SELECT_TOPK, d.select_k = 1;
    d.select_block = 8;
    sparcl_plan *sel = plan_of(&d);
    EXPECT(sparcl_plan_read_selection(sel, 0, NULL), INVALID, "out");
    /* Run it once so that only the argument is wrong. */
    static float x[2 * 2 * 16 * 8], o[2 * 2 * 16 * 8];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; ++i)
        x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    cr_assert_eq(sparcl_plan_forward_host(sel, x, x, x, o, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    const int bad_batch[4] = {-1, 2, INT_MIN, INT_MAX};
    for (int k = 0; k < 4; ++k) {
        out = (sparcl_layout *)&out;
        forget(ctx);
        EXPECT(sparcl_plan_read_selection(sel, bad_batch[k], &out), INVALID, "batch");
        cr_assert_null(out);
    }
    cr_assert_eq(sparcl_plan_read_selection(sel, 1, &out), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_layout_heads(out), 2);
    sparcl_layout_free(out);
    sparcl_plan_free(sel);
    /* Plans of every other kind have nothing to read. */
    const int kinds[3] = {SPARCL_ATTENTION_EXACT, SPARCL_ATTENTION_SPAN, SPARCL_ATTENTION_LSH};
    kinds_refuse(kinds, 3, read_selection, "select");
}

/* ---- Adaptive spans ------------------------------------------------------ */

static float spans_seen[2] = {-1.0f, -1.0f};

static sparcl_status write_spans(sparcl_plan *p)
{
    static const float spans[2] = {1.0f, 2.0f};
    return sparcl_plan_write_spans(p, spans);
}

static sparcl_status read_spans(sparcl_plan *p)
{
    return sparcl_plan_read_spans(p, spans_seen);
}

Test(hostile_kinds, spans_calls_refuse_other_kinds_and_bad_values)
{
    float spans[2] = {1.0f, 2.0f};
    EXPECT0(sparcl_plan_write_spans(NULL, spans), INVALID, "plan");
    EXPECT0(sparcl_plan_read_spans(NULL, spans_seen), INVALID, "plan");
    EXPECT0(sparcl_plan_write_spans(NULL, NULL), INVALID, "plan");
    EXPECT0(sparcl_plan_read_spans(NULL, NULL), INVALID, "plan");

    sparcl_plan_desc d = tiny_desc(SPARCL_ATTENTION_SPAN);
    d.spans = spans;
    sparcl_plan *sp = plan_of(&d);
    EXPECT(sparcl_plan_write_spans(sp, NULL), INVALID, "spans");
    EXPECT(sparcl_plan_read_spans(sp, NULL), INVALID, "spans");
    const float bad[5] = {-FLT_MIN, -1.0f, NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 5; ++k) {
        const float w[2] = {3.0f, bad[k]};
        forget(ctx);
        EXPECT(sparcl_plan_write_spans(sp, w), INVALID, "spans[1]");
    }
    cr_assert_eq(sparcl_plan_read_spans(sp, spans_seen), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert(spans_seen[0] == 1.0f && spans_seen[1] == 2.0f,
              "a refused write changed the spans: %g %g", spans_seen[0], spans_seen[1]);
    /* The edges of the domain are accepted: 0, -0 and the largest float. */
    const float edge[2] = {-0.0f, FLT_MAX};
    cr_assert_eq(sparcl_plan_write_spans(sp, edge), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_read_spans(sp, spans_seen), SPARCL_OK);
    cr_assert(spans_seen[0] == 0.0f && spans_seen[1] == FLT_MAX);
    sparcl_plan_free(sp);

    const int kinds[2] = {SPARCL_ATTENTION_EXACT, SPARCL_ATTENTION_LSH};
    kinds_refuse(kinds, 2, write_spans, "adaptive-span");
    kinds_refuse(kinds, 2, read_spans, "adaptive-span");
    cr_assert(spans_seen[0] == 0.0f && spans_seen[1] == FLT_MAX, "a refused read wrote spans");
}

/* sparcl_plan_backward_span() of p over m[0 .. 10) on `queue`. */
static sparcl_status backward_span(sparcl_plan *p, cl_command_queue queue, const cl_mem m[10],
                                   cl_uint num_wait, const cl_event *wait)
{
    return sparcl_plan_backward_span(p, queue, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8],
                                     m[9], num_wait, wait, NULL);
}

/* The device and host backward of a span plan: every buffer and array
 * named, sizes checked, aliasing, wait lists, queues, kinds. */
Test(hostile_kinds, backward_span_refuses_bad_arguments)
{
    const cl_mem none[10] = {NULL};
    EXPECT0(backward_span(NULL, NULL, none, 0, NULL), INVALID, "plan");
    static float x[NQ], l[NL], z[2];
    EXPECT0(sparcl_plan_backward_span_host(NULL, x, x, x, x, l, x, x, x, x, z), INVALID, "plan");

    const float spans[2] = {1.0f, 4.0f};
    sparcl_plan_desc d = tiny_desc(SPARCL_ATTENTION_SPAN);
    d.spans = spans;
    sparcl_plan *sp = plan_of(&d);
    cl_mem m[10], a[10], tiny = dev_buffer(ctx, 1);
    span_buffers(m);
    for (int t = 0; t < 9; ++t) { /* dspans may be NULL; nothing else may */
        memcpy(a, m, sizeof a);
        a[t] = NULL;
        forget(ctx);
        EXPECT(backward_span(sp, NULL, a, 0, NULL), INVALID, span_names[t]);
        a[t] = tiny;
        forget(ctx);
        EXPECT(backward_span(sp, NULL, a, 0, NULL), INVALID, span_names[t]);
    }
    memcpy(a, m, sizeof a);
    a[9] = tiny; /* one float for two heads */
    EXPECT(backward_span(sp, NULL, a, 0, NULL), INVALID, "dspans");
    for (int t = 0; t < 9; ++t) { /* dspans aliasing any other tensor */
        cl_mem big = dev_buffer(ctx, NQ);
        memcpy(a, m, sizeof a);
        a[t] = a[9] = big;
        forget(ctx);
        EXPECT(backward_span(sp, NULL, a, 0, NULL), INVALID, "dspans");
        clReleaseMemObject(big);
    }
    cl_event ev = NULL;
    EXPECT(backward_span(sp, NULL, m, 1, NULL), INVALID, "num_wait");
    EXPECT(backward_span(sp, NULL, m, 0, &ev), INVALID, "num_wait");
    EXPECT(backward_span(sp, NULL, m, UINT_MAX, NULL), INVALID, "num_wait");
    foreign f = foreign_open();
    EXPECT(backward_span(sp, f.queue, m, 0, NULL), INVALID, "queue");
    foreign_close(&f);

    /* The host call names each NULL array; dspans may be NULL. */
    float *h[10] = {x, x, x, x, l, x, x, x, x, z};
    for (int t = 0; t < 9; ++t) {
        float *ha[10];
        memcpy(ha, h, sizeof ha);
        ha[t] = NULL;
        forget(ctx);
        EXPECT(sparcl_plan_backward_span_host(sp, ha[0], ha[1], ha[2], ha[3], ha[4], ha[5], ha[6],
                                              ha[7], ha[8], ha[9]),
               INVALID, span_names[t]);
    }
    sparcl_plan_free(sp);

    /* Other kinds take no dspans: on the device and from the host. */
    sparcl_plan_desc e = tiny_desc(SPARCL_ATTENTION_EXACT);
    sparcl_plan *dense = plan_of(&e);
    EXPECT(backward_span(dense, NULL, m, 0, NULL), INVALID, "dspans");
    forget(ctx);
    EXPECT(sparcl_plan_backward_span_host(dense, x, x, x, x, l, x, x, x, x, z), INVALID, "dspans");
    sparcl_plan_free(dense);
    /* An LSH plan has no backward at all. */
    e = tiny_desc(SPARCL_ATTENTION_LSH);
    sparcl_plan *lsh = plan_of(&e);
    memcpy(a, m, sizeof a);
    a[9] = NULL;
    EXPECT(backward_span(lsh, NULL, a, 0, NULL), UNSUPPORTED, "LSH");
    sparcl_plan_free(lsh);
    release_all(m, 10);
    clReleaseMemObject(tiny);
}

/* ---- LSH inspection ----------------------------------------------------- */

static cl_mem lsh_q; /* a q of tiny_desc()'s shape */

static sparcl_status lsh_order(sparcl_plan *p)
{
    int32_t b[NL];
    return sparcl_plan_lsh_order(p, NULL, lsh_q, b, NULL);
}

Test(hostile_kinds, lsh_order_refuses_bad_arguments)
{
    int32_t b[NL], o[NL];
    EXPECT0(sparcl_plan_lsh_order(NULL, NULL, NULL, b, o), INVALID, "plan");
    sparcl_plan_desc d = tiny_desc(SPARCL_ATTENTION_LSH);
    sparcl_plan *lsh = plan_of(&d);
    lsh_q = dev_buffer(ctx, NQ);
    cl_mem tiny = dev_buffer(ctx, NQ - 1);
    EXPECT(sparcl_plan_lsh_order(lsh, NULL, NULL, b, o), INVALID, "q");
    forget(ctx);
    EXPECT(sparcl_plan_lsh_order(lsh, NULL, tiny, b, o), INVALID, "q");
    foreign f = foreign_open();
    EXPECT(sparcl_plan_lsh_order(lsh, f.queue, lsh_q, b, o), INVALID, "queue");
    foreign_close(&f);
    /* Neither output wanted: a valid call that writes nothing. */
    cr_assert_eq(sparcl_plan_lsh_order(lsh, NULL, lsh_q, NULL, NULL), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(lsh);
    const int kinds[2] = {SPARCL_ATTENTION_EXACT, SPARCL_ATTENTION_SPAN};
    kinds_refuse(kinds, 2, lsh_order, "LSH");
    clReleaseMemObject(lsh_q);
    clReleaseMemObject(tiny);
}

/* ---- Buffers of another cl_context ------------------------------------- */

/* A buffer of the right size from another cl_context is not the plan's:
 * refused by name before anything is enqueued (regression: POCL ran the
 * LSH hash on it and sparcl_plan_lsh_order() returned OK). */
Test(hostile_kinds, buffers_of_another_context_are_refused)
{
    foreign f = foreign_open();
    cl_int err = CL_SUCCESS;
    cl_mem alien = clCreateBuffer(f.context, CL_MEM_READ_WRITE, NQ * sizeof(float), NULL, &err);
    cr_assert_not_null(alien);
    int32_t b[NL];
    sparcl_plan_desc d = tiny_desc(SPARCL_ATTENTION_LSH);
    sparcl_plan *lsh = plan_of(&d);
    EXPECT(sparcl_plan_lsh_order(lsh, NULL, alien, b, NULL), INVALID, "q buffer");
    sparcl_plan_free(lsh);

    const float spans[2] = {1.0f, 4.0f};
    d = tiny_desc(SPARCL_ATTENTION_SPAN);
    d.spans = spans;
    sparcl_plan *sp = plan_of(&d);
    cl_mem m[10], a[10];
    span_buffers(m);
    EXPECT(sparcl_plan_forward(sp, m[0], m[1], alien, m[3], m[4], 0, NULL, NULL), INVALID,
           "v buffer");
    forget(ctx);
    EXPECT(sparcl_plan_forward(sp, m[0], m[1], m[2], m[3], alien, 0, NULL, NULL), INVALID,
           "lse buffer");
    for (int t = 0; t < 10; ++t) {
        memcpy(a, m, sizeof a);
        a[t] = alien;
        forget(ctx);
        EXPECT(backward_span(sp, NULL, a, 0, NULL), INVALID, span_names[t]);
        cr_assert(strstr(sparcl_ctx_errmsg(ctx), "cl_context"), "%s", sparcl_ctx_errmsg(ctx));
    }
    sparcl_plan_free(sp);
    /* sparcl_merge() checks its buffers the same way. */
    const sparcl_strides contiguous = {0, 0, 0};
    const cl_mem parts[1] = {m[0]}, lses[1] = {alien};
    EXPECT(sparcl_merge(ctx, NULL, 1, 2, 9, 8, 1, parts, lses, contiguous, m[3], contiguous, NULL,
                        0, NULL, NULL),
           INVALID, "cl_context");
    release_all(m, 10);
    clReleaseMemObject(alien);
    foreign_close(&f);
}
