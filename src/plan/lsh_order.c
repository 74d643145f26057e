/*
 * lsh_order.c -- the public inspection call of LSH plans,
 * sparcl_plan_lsh_order(): the plan-level checks (kind, queue, q's size by
 * the plan's strides) before the kind (lsh.c) runs its hash and sort.
 */
#include "plan/attention_kinds.h"
#include "plan/lsh.h"
#include "plan/plan.h"
#include "runtime/ctx.h"
#include "runtime/error.h"

SPARCL_API sparcl_status sparcl_plan_lsh_order(sparcl_plan *p, cl_command_queue queue, cl_mem q,
                                               int32_t *buckets, int32_t *order)
{
    sparcl_strides ts[4];
    sparcl_status st = sparcl__plan_call_begin(p, queue, ts);
    if (st != SPARCL_OK)
        return st;
    void *state = sparcl__plan_state(p, &sparcl__kind_lsh);
    if (!state)
        return sparcl__fail(p->ctx, SPARCL_ERR_INVALID_ARGUMENT,
                            "not an LSH attention plan (attention %d)", p->desc.attention);
    const sparcl_plan_desc *d = &p->desc;
    if ((st = sparcl__plan_check_buffer(
             p, q, "q", sparcl__plan_span(ts[0], d->batch, d->q_heads, d->q_len, d->head_dim))) !=
        SPARCL_OK)
        return st;
    return sparcl__lsh_order(state, queue ? queue : p->ctx->queue, ts[0], q, buckets, order);
}
