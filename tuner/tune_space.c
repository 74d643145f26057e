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

int tune_space_admits(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                      const sparcl_param_space *space, const sparcl_params *p)
{
    for (int i = 0; i < space->count; ++i) {
        int32_t v;
        int ok = 0;
        if (!sparcl_params_get(p, space->item[i].name, &v))
            return 0;
        for (int c = 0; c < space->item[i].n_choices; ++c)
            ok |= space->item[i].choices[c] == v;
        if (!ok)
            return 0;
    }
    return sparcl_kernel_check_params(ctx, kernel, desc, p) == SPARCL_OK;
}

int tune_transfer_seeds(sparcl_ctx *ctx, const char *db_path, const sparcl_device_info *device,
                        const sparcl_tuning_problem *key, int same_hash, const char *kernel,
                        const sparcl_plan_desc *desc, const sparcl_param_space *space,
                        sparcl_params *out, int max, char *from, size_t from_size, char *err,
                        size_t size)
{
    sparcl_params found[4 * TUNE_TRANSFER_SEEDS];
    int n =
        tune_store_neighbours(db_path, device, key, same_hash, found,
                              (int)(sizeof found / sizeof found[0]), from, from_size, err, size);
    int kept = 0;
    for (int i = 0; i < n && kept < max; ++i)
        if (tune_space_admits(ctx, kernel, desc, space, &found[i]))
            out[kept++] = found[i];
    return n < 0 ? -1 : kept;
}
