/*
 * tune_problems.c -- the problem sets sparcl-tune tunes: the standard set
 * (the benchmark's shapes), a scaled-down quick set that tunes in minutes on
 * a 2-core CPU, and problems given on the command line as specs.  The parent
 * and the worker both expand a spec here, so they build the same layout.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune.h"
#include "varlen_batch.h"

/* The standard problem set (fp32, batch 1). */
static const char standard_set[] = "dense:n=4096,h=8,d=64;"
                                   "causal:n=4096,h=8,d=64;"
                                   "window:n=16384,h=8,d=64,w=256;"
                                   "bigbird:n=16384,h=8,d=64;"
                                   "window:n=131072,h=4,d=64,w=256;"
                                   "dense:n=2048,h=8,d=128";

/* The same kinds at sizes where one candidate takes milliseconds. */
static const char quick_set[] = "dense:n=512,h=2,d=64;"
                                "causal:n=512,h=2,d=64;"
                                "window:n=2048,h=2,d=64,w=64;"
                                "bigbird:n=2048,h=2,d=64;"
                                "dense:n=256,h=2,d=128";

int tune_dtype_parse(const char *name)
{
    for (int t = SPARCL_DTYPE_F32; t <= SPARCL_DTYPE_BF16; ++t)
        if (!strcmp(name, sparcl_dtype_name(t)))
            return t;
    return -1;
}

/* The canonical spec: every key, the dtype only when it is not f32 (so
 * fp32 specs read as they always did). */
static void format_spec(tune_problem *p)
{
    int n = snprintf(p->spec, sizeof p->spec, "%s:n=%d,h=%d,kvh=%d,d=%d", p->pattern, p->n,
                     p->heads, p->kv_heads, p->dim);
    if (p->q_len != p->n) /* square problems keep their old spec (database keys) */
        n += snprintf(p->spec + n, sizeof p->spec - (size_t)n, ",q=%d", p->q_len);
    if (!strcmp(p->pattern, "window"))
        n += snprintf(p->spec + n, sizeof p->spec - (size_t)n, ",w=%d,blk=%d", p->window, p->block);
    else if (!strcmp(p->pattern, "bigbird") || !strcmp(p->pattern, "causal") ||
             !strcmp(p->pattern, "varlen"))
        n += snprintf(p->spec + n, sizeof p->spec - (size_t)n, ",blk=%d", p->block);
    if (p->dtype != SPARCL_DTYPE_F32 && n > 0 && (size_t)n < sizeof p->spec)
        snprintf(p->spec + n, sizeof p->spec - (size_t)n, ",dtype=%s", sparcl_dtype_name(p->dtype));
}

void tune_problem_default_dtype(tune_problem *p, int dtype)
{
    if (p->dtype_given)
        return;
    p->dtype = dtype;
    format_spec(p);
}

/* The spans attn_span is tuned with: geometric from 64 tokens (head 0) to
 * 1024 (the last head), as a trained model's heads spread from local to
 * long-range; one head gets the middle, 256.  A span beyond the sequence
 * means every earlier key. */
static void fill_spans(tune_problem *p)
{
    for (int h = 0; h < p->heads && h < TUNE_SPAN_HEADS_MAX; ++h)
        p->spans[h] = (float)(64.0 * pow(16.0, p->heads > 1 ? (double)h / (p->heads - 1) : 0.5));
}

