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
 * zero gradients; masked elements get P = 0 from the tile bits, never from
 * -inf arithmetic.  With USE_LOCAL the group stages the rows it shares
 * (Q/dO tiles for dkv, K/V tiles for dq) in __local memory.
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
#ifndef VEC
#error "VEC must be defined"
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

#define COLS (BLOCK_N / WG_SIZE) /* keys per work-item in attn_bwd_dkv */
/* NV, NT, NT_ALLOC, MW: common.clh */
#if NV < 1
#error "VEC must not exceed HEAD_DIM"
#endif

/* A row of HEAD_DIM floats held in private memory: NV vectors + NT tail. */
typedef struct {
    floatv v[NV];
    float t[NT_ALLOC];
} prow;

/* The helpers that read memory are macros, not functions, so that `src`
 * may live in __global or __local memory alike (OpenCL 1.2 has no generic
 * pointers); the arithmetic works on private rows. */

/* dst = src * mul */
#define ROW_LOAD(dst, src, mul)                                                   \
    do {                                                                          \
        for (int d_ = 0; d_ < NV; ++d_)                                           \
            (dst).v[d_] = LOADV((src) + d_ * VEC) * (mul);                        \
        for (int t_ = 0; t_ < NT; ++t_)                                           \
            (dst).t[t_] = (src)[NV * VEC + t_] * (mul);                           \
    } while (0)

/* Stores a private row times `mul` to global memory. */
#define ROW_STORE(src, dst, mul)                                                  \
    do {                                                                          \
        for (int d_ = 0; d_ < NV; ++d_)                                           \
            STOREV((src).v[d_] * (mul), (dst) + d_ * VEC);                        \
        for (int t_ = 0; t_ < NT; ++t_)                                           \
            (dst)[NV * VEC + t_] = (src).t[t_] * (mul);                           \
    } while (0)

inline void row_zero(prow *r)
{
    for (int d = 0; d < NV; ++d)
        r->v[d] = (floatv)(0.0f);
    for (int t = 0; t < NT; ++t)
        r->t[t] = 0.0f;
}

inline float row_dot(const prow *a, const prow *b)
{
    floatv s = (floatv)(0.0f);
    for (int d = 0; d < NV; ++d)
        s = fma(a->v[d], b->v[d], s);
    float x = HSUMV(s);
    for (int t = 0; t < NT; ++t)
        x = fma(a->t[t], b->t[t], x);
    return x;
}

/* acc += a * x, both private. */
inline void row_axpy(prow *acc, float a, const prow *x)
{
    for (int d = 0; d < NV; ++d)
        acc->v[d] = fma((floatv)(a), x->v[d], acc->v[d]);
    for (int t = 0; t < NT; ++t)
        acc->t[t] = fma(a, x->t[t], acc->t[t]);
}

/* The forward's LSE in base 2, with a fully masked row (-inf) turned into
 * +inf so that exp2(s - lse2) is 0 for it instead of NaN. */
inline float lse_base2(float lse)
{
    return lse == -INFINITY ? INFINITY : lse * M_LOG2E_F;
}

/* P and dS of one element: s2 = scale*log2(e) q.k, dp = dO.v. */
inline float grad_score(float s2, float lse2, float dp, float d_row, int attends, float *p_out)
{
    const float p = attends ? exp2(s2 - lse2) : 0.0f;
    *p_out = p;
    return p * (dp - d_row);
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
    prow orow, drow;
    ROW_LOAD(orow, o + at, 1.0f);
    ROW_LOAD(drow, dout + at, 1.0f);
    dsum[((long)b * q_heads + h) * q_len + i] = row_dot(&orow, &drow);
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

    prow qr[ROWS], dor[ROWS], acc[ROWS];
    float lse2[ROWS], drow[ROWS];
    for (int r = 0; r < ROWS; ++r) {
        /* Rows past q_len work on a clamped copy and are never stored. */
        const int i = min(row0 + r, q_len - 1);
        const long row = ((long)b * q_heads + hq) * q_len + i;
        ROW_LOAD(qr[r], q + b * q_sb + hq * q_sh + (long)i * q_ss, scale_log2);
        ROW_LOAD(dor[r], dout + b * o_sb + hq * o_sh + (long)i * o_ss, 1.0f);
        row_zero(&acc[r]);
        lse2[r] = lse_base2(lse[row]);
        drow[r] = dsum[row];
    }

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
            prow kc, vc;
            ROW_LOAD(kc, KROW(c), 1.0f);
            ROW_LOAD(vc, VROW(c), 1.0f);
            float ds[ROWS];
            for (int r = 0; r < ROWS; ++r) {
                float p;
                const int on = mi < 0 || SPARCL_MASK_BIT(mb, r, c, MW);
                ds[r] = grad_score(row_dot(&qr[r], &kc), lse2[r], row_dot(&dor[r], &vc),
                                   drow[r], on, &p);
            }
            for (int r = 0; r < ROWS; ++r)
                row_axpy(&acc[r], ds[r], &kc);
        }
