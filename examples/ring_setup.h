/*
 * ring_setup.h -- how the ring programs (ring.c, ring_bench.c) open their
 * ring: MPI, the descriptor of one causal sequence and the collective init.
 */
#ifndef SPARCL_EXAMPLES_RING_SETUP_H
#define SPARCL_EXAMPLES_RING_SETUP_H

#include "sparcl_mpi.h"

/* MPI_Init(), and this process's rank among `ranks` in MPI_COMM_WORLD. */
void ring_setup_mpi(int *argc, char ***argv, int *rank, int *ranks);

/* *desc: one causal sequence of n tokens (batch 1) over `layout`, NULL for
 * full causal attention. */
void ring_setup_desc(sparcl_plan_desc *desc, int heads, int kv_heads, int n, int dim,
                     const sparcl_layout *layout);

/* The collective sparcl_ring_init() over MPI_COMM_WORLD.  `setup` is this
 * rank's status so far: a rank whose own setup failed still takes part
 * (with a NULL desc), so that every rank learns of the failure instead of
 * waiting for it.  On failure the rank prints its message on stderr. */
sparcl_status ring_setup_init(sparcl_ctx *ctx, sparcl_status setup, const sparcl_plan_desc *desc,
                              sparcl_ring **ring);

#endif
