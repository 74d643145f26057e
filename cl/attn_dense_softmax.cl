/*
 * attn_dense_softmax.cl -- the masked row softmax of the dense algorithm
 * (ALGO=1), between its two CLBlast GEMMs: S = Q K^T * scale * log2(e) is
 * already in the score workspace; this kernel turns each row into
 * P = softmax over exactly the keys the layout lists (the plan's tiled
 * layout at BLOCK_M x BLOCK_N: FULL tiles whole, PARTIAL tiles by their
 * bits, causal folded in) with zeros everywhere else, so that P V by SGEMM
 * gives the same result as the fused kernel, and writes the row's LSE.
 *
 * One work-item per (row, head of the chunk).  Rows are padded to whole
 * tiles (ld is a multiple of BLOCK_N), so every vector access stays inside
 * the row.  Three passes over the row (max, sum, write), all in the
 * row's cache lines.
 *
 * Non-finite scores give what the fused kernel and the reference give: a
 * row whose attended scores hold a NaN or +inf, or are all -inf, is NaN
 * (NaN flows through s - m, the exponential and the sum); only a row that
 * attends to no key is 0 with LSE -inf.  Unlike the fused kernel, P V is
 * one GEMM over every key of the row, so a NaN in the value of a key the
 * row does not attend to still reaches it (0 * NaN); see sparcl.h.
 */
#ifndef BLOCK_M
#error "BLOCK_M must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif
#ifndef VEC
#error "VEC must be defined"
#endif
#ifndef EXP
#error "EXP must be defined"
#endif
#if BLOCK_N % VEC != 0
#error "BLOCK_N must be a multiple of VEC"
#endif

#define NKV (BLOCK_N / VEC)
#define MW ((BLOCK_N + 31) / 32)

/* Tile e's scores vector x for this row, masked. */
inline floatv tile_scores(__global const float *row, int c0, int mi,
                          __global const uint *restrict mask_bits, int lr, int x)
{
    const floatv s = LOADV(row + c0 + x * VEC);
    return mi < 0 ? s : sparcl_mask_scores(s, mask_bits + ((long)mi * BLOCK_M + lr) * MW, x);
}

/* Head hh of the chunk is query head hq0 + hh * group of batch b (one
 * position within each KV group, see dense_path.c); its
 * scores start at s + hh * q_len * ld. */
__kernel void
attn_dense_softmax(__global float *restrict s, const long ld, __global float *restrict lse,
                   const int write_lse, __global const int *restrict tile_ptr,
                   __global const int *restrict tile_col, __global const int *restrict tile_mask,
                   __global const uint *restrict mask_bits, const int q_len, const int kv_len,
                   const int q_heads, const int group, const int layout_heads,
                   const int n_tile_rows, const int b, const int hq0)
{
    const int i = get_global_id(0), hh = get_global_id(1);
    if (i >= q_len)
        return;
    const int hq = hq0 + hh * group;
    const int lh = layout_heads == 1 ? 0 : hq;
    const int tr = i / BLOCK_M, lr = i - tr * BLOCK_M;
    __global float *row = s + ((long)hh * q_len + i) * ld;
    const int e0 = tile_ptr[lh * (n_tile_rows + 1) + tr];
    const int e1 = tile_ptr[lh * (n_tile_rows + 1) + tr + 1];

    floatv mv = (floatv)(-INFINITY);
    uint seen = 0; /* the row attends to some key */
    for (int e = e0; e < e1; ++e) {
        const int mi = tile_mask[e];
        if (mi < 0)
            seen = 1;
        for (int w = 0; w < MW && mi >= 0; ++w)
            seen |= mask_bits[((long)mi * BLOCK_M + lr) * MW + w];
        for (int x = 0; x < NKV; ++x)
            mv = SPARCL_MAXNN(mv, tile_scores(row, tile_col[e] * BLOCK_N, mi, mask_bits, lr, x));
    }
    const float m = HMAXV(mv);
    floatv lv = (floatv)(0.0f);
    if (seen) /* m = -inf here (all attended scores -inf) makes the sum NaN */
        for (int e = e0; e < e1; ++e)
            for (int x = 0; x < NKV; ++x)
                lv += EXP2V(
                    tile_scores(row, tile_col[e] * BLOCK_N, tile_mask[e], mask_bits, lr, x) - m);
    const float l = HSUMV(lv);
    const float inv = seen ? 1.0f / l : 0.0f;
    const float ms = seen ? m : 0.0f; /* an empty row: 2^(-inf - 0) * 0 = 0 */

    /* Listed tiles are sorted by column: zero the gaps between them. */
    int col = 0;
    for (int e = e0; e < e1; ++e) {
        const int c0 = tile_col[e] * BLOCK_N;
        for (; col < c0; col += VEC)
            STOREV((floatv)(0.0f), row + col);
        for (int x = 0; x < NKV; ++x) {
            const floatv p = EXP2V(tile_scores(row, c0, tile_mask[e], mask_bits, lr, x) - ms) * inv;
            STOREV(p, row + c0 + x * VEC);
        }
        col = c0 + BLOCK_N;
    }
    for (; col < kv_len; col += VEC)
        STOREV((floatv)(0.0f), row + col);
    if (write_lse)
        lse[((long)b * q_heads + hq) * q_len + i] = seen ? (m + log2(l)) * M_LN2_F : -INFINITY;
}
