/*
 * text_file.h -- small file-system helpers: reading a whole file (kernel
 * sources loaded from a directory, database imports, cached program
 * binaries) and creating a folder with its parents (the tuning database's
 * folder, the program cache).
 */
#ifndef SPARCL_TEXT_FILE_H
#define SPARCL_TEXT_FILE_H

#include <stddef.h>

/* The file's bytes plus a NUL, malloc'd; NULL if it cannot be read (errno
 * tells why). */
char *sparcl__read_text_file(const char *path);

/* As sparcl__read_text_file(), and *size receives the number of bytes
 * (not counting the NUL), for files that may contain NULs. */
char *sparcl__read_file(const char *path, size_t *size);

/* mkdir -p: creates `dir` and any missing parents (mode 0777 before the
 * umask).  Returns 0, or -1 with errno set. */
int sparcl__make_dirs(const char *dir);

#endif
