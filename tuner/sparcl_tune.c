/*
 * sparcl_tune.c -- sparcl-tune: finds the fastest correct kernel parameters
 * for each problem on a device and stores every evaluation in the tuning
 * database that plans read at creation.
 *
 * This process owns the database and the search; candidates are built, run,
 * verified and timed in a worker process (tune_worker.c, started through
 * tune_child.c), so a crash or hang costs one recorded evaluation, not the
 * run.  Every evaluation is committed as it completes and looked up before
 * it is run, so a run killed at any moment resumes where it stopped.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tool_log.h"
#include "tune.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: sparcl-tune [options]\n"
        "  --device SEL        OpenCL device: index or name substring (default: SPARCL_DEVICE, "
        "else first GPU, else CPU)\n"
        "  --db PATH           tuning database (default: SPARCL_DB, else "
        "$XDG_CACHE_HOME/sparcl/tuning.db)\n"
        "  --strategy S        exhaustive | random | anneal | basin (default basin); basin:\n"
        "                      local searches from the default (and --transfer seeds), each\n"
        "                      step timing every one-value move and taking the fastest,\n"
        "                      then from random kicks around the best\n"
        "  --budget B          quick (quick problems, 12 evaluations each) | thorough "
        "(standard problems, 80 each; the default)\n"
        "  --max-evals N       evaluations per problem, the default's included (0: no limit)\n"
        "  --max-seconds S     wall time per problem (0: no limit)\n"
        "  --stagnation K      stop a problem after K evaluations without a new best (0: off)\n"
        "  --problems P        standard | quick | spec[;spec...], spec = "
        "PATTERN:n=N,h=H[,kvh=K],d=D[,w=W][,blk=B][,dtype=T]\n"
        "                      with PATTERN dense | causal | window (+-W tokens) | bigbird\n"
        "                      | varlen (a packed batch of 8 sequences of mixed lengths,\n"
        "                      causal each, n tokens in all: sparcl-bench --varlen's)\n"
        "  --dtype T           storage of q, k, v and out for the problems whose spec names\n"
        "                      none: f32 (default) | f16 | bf16 (every attention family\n"
        "                      reads it natively; clblast_xgemm is f32 only)\n"
        "  --kernel NAME       tune only this kernel family (default: all it can run but\n"
        "                      clblast_xgemm, CLBlast's SGEMM on the dense path: only by name)\n"
        "  --fix NAME=V        search only candidates with NAME=V (repeatable)\n"
        "  --space NAME=V1,V2,...  search only these values of NAME (repeatable, several\n"
        "                      parameters; a name the tuned family lacks is ignored)\n"
        "  --transfer          also start from the fastest stored rows of the nearest other\n"
        "                      problems in the database (transfer across sizes and\n"
        "                      storage types)\n"
        "  --replay            simulate: run the strategy against the database's stored\n"
        "                      evaluations only (no kernel is run; a candidate without a row\n"
        "                      counts as failed) and print each run's gap to the best stored\n"
        "                      time\n"
        "  --replay-device NAME  with --replay: the rows recorded on the device named NAME\n"
        "                      (any platform) instead of this device's: data recorded on\n"
        "                      one device can be replayed on any\n"
        "  --seeds K           with --replay: K runs per problem, seeds --seed.. (default 10)\n"
        "  --timeout S         watchdog limit per candidate (default 120); candidates run "
        "in a\n"
        "                      worker process, with POCL_AFFINITY=1 (POCL binds its threads "
        "to\n"
        "                      cores) unless the environment sets POCL_AFFINITY\n"
        "  --finalists K       after the search, re-time the K fastest and the default "
        "(default 5;\n"
        "                      on a CPU device also the search's 2 cheapest in CPU time;\n"
        "                      also the K fastest after the second look)\n"
        "  --rounds R          ... in R interleaved rounds (default 7; 0: off); a "
        "finalist\n"
        "                      replaces the default only if it beats it in 3/4 of the rounds "
        "(4 of 5,\n"
        "                      6 of 7) and by --min-gain at the median; on a CPU device also "
        "if it\n"
        "                      uses less CPU time in more than half of them, by --min-gain at the "
        "median, and\n"
        "                      its fastest round is not slower than the default's; there\n"
        "                      each round runs in a fresh worker process\n"
        "  --second-look F     after the search, time once more each candidate within F\n"
        "                      times the fastest (default 2.5; 0: off) and choose the\n"
        "                      finalists by the faster of its two timings: one timing can\n"
        "                      fall in a slow moment of a shared machine\n"
        "  --min-gain G        the median speedup over the default a finalist needs (default\n"
        "                      1.05; 1: none): smaller gains are within the noise of a\n"
        "                      shared machine, and the default is kept\n"
        "  --confirm-after S   after the last problem, time each choice that replaced the "
        "default\n"
        "                      against it again in R rounds, each round going through all "
        "the\n"
        "                      choices, from S seconds after the last decision (default "
        "60); the\n"
        "                      default comes back unless the choice won 3/4 of the "
        "decision's and\n"
        "                      these rounds together (by CPU time or wall time, as above)\n"
        "  --close-call F      a decision that kept the default while a finalist's median\n"
        "                      gain (wall or CPU time) came within F of --min-gain is a\n"
        "                      close call: the confirmation pass times that finalist\n"
        "                      against the default again and chooses it if both sets of\n"
        "                      rounds together say so (default 1.05; 1: off)\n"
        "  --no-confirm        no confirmation pass\n"
        "  --seed N            seed of the random strategies (default 1)\n"
        "  --export FILE       write the database as FILE.csv or FILE.sql, then exit\n"
        "  --import FILE       merge a .csv or .sql export into the database, then exit\n"
        "  --report FILE.svg   draw every problem's evaluations in the database, then exit\n"
        "  --list-devices      list OpenCL devices and exit\n"
        "  --build-bundle DIR  write the binaries of the tuned rows and of --problems into "
        "DIR, then exit\n"
        "                      (an offline bundle: run with SPARCL_OFFLINE=DIR to use it; the "
        "tuner then\n"
        "                      searches only the candidates the bundle holds)\n");
}

typedef struct options {
    const char *device, *db, *problems, *export_path, *import_path, *kernel, *report_path, *bundle;
    tune_strategy strategy;
    tune_budget budget;
    const char *rules[64]; /* --fix and --space, "NAME=v1,v2,..." */
    int n_rules;
    int max_runs;
    int finalists, rounds; /* the decision after the search (tune_finalists.c) */
    double confirm_after;  /* confirm decisions this many seconds after them; < 0: never */
    double min_gain;       /* the median speedup a finalist needs over the default */
    double second_look;    /* look again at candidates within this factor of the fastest */
    double close_call;     /* confirm a kept default whose challenger came this close */
    double timeout;
    unsigned seed;
    int list_devices, worker;
    int replay, seeds, transfer;
    const char *replay_device; /* --replay-device: whose rows replay reads; NULL this one */
    int dtype; /* --dtype: a sparcl_dtype for specs that name none */
} options;

