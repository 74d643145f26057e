/*
 * tune.h -- the parts of sparcl-tune: problem sets (tune_problems.c), the
 * search strategies (tune_search.c), the evaluating worker process
 * (tune_worker.c) and the parent's handle on it (tune_child.c); spaces
 * (tune_space.c), replay (tune_replay.c) and the run picture
 * (tune_report.c).  The tuner is a client of the library: it uses
 * sparcl.h and OpenCL, and reads the database file's documented views
 * with SQLite where the library has no call for it (tune_store.c).
 */
#ifndef SPARCL_TUNE_H
#define SPARCL_TUNE_H

#include <signal.h>

#include "sparcl.h"

/* ---- problems ---- */

#define TUNE_SPEC_MAX 160

/* The most query heads an attn_span problem may have (the spans it is
 * tuned with are kept in the problem). */
#define TUNE_SPAN_HEADS_MAX 64

/* One problem: a canonical spec string ("window:n=2048,h=2,d=64,w=64") and
 * what it expands to. */
typedef struct tune_problem {
    char spec[TUNE_SPEC_MAX];
    char pattern[32]; /* dense, causal, window, bigbird, varlen (varlen_batch.h) */
    int n, heads, kv_heads, dim, window, block;
    int q_len; /* query rows (key "q"; n unless given: decoding problems) */
    int dtype;       /* sparcl_dtype of q, k, v and out: "dtype=f16" in a spec */
    int dtype_given; /* the spec named it (--dtype fills in the others) */
    float spans[TUNE_SPAN_HEADS_MAX]; /* attn_span: head h's span in tokens (see
                                         tune_problem_for_kernel) */
} tune_problem;

/* Parses "standard", "quick" or a ';'-separated list of specs into a malloc'd
 * array; returns the count, or -1 with a message in err. */
int tune_problems_parse(const char *text, tune_problem **out, char *err, size_t size);

/* The sparcl_dtype named "f32", "f16" or "bf16", or -1. */
int tune_dtype_parse(const char *name);

/* Sets the dtype of a problem whose spec did not name one, and rewrites
 * its spec to say so. */
void tune_problem_default_dtype(tune_problem *p, int dtype);

/* Builds the plan descriptor and layout of a problem (layout NULL for
 * dense).  The caller frees the layout. */
sparcl_status tune_problem_desc(sparcl_ctx *ctx, const tune_problem *p, sparcl_plan_desc *desc,
                                sparcl_layout **layout);

/* Sets the descriptor fields a kernel family is tuned with (attn_entmax and
 * attn_entmax_bwd: the 1.5-entmax normalization; attn_lsh: LSH attention;
 * attn_span: adaptive span, whose desc->spans then point into `p`), in the
 * parent and the worker alike, before the problem's database key is made
 * from the descriptor.  Returns 0, or -1 with the reason in err when the
 * family is not tuned on this problem (attn_lsh: only dense problems;
 * attn_span: only causal ones; clblast_xgemm: only at f32). */
int tune_problem_for_kernel(const char *kernel, const tune_problem *p, sparcl_plan_desc *desc,
                            char *err, size_t size);

/* 1 for the backward families (attn_bwd, attn_entmax_bwd), whose parameters
 * reach a plan through sparcl_plan_prepare_backward(), else 0. */
int tune_kernel_is_backward(const char *kernel);

/* ---- search ---- */

typedef enum { TUNE_EXHAUSTIVE, TUNE_RANDOM, TUNE_ANNEAL, TUNE_BASIN } tune_strategy;

/* "exhaustive", "random", "anneal", "basin" and back; parse returns -1 for
 * an unknown name. */
int tune_strategy_parse(const char *name, tune_strategy *out);
const char *tune_strategy_name(tune_strategy strategy);

typedef struct tune_budget {
    int max_evals;      /* per problem, the default included; 0 = no limit */
    double max_seconds; /* per problem, wall time; 0 = no limit */
    int stagnation;     /* stop after this many evaluations without a new best; 0 = off */
} tune_budget;

