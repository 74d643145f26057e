/*
 * sparcl_layout.c -- the sparcl-layout tool: builds any layout pattern from
 * command-line flags, prints its statistics and build time, and optionally
 * draws it as an SVG picture (one panel per head).
 *
 * It exists so that users can see a pattern before running attention on
 * it, and so that the scale claims (a million tokens in well under a
 * second) can be checked from a shell.  It uses the public header only.
 * Pictures use token resolution when both lengths fit the panel, else
 * cells of whole blocks shaded by their density, so the file stays small
 * at any length.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "select_inputs.h"
#include "sparcl.h"

#define MAX_LIST 4096

typedef struct opts {
    const char *pattern, *svg;
    int heads, q_len, kv_len, block, causal;
    int left, right, first, last, stride, summary, patterns, horizontal;
    int window, random, shared_random, sink, local;
    int topk, pin; /* selected: top-k (else --tau), pinned streaming layout */
    double tau;
    long long seed;
    int dil[MAX_LIST], n_dil, glob[MAX_LIST], n_glob;
    int cols[MAX_LIST], n_cols, offs[MAX_LIST], n_offs;
} opts;

static const char *patterns =
    "dense causal window dilated global global-blocks strided fixed bigbird longformer "
    "streaming vslash selected";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sparcl-layout PATTERN [options]\n"
            "patterns: %s\n"
            "shape:    --len N | --q-len N --kv-len N   (default 4096)\n"
            "          --heads H (1)  --block B (64)  --causal\n"
            "window, dilated, longformer: --left L (256) --right R (0) --dilation d[,d...]\n"
            "global, longformer:          --global p[,p...]\n"
            "global-blocks, bigbird:      --first G (1) --last G (1)\n"
            "strided, fixed:              --stride L (128)  fixed: --summary C (16)\n"
            "                             --patterns P (1) --horizontal\n"
            "bigbird:                     --window W (1) --random R (3) --seed S (0)\n"
            "                             --shared-random (same random blocks on all heads)\n"
            "streaming:                   --sink S (4) --local L (256)\n"
            "vslash:                      --columns c[,c...] --offsets o[,o...]\n"
            "selected:                    --topk K | --tau T  [--pin: streaming --sink/--local]\n"
            "                             (dynamic block selection on the device, over the\n"
            "                             structured inputs of sparcl-select-quality)\n"
            "output:                      --svg FILE (a picture, one panel per head)\n",
            patterns);
}

static int bad(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "sparcl-layout: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

static int parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < -2147483647L - 1 || v > 2147483647L)
        return 0;
    *out = (int)v;
    return 1;
}

static int parse_list(const char *s, int *out, int *n)
{
    char buf[64];
    *n = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof buf || *n >= MAX_LIST)
            return 0;
        memcpy(buf, s, len);
        buf[len] = 0;
        if (!parse_int(buf, &out[(*n)++]))
            return 0;
        s += len + (s[len] == ',');
    }
    return *n > 0;
}

