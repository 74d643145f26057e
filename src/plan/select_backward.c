/*
 * select_backward.c -- the backward of a dynamic block selection plan.
 *
 * The call's q and k choose the blocks again, with the same kernels and
 * arithmetic as the forward, so the backward walks exactly the tiles whose
 * softmax the forward's out and lse hold.  The choice is listed on the
 * device at the backward's own tile, by tile row (dQ) and by tile column
 * (dK, dV; select_lists.h), and the softmax backward (backward.c) runs
 * over those lists with the batches folded into heads as in the forward,
 * in the caller's queue, with no host round trip.
 *
 * The backward's parameters come from the attn_bwd family by the one road
 * (kernel_build.h); a tile that does not divide the selection block is
 * halved until it does.
 */
#include "kernels/kernel_registry.h"
#include "plan/kernel_build.h"
#include "plan/plan_tiles.h"
#include "plan/select.h"
#include "runtime/ctx.h"
#include "runtime/error.h"

/* Builds the lists and kernels for the parameters p; on success they
 * replace the plan's.  Caller holds the lock. */
static sparcl_status build_set(void *user, const sparcl__pset *p, sparcl_param_source source)
{
    sparcl__dynsel *s = user;
    const sparcl__plan_view *v = s->view;
    sparcl_plan_desc d = v->desc;
    d.layout = s->pin;
    sparcl__pset ps = *p;
    sparcl_status st = sparcl__select_fit_tile(v, &d, &sparcl__schema_attn_bwd, &ps, s->block);
    if (st != SPARCL_OK)
        return st;
    sparcl__sel_lists lists;
    st = sparcl__sel_lists_init(v->ctx, &d, s->pin, ps.v[SPARCL__P_BLOCK_M],
                                ps.v[SPARCL__P_BLOCK_N], s->block, 1, &lists);
    struct sparcl__plan_bwd *b = NULL;
    if (st == SPARCL_OK) {
        sparcl__bwd_tiles shared = sparcl__sel_lists_share(&lists);
        st = sparcl__plan_bwd_create(&s->folded, &ps, source, &shared, &b);
    }
    if (st != SPARCL_OK) {
        sparcl__sel_lists_release(&lists);
        return st;
    }
    sparcl__plan_bwd_free(s->bwd);
    sparcl__sel_lists_release(&s->bwd_lists);
    s->bwd = b;
    s->bwd_lists = lists;
    return SPARCL_OK;
}

static sparcl_status build(sparcl__dynsel *s, const sparcl_params *override)
{
    sparcl_plan_desc d = s->view->desc;
    d.layout = s->pin; /* the lookup keys rows by pattern and density */
    d.params = override;
    return sparcl__family_choose_build(s->view->ctx, &sparcl__schema_attn_bwd, &d,
                                       "dynamic block selection backward", build_set, s);
}

sparcl_status sparcl__select_prepare_backward(void *state, const sparcl_params *override,
                                              sparcl_params *params, sparcl_param_source *source)
{
    sparcl__dynsel *s = state;
    pthread_mutex_lock(&s->lock);
    sparcl_status st = SPARCL_OK;
    if (override || !s->bwd)
        st = build(s, override);
    if (st == SPARCL_OK)
        sparcl__plan_bwd_report(s->bwd, params, source);
    pthread_mutex_unlock(&s->lock);
    return st;
}

sparcl_status sparcl__select_backward(void *state, const sparcl__bwd_call *c)
{
    sparcl__dynsel *s = state;
    sparcl_status st = sparcl__select_check_fold(s, c->ts);
    if (st != SPARCL_OK)
        return st;
    pthread_mutex_lock(&s->lock);
    if (!s->bwd)
        st = build(s, NULL);
    cl_event chosen = NULL, listed = NULL, done = NULL;
    if (st == SPARCL_OK &&
        (st = sparcl__select_enqueue_choice(s, c->queue, c->ts, c->q, c->k, c->num_wait, c->wait,
                                            &chosen)) == SPARCL_OK &&
        (st = sparcl__sel_lists_enqueue(s->view->ctx, &s->bwd_lists, s->kn, &s->view->desc,
                                        s->block, s->scratch[SPARCL__SEL_CHOICE], c->queue, chosen,
                                        &listed)) == SPARCL_OK) {
        sparcl__bwd_call inner = *c;
        inner.num_wait = 1;
        inner.wait = &listed;
        inner.event = &done;
        st = sparcl__plan_bwd_enqueue(&s->folded, s->bwd, &inner);
    }
    if (chosen)
        clReleaseEvent(chosen);
    if (listed)
        clReleaseEvent(listed);
    if (done)
        sparcl__select_set_last(s, done);
    pthread_mutex_unlock(&s->lock);
    if (done && c->event)
        *c->event = done;
    else if (done)
        clReleaseEvent(done);
    return st;
}
