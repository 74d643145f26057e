/*
 * test_multidev.c -- multi-device plans (sparcl_multi_plan_*): one call cut
 * over two or three contexts by heads, by query rows and by keys, forward
 * and backward, against the same call on one device (sparcl_plan_*_host)
 * and, for some cases, against the double-precision reference
 * (sparcl_reference_forward / _backward).  CTest runs this suite with
 * POCL_DEVICES="pthread pthread pthread", so the contexts sit on distinct
 * OpenCL devices; run by hand with one device, they share it.
 * Tolerances: out and gradients within 2e-5 x max(1, largest value) of the
 * single-device call (fp32 rounding of a different summation order), lse
 * within 2e-5 x (1 + |lse|); 1e-4 against the double reference.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "sparcl.h"

#define TOL_SAME 2e-5
#define TOL_REF 1e-4

/* ---- Contexts ------------------------------------------------------------ */

static int device_count(void)
{
    char buf[4096];
    int n = 0;
    cr_assert_eq(sparcl_device_list(buf, sizeof buf, &n), SPARCL_OK);
    return n;
}

/* n contexts on devices 0, 1, ... (device 0 again where there are fewer). */
static void open_contexts(sparcl_ctx **c, int n)
{
    const int devices = device_count();
    for (int k = 0; k < n; ++k) {
        char sel[16];
        snprintf(sel, sizeof sel, "%d", k < devices ? k : 0);
        cr_assert_eq(sparcl_ctx_init_device(&c[k], sel), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    }
}

static void close_contexts(sparcl_ctx **c, int n)
{
    for (int k = 0; k < n; ++k)
        sparcl_ctx_free(c[k]);
}

/* ---- Problems ------------------------------------------------------------ */

enum { P_DENSE, P_WINDOW, P_BIGBIRD, P_PER_HEAD, P_BLOCK_ROW0 };

typedef struct mcase {
    const char *name;
    int batch, qh, kvh, lq, lk, dim, causal, pattern, block;
    int reference; /* also against the double reference */
} mcase;

static const mcase cases[] = {
    {"dense-gqa", 2, 4, 2, 113, 113, 72, 0, P_DENSE, 0, 1},
    {"causal", 1, 2, 2, 113, 100, 64, 1, P_DENSE, 0, 0},
    {"window-mqa", 1, 3, 1, 100, 117, 100, 0, P_WINDOW, 16, 0},
    {"bigbird", 1, 2, 1, 113, 113, 16, 0, P_BIGBIRD, 8, 1},
    {"per-head-causal", 1, 3, 3, 17, 33, 16, 1, P_PER_HEAD, 4, 0},
    {"decode", 1, 4, 1, 1, 1023, 64, 0, P_DENSE, 0, 0},
};

static sparcl_layout *make_layout(sparcl_ctx *ctx, const mcase *c)
{
    sparcl_layout *l = NULL;
    switch (c->pattern) {
    case P_DENSE: return NULL;
    case P_WINDOW:
        cr_assert_eq(sparcl_layout_init_window(ctx, &l, 1, c->lq, c->lk, c->block, 20, 7),
                     SPARCL_OK);
        return l;
    case P_BIGBIRD: {
        sparcl_bigbird_desc d;
        sparcl_bigbird_desc_init(&d);
        d.random = 2;
        d.seed = 7;
        d.per_head = 1;
        cr_assert_eq(sparcl_layout_init_bigbird(ctx, &l, c->qh, c->lq, c->lk, c->block, &d),
                     SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
        return l;
    }
    case P_PER_HEAD: { /* a different pattern per head, one block row attending nothing */
        sparcl_layout *parts[3];
        cr_assert_eq(sparcl_layout_init_window(ctx, &parts[0], 1, c->lq, c->lk, c->block, 3, 0),
                     SPARCL_OK);
        cr_assert_eq(sparcl_layout_init_dense(ctx, &parts[1], 1, c->lq, c->lk, c->block),
                     SPARCL_OK);
        const int nbr = (c->lq + c->block - 1) / c->block, nbc = (c->lk + c->block - 1) / c->block;
        uint8_t *mask = calloc((size_t)(nbr * nbc), 1);
        for (int r = 1; r < nbr; ++r) /* block row 0 attends nothing */
            mask[r * nbc + (r * 3) % nbc] = 1;
        cr_assert_eq(sparcl_layout_init_block_mask(ctx, &parts[2], 1, c->lq, c->lk, c->block, mask),
                     SPARCL_OK);
        free(mask);
        cr_assert_eq(sparcl_layout_init_per_head(ctx, &l, (const sparcl_layout *const *)parts, 3),
                     SPARCL_OK);
        for (int k = 0; k < 3; ++k)
            sparcl_layout_free(parts[k]);
        return l;
    }
    case P_BLOCK_ROW0: { /* only the first block row attends (to its first block) */
        const int nbr = (c->lq + c->block - 1) / c->block, nbc = (c->lk + c->block - 1) / c->block;
        uint8_t *mask = calloc((size_t)(nbr * nbc), 1);
        mask[0] = 1;
        cr_assert_eq(sparcl_layout_init_block_mask(ctx, &l, 1, c->lq, c->lk, c->block, mask),
                     SPARCL_OK);
        free(mask);
        return l;
    }
    }
    return NULL;
}

static void make_desc(const mcase *c, const sparcl_layout *l, sparcl_plan_desc *d)
{
    sparcl_plan_desc_init(d);
    d->batch = c->batch;
    d->q_heads = c->qh;
    d->kv_heads = c->kvh;
    d->q_len = c->lq;
    d->kv_len = c->lk;
    d->head_dim = c->dim;
    d->causal = c->causal;
    d->layout = l;
}

/* The host tensors of one problem. */
typedef struct tensors {
    size_t nq, nk, nl;
    float *q, *k, *v, *dout;
    float *out, *lse, *dq, *dk, *dv;      /* one device */
    float *mout, *mlse, *mdq, *mdk, *mdv; /* several */
} tensors;

static void tensors_init(tensors *t, const sparcl_plan_desc *d)
{
    t->nl = (size_t)d->batch * d->q_heads * d->q_len;
    t->nq = t->nl * d->head_dim;
    t->nk = (size_t)d->batch * d->kv_heads * d->kv_len * d->head_dim;
    float **q_like[] = {&t->q, &t->dout, &t->out, &t->dq, &t->mout, &t->mdq};
    float **k_like[] = {&t->k, &t->v, &t->dk, &t->dv, &t->mdk, &t->mdv};
    for (size_t i = 0; i < 6; ++i) {
        *q_like[i] = malloc(sizeof(float) * t->nq);
        *k_like[i] = malloc(sizeof(float) * t->nk);
    }
    t->lse = malloc(sizeof(float) * t->nl);
    t->mlse = malloc(sizeof(float) * t->nl);
    oracle_fill(t->q, t->nq, 11);
    oracle_fill(t->k, t->nk, 12);
    oracle_fill(t->v, t->nk, 13);
    oracle_fill(t->dout, t->nq, 14);
}

static void tensors_free(tensors *t)
{
    float *all[] = {t->q,  t->k,  t->v,    t->dout, t->out, t->lse, t->dq,
                    t->dk, t->dv, t->mout, t->mlse, t->mdq, t->mdk, t->mdv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        free(all[i]);
}

/* ---- Comparisons --------------------------------------------------------- */

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; ++i)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* |a - b| <= tol x max(1, max|b|) everywhere. */
static void expect_close(const char *what, const float *a, const float *b, size_t n, double tol)
{
    const double bound = tol * fmax(1.0, max_abs(b, n));
    for (size_t i = 0; i < n; ++i) {
        const double e = fabs((double)a[i] - b[i]);
        cr_assert(e <= bound, "%s[%zu]: %.9g vs %.9g (bound %.3g)", what, i, a[i], b[i], bound);
    }
}

static void expect_lse_close(const float *a, const float *b, size_t n, double tol)
{
    for (size_t i = 0; i < n; ++i) {
        if (isinf(b[i])) {
            cr_assert(a[i] == b[i], "lse[%zu]: %g vs %g", i, a[i], b[i]);
            continue;
        }
        cr_assert(fabs((double)a[i] - b[i]) <= tol * (1 + fabs(b[i])), "lse[%zu]: %.9g vs %.9g", i,
                  a[i], b[i]);
    }
}

static void expect_close_ref(const char *what, const float *a, const double *ref, size_t n)
{
    double m = 1;
    for (size_t i = 0; i < n; ++i)
        m = isfinite(ref[i]) && fabs(ref[i]) > m ? fabs(ref[i]) : m;
    const double e = oracle_max_abs_diff_f(a, ref, n);
    cr_assert(e <= TOL_REF * m, "%s: max abs error %.3g vs the double reference (bound %.3g)", what,
              e, TOL_REF * m);
}

/* ---- The check ----------------------------------------------------------- */

/* The call on one device: t's out, lse, dq, dk and dv. */
static void run_one(sparcl_ctx *ctx, const sparcl_plan_desc *d, tensors *t)
{
    sparcl_plan *one;
    cr_assert_eq(sparcl_plan_init(ctx, &one, d), SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    cr_assert_eq(sparcl_plan_forward_host(one, t->q, t->k, t->v, t->out, t->lse), SPARCL_OK);
    cr_assert_eq(sparcl_plan_backward_host(one, t->q, t->k, t->v, t->out, t->lse, t->dout, t->dq,
                                           t->dk, t->dv),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(ctx));
    sparcl_plan_free(one);
}

/* The same through mp: t's mout, mlse, mdq, mdk and mdv.  The backward
 * gets the one-device forward's out and lse, as training code hands the
 * forward's own results back. */
static void run_multi(sparcl_multi_plan *mp, sparcl_ctx *lead, tensors *t)
{
    cr_assert_eq(sparcl_multi_plan_forward_host(mp, t->q, t->k, t->v, t->mout, t->mlse), SPARCL_OK,
                 "%s", sparcl_ctx_errmsg(lead));
    cr_assert_eq(sparcl_multi_plan_backward_host(mp, t->q, t->k, t->v, t->out, t->lse, t->dout,
                                                 t->mdq, t->mdk, t->mdv),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(lead));
}

static void expect_same(const tensors *t)
{
    expect_close("out", t->mout, t->out, t->nq, TOL_SAME);
    expect_lse_close(t->mlse, t->lse, t->nl, TOL_SAME);
    expect_close("dq", t->mdq, t->dq, t->nq, TOL_SAME);
    expect_close("dk", t->mdk, t->dk, t->nk, TOL_SAME);
    expect_close("dv", t->mdv, t->dv, t->nk, TOL_SAME);
}

/* The multi-device results of t against the double reference. */
static void expect_reference(sparcl_plan_desc *d, const mcase *c, sparcl_ctx *ctx, const tensors *t)
{
    sparcl_layout *l = make_layout(ctx, c);
    d->layout = l;
    double *ro = malloc(sizeof(double) * t->nq), *rl = malloc(sizeof(double) * t->nl);
    double *rdq = malloc(sizeof(double) * t->nq), *rdk = malloc(sizeof(double) * t->nk),
           *rdv = malloc(sizeof(double) * t->nk);
    cr_assert_eq(sparcl_reference_forward(NULL, d, t->q, t->k, t->v, ro, rl), SPARCL_OK);
    cr_assert_eq(sparcl_reference_backward(NULL, d, t->q, t->k, t->v, t->dout, rdq, rdk, rdv),
                 SPARCL_OK);
    expect_close_ref("out", t->mout, ro, t->nq);
    expect_close_ref("lse", t->mlse, rl, t->nl);
    expect_close_ref("dq", t->mdq, rdq, t->nq);
    expect_close_ref("dk", t->mdk, rdk, t->nk);
    expect_close_ref("dv", t->mdv, rdv, t->nk);
    free(ro), free(rl), free(rdq), free(rdk), free(rdv);
    sparcl_layout_free(l);
}

/* Runs case c on one device and cut `mode` over `n` contexts, forward and
 * backward, and compares. */
static void check_case(const mcase *c, int mode, int n)
{
    sparcl_ctx *ctx[3];
    open_contexts(ctx, n);
    sparcl_layout *l = make_layout(ctx[0], c);
    sparcl_plan_desc d;
    make_desc(c, l, &d);
    tensors t;
    tensors_init(&t, &d);
    run_one(ctx[0], &d, &t);
    sparcl_multi_plan *mp;
    cr_assert_eq(sparcl_multi_plan_init(ctx, n, &mp, &d, mode), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx[0]));
    sparcl_layout_free(l); /* the plan keeps what it needs */
    const int shards = sparcl_multi_plan_shard_count(mp);
    cr_assert(shards >= 1 && shards <= n);
    run_multi(mp, ctx[0], &t);
    expect_same(&t);
    if (c->reference)
        expect_reference(&d, c, ctx[0], &t);
    sparcl_multi_plan_free(mp);
    tensors_free(&t);
    close_contexts(ctx, n);
}

typedef struct param {
    int c, mode, devices;
} param;

ParameterizedTestParameters(multidev, matches_one_device)
{
    static param ps[3 * sizeof cases / sizeof cases[0]];
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int c = 0; c < nc; ++c)
        for (int m = 0; m < 3; ++m)
            ps[c * 3 + m] = (param){c, m, 2 + (c + m) % 2};
    return cr_make_param_array(param, ps, sizeof ps / sizeof ps[0]);
}

ParameterizedTest(param *p, multidev, matches_one_device)
{
    cr_log_info("%s, mode %d, %d devices", cases[p->c].name, p->mode, p->devices);
    check_case(&cases[p->c], p->mode, p->devices);
}

/* ---- One device ------------------------------------------------------------ */

/* A list of one context is the plain call: the same plan, the same bits. */
Test(multidev, one_device_is_the_plain_call)
{
    sparcl_ctx *ctx[1];
    open_contexts(ctx, 1);
    const mcase *c = &cases[3]; /* bigbird: a per-head layout with PARTIAL blocks */
    sparcl_layout *l = make_layout(ctx[0], c);
    sparcl_plan_desc d;
    make_desc(c, l, &d);
    tensors t;
    tensors_init(&t, &d);
    sparcl_plan *one;
    cr_assert_eq(sparcl_plan_init(ctx[0], &one, &d), SPARCL_OK);
    cr_assert_eq(sparcl_plan_forward_host(one, t.q, t.k, t.v, t.out, t.lse), SPARCL_OK);
    cr_assert_eq(
        sparcl_plan_backward_host(one, t.q, t.k, t.v, t.out, t.lse, t.dout, t.dq, t.dk, t.dv),
        SPARCL_OK);
    for (int mode = 0; mode < 3; ++mode) {
        sparcl_multi_plan *mp;
        cr_assert_eq(sparcl_multi_plan_init(ctx, 1, &mp, &d, mode), SPARCL_OK);
        cr_assert_eq(sparcl_multi_plan_shard_count(mp), 1);
        cr_assert_eq(sparcl_multi_plan_forward_host(mp, t.q, t.k, t.v, t.mout, t.mlse), SPARCL_OK);
        cr_assert_eq(sparcl_multi_plan_backward_host(mp, t.q, t.k, t.v, t.out, t.lse, t.dout, t.mdq,
                                                     t.mdk, t.mdv),
                     SPARCL_OK);
        /* KEYS merges its single part: exp(0) weights, out unchanged. */
        cr_assert(memcmp(t.mout, t.out, sizeof(float) * t.nq) == 0, "mode %d: out differs", mode);
        cr_assert(memcmp(t.mlse, t.lse, sizeof(float) * t.nl) == 0, "mode %d: lse differs", mode);
        cr_assert(memcmp(t.mdq, t.dq, sizeof(float) * t.nq) == 0, "mode %d: dq differs", mode);
        cr_assert(memcmp(t.mdk, t.dk, sizeof(float) * t.nk) == 0, "mode %d: dk differs", mode);
        cr_assert(memcmp(t.mdv, t.dv, sizeof(float) * t.nk) == 0, "mode %d: dv differs", mode);
        sparcl_multi_plan_free(mp);
    }
    sparcl_plan_free(one);
    sparcl_layout_free(l);
    tensors_free(&t);
    close_contexts(ctx, 1);
}

/* ---- The cuts themselves -------------------------------------------------- */

static sparcl_shard_info shard(const sparcl_multi_plan *mp, int s)
{
    sparcl_shard_info info;
    sparcl_shard_info_init(&info);
    cr_assert_eq(sparcl_multi_plan_shard(mp, s, &info), SPARCL_OK);
    return info;
}

/* Causal rows cut by attended pairs, not by count, and each share reads
 * only the keys its rows attend. */
Test(multidev, causal_rows_balance_pairs_and_trim_keys)
{
    sparcl_ctx *ctx[2];
    open_contexts(ctx, 2);
    sparcl_plan_desc d;
    const mcase c = {"causal-512", 1, 2, 2, 512, 512, 16, 1, P_DENSE, 0, 0};
    make_desc(&c, NULL, &d);
    sparcl_multi_plan *mp;
    cr_assert_eq(sparcl_multi_plan_init(ctx, 2, &mp, &d, SPARCL_SHARD_QUERIES), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx[0]));
    cr_assert_eq(sparcl_multi_plan_shard_count(mp), 2);
    const sparcl_shard_info a = shard(mp, 0), b = shard(mp, 1);
    cr_assert_eq(a.row0, 0);
    cr_assert_eq(a.rows + b.rows, 512);
    cr_assert_eq(b.row0, a.rows);
    cr_assert_gt(a.rows, b.rows, "the early rows attend fewer keys: %d vs %d", a.rows, b.rows);
    cr_assert_eq(a.key0, 0);
    cr_assert_eq(a.keys, a.rows, "rows [0, %d) attend keys [0, %d) only", a.rows, a.rows);
    cr_assert_eq(b.keys, 512);
    /* pairs: row i attends i + 1 keys, two heads */
    cr_assert_eq(a.pairs + b.pairs, 2 * 512 * 513 / 2);
    cr_assert(llabs(a.pairs - b.pairs) < (a.pairs + b.pairs) / 10, "pairs %lld vs %lld",
              (long long)a.pairs, (long long)b.pairs);
    cr_assert_gt(a.device_bytes, 0);
    sparcl_multi_plan_free(mp);
    close_contexts(ctx, 2);
}

