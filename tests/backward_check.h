/*
 * backward_check.h -- one forward + backward round on a plan, checked
 * against the library's reference backward (sparcl_reference_backward,
 * itself checked against an explicit-Jacobian oracle in test_backward.c).
 * Shared by the suites that exercise the backward on some configuration
 * (small shapes under oclgrind, tuned rows) without repeating the setup.
 */
#ifndef SPARCL_TEST_BACKWARD_CHECK_H
#define SPARCL_TEST_BACKWARD_CHECK_H

#include <stdint.h>

#include "sparcl.h"

/* Runs sparcl_plan_forward_host() and sparcl_plan_backward_host() on
 * inputs in [-1, 1] from `seed` (contiguous tensors) and returns the largest
 * error of dq, dk, dv relative to max(1, largest reference value); desc must
 * describe the plan (layout included).  Returns -1 if a call fails (the
 * message is on ctx). */
double backward_check(sparcl_ctx *ctx, sparcl_plan *plan, const sparcl_plan_desc *desc,
                      uint64_t seed);

#endif
