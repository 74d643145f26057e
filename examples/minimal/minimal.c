/*
 * minimal.c -- the smallest useful sparcl program: causal sliding-window
 * attention on host arrays, checked against the CPU reference.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <sparcl.h>

int main(void)
{
    enum { H = 2, N = 300, D = 64 };
    sparcl_ctx *ctx;
    if (sparcl_ctx_init(&ctx) != SPARCL_OK) {
        fprintf(stderr, "minimal: %s\n", sparcl_ctx_errmsg(NULL));
        return 1;
    }
    sparcl_layout *window;
    if (sparcl_layout_init_window(ctx, &window, 1, N, N, 64, 32, 0) != SPARCL_OK) {
        fprintf(stderr, "minimal: %s\n", sparcl_ctx_errmsg(ctx));
        return 1;
    }
    sparcl_plan_desc desc;
    sparcl_plan_desc_init(&desc);
    desc.q_heads = desc.kv_heads = H;
    desc.q_len = desc.kv_len = N;
    desc.head_dim = D;
    desc.layout = window;
    sparcl_plan *plan;
    if (sparcl_plan_init(ctx, &plan, &desc) != SPARCL_OK) {
        fprintf(stderr, "minimal: %s\n", sparcl_ctx_errmsg(ctx));
        return 1;
    }
    size_t n = (size_t)H * N * D;
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4);
    double *ref = malloc(n * 8);
    for (size_t i = 0; i < n; ++i) {
        q[i] = sinf((float)i);
        k[i] = cosf((float)i * 0.7f);
        v[i] = sinf((float)i * 1.3f);
    }
    if (sparcl_plan_forward_host(plan, q, k, v, o, NULL) != SPARCL_OK) {
        fprintf(stderr, "minimal: %s\n", sparcl_ctx_errmsg(ctx));
        return 1;
    }
    sparcl_reference_forward(ctx, &desc, q, k, v, ref, NULL);
    double err = 0;
    for (size_t i = 0; i < n; ++i)
        err = fmax(err, fabs(o[i] - ref[i]));
    printf("minimal: window attention on %s, max error %.2e\n", sparcl_ctx_device_string(ctx),
           err);
    free(q), free(k), free(v), free(o), free(ref);
    sparcl_plan_free(plan);
    sparcl_layout_free(window);
    sparcl_ctx_free(ctx);
    return err <= 1e-4 ? 0 : 1;
}
