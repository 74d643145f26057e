/*
 * attn_bwd.cl -- fused block-sparse softmax attention, backward
 * (FlashAttention-2 style: the attention weights are recomputed tile by tile
 * from Q, K and the forward's LSE, never stored).
 *
 * Three entry points, enqueued in this order by the plan:
 *   attn_bwd_pre   D[i] = rowsum(dO[i] * O[i]), one work-item per row;
 *   attn_bwd_dq    a work-group owns BLOCK_M query rows of one (batch, q head)
 *                  (ROWS per work-item) and walks the forward tile list:
 *                  dQ += dS K;
 *   attn_bwd_dkv   a work-group owns BLOCK_N keys of one (batch, kv head)
 *                  (COLS per work-item) and walks the transposed tile list
 *                  of every q head sharing that kv head (GQA), so dK and dV
 *                  are summed inside the group in a fixed order: no atomics,
 *                  bit-identical results from run to run.
 * With P = exp(scale q.k - LSE) and dS = P * (dO.v - D):
 *   dV = sum P dO,  dK = scale sum dS q,  dQ = scale sum dS k.
 * A row with LSE = -inf (it attends to nothing) gets P = 0, hence exactly
 * zero gradients; masked elements get P = 0 and dS = 0 from the tile bits,
 * never from -inf arithmetic, and in PARTIAL tiles their k (dq) or q (dkv)
 * rows are not read into the sums either (0 * NaN would be NaN), so a NaN
 * in a masked element never reaches a gradient.  NaN otherwise flows: a
 * row whose forward was NaN (NaN LSE, or NaN in O through D) gives NaN in
 * its dQ and in the dK (and, through P, dV) of the keys it attends to.  With USE_LOCAL the group stages the rows it shares
 * (Q/dO tiles for dkv, K/V tiles for dq) in __local memory.
 *
 * Vector lanes run across the rows (dq) or keys (dkv) a work-item owns, not
 * along the head dimension: a work-item holds its rows transposed, one
 * vector of ROWS (or COLS) lanes per head-dimension element, and every
 * product is a vector FMA against a broadcast element of the shared row, so
 * no horizontal sums are needed (they cost as much as the FMAs on CPUs).
 */
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef BLOCK_M
#error "BLOCK_M must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif
#ifndef WG_SIZE
#error "WG_SIZE must be defined"
#endif
#ifndef ROWS
#error "ROWS must be defined"
#endif
#ifndef USE_LOCAL
#error "USE_LOCAL must be defined"
#endif
#if BLOCK_M != WG_SIZE * ROWS
#error "BLOCK_M must equal WG_SIZE * ROWS"
#endif
#if BLOCK_N % WG_SIZE != 0
#error "BLOCK_N must be a multiple of WG_SIZE"
#endif

/* COLS = BLOCK_N / WG_SIZE, keys per work-item in attn_bwd_dkv, spelled
 * as a literal because it names a vector type. */
#if BLOCK_N == WG_SIZE
#define COLS 1
#elif BLOCK_N == 2 * WG_SIZE
#define COLS 2
#elif BLOCK_N == 4 * WG_SIZE
#define COLS 4
#elif BLOCK_N == 8 * WG_SIZE
#define COLS 8
#elif BLOCK_N == 16 * WG_SIZE
#define COLS 16
#else
#error "BLOCK_N / WG_SIZE must be 1, 2, 4, 8 or 16"
#endif
#define MW ((BLOCK_N + 31) / 32)

/* floatr/intr: ROWS lanes (dq); floatc/intc: COLS lanes (dkv). */
#if ROWS == 1
typedef float floatr;
typedef int intr;
#else
typedef SPARCL_CAT(float, ROWS) floatr;
typedef SPARCL_CAT(int, ROWS) intr;
#endif
#if COLS == 1
typedef float floatc;
typedef int intc;
#else
typedef SPARCL_CAT(float, COLS) floatc;
typedef SPARCL_CAT(int, COLS) intc;
#endif

/* Lane l of a private vector, for the one-time loads and stores and the
 * per-tile masks (OpenCL C has no variable component index). */
#define LANE(vec, l) (((float *)&(vec))[l])
#define ILANE(vec, l) (((int *)&(vec))[l])

