/*
 * params.h -- kernel families declared as data: their source files, kernels,
 * fixed build options, typed parameter schema (choices, constraints,
 * defaults, derived values) and the -D options a parameter set becomes.
 * The runtime, the validation, the kernel hash and the tuner all read one
 * declaration per family.
 *
 * Inside the runtime parameters are typed: a sparcl__pset indexed by
 * sparcl__param_id.  The public name/value map (sparcl_params) is converted
 * once, at the boundary (sparcl__pset_from_params, sparcl__pset_to_params).
 */
#ifndef SPARCL_PARAMS_H
#define SPARCL_PARAMS_H

#include "runtime/ctx.h"
#include "sparcl.h"

/* Every parameter any kernel reads.  The tuned ones come first; the derived
 * ones are computed from the problem and the tuned values (never tuned,
 * never in the public map) and still reach the kernels as -D options. */
typedef enum sparcl__param_id {
    SPARCL__P_ALGO,
    SPARCL__P_BLOCK_M,
    SPARCL__P_BLOCK_N,
    SPARCL__P_EXP,
    SPARCL__P_HEADS,
    SPARCL__P_KT,
    SPARCL__P_PREFETCH,
    SPARCL__P_PV_ROWS,
    SPARCL__P_SPLITS,
    SPARCL__P_SPLIT,
    SPARCL__P_TOPK,
    SPARCL__P_USE_LOCAL,
    SPARCL__P_VEC,
    SPARCL__P_WG_SIZE,
    /* CLBlast's XgemmDirect kernel (clblast_xgemm, params_clblast.c) */
    SPARCL__P_KWID,
    SPARCL__P_MDIMAD,
    SPARCL__P_MDIMCD,
    SPARCL__P_NDIMBD,
    SPARCL__P_NDIMCD,
    SPARCL__P_PADA,
    SPARCL__P_PADB,
    SPARCL__P_VWMD,
    SPARCL__P_VWND,
    SPARCL__P_WGD,
    SPARCL__P_HEAD_DIM, /* derived: the problem's head_dim */
    SPARCL__P_ROWS,     /* derived: BLOCK_M / WG_SIZE */
    SPARCL__P_NORM,     /* derived: the entmax solver of the descriptor */
    SPARCL__P_COLS,     /* derived: BLOCK_N / WG_SIZE */
    SPARCL__P_QROWS,    /* derived: the problem's q_len (attn_decode) */
    SPARCL__P_DTYPE,    /* derived: the storage type of q, k, v and out (sparcl_dtype) */
    SPARCL__P_COUNT
} sparcl__param_id;

#define SPARCL__P_FIRST_DERIVED SPARCL__P_HEAD_DIM

/* The -D name of each parameter, indexed by sparcl__param_id. */
extern const char *const sparcl__param_names[SPARCL__P_COUNT];

/* A typed parameter set: v[id] is meaningful when bit id of `set` is on,
 * and 0 otherwise. */
typedef struct sparcl__pset {
    int32_t v[SPARCL__P_COUNT];
    unsigned set;
} sparcl__pset;
_Static_assert(SPARCL__P_COUNT <= 32, "sparcl__pset.set has one bit per parameter");

static inline int sparcl__pset_has(const sparcl__pset *p, sparcl__param_id id)
{
    return (p->set >> id) & 1u;
}

static inline void sparcl__pset_put(sparcl__pset *p, sparcl__param_id id, int32_t value)
{
    p->v[id] = value;
    p->set |= 1u << id;
}

typedef struct sparcl__param_def {
    sparcl__param_id id;
    const int32_t *choices; /* candidate values, ascending */
    int n_choices;
    const char *doc;
} sparcl__param_def;

/* The problem facts the constraints, formulas and derived values read. */
typedef struct sparcl__problem {
    int head_dim;
    int batch, kv_heads, kv_len;
    int q_heads, q_len;
    int norm;  /* the attn_entmax solver (sparcl__entmax_norm); 0 for softmax */
    int dtype; /* storage of q, k, v and out, a sparcl_dtype; the kernels' DTYPE */
} sparcl__problem;

/* A kernel of a program.  wg_local: launched with WG_SIZE work-items per
 * group, so the kernel's own work-group limit is checked at creation. */
typedef struct sparcl__kernel_decl {
    const char *name;
    int wg_local;
} sparcl__kernel_decl;

