/*
 * params_select.c -- the block_select family (cl/block_select.cl: pooling,
 * scoring and choosing key blocks, and writing the chosen tiles as the
 * tiled layout attn_fwd walks).  It has no tuned parameters: its kernels
 * take every size as an argument, the selection block is the plan's option
 * (sparcl_plan_desc.select_block) and the tile that of the attn_fwd choice
 * it feeds.
 */
#include "kernels/params.h"

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__kernel_decl select_kernels[] = {{"select_pool", 0},
                                                     {"select_blocks", 0},
                                                     {"select_tiles", 0},
                                                     {"select_cols", 0},
                                                     {"select_scan", 0}};
static const sparcl__program_decl select_programs[] = {
    {"block_select.cl", select_kernels, N_OF(select_kernels)},
};

/* DTYPE: the storage of the q and k that select_pool reads. */
static const sparcl__param_id select_derived[] = {SPARCL__P_DTYPE};

const sparcl__kernel_schema sparcl__schema_block_select = {
    .name = "block_select",
    .programs = select_programs,
    .n_programs = N_OF(select_programs),
    .derived = select_derived,
    .n_derived = N_OF(select_derived),
};
