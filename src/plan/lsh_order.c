/*
 * lsh_order.c -- the public inspection call of LSH plans,
 * sparcl_plan_lsh_order(): the plan-level checks (kind, queue, q's size by
 * the plan's strides) before the kind (lsh.c) runs its hash and sort.  The
 * kind reads q in the plan's dtype; were its forward staged (dtype_stage.h),
 * q would be converted into an fp32 buffer of this call first.
 */
#include "plan/attention_kinds.h"
#include "plan/dtype_stage.h"
#include "plan/lsh.h"
#include "plan/plan.h"
#include "runtime/ctx.h"
#include "runtime/error.h"
#include "runtime/gemm.h"

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
    if ((st = sparcl__plan_check_stored(
             p, q, "q", sparcl__plan_span(ts[0], d->batch, d->q_heads, d->q_len, d->head_dim))) !=
        SPARCL_OK)
        return st;
    cl_command_queue qu = queue ? queue : p->ctx->queue;
    if (!p->stage || !sparcl__stage_forwards(p->stage))
        return sparcl__lsh_order(state, qu, ts[0], q, buckets, order);
    const size_t n = (size_t)d->batch * (size_t)d->q_heads * (size_t)d->q_len * (size_t)d->head_dim;
    cl_mem f = NULL;
    cl_event ev = NULL;
    if ((st = sparcl__scratch(p->ctx, &f, n * sizeof(float), "fp32 q of sparcl_plan_lsh_order")) ==
            SPARCL_OK &&
        (st = sparcl__stage_to_float(p->stage, qu, q, ts[0], d->q_heads, d->q_len, f, &ev)) ==
            SPARCL_OK) {
        const sparcl_strides zero = {0, 0, 0}; /* f is contiguous */
        const sparcl_strides fs = sparcl__plan_resolve(zero, d, d->q_heads, d->q_len);
        cl_int err = clWaitForEvents(1, &ev);
        st = err == CL_SUCCESS ? sparcl__lsh_order(state, qu, fs, f, buckets, order)
                               : sparcl__fail_cl(p->ctx, err, "converting q to fp32");
    }
    if (ev)
        clReleaseEvent(ev);
    if (f)
        clReleaseMemObject(f);
    return st;
}