/* Evaluates one candidate: returns its time in ms, or INFINITY if it
 * failed; sets *stop to end the search (interrupted).  Live tuning runs the
 * candidate in the worker (sparcl_tune.c); replay looks it up among stored
 * evaluations (tune_replay.c).  The strategies cannot tell them apart. */
typedef double (*tune_eval_fn)(void *user, const sparcl_params *params, int *stop);

typedef struct tune_search_stats {
    int evals;                /* evaluations the budget counted (stored ones included) */
    int valid;                /* size of the valid space */
    double best_ms;           /* INFINITY if nothing succeeded */
    sparcl_params best;       /* the fastest evaluated candidate (empty if none) */
    int stopped;              /* interrupted */
} tune_search_stats;

/* Runs `strategy` over every parameter set of `space` (a family's space,
 * possibly restricted) that sparcl_kernel_check_params() accepts for
 * `desc`.  The candidates of `starts` (n_starts, may be 0) are evaluated
 * first, in order: the built-in default (the speedup reference), then
 * seeds such as the best rows of the nearest tuned problems; those not in
 * the valid space are skipped.  Annealing continues from the best start,
 * basin hopping restarts its local searches from them.  Every choice comes
 * from a generator seeded with `seed`, so the same evaluation outcomes give
 * the same run.  Returns 0, or -1 with the message in err. */
int tune_search(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                const sparcl_param_space *space, const sparcl_params *starts, int n_starts,
                tune_strategy strategy, const tune_budget *budget, unsigned seed,
                tune_eval_fn eval, void *user, tune_search_stats *stats, char *err, size_t size);

/* ---- spaces ---- */

/* Family `kernel`'s space restricted by rules "NAME=v1,v2,..." (--fix and
 * --space).  A rule whose NAME the family lacks is skipped (rules apply to
 * every family tuned); a value outside the family's choices is an error.
 * Returns 0, or -1 with the message in err. */
int tune_space(sparcl_ctx *ctx, const char *kernel, const char *const *rules, int n_rules,
               sparcl_param_space *out, char *err, size_t size);

/* 1 if every value of p is among `space`'s choices and
 * sparcl_kernel_check_params() accepts p for `desc`, else 0. */
int tune_space_admits(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                      const sparcl_param_space *space, const sparcl_params *p);

/* ---- stored evaluations (read straight from the database file) ---- */

/* How many of the nearest problems' rows seed a search with --transfer. */
#define TUNE_TRANSFER_SEEDS 4

/* One stored evaluation: its parameters and time (INFINITY unless ok). */
typedef struct tune_row {
    sparcl_params params;
    double ms;
} tune_row;

/* The evaluations of `problem` (any kernel hash unless same_hash) on
 * devices of the same platform and name as `device` (free-memory figures
 * may differ); where a parameter set was stored more than once, the latest
 * row.  *rows is malloc'd (free it).  Returns 0, or -1 with err. */
int tune_store_rows(const char *db_path, const sparcl_device_info *device,
                    const sparcl_tuning_problem *problem, int same_hash, tune_row **rows,
                    int *n_rows, char *err, size_t size);

/* Transfer across sizes: up to `max` parameter sets, the fastest ok rows of
 * the problems nearest to `problem` (same kernel family, same device
 * platform and name; distance in log-space of lengths, heads, head_dim and
 * density), the nearest problem first; the problem itself is excluded.
 * Writes a description of the source problems into `from`.  Returns the
 * number found (0 if none), or -1 with err. */
int tune_store_neighbours(const char *db_path, const sparcl_device_info *device,
                          const sparcl_tuning_problem *problem, int same_hash,
                          sparcl_params *out, int max, char *from, size_t from_size, char *err,
                          size_t size);

/* The transfer seeds of a search: up to `max` of the nearest problems'
 * fastest rows (tune_store_neighbours, up to 4 x TUNE_TRANSFER_SEEDS read)
 * that `space` admits for `desc`.  Returns the count, or -1 with err. */
