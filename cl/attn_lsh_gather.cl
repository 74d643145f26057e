/*
 * attn_lsh_gather.cl -- the gather step of LSH attention (sparcl.h, "LSH
 * attention"): after the sort, each (batch, head, round) gets its keys in
 * sorted order, already divided by their norms, stored transposed (one row
 * of sorted positions per head dimension), beside the token at each sorted
 * position.  The chunk attention then reads a window of keys as contiguous
 * vectors along the sorted positions instead of one token at a time through
 * the order.
 *
 * Rows are `stride` = n + BLOCK_N positions long: the chunk kernel reads
 * BLOCK_N positions from any start below n, so the positions from n on are
 * padding, written 0 (keys) and -1 (tokens) and always masked there.
 */
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif

/* Global size (n + BLOCK_N, heads * rounds, batch).  q: row (b, h, i) at
 * b*q_sb + h*q_sh + i*q_ss; order: [b, h, round, n]; inv_norm: [b, h, n].
 * kt: segment s = (b * heads + h) * rounds + round holds dimension t of the
 * key at sorted position p at (s * HEAD_DIM + t) * stride + p; tok: the
 * token there, at s * stride + p. */
__kernel void attn_lsh_gather(__global const float *q, const long q_sb, const long q_sh,
                              const long q_ss, __global const int *order,
                              __global const float *inv_norm, __global float *kt,
                              __global int *tok, const int n, const int heads, const int rounds)
{
    const int p = get_global_id(0);
    const int hr = get_global_id(1), b = get_global_id(2);
    const long stride = (long)n + BLOCK_N;
    if (p >= stride)
        return;
    const int h = hr / rounds;
    const long bh = (long)b * heads + h, seg = bh * rounds + (hr - h * rounds);
    __global float *out = kt + seg * HEAD_DIM * stride + p;
    if (p >= n) {
        tok[seg * stride + p] = -1;
        for (int t = 0; t < HEAD_DIM; ++t)
            out[t * stride] = 0.0f;
        return;
    }
    const int j = order[seg * n + p];
    tok[seg * stride + p] = j;
    __global const float *row = q + b * q_sb + h * q_sh + j * q_ss;
    const float ij = inv_norm[bh * n + j];
    for (int t = 0; t < HEAD_DIM; ++t)
        out[t * stride] = row[t] * ij;
}
