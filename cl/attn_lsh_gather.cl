/*
 * attn_lsh_gather.cl -- the gather step of LSH attention (sparcl.h, "LSH
 * attention"): after the sort, each (batch, head, round) gets its keys in
 * sorted order, already divided by their norms, beside the token at each
 * sorted position.  Keys are stored in tiles of BLOCK_N sorted positions,
 * each tile transposed (dimension t of its BLOCK_N keys contiguous), as the
 * dense kernel's KT layout: the chunk attention then reads a step's keys as
 * one contiguous tile of vectors instead of one token at a time through the
 * order.  Positions past n, up to the end of the last tile, are padding:
 * keys 0 and token 0 (a valid row to load), always masked by the chunk
 * kernel, which masks by sorted position.  DTYPE is the storage of q
 * (common.clh); the gathered keys are float.
 */
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif

/* Global size (tiles, heads * rounds, batch), tiles = ceil(n / BLOCK_N):
 * one work-item per tile.  q: row (b, h, i) at b*q_sb + h*q_sh + i*q_ss;
 * order: [b, h, round, n]; inv_norm: [b, h, n].  Segment s = (b * heads +
 * h) * rounds + round: dimension t of the key at sorted position p = T *
 * BLOCK_N + c is at kt[((s * tiles + T) * HEAD_DIM + t) * BLOCK_N + c], its
 * token at tok[s * tiles * BLOCK_N + p]. */
__kernel void attn_lsh_gather(__global const stor_t *q, const long q_sb, const long q_sh,
                              const long q_ss, __global const int *order,
                              __global const float *inv_norm, __global float *kt, __global int *tok,
                              const int n, const int heads, const int rounds)
{
    const int tile = get_global_id(0);
    const int hr = get_global_id(1), b = get_global_id(2);
    const int tiles = (n + BLOCK_N - 1) / BLOCK_N;
    if (tile >= tiles)
        return;
    const int h = hr / rounds;
    const long bh = (long)b * heads + h, seg = bh * rounds + (hr - h * rounds);
    __global float *out = kt + (seg * tiles + tile) * HEAD_DIM * BLOCK_N;
    __global int *tp = tok + (seg * tiles + tile) * BLOCK_N;
    __global const int *ord = order + seg * n;
    __global const stor_t *qh = q + b * q_sb + h * q_sh;
    for (int c = 0; c < BLOCK_N; ++c) {
        const int p = tile * BLOCK_N + c;
        if (p >= n) {
            tp[c] = 0;
            for (int t = 0; t < HEAD_DIM; ++t)
                out[t * BLOCK_N + c] = 0.0f;
            continue;
        }
        const int j = ord[p];
        tp[c] = j;
        __global const stor_t *row = qh + j * q_ss;
        const float ij = inv_norm[bh * n + j];
        for (int t = 0; t < HEAD_DIM; ++t)
            out[t * BLOCK_N + c] = SLOAD1(row + t) * ij;
    }
}