#undef KROW
#undef VROW
    }

    for (int r = 0; r < ROWS; ++r) {
        const int i = row0 + r;
        if (i >= q_len)
            break;
        ROW_STORE(acc[r], dq + b * q_sb + hq * q_sh + (long)i * q_ss, scale);
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

    prow kr[COLS], vr[COLS], dka[COLS], dva[COLS];
    for (int c = 0; c < COLS; ++c) {
        /* Keys past kv_len work on a clamped copy and are never stored. */
        const int j = min(col0 + c, kv_len - 1);
        ROW_LOAD(kr[c], k + b * k_sb + hk * k_sh + (long)j * k_ss, scale_log2);
        ROW_LOAD(vr[c], v + b * v_sb + hk * v_sh + (long)j * v_ss, 1.0f);
        row_zero(&dka[c]);
        row_zero(&dva[c]);
    }

#if USE_LOCAL
    __local float qt[BLOCK_M * HEAD_DIM];
    __local float ot[BLOCK_M * HEAD_DIM];
    __local float lt[BLOCK_M], dt[BLOCK_M];
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
            sparcl_stage_rows(qt, qb, q_ss, r0, nr, q_len - 1, lid);
            sparcl_stage_rows(ot, ob, o_ss, r0, nr, q_len - 1, lid);
            for (int r = lid; r < nr; r += WG_SIZE) {
                lt[r] = lse_base2(lse[rowb + r0 + r]);
                dt[r] = dsum[rowb + r0 + r];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
#define QROW(r) (qt + (r) * HEAD_DIM)
#define DOROW(r) (ot + (r) * HEAD_DIM)
#define LSE2(r) lt[r]
#define DROW(r) dt[r]
#else
#define QROW(r) (qb + (long)(r0 + (r)) * q_ss)
#define DOROW(r) (ob + (long)(r0 + (r)) * o_ss)
#define LSE2(r) lse_base2(lse[rowb + r0 + (r)])
#define DROW(r) dsum[rowb + r0 + (r)]
#endif
            /* Rows past q_len may sit in FULL tiles (the tile is full over
             * its in-range rows), so the loop stops at nr. */
            for (int r = 0; r < nr; ++r) {
                const float l2 = LSE2(r), dr = DROW(r);
                prow qi, doi;
                ROW_LOAD(qi, QROW(r), 1.0f);
                ROW_LOAD(doi, DOROW(r), 1.0f);
                float p[COLS], ds[COLS];
                for (int c = 0; c < COLS; ++c) {
                    const int on = mi < 0 || SPARCL_MASK_BIT(mb, r, lcol0 + c, MW);
                    ds[c] = grad_score(row_dot(&kr[c], &qi), l2, row_dot(&vr[c], &doi), dr, on,
                                       &p[c]);
                }
                for (int c = 0; c < COLS; ++c) {
                    row_axpy(&dva[c], p[c], &doi);
                    row_axpy(&dka[c], ds[c], &qi);
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
        ROW_STORE(dka[c], dk + b * k_sb + hk * k_sh + (long)j * k_ss, scale);
        ROW_STORE(dva[c], dv + b * v_sb + hk * v_sh + (long)j * v_ss, 1.0f);
    }
}