/* One program: cl/common.clh followed by `file`. */
typedef struct sparcl__program_decl {
    const char *file;
    const sparcl__kernel_decl *kernels;
    int n_kernels;
} sparcl__program_decl;

/* A kernel family.  check and defaults are required (the registry refuses a
 * family without them, kernel_registry.c). */
typedef struct sparcl__kernel_schema {
    const char *name; /* e.g. "attn_fwd"; the tuning database's kernel column */
    const sparcl__program_decl *programs;
    int n_programs;
    /* A family whose kernels another library builds (CLBlast): no programs,
     * and this text (the library, its version, the kernel) joins the
     * kernel hash instead of sources.  NULL for sparcl's own families. */
    const char *external;
    const char *const *fixed_options; /* besides the OpenCL C standard */
    int n_fixed;
    const sparcl__param_def *params; /* tuned, in the order they are listed */
    int n_params;
    const sparcl__param_id *derived;
    int n_derived;
    /* Tuned parameters that follow the problem's parallelism (how many
     * partitions to give the compute units) more than the device: a tuned
     * row of another problem does not carry them, this problem's default
     * does (tuning_lookup.c).  NULL for none. */
    const sparcl__param_id *per_problem;
    int n_per_problem;
    /* Constraints and device limits once names and choices passed. */
    sparcl_status (*check)(sparcl_ctx *ctx, const sparcl__pset *p, const sparcl__problem *prob,
                           const sparcl__device_limits *limits);
    /* Fills the tuned parameters `p` lacks. */
    void (*defaults)(sparcl__pset *p, const sparcl__problem *prob,
                     const sparcl__device_limits *limits);
} sparcl__kernel_schema;

extern const sparcl__kernel_schema sparcl__schema_attn_fwd;    /* params_fwd.c */
extern const sparcl__kernel_schema sparcl__schema_attn_bwd;    /* params_bwd.c */
extern const sparcl__kernel_schema sparcl__schema_attn_entmax; /* params_entmax.c */
extern const sparcl__kernel_schema sparcl__schema_favor;       /* favor.c */
extern const sparcl__kernel_schema sparcl__schema_attn_entmax_bwd; /* params_entmax_bwd.c */
extern const sparcl__kernel_schema sparcl__schema_attn_decode; /* params_decode.c */
extern const sparcl__kernel_schema sparcl__schema_attn_merge;  /* params_decode.c */
extern const sparcl__kernel_schema sparcl__schema_block_select; /* params_select.c */
extern const sparcl__kernel_schema sparcl__schema_attn_span;   /* params_span.c */

/* Largest q_len the split-KV decoding kernel takes (its rows are private
 * per work-item), and most splits its stacked merge combines (the
 * MERGE_MAX of cl/attn_merge.cl). */
#define SPARCL__DECODE_MAX_Q 16
#define SPARCL__MERGE_STACKED_MAX 64

/* Bytes of the split-KV workspace of a parameter set of attn_decode:
 * SPLITS partial outputs and LSEs of every query row. */
size_t sparcl__attn_decode_workspace_bytes(const sparcl__pset *p, const sparcl__problem *prob);
extern const sparcl__kernel_schema sparcl__schema_clblast;     /* params_clblast.c */
extern const sparcl__kernel_schema sparcl__schema_attn_lsh;    /* params_lsh.c */
extern const sparcl__kernel_schema sparcl__schema_attn_lsh_sort; /* params_lsh.c */
/* params_convert.c: half storage <-> fp32, for staged plans (dtype_stage.h) */
extern const sparcl__kernel_schema sparcl__schema_dtype_convert;

/* Floats of private memory one work-item of any kernel may hold (the
 * compilers spill beyond registers; past this, badly). */
#define SPARCL__PRIVATE_FLOATS_MAX 8192

/* The schema's entry for `id`, or NULL. */
const sparcl__param_def *sparcl__schema_param(const sparcl__kernel_schema *schema,
                                              sparcl__param_id id);

/* The public map -> typed set: SPARCL_ERR_INVALID_ARGUMENT naming the first
 * name that is not a tuned parameter of the schema. */
sparcl_status sparcl__pset_from_params(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                       const sparcl_params *in, sparcl__pset *out);

/* The typed set -> the public map: the schema's tuned parameters that are
 * set, in the schema's order. */