int tune_transfer_seeds(sparcl_ctx *ctx, const char *db_path, const sparcl_device_info *device,
                        const sparcl_tuning_problem *key, int same_hash, const char *kernel,
                        const sparcl_plan_desc *desc, const sparcl_param_space *space,
                        sparcl_params *out, int max, char *from, size_t from_size, char *err,
                        size_t size);

/* ---- replay ---- */

typedef struct tune_replay_options {
    const char *db_path;
    tune_strategy strategy;
    tune_budget budget; /* max_seconds is ignored: nothing is timed */
    unsigned seed;      /* first seed */
    int seeds;          /* runs per problem, seeds seed, seed+1, ... */
    int transfer;       /* seed from the nearest problems' stored rows */
    const char *device; /* NULL: this device's rows; else those of the device of
                           this name, on any platform */
} tune_replay_options;

/* Replays `strategy` on problem `prob` of family `kernel` against the
 * stored evaluations only: no kernel is built or run.  The space is the
 * live one (`space`, checked for this device), so a run with the same
 * strategy, seed and budget takes the same path as the live run did; a
 * candidate without a stored row counts as a failed evaluation (it uses
 * budget and is reported as "missing").  Prints one line
 * per seed (the chosen configuration and its gap to the best stored time)
 * and a summary line "replay-summary ..." (median and worst gap); a problem
 * the family is not tuned on (tune_problem_for_kernel) gets one "skipped"
 * line instead.  Returns 0, or -1 with err. */
int tune_replay_problem(sparcl_ctx *ctx, const char *kernel, const tune_problem *prob,
                        const sparcl_param_space *space, const tune_replay_options *o, char *err,
                        size_t size);

/* ---- a picture of tuning runs ---- */

/* Writes an SVG with one panel per device, kernel family and problem of
 * the database: every evaluation in stored order (time on a log scale,
 * failures marked), the best so far and the first evaluation (the
 * default).  Returns 0, or -1 with err. */
int tune_report_svg(const char *db_path, const char *svg_path, char *err, size_t size);

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

/* Whether the device is a CPU, where the tuner runs each finalist round in
 * a fresh worker and process CPU time can decide (tune_finalists.c). */
int tune_on_cpu(const sparcl_device_info *device);

typedef struct tune_child tune_child;

/* A finalist's per-round speedups over the default (wall and CPU time;
 * cpu[] unused when has_cpu is 0), and the fastest round's time of the
 * default and of the finalist (ms). */
#define TUNE_ROUNDS_MAX 64
typedef struct tune_rounds {
    int n, has_cpu;
    double wall[TUNE_ROUNDS_MAX], cpu[TUNE_ROUNDS_MAX];
    double fastest_default_ms, fastest_ms;
} tune_rounds;

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
    /* NULL: the finalists are the default and the `count` fastest stored
     * configurations.  Else the confirmation of an earlier decision: the
     * default and *only. */
    const sparcl_params *only;
    sparcl_params *chosen; /* if not NULL: set to the decision when a finalist replaced the
                              default, else cleared */
    /* If not NULL: a decision stores the chosen finalist's rounds here; a
     * confirmation decides on these and its own rounds together. */
    tune_rounds *rounds_of_chosen;
    /* The median speedup over the default (over the decision's rounds, and
     * a confirmation's with them) a finalist needs besides winning three
     * quarters of them; <= 1: winning them is enough. */
    double min_gain;
    /* Finalists besides the `count` fastest stored, where not among them
     * already: the search's fastest by the faster of two looks, and on a
     * CPU device its cheapest in CPU time (tune_looks.c: a candidate whose
     * one evaluation fell in a slow state of the machine looks 1.2-2x as
     * slow as it is).  At most MAX_FINALISTS (9) finalists are timed. */
    const sparcl_params *extra;
    int n_extra;
    /* A confirmation's rounds when they were timed already
     * (tune_confirm_round), else NULL: tune_finalists times them. */
    const struct tune_timed *timed;
    /* If not NULL: set, when a decision kept the default, to the finalist
     * whose better median gain (wall or CPU time) came within
     * close_call of the minimum gain, its rounds to
     * *rounds_of_chosen, for a confirmation that may still choose it;
     * else cleared. */
    sparcl_params *challenger;
    double close_call; /* that factor (sparcl-tune --close-call); <= 1: no close calls */
} tune_finalist_job;

