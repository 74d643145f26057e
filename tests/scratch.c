/*
 * scratch.c -- see scratch.h.
 */
#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

char scratch_dir[64];

int scratch_make(const char *prefix)
{
    snprintf(scratch_dir, sizeof scratch_dir, "/tmp/%s-XXXXXX", prefix);
    return mkdtemp(scratch_dir) ? 0 : -1;
}

void scratch_remove(void)
{
    char cmd[128];
    if (!scratch_dir[0])
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", scratch_dir);
}

void scratch_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", scratch_dir, name);
}

char *scratch_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? calloc((size_t)n + 1, 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}