/* Keys cut into disjoint ranges; heads of an MQA call spread within its one
 * kv head. */
Test(multidev, key_ranges_and_head_groups)
{
    sparcl_ctx *ctx[3];
    open_contexts(ctx, 3);
    sparcl_plan_desc d;
    const mcase c = {"mqa", 1, 4, 1, 64, 300, 16, 0, P_DENSE, 0, 0};
    make_desc(&c, NULL, &d);
    sparcl_multi_plan *mp;
    cr_assert_eq(sparcl_multi_plan_init(ctx, 3, &mp, &d, SPARCL_SHARD_KEYS), SPARCL_OK);
    cr_assert_eq(sparcl_multi_plan_shard_count(mp), 3);
    int next = 0;
    for (int s = 0; s < 3; ++s) {
        const sparcl_shard_info i = shard(mp, s);
        cr_assert_eq(i.context, s);
        cr_assert_eq(i.key0, next);
        cr_assert(i.keys == 100, "dense keys split evenly: %d", i.keys);
        cr_assert_eq(i.rows, 64);
        cr_assert_eq(i.heads, 4);
        next += i.keys;
    }
    /* An older caller's smaller struct is filled only as far as its size. */
    struct {
        sparcl_shard_info info;
        unsigned char tail[16];
    } old;
    memset(&old, 0xAB, sizeof old);
    old.info.struct_size = offsetof(sparcl_shard_info, device_bytes);
    cr_assert_eq(sparcl_multi_plan_shard(mp, 1, &old.info), SPARCL_OK);
    cr_assert_eq(old.info.key0, 100);
    const unsigned char *bytes = (const unsigned char *)&old;
    for (size_t b = offsetof(sparcl_shard_info, device_bytes); b < sizeof old; ++b)
        cr_assert_eq(bytes[b], 0xAB, "byte %zu beyond struct_size was written", b);
    sparcl_multi_plan_free(mp);
    cr_assert_eq(sparcl_multi_plan_init(ctx, 3, &mp, &d, SPARCL_SHARD_HEADS), SPARCL_OK);
    cr_assert_eq(sparcl_multi_plan_shard_count(mp), 3);
    int heads = 0;
    for (int s = 0; s < 3; ++s) {
        const sparcl_shard_info i = shard(mp, s);
        cr_assert_eq(i.head0, heads);
        cr_assert_eq(i.kv_head0, 0);
        cr_assert_eq(i.kv_heads, 1);
        heads += i.heads;
    }
    cr_assert_eq(heads, 4);
    sparcl_multi_plan_free(mp);
    close_contexts(ctx, 3);
}