/* The forward's LSE in base 2, with a fully masked row (-inf) turned into
 * +inf so that exp2(s - lse2) is 0 for it instead of NaN. */
inline float lse_base2(float lse)
{
    return lse == -INFINITY ? INFINITY : lse * M_LOG2E_F;
}

__kernel void attn_bwd_pre(__global const float *restrict o, __global const float *restrict dout,
                           __global float *restrict dsum, const int q_len, const int q_heads,
                           const long o_sb, const long o_sh, const long o_ss)
{
    const int i = get_global_id(0);
    const int h = get_global_id(1);
    const int b = get_global_id(2);
    if (i >= q_len)
        return;
    const long at = b * o_sb + h * o_sh + (long)i * o_ss;
    float x = 0.0f;
    for (int d = 0; d < HEAD_DIM; ++d)
        x = fma(o[at + d], dout[at + d], x);
    dsum[((long)b * q_heads + h) * q_len + i] = x;
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_bwd_dq(__global const float *restrict q, __global const float *restrict k,
            __global const float *restrict v, __global const float *restrict dout,
            __global const float *restrict lse, __global const float *restrict dsum,
            __global float *restrict dq, __global const int *restrict tile_ptr,
            __global const int *restrict tile_col, __global const int *restrict tile_mask,
            __global const uint *restrict mask_bits, const int q_len, const int kv_len,
            const int q_heads, const int group, const int layout_heads, const int n_tile_rows,
            const float scale, const long q_sb, const long q_sh, const long q_ss,
            const long k_sb, const long k_sh, const long k_ss, const long v_sb, const long v_sh,
            const long v_ss, const long o_sb, const long o_sh, const long o_ss)
{
    const int lid = get_local_id(0);
    const int tr = get_group_id(0);
    const int hq = get_group_id(1);
    const int b = get_group_id(2);
    const int hk = hq / group;
    const int lh = layout_heads == 1 ? 0 : hq;
    const int lrow0 = lid * ROWS;
    const int row0 = tr * BLOCK_M + lrow0;
    const float scale_log2 = scale * M_LOG2E_F;

    __global const float *kb = k + b * k_sb + hk * k_sh;
    __global const float *vb = v + b * v_sb + hk * v_sh;

    /* The work-item's rows, transposed: element d of row r is lane r of
     * qt[d].  q carries scale*log2(e) so that scores come out in base 2. */
    floatr qt[HEAD_DIM], dot[HEAD_DIM], acc[HEAD_DIM];
    floatr lse2, drow;
    for (int r = 0; r < ROWS; ++r) {
        /* Rows past q_len work on a clamped copy and are never stored. */
        const int i = min(row0 + r, q_len - 1);
        const long row = ((long)b * q_heads + hq) * q_len + i;
        __global const float *qr = q + b * q_sb + hq * q_sh + (long)i * q_ss;
        __global const float *dr = dout + b * o_sb + hq * o_sh + (long)i * o_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            LANE(qt[d], r) = qr[d] * scale_log2;
            LANE(dot[d], r) = dr[d];
        }
        LANE(lse2, r) = lse_base2(lse[row]);
        LANE(drow, r) = dsum[row];
    }
    for (int d = 0; d < HEAD_DIM; ++d)
        acc[d] = (floatr)(0.0f);

#if USE_LOCAL
    __local float kt[BLOCK_N * HEAD_DIM];
    __local float vt[BLOCK_N * HEAD_DIM];
#endif
    const int e0 = tile_ptr[lh * (n_tile_rows + 1) + tr];
    const int e1 = tile_ptr[lh * (n_tile_rows + 1) + tr + 1];
    for (int e = e0; e < e1; ++e) {
        const int c0 = tile_col[e] * BLOCK_N;
        const int mi = tile_mask[e];
        __global const uint *mb = mask_bits + ((long)max(mi, 0) * BLOCK_M + lrow0) * MW;
#if USE_LOCAL
        barrier(CLK_LOCAL_MEM_FENCE);
        sparcl_stage_rows(kt, kb, k_ss, c0, BLOCK_N, kv_len - 1, lid);
        sparcl_stage_rows(vt, vb, v_ss, c0, BLOCK_N, kv_len - 1, lid);
        barrier(CLK_LOCAL_MEM_FENCE);
#define KROW(c) (kt + (c) * HEAD_DIM)
#define VROW(c) (vt + (c) * HEAD_DIM)
#else
        /* Columns past kv_len only occur in PARTIAL tiles, whose bits are 0
         * there; the clamped key keeps the loads in bounds. */
#define KROW(c) (kb + (long)min(c0 + (c), kv_len - 1) * k_ss)
#define VROW(c) (vb + (long)min(c0 + (c), kv_len - 1) * v_ss)
#endif
        for (int c = 0; c < BLOCK_N; ++c) {
            intr on = (intr)(-1);
            if (mi >= 0) {
                for (int r = 0; r < ROWS; ++r)
                    ILANE(on, r) = SPARCL_MASK_BIT(mb, r, c, MW) ? -1 : 0;
                if (!any(on))
                    continue;
            }
            floatr s = (floatr)(0.0f), dp = (floatr)(0.0f);
            for (int d = 0; d < HEAD_DIM; ++d) {
                s = fma(qt[d], (floatr)(KROW(c)[d]), s);
                dp = fma(dot[d], (floatr)(VROW(c)[d]), dp);
            }
            const floatr p = select((floatr)(0.0f), exp2(s - lse2), on);
            const floatr ds = select((floatr)(0.0f), p * (dp - drow), on);
            if (mi < 0)
                for (int d = 0; d < HEAD_DIM; ++d)
                    acc[d] = fma(ds, (floatr)(KROW(c)[d]), acc[d]);
            else
                for (int d = 0; d < HEAD_DIM; ++d)
                    acc[d] = fma(ds, select((floatr)(0.0f), (floatr)(KROW(c)[d]), on), acc[d]);
        }
#undef KROW
#undef VROW
    }

    for (int r = 0; r < ROWS; ++r) {
        const int i = row0 + r;
        if (i >= q_len)
            break;
        __global float *out = dq + b * q_sb + hq * q_sh + (long)i * q_ss;
        for (int d = 0; d < HEAD_DIM; ++d)
            out[d] = LANE(acc[d], r) * scale;
    }
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_bwd_dkv(__global const float *restrict q, __global const float *restrict k,
             __global const float *restrict v, __global const float *restrict dout,
             __global const float *restrict lse, __global const float *restrict dsum,
             __global float *restrict dk, __global float *restrict dv,
             __global const int *restrict col_ptr, __global const int *restrict col_row,
             __global const int *restrict col_mask, __global const uint *restrict mask_bits,
             const int q_len, const int kv_len, const int q_heads, const int group,
             const int layout_heads, const int n_tile_cols, const float scale, const long q_sb,
             const long q_sh, const long q_ss, const long k_sb, const long k_sh, const long k_ss,
             const long v_sb, const long v_sh, const long v_ss, const long o_sb, const long o_sh,
             const long o_ss)
{
    const int lid = get_local_id(0);
    const int tc = get_group_id(0);
    const int hk = get_group_id(1);
    const int b = get_group_id(2);
    const int lcol0 = lid * COLS;
    const int col0 = tc * BLOCK_N + lcol0;
    const float scale_log2 = scale * M_LOG2E_F;

    /* The work-item's keys, transposed (lane c = key col0 + c); k carries
     * scale*log2(e) so that scores come out in base 2. */
    floatc kt[HEAD_DIM], vt[HEAD_DIM], dka[HEAD_DIM], dva[HEAD_DIM];
    for (int c = 0; c < COLS; ++c) {
        /* Keys past kv_len work on a clamped copy and are never stored. */
        const int j = min(col0 + c, kv_len - 1);
        __global const float *kr = k + b * k_sb + hk * k_sh + (long)j * k_ss;
        __global const float *vr = v + b * v_sb + hk * v_sh + (long)j * v_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            LANE(kt[d], c) = kr[d] * scale_log2;
            LANE(vt[d], c) = vr[d];
        }
    }
    for (int d = 0; d < HEAD_DIM; ++d) {
        dka[d] = (floatc)(0.0f);
        dva[d] = (floatc)(0.0f);
    }

#if USE_LOCAL
    __local float qs[BLOCK_M * HEAD_DIM];
    __local float os[BLOCK_M * HEAD_DIM];
    __local float ls[BLOCK_M], ds_[BLOCK_M];
#endif
    /* The q heads sharing this kv head, in order: the GQA sum happens here,
     * in a fixed order, rather than through atomics. */
    for (int g = 0; g < group; ++g) {
        const int hq = hk * group + g;
        const int lh = layout_heads == 1 ? 0 : hq;
        __global const float *qb = q + b * q_sb + hq * q_sh;
        __global const float *ob = dout + b * o_sb + hq * o_sh;
        const long rowb = ((long)b * q_heads + hq) * q_len;
        const int e0 = col_ptr[lh * (n_tile_cols + 1) + tc];
        const int e1 = col_ptr[lh * (n_tile_cols + 1) + tc + 1];
        for (int e = e0; e < e1; ++e) {
            const int r0 = col_row[e] * BLOCK_M;
            const int mi = col_mask[e];
            const int nr = min(BLOCK_M, q_len - r0);
            __global const uint *mb = mask_bits + (long)max(mi, 0) * BLOCK_M * MW;
#if USE_LOCAL
            barrier(CLK_LOCAL_MEM_FENCE);
            sparcl_stage_rows(qs, qb, q_ss, r0, nr, q_len - 1, lid);
            sparcl_stage_rows(os, ob, o_ss, r0, nr, q_len - 1, lid);
            for (int r = lid; r < nr; r += WG_SIZE) {
                ls[r] = lse_base2(lse[rowb + r0 + r]);
                ds_[r] = dsum[rowb + r0 + r];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
#define QROW(r) (qs + (r) * HEAD_DIM)
#define DOROW(r) (os + (r) * HEAD_DIM)
#define LSE2(r) ls[r]
#define DROW(r) ds_[r]
#else
#define QROW(r) (qb + (long)(r0 + (r)) * q_ss)
#define DOROW(r) (ob + (long)(r0 + (r)) * o_ss)
#define LSE2(r) lse_base2(lse[rowb + r0 + (r)])
#define DROW(r) dsum[rowb + r0 + (r)]
#endif
            /* Rows past q_len may sit in FULL tiles (the tile is full over
             * its in-range rows), so the loop stops at nr. */
            for (int r = 0; r < nr; ++r) {
                intc on = (intc)(-1);
                if (mi >= 0) {
                    /* COLS is a power of two <= 16 and lcol0 a multiple of
                     * it, so the work-item's bits sit in one word. */
                    const uint w = mb[r * MW + (lcol0 >> 5)] >> (lcol0 & 31);
                    for (int c = 0; c < COLS; ++c)
                        ILANE(on, c) = (w >> c) & 1u ? -1 : 0;
                    if (!any(on))
                        continue;
                }
                floatc s = (floatc)(0.0f), dp = (floatc)(0.0f);
                for (int d = 0; d < HEAD_DIM; ++d) {
                    s = fma(kt[d], (floatc)(QROW(r)[d]), s);
                    dp = fma(vt[d], (floatc)(DOROW(r)[d]), dp);
                }
                const floatc p = select((floatc)(0.0f), exp2(s - LSE2(r)), on);
                const floatc ds = select((floatc)(0.0f), p * (dp - DROW(r)), on);
                if (mi < 0)
                    for (int d = 0; d < HEAD_DIM; ++d) {
                        dva[d] = fma(p, (floatc)(DOROW(r)[d]), dva[d]);
                        dka[d] = fma(ds, (floatc)(QROW(r)[d]), dka[d]);
                    }
                else
                    for (int d = 0; d < HEAD_DIM; ++d) {
                        dva[d] = fma(p, (floatc)(DOROW(r)[d]), dva[d]);
                        dka[d] = fma(ds, select((floatc)(0.0f), (floatc)(QROW(r)[d]), on),
                                     dka[d]);
                    }
            }
#undef QROW
#undef DOROW
#undef LSE2
#undef DROW
        }
    }

    for (int c = 0; c < COLS; ++c) {
        const int j = col0 + c;
        if (j >= kv_len)
            break;
        __global float *kout = dk + b * k_sb + hk * k_sh + (long)j * k_ss;
        __global float *vout = dv + b * v_sb + hk * v_sh + (long)j * v_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            kout[d] = LANE(dka[d], c) * scale;
            vout[d] = LANE(dva[d], c);
        }
    }
}
