/*
 * kernel_registry.c -- the table of kernel families (see kernel_registry.h)
 * and the public calls that enumerate them.
 */
#include <string.h>

#include "kernel_registry.h"

static const sparcl__kernel_schema *const schemas[] = {
    &sparcl__schema_attn_fwd,
    &sparcl__schema_attn_bwd,
    &sparcl__schema_attn_entmax,
};

#define N_SCHEMAS ((int)(sizeof schemas / sizeof schemas[0]))

const sparcl__kernel_schema *sparcl__kernel_schema_find(const char *name)
{
    for (int i = 0; name && i < N_SCHEMAS; ++i)
        if (strcmp(schemas[i]->name, name) == 0)
            return schemas[i];
    return NULL;
}

sparcl__problem sparcl__problem_from_desc(const sparcl_plan_desc *desc)
{
    sparcl__problem prob;
    memset(&prob, 0, sizeof prob);
    prob.head_dim = desc->head_dim;
    prob.batch = desc->batch;
    prob.kv_heads = desc->kv_heads;
    prob.kv_len = desc->kv_len;
    return prob;
}

SPARCL_API int sparcl_kernel_count(void) { return N_SCHEMAS; }

SPARCL_API const char *sparcl_kernel_name(int index)
{
    return index >= 0 && index < N_SCHEMAS ? schemas[index]->name : NULL;
}
