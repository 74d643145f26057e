/*
 * tune.h -- the parts of sparcl-tune: problem sets (tune_problems.c), the
 * search strategies (tune_search.c), the evaluating worker process
 * (tune_worker.c) and the parent's handle on it (tune_child.c).  The tuner
 * is a client of the library: it uses only sparcl.h and OpenCL.
 */
#ifndef SPARCL_TUNE_H
#define SPARCL_TUNE_H

#include <signal.h>

#include "sparcl.h"

/* ---- problems ---- */

#define TUNE_SPEC_MAX 160

/* One problem: a canonical spec string ("window:n=2048,h=2,d=64,w=64") and
 * what it expands to. */
typedef struct tune_problem {
    char spec[TUNE_SPEC_MAX];
    char pattern[32]; /* dense, causal, window, bigbird */
    int n, heads, kv_heads, dim, window, block;
} tune_problem;

/* Parses "standard", "quick" or a ';'-separated list of specs into a malloc'd
 * array; returns the count, or -1 with a message in err. */
int tune_problems_parse(const char *text, tune_problem **out, char *err, size_t size);

/* Builds the plan descriptor and layout of a problem (layout NULL for
 * dense).  The caller frees the layout. */
sparcl_status tune_problem_desc(sparcl_ctx *ctx, const tune_problem *p, sparcl_plan_desc *desc,
                                sparcl_layout **layout);

/* ---- search ---- */

typedef enum { TUNE_EXHAUSTIVE, TUNE_RANDOM, TUNE_ANNEAL } tune_strategy;

typedef struct tune_budget {
    int max_evals;      /* per problem, the default included */
    double max_seconds; /* per problem, wall time */
    int stagnation;     /* stop after this many evaluations without a new best; 0 = off */
} tune_budget;

/* Evaluates one candidate: returns its time in ms, or INFINITY if it
 * failed; sets *stop to end the search (interrupted). */
typedef double (*tune_eval_fn)(void *user, const sparcl_params *params, int *stop);

typedef struct tune_search_stats {
    int evals;       /* evaluations the budget counted (stored ones included) */
    int valid;       /* size of the valid space */
    double best_ms;  /* INFINITY if nothing succeeded */
    int stopped;     /* interrupted */
} tune_search_stats;

/* Runs `strategy` over every valid parameter set of `kernel` for `desc`
 * that agrees with `fixed` (may be NULL or empty: parameters pinned by
 * --fix), starting from `start` (the built-in default).  Returns 0, or -1 with the
 * message in err. */
int tune_search(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                const sparcl_params *fixed, const sparcl_params *start, tune_strategy strategy, const tune_budget *budget,
                unsigned seed, tune_eval_fn eval, void *user, tune_search_stats *stats,
                char *err, size_t size);

/* ---- sharing a database (tune_claims.c) ---- */

enum { TUNE_CLAIM_MINE, TUNE_CLAIM_STORED, TUNE_CLAIM_INTERRUPTED, TUNE_CLAIM_ERROR };

/* Claims `params` for this process for lease_s seconds before it is
 * measured.  Returns TUNE_CLAIM_MINE (measure, record, then
 * sparcl_tuning_db_release), TUNE_CLAIM_STORED (another tuner measured it,
 * possibly while this one waited: read it), TUNE_CLAIM_INTERRUPTED or
 * TUNE_CLAIM_ERROR (message in sparcl_ctx_errmsg(NULL)). */
int tune_claim(sparcl_tuning_db *db, const sparcl_device_info *device,
               const sparcl_tuning_problem *key, const sparcl_params *params, double lease_s,
               volatile sig_atomic_t *interrupted);

/* ---- the decision after the search (tune_finalists.c) ---- */

typedef struct tune_child tune_child;

typedef struct tune_finalist_job {
    sparcl_tuning_db *db;
    const sparcl_device_info *device;
    const sparcl_tuning_problem *key;
    const char *spec;          /* the problem, as the worker takes it */
    const sparcl_params *def;  /* the built-in default */
    tune_child *child;
    int count, rounds;         /* fastest configurations besides the default; rounds (0: off) */
    int max_runs;
    double timeout;
} tune_finalist_job;

/* Re-times the default and the `count` fastest stored configurations in
 * `rounds` interleaved rounds, prints them with their spread and speedup
 * intervals, and stores them and the decision (a finalist replaces the
 * default only if it beat it in every round, from 3 rounds on).  *summary
 * gets the speedup, e.g. "1.32x [1.18-1.41]".  Returns 0, 1 if interrupted,
 * -1 on a database error (sparcl_ctx_errmsg(NULL)). */
int tune_finalists(const tune_finalist_job *job, volatile sig_atomic_t *interrupted, char *summary,
                   size_t size);

/* ---- the worker process ---- */

/* Environment variable of the test hook: "crash:NAME=V" or "hang:NAME=V"
 * makes the worker crash (SIGSEGV) or hang on any candidate with
 * NAME=V; a hanging worker first says so on stderr, so that a test knows
 * when to kill it from outside.  Only the worker reads it; it exists for
 * the tests. */
#define TUNE_FAULT_ENV "SPARCL_TUNE_TEST_FAULT"

/* The worker's main loop (sparcl-tune --worker): requests on stdin, one
 * result line per request on file descriptor 3. */
int tune_worker_main(const char *device);

/* A handle on the worker: spawned from `exe` on first use. */
tune_child *tune_child_new(const char *exe, const char *device);
void tune_child_free(tune_child *c);

/* Evaluates params of kernel family `kernel` on problem `spec` in the worker, with `timeout_s`
 * seconds for the candidate (setting up a new problem has its own, longer
 * limit).  Fills *r; a crash or timeout of the worker is reported in it and
 * the worker is restarted next time; a worker killed from outside
 * (SIGKILL/SIGTERM not sent by the watchdog) is replaced and the candidate
 * run once more first.  Returns 0, 1 when *interrupted became
 * set (nothing to record), or -1 if the problem itself cannot be set up
 * (message in r->message). */
int tune_child_eval(tune_child *c, const char *kernel, const char *spec,
                    const sparcl_params *params, int max_runs, double timeout_s,
                    volatile sig_atomic_t *interrupted, sparcl_tuning_result *r);

/* The median process CPU time (all threads of the worker) of one timed call
 * in the last tune_child_eval() that timed anything, in ms; < 0 if none. */
double tune_child_cpu_ms(const tune_child *c);

#endif
