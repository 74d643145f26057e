/*
 * tsan_threads.c -- runs the thread scenarios without Criterion, for the
 * ThreadSanitizer build (Criterion cannot start under TSan).  Prints the
 * plain "N passed, N failed" line.
 */
#include <stdio.h>

#include "thread_jobs.h"

int main(void)
{
    struct {
        const char *name;
        const char *(*run)(void);
    } scenarios[] = {{"concurrent_plans", thread_scenario_concurrent_plans},
                     {"shared_plan", thread_scenario_shared_plan},
                     {"shared_backward", thread_scenario_shared_backward}};
    int passed = 0, failed = 0;
    for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0]; ++s) {
        const char *failure = scenarios[s].run();
        printf("%s: %s%s\n", scenarios[s].name, failure ? "FAIL " : "ok", failure ? failure : "");
        failure ? ++failed : ++passed;
    }
    printf("tsan: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
