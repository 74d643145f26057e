/*
 * kernel_registry.c -- the table of kernel families (see kernel_registry.h),
 * their validation, and the public calls that enumerate the tunable ones.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "kernels/params.h"
#include "runtime/error.h"
#include "kernels/kernel_registry.h"

/* Tunable: listed by sparcl_kernel_name(), keyed in the tuning database. */
static const sparcl__kernel_schema *const schemas[] = {
    &sparcl__schema_attn_fwd,
    &sparcl__schema_attn_bwd,
    &sparcl__schema_attn_entmax,
    &sparcl__schema_attn_entmax_bwd,
    &sparcl__schema_attn_decode,
    &sparcl__schema_clblast,
    &sparcl__schema_attn_span,
    &sparcl__schema_attn_lsh,
};

/* Every family the runtime builds. */
static const sparcl__kernel_schema *const families[] = {
    &sparcl__schema_attn_fwd,
    &sparcl__schema_attn_bwd,
    &sparcl__schema_attn_entmax,
    &sparcl__schema_favor,
    &sparcl__schema_attn_entmax_bwd,
    &sparcl__schema_attn_decode,
    &sparcl__schema_attn_merge,
    &sparcl__schema_clblast,
    &sparcl__schema_block_select,
    &sparcl__schema_attn_span,
    &sparcl__schema_attn_lsh,
    &sparcl__schema_attn_lsh_sort,
    &sparcl__schema_dtype_convert,
};

#define N_SCHEMAS ((int)(sizeof schemas / sizeof schemas[0]))
#define N_FAMILIES ((int)(sizeof families / sizeof families[0]))

const sparcl__kernel_schema *sparcl__kernel_schema_find(const char *name)
{
    for (int i = 0; name && i < N_SCHEMAS; ++i)
        if (strcmp(schemas[i]->name, name) == 0)
            return schemas[i];
    return NULL;
}

static int check_programs(const sparcl__kernel_schema *f, char *why, size_t size)
{
    if (f->n_programs < 1 && !f->external)
        return snprintf(why, size, "family %s has no program", f->name), 0;
    if (f->n_programs > 0 && f->external)
        return snprintf(why, size, "family %s is external but has programs", f->name), 0;
    for (int i = 0; i < f->n_programs; ++i) {
        const sparcl__program_decl *pr = &f->programs[i];
        if (!pr->file || pr->n_kernels < 1)
            return snprintf(why, size, "family %s: program %d has no file or no kernel", f->name,
                            i),
                   0;
        for (int k = 0; k < pr->n_kernels; ++k)
            if (pr->kernels[k].wg_local && !sparcl__schema_param(f, SPARCL__P_WG_SIZE))
                return snprintf(why, size, "family %s: kernel %s needs WG_SIZE", f->name,
                                pr->kernels[k].name),
                       0;
    }
    return 1;
}

static int check_params(const sparcl__kernel_schema *f, char *why, size_t size)
{
    if (f->n_params > SPARCL_PARAMS_MAX)
        return snprintf(why, size, "family %s has %d parameters (max %d)", f->name, f->n_params,
                        SPARCL_PARAMS_MAX),
               0;
    if (f->n_params > 0 && (!f->check || !f->defaults))
        return snprintf(why, size, "family %s lacks its check or defaults", f->name), 0;
    unsigned seen = 0;
    for (int k = 0; k < f->n_params; ++k) {
        const sparcl__param_def *d = &f->params[k];
        if ((unsigned)d->id >= SPARCL__P_FIRST_DERIVED || (seen >> d->id) & 1u)
            return snprintf(why, size, "family %s: parameter %d is derived or repeated", f->name,
                            k),
                   0;
        seen |= 1u << d->id;
        if (d->n_choices < 1 || d->n_choices > SPARCL_PARAM_CHOICES_MAX)
            return snprintf(why, size, "family %s: %s has %d choices", f->name,
                            sparcl__param_names[d->id], d->n_choices),
                   0;
        for (int c = 1; c < d->n_choices; ++c)
            if (d->choices[c] <= d->choices[c - 1])
                return snprintf(why, size, "family %s: choices of %s are not ascending", f->name,
                                sparcl__param_names[d->id]),
                       0;
    }
    for (int k = 0; k < f->n_derived; ++k) {
        const sparcl__param_id id = f->derived[k];
        if (id < SPARCL__P_FIRST_DERIVED || id >= SPARCL__P_COUNT || (seen >> id) & 1u)
            return snprintf(why, size, "family %s: derived value %d is tuned or repeated", f->name,
                            k),
                   0;
        seen |= 1u << id;
    }
    return 1;
}

/* The defaults must set every tuned parameter to a value that passes the
 * family's own constraints, for a plain problem on an unknown device. */
static int check_defaults(const sparcl__kernel_schema *f, char *why, size_t size)
{
    if (f->n_params == 0)
        return 1;
    const sparcl__problem prob = {
        .head_dim = 64, .batch = 1, .kv_heads = 1, .kv_len = 64, .q_heads = 1, .q_len = 1};
    sparcl__pset p;
    memset(&p, 0, sizeof p);
    f->defaults(&p, &prob, NULL);
    if (sparcl__pset_check(NULL, f, &p, &prob, NULL) != SPARCL_OK)
        return snprintf(why, size, "family %s: its defaults fail its own check", f->name), 0;
    return 1;
}

static char defect[256];

static void validate(void)
{
    for (int i = 0; i < N_FAMILIES && !defect[0]; ++i) {
        const sparcl__kernel_schema *f = families[i];
        if (!check_programs(f, defect, sizeof defect) || !check_params(f, defect, sizeof defect))
            break;
        check_defaults(f, defect, sizeof defect);
    }
}

sparcl_status sparcl__kernel_registry_check(sparcl_ctx *ctx)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, validate);
    if (defect[0])
        return sparcl__fail(ctx, SPARCL_ERR_INTERNAL, "kernel registry: %s", defect);
    return SPARCL_OK;
}

sparcl__problem sparcl__problem_from_desc(const sparcl_plan_desc *desc)
{
    sparcl__problem prob;
    memset(&prob, 0, sizeof prob);
    float alpha;
    prob.head_dim = desc->head_dim;
    prob.batch = desc->batch;
    prob.kv_heads = desc->kv_heads;
    prob.kv_len = desc->kv_len;
    prob.q_heads = desc->q_heads;
    prob.q_len = desc->q_len;
    prob.norm = sparcl__entmax_norm(desc, &alpha);
    prob.dtype = desc->dtype;
    return prob;
}

SPARCL_API int sparcl_kernel_count(void)
{
    return N_SCHEMAS;
}

SPARCL_API const char *sparcl_kernel_name(int index)
{
    return index >= 0 && index < N_SCHEMAS ? schemas[index]->name : NULL;
}
