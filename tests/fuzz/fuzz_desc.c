/*
 * fuzz_desc.c -- plan descriptor and kernel parameter validation with
 * arbitrary values: shapes, 64-bit strides of all four tensors (including
 * spans that only fit after wrapping, negative and overlapping strides),
 * scale, layout mismatch, normalization and attention-kind fields, the
 * KV cache page size, and
 * parameter maps given as raw bytes (any count, unterminated or
 * non-identifier names).  Must never crash; anything accepted must satisfy
 * the documented limits: spans that fit in int64 bytes, an output that no
 * two elements share, and parameter maps that are safe to read.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan/attention_kinds.h"
#include "fuzz_input.h"
#include "layout/layout.h"
#include "kernels/params.h"
#include "plan/plan.h"
#include "sparcl.h"

#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c))                                                                            \
            __builtin_trap();                                                                \
    } while (0)

/* Span in exact 128-bit arithmetic, for the strides a plan resolves. */
static __int128 exact_span(sparcl_strides s, int batch, int heads, int len, int dim)
{
    return (__int128)(batch - 1) * s.batch + (__int128)(heads - 1) * s.head +
           (__int128)(len - 1) * s.seq + dim;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* For small accepted shapes: out's offsets are pairwise distinct. */
static void check_injective(sparcl_strides s, int batch, int heads, int len, int dim)
{
    const int64_t n = (int64_t)batch * heads * len * dim;
    if (n > 4096)
        return;
    int64_t *off = malloc(sizeof *off * (size_t)n), k = 0;
    CHECK(off);
    for (int b = 0; b < batch; ++b)
        for (int h = 0; h < heads; ++h)
            for (int i = 0; i < len; ++i)
                for (int x = 0; x < dim; ++x)
                    off[k++] = b * s.batch + h * s.head + i * s.seq + x;
    qsort(off, (size_t)n, sizeof *off, cmp_i64);
    for (k = 1; k < n; ++k)
        CHECK(off[k] != off[k - 1]);
    free(off);
}

/* Small shapes often, edge values sometimes. */
static int fuzz_dim(fuzz_input *in)
{
    return fuzz_range(in, 0, 3) ? fuzz_range(in, 1, 9) : fuzz_int(in);
}

static void fuzz_strides(fuzz_input *in, sparcl_plan_desc *d)
{
    sparcl_strides *all[4] = {&d->q_strides, &d->k_strides, &d->v_strides, &d->o_strides};
    for (int t = 0; t < 4; ++t) {
        if (fuzz_range(in, 0, 2) == 0)
            continue; /* contiguous */
        all[t]->batch = fuzz_i64(in);
        all[t]->head = fuzz_i64(in);
        all[t]->seq = fuzz_i64(in);
    }
}

static void check_accepted(const sparcl_plan_desc *d)
{
    CHECK(d->batch >= 1 && d->q_heads >= 1 && d->kv_heads >= 1);
    CHECK(d->q_heads % d->kv_heads == 0);
    CHECK(d->head_dim >= 1 && d->head_dim <= SPARCL_MAX_HEAD_DIM);
    CHECK(d->scale >= 0.0f && !isinf(d->scale));
    CHECK(!d->layout || (d->layout->q_len == d->q_len && d->layout->kv_len == d->kv_len));
    const sparcl_strides *all[4] = {&d->q_strides, &d->k_strides, &d->v_strides, &d->o_strides};
    for (int t = 0; t < 4; ++t) {
        const int heads = t == 0 || t == 3 ? d->q_heads : d->kv_heads;
        const int len = t == 0 || t == 3 ? d->q_len : d->kv_len;
        CHECK(all[t]->batch >= 0 && all[t]->head >= 0 && all[t]->seq >= 0);
        sparcl_strides s = sparcl__plan_resolve(*all[t], d, heads, len);
        __int128 span = exact_span(s, d->batch, heads, len, d->head_dim);
        CHECK(span * 4 <= (__int128)INT64_MAX);
        CHECK(sparcl__plan_span(s, d->batch, heads, len, d->head_dim) == (int64_t)span);
        if (t == 3)
            check_injective(s, d->batch, heads, len, d->head_dim);
    }
    if (d->params) {
        CHECK(d->params->count >= 0 && d->params->count <= SPARCL_PARAMS_MAX);
        for (int i = 0; i < d->params->count; ++i)
            CHECK(memchr(d->params->item[i].name, '\0', SPARCL_PARAM_NAME_MAX) != NULL);
    }
}

/* A map as raw bytes, or built through the API from names that may be
 * anything. */
static void fuzz_map(fuzz_input *in, sparcl_params *p)
{
    sparcl_params_clear(p);
    if (fuzz_range(in, 0, 1)) {
        fuzz_bytes(in, p, sizeof *p);
        if (fuzz_range(in, 0, 1))
            p->count = fuzz_range(in, -2, SPARCL_PARAMS_MAX + 2);
        return;
    }
    static const char *names[] = {"BLOCK_M", "BLOCK_N", "WG_SIZE", "VEC", "KT", "ALGO",
                                  "A B",     "1X",      "X-Y",     "",    "_ok"};
    int n = fuzz_range(in, 0, 20);
    for (int k = 0; k < n; ++k) {
        char name[SPARCL_PARAM_NAME_MAX + 8];
        fuzz_text(in, name, sizeof name, names[fuzz_range(in, 0, 10)]);
        char *exact = malloc(sizeof name); /* over-reads past it show in ASan */
        CHECK(exact);
        memcpy(exact, name, sizeof name);
        sparcl_status st = sparcl_params_set(p, exact, fuzz_int(in));
        if (st == SPARCL_OK) /* what was stored is a bounded identifier */
            CHECK(strnlen(exact, sizeof name) < SPARCL_PARAM_NAME_MAX);
        free(exact);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size, 0};
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = fuzz_dim(&in);
    d.q_heads = fuzz_dim(&in);
    d.kv_heads = fuzz_range(&in, 0, 1) ? d.q_heads : fuzz_dim(&in);
    d.q_len = fuzz_dim(&in);
    d.kv_len = fuzz_dim(&in);
    d.head_dim = fuzz_dim(&in);
    uint32_t bits = fuzz_u32(&in);
    memcpy(&d.scale, &bits, sizeof bits);
    d.causal = fuzz_int(&in);
    fuzz_strides(&in, &d);
    sparcl_params map;
    if (fuzz_range(&in, 0, 1)) {
        fuzz_map(&in, &map);
        d.params = &map;
        d.unchecked_params = fuzz_range(&in, 0, 1);
    }
    sparcl_layout *l = NULL;
    if (fuzz_range(&in, 0, 1))
        sparcl_layout_init_causal(NULL, &l, fuzz_range(&in, 1, 3), fuzz_range(&in, 1, 50),
                                  fuzz_range(&in, 1, 50), fuzz_range(&in, 1, 16));
    d.layout = l;
    if (sparcl__plan_desc_check(NULL, &d) == SPARCL_OK)
        check_accepted(&d);
    if (d.params) { /* every reader of a map copes with any bytes */
        char text[512];
        sparcl_params_format(d.params, text, sizeof text);
        CHECK(memchr(text, '\0', sizeof text) != NULL);
        int32_t v;
        sparcl_params_get(d.params, "BLOCK_M", &v);
        if (sparcl__params_valid(NULL, d.params, "params") == SPARCL_OK)
            CHECK(d.params->count >= 0 && d.params->count <= SPARCL_PARAMS_MAX);
        else
            CHECK(text[0] == '\0');
    }
    /* The normalization and attention-kind fields, checked after shapes. */
    d.normalization = fuzz_range(&in, -1, 4);
    uint32_t abits = fuzz_u32(&in);
    memcpy(&d.alpha, &abits, sizeof abits);
    if (fuzz_range(&in, 0, 1))
        d.alpha = 1.0f + (float)fuzz_range(&in, -2, 12) / 10.0f;
    d.attention = fuzz_range(&in, -1, 3);
    d.features = fuzz_int(&in);
    d.proj_len = fuzz_int(&in);
    d.page_size = fuzz_range(&in, 0, 3) ? 0 : fuzz_int(&in); /* a paged KV cache */
    if (sparcl__plan_desc_check(NULL, &d) == SPARCL_OK && sparcl__kind_check(NULL, &d) == SPARCL_OK) {
        CHECK(d.page_size >= 0);
        CHECK(d.page_size == 0 || (d.q_len <= SPARCL__DECODE_MAX_Q &&
                                   d.attention == SPARCL_ATTENTION_EXACT &&
                                   d.normalization == SPARCL_NORMALIZATION_SOFTMAX));
        float alpha = 0;
        int norm = sparcl__entmax_norm(&d, &alpha);
        CHECK(norm >= 0 && norm <= 3);
        CHECK(!norm || (alpha > 1.0f && alpha <= 2.0f));
        CHECK(d.attention != SPARCL_ATTENTION_FAVOR ||
              (d.features >= 1 && d.features <= SPARCL_MAX_FEATURES));
        CHECK(d.attention != SPARCL_ATTENTION_LINFORMER ||
              (d.proj_len >= 1 && d.proj_len <= d.kv_len && !d.causal));
    }
    sparcl_layout_free(l);

    /* Parameter maps: names from the schema or garbage, any values. */
    sparcl_params p;
    sparcl_params_clear(&p);
    const sparcl__kernel_schema *s = &sparcl__schema_attn_fwd;
    int n = fuzz_range(&in, 0, 8);
    for (int k = 0; k < n; ++k) {
        int which = fuzz_range(&in, 0, s->n_params);
        const char *name = which < s->n_params ? sparcl__param_names[s->params[which].id] : "BOGUS";
        sparcl_params_set(&p, name, fuzz_int(&in));
    }
    sparcl__problem prob = {.head_dim = fuzz_range(&in, 1, SPARCL_MAX_HEAD_DIM), .batch = 1,
                            .kv_heads = 1, .kv_len = 1024};
    sparcl__device_limits lim = {(size_t)fuzz_range(&in, 1, 4096), (cl_ulong)fuzz_range(&in, 0, 1 << 20),
                                 1u << 30, 1u << 30, CL_DEVICE_TYPE_CPU, 2, CL_TRUE, 128};
    if (fuzz_range(&in, 0, 1))
        sparcl__params_fill_defaults(s, &p, &prob, &lim);
    if (sparcl__params_check(NULL, s, &p, &prob, &lim) == SPARCL_OK) {
        int32_t bm, wg, vec;
        CHECK(sparcl_params_get(&p, "BLOCK_M", &bm) && sparcl_params_get(&p, "WG_SIZE", &wg));
        CHECK(sparcl_params_get(&p, "VEC", &vec));
        CHECK(bm % wg == 0 && (size_t)wg <= lim.max_wg_size && vec <= prob.head_dim);
        sparcl__pset ps;
        CHECK(sparcl__pset_from_params(NULL, s, &p, &ps) == SPARCL_OK);
        CHECK(sparcl__attn_fwd_local_bytes(&ps, &prob) <= lim.local_mem);
        char opts[1024];
        sparcl__params_build_options(s, &ps, &prob, opts, sizeof opts);
        CHECK(strstr(opts, "-DHEAD_DIM=") != NULL);
    }
    return 0;
}
