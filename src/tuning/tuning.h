/*
 * tuning.h -- the pieces of the tuning interface that the runtime lookup
 * shares with the public calls: kernel hashes, the device fingerprint and
 * the description of a problem as a database key.
 */
#ifndef SPARCL_TUNING_H
#define SPARCL_TUNING_H

#include "kernels/params.h"

/* 16 hex digits + NUL into out: FNV-1a 64 of the common header, every
 * kernel file of the family's programs, the fixed build options and the
 * schema's declaration.  Editing any file a family builds retires its
 * tuning rows. */
sparcl_status sparcl__kernel_hash(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                  char out[17]);

/* The fingerprint of the context's device. */
void sparcl__device_info(const sparcl_ctx *ctx, sparcl_device_info *info);

/* Drops from *info what does not identify the device: the memory sizes of
 * CPU devices, which their drivers derive from free memory.  Every key
 * (fingerprint, database binding, rows read back) goes through it. */
void sparcl__device_identity(sparcl_device_info *info);

/* The database key of `desc` (density from the layout and causal flag). */
void sparcl__tuning_problem_fill(const sparcl__kernel_schema *schema, const char *hash,
                                 const sparcl_plan_desc *desc, const char *pattern,
                                 sparcl_tuning_problem *out);

#endif