/* Shares that attend nothing get no plan; their rows are out 0, lse -inf,
 * and their keys get zero gradients. */
Test(multidev, empty_shares)
{
    const mcase c = {"row0", 1, 2, 1, 40, 40, 16, 0, P_BLOCK_ROW0, 8, 0};
    for (int mode = SPARCL_SHARD_QUERIES; mode <= SPARCL_SHARD_KEYS; ++mode) {
        sparcl_ctx *ctx[2];
        open_contexts(ctx, 2);
        sparcl_layout *l = make_layout(ctx[0], &c);
        sparcl_plan_desc d;
        make_desc(&c, l, &d);
        tensors t;
        tensors_init(&t, &d);
        run_one(ctx[0], &d, &t);
        sparcl_multi_plan *mp;
        cr_assert_eq(sparcl_multi_plan_init(ctx, 2, &mp, &d, mode), SPARCL_OK, "%s",
                     sparcl_ctx_errmsg(ctx[0]));
        cr_assert_eq(sparcl_multi_plan_shard_count(mp), 2);
        cr_assert_eq(shard(mp, 1).pairs, 0, "mode %d: the second share attends nothing", mode);
        cr_assert_eq(shard(mp, 1).device_bytes, 0);
        memset(t.mout, 0x7f, sizeof(float) * t.nq); /* garbage the calls must overwrite */
        memset(t.mlse, 0x7f, sizeof(float) * t.nl);
        memset(t.mdk, 0x7f, sizeof(float) * t.nk);
        run_multi(mp, ctx[0], &t);
        expect_same(&t);
        cr_assert(isinf(t.mlse[39]) && t.mlse[39] < 0, "row 39 attends nothing");
        sparcl_multi_plan_free(mp);
        sparcl_layout_free(l);
        tensors_free(&t);
        close_contexts(ctx, 2);
    }
}

