/*
 * fuzz_desc.c -- plan descriptor and kernel parameter validation with
 * arbitrary values: shapes, strides, scale, layout mismatch, normalization
 * and attention-kind fields, and parameter maps.  Must never crash; anything accepted must satisfy the documented
 * limits.
 */
#include <math.h>
#include <string.h>

#include "attention_kinds.h"
#include "fuzz_input.h"
#include "layout.h"
#include "params.h"
#include "plan.h"
#include "sparcl.h"

#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c))                                                                            \
            __builtin_trap();                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size, 0};
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.batch = fuzz_int(&in);
    d.q_heads = fuzz_int(&in);
    d.kv_heads = fuzz_int(&in);
    d.q_len = fuzz_int(&in);
    d.kv_len = fuzz_int(&in);
    d.head_dim = fuzz_int(&in);
    uint32_t bits = fuzz_u32(&in);
    memcpy(&d.scale, &bits, sizeof bits);
    d.causal = fuzz_int(&in);
    d.k_strides.seq = (int64_t)fuzz_int(&in);
    sparcl_layout *l = NULL;
    if (fuzz_range(&in, 0, 1))
        sparcl_layout_init_causal(NULL, &l, fuzz_range(&in, 1, 3), fuzz_range(&in, 1, 50),
                                  fuzz_range(&in, 1, 50), fuzz_range(&in, 1, 16));
    d.layout = l;
    if (sparcl__plan_desc_check(NULL, &d) == SPARCL_OK) {
        CHECK(d.batch >= 1 && d.q_heads >= 1 && d.kv_heads >= 1);
        CHECK(d.q_heads % d.kv_heads == 0);
        CHECK(d.head_dim >= 1 && d.head_dim <= SPARCL_MAX_HEAD_DIM);
        CHECK(d.scale >= 0.0f && !isinf(d.scale));
        CHECK(!l || (l->q_len == d.q_len && l->kv_len == d.kv_len));
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
    if (sparcl__plan_desc_check(NULL, &d) == SPARCL_OK && sparcl__kind_check(NULL, &d) == SPARCL_OK) {
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
                                 1u << 30, 1u << 30, CL_DEVICE_TYPE_CPU, 2};
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