static int parse_one(const char *text, tune_problem *p, char *err, size_t size)
{
    memset(p, 0, sizeof *p);
    p->heads = 1;
    p->block = 64;
    p->window = 256;
    const char *colon = strchr(text, ':');
    size_t plen = colon ? (size_t)(colon - text) : strlen(text);
    if (plen == 0 || plen >= sizeof p->pattern) {
        snprintf(err, size, "problem \"%s\": missing pattern name", text);
        return -1;
    }
    memcpy(p->pattern, text, plen);
    if (strcmp(p->pattern, "dense") && strcmp(p->pattern, "causal") &&
        strcmp(p->pattern, "window") && strcmp(p->pattern, "bigbird") &&
        strcmp(p->pattern, "varlen")) {
        snprintf(err, size,
                 "problem \"%s\": pattern must be dense, causal, window, bigbird or varlen", text);
        return -1;
    }
    char keys[256];
    snprintf(keys, sizeof keys, "%s", colon ? colon + 1 : "");
    char *save = NULL;
    for (char *kv = strtok_r(keys, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (eq && !strncmp(kv, "dtype=", 6)) {
            if ((p->dtype = tune_dtype_parse(eq + 1)) < 0) {
                snprintf(err, size, "problem \"%s\": dtype must be f32, f16 or bf16", text);
                return -1;
            }
            p->dtype_given = 1;
            continue;
        }
        char *end = NULL;
        long v = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || !end || *end || v < 1 || v > (1L << 30)) {
            snprintf(err, size, "problem \"%s\": \"%s\" is not key=positive integer", text, kv);
            return -1;
        }
        *eq = '\0';
        int *slot = !strcmp(kv, "n")     ? &p->n
                    : !strcmp(kv, "h")   ? &p->heads
                    : !strcmp(kv, "kvh") ? &p->kv_heads
                    : !strcmp(kv, "d")   ? &p->dim
                    : !strcmp(kv, "w")   ? &p->window
                    : !strcmp(kv, "blk") ? &p->block
                    : !strcmp(kv, "q")   ? &p->q_len
                                         : NULL;
        if (!slot) {
            snprintf(err, size, "problem \"%s\": unknown key \"%s\" (n, q, h, kvh, d, w, blk, dtype)",
                     text, kv);
            return -1;
        }
        *slot = (int)v;
    }
    if (!p->n || !p->dim) {
        snprintf(err, size, "problem \"%s\": n and d are required", text);
        return -1;
    }
    if (!p->kv_heads)
        p->kv_heads = p->heads;
    if (!p->q_len)
        p->q_len = p->n;
    if (p->heads % p->kv_heads || p->dim > SPARCL_MAX_HEAD_DIM || p->block > 1024) {
        snprintf(err, size, "problem \"%s\": needs h a multiple of kvh, d <= %d, blk <= 1024", text,
                 SPARCL_MAX_HEAD_DIM);
        return -1;
    }
    format_spec(p);
    fill_spans(p);
    return 0;
}

int tune_problems_parse(const char *text, tune_problem **out, char *err, size_t size)
{
    if (!strcmp(text, "standard"))
        text = standard_set;
    else if (!strcmp(text, "quick"))
        text = quick_set;
    char *copy = strdup(text);
    int cap = 1;
    for (const char *c = text; *c; ++c)
        cap += *c == ';';
    tune_problem *list = calloc((size_t)cap, sizeof *list);
    int n = 0;
    char *save = NULL;
    for (char *t = copy ? strtok_r(copy, ";", &save) : NULL; t; t = strtok_r(NULL, ";", &save)) {
        if (parse_one(t, &list[n], err, size) != 0) {
            free(copy);
            free(list);
            return -1;
        }
        ++n;
    }
    free(copy);
    if (n == 0) {
        snprintf(err, size, "no problems in \"%s\"", text);
        free(list);
        return -1;
    }
    *out = list;
    return n;
}

/* BigBird at block granularity: 3 window blocks around the diagonal, 2
 * global blocks (first block rows and columns), 3 random blocks per row from
 * a fixed seed, so every process builds the same mask. */
static uint8_t *bigbird_mask(int nb)
{
    uint8_t *m = calloc((size_t)nb * nb, 1);
    if (!m)
        return NULL;
    uint64_t s = 0x5eed;
    for (int r = 0; r < nb; ++r)
        for (int c = 0; c < nb; ++c) {
            int win = c >= r - 1 && c <= r + 1, glob = r < 2 || c < 2;
            m[(size_t)r * nb + c] = (uint8_t)(win || glob);
        }
    for (int r = 0; r < nb; ++r)
        for (int k = 0; k < 3; ++k) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            m[(size_t)r * nb + (int)((s >> 33) % (uint64_t)nb)] = 1;
        }
    return m;
}

