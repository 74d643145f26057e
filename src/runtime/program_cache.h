/*
 * program_cache.h -- built program binaries on disk: the persistent program
 * cache and the offline "binary bundle" (one format, two policies).
 *
 * A binary is keyed by everything that decides what the compiler produces:
 * the text of every source file of the program (in order), the full option
 * string, the platform, device and driver, and this library's binary-format
 * version.  The key names the file; the file repeats the key text, so a
 * hash collision or a file copied under another name is refused, never run.
 */
#ifndef SPARCL_PROGRAM_CACHE_H
#define SPARCL_PROGRAM_CACHE_H

#include <stdint.h>

#include "sparcl.h"

/* Bumped whenever the file layout or the meaning of a key changes. */
#define SPARCL__PROGRAM_FORMAT_VERSION 1

typedef struct sparcl__program_key {
    uint64_t hash;        /* of `text`: names the file */
    uint64_t source_hash; /* of the source texts alone */
    char *text;           /* malloc'd: format, files, source hash, options, device */
    char name[96];        /* "<first own file>-<hash>.bin" */
    char files[256];      /* the file names, space-separated, for messages */
} sparcl__program_key;

/* Builds the key of a program made of `texts` (the contents of files[0..n))
 * with `options` on the context's device.  SPARCL_ERR_OUT_OF_MEMORY on
 * failure. */
sparcl_status sparcl__program_key_init(sparcl_ctx *ctx, const char *const *files,
                                       const char *const *texts, int n, const char *options,
                                       sparcl__program_key *key);
void sparcl__program_key_free(sparcl__program_key *key);

/* The disk cache folder of the context: sparcl_ctx_set_program_cache(),
 * else $SPARCL_PROGRAM_CACHE ("off" or "0" turn it off), else
 * "sparcl-programs" beside the default user tuning database.  Returns 1
 * with the folder in buf, or 0 when the cache is off. */
int sparcl__program_cache_dir(sparcl_ctx *ctx, char *buf, size_t size);

/* The offline bundle folder: sparcl_ctx_set_offline(), else
 * $SPARCL_OFFLINE.  Returns 1 with the folder in buf (offline mode), or 0
 * (programs may be compiled). */
int sparcl__program_offline_dir(sparcl_ctx *ctx, char *buf, size_t size);

/* Loads the binary of `key` from folder `dir` and builds it for the
 * context's device with `options`.  Returns the program, or NULL with the
 * reason in `why` ("" when there is no such file). */
cl_program sparcl__program_disk_load(sparcl_ctx *ctx, const char *dir,
                                     const sparcl__program_key *key, const char *options, char *why,
                                     size_t why_size);

/* Writes the binary of `prog` under `key` into `dir` (created if needed):
 * to a temporary name first, then renamed, so readers and concurrent
 * writers never see a partial file.  Returns 1 if written, 0 if not (the
 * reason goes to the log at debug level; nothing else happens). */
int sparcl__program_disk_store(sparcl_ctx *ctx, const char *dir, const sparcl__program_key *key,
                               cl_program prog);

#endif
