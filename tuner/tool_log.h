/*
 * tool_log.h -- the log callback every sparcl command-line tool installs, so
 * that the library's warnings (a tuning database that cannot be read, a
 * fallback to the built-in parameters) reach the user instead of vanishing.
 */
#ifndef SPARCL_TOOL_LOG_H
#define SPARCL_TOOL_LOG_H

#include "sparcl.h"

/* Installs on ctx a callback printing "<tool>: warning: <message>" (and
 * errors) to stderr; debug and info messages only when the environment
 * variable SPARCL_VERBOSE is set.  `tool` must outlive ctx. */
void tool_log_install(sparcl_ctx *ctx, const char *tool);

#endif
