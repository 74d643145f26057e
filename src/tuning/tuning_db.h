/*
 * tuning_db.h -- the tuning database file (all of sparcl's SQL lives in
 * tuning_db.c).  The public sparcl_tuning_db_* calls record failures on a
 * context; the runtime lookup uses the quiet entry points below, which put
 * the reason into a buffer instead, because a lookup failure must become a
 * warning and never an error on the context.
 */
#ifndef SPARCL_TUNING_DB_H
#define SPARCL_TUNING_DB_H

#include "sparcl.h"

/* The schema version and application id this library reads and writes
 * (db/schema.sql must agree; sparcl__tuning_db_open checks both). */
#define SPARCL__DB_SCHEMA_VERSION 2
#define SPARCL__DB_APPLICATION_ID 0x5350434C

/* Busy timeouts: the runtime must not stall plan creation for long; a
 * tuner can afford to wait for another tuner's commit. */
#define SPARCL__DB_READ_BUSY_MS 250
#define SPARCL__DB_WRITE_BUSY_MS 10000

/* Opens `path` (flags as for sparcl_tuning_db_init) and validates it.  On
 * failure returns SPARCL_ERR_DATABASE (or OUT_OF_MEMORY) with the reason in
 * msg and *out NULL.  The handle's ctx is NULL until the caller sets it with
 * sparcl__tuning_db_set_ctx. */
sparcl_status sparcl__tuning_db_open(const char *path, int flags, int busy_ms,
                                     sparcl_tuning_db **out, char *msg, size_t size);
void sparcl__tuning_db_set_ctx(sparcl_tuning_db *db, sparcl_ctx *ctx);

/* A problem's density as its key stores it: six decimals keep it stable
 * text, so a row's density is this of the density it was tuned with. */
double sparcl__tuning_db_key_density(double density);

/* Called once per best row of a kernel family at one hash and dtype. */
typedef void (*sparcl__tuning_row_fn)(void *user, const sparcl_device_info *device,
                                      const sparcl_tuning_problem *problem,
                                      const sparcl_params *params, double median_ms);

/* Walks the best rows of (kernel, hash, dtype) on any device.  Errors as
 * for sparcl__tuning_db_open. */
sparcl_status sparcl__tuning_db_each_best(sparcl_tuning_db *db, const char *kernel,
                                          const char *hash, const char *dtype,
                                          sparcl__tuning_row_fn fn, void *user, char *msg,
                                          size_t size);

#endif