/* Sets *out to x, the value v of option a, if it lies from 1 to 100 (or
 * is 0 where zero_off), else says what a needs (a `what` in that range)
 * and returns -1. */
static int factor_option(const char *a, const char *v, double x, const char *what, int zero_off,
                         double *out)
{
    if ((x < 1.0 || x > 100.0) && !(zero_off && x == 0)) {
        fprintf(stderr, "sparcl-tune: error: %s needs %sa %s from 1 to 100, not \"%s\"\n", a,
                zero_off ? "0 (off) or " : "", what, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->strategy = TUNE_BASIN;
    o->timeout = 120;
    o->seed = 1;
    o->seeds = 10;
    o->confirm_after = 60;
    o->min_gain = 1.05;
    o->second_look = TUNE_LOOK_WITHIN;
    o->close_call = TUNE_CLOSE_CALL;
    int quick = 0, evals = -1, stagnation = -1, finalists = -1, rounds = -1;
    double seconds = -1;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKES_VALUE                                                                                \
    do {                                                                                           \
        if (!v) {                                                                                  \
            fprintf(stderr, "sparcl-tune: error: %s needs a value\n", a);                          \
            return -1;                                                                             \
        }                                                                                          \
        ++i;                                                                                       \
    } while (0)
        if (!strcmp(a, "--worker")) {
            o->worker = 1;
        } else if (!strcmp(a, "--list-devices")) {
            o->list_devices = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--device")) {
            TAKES_VALUE;
            o->device = v;
        } else if (!strcmp(a, "--db")) {
            TAKES_VALUE;
            o->db = v;
        } else if (!strcmp(a, "--problems")) {
            TAKES_VALUE;
            o->problems = v;
        } else if (!strcmp(a, "--dtype")) {
            TAKES_VALUE;
            if ((o->dtype = tune_dtype_parse(v)) < 0) {
                fprintf(stderr, "sparcl-tune: error: --dtype must be f32, f16 or bf16\n");
                return -1;
            }
        } else if (!strcmp(a, "--build-bundle")) {
            TAKES_VALUE;
            o->bundle = v;
        } else if (!strcmp(a, "--export")) {
            TAKES_VALUE;
            o->export_path = v;
        } else if (!strcmp(a, "--report")) {
            TAKES_VALUE;
            o->report_path = v;
        } else if (!strcmp(a, "--import")) {
            TAKES_VALUE;
            o->import_path = v;
        } else if (!strcmp(a, "--replay")) {
            o->replay = 1;
        } else if (!strcmp(a, "--replay-device")) {
            TAKES_VALUE;
            o->replay_device = v;
        } else if (!strcmp(a, "--no-confirm")) {
            o->confirm_after = -1;
        } else if (!strcmp(a, "--transfer")) {
            o->transfer = 1;
        } else if (!strcmp(a, "--fix") || !strcmp(a, "--space")) {
            TAKES_VALUE;
            char name[SPARCL_PARAM_NAME_MAX];
            int value, used = 0;
            int fix = !strcmp(a, "--fix");
            /* The values are checked against each family's space later. */
            if ((fix ? sscanf(v, "%23[A-Za-z0-9_]=%d%n", name, &value, &used) != 2 ||
                           v[used] != '\0'
                     : sscanf(v, "%23[A-Za-z0-9_]=%d", name, &value) != 2) ||
                o->n_rules == 64) {
                fprintf(stderr, "sparcl-tune: error: %s needs %s, not \"%s\"\n", a,
                        fix ? "NAME=integer" : "NAME=integer[,integer...]", v);
                return -1;
            }
            o->rules[o->n_rules++] = v;
        } else if (!strcmp(a, "--kernel")) {
            TAKES_VALUE;
            o->kernel = v;
        } else if (!strcmp(a, "--strategy")) {
            TAKES_VALUE;
            if (tune_strategy_parse(v, &o->strategy) != 0) {
                fprintf(stderr, "sparcl-tune: error: unknown strategy \"%s\"\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--budget")) {
            TAKES_VALUE;
            if (!strcmp(v, "quick") || !strcmp(v, "thorough"))
                quick = !strcmp(v, "quick");
            else {
                fprintf(stderr, "sparcl-tune: error: budget must be quick or thorough\n");
                return -1;
            }
        } else if (!strcmp(a, "--max-evals") || !strcmp(a, "--stagnation") ||
                   !strcmp(a, "--max-seconds") || !strcmp(a, "--timeout") || !strcmp(a, "--seed") ||
                   !strcmp(a, "--seeds") || !strcmp(a, "--finalists") || !strcmp(a, "--rounds") ||
                   !strcmp(a, "--confirm-after") || !strcmp(a, "--min-gain") ||
                   !strcmp(a, "--second-look") || !strcmp(a, "--close-call")) {
            TAKES_VALUE;
            char *end = NULL;
            double x = strtod(v, &end);
            if (!end || *end || x < 0) {
                fprintf(stderr, "sparcl-tune: error: %s needs a number >= 0, not \"%s\"\n", a, v);
                return -1;
            }
            if (!strcmp(a, "--max-evals"))
                evals = (int)x;
            else if (!strcmp(a, "--stagnation"))
                stagnation = (int)x;
            else if (!strcmp(a, "--max-seconds"))
                seconds = x;
            else if (!strcmp(a, "--finalists"))
                finalists = (int)x;
            else if (!strcmp(a, "--rounds"))
                rounds = (int)x;
            else if (!strcmp(a, "--confirm-after"))
                o->confirm_after = x;
            else if (!strcmp(a, "--close-call")) {
                if (factor_option(a, v, x, "factor", 0, &o->close_call) != 0)
                    return -1;
            } else if (!strcmp(a, "--second-look")) {
                if (factor_option(a, v, x, "factor", 1, &o->second_look) != 0)
                    return -1;
            } else if (!strcmp(a, "--min-gain")) {
                if (factor_option(a, v, x, "speedup", 0, &o->min_gain) != 0)
                    return -1;
            } else if (!strcmp(a, "--timeout"))
                o->timeout = x > 0 ? x : 1;
            else if (!strcmp(a, "--seeds"))
                o->seeds = x >= 1 ? (int)x : 1;
            else
                o->seed = (unsigned)x;
        } else {
            fprintf(stderr, "sparcl-tune: error: unknown option %s (try --help)\n", a);
            return -1;
        }
#undef TAKES_VALUE
    }
    if (o->replay_device && !o->replay) {
        fprintf(stderr, "sparcl-tune: error: --replay-device applies to --replay only\n");
        return -1;
    }
    o->budget.max_evals = evals >= 0 ? evals : quick ? 12 : 80;
    o->budget.stagnation = stagnation >= 0 ? stagnation : quick ? 8 : 30;
    o->budget.max_seconds = seconds >= 0 ? seconds : quick ? 90 : 1800;
    o->max_runs = quick ? 7 : 15;
    o->finalists = finalists >= 0 ? finalists : 5;
    o->rounds = rounds >= 0 ? rounds : 7;
    if (!o->problems)
        o->problems = quick ? "quick" : "standard";
    return 0;
}

/* ---- progress ---------------------------------------------------------- */

typedef struct progress {
    int tty;
    int problem, n_problems; /* 1-based */
    int max_evals;
    double t0, eval_seconds; /* time spent in new evaluations */
    int new_evals;
} progress;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fmt_time(double s, char *buf, size_t size)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
}

/* ---- one problem --------------------------------------------------------- */

typedef struct state {
    const options *o;
    sparcl_tuning_db *db;
    const sparcl_device_info *device;
    sparcl_tuning_problem key;
    const tune_problem *prob;
    tune_child *child;
    progress *pg;
    int evals, stored, fatal;
    double best;
    sparcl_params best_params; /* of this search, stored rows included */
    tune_looks looks;          /* this search's candidates, for the second look (tune_looks.c) */
    char fatal_msg[600];
} state;

/* "eval 7/80" with a limit, "eval 7" without one. */
static void fmt_count(int evals, int max_evals, char *buf, size_t size)
{
    if (max_evals > 0)
        snprintf(buf, size, "%d/%d", evals, max_evals);
    else
        snprintf(buf, size, "%d", evals);
}

static void report(state *s, const sparcl_params *p, const sparcl_tuning_result *r, int stored)
{
    progress *pg = s->pg;
    const int max = s->o->budget.max_evals;
    /* An ETA needs a limit on evaluations; stored rows may take a problem
     * past it (they count, but cost nothing), so clamp at zero. */
    char eta[48] = "";
    if (max > 0) {
        double avg = pg->new_evals ? pg->eval_seconds / pg->new_evals : 1.0;
        double rest = (double)(max > s->evals ? max - s->evals : 0) +
                      (double)(pg->n_problems - pg->problem) * max;
        char t[32];
        fmt_time(avg * rest, t, sizeof t);
        snprintf(eta, sizeof eta, ", ETA %s", t);
    }
    char count[32];
    fmt_count(s->evals, max, count, sizeof count);
    if (pg->tty) {
        int width = 24, done = max > 0 ? (int)((double)width * s->evals / max) : 0;
        char bar[32];
        for (int i = 0; i < width; ++i)
            bar[i] = i < done ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r\033[K[%s] problem %d/%d  eval %s  best %.3f ms%s", bar, pg->problem,
                pg->n_problems, count, s->best, eta);
        fflush(stderr);
        return;
    }
    char list[512];
    sparcl_params_format(p, list, sizeof list);
    if (r->status == SPARCL_TUNING_OK)
        printf("[%d/%d] eval %s %s: ok %.3f ms%s (best %.3f ms%s)\n", pg->problem, pg->n_problems,
               count, list, r->median_ms, stored ? " [stored]" : "", s->best, eta);
    else
        printf("[%d/%d] eval %s %s: %s%s: %.160s\n", pg->problem, pg->n_problems, count, list,
               sparcl_tuning_status_string(r->status), stored ? " [stored]" : "", r->message);
    fflush(stdout);
}

static double evaluate(void *user, const sparcl_params *p, int *stop)
{
    state *s = user;
    if (interrupted) {
        *stop = 1;
        return INFINITY;
    }
    sparcl_tuning_result r;
    int found = 0;
    if (sparcl_tuning_db_find(s->db, s->device, &s->key, p, &r, &found) != SPARCL_OK) {
        snprintf(s->fatal_msg, sizeof s->fatal_msg, "%s", sparcl_ctx_errmsg(NULL));
        s->fatal = 1;
        *stop = 1;
        return INFINITY;
    }
    if (!found) { /* claim it, or wait for the tuner that holds it */
        int c = tune_claim(s->db, s->device, &s->key, p, s->o->timeout + 3600, &interrupted);
        if (c == TUNE_CLAIM_INTERRUPTED) {
            *stop = 1;
            return INFINITY;
        }
        if (c == TUNE_CLAIM_ERROR ||
            (c == TUNE_CLAIM_STORED &&
             sparcl_tuning_db_find(s->db, s->device, &s->key, p, &r, &found) != SPARCL_OK)) {
            snprintf(s->fatal_msg, sizeof s->fatal_msg, "%s", sparcl_ctx_errmsg(NULL));
            s->fatal = 1;
            *stop = 1;
            return INFINITY;
        }
    }
    if (found) { /* resumed, or measured by another tuner */
        ++s->stored;
    } else {
        double t0 = now();
        int rc = tune_child_eval(s->child, s->key.kernel, s->prob->spec, p, s->o->max_runs,
                                 s->o->timeout, &interrupted, &r);
        if (rc != 0) /* nothing to record: let another tuner have it */
            sparcl_tuning_db_release(s->db, s->device, &s->key, p);
        if (rc == 1) {
            *stop = 1;
            return INFINITY;
        }
        if (rc < 0) {
            snprintf(s->fatal_msg, sizeof s->fatal_msg, "cannot set up %s: %s", s->prob->spec,
                     r.message);
            *stop = 1;
            return INFINITY;
        }
        if (sparcl_tuning_db_record(s->db, s->device, &s->key, &r) != SPARCL_OK ||
            sparcl_tuning_db_release(s->db, s->device, &s->key, p) != SPARCL_OK) {
            snprintf(s->fatal_msg, sizeof s->fatal_msg, "%s", sparcl_ctx_errmsg(NULL));
            s->fatal = 1;
            *stop = 1;
            return INFINITY;
        }
        s->pg->eval_seconds += now() - t0;
        ++s->pg->new_evals;
    }
    ++s->evals;
    double ms = r.status == SPARCL_TUNING_OK ? r.median_ms : INFINITY;
    if (isfinite(ms) &&
        tune_looks_add(&s->looks, p, ms,
                       found || !tune_on_cpu(s->device) ? -1 : tune_child_cpu_ms(s->child),
                       !found) != 0) {
        snprintf(s->fatal_msg, sizeof s->fatal_msg, "out of memory for the search's candidates");
        s->fatal = 1;
        *stop = 1;
        return INFINITY;
    }
    if (ms < s->best) {
        s->best = ms;
        s->best_params = *p;
    }
    report(s, p, &r, found);
    return ms;
}

/* The finalists the looks add (tune_finalist_job.extra): at most as many
 * as tune_finalists() times besides the default. */
#define MAX_EXTRA_FINALISTS 8

typedef struct row {
    char spec[TUNE_SPEC_MAX];
    int evals, stored;
    double default_ms, best_ms;
    char best[256];
    char note[160];
    char decision[96]; /* the finalists' speedup over the default, "-" if none */
    /* a finalist replaced the default, or (close) the default was kept in a
     * close call: what the confirmation needs */
    int replaced, close;
    double decided_at; /* now() */
    const char *kernel;
    const tune_problem *prob;
    sparcl_tuning_problem key;
    sparcl_params def, chosen; /* chosen: the choice, or the close call's challenger */
    tune_rounds rounds;        /* chosen's rounds against the default */
} row;

/* The row's best: the decision where one was made, else the fastest. */
static void read_best(sparcl_tuning_db *db, const sparcl_device_info *device,
                      const sparcl_tuning_problem *key, row *w)
{
    sparcl_tuning_result r;
    int found = 0;
    if (sparcl_tuning_db_best(db, device, key, &r, &found) == SPARCL_OK && found) {
        w->best_ms = r.median_ms;
        sparcl_params_format(&r.params, w->best, sizeof w->best);
    }
}

static void tune_problem_run(sparcl_ctx *ctx, const options *o, sparcl_tuning_db *db,
                             const sparcl_device_info *device, tune_child *child,
                             const char *db_path, const char *kernel, const tune_problem *prob,
                             progress *pg, row *out, int *fatal, char *fatal_msg, size_t fsize)
{
    memset(out, 0, sizeof *out);
    snprintf(out->spec, sizeof out->spec, "%s", prob->spec);
    out->default_ms = out->best_ms = INFINITY;
    sparcl_plan_desc desc;
    sparcl_layout *layout = NULL;
    state s;
    memset(&s, 0, sizeof s);
    s.best = INFINITY;
    char err[512] = "";
    /* The family's descriptor fields first: the key is made from the
     * descriptor a plan of the family looks its row up with. */
    if (tune_problem_desc(ctx, prob, &desc, &layout) != SPARCL_OK ||
        (tune_problem_for_kernel(kernel, prob, &desc, err, sizeof err) == 0 &&
         sparcl_tuning_problem_init(ctx, &s.key, kernel, &desc, prob->pattern) != SPARCL_OK)) {
        snprintf(out->note, sizeof out->note, "skipped: %s", sparcl_ctx_errmsg(ctx));
        sparcl_layout_free(layout);
        return;
    }
    if (err[0]) {
        snprintf(out->note, sizeof out->note, "skipped: %.140s", err);
        sparcl_layout_free(layout);
        return;
    }
    sparcl_params starts[1 + TUNE_TRANSFER_SEEDS];
    sparcl_params *def = &starts[0];
    sparcl_kernel_default_params(ctx, kernel, &desc, def);
    if (sparcl_kernel_check_params(ctx, kernel, &desc, def) != SPARCL_OK) {
        /* a family that does not take the problem (attn_decode: q_len <= 16) */
        snprintf(out->note, sizeof out->note, "skipped: %.140s", sparcl_ctx_errmsg(ctx));
        sparcl_layout_free(layout);
        return;
    }
    int n_starts = 1;
    sparcl_param_space space;
    if (tune_space(ctx, kernel, o->rules, o->n_rules, &space, err, sizeof err) != 0) {
        snprintf(out->note, sizeof out->note, "skipped: %.140s", err);
        sparcl_layout_free(layout);
        return;
    }
    if (o->transfer) {
        char from[256];
        int k =
            tune_transfer_seeds(ctx, db_path, device, &s.key, 1, kernel, &desc, &space, starts + 1,
                                TUNE_TRANSFER_SEEDS, from, sizeof from, err, sizeof err);
        if (k < 0)
            printf("transfer: %s\n", err);
        else if (k > 0)
            printf("transfer: %d seeds from %s\n", k, from);
        n_starts += k > 0 ? k : 0;
    }
    s.o = o;
    s.db = db;
    s.device = device;
    s.prob = prob;
    s.child = child;
    s.pg = pg;
    tune_search_stats stats;
    if (tune_search(ctx, kernel, &desc, &space, starts, n_starts, o->strategy, &o->budget, o->seed,
                    evaluate, &s, &stats, err, sizeof err) != 0)
        snprintf(out->note, sizeof out->note, "skipped: %s", err);
    if (pg->tty)
        fprintf(stderr, "\r\033[K");
    char list[256] = "(none)";
    if (isfinite(s.best))
        sparcl_params_format(&s.best_params, list, sizeof list);
    printf("search: %d evaluations of %d valid candidates, best %.3f ms: %s\n", s.evals,
           stats.valid, s.best, list);
    snprintf(out->decision, sizeof out->decision, "-");
    sparcl_params extra[MAX_EXTRA_FINALISTS];
    int n_extra = 0;
    if (!s.fatal && !interrupted && isfinite(s.best) && o->rounds > 0 && o->finalists > 0) {
        tune_look_job look = {.child = child,
                              .kernel = kernel,
                              .spec = prob->spec,
                              .max_runs = o->max_runs,
                              .timeout = o->timeout,
                              .within = o->second_look};
        tune_second_look(&s.looks, &look, &interrupted);
        n_extra = tune_looks_finalists(&s.looks, o->finalists,
                                       tune_on_cpu(device) ? TUNE_CPU_FINALISTS : 0, extra,
                                       MAX_EXTRA_FINALISTS);
    }
    tune_looks_free(&s.looks);
    if (!s.fatal && !interrupted && isfinite(s.best)) {
        sparcl_params challenger;
        tune_finalist_job job = {.db = db,
                                 .device = device,
                                 .key = &s.key,
                                 .spec = prob->spec,
                                 .def = def,
                                 .child = child,
                                 .count = o->finalists,
                                 .rounds = o->rounds,
                                 .max_runs = o->max_runs,
                                 .timeout = o->timeout,
                                 .chosen = &out->chosen,
                                 .rounds_of_chosen = &out->rounds,
                                 .min_gain = o->min_gain,
                                 .extra = extra,
                                 .n_extra = n_extra,
                                 .challenger = &challenger,
                                 .close_call = o->close_call};
        int rc = tune_finalists(&job, &interrupted, out->decision, sizeof out->decision);
        if (rc == 0 && out->chosen.count == 0 && challenger.count > 0) {
            out->close = 1;
            out->chosen = challenger;
        }
        if (rc == 0 && out->chosen.count > 0) {
            out->replaced = !out->close;
            out->decided_at = now();
            out->kernel = kernel;
            out->prob = prob;
            out->key = s.key;
            out->def = *def;
        }
        if (rc < 0) {
            s.fatal = 1;
            snprintf(s.fatal_msg, sizeof s.fatal_msg, "%s", sparcl_ctx_errmsg(NULL));
        }
    }
    if (s.fatal_msg[0] && !s.fatal)
        snprintf(out->note, sizeof out->note, "%.150s", s.fatal_msg);
    if (s.fatal) {
        *fatal = 1;
        snprintf(fatal_msg, fsize, "%s", s.fatal_msg);
    }
    out->evals = s.evals;
    out->stored = s.stored;
    sparcl_tuning_result r;
    int found = 0;
    if (!s.fatal && sparcl_tuning_db_find(db, device, &s.key, def, &r, &found) == SPARCL_OK &&
        found && r.status == SPARCL_TUNING_OK)
        out->default_ms = r.median_ms;
    if (!s.fatal)
        read_best(db, device, &s.key, out);
    sparcl_layout_free(layout);
}

/* The confirmation of row w's choice against its default (timed: its
 * rounds, once timed with tune_confirm_round; NULL while timing them). */
static tune_finalist_job confirm_job(const options *o, sparcl_tuning_db *db,
                                     const sparcl_device_info *device, tune_child *child, row *w,
                                     const tune_timed *timed)
{
    tune_finalist_job job = {.db = db,
                             .device = device,
                             .key = &w->key,
                             .spec = w->prob->spec,
                             .def = &w->def,
                             .child = child,
                             .count = 1,
                             .rounds = o->rounds,
                             .max_runs = o->max_runs,
                             .timeout = o->timeout,
                             .only = &w->chosen,
                             .rounds_of_chosen = &w->rounds,
                             .min_gain = o->min_gain,
                             .timed = timed};
    return job;
}

/* The confirmation pass: each decision that replaced the default is timed
 * again against the default, at least o->confirm_after seconds after it
 * was made (tune_finalists.c says why), and the default comes back unless
 * the choice won three quarters of both sets of rounds together.  So is
 * each close call's challenger (a decision that kept the default while a
 * finalist's median gain came within TUNE_CLOSE_CALL of the minimum gain),
 * which replaces the default if both sets of rounds together say so: two
 * quick runs 10 minutes apart chose attn_bwd's SPLIT=1 for the same
 * problems in one and kept the default in the other at 1.04-1.05x, where
 * it was 1.10-1.13x when re-timed, and one run's rounds of attn_entmax
 * window n=2048 all fell in a slow state of the machine in which its
 * TOPK=64 tiles, 1.12x the default otherwise, were not faster.  The
 * rounds go round the problems (round 1 of every choice, then round 2...),
 * so that each choice's rounds are spread over the whole pass: a state of
 * the machine that lasts seconds falls on one or two of them, not on all
 * of one problem's (one confirmation whose rounds ran back to back met
 * such a state in every one, and the choice, 1.11x faster in its
 * decision's rounds, used 1.25x more CPU time than the default in them). */
static void confirm_decisions(const options *o, sparcl_tuning_db *db,
                              const sparcl_device_info *device, tune_child *child, row *rows, int n,
                              int *fatal, char *fatal_msg, size_t fsize)
{
    int todo = 0;
    double ready = 0;
    for (int i = 0; i < n; ++i)
        if (rows[i].replaced || rows[i].close) {
            ++todo;
            ready = fmax(ready, rows[i].decided_at + o->confirm_after);
        }
    if (o->confirm_after < 0 || !todo)
        return;
    tune_timed *timed = calloc((size_t)n, sizeof *timed);
    if (!timed) {
        *fatal = 1;
        snprintf(fatal_msg, fsize, "out of memory for the confirmations of %d choices", todo);
        return;
    }
    const double wait = ready - now();
    char waiting[96] = "";
    if (wait > 0)
        snprintf(waiting, sizeof waiting, " (waiting %.0f s: %.0f s after the last decision)", wait,
                 o->confirm_after);
    int closes = 0;
    for (int i = 0; i < n; ++i)
        closes += rows[i].close;
    char what[96] = "";
    const int choices = todo - closes;
    if (choices)
        snprintf(what, sizeof what, "%d choice%s%s", choices, choices == 1 ? "" : "s",
                 closes ? " and " : "");
    if (closes)
        snprintf(what + strlen(what), sizeof what - strlen(what), "%d close call%s", closes,
                 closes == 1 ? "" : "s");
    printf("== confirming %s: %d rounds, each round going through all of them%s\n", what, o->rounds,
           waiting);
    fflush(stdout);
    while (!interrupted && ready > now()) {
        const double left = ready - now();
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        nanosleep(&ts, NULL); /* a signal ends it early; the loop looks again */
    }
    for (int r = 0; r < o->rounds && !*fatal && !interrupted; ++r) {
        for (int i = 0; i < n && !*fatal && !interrupted; ++i) {
            row *w = &rows[i];
            if (!w->replaced && !w->close)
                continue;
            tune_finalist_job job = confirm_job(o, db, device, child, w, NULL);
            if (tune_confirm_round(&job, &timed[i], &interrupted) < 0) {
                *fatal = 1;
                snprintf(fatal_msg, fsize, "cannot set up %s %s for its confirmation", w->kernel,
                         w->prob->spec);
            }
        }
        if (!*fatal && !interrupted) {
            printf("confirmation round %d/%d done\n", r + 1, o->rounds);
            fflush(stdout);
        }
    }
    for (int i = 0, done = 0; i < n && !*fatal && !interrupted; ++i) {
        row *w = &rows[i];
        if (!w->replaced && !w->close)
            continue;
        printf("== confirming %d/%d: %s %s%s\n", ++done, todo, w->kernel, w->prob->spec,
               w->close ? " (a close call)" : "");
        tune_finalist_job job = confirm_job(o, db, device, child, w, &timed[i]);
        char summary[96];
        int rc = tune_finalists(&job, &interrupted, summary, sizeof summary);
        if (rc < 0) {
            *fatal = 1;
            snprintf(fatal_msg, fsize, "%s", sparcl_ctx_errmsg(NULL));
        } else if (rc == 0 && strcmp(summary, "-") != 0) {
            const int kept = !strncmp(summary, "default kept", 12);
            snprintf(w->decision, sizeof w->decision, "%s%.70s",
                     w->close ? (kept ? "close call: " : "chosen on confirmation ")
                              : (kept ? "not confirmed: " : "confirmed "),
                     summary);
            read_best(db, device, &w->key, w);
        }
    }
    free(timed);
}

static void print_table(const row *rows, int n)
{
    printf("\n%-44s %6s %6s %11s %9s %8s  %s\n", "problem", "evals", "stored", "default_ms",
           "best_ms", "speedup", "best parameters");
    printf("(speedup: over the default re-timed in interleaved rounds, median [lowest-highest "
           "round], where the finalists were re-timed)\n");
    for (int i = 0; i < n; ++i) {
        const row *r = &rows[i];
        char d[32] = "-", b[32] = "-", sp[96] = "-";
        if (isfinite(r->default_ms))
            snprintf(d, sizeof d, "%.3f", r->default_ms);
        if (isfinite(r->best_ms))
            snprintf(b, sizeof b, "%.3f", r->best_ms);
        if (isfinite(r->default_ms) && isfinite(r->best_ms))
            snprintf(sp, sizeof sp, "%.2fx", r->default_ms / r->best_ms);
        if (strcmp(r->decision, "-") != 0 && r->decision[0])
            snprintf(sp, sizeof sp, "%s", r->decision);
        printf("%-44s %6d %6d %11s %9s %8s  %s%s%s\n", r->spec, r->evals, r->stored, d, b, sp,
               r->best[0] ? r->best : "(none)", r->note[0] ? "  " : "", r->note);
    }
}

/* Kernel families the worker knows how to run. */
static int can_evaluate(const char *kernel)
{
    return !strcmp(kernel, "attn_fwd") || !strcmp(kernel, "attn_entmax") ||
           !strcmp(kernel, "attn_decode") || !strcmp(kernel, "clblast_xgemm") ||
           !strcmp(kernel, "attn_lsh") || !strcmp(kernel, "attn_span") ||
           tune_kernel_is_backward(kernel);
}

/* The kernel families to tune (--kernel, or all the worker can run). */
static int tuned_kernels(const options *o, const char **kernels, int max)
{
    int n = 0;
    for (int k = 0; k < sparcl_kernel_count() && n < max; ++k) {
        const char *name = sparcl_kernel_name(k);
        if (o->kernel && strcmp(o->kernel, name))
            continue;
        if (!can_evaluate(name)) {
            printf("note: kernel family %s has no evaluator in sparcl-tune yet; skipped\n", name);
            continue;
        }
        /* CLBlast compiles every candidate itself, for minutes on POCL: only
         * on request. */
        if (!o->kernel && !strcmp(name, "clblast_xgemm"))
            continue;
        kernels[n++] = name;
    }
    if (n == 0)
        fprintf(stderr, "sparcl-tune: warning: no kernel family to tune\n");
    return n;
}

/* Checks the --fix/--space rules against the families' spaces before any
 * work: every value must be a choice, every name some family's. */
static int check_rules(const options *o, sparcl_ctx *ctx, const char *const *kernels, int n)
{
    for (int r = 0; r < o->n_rules; ++r) {
        int used = 0;
        for (int k = 0; k < n; ++k) {
            sparcl_param_space space;
            char err[512];
            if (tune_space(ctx, kernels[k], &o->rules[r], 1, &space, err, sizeof err) != 0) {
                fprintf(stderr, "sparcl-tune: error: %s\n", err);
                return -1;
            }
            size_t len = strcspn(o->rules[r], "=");
            for (int i = 0; i < space.count; ++i)
                used |= strlen(space.item[i].name) == len &&
                        !strncmp(space.item[i].name, o->rules[r], len);
        }
        if (!used && n > 0) {
            fprintf(stderr,
                    "sparcl-tune: error: \"%s\" names no parameter of the tuned "
                    "kernel families\n",
                    o->rules[r]);
            return -1;
        }
    }
    return 0;
}

/* --replay: every strategy run is simulated on stored rows; no worker. */
static int run_replay(const options *o, sparcl_ctx *ctx, const char *path,
                      const tune_problem *problems, int n)
{
    tune_replay_options r = {.db_path = path,
                             .strategy = o->strategy,
                             .budget = o->budget,
                             .seed = o->seed,
                             .seeds = o->seeds,
                             .transfer = o->transfer,
                             .device = o->replay_device};
    const char *kernels[16];
    int n_kernels = tuned_kernels(o, kernels, 16), failed = 0;
    if (check_rules(o, ctx, kernels, n_kernels) != 0)
        return 2;
    for (int k = 0; k < n_kernels; ++k)
        for (int i = 0; i < n; ++i) {
            char err[512] = "";
            sparcl_param_space space;
            if (tune_space(ctx, kernels[k], o->rules, o->n_rules, &space, err, sizeof err) != 0 ||
                tune_replay_problem(ctx, kernels[k], &problems[i], &space, &r, err, sizeof err) !=
                    0) {
                fprintf(stderr, "sparcl-tune: replay: %s\n", err);
                failed = 1;
            }
        }
    return failed;
}

static int run_tuning(const options *o, const char *exe)
{
    char err[512] = "";
    tune_problem *problems = NULL;
    int n = tune_problems_parse(o->problems, &problems, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "sparcl-tune: error: %s\n", err);
        return 2;
    }
    for (int i = 0; i < n; ++i)
        tune_problem_default_dtype(&problems[i], o->dtype);
    sparcl_ctx *ctx = NULL;
    if (sparcl_ctx_init_device(&ctx, o->device) != SPARCL_OK) {
        fprintf(stderr, "sparcl-tune: error: %s\n", sparcl_ctx_errmsg(NULL));
        free(problems);
        return 1;
    }
    tool_log_install(ctx, "sparcl-tune");
    char path[1024];
    if (o->db)
        snprintf(path, sizeof path, "%s", o->db);
    else if (sparcl_tuning_db_default_path(path, sizeof path) != SPARCL_OK) {
        fprintf(stderr, "sparcl-tune: error: %s (use --db)\n", sparcl_ctx_errmsg(NULL));
        sparcl_ctx_free(ctx);
        free(problems);
        return 1;
    }
    if (o->replay) {
        int failed = run_replay(o, ctx, path, problems, n);
        sparcl_ctx_free(ctx);
        free(problems);
        return failed;
    }
    sparcl_tuning_db *db = NULL;
    if (sparcl_tuning_db_init(NULL, &db, path, SPARCL_TUNING_DB_WRITE) != SPARCL_OK) {
        fprintf(stderr, "sparcl-tune: error: %s\n", sparcl_ctx_errmsg(NULL));
        sparcl_ctx_free(ctx);
        free(problems);
        return 1;
    }
    sparcl_device_info device;
    sparcl_ctx_device_info(ctx, &device);
    char limit[48] = "no evaluation limit";
    if (o->budget.max_evals > 0)
        snprintf(limit, sizeof limit, "up to %d evaluations", o->budget.max_evals);
    printf("device:   %s\ndatabase: %s\nstrategy: %s%s, %s, %.0f s and %d "
           "without improvement per problem\n",
           sparcl_ctx_device_string(ctx), path, tune_strategy_name(o->strategy),
           o->transfer ? " with transfer" : "", limit, o->budget.max_seconds, o->budget.stagnation);
    fflush(stdout);

    const char *kernels[16];
    int n_kernels = tuned_kernels(o, kernels, 16);
    if (check_rules(o, ctx, kernels, n_kernels) != 0) {
        sparcl_tuning_db_free(db);
        sparcl_ctx_free(ctx);
        free(problems);
        return 2;
    }

    tune_child *child = tune_child_new(exe, o->device);
    row *rows = calloc((size_t)(n * (n_kernels ? n_kernels : 1)), sizeof *rows);
    progress pg = {isatty(STDERR_FILENO) && isatty(STDOUT_FILENO),
                   0,
                   n * n_kernels,
                   o->budget.max_evals,
                   now(),
                   0,
                   0};
    int n_rows = 0, fatal = 0;
    char fatal_msg[600] = "";
    for (int k = 0; k < n_kernels && !fatal && !interrupted; ++k)
        for (int i = 0; i < n && !fatal && !interrupted; ++i) {
            pg.problem = n_rows + 1;
            if (!pg.tty) {
                printf("== problem %d/%d: %s %s\n", pg.problem, pg.n_problems, kernels[k],
                       problems[i].spec);
                fflush(stdout);
            }
            tune_problem_run(ctx, o, db, &device, child, path, kernels[k], &problems[i], &pg,
                             &rows[n_rows++], &fatal, fatal_msg, sizeof fatal_msg);
        }
    if (!fatal && !interrupted)
        confirm_decisions(o, db, &device, child, rows, n_rows, &fatal, fatal_msg,
                          sizeof fatal_msg);
    tune_child_free(child);
    print_table(rows, n_rows);
    /* Every problem skipped with a reason (no device in the worker, say):
     * nothing was tuned, and the exit status says so. */
    int tuned = 0;
    for (int i = 0; i < n_rows; ++i)
        tuned += rows[i].evals > 0 || rows[i].stored > 0 || !rows[i].note[0];
    if (n_rows > 0 && !tuned && !fatal && !interrupted) {
        fatal = 1;
        snprintf(fatal_msg, sizeof fatal_msg, "no problem could be tuned; the first: %.500s",
                 rows[0].note);
    }
    char wall[32];
    fmt_time(now() - pg.t0, wall, sizeof wall);
    printf("\n%d new evaluations in %s\n", pg.new_evals, wall);
    free(rows);
    free(problems);
    sparcl_tuning_db_free(db);
    sparcl_ctx_free(ctx);
    if (fatal) {
        fprintf(stderr, "sparcl-tune: error: %s\n", fatal_msg);
        return 1;
    }
    if (interrupted) {
        printf("interrupted: every completed evaluation is in %s; run again to resume\n", path);
        return 130;
    }
    return 0;
}