sparcl_status tune_problem_desc(sparcl_ctx *ctx, const tune_problem *p, sparcl_plan_desc *d,
                                sparcl_layout **layout)
{
    sparcl_plan_desc_init(d);
    d->q_heads = p->heads;
    d->kv_heads = p->kv_heads;
    d->q_len = p->q_len;
    d->kv_len = p->n;
    d->head_dim = p->dim;
    d->dtype = p->dtype;
    *layout = NULL;
    sparcl_status st = SPARCL_OK;
    if (!strcmp(p->pattern, "causal")) {
        st = sparcl_layout_init_causal(ctx, layout, 1, p->q_len, p->n, p->block);
    } else if (!strcmp(p->pattern, "window")) {
        st = sparcl_layout_init_window(ctx, layout, 1, p->q_len, p->n, p->block, p->window,
                                       p->window);
    } else if (!strcmp(p->pattern, "bigbird")) {
        int nb = (p->n + p->block - 1) / p->block;
        uint8_t *m = bigbird_mask(nb);
        if (!m)
            return SPARCL_ERR_OUT_OF_MEMORY;
        st = sparcl_layout_init_block_mask(ctx, layout, 1, p->q_len, p->n, p->block, m);
        free(m);
    } else if (!strcmp(p->pattern, "varlen")) {
        if (p->q_len != p->n)
            return sparcl_ctx_fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                   "a varlen problem packs self-attention: q must equal n");
        st = varlen_batch_layout(ctx, p->n, p->block, layout);
    }
    d->layout = *layout;
    return st;
}

int tune_problem_for_kernel(const char *kernel, const tune_problem *p, sparcl_plan_desc *d,
                            char *err, size_t size)
{
    /* Every attention family the tuner runs builds its kernels with DTYPE
     * (a half plan of it looks up rows of its own dtype); CLBlast's SGEMM,
     * the dense path's, is fp32 only, and the dense path refuses half. */
    if (p->dtype != SPARCL_DTYPE_F32 && !strcmp(kernel, "clblast_xgemm")) {
        snprintf(err, size, "clblast_xgemm (CLBlast's SGEMM) has no %s storage: tune it at f32",
                 sparcl_dtype_name(p->dtype));
        return -1;
    }
    /* attn_entmax and its backward are tuned on 1.5-entmax, the middle of
     * their solvers. */
    if (!strcmp(kernel, "attn_entmax") || !strcmp(kernel, "attn_entmax_bwd"))
        d->normalization = SPARCL_NORMALIZATION_ENTMAX15;
    /* attn_lsh on LSH attention as the Reformer sets it up: 2 rounds,
     * chunks of 64, about n / 64 buckets (dense problems only: LSH takes
     * no layout, and q_len == kv_len). */
    if (!strcmp(kernel, "attn_lsh")) {
        if (strcmp(p->pattern, "dense")) {
            snprintf(err, size, "attn_lsh is tuned on dense problems only (LSH takes no layout)");
            return -1;
        }
        d->attention = SPARCL_ATTENTION_LSH;
        d->lsh_rounds = 2;
        d->lsh_chunk = 64;
        d->lsh_buckets = d->kv_len / 64 >= 2 ? d->kv_len / 64 / 2 * 2 : 2;
    }
    /* attn_span on the causal problems: the kind is causal by definition
     * and takes no layout, so the causal layout becomes the descriptor's
     * causal flag (the same mask), with the spans of fill_spans() and the
     * paper's ramp of 32.  The descriptor is then the one an adaptive-span
     * plan of these shapes looks its row up with (no layout, causal). */
    if (!strcmp(kernel, "attn_span")) {
        if (strcmp(p->pattern, "causal")) {
            snprintf(err, size,
                     "attn_span is tuned on causal problems only (the adaptive-span "
                     "kind is causal and takes no layout)");
            return -1;
        }
        if (p->heads > TUNE_SPAN_HEADS_MAX) {
            snprintf(err, size, "attn_span is tuned on problems of at most %d heads",
                     TUNE_SPAN_HEADS_MAX);
            return -1;
        }
        d->layout = NULL;
        d->causal = 1;
        d->attention = SPARCL_ATTENTION_SPAN;
        d->spans = p->spans;
        d->span_ramp = 32.0f;
    }
    return 0;
}

int tune_kernel_is_backward(const char *kernel)
{
    return !strcmp(kernel, "attn_bwd") || !strcmp(kernel, "attn_entmax_bwd");
}
