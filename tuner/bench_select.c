/*
 * bench_select.c -- sparcl-bench's dynamic block selection rows (see
 * bench_select.h).  The selection's own time is measured as the whole
 * call minus a plain plan's forward over the layout the call chose (read
 * back with sparcl_plan_read_selection()), so both forwards walk the same
 * tiles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_calls.h"
#include "bench_select.h"
#include "select_inputs.h"

#define DIM 64
#define BLOCK 64

/* A plan of `heads` heads, q_len rows over n keys, head_dim DIM, block
 * BLOCK; rule NONE with a layout or none for the plain plans. */
static sparcl_plan *plan_of(sparcl_ctx *ctx, int q_len, int n, int heads, int rule, int k,
                            float tau, const sparcl_layout *layout)
{
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_heads = d.kv_heads = heads;
    d.q_len = q_len;
    d.kv_len = n;
    d.head_dim = DIM;
    d.layout = layout;
    d.select = rule;
    d.select_k = k;
    d.select_tau = tau;
    d.select_block = BLOCK;
    sparcl_plan *p = NULL;
    if (sparcl_plan_init(ctx, &p, &d) != SPARCL_OK)
        fprintf(stderr, "sparcl-bench: select: %s\n", sparcl_ctx_errmsg(ctx));
    return p;
}

/* Device buffers for `heads` heads of q_len query rows and n keys, q, k and
 * v from the structured inputs (rows of q are the first q_len of the
 * n-row draw); NULL entries on failure. */
static int make_bufs(sparcl_ctx *ctx, int q_len, int n, int heads, cl_mem *m)
{
    const size_t count = (size_t)heads * n * DIM, qc = (size_t)heads * q_len * DIM;
    float *x = malloc(sizeof *x * 3 * count);
    if (!x)
        return 0;
    select_inputs(heads, n, DIM, BLOCK, 4, 1, x, x + count, x + 2 * count);
    for (int h = 0; h < heads; ++h) /* q: the first q_len rows of each head */
        for (size_t i = 0; i < (size_t)q_len * DIM; ++i)
            x[(size_t)h * q_len * DIM + i] = x[(size_t)h * n * DIM + i];
    const size_t sizes[T_COUNT] = {qc, count, count, qc,   (size_t)heads * q_len,
                                   qc, qc,    count, count};
    int ok = 1;
    for (int i = 0; i < T_COUNT; ++i) {
        const int init = i <= T_V || i == T_DOUT;
        const float *src = i == T_DOUT ? x + 2 * count : x + (size_t)i * count;
        m[i] = clCreateBuffer(sparcl_ctx_cl_context(ctx),
                              CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0),
                              sizeof *x * sizes[i], init ? (void *)src : NULL, NULL);
        ok &= m[i] != NULL;
    }
    free(x);
    return ok;
}

