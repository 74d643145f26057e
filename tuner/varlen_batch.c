/*
 * varlen_batch.c -- the benchmark's and the tuner's packed batch (see
 * varlen_batch.h).
 */
#include "varlen_batch.h"

static const int mix[VARLEN_BATCH_COUNT] = {3000, 1800, 1200, 700, 400, 200, 100, 17};
#define MIX_TOTAL 7417

void varlen_batch_offsets(int n, int32_t *cu)
{
    cu[0] = 0;
    for (int s = 0; s < VARLEN_BATCH_COUNT - 1; ++s)
        cu[s + 1] = cu[s] + (int32_t)((int64_t)n * mix[s] / MIX_TOTAL);
    cu[VARLEN_BATCH_COUNT] = n;
}

sparcl_status varlen_batch_layout(sparcl_ctx *ctx, int n, int block, sparcl_layout **out)
{
    int32_t cu[VARLEN_BATCH_COUNT + 1];
    varlen_batch_offsets(n, cu);
    sparcl_layout *seq[VARLEN_BATCH_COUNT] = {NULL};
    sparcl_status st = SPARCL_OK;
    for (int s = 0; s < VARLEN_BATCH_COUNT && st == SPARCL_OK; ++s) {
        const int len = cu[s + 1] - cu[s];
        if (len > 0)
            st = sparcl_layout_init_causal(ctx, &seq[s], 1, len, len, block);
    }
    if (st == SPARCL_OK)
        st = sparcl_layout_init_varlen(ctx, out, VARLEN_BATCH_COUNT, cu, cu,
                                       (const sparcl_layout *const *)seq, block);
    for (int s = 0; s < VARLEN_BATCH_COUNT; ++s)
        sparcl_layout_free(seq[s]);
    return st;
}
