/*
 * attention_kinds.h -- the registry of attention kinds: the validation of
 * the descriptor fields that choose one, and the choice itself.  Each kind
 * (fused softmax, sparse normalizations, the CLBlast dense path, FAVOR+,
 * Linformer) is one table of operations (plan_api.h) in its own file; plan.c
 * knows them only through this registry.  A new kind adds its table here
 * and a rule to sparcl__kind_select.
 */
#ifndef SPARCL_ATTENTION_KINDS_H
#define SPARCL_ATTENTION_KINDS_H

#include "plan/plan_api.h"
#include "sparcl.h"

/* Checks the normalization and attention-kind fields of a descriptor whose
 * shapes are already valid: SPARCL_ERR_INVALID_ARGUMENT for out-of-range
 * values, SPARCL_ERR_NOT_SUPPORTED for combinations not implemented. */
sparcl_status sparcl__kind_check(sparcl_ctx *ctx, const sparcl_plan_desc *d);

/* The tables of the attention kinds (plan_api.h). */
extern const sparcl__kind_ops sparcl__kind_fused;     /* kind_fused.c: softmax */
extern const sparcl__kind_ops sparcl__kind_entmax;    /* kind_fused.c: sparsemax, entmax */
extern const sparcl__kind_ops sparcl__kind_dense;     /* dense_path.c: ALGO=1 */
extern const sparcl__kind_ops sparcl__kind_favor;     /* favor.c */
extern const sparcl__kind_ops sparcl__kind_linformer; /* linformer.c */
extern const sparcl__kind_ops sparcl__kind_decode;    /* decode.c: split-KV, small q_len */
extern const sparcl__kind_ops sparcl__kind_dynsel;    /* kind_select.c: dynamic selection */
/* kind_select.c: dynamic selection of decoding calls (split-KV) */
extern const sparcl__kind_ops sparcl__kind_dynsel_decode;
extern const sparcl__kind_ops sparcl__kind_span; /* kind_span.c: adaptive span */
extern const sparcl__kind_ops sparcl__kind_lsh;  /* lsh.c: Reformer LSH attention */
#define SPARCL__KIND_COUNT 10

/* Shortest kv_len for which a plan without a parameter override chooses
 * the split-KV decoding kind (with q_len <= SPARCL__DECODE_MAX_Q and
 * kv_len >= 8 q_len). */
#define SPARCL__DECODE_MIN_KV 256

/* Whether `d` runs on the split-KV decoding kind (decode.c): exact softmax
 * with q_len <= SPARCL__DECODE_MAX_Q, and then params (a family's checked
 * choice) of attn_decode, or with params NULL an override naming SPLITS or
 * HEADS, or without an override kv_len >= SPARCL__DECODE_MIN_KV and
 * >= 8 q_len. */
int sparcl__decode_selected(const sparcl_plan_desc *d, const sparcl__pset *params);

/* Whether a plan with dynamic block selection runs its calls on split-KV
 * decoding: as sparcl__decode_selected(), and q_len within one selection
 * block (one tile row per head). */
int sparcl__select_decodes(const sparcl_plan_desc *d, const sparcl__pset *params);

/* The kind that runs `d`.  params: the choice from the family of the kind
 * selected with params NULL (a tuned parameter may pick another kind of the
 * same family, e.g. ALGO=1 the dense path). */
const sparcl__kind_ops *sparcl__kind_select(const sparcl_plan_desc *d, const sparcl__pset *params);

#endif