static void free_bufs(cl_mem *m)
{
    for (int i = 0; i < T_COUNT; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
}

typedef struct sel_rule {
    int rule, k;
    float tau;
} sel_rule;

static void rule_name(const sel_rule *r, char *name, size_t size)
{
    if (r->rule == SPARCL_SELECT_TOPK)
        snprintf(name, size, "top-k k=%d", r->k);
    else
        snprintf(name, size, "mass tau=%.2f", r->tau);
}

/* One table: per rule the selecting plan, a plain plan over the layout the
 * selecting plan chose and a dense plan, interleaved; forward or backward
 * calls.  Returns the failures. */
static int table(sparcl_ctx *ctx, int q_len, int n, int heads, int reps, int backward,
                 const sel_rule *rules, int n_rules)
{
    cl_mem m[T_COUNT];
    if (!make_bufs(ctx, q_len, n, heads, m)) {
        free_bufs(m);
        printf("cannot allocate the buffers\n");
        return n_rules;
    }
    int failures = 0;
    sparcl_plan *dense = plan_of(ctx, q_len, n, heads, SPARCL_SELECT_NONE, 0, 0, NULL);
    /* The backward reads out and lse: the dense forward's will do for timing. */
    failures += !dense || (backward && bench_call_ms(ctx, dense, m, 0) < 0);
    printf("%-14s %8s %10s %10s %10s %8s %9s %11s\n", "rule", "density", "whole_ms", "sparse_ms",
           "select_ms", "sel/call", "dense_ms", "whole/dense");
    for (int r = 0; r < n_rules; ++r) {
        sparcl_plan *sel =
            plan_of(ctx, q_len, n, heads, rules[r].rule, rules[r].k, rules[r].tau, NULL);
        sparcl_layout *chosen = NULL;
        sparcl_plan *sparse = NULL;
        if (sel && bench_call_ms(ctx, sel, m, backward) >= 0 &&
            sparcl_plan_read_selection(sel, 0, &chosen) == SPARCL_OK)
            sparse = plan_of(ctx, q_len, n, heads, SPARCL_SELECT_NONE, 0, 0, chosen);
        sparcl_plan *three[3] = {sel, sparse, dense};
        double t[3] = {-1, -1, -1};
        if (!sparse || !bench_medians(ctx, three, dense ? 3 : 2, m, 0, reps, backward, t))
            t[1] = -1;
        const double whole = t[0], part = t[1];
        char name[32];
        rule_name(&rules[r], name, sizeof name);
        if (part < 0) {
            printf("%-14s failed\n", name);
            ++failures;
        } else {
            printf("%-14s %8.4f %10.2f %10.2f %10.2f %7.1f%% %9.2f %11.2f\n", name,
                   sparcl_layout_density(chosen), whole, part, whole - part,
                   100.0 * (whole - part) / part, t[2], t[2] > 0 ? whole / t[2] : 0.0);
        }
        sparcl_layout_free(chosen);
        sparcl_plan_free(sparse);
        sparcl_plan_free(sel);
    }
    sparcl_plan_free(dense);
    free_bufs(m);
    return failures;
}

/* Whether `part` is listed in the comma-separated `parts` (NULL: all). */
static int wanted(const char *parts, const char *part)
{
    const size_t n = strlen(part);
    for (const char *p = parts; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, part, n) && (p[n] == ',' || p[n] == '\0'))
            return 1;
    return !parts;
}

int bench_select(sparcl_ctx *ctx, int n, int heads, int reps, const char *parts)
{
    const int nkb = (n + BLOCK - 1) / BLOCK;
    const sel_rule rules[3] = {{SPARCL_SELECT_TOPK, nkb / 4 > 0 ? nkb / 4 : 1, 0},
                               {SPARCL_SELECT_TOPK, nkb / 8 > 0 ? nkb / 8 : 1, 0},
                               {SPARCL_SELECT_MASS, 1, 0.9f}};
    printf("\ndynamic block selection: n=%d, %d heads, head_dim %d, block %d, not causal, "
           "structured inputs (sparcl-select-quality); medians of %d calls, the three plans "
           "of a row interleaved; select_ms = whole call - a plain plan over the chosen layout\n",
           n, heads, DIM, BLOCK, reps);
    int failures = 0;
    if (wanted(parts, "fwd")) {
        printf("forward, q_len = kv_len = %d:\n", n);
        failures += table(ctx, n, n, heads, reps, 0, rules, 3);
    }
    const int nb = n / 4 > BLOCK ? n / 4 : n;
    const int nbb = (nb + BLOCK - 1) / BLOCK;
    const sel_rule brule = {SPARCL_SELECT_TOPK, nbb / 8 > 0 ? nbb / 8 : 1, 0};
    if (wanted(parts, "bwd")) {
        printf("backward (the selection chosen again from q and k), q_len = kv_len = %d:\n", nb);
        failures += table(ctx, nb, nb, heads, reps, 1, &brule, 1);
    }
    /* Decoding reads each key once per call: 4 n keys keep it measurable. */
    const int nd = 4 * n, ndb = (nd + BLOCK - 1) / BLOCK;
    const sel_rule drules[2] = {{SPARCL_SELECT_TOPK, ndb / 4, 0}, {SPARCL_SELECT_TOPK, ndb / 8, 0}};
    if (wanted(parts, "dec")) {
        printf("decoding (split-KV), q_len 1 over %d keys:\n", nd);
        failures += table(ctx, 1, nd, heads, reps, 0, drules, 2);
    }
    return failures;
}
