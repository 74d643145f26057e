/*
 * tuning_rows.h -- the tuning databases' best rows, remembered per context.
 *
 * Every plan asks the databases for its parameters.  Opening SQLite,
 * preparing the query and reading the rows cost about 1.8 ms per plan on
 * POCL's CPU device (against 0.1 ms for the rest of a plan whose programs
 * are built): a tenth of a 32k-key decoding call, paid again for every new
 * length.  The rows of one (database, kernel, hash, dtype) are the same for
 * every plan, so the context reads them once and walks them from memory
 * while the database file keeps its identity, size and modification time
 * and its write-ahead log its size and header; a tuner writing the
 * database changes those, and the next plan reads it again.
 */
#ifndef SPARCL_TUNING_ROWS_H
#define SPARCL_TUNING_ROWS_H

#include <stddef.h>

#include "runtime/ctx.h"
#include "tuning/tuning_db.h"

/* Calls fn for every best row of (kernel, hash, dtype) in the database at
 * path, as sparcl__tuning_db_each_best does, from the context's memory when
 * the file has not changed since it was read.  Errors (the database cannot
 * be opened or read) are those of sparcl__tuning_db_open, with the reason
 * in msg; nothing is remembered then.  Thread-safe. */
sparcl_status sparcl__tuning_rows_each_best(sparcl_ctx *ctx, const char *path, const char *kernel,
                                            const char *hash, const char *dtype,
                                            sparcl__tuning_row_fn fn, void *user, char *msg,
                                            size_t size);

/* Forgets every remembered row (sparcl_ctx_free). */
void sparcl__tuning_rows_free(sparcl_ctx *ctx);

#endif