void sparcl__pset_to_params(const sparcl__kernel_schema *schema, const sparcl__pset *in,
                            sparcl_params *out);

/* Checks that `p` holds every tuned parameter of the schema with an allowed
 * value and that they satisfy the family's constraints and the device's
 * limits.  Names the first violation.  Returns SPARCL_ERR_INVALID_ARGUMENT
 * or SPARCL_ERR_NOT_SUPPORTED. */
sparcl_status sparcl__pset_check(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                 const sparcl__pset *p, const sparcl__problem *prob,
                                 const sparcl__device_limits *limits);

/* The checks that protect the host code even for unchecked parameters:
 * BLOCK_M, BLOCK_N and WG_SIZE positive and at most 4096. */
sparcl_status sparcl__pset_check_minimal(sparcl_ctx *ctx, const sparcl__pset *p);

/* Checks a caller's map before anything reads it: count in [0,
 * SPARCL_PARAMS_MAX], every name NUL-terminated within its array, a C
 * identifier, and not repeated.  `what` names the map in the message
 * ("desc.params").  SPARCL_ERR_INVALID_ARGUMENT (also for NULL). */
sparcl_status sparcl__params_valid(sparcl_ctx *ctx, const sparcl_params *p, const char *what);

/* The same checks at the boundary, on a public map (unknown names refused). */
sparcl_status sparcl__params_check(sparcl_ctx *ctx, const sparcl__kernel_schema *schema,
                                   const sparcl_params *p, const sparcl__problem *prob,
                                   const sparcl__device_limits *limits);

/* Adds to the public map every tuned parameter of the schema it lacks, with
 * the built-in default for this device and problem (names the schema does
 * not know are kept as they are). */
void sparcl__params_fill_defaults(const sparcl__kernel_schema *schema, sparcl_params *p,
                                  const sparcl__problem *prob, const sparcl__device_limits *limits);

/* Removes from the public map the schema's per-problem parameters (see
 * sparcl__kernel_schema.per_problem), so that fill_defaults derives them
 * for the problem at hand.  Returns how many it removed. */
int sparcl__params_drop_per_problem(const sparcl__kernel_schema *schema, sparcl_params *p);

/* Sets `id` to `value` unless `p` has it already or the schema lacks it. */
void sparcl__pset_default(const sparcl__kernel_schema *schema, sparcl__pset *p, sparcl__param_id id,
                          int32_t value);

/* The attn_fwd default rules for the tile and work-group parameters
 * (BLOCK_M, BLOCK_N, WG_SIZE, VEC, USE_LOCAL, ALGO, EXP, KT), setting only
 * those the schema has: for families that share them (attn_entmax). */
void sparcl__pset_tile_defaults(const sparcl__kernel_schema *schema, sparcl__pset *p,
                                const sparcl__problem *prob, const sparcl__device_limits *limits);

/* The attn_fwd constraints on the tile and work-group parameters, shared by
 * attn_entmax (params_fwd.c). */
sparcl_status sparcl__pset_tile_check(sparcl_ctx *ctx, const sparcl__pset *p,
                                      const sparcl__problem *prob,
                                      const sparcl__device_limits *limits);

/* The i-th fixed (non -D) build option of the family: 0 is the OpenCL C
 * standard every family is built with, then the family's own; NULL past
 * the end. */
const char *sparcl__schema_fixed_option(const sparcl__kernel_schema *schema, int i);

/* Writes the build options into buf: the fixed options, then -DNAME=value
 * for every tuned parameter `p` sets (except those only the host reads:
 * SPLITS) and every derived value the schema declares, sorted by name.
 * Nothing else adds options. */
void sparcl__params_build_options(const sparcl__kernel_schema *schema, const sparcl__pset *p,
                                  const sparcl__problem *prob, char *buf, size_t size);

/* Local memory in bytes a parameter set of attn_fwd uses. */
size_t sparcl__attn_fwd_local_bytes(const sparcl__pset *p, const sparcl__problem *prob);

/* Bytes of the device workspace a parameter set of attn_fwd needs per plan
 * (K packed per tile when KT=1, else 0): O(batch * kv_heads * kv_len *
 * head_dim), never O(N^2). */
size_t sparcl__attn_fwd_workspace_bytes(const sparcl__pset *p, const sparcl__problem *prob);

