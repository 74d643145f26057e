/*
 * inputs.c -- see inputs.h.
 */
#include "inputs.h"

#include <stdlib.h>

#include "oracle.h"

void inputs_desc(sparcl_plan_desc *d, int batch, int q_heads, int kv_heads, int q_len, int kv_len,
                 int head_dim)
{
    sparcl_plan_desc_init(d);
    d->batch = batch;
    d->q_heads = q_heads;
    d->kv_heads = kv_heads;
    d->q_len = q_len;
    d->kv_len = kv_len;
    d->head_dim = head_dim;
}

float *inputs_filled(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    if (x)
        oracle_fill(x, n, seed);
    return x;
}
