/*
 * tune_child.c -- the parent's side of the worker: spawning it
 * (posix_spawn of sparcl-tune --worker, so the child starts with a fresh
 * OpenCL runtime and nothing is forked after OpenCL initialization), talking
 * to it over pipes, and the watchdog: a candidate that does not answer in
 * time is killed with SIGKILL and reported as a timeout, one whose worker
 * dies is reported as a crash, and the next request starts a new worker.
 * A worker ended by SIGKILL or SIGTERM that the parent did not send (the OOM
 * killer, a stray kill) says nothing about the candidate, so that candidate
 * is run once more in a new worker before its failure is recorded; a crash
 * inside the kernel (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) is recorded
 * at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tune.h"

extern char **environ;

/* The environment as the process started, before any OpenCL driver was
 * loaded: the worker gets this one (see tune_child_keep_environment). */
static char **start_env;

/* Given to the workers unless the environment sets POCL_AFFINITY: POCL's
 * CPU driver then binds its worker thread i to core i.  Left to Linux, its
 * threads often start on one core and stay there for the first second or
 * two of a process, where a call of a millisecond takes twice as long
 * (attn_bwd causal n=512, 16 evaluations in a fresh worker: 2.0-2.6 ms in
 * the first 1-7 of them, 1.3 after; bound, 1.06-1.13 from the first, in
 * every one of three workers), and every finalist round starts a worker. */
#define PIN_THREADS "POCL_AFFINITY=1"

void tune_child_keep_environment(void)
{
    size_t n = 0;
    int pinned = 0;
    while (environ && environ[n])
        pinned |= !strncmp(environ[n++], "POCL_AFFINITY=", 14);
    char **copy = calloc(n + 2, sizeof *copy);
    if (!copy)
        return; /* the workers get the current environment */
    for (size_t i = 0; i < n; ++i)
        if (!(copy[i] = strdup(environ[i]))) {
            while (i)
                free(copy[--i]);
            free(copy);
            return;
        }
    if (!pinned && !(copy[n] = strdup(PIN_THREADS))) {
        while (n)
            free(copy[--n]);
        free(copy);
        return;
    }
    start_env = copy; /* kept for the life of the process */
}

/* Setting up a problem computes the CPU reference, which takes long for the
 * big shapes; it has its own watchdog limit. */
#define SETUP_TIMEOUT_S 3600.0

struct tune_child {
    char exe[1024], device[256];
    pid_t pid;
    int to, from;                     /* pipe ends: requests, results */
    char problem[TUNE_SPEC_MAX + 32]; /* "<kernel> <spec>" the worker holds, "" none */
    char buf[8192];
    size_t len;
    int killed_outside; /* the last worker died of SIGKILL/SIGTERM it was not sent by us */
    double cpu_ms;      /* of the last result; < 0 if none */
};

tune_child *tune_child_new(const char *exe, const char *device)
{
    tune_child *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->exe, sizeof c->exe, "%s", exe);
    snprintf(c->device, sizeof c->device, "%s", device ? device : "");
    c->pid = -1;
    c->to = c->from = -1;
    c->cpu_ms = -1;
    return c;
}

static void stop(tune_child *c, int *wstatus)
{
    if (c->to >= 0)
        close(c->to);
    if (c->from >= 0)
        close(c->from);
    c->to = c->from = -1;
    if (c->pid > 0) {
        int st = 0;
        if (!wstatus) /* not known to be dead: make sure */
            kill(c->pid, SIGKILL);
        while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (wstatus)
            *wstatus = st;
    }
    c->pid = -1;
    c->problem[0] = '\0';
    c->len = 0;
}

void tune_child_free(tune_child *c)
{
    if (!c)
        return;
    stop(c, NULL);
    free(c);
}

/* A descriptor >= 10 with close-on-exec, so it cannot collide with the
 * worker's 0 and 3 or leak into it. */
static int high_fd(int fd)
{
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return h;
}

static int start(tune_child *c, char *err, size_t size)
{
    int req[2], res[2];
    if (pipe(req) != 0)
        goto fail;
    if (pipe(res) != 0) {
        close(req[0]);
        close(req[1]);
        goto fail;
    }
    for (int i = 0; i < 2; ++i) {
        req[i] = high_fd(req[i]);
        res[i] = high_fd(res[i]);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, req[0], 0);
    posix_spawn_file_actions_adddup2(&fa, res[1], 3);
    /* The worker starts as a process started from a shell would: no
     * blocked signals, and the signals the parent ignores (SIGPIPE) or
     * handles back at their defaults. */
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    static const int reset[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP, SIGQUIT,
                                SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof reset / sizeof reset[0]; ++i)
        sigaddset(&defaults, reset[i]);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {c->exe, "--worker", "--device", c->device, NULL};
    int rc = posix_spawn(&c->pid, c->exe, &fa, &attr, argv, start_env ? start_env : environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    close(req[0]);
    close(res[1]);
    if (rc != 0) {
        close(req[1]);
        close(res[0]);
        c->pid = -1;
        snprintf(err, size, "cannot start the worker %.150s: %s", c->exe, strerror(rc));
        return -1;
    }
    c->to = req[1];
    c->from = res[0];
    c->len = 0;
    return 0;
fail:
    snprintf(err, size, "cannot create pipes: %s", strerror(errno));
    return -1;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

enum { LINE_OK = 0, LINE_EOF = -1, LINE_TIMEOUT = -2, LINE_INTERRUPTED = -3 };

static int read_line(tune_child *c, char *line, size_t size, double timeout_s,
                     volatile sig_atomic_t *interrupted)
{
    double deadline = now() + timeout_s;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            snprintf(line, size, "%.*s", (int)n, c->buf);
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return LINE_OK;
        }
        if (interrupted && *interrupted)
            return LINE_INTERRUPTED;
        double left = deadline - now();
        if (left <= 0)
            return LINE_TIMEOUT;
        struct pollfd p = {c->from, POLLIN, 0};
        int rc = poll(&p, 1, (int)fmin(left * 1000 + 1, 1000));
        if (rc < 0 && errno != EINTR)
            return LINE_EOF;
        if (rc <= 0)
            continue;
        if (c->len == sizeof c->buf) /* a runaway line: drop it */
            c->len = 0;
        ssize_t got = read(c->from, c->buf + c->len, sizeof c->buf - c->len);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            return LINE_EOF;
        }
        c->len += (size_t)got;
    }
}

