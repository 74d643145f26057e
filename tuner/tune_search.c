/*
 * tune_search.c -- search strategies over a kernel family's parameter space.
 *
 * The space comes from the library (sparcl_kernel_space): names and
 * candidate values, with validity (constraints, device limits) decided by
 * sparcl_kernel_check_params.  Nothing about a kernel's parameters is
 * written here, so new parameters and new families are searched as soon as
 * the library declares them.  All strategies start with the built-in
 * default (the speedup reference) and draw from a seeded generator, so a
 * resumed run replays the same choices and finds them in the database.
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
    double *cost;   /* per valid candidate: ms, INFINITY failed, NAN not yet */
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

/* 1 if every parameter pinned in `fixed` has that value in p. */
static int agrees(const sparcl_params *fixed, const sparcl_params *p)
{
    for (int i = 0; fixed && i < fixed->count; ++i) {
        int32_t v;
        if (sparcl_params_get(p, fixed->item[i].name, &v) && v != fixed->item[i].value)
            return 0;
    }
    return 1;
}

static int build_space(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                       const sparcl_params *fixed, space *s, char *err, size_t size)
{
    memset(s, 0, sizeof *s);
    if (sparcl_kernel_space(ctx, kernel, &s->def) != SPARCL_OK) {
        snprintf(err, size, "%s", sparcl_ctx_errmsg(ctx));
        return -1;
    }
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
        if (agrees(fixed, &p) && sparcl_kernel_check_params(ctx, kernel, desc, &p) == SPARCL_OK)
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
static double uniform(uint64_t *st) { return (double)(next(st) >> 11) / 9007199254740992.0; }

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
} run;

/* 0 while the budget allows another evaluation. */
static int exhausted(const run *r)
{
    const tune_budget *b = r->b;
    return r->stats->stopped || (b->max_evals > 0 && r->stats->evals >= b->max_evals) ||
           (b->max_seconds > 0 && now() - r->t0 >= b->max_seconds) ||
           (b->stagnation > 0 && r->since_best >= b->stagnation);
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
        r->since_best = 0;
    } else {
        ++r->since_best;
    }
    return c;
}

/* Exhaustive and random: every valid candidate in an order. */
static void sweep(run *r, int start, int shuffle, uint64_t *rng)
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
    if (start >= 0)
        cost(r, start);
    for (int i = 0; i < n && !exhausted(r); ++i)
        cost(r, order[i]);
    free(order);
}

/* A valid neighbour of candidate i: one parameter moved to an adjacent
 * value, or (one time in five) to any value. */
static int neighbour(const space *s, int i, uint64_t *rng)
{
    for (int tries = 0; tries < 200; ++tries) {
        int64_t code = s->codes[i];
        int digits[SPARCL_PARAMS_MAX];
        for (int d = s->def.count - 1; d >= 0; --d) {
            digits[d] = (int)(code % s->def.item[d].n_choices);
            code /= s->def.item[d].n_choices;
        }
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
        code = 0;
        for (int e = 0; e < s->def.count; ++e)
            code = code * s->def.item[e].n_choices + digits[e];
        int j = find_code(s, code);
        if (j >= 0 && j != i)
            return j;
    }
    return (int)(next(rng) % (uint64_t)s->n);
}

/* Simulated annealing on log(time): a slower neighbour is accepted with
 * probability exp(-(log t' - log t) / T), T falling geometrically from
 * 0.3 to 0.01 over the evaluation budget.  Revisits cost nothing; after
 * many in a row it jumps to an unvisited candidate. */
static void anneal(run *r, int start, uint64_t *rng)
{
    space *s = r->s;
    int cur = start >= 0 ? start : (int)(next(rng) % (uint64_t)s->n);
    double c_cur = cost(r, cur);
    int revisits = 0;
    const double t0 = 0.3, t1 = 0.01;
    int budget = r->b->max_evals > 0 ? r->b->max_evals : s->n;
    while (!exhausted(r) && r->stats->evals < s->n) {
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

int tune_search(sparcl_ctx *ctx, const char *kernel, const sparcl_plan_desc *desc,
                const sparcl_params *fixed, const sparcl_params *start, tune_strategy strategy, const tune_budget *budget,
                unsigned seed, tune_eval_fn eval, void *user, tune_search_stats *stats,
                char *err, size_t size)
{
    memset(stats, 0, sizeof *stats);
    stats->best_ms = INFINITY;
    space s;
    if (build_space(ctx, kernel, desc, fixed, &s, err, size) != 0) {
        free_space(&s);
        return -1;
    }
    stats->valid = s.n;
    if (s.n == 0) {
        snprintf(err, size, "no valid %s parameters for this problem on this device", kernel);
        free_space(&s);
        return -1;
    }
    int64_t code = start ? encode(&s, start) : -1;
    int first = code >= 0 ? find_code(&s, code) : -1;
    run r = {&s, budget, eval, user, stats, now(), 0};
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed * 0xD1B54A32D192ED03ull);
    if (!rng)
        rng = 1;
    switch (strategy) {
    case TUNE_EXHAUSTIVE: sweep(&r, first, 0, &rng); break;
    case TUNE_RANDOM: sweep(&r, first, 1, &rng); break;
    case TUNE_ANNEAL: anneal(&r, first, &rng); break;
    }
    free_space(&s);
    return 0;
}
