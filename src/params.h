/*
 * params.h -- the typed parameter schema of each kernel family: names,
 * candidate values, constraints, resource formulas, defaults, and the -D
 * options a parameter set becomes.  Search spaces are data here so that the
 * runtime, the validation and the tuner all read one declaration.
 */
#ifndef SPARCL_PARAMS_H
#define SPARCL_PARAMS_H

#include "ctx.h"
#include "sparcl.h"

typedef struct sparcl__param_def {
    const char *name;
    const int32_t *choices; /* candidate values, ascending */
    int n_choices;
    const char *doc;
} sparcl__param_def;

/* The problem facts the constraints and workspace formulas depend on. */
typedef struct sparcl__problem {
    int head_dim;
    int batch, kv_heads, kv_len;
} sparcl__problem;

typedef struct sparcl__kernel_schema {
    const char *name; /* family, e.g. "attn_fwd"; also the kernel's name */
    const char *file; /* kernel file in cl/ */
    const sparcl__param_def *params;
    int n_params;
    /* Optional per-family rules; NULL means the attn_fwd rules in params.c.
     * check: constraints and device limits once names and choices passed;
     * defaults: fills the parameters `p` lacks. */
    sparcl_status (*check)(sparcl_ctx *ctx, const sparcl_params *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits);
    void (*defaults)(sparcl_params *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits);
} sparcl__kernel_schema;

extern const sparcl__kernel_schema sparcl__schema_attn_fwd;
extern const sparcl__kernel_schema sparcl__schema_attn_bwd;    /* params_bwd.c */
extern const sparcl__kernel_schema sparcl__schema_attn_entmax; /* params_entmax.c */

/* Floats of private memory one work-item of any kernel may hold (the
 * compilers spill beyond registers; past this, badly). */
#define SPARCL__PRIVATE_FLOATS_MAX 8192

/* Checks a caller's map before anything reads it: count in [0,
 * SPARCL_PARAMS_MAX], every name NUL-terminated within its array, a C
 * identifier, and not repeated.  `what` names the map in the message
 * ("desc.params").  SPARCL_ERR_INVALID_ARGUMENT (also for NULL). */
sparcl_status sparcl__params_valid(sparcl_ctx *ctx, const sparcl_params *p, const char *what);

/* Checks that `p` holds exactly the schema's parameters with allowed values
 * and that they satisfy the constraints and the device's limits (work-group
 * size, local memory, private memory).  Names the first violation.
 * Returns SPARCL_ERR_INVALID_ARGUMENT or SPARCL_ERR_NOT_SUPPORTED. */
sparcl_status sparcl__params_check(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                   const sparcl_params *p, const sparcl__problem *prob,
                                   const sparcl__device_limits *limits);

/* The checks that protect the host code even for unchecked parameters:
 * BLOCK_M, BLOCK_N and WG_SIZE positive and at most 4096. */
sparcl_status sparcl__params_check_minimal(sparcl_ctx *ctx, const sparcl_params *p);

/* Fills every parameter of the schema that `p` does not already set with
 * the built-in default for this device type and problem. */
void sparcl__params_fill_defaults(const sparcl__kernel_schema *schema, sparcl_params *p,
                                  const sparcl__problem *prob,
                                  const sparcl__device_limits *limits);

/* The attn_fwd default rules for the tile and work-group parameters
 * (BLOCK_M, BLOCK_N, WG_SIZE, VEC, USE_LOCAL), setting only those the
 * schema has: for families that share them (attn_entmax). */
void sparcl__params_tile_defaults(const sparcl__kernel_schema *schema, sparcl_params *p,
                                  const sparcl__problem *prob,
                                  const sparcl__device_limits *limits);

/* Writes the sorted -D build options (derived values included) into buf. */
void sparcl__params_build_options(const sparcl__kernel_schema *schema, const sparcl_params *p,
                                  const sparcl__problem *prob, char *buf, size_t size);

/* Local memory in bytes a parameter set of attn_fwd uses. */
size_t sparcl__attn_fwd_local_bytes(const sparcl_params *p, const sparcl__problem *prob);

/* Bytes of the device workspace a parameter set of attn_fwd needs per plan
 * (K packed per tile when KT=1, else 0): O(batch * kv_heads * kv_len *
 * head_dim), never O(N^2). */
size_t sparcl__attn_fwd_workspace_bytes(const sparcl_params *p, const sparcl__problem *prob);

/* Local memory in bytes the larger of the attn_bwd kernels uses. */
size_t sparcl__attn_bwd_local_bytes(const sparcl_params *p, const sparcl__problem *prob);

#endif