/* Parses argv into o; returns 0 or the exit status for a usage error. */
static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->heads = 1, o->q_len = o->kv_len = 4096, o->block = 64;
    o->left = 256, o->first = o->last = 1, o->stride = 128, o->summary = 16, o->patterns = 1;
    o->window = 1, o->random = 3, o->sink = 4, o->local = 256;
    if (argc < 2)
        return bad("missing PATTERN%s%s", "", "");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        exit(0);
    }
    o->pattern = argv[1];
    struct {
        const char *name;
        int *v;
    } ints[] = {{"--heads", &o->heads},     {"--block", &o->block},     {"--left", &o->left},
                {"--right", &o->right},     {"--first", &o->first},     {"--last", &o->last},
                {"--stride", &o->stride},   {"--summary", &o->summary}, {"--patterns", &o->patterns},
                {"--window", &o->window},   {"--random", &o->random},   {"--sink", &o->sink},
                {"--local", &o->local},     {"--q-len", &o->q_len},     {"--kv-len", &o->kv_len},
                {"--topk", &o->topk}};
    struct {
        const char *name;
        int *v, *n;
    } lists[] = {{"--dilation", o->dil, &o->n_dil},
                 {"--global", o->glob, &o->n_glob},
                 {"--columns", o->cols, &o->n_cols},
                 {"--offsets", o->offs, &o->n_offs}};
    for (int a = 2; a < argc; ++a) {
        const char *f = argv[a];
        if (!strcmp(f, "--causal")) {
            o->causal = 1;
            continue;
        }
        if (!strcmp(f, "--horizontal")) {
            o->horizontal = 1;
            continue;
        }
        if (!strcmp(f, "--shared-random")) {
            o->shared_random = 1;
            continue;
        }
        if (!strcmp(f, "--pin")) {
            o->pin = 1;
            continue;
        }
        if (a + 1 >= argc)
            return bad("%s needs a value%s", f, "");
        const char *v = argv[++a];
        int done = 0;
        if (!strcmp(f, "--svg"))
            o->svg = v, done = 1;
        if (!strcmp(f, "--tau")) {
            char *end;
            o->tau = strtod(v, &end);
            if (*end || end == v)
                return bad("%s: '%s' is not a number", f, v);
            done = 1;
        }
        if (!strcmp(f, "--len")) {
            if (!parse_int(v, &o->q_len))
                return bad("%s: '%s' is not an integer", f, v);
            o->kv_len = o->q_len, done = 1;
        }
        if (!strcmp(f, "--seed")) {
            char *end;
            o->seed = strtoll(v, &end, 10);
            if (*end || end == v)
                return bad("%s: '%s' is not an integer", f, v);
            done = 1;
        }
        for (size_t k = 0; !done && k < sizeof ints / sizeof ints[0]; ++k)
            if (!strcmp(f, ints[k].name)) {
                if (!parse_int(v, ints[k].v))
                    return bad("%s: '%s' is not an integer", f, v);
                done = 1;
            }
        for (size_t k = 0; !done && k < sizeof lists / sizeof lists[0]; ++k)
            if (!strcmp(f, lists[k].name)) {
                if (!parse_list(v, lists[k].v, lists[k].n))
                    return bad("%s: '%s' is not a comma-separated list of integers", f, v);
                done = 1;
            }
        if (!done)
            return bad("unknown option '%s'%s", f, "");
    }
    if (o->n_dil == 1 && o->heads > 1) /* one value: every head */
        for (int h = 1; h < o->heads && h < MAX_LIST; ++h)
            o->dil[h] = o->dil[0];
    else if (o->n_dil > 0 && o->n_dil != o->heads)
        return bad("--dilation needs 1 or --heads values%s%s", "", "");
    return 0;
}

/* The blocks dynamic block selection chooses on the device for the
 * structured inputs of select_inputs.h (batch entry 0), read back as a
 * layout. */