/* Sparsemax rows stay whole under a cut by heads or queries; a cut by
 * keys cannot merge them and says so. */
Test(multidev, sparsemax_by_queries)
{
    sparcl_ctx *ctx[2];
    open_contexts(ctx, 2);
    const mcase c = {"sparsemax", 1, 2, 2, 33, 47, 16, 1, P_DENSE, 0, 0};
    sparcl_plan_desc d;
    make_desc(&c, NULL, &d);
    d.normalization = SPARCL_NORMALIZATION_SPARSEMAX;
    tensors t;
    tensors_init(&t, &d);
    run_one(ctx[0], &d, &t);
    sparcl_multi_plan *mp;
    cr_assert_eq(sparcl_multi_plan_init(ctx, 2, &mp, &d, SPARCL_SHARD_QUERIES), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(ctx[0]));
    cr_assert_eq(sparcl_multi_plan_shard_count(mp), 2);
    run_multi(mp, ctx[0], &t);
    expect_same(&t);
    sparcl_multi_plan_free(mp);
    cr_assert_eq(sparcl_multi_plan_init(ctx, 2, &mp, &d, SPARCL_SHARD_KEYS),
                 SPARCL_ERR_NOT_SUPPORTED);
    cr_assert_null(mp);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx[0]), "normalization 1"), "%s",
              sparcl_ctx_errmsg(ctx[0]));
    tensors_free(&t);
    close_contexts(ctx, 2);
}