/* Local memory in bytes the attn_bwd kernels use, counted for the whole
 * program: the dQ and dK/dV kernels' arrays together (NVIDIA's compiler
 * charged about the sum to each kernel, 65792 bytes at 64 x 64 tiles). */
size_t sparcl__attn_bwd_local_bytes(const sparcl__pset *p, const sparcl__problem *prob);

/* Replaces, in a built-in default `p` of attn_bwd, a configuration the
 * device cannot take by one it can: USE_LOCAL=1 tiles are halved (BLOCK_M,
 * BLOCK_N and WG_SIZE together) until the program's local memory fits, and
 * USE_LOCAL=0 when none does.  Returns 1 if it changed `p`. */
int sparcl__attn_bwd_fit(sparcl__pset *p, const sparcl__problem *prob,
                         const sparcl__device_limits *limits);


/* The first work-item tile rule of attn_bwd, attn_entmax_bwd and
 * attn_span (params_item_tile.c): BLOCK_M and BLOCK_N multiples of
 * WG_SIZE, giving *rows = BLOCK_M / WG_SIZE and *cols = BLOCK_N / WG_SIZE
 * of at most 16 each.  SPARCL_ERR_INVALID_ARGUMENT naming the rule. */
sparcl_status sparcl__pset_rows_cols(sparcl_ctx *ctx, const sparcl__pset *p, int32_t *rows,
                                     int32_t *cols);

/* The work-item tile rules of attn_entmax_bwd and attn_span
 * (params_item_tile.c): BLOCK_M and BLOCK_N multiples of WG_SIZE, at most
 * 16 rows and 16 keys per work-item, VEC <= head_dim, the private floats
 * of a work-item (row_floats per row of BLOCK_M / WG_SIZE, key_floats per
 * key of BLOCK_N / WG_SIZE) within SPARCL__PRIVATE_FLOATS_MAX, and WG_SIZE
 * within the device's limit (limits may be NULL).
 * SPARCL_ERR_INVALID_ARGUMENT or SPARCL_ERR_NOT_SUPPORTED naming the
 * broken rule. */
sparcl_status sparcl__pset_item_tile_check(sparcl_ctx *ctx, const sparcl__pset *p,
                                           const sparcl__problem *prob,
                                           const sparcl__device_limits *limits, long row_floats,
                                           long key_floats);

/* The defaults of those families where the caller left them unset
 * (params_item_tile.c): on a CPU (limits NULL counts as one) one work-item
 * per group holding cpu_block_m rows and cpu_block_n keys, both halved for
 * head_dim > 128 to stay within private memory; on a GPU gpu_wg
 * work-items per group (1 when the device allows fewer) with one row and
 * one key each; VEC the largest power of two <= head_dim up to 16 (CPU)
 * or 4 (GPU).  Sets WG_SIZE, BLOCK_M, BLOCK_N and VEC, in that order. */
void sparcl__pset_item_tile_defaults(const sparcl__kernel_schema *s, sparcl__pset *p,
                                     const sparcl__problem *prob,
                                     const sparcl__device_limits *limits, int32_t gpu_wg,
                                     int32_t cpu_block_m, int32_t cpu_block_n);

/* Local memory in bytes the attn_span kernels use with USE_LOCAL=1 (the
 * largest of the program's kernels), else 0. */
size_t sparcl__attn_span_local_bytes(const sparcl__pset *p, const sparcl__problem *prob);

/* The adaptive-span fields of a descriptor (params_span.c): span_ramp
 * finite and > 0, then sparcl__span_values_check() of desc->spans.
 * SPARCL_ERR_INVALID_ARGUMENT naming the field. */
sparcl_status sparcl__span_desc_check(sparcl_ctx *ctx, const sparcl_plan_desc *d);

/* Each of spans[0 .. heads) finite and >= 0 (NULL passes): else
 * SPARCL_ERR_INVALID_ARGUMENT naming what[h]. */
sparcl_status sparcl__span_values_check(sparcl_ctx *ctx, const float *spans, int heads,
                                        const char *what);

/* The attn_entmax solver a descriptor needs: 0 for softmax, 1 for
 * alpha = 2 (sparsemax), 2 for alpha = 1.5, 3 for other alphas (bisection).
 * *alpha receives the effective alpha. */
int sparcl__entmax_norm(const sparcl_plan_desc *d, float *alpha);

#endif
