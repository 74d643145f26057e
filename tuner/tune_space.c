/*
 * tune_space.c -- the space sparcl-tune searches for one kernel family:
 * the library's space restricted by the --fix NAME=V and --space
 * NAME=v1,v2,... rules (sparcl_param_space_restrict_text does the work).
 */
#include <stdio.h>
#include <string.h>

#include "tune.h"

int tune_space(sparcl_ctx *ctx, const char *kernel, const char *const *rules, int n_rules,
               sparcl_param_space *out, char *err, size_t size)
{
    if (sparcl_kernel_space(ctx, kernel, out) != SPARCL_OK) {
        snprintf(err, size, "%s", sparcl_ctx_errmsg(ctx));
        return -1;
    }
    for (int r = 0; r < n_rules; ++r) {
        size_t len = strcspn(rules[r], "=");
        int known = 0;
        for (int i = 0; i < out->count; ++i)
            known |= strlen(out->item[i].name) == len && !strncmp(out->item[i].name, rules[r], len);
        if (!known) /* a parameter of another family */
            continue;
        if (sparcl_param_space_restrict_text(ctx, out, rules[r]) != SPARCL_OK) {
            snprintf(err, size, "%s: %s", kernel, sparcl_ctx_errmsg(ctx));
            return -1;
        }
    }
    return 0;
}