/* sparcl-tune --close-call's default. */
#define TUNE_CLOSE_CALL 1.05

/* A confirmation's rounds, timed one at a time so that sparcl-tune can
 * interleave the confirmations of several problems: per round the
 * default's (0) and the choice's (1) time and process CPU time. */
typedef struct tune_timed {
    int n, has_cpu, failed[2];
    double t[2][TUNE_ROUNDS_MAX], cpu[2][TUNE_ROUNDS_MAX];
} tune_timed;

/* Times round acc->n of the confirmation job (job->def and *job->only,
 * in an order that alternates with the round; on a CPU device in a fresh
 * worker process) and appends it to *acc (zeroed before the first round).
 * Returns 0, 1 if interrupted, -1 if the worker could not set the problem
 * up. */
int tune_confirm_round(const tune_finalist_job *job, tune_timed *acc,
                       volatile sig_atomic_t *interrupted);

/* How many of a search's cheapest candidates in CPU time join the
 * finalists on a CPU device. */
#define TUNE_CPU_FINALISTS 2

/* Whether a and b hold the same parameters with the same values. */
int tune_same_params(const sparcl_params *a, const sparcl_params *b);

/* ---- the second look at a search's candidates (tune_looks.c) ---- */

/* One candidate of a search. */
typedef struct tune_look {
    sparcl_params params;
    double first_ms; /* its search evaluation's median per call */
    double ms;       /* the faster of its looks' medians */
    double cpu_ms;   /* the smaller of its looks' process CPU times per call; < 0: unknown */
    int measured;    /* timed in this run (a stored row from an earlier one: 0) */
    int looks;       /* how many of its timings succeeded */
} tune_look;

/* A search's candidates in the order it evaluated them. */
typedef struct tune_looks {
    tune_look *v;
    int n, cap;
} tune_looks;

/* Where the second look runs and how far it reaches. */
typedef struct tune_look_job {
    tune_child *child;
    const char *kernel, *spec; /* the family and the problem, as the worker takes them */
    int max_runs;
    double timeout;
    double within; /* look again at candidates within this factor of the fastest; < 1: off */
} tune_look_job;

/* A second look faster than the first by this factor is printed. */
#define TUNE_LOOK_NOTABLE 1.10
/* The most candidates tune_looks_finalists() takes by each ranking. */
#define TUNE_LOOK_FINALISTS_MAX 16
/* sparcl-tune --second-look's default: a slowed evaluation measured up to
 * 1.3-1.55x its usual time (tune_looks.c), and up to 2x in a process
 * whose threads shared a core.  It was 1.5 until attn_span causal n=512's
 * BLOCK_N=8, 1.10x the default re-timed, was timed at 1.51x the fastest
 * in one quick run's search (9.09 ms, 5.9 in other processes) and never
 * reached the finalists (tuner/stability-report.md, 24th measurement). */
#define TUNE_LOOK_WITHIN 2.5

void tune_looks_init(tune_looks *l);
/* Frees the list; accepts NULL. */
void tune_looks_free(tune_looks *l);
/* Appends a candidate with its first look (cpu_ms < 0: unknown; measured:
 * timed in this run).  Returns 0, or -1 if out of memory. */
int tune_looks_add(tune_looks *l, const sparcl_params *p, double ms, double cpu_ms, int measured);
/* Times once more, in job->child, each candidate measured in this run whose
 * first look was within job->within of the fastest first look (when at
 * least two are), keeping the faster time and the smaller CPU time of the
 * two; a failed second look leaves the first standing.  Prints what it
 * did.  Returns 0, or 1 if interrupted. */