static sparcl_status build_selected(const opts *o, sparcl_layout **l)
{
    const int H = o->heads, N = o->q_len, D = 64;
    if (o->kv_len != N) {
        fprintf(stderr, "sparcl-layout: selected needs q_len == kv_len (--len N)\n");
        return SPARCL_ERR_INVALID_ARGUMENT;
    }
    const size_t n = (size_t)H * N * D;
    float *x = malloc(sizeof *x * 3 * n);
    sparcl_ctx *ctx = NULL;
    sparcl_layout *pin = NULL;
    sparcl_plan *plan = NULL;
    cl_mem m[4] = {NULL, NULL, NULL, NULL};
    sparcl_status st = x ? sparcl_ctx_init(&ctx) : SPARCL_ERR_OUT_OF_MEMORY;
    if (st == SPARCL_OK && o->pin)
        st = sparcl_layout_init_streaming(ctx, &pin, 1, N, N, o->block, o->sink, o->local);
    if (st == SPARCL_OK) {
        select_inputs(H, N, D, o->block, 4, (uint64_t)o->seed, x, x + n, x + 2 * n);
        sparcl_plan_desc d;
        sparcl_plan_desc_init(&d);
        d.q_heads = d.kv_heads = H;
        d.q_len = d.kv_len = N;
        d.head_dim = D;
        d.causal = o->causal;
        d.layout = pin;
        d.select = o->topk ? SPARCL_SELECT_TOPK : SPARCL_SELECT_MASS;
        d.select_k = o->topk;
        d.select_tau = (float)o->tau;
        d.select_block = o->block;
        st = sparcl_plan_init(ctx, &plan, &d);
    }
    for (int i = 0; i < 4 && st == SPARCL_OK; ++i) { /* q, k, v, out */
        m[i] = clCreateBuffer(sparcl_ctx_cl_context(ctx),
                              CL_MEM_READ_WRITE | (i < 3 ? CL_MEM_COPY_HOST_PTR : 0),
                              sizeof *x * n, i < 3 ? x + i * n : NULL, NULL);
        st = m[i] ? SPARCL_OK : SPARCL_ERR_OUT_OF_MEMORY;
    }
    if (st == SPARCL_OK &&
        (st = sparcl_plan_forward(plan, m[0], m[1], m[2], m[3], NULL, 0, NULL, NULL)) == SPARCL_OK)
        st = sparcl_plan_read_selection(plan, 0, l);
    if (st != SPARCL_OK)
        fprintf(stderr, "sparcl-layout: %s\n", sparcl_ctx_errmsg(ctx));
    for (int i = 0; i < 4; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
    sparcl_plan_free(plan);
    sparcl_layout_free(pin);
    sparcl_ctx_free(ctx);
    free(x);
    return st;
}

static sparcl_status build(const opts *o, sparcl_layout **l)
{
    const char *p = o->pattern;
    int H = o->heads, lq = o->q_len, lk = o->kv_len, B = o->block;
    const int *dil = o->n_dil ? o->dil : NULL;
    if (!strcmp(p, "dense"))
        return sparcl_layout_init_dense(NULL, l, H, lq, lk, B);
    if (!strcmp(p, "causal"))
        return sparcl_layout_init_causal(NULL, l, H, lq, lk, B);
    if (!strcmp(p, "window"))
        return sparcl_layout_init_window(NULL, l, H, lq, lk, B, o->left, o->right);
    if (!strcmp(p, "dilated"))
        return sparcl_layout_init_dilated_window(NULL, l, H, lq, lk, B, o->left, o->right, dil);
    if (!strcmp(p, "global"))
        return sparcl_layout_init_global(NULL, l, H, lq, lk, B, o->glob, o->n_glob, o->causal);
    if (!strcmp(p, "global-blocks"))
        return sparcl_layout_init_global_blocks(NULL, l, H, lq, lk, B, o->first, o->last,
                                                o->causal);
    if (!strcmp(p, "strided"))
        return sparcl_layout_init_strided(NULL, l, H, lq, lk, B, o->stride, o->causal);
    if (!strcmp(p, "fixed")) {
        sparcl_fixed_desc d;
        sparcl_fixed_desc_init(&d);
        d.stride = o->stride, d.summary = o->summary, d.patterns = o->patterns;
        d.horizontal = o->horizontal, d.causal = o->causal;
        return sparcl_layout_init_fixed(NULL, l, H, lq, lk, B, &d);
    }
    if (!strcmp(p, "bigbird")) {
        sparcl_bigbird_desc d;
        sparcl_bigbird_desc_init(&d);
        d.window = o->window, d.global_first = o->first, d.global_last = o->last;
        d.random = o->random, d.seed = (uint64_t)o->seed, d.per_head = !o->shared_random;
        d.causal = o->causal;
        return sparcl_layout_init_bigbird(NULL, l, H, lq, lk, B, &d);
    }
    if (!strcmp(p, "longformer")) {
        sparcl_longformer_desc d;
        sparcl_longformer_desc_init(&d);
        d.left = o->left, d.right = o->right, d.dilation = dil;
        d.global = o->glob, d.n_global = o->n_glob, d.causal = o->causal;
        return sparcl_layout_init_longformer(NULL, l, H, lq, lk, B, &d);
    }
    if (!strcmp(p, "streaming"))
        return sparcl_layout_init_streaming(NULL, l, H, lq, lk, B, o->sink, o->local);
    if (!strcmp(p, "vslash")) {
        sparcl_vertical_slash_desc d;
        sparcl_vertical_slash_desc_init(&d);
        d.columns = o->cols, d.n_columns = o->n_cols;
        d.offsets = o->offs, d.n_offsets = o->n_offs; /* causal, as in MInference */
        return sparcl_layout_init_vertical_slash(NULL, l, H, lq, lk, B, &d);
    }
    if (!strcmp(p, "selected"))
        return build_selected(o, l);
    return SPARCL_ERR_NOT_SUPPORTED; /* caught as a usage error before */
}

/* ---- SVG --------------------------------------------------------------- */

#define PANEL 256 /* pixels per panel side at most */
#define GAP 24

/* Density grid of head h at `k` blocks per cell: rows x cols doubles. */
static void density_grid(const sparcl_layout_bsr *v, int q_len, int kv_len, int h, int k,
                         int rows, int cols, double *grid)
{
    int B = v->block;
    memset(grid, 0, sizeof *grid * (size_t)rows * cols);
    for (int r = 0; r < v->block_rows; ++r) {
        const int64_t *rp = v->row_ptr + (int64_t)h * (v->block_rows + 1) + r;
        int bh = (r + 1) * B <= q_len ? B : q_len - r * B;
        for (int64_t e = rp[0]; e < rp[1]; ++e) {
            int c = v->col[e], bw = (c + 1) * B <= kv_len ? B : kv_len - c * B;
            double n = (double)bh * bw;
            if (v->mask[e] >= 0) {
                n = 0;
                for (int w = 0; w < v->words_per_mask; ++w)
                    n += __builtin_popcountll(v->bits[v->mask[e] * v->words_per_mask + w]);
            }
            grid[(size_t)(r / k) * cols + c / k] += n;
        }
    }
    for (int y = 0; y < rows; ++y)
        for (int x = 0; x < cols; ++x) {
            double h0 = (double)y * k * B, w0 = (double)x * k * B;
            double hh = (h0 + (double)k * B < q_len ? (double)k * B : q_len - h0);
            double ww = (w0 + (double)k * B < kv_len ? (double)k * B : kv_len - w0);
            grid[(size_t)y * cols + x] /= hh * ww;
        }
}

#define SHADES 8

/* 0 for nothing attended, else 1..SHADES by density. */
static int shade(double d)
{
    return d <= 0 ? 0 : 1 + (int)(d * (SHADES - 0.001));
}

/* One panel: runs of equal shade per row as rectangles. */
static void svg_panel(FILE *f, const sparcl_layout *l, int h, int cells, int x0, int y0, int *pw,
                      int *ph)
{
    sparcl_layout_bsr v;
    sparcl_layout_get_bsr(l, &v);
    int q = sparcl_layout_q_len(l), kv = sparcl_layout_kv_len(l);
    int token = q <= cells && kv <= cells;
    int k = 1, rows, cols;
    if (token) {
        rows = q, cols = kv;
    } else {
        int big = v.block_rows > v.block_cols ? v.block_rows : v.block_cols;
        k = (big + cells - 1) / cells;
        rows = (v.block_rows + k - 1) / k, cols = (v.block_cols + k - 1) / k;
    }
    int big = rows > cols ? rows : cols, px = PANEL / big > 0 ? PANEL / big : 1;
    double *grid = malloc(sizeof *grid * (size_t)rows * cols);
    if (!grid)
        return;
    if (token)
        for (int i = 0; i < q; ++i)
            for (int j = 0; j < kv; ++j)
                grid[(size_t)i * cols + j] = sparcl_layout_attends(l, h, i, j);
    else
        density_grid(&v, q, kv, h, k, rows, cols, grid);
    *pw = cols * px, *ph = rows * px;
    fprintf(f, "<g transform=\"translate(%d,%d)\">\n", x0, y0);
    fprintf(f, "<text x=\"0\" y=\"-6\" font-size=\"12\" font-family=\"sans-serif\">head %d%s</text>\n",
            h, token ? "" : " (block cells)");
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\" stroke=\"#888\"/>\n", *pw, *ph);
    /* One path per shade; each run of equal shade in a row is a rectangle
     * "M x y h w v px h -w z", about 18 bytes. */
    for (int level = 1; level <= SHADES; ++level) {
        fprintf(f, "<path fill=\"#1f4e9c\" fill-opacity=\"%.3f\" d=\"",
                0.2 + 0.8 * level / (double)SHADES);
        for (int y = 0; y < rows; ++y)
            for (int x = 0; x < cols;) {
                int run = 1, lv = shade(grid[(size_t)y * cols + x]);
                while (x + run < cols && shade(grid[(size_t)y * cols + x + run]) == lv)
                    ++run;
                if (lv == level)
                    fprintf(f, "M%d %dh%dv%dh-%dz", x * px, y * px, run * px, px, run * px);
                x += run;
            }
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "</g>\n");
    free(grid);
}