/* ---- Bad input ------------------------------------------------------------ */

static void expect_refused(sparcl_ctx *const *ctx, int n, const sparcl_plan_desc *d, int mode,
                           sparcl_status want, const sparcl_ctx *where, const char *text)
{
    sparcl_multi_plan *mp = (sparcl_multi_plan *)&mp; /* must be reset to NULL */
    cr_assert_eq(sparcl_multi_plan_init(ctx, n, &mp, d, mode), want, "want %s: %s",
                 sparcl_status_string(want), sparcl_ctx_errmsg(where));
    cr_assert_null(mp);
    cr_assert(strstr(sparcl_ctx_errmsg(where), text), "message \"%s\" lacks \"%s\"",
              sparcl_ctx_errmsg(where), text);
}

Test(multidev, bad_input)
{
    sparcl_ctx *ctx[3];
    open_contexts(ctx, 2);
    ctx[2] = NULL;
    const mcase c = {"small", 1, 2, 1, 17, 17, 16, 0, P_DENSE, 0, 0};
    sparcl_plan_desc d;
    make_desc(&c, NULL, &d);
    const sparcl_status INV = SPARCL_ERR_INVALID_ARGUMENT, NS = SPARCL_ERR_NOT_SUPPORTED;

    cr_assert_eq(sparcl_multi_plan_init(ctx, 2, NULL, &d, 0), INV);
    expect_refused(NULL, 2, &d, 0, INV, NULL, "contexts is NULL");
    expect_refused(ctx, 0, &d, 0, INV, NULL, "count 0");
    expect_refused(ctx, SPARCL_MULTI_MAX_DEVICES + 1, &d, 0, INV, NULL, "count 65");
    expect_refused(ctx, 3, &d, 0, INV, ctx[0], "contexts[2] is NULL");
    sparcl_ctx *twice[2] = {ctx[1], ctx[1]};
    expect_refused(twice, 2, &d, 0, INV, ctx[1], "contexts[1] repeats contexts[0]");
    expect_refused(ctx, 2, NULL, 0, INV, ctx[0], "desc is NULL");
    expect_refused(ctx, 2, &d, 3, INV, ctx[0], "mode 3");
    expect_refused(ctx, 2, &d, -1, INV, ctx[0], "mode -1");

    sparcl_plan_desc bad = d;
    bad.q_heads = 3; /* not a multiple of kv_heads 2 */
    bad.kv_heads = 2;
    expect_refused(ctx, 2, &bad, 0, INV, ctx[0], "q_heads 3 is not a multiple of kv_heads 2");
    bad = d;
    bad.attention = SPARCL_ATTENTION_FAVOR;
    bad.features = 16;
    expect_refused(ctx, 2, &bad, 0, NS, ctx[0], "exact attention only");
    bad = d;
    bad.dtype = SPARCL_DTYPE_F16;
    expect_refused(ctx, 2, &bad, 0, NS, ctx[0], "f32 only");
    bad = d;
    bad.page_size = 16;
    expect_refused(ctx, 2, &bad, 0, NS, ctx[0], "page_size 16");

    /* A share's own failure names the share and its context. */
    sparcl_params p;
    sparcl_params_clear(&p);
    cr_assert_eq(sparcl_params_set(&p, "BLOCK_M", 3), SPARCL_OK);
    bad = d;
    bad.params = &p;
    expect_refused(ctx, 2, &bad, SPARCL_SHARD_HEADS, INV, ctx[0], "shard 0 (contexts[0]): ");
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx[1], 0, 1), SPARCL_OK);
    expect_refused(ctx, 2, &d, SPARCL_SHARD_QUERIES, SPARCL_ERR_OUT_OF_MEMORY, ctx[0],
                   "shard 1 (contexts[1]): ");
    cr_assert_eq(sparcl_ctx_set_memory_limit(ctx[1], 0, 0), SPARCL_OK);

    /* Calls. */
    sparcl_multi_plan *mp;
    cr_assert_eq(sparcl_multi_plan_init(ctx, 2, &mp, &d, SPARCL_SHARD_HEADS), SPARCL_OK);
    float x[2 * 17 * 16] = {0}, l[2 * 17] = {0};
    cr_assert_eq(sparcl_multi_plan_forward_host(NULL, x, x, x, x, l), INV);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "plan is NULL"));
    cr_assert_eq(sparcl_multi_plan_forward_host(mp, x, NULL, x, x, l), INV);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx[0]), "k is NULL"));
    cr_assert_eq(sparcl_multi_plan_backward_host(mp, x, x, x, x, NULL, x, x, x, x), INV);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx[0]), "lse is NULL"));
    sparcl_shard_info info;
    sparcl_shard_info_init(&info);
    cr_assert_eq(sparcl_multi_plan_shard(mp, 2, &info), INV);
    cr_assert(strstr(sparcl_ctx_errmsg(ctx[0]), "shard 2 is not in [0, 2)"));
    info.struct_size = 0;
    cr_assert_eq(sparcl_multi_plan_shard(mp, 0, &info), INV);
    cr_assert_eq(sparcl_multi_plan_shard_count(NULL), 0);
    sparcl_multi_plan_free(mp);
    sparcl_multi_plan_free(NULL);
    close_contexts(ctx, 2);
}

/* CTest's environment exposes several POCL devices; without it the suite
 * still runs, with contexts sharing device 0. */
Test(multidev, ctest_exposes_several_devices)
{
    const char *env = getenv("POCL_DEVICES");
    if (!env || !strstr(env, "pthread pthread"))
        cr_skip_test("POCL_DEVICES is not set to several devices");
    cr_assert_geq(device_count(), 2);
}
