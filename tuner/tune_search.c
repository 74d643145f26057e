/*
 * tune_search.c -- search strategies over a kernel family's parameter space.
 *
 * The space comes from the library (sparcl_kernel_space, possibly
 * restricted by --space/--fix): names and candidate values, with validity
 * (constraints, device limits) decided by sparcl_kernel_check_params.
 * Nothing about a kernel's parameters is written here, so new parameters
 * and new families are searched as soon as the library declares them.
 * Candidates are scored through an evaluate callback, the same for live
 * tuning and for replay against stored rows.  All strategies begin with
 * the given starts (the built-in default first: the speedup reference) and
 * draw from a seeded generator, so a resumed run replays the same choices
 * and finds them in the database, and a replay follows the live run.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tune.h"

/* More candidates than this and the space must be sampled. */
#define SPACE_CAP 1000000L

typedef struct space {
    sparcl_param_space def;
    int64_t *codes; /* valid candidates as mixed-radix codes, ascending */
    int n;
    double *cost; /* per valid candidate: ms, INFINITY failed, NAN not yet */
} space;

static void decode(const space *s, int64_t code, sparcl_params *p)
{
    sparcl_params_clear(p);
    for (int i = s->def.count - 1; i >= 0; --i) {
        int k = s->def.item[i].n_choices;
        sparcl_params_set(p, s->def.item[i].name, s->def.item[i].choices[code % k]);
        code /= k;
    }
}

/* The code of p, or -1 if a value is not a choice. */
static int64_t encode(const space *s, const sparcl_params *p)
{
    int64_t code = 0;
    for (int i = 0; i < s->def.count; ++i) {
        int32_t v;
        int k = s->def.item[i].n_choices, idx = -1;
        if (!sparcl_params_get(p, s->def.item[i].name, &v))
            return -1;
        for (int c = 0; c < k; ++c)
            if (s->def.item[i].choices[c] == v)
                idx = c;
        if (idx < 0)
            return -1;
        code = code * k + idx;
    }
    return code;
}