int tune_second_look(tune_looks *l, const tune_look_job *job, volatile sig_atomic_t *interrupted);
/* Writes to out (at most `size`) the `count` fastest candidates by their
 * faster look, then the `cheapest` ones by CPU time not among them; returns
 * how many. */
int tune_looks_finalists(const tune_looks *l, int count, int cheapest, sparcl_params *out,
                         int size);

/* Re-times the default and the `count` fastest stored configurations (or
 * job->only) in `rounds` interleaved rounds, prints them with their spread
 * and speedup intervals, and stores them and the decision (a finalist
 * replaces the default only if it beat it in three quarters of the rounds,
 * rounded up, from 3 rounds on, by job->min_gain at the median; on a CPU
 * device also if it used less CPU time in three quarters of them, by
 * job->min_gain at the median, and its fastest round was not slower than
 * the default's; tune_finalists.c).  *summary gets the
 * speedup, e.g. "1.32x [1.18-1.41]".  Returns 0, 1 if interrupted, -1 on a
 * database error (sparcl_ctx_errmsg(NULL)). */
int tune_finalists(const tune_finalist_job *job, volatile sig_atomic_t *interrupted, char *summary,
                   size_t size);

/* ---- the worker process ---- */

/* Environment variable of the test hook: "crash:NAME=V" or "hang:NAME=V"
 * makes the worker crash (SIGSEGV) or hang on any candidate with
 * NAME=V; a hanging worker first says so on stderr, so that a test knows
 * when to kill it from outside.  "time:NAME=V:F:G:K" multiplies such a
 * candidate's reported times by F, and by G on its every K-th evaluation
 * in the worker (rounds it loses); "time:NAME=V:F:G:K:A" also by G from its
 * A-th evaluation on; "wall:NAME=V:C:F:G:K[:A]" the same on the wall
 * times only, the CPU time always by C.  Only the worker reads it; it
 * exists for the tests. */
#define TUNE_FAULT_ENV "SPARCL_TUNE_TEST_FAULT"
/* If set, the file that counts the "time:" or "wall:" hook's evaluations across
 * workers (the finalists' rounds each start a fresh one on a CPU device);
 * unset, each worker counts its own. */
#define TUNE_FAULT_COUNT_ENV "SPARCL_TUNE_TEST_FAULT_COUNT"

/* The worker's main loop (sparcl-tune --worker): requests on stdin, one
 * result line per request on file descriptor 3. */
int tune_worker_main(const char *device);

/* A handle on the worker: spawned from `exe` on first use. */
/* Keeps a copy of the environment for the workers; call it first in main,
 * before an OpenCL driver is loaded.  On the first GPU run, workers spawned
 * by a process that had loaded NVIDIA's driver did not see the GPU, while
 * the same worker started from the shell did (issue 18).  Adds
 * POCL_AFFINITY=1 unless the environment sets POCL_AFFINITY (tune_child.c
 * says why). */
void tune_child_keep_environment(void);
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

/* ---- offline binary bundles (bundle.c) ---- */

/* sparcl-tune --build-bundle DIR: builds into folder `dir` the programs the
 * runtime would build on `device` for every best tuned row of that device in
 * the user database (`db`, NULL: the default) and the shipped one, and for
 * the runtime's choice and the built-in defaults of each problem of
 * `problems` ("standard", "quick" or specs), for every kernel family, or
 * only `kernel`.  Prints a summary; returns the exit status. */
int tune_build_bundle(const char *device, const char *dir, const char *db, const char *problems,
                      const char *kernel);

/* The median process CPU time (all threads of the worker) of one timed call
 * in the last tune_child_eval() that timed anything, in ms; < 0 if none. */
double tune_child_cpu_ms(const tune_child *c);

/* Ends the worker, if one runs; the next tune_child_eval() starts a fresh
 * one (and sets its problem up again). */
void tune_child_restart(tune_child *c);

#endif
