/*
 * ring_setup.c -- the start the ring programs share (ring_setup.h): one
 * causal sequence's descriptor, and the collective init that fails on every
 * rank or on none.
 */
#include <stdio.h>

#include "ring_setup.h"

void ring_setup_mpi(int *argc, char ***argv, int *rank, int *ranks)
{
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, ranks);
}

void ring_setup_desc(sparcl_plan_desc *desc, int heads, int kv_heads, int n, int dim,
                     const sparcl_layout *layout)
{
    sparcl_plan_desc_init(desc);
    desc->batch = 1;
    desc->q_heads = heads;
    desc->kv_heads = kv_heads;
    desc->q_len = desc->kv_len = n;
    desc->head_dim = dim;
    desc->causal = 1;
    desc->layout = layout;
}

sparcl_status ring_setup_init(sparcl_ctx *ctx, sparcl_status setup, const sparcl_plan_desc *desc,
                              sparcl_ring **ring)
{
    sparcl_status st =
        sparcl_ring_init(ctx, MPI_COMM_WORLD, setup == SPARCL_OK ? desc : NULL, ring);
    if (st != SPARCL_OK) {
        int rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        fprintf(stderr, "rank %d: %s\n", rank, sparcl_ctx_errmsg(ctx));
    }
    return st;
}
