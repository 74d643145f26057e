/*
 * lsh.h -- what the LSH attention kind (lsh.c) offers the plan's public
 * inspection call (lsh_order.c): its hash and sort kernels run on their
 * own, with the bucket ids and the sorted order read back.
 */
#ifndef SPARCL_PLAN_LSH_H
#define SPARCL_PLAN_LSH_H

#include "plan/plan_api.h"

/* Hashes and sorts q (a checked buffer with strides qs) on `queue` and
 * copies the buckets and the order (either may be NULL) to the host,
 * blocking; layouts as sparcl_plan_lsh_order() documents. */
sparcl_status sparcl__lsh_order(void *state, cl_command_queue queue, sparcl_strides qs, cl_mem q,
                                int32_t *buckets, int32_t *order);

#endif