static int find_code(const space *s, int64_t code)
{
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (s->codes[mid] == code)
            return mid;
        if (s->codes[mid] < code)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static int build_space(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                       const sparcl_param_space *def, space *s, char *err, size_t size)
{
    memset(s, 0, sizeof *s);
    s->def = *def;
    int64_t total = 1;
    for (int i = 0; i < s->def.count; ++i)
        if ((total *= s->def.item[i].n_choices) > SPACE_CAP) {
            snprintf(err, size, "the %s space has more than %ld candidates", kernel, SPACE_CAP);
            return -1;
        }
    s->codes = malloc(sizeof *s->codes * (size_t)total);
    if (!s->codes) {
        snprintf(err, size, "out of memory");
        return -1;
    }
    sparcl_params p;
    for (int64_t c = 0; c < total; ++c) {
        decode(s, c, &p);
        if (sparcl_kernel_check_params(ctx, kernel, desc, &p) == SPARCL_OK)
            s->codes[s->n++] = c;
    }
    s->cost = malloc(sizeof *s->cost * (size_t)(s->n ? s->n : 1));
    if (!s->cost) {
        snprintf(err, size, "out of memory");
        return -1;
    }
    for (int i = 0; i < s->n; ++i)
        s->cost[i] = NAN;
    return 0;
}

static void free_space(space *s)
{
    free(s->codes);
    free(s->cost);
}

/* xorshift64*: small, seeded, the same on every machine. */
static uint64_t next(uint64_t *st)
{
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return *st * 2685821657736338717ull;
}
static double uniform(uint64_t *st)
{
    return (double)(next(st) >> 11) / 9007199254740992.0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct run {
    space *s;
    const tune_budget *b;
    tune_eval_fn eval;
    void *user;
    tune_search_stats *stats;
    double t0;
    int since_best;
    int best; /* index of the best candidate so far, -1 none */
} run;

/* 0 while the budget allows another evaluation. */
static int exhausted(const run *r)
{
    const tune_budget *b = r->b;
    return r->stats->stopped || (b->max_evals > 0 && r->stats->evals >= b->max_evals) ||
           (b->max_seconds > 0 && now() - r->t0 >= b->max_seconds) ||
           (b->stagnation > 0 && r->since_best >= b->stagnation) || r->stats->evals >= r->s->n;
}

/* The cost of valid candidate i, evaluating it if this run has not yet. */
static double cost(run *r, int i)
{
    if (!isnan(r->s->cost[i]))
        return r->s->cost[i];
    sparcl_params p;
    decode(r->s, r->s->codes[i], &p);
    int stop = 0;
    double c = r->eval(r->user, &p, &stop);
    if (stop) {
        r->stats->stopped = 1;
        return INFINITY;
    }
    r->s->cost[i] = c;
    ++r->stats->evals;
    if (c < r->stats->best_ms) {
        r->stats->best_ms = c;
        r->stats->best = p;
        r->best = i;
        r->since_best = 0;
    } else {
        ++r->since_best;
    }
    return c;
}

/* Evaluates the starts in order; returns the best of them (-1 if none
 * succeeded).  idx receives their indices in the valid space (-1 where a
 * start is not in it). */
static int eval_starts(run *r, const int *idx, int n)
{
    int best = -1;
    for (int k = 0; k < n && !exhausted(r); ++k) {
        if (idx[k] < 0)
            continue;
        double c = cost(r, idx[k]);
        if (isfinite(c) && (best < 0 || c < r->s->cost[best]))
            best = idx[k];
    }
    return best;
}

/* Exhaustive and random: every valid candidate in an order. */
static void sweep(run *r, const int *starts, int n_starts, int shuffle, uint64_t *rng)
{
    int n = r->s->n;
    int *order = malloc(sizeof *order * (size_t)n);
    if (!order)
        return;
    for (int i = 0; i < n; ++i)
        order[i] = i;
    if (shuffle)
        for (int i = n - 1; i > 0; --i) {
            int j = (int)(next(rng) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    eval_starts(r, starts, n_starts);
    for (int i = 0; i < n && !exhausted(r); ++i)
        cost(r, order[i]);
    free(order);
}

static void digits_of(const space *s, int i, int *digits)
{
    int64_t code = s->codes[i];
    for (int d = s->def.count - 1; d >= 0; --d) {
        digits[d] = (int)(code % s->def.item[d].n_choices);
        code /= s->def.item[d].n_choices;
    }
}

/* The valid candidate with these digits, or -1. */
static int index_of(const space *s, const int *digits)
{
    int64_t code = 0;
    for (int e = 0; e < s->def.count; ++e)
        code = code * s->def.item[e].n_choices + digits[e];
    return find_code(s, code);
}

/* A valid neighbour of candidate i: one parameter moved to an adjacent
 * value, or (one time in five) to any value. */
static int neighbour(const space *s, int i, uint64_t *rng)
{
    for (int tries = 0; tries < 200; ++tries) {
        int digits[SPARCL_PARAMS_MAX];
        digits_of(s, i, digits);
        int d = (int)(next(rng) % (uint64_t)s->def.count);
        int k = s->def.item[d].n_choices;
        if (k < 2)
            continue;
        if (uniform(rng) < 0.2)
            digits[d] = (int)(next(rng) % (uint64_t)k);
        else
            digits[d] += uniform(rng) < 0.5 ? -1 : 1;
        if (digits[d] < 0 || digits[d] >= k)
            continue;
        int j = index_of(s, digits);
        if (j >= 0 && j != i)
            return j;
    }
    return (int)(next(rng) % (uint64_t)s->n);
}

/* Simulated annealing on log(time), from the best start: a slower
 * neighbour is accepted with probability exp(-(log t' - log t) / T), T
 * falling geometrically from 0.3 to 0.01 over the evaluation budget.
 * Revisits cost nothing; after many in a row it jumps to an unvisited
 * candidate. */
static void anneal(run *r, const int *starts, int n_starts, uint64_t *rng)
{
    space *s = r->s;
    int cur = eval_starts(r, starts, n_starts);
    if (cur < 0)
        cur = n_starts > 0 && starts[0] >= 0 ? starts[0] : (int)(next(rng) % (uint64_t)s->n);
    double c_cur = cost(r, cur);
    int revisits = 0;
    const double t0 = 0.3, t1 = 0.01;
    int budget = r->b->max_evals > 0 ? r->b->max_evals : s->n;
    while (!exhausted(r)) {
        double frac = (double)r->stats->evals / budget;
        double temp = t0 * pow(t1 / t0, frac > 1 ? 1 : frac);
        int j = neighbour(s, cur, rng);
        if (!isnan(s->cost[j]) && ++revisits > 50) {
            int k = (int)(next(rng) % (uint64_t)s->n);
            for (int step = 0; step < s->n && !isnan(s->cost[k]); ++step)
                k = (k + 1) % s->n;
            j = k;
        }
        if (isnan(s->cost[j]))
            revisits = 0;
        double c = cost(r, j);
        if (r->stats->stopped)
            break;
        if (isinf(c))
            continue;
        if (isinf(c_cur) || c < c_cur || uniform(rng) < exp(-(log(c) - log(c_cur)) / temp)) {
            cur = j;
            c_cur = c;
        }
    }
}

/* The parameter in which candidates i and j differ (they differ in one). */
static int changed_param(const space *s, int i, int j)
{
    int a[SPARCL_PARAMS_MAX], b[SPARCL_PARAMS_MAX];
    digits_of(s, i, a);
    digits_of(s, j, b);
    for (int d = 0; d < s->def.count; ++d)
        if (a[d] != b[d])
            return d;
    return -1;
}

/* Pairs: the PAIR_TOP fastest of a step's adjacent moves (those within
 * PAIR_WITHIN of the centre's time) combined two at a time, fastest pair
 * first.  Two parameters can pay off only together, and near-equal moves
 * are ranked by the noise, so the fastest one differs from run to run
 * where the few fastest are the same few.  attn_bwd bigbird n=2048 in two
 * quick runs (tuner/stability-report.md, 21st measurement): the three
 * fastest moves from the default were SPLIT=1, EXP=1 and BLOCK_M=8 in
 * both, each within 2% of it when re-timed; one run stepped to BLOCK_M=8
 * and found BLOCK_M=8 EXP=1 (1.07x the default re-timed), the other
 * stepped to SPLIT=1 and never timed it. */
#define PAIR_TOP 3
#define PAIR_WITHIN 1.25

/* Times the pairs of centre cur's fastest adjacent moves (moves[0..n-1]);
 * *step and *c_step hold the fastest candidate so far and are updated. */
static void pair_moves(run *r, int cur, const int *moves, int n, int *step, double *c_step)
{
    space *s = r->s;
    const double c_cur = s->cost[cur];
    int top[PAIR_TOP], n_top = 0;
    for (int i = 0; i < n; ++i) {
        double c = s->cost[moves[i]];
        if (!isfinite(c) || !(c <= PAIR_WITHIN * c_cur))
            continue;
        if (n_top < PAIR_TOP)
            top[n_top++] = moves[i];
        else if (c < s->cost[top[PAIR_TOP - 1]])
            top[PAIR_TOP - 1] = moves[i];
        else
            continue;
        for (int k = n_top - 1; k > 0 && s->cost[top[k - 1]] > s->cost[top[k]]; --k) {
            int t = top[k];
            top[k] = top[k - 1];
            top[k - 1] = t;
        }
    }
    int centre[SPARCL_PARAMS_MAX];
    digits_of(s, cur, centre);
    for (int a = 0; a < n_top; ++a)
        for (int b = a + 1; b < n_top && !exhausted(r); ++b) {
            int da = changed_param(s, cur, top[a]), db = changed_param(s, cur, top[b]);
            if (da < 0 || db < 0 || da == db)
                continue;
            int digits[SPARCL_PARAMS_MAX], tmp[SPARCL_PARAMS_MAX];
            memcpy(digits, centre, sizeof centre);
            digits_of(s, top[a], tmp);
            digits[da] = tmp[da];
            digits_of(s, top[b], tmp);
            digits[db] = tmp[db];
            int j = index_of(s, digits);
            if (j < 0)
                continue;
            double c = cost(r, j);
            if (c < *c_step) {
                *step = j;
                *c_step = c;
            }
        }
}

/* Local search from candidate `from`.  Each step times the whole adjacent
 * neighbourhood (every parameter moved one value either way, in random
 * order), then the pairs of its fastest moves (pair_moves), and moves to
 * the fastest of them if that beats the centre; only when none does are
 * the other values tried, by first improvement.  The adjacent scan makes
 * the candidates a step looks at independent of the times measured, so
 * two runs with one seed time the same neighbourhood of the default
 * however noisy the machine, and differ only where the noise reorders
 * near-equal candidates (first improvement would follow whichever
 * neighbour happened to be timed faster first).  Stops at a local optimum
 * or when the budget ends; returns the optimum reached. */
static int descend(run *r, int from, uint64_t *rng)
{
    space *s = r->s;
    int cur = from, n_moves = 0, moves[SPARCL_PARAMS_MAX * SPARCL_PARAM_CHOICES_MAX];
    double c_cur = cost(r, cur);
    for (int improved = 1; improved && !exhausted(r);) {
        improved = 0;
        int digits[SPARCL_PARAMS_MAX];
        digits_of(s, cur, digits);
        n_moves = 0;
        int n_adjacent = 0;
        for (int pass = 0; pass < 2; ++pass) {
            for (int d = 0; d < s->def.count; ++d)
                for (int v = 0; v < s->def.item[d].n_choices; ++v) {
                    int dist = abs(v - digits[d]);
                    if (dist == 0 || (pass == 0) != (dist == 1))
                        continue;
                    int saved = digits[d];
                    digits[d] = v;
                    int j = index_of(s, digits);
                    digits[d] = saved;
                    if (j >= 0)
                        moves[n_moves++] = j;
                }
            if (pass == 0)
                n_adjacent = n_moves;
        }
        for (int lo = 0, hi = n_adjacent; lo < n_moves; lo = hi, hi = n_moves)
            for (int i = hi - 1; i > lo; --i) {
                int j = lo + (int)(next(rng) % (uint64_t)(i - lo + 1)), t = moves[i];
                moves[i] = moves[j];
                moves[j] = t;
            }
        int step = -1;
        double c_step = c_cur;
        for (int i = 0; i < n_adjacent && !exhausted(r); ++i) {
            double c = cost(r, moves[i]);
            if (c < c_step) {
                step = moves[i];
                c_step = c;
            }
        }
        pair_moves(r, cur, moves, n_adjacent, &step, &c_step);
        for (int i = n_adjacent; step < 0 && i < n_moves && !exhausted(r); ++i) {
            double c = cost(r, moves[i]);
            if (c < c_cur) {
                step = moves[i];
                c_step = c;
            }
        }
        if (step >= 0) {
            cur = step;
            c_cur = c_step;
            improved = 1;
        }
    }
    return cur;
}

/* A random valid candidate `strength` parameter changes away from i (the
 * kick between basins), or -1. */
static int perturb(const space *s, int i, int strength, uint64_t *rng)
{
    for (int tries = 0; tries < 200; ++tries) {
        int digits[SPARCL_PARAMS_MAX];
        digits_of(s, i, digits);
        for (int m = 0; m < strength; ++m) {
            int d = (int)(next(rng) % (uint64_t)s->def.count);
            digits[d] = (int)(next(rng) % (uint64_t)s->def.item[d].n_choices);
        }
        int j = index_of(s, digits);
        if (j >= 0 && j != i)
            return j;
    }
    return -1;
}

/* Basin hopping: a local search from every start in order of their time
 * (the default, the nearest tuned problems' best rows), then, while budget
 * remains, local searches from kicks of 2-3 random parameter changes away
 * from the best candidate found so far.  Known starting points and the
 * best basin get the budget; random sampling gets none. */
static void basin(run *r, const int *starts, int n_starts, uint64_t *rng)
{
    space *s = r->s;
    eval_starts(r, starts, n_starts);
    int order[64], n = 0;
    for (int k = 0; k < n_starts && n < 64; ++k)
        if (starts[k] >= 0 && isfinite(s->cost[starts[k]]))
            order[n++] = starts[k];
    for (int i = 1; i < n; ++i) /* insertion sort by time */
        for (int j = i; j > 0 && s->cost[order[j]] < s->cost[order[j - 1]]; --j) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int k = 0; k < n && !exhausted(r); ++k)
        descend(r, order[k], rng);
    if (n == 0 && !exhausted(r))
        descend(r, (int)(next(rng) % (uint64_t)s->n), rng);
    while (!exhausted(r)) {
        int centre = r->best >= 0 ? r->best : (int)(next(rng) % (uint64_t)s->n);
        int j = perturb(s, centre, 2 + (int)(next(rng) % 2), rng);
        if (j < 0)
            j = (int)(next(rng) % (uint64_t)s->n);
        int before = r->stats->evals;
        descend(r, j, rng);
        if (r->stats->evals == before) { /* a known basin: jump to an unvisited candidate */
            int k = (int)(next(rng) % (uint64_t)s->n);
            for (int step = 0; step < s->n && !isnan(s->cost[k]); ++step)
                k = (k + 1) % s->n;
            cost(r, k);
        }
    }
}

static const char *const strategy_names[] = {"exhaustive", "random", "anneal", "basin"};

int tune_strategy_parse(const char *name, tune_strategy *out)
{
    for (int i = 0; i < 4; ++i)
        if (!strcmp(name, strategy_names[i])) {
            *out = (tune_strategy)i;
            return 0;
        }
    return -1;
}

const char *tune_strategy_name(tune_strategy strategy)
{
    return (unsigned)strategy < 4 ? strategy_names[strategy] : "unknown";
}

int tune_search(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                const sparcl_param_space *def, const sparcl_params *starts, int n_starts,
                tune_strategy strategy, const tune_budget *budget, unsigned seed, tune_eval_fn eval,
                void *user, tune_search_stats *stats, char *err, size_t size)
{
    memset(stats, 0, sizeof *stats);
    stats->best_ms = INFINITY;
    space s;
    if (build_space(ctx, kernel, desc, def, &s, err, size) != 0) {
        free_space(&s);
        return -1;
    }
    stats->valid = s.n;
    if (s.n == 0) {
        snprintf(err, size, "no valid %s parameters for this problem on this device", kernel);
        free_space(&s);
        return -1;
    }
    int idx[64], n_idx = 0;
    for (int k = 0; k < n_starts && n_idx < 64; ++k) {
        int64_t code = encode(&s, &starts[k]);
        idx[n_idx++] = code >= 0 ? find_code(&s, code) : -1;
    }
    run r = {&s, budget, eval, user, stats, now(), 0, -1};
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed * 0xD1B54A32D192ED03ull);
    if (!rng)
        rng = 1;
    switch (strategy) {
    case TUNE_EXHAUSTIVE: sweep(&r, idx, n_idx, 0, &rng); break;
    case TUNE_RANDOM: sweep(&r, idx, n_idx, 1, &rng); break;
    case TUNE_ANNEAL: anneal(&r, idx, n_idx, &rng); break;
    case TUNE_BASIN: basin(&r, idx, n_idx, &rng); break;
    }
    free_space(&s);
    return 0;
}
