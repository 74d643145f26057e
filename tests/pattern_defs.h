/*
 * pattern_defs.h -- the literature patterns as the tests understand them:
 * a parameter record per pattern, random parameters from a fixed seed, the
 * brute-force token predicate written from each paper's definition (not
 * from the library), and the library call that should build the same
 * thing.  Shared by test_patterns.c and test_layout_combine.c.
 */
#ifndef SPARCL_TEST_PATTERN_DEFS_H
#define SPARCL_TEST_PATTERN_DEFS_H

#include <stdint.h>

#include "sparcl.h"

enum pkind {
    K_DILATED,
    K_GLOBAL,
    K_GLOBAL_BLOCKS,
    K_STRIDED,
    K_FIXED,
    K_BIGBIRD, /* predicate covers window + globals; random blocks are checked apart */
    K_LONGFORMER,
    K_STREAMING,
    K_VSLASH,
    K_COUNT
};

#define PD_MAX_HEADS 4
#define PD_MAX_LIST 16

typedef struct pdef {
    int kind, heads, lq, lk, block, causal;
    int left, right, dil[PD_MAX_HEADS];
    int glob[PD_MAX_LIST], n_glob;
    int first, last;
    int stride, summary, patterns, horizontal;
    int window, random, per_head;
    uint64_t seed;
    int sink, local;
    int cols[PD_MAX_HEADS * PD_MAX_LIST], col_counts[PD_MAX_HEADS];
    int offs[PD_MAX_HEADS * PD_MAX_LIST], off_counts[PD_MAX_HEADS];
} pdef;

const char *pdef_name(int kind);

/* Random parameters for `kind` on an lq x lk problem from `seed`. */
void pdef_random(pdef *p, int kind, int heads, int lq, int lk, uint64_t seed);

/* The definition: does query i of head h attend key j?  (oracle_pred) */
int pdef_attends(const void *self, int h, int i, int j);

/* Calls the matching library generator. */
sparcl_status pdef_build(sparcl_ctx *ctx, const pdef *p, sparcl_layout **out);

/* One line describing p, for failure messages. */
void pdef_describe(const pdef *p, char *buf, int size);

#endif
