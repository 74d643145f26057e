/*
 * test_threads.c -- one context shared by several threads: plans created
 * concurrently (the program cache races on the same and on different keys),
 * executed on one queue per thread, and one plan shared by all threads
 * (forward, and forward + backward with the backward built lazily).
 * CI also runs the scenarios under ThreadSanitizer (tsan_threads.c).
 */
#include <criterion/criterion.h>

#include "sparcl.h"
#include "thread_jobs.h"

Test(threads, concurrent_plans_on_separate_queues, .timeout = 300)
{
    const char *failure = thread_scenario_concurrent_plans();
    cr_assert_null(failure, "%s", failure);
}

Test(threads, one_plan_shared_by_threads, .timeout = 300)
{
    const char *failure = thread_scenario_shared_plan();
    cr_assert_null(failure, "%s", failure);
}

Test(threads, one_plan_backward_shared_by_threads, .timeout = 300)
{
    const char *failure = thread_scenario_shared_backward();
    cr_assert_null(failure, "%s", failure);
}

Test(threads, foreign_queue_is_rejected)
{
    sparcl_ctx *a = NULL, *b = NULL;
    cr_assert_eq(sparcl_ctx_init(&a), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_init(&b), SPARCL_OK);
    sparcl_plan_desc d;
    sparcl_plan_desc_init(&d);
    d.q_len = d.kv_len = 8;
    d.head_dim = 8;
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(a, &plan, &d), SPARCL_OK);
    cl_mem m = clCreateBuffer(sparcl_ctx_cl_context(a), CL_MEM_READ_WRITE, 64 * 4, NULL, NULL);
    cl_mem o = clCreateBuffer(sparcl_ctx_cl_context(a), CL_MEM_READ_WRITE, 64 * 4, NULL, NULL);
    cr_assert_eq(sparcl_plan_forward_on_queue(plan, sparcl_ctx_cl_queue(b), m, m, m, o, NULL, 0,
                                              NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(sparcl_plan_backward_on_queue(plan, sparcl_ctx_cl_queue(b), m, m, m, m, m, m, o,
                                               o, o, 0, NULL, NULL),
                 SPARCL_ERR_INVALID_ARGUMENT);
    clReleaseMemObject(m);
    clReleaseMemObject(o);
    sparcl_plan_free(plan);
    sparcl_ctx_free(a);
    sparcl_ctx_free(b);
}
