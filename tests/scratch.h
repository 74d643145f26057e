/*
 * scratch.h -- a scratch folder per test under /tmp (databases, logs,
 * exports), shared by the suites that work with files.
 */
#ifndef SPARCL_TEST_SCRATCH_H
#define SPARCL_TEST_SCRATCH_H

#include <stddef.h>

/* The current test's folder, "" before scratch_make. */
extern char scratch_dir[64];

/* Creates /tmp/<prefix>-XXXXXX; returns 0 on success. */
int scratch_make(const char *prefix);

/* Removes the folder and everything in it (a suite's .fini). */
void scratch_remove(void);

/* <scratch_dir>/<name> into buf. */
void scratch_path(char *buf, size_t size, const char *name);

/* The whole file plus a NUL (malloc'd), or NULL. */
char *scratch_read(const char *path);

#endif