static int write_svg(const char *path, const sparcl_layout *l, const opts *o)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "sparcl-layout: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    int heads = sparcl_layout_heads(l), shown = heads < 16 ? heads : 16;
    int per_row = shown < 4 ? shown : 4, nrows = (shown + per_row - 1) / per_row;
    int w = per_row * (PANEL + GAP) + GAP, hgt = nrows * (PANEL + 2 * GAP) + 2 * GAP;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\">\n", w, hgt);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n");
    fprintf(f,
            "<text x=\"%d\" y=\"16\" font-size=\"13\" font-family=\"sans-serif\">%s, q_len %d, "
            "kv_len %d, block %d%s</text>\n",
            GAP, o->pattern, o->q_len, o->kv_len, o->block,
            shown < heads ? " (first 16 heads)" : "");
    /* About 2^15 cells in all keeps the file small (a run costs ~18 bytes)
     * whatever the length. */
    int cells = (int)sqrt(32768.0 / shown);
    cells = cells > PANEL ? PANEL : cells;
    for (int h = 0; h < shown; ++h) {
        int pw, ph;
        svg_panel(f, l, h, cells, GAP + (h % per_row) * (PANEL + GAP),
                  2 * GAP + 8 + (h / per_row) * (PANEL + 2 * GAP), &pw, &ph);
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    size_t n = strlen(o.pattern);
    const char *at = strstr(patterns, o.pattern);
    if (!n || !at || (at != patterns && at[-1] != ' ') || (at[n] && at[n] != ' '))
        return bad("unknown pattern '%s'%s", o.pattern, "");
    sparcl_layout *l = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sparcl_status st = build(&o, &l);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st != SPARCL_OK) {
        fprintf(stderr, "sparcl-layout: %s: %s\n", sparcl_status_string(st),
                sparcl_ctx_errmsg(NULL));
        return st == SPARCL_ERR_INVALID_ARGUMENT ? 2 : 1;
    }
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    sparcl_layout_stats s;
    sparcl_layout_get_stats(l, &s);
    printf("pattern          %s\n", o.pattern);
    printf("shape            %d heads x q_len %d x kv_len %d, block %d (%d x %d blocks)\n",
           s.heads, s.q_len, s.kv_len, s.block, s.block_rows, s.block_cols);
    printf("build time       %.1f ms\n", ms);
    printf("attended pairs   %lld\n", (long long)s.pairs);
    printf("density          %.6f\n", s.density);
    printf("stored blocks    %lld (%lld full, %lld partial)\n", (long long)s.nnz_blocks,
           (long long)s.full_blocks, (long long)s.partial_blocks);
    printf("blocks per row   min %lld, mean %.2f, max %lld\n", (long long)s.row_blocks_min,
           s.row_blocks_mean, (long long)s.row_blocks_max);
    printf("layout memory    %.3f MiB\n", s.bytes / 1048576.0);
    if (o.svg) {
        rc = write_svg(o.svg, l, &o);
        if (!rc)
            printf("picture          %s\n", o.svg);
    }
    sparcl_layout_free(l);
    return rc;
}
