/*
 * param_space.c -- restricting a kernel family's parameter space to a
 * subset of its values (sparcl-tune's --space and --fix, or any other
 * tuner that searches part of a space).  A restriction only removes
 * choices; validity between parameters stays with
 * sparcl_kernel_check_params().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/error.h"

SPARCL_API sparcl_status sparcl_param_space_restrict(sparcl_ctx *ctx, sparcl_param_space *space,
                                                     const char *name, const int32_t *values,
                                                     int n_values)
{
    if (!space || !name || !values || n_values < 1)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "restricting a space needs a space, a name and at least one value");
    int item = -1;
    for (int i = 0; i < space->count; ++i)
        if (strcmp(space->item[i].name, name) == 0)
            item = i;
    if (item < 0)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "the space has no parameter %s",
                            name);
    int n = space->item[item].n_choices;
    int32_t *choices = space->item[item].choices;
    int keep[SPARCL_PARAM_CHOICES_MAX] = {0};
    for (int v = 0; v < n_values; ++v) {
        int found = 0;
        for (int c = 0; c < n; ++c)
            if (choices[c] == values[v])
                found = keep[c] = 1;
        if (!found)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "%s %d is not one of the space's values", name, (int)values[v]);
    }
    /* Compacting in place keeps the ascending order of the choices. */
    int kept = 0;
    for (int c = 0; c < n; ++c)
        if (keep[c])
            choices[kept++] = choices[c];
    space->item[item].n_choices = kept;
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_param_space_restrict_text(sparcl_ctx *ctx,
                                                          sparcl_param_space *space,
                                                          const char *rule)
{
    if (!rule)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "rule is NULL");
    const char *eq = strchr(rule, '=');
    size_t len = eq ? (size_t)(eq - rule) : 0;
    if (!eq || len == 0 || len >= SPARCL_PARAM_NAME_MAX)
        return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "\"%s\" is not NAME=v1,v2,... (a name of at most %d characters)", rule,
                            SPARCL_PARAM_NAME_MAX - 1);
    char name[SPARCL_PARAM_NAME_MAX];
    memcpy(name, rule, len);
    name[len] = '\0';
    int32_t values[SPARCL_PARAM_CHOICES_MAX];
    int n = 0;
    const char *p = eq + 1;
    for (;;) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX || (*end && *end != ','))
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT,
                                "\"%s\": the values must be integers separated by commas", rule);
        if (n == SPARCL_PARAM_CHOICES_MAX)
            return sparcl__fail(ctx, SPARCL_ERR_INVALID_ARGUMENT, "\"%s\": more than %d values",
                                rule, SPARCL_PARAM_CHOICES_MAX);
        values[n++] = (int32_t)v;
        if (!*end)
            break;
        p = end + 1;
    }
    return sparcl_param_space_restrict(ctx, space, name, values, n);
}