static int transfer(const options *o)
{
    char path[1024];
    if (o->db)
        snprintf(path, sizeof path, "%s", o->db);
    else if (sparcl_tuning_db_default_path(path, sizeof path) != SPARCL_OK) {
        fprintf(stderr, "sparcl-tune: error: %s (use --db)\n", sparcl_ctx_errmsg(NULL));
        return 1;
    }
    sparcl_tuning_db *db = NULL;
    int64_t rows = 0;
    sparcl_status st = sparcl_tuning_db_init(NULL, &db, path, SPARCL_TUNING_DB_WRITE);
    if (st == SPARCL_OK && o->import_path)
        st = sparcl_tuning_db_import(db, o->import_path, &rows);
    if (st == SPARCL_OK && o->export_path)
        st = sparcl_tuning_db_export(db, o->export_path);
    if (st != SPARCL_OK)
        fprintf(stderr, "sparcl-tune: error: %s\n", sparcl_ctx_errmsg(NULL));
    else if (o->import_path)
        printf("imported %lld rows from %s into %s\n", (long long)rows, o->import_path, path);
    if (st == SPARCL_OK && o->export_path)
        printf("exported %s to %s\n", path, o->export_path);
    if (st == SPARCL_OK && o->report_path) {
        char err[512];
        if (tune_report_svg(path, o->report_path, err, sizeof err) != 0) {
            fprintf(stderr, "sparcl-tune: error: %s\n", err);
            st = SPARCL_ERR_DATABASE;
        } else {
            printf("drew %s into %s\n", path, o->report_path);
        }
    }
    sparcl_tuning_db_free(db);
    return st == SPARCL_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    tune_child_keep_environment();
    options o;
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    if (o.worker)
        return tune_worker_main(o.device);
    if (o.list_devices) {
        char buf[8192];
        if (sparcl_device_list(buf, sizeof buf, NULL) != SPARCL_OK) {
            fprintf(stderr, "sparcl-tune: error: %s\n", sparcl_ctx_errmsg(NULL));
            return 1;
        }
        fputs(buf, stdout);
        return 0;
    }
    if (o.import_path || o.export_path || o.report_path)
        return transfer(&o);
    if (o.bundle)
        return tune_build_bundle(o.device, o.bundle, o.db, o.problems, o.kernel);

    /* Ctrl-C (and TERM): finish cleanly, keeping every committed row.
     * No SA_RESTART, so the watchdog's poll() wakes up at once. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a dead worker shows as EOF, not a signal */

    char exe[1024];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0)
        exe[len] = '\0';
    else
        snprintf(exe, sizeof exe, "%s", argv[0]);
    return run_tuning(&o, exe);
}
