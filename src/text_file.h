/*
 * text_file.h -- reading a whole text file, for kernel sources loaded from
 * a directory and for database imports.
 */
#ifndef SPARCL_TEXT_FILE_H
#define SPARCL_TEXT_FILE_H

/* The file's bytes plus a NUL, malloc'd; NULL if it cannot be read (errno
 * tells why). */
char *sparcl__read_text_file(const char *path);

#endif
