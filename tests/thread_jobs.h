/*
 * thread_jobs.h -- the multi-threaded scenarios shared by the Criterion
 * suite (test_threads.c) and the plain ThreadSanitizer driver
 * (tsan_threads.c; Criterion cannot start under TSan, see Criterion issue
 * #274).  Each scenario returns NULL on success or a description of the
 * first failure.
 */
#ifndef SPARCL_TEST_THREAD_JOBS_H
#define SPARCL_TEST_THREAD_JOBS_H

/* Four threads create plans concurrently on one context (two share a program
 * key) and run them on one queue each. */
const char *thread_scenario_concurrent_plans(void);

/* Four threads run one shared plan, each on its own queue. */
const char *thread_scenario_shared_plan(void);

/* Four threads run forward and backward of one shared plan whose backward
 * is not built yet, each on its own queue. */
const char *thread_scenario_shared_backward(void);

#endif