static int send_line(tune_child *c, const char *text)
{
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(c->to, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

/* Why the worker ended, for the record. */
static void describe_exit(int st, char *buf, size_t size)
{
    if (WIFSIGNALED(st))
        snprintf(buf, size, "worker killed by signal %d (%s)", WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
    else if (WIFEXITED(st))
        snprintf(buf, size, "worker exited with status %d", WEXITSTATUS(st));
    else
        snprintf(buf, size, "worker ended");
}

/* Sends `request` and waits for its answer line.  On a dead or silent
 * worker fills r (crash/timeout) and returns the LINE_* code. */
static int transact(tune_child *c, const char *request, char *line, size_t size, double timeout_s,
                    volatile sig_atomic_t *interrupted, sparcl_tuning_result *r)
{
    int rc =
        send_line(c, request) == 0 ? read_line(c, line, size, timeout_s, interrupted) : LINE_EOF;
    if (rc == LINE_OK || rc == LINE_INTERRUPTED)
        return rc;
    if (rc == LINE_EOF) {
        int st = 0;
        stop(c, &st);
        r->status = SPARCL_TUNING_CRASH;
        describe_exit(st, r->message, sizeof r->message);
        c->killed_outside = WIFSIGNALED(st) && (WTERMSIG(st) == SIGKILL || WTERMSIG(st) == SIGTERM);
    } else {
        stop(c, NULL);
        r->status = SPARCL_TUNING_TIMEOUT;
        snprintf(r->message, sizeof r->message, "no answer within %.0f s; worker killed",
                 timeout_s);
    }
    return rc;
}

static int eval_once(tune_child *c, const char *kernel, const char *spec,
                     const sparcl_params *params, int max_runs, double timeout_s,
                     volatile sig_atomic_t *interrupted, sparcl_tuning_result *r)
{
    c->killed_outside = 0;
    memset(r, 0, sizeof *r);
    r->params = *params;
    r->max_err = -1;
    char line[8192], request[4096], key[sizeof c->problem];
    if (c->pid < 0 && start(c, r->message, sizeof r->message) != 0)
        return -1;
    snprintf(key, sizeof key, "%s %s", kernel, spec);
    if (strcmp(c->problem, key) != 0) {
        snprintf(request, sizeof request, "problem %s\n", key);
        int rc = transact(c, request, line, sizeof line, SETUP_TIMEOUT_S, interrupted, r);
        if (rc == LINE_INTERRUPTED) {
            stop(c, NULL);
            return 1;
        }
        if (rc != LINE_OK)
            return -1; /* the problem, not a candidate, failed */
        if (strncmp(line, "ready", 5) != 0) {
            snprintf(r->message, sizeof r->message, "worker: %.200s", line);
            return -1;
        }
        snprintf(c->problem, sizeof c->problem, "%s", key);
    }
    char list[1024];
    sparcl_params_format(params, list, sizeof list);
    snprintf(request, sizeof request, "eval %d %s\n", max_runs, list);
    int rc = transact(c, request, line, sizeof line, timeout_s, interrupted, r);
    if (rc == LINE_INTERRUPTED) {
        stop(c, NULL);
        return 1;
    }
    if (rc != LINE_OK)
        return 0; /* crash or timeout, recorded as the candidate's */
    int status = 0, used = 0;
    c->cpu_ms = -1;
    if (sscanf(line, "result %d %lf %lf %lf %d %lf %lf %n", &status, &r->median_ms, &r->min_ms,
               &r->max_ms, &r->runs, &r->max_err, &c->cpu_ms, &used) < 7) {
        stop(c, NULL);
        r->status = SPARCL_TUNING_CRASH;
        snprintf(r->message, sizeof r->message, "worker answered \"%.100s\"", line);
        return 0;
    }
    r->status = (sparcl_tuning_status)status;
    snprintf(r->message, sizeof r->message, "%s", used ? line + used : "");
    return 0;
}

int tune_child_eval(tune_child *c, const char *kernel, const char *spec,
                    const sparcl_params *params, int max_runs, double timeout_s,
                    volatile sig_atomic_t *interrupted, sparcl_tuning_result *r)
{
    int rc = eval_once(c, kernel, spec, params, max_runs, timeout_s, interrupted, r);
    if (!c->killed_outside || (interrupted && *interrupted))
        return rc;
    char first[sizeof r->message];
    snprintf(first, sizeof first, "%s", r->message);
    fprintf(stderr,
            "sparcl-tune: %s while measuring a candidate; not its fault: retrying it once\n",
            first);
    rc = eval_once(c, kernel, spec, params, max_runs, timeout_s, interrupted, r);
    if (c->killed_outside)
        snprintf(r->message, sizeof r->message,
                 "%.100s, twice (the first time retried): killed from outside, or the candidate "
                 "exhausts memory",
                 first);
    return rc;
}

double tune_child_cpu_ms(const tune_child *c)
{
    return c->cpu_ms;
}

void tune_child_restart(tune_child *c)
{
    stop(c, NULL);
}
