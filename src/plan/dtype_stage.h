/*
 * dtype_stage.h -- half storage (SPARCL_DTYPE_F16, BF16) for attention
 * kinds whose kernels read and write fp32 only.
 *
 * A plan of a half dtype owns one stage.  Where its kind's forward has no
 * half path (kind->half_forward 0), the kind is created for fp32 with
 * contiguous tensors (sparcl__stage_desc, sparcl__stage_kind_view) and
 * every forward converts q, k and v into fp32 workspaces on the device,
 * runs the kind unchanged, and rounds its output into the caller's buffer
 * (to nearest even, cl/dtype_convert.cl).  The backward of a half plan
 * whose kind has no half path for it (kind->half_backward 0) is staged the
 * same way (plan_backward.c): q, k, v, out and dout in, dq, dk and dv out; lse
 * and the kinds' own parameter gradients (dspans, dproj_e, dproj_f) stay
 * fp32 and pass through.  The workspaces (O(heads * len * head_dim) floats
 * each, the backward's allocated at its first use) belong to the plan and
 * count in its device bytes; staged calls on one plan are ordered one
 * after another on the device (each waits for the previous one's last
 * event), so threads may still share the plan.
 */
#ifndef SPARCL_DTYPE_STAGE_H
#define SPARCL_DTYPE_STAGE_H

#include "plan/plan_api.h"

typedef struct sparcl__dtype_stage sparcl__dtype_stage;

/* The descriptor a staged kind is created from: `d` with dtype F32 and
 * contiguous strides (the workspaces'); borrowed pointers kept. */
sparcl_plan_desc sparcl__stage_desc(const sparcl_plan_desc *d);

/* Creates the stage of a plan whose view `outer` (borrowed for the
 * stage's life) has a half dtype.  forward: the kind's forward is staged;
 * its conversion kernels are built and its workspaces allocated now (the
 * device-memory limit checked), else on the first backward. */
sparcl_status sparcl__stage_create(const sparcl__plan_view *outer, int forward,
                                   sparcl__dtype_stage **out);

/* Whether the forward is staged. */
int sparcl__stage_forwards(const sparcl__dtype_stage *s);

/* The view the kind is created with: fp32 and contiguous when the forward
 * is staged, else `outer`. */
const sparcl__plan_view *sparcl__stage_kind_view(const sparcl__dtype_stage *s);

/* Checks the stage's workspaces plus `kind_bytes` against the context's
 * device-memory limit, naming `kind` (SPARCL_ERR_OUT_OF_MEMORY). */
sparcl_status sparcl__stage_check(sparcl__dtype_stage *s, const char *kind, size_t kind_bytes);

/* Allocates the backward's workspaces if not yet done, with the check
 * above. */
sparcl_status sparcl__stage_prepare_backward(sparcl__dtype_stage *s, const char *kind,
                                             size_t kind_bytes);

/* One staged forward (buffers checked by the plan at the caller's dtype
 * and strides c->ts) through kind->forward(state, ...). */
sparcl_status sparcl__stage_forward(sparcl__dtype_stage *s, const sparcl__kind_ops *kind,
                                    void *state, const sparcl__fwd_call *c);

/* One staged backward through kind->backward(state, ...); `kind_bytes`
 * as for sparcl__stage_prepare_backward. */
sparcl_status sparcl__stage_backward(sparcl__dtype_stage *s, const sparcl__kind_ops *kind,
                                     void *state, const sparcl__bwd_call *c, size_t kind_bytes);

/* Enqueues the conversion of the caller's half tensor `src` (strides st,
 * `heads` x `len` rows of head_dim per batch) into the contiguous fp32
 * buffer `dst`; *event (required) receives its event.  For calls that read
 * a tensor outside a forward (sparcl_plan_lsh_order). */
sparcl_status sparcl__stage_to_float(sparcl__dtype_stage *s, cl_command_queue queue, cl_mem src,
                                     sparcl_strides st, int heads, int len, cl_mem dst,
                                     cl_event *event);

/* Device bytes of the workspaces. */
size_t sparcl__stage_bytes(sparcl__dtype_stage *s);

void sparcl__stage_free(sparcl__dtype_stage *s); /* NULL does nothing */

#endif
