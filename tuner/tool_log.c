/*
 * tool_log.c -- the tools' log callback (tool_log.h): stderr, one line per
 * warning (every level with SPARCL_VERBOSE set), prefixed with the tool's
 * name and the level.
 */
#include "tool_log.h"

#include <stdio.h>
#include <stdlib.h>

static int verbose = 0;

static void to_stderr(void *user, sparcl_log_level level, const char *message)
{
    static const char *names[] = {"debug", "info", "warning", "error"};
    /* Errors come back as statuses, which the tool reports where they
     * matter (a tuner expects thousands of refused candidates); warnings
     * are the silent fallbacks nothing else would show. */
    if (level != SPARCL_LOG_WARNING && !verbose)
        return;
    const int l = (int)level >= 0 && (int)level <= SPARCL_LOG_ERROR ? (int)level : 0;
    fprintf(stderr, "%s: %s: %s\n", (const char *)user, names[l], message);
}

void tool_log_install(sparcl_ctx *ctx, const char *tool)
{
    verbose = getenv("SPARCL_VERBOSE") != NULL;
    sparcl_ctx_set_log(ctx, to_stderr, (void *)tool);
}
