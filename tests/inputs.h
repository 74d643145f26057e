/*
 * inputs.h -- the host side of a test problem: a descriptor of given
 * shapes and tensors of seeded uniform values, as the suites that check a
 * kind's forward and backward on their own problems (adaptive span,
 * FAVOR+ and Linformer) build them.
 */
#ifndef SPARCL_TEST_INPUTS_H
#define SPARCL_TEST_INPUTS_H

#include <stddef.h>
#include <stdint.h>

#include "sparcl.h"

/* sparcl_plan_desc_init(d) with the shapes set; everything else default. */
void inputs_desc(sparcl_plan_desc *d, int batch, int q_heads, int kv_heads, int q_len, int kv_len,
                 int head_dim);

/* n floats uniform in [-1, 1] (oracle_fill() from `seed`), malloc'd; NULL
 * when out of memory. */
float *inputs_filled(size_t n, uint64_t seed);

#endif
