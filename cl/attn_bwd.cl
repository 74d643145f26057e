/*
 * attn_bwd.cl -- fused block-sparse softmax attention, backward
 * (FlashAttention-2 style: the attention weights are recomputed tile by tile
 * from Q, K and the forward's LSE, never stored).
 *
 * With P = exp(scale q.k - LSE) and dS = P * (dO.v - D):
 *   dV = sum P dO,  dK = scale sum dS q,  dQ = scale sum dS k.
 * Two algorithms (ALGO), both deterministic (fixed summation orders, no
 * atomics: repeated runs are bit-identical):
 *   ALGO=0  attn_bwd_pre, then attn_bwd_dq and attn_bwd_dkv, which each
 *           recompute the scores (7 head-dimension products per pair):
 *           attn_bwd_dq: a work-group owns BLOCK_M query rows of one
 *           (batch, q head) (ROWS per work-item) and walks the forward tile
 *           list: dQ += dS K;
 *           attn_bwd_dkv: a work-group owns BLOCK_N keys of one (batch, kv
 *           head) (COLS per work-item) and walks the transposed tile list
 *           of every q head sharing that kv head (GQA), ROWS query rows at
 *           a time, so dK and dV are summed inside the group in a fixed
 *           order.  The GPU configuration (many work-items, USE_LOCAL).
 *   ALGO=1  one pass (5 products per pair): attn_bwd_pre zeroes the dQ
 *           targets, then attn_bwd_fused runs one work-item per (split s,
 *           kv head, batch); it walks key tiles s, s + SPLIT, ... and for
 *           each computes dK and dV as attn_bwd_dkv does while adding
 *           dS K into dQ rows in place.  With SPLIT = 1 the targets are dQ
 *           itself (a row belongs to one work-item); with SPLIT > 1 each
 *           split has its own partial dQ buffer (SPLIT x the size of dQ:
 *           O(N D)), summed in split order by attn_bwd_reduce.  Needs
 *           WG_SIZE = 1 and USE_LOCAL = 0 (the CPU configuration).
 * A row with LSE = -inf (it attends to nothing) gets P = 0, hence exactly
 * zero gradients; masked elements get P = 0 and dS = 0 from the tile bits,
 * never from -inf arithmetic, and in PARTIAL tiles their k (dQ) or q and
 * dO (dK, dV) rows are not read into the sums either (0 * NaN would be
 * NaN), so a NaN in a masked element never reaches a gradient.  NaN
 * otherwise flows: a row whose forward was NaN (NaN LSE, or NaN in O
 * through D) gives NaN in its dQ and in the dK (and, through P, dV) of the
 * keys it attends to.  With USE_LOCAL the group stages the rows it shares
 * (Q/dO tiles for dkv, K/V tiles for dq) in __local memory.
 *
 * Score vectors run across the rows (dq) or keys (dkv, fused) a work-item
 * owns, not along the head dimension: a work-item holds its rows or keys
 * transposed (packed once per tile in private memory), one vector of ROWS
 * (or COLS) lanes per head-dimension element, and every product is a
 * vector FMA against a broadcast element of the other side, so no
 * horizontal sums are needed (they cost as much as the FMAs on CPUs).
 * dK and dV take ROWS query rows per pass over their accumulators; the
 * fused dQ update runs along the head dimension in vectors of VEC floats.
 * EXP picks the exponential (exp2, native_exp2, or the polynomial of
 * common.clh, exact enough for the arguments s - LSE <= ~0 seen here, VEC
 * lanes at a time).
 * DTYPE is the storage of q, k, v, out, dout, dq, dk and dv (common.clh:
 * float, half or bfloat16); LSE, D and every sum stay float.  dK, dV and
 * ALGO=0's dQ are rounded to the storage type once, when stored.  ALGO=1
 * adds into its dQ targets across key tiles, so they are float: dq itself
 * only at DTYPE 0 with SPLIT = 1, else float partial buffers that
 * attn_bwd_reduce sums and rounds into dq (the host's choice).
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
#ifndef ALGO
#error "ALGO must be defined"
#endif
#ifndef EXP
#error "EXP must be defined"
#endif
#ifndef VEC
#error "VEC must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#if BLOCK_M != WG_SIZE * ROWS
#error "BLOCK_M must equal WG_SIZE * ROWS"
#endif
#if BLOCK_N % WG_SIZE != 0
#error "BLOCK_N must be a multiple of WG_SIZE"
#endif
#if ALGO == 1 && (WG_SIZE != 1 || USE_LOCAL)
#error "ALGO=1 needs WG_SIZE=1 and USE_LOCAL=0"
#endif

/* COLS = BLOCK_N / WG_SIZE, keys per work-item in attn_bwd_dkv, spelled
 * as a literal because it names a vector type; CBITS holds bit c in lane c. */
#if BLOCK_N == WG_SIZE
#define COLS 1
#elif BLOCK_N == 2 * WG_SIZE
#define COLS 2
#define CBITS ((int2)(1, 2))
#elif BLOCK_N == 4 * WG_SIZE
#define COLS 4
#define CBITS ((int4)(1, 2, 4, 8))
#elif BLOCK_N == 8 * WG_SIZE
#define COLS 8
#define CBITS ((int8)(1, 2, 4, 8, 16, 32, 64, 128))
#elif BLOCK_N == 16 * WG_SIZE
#define COLS 16
#define CBITS                                                                                      \
    ((int16)(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768))
#else
#error "BLOCK_N / WG_SIZE must be 1, 2, 4, 8 or 16"
#endif
#define MW ((BLOCK_N + 31) / 32)

/* floatr/intr: ROWS lanes (dq); floatc/intc: COLS lanes (dkv, fused). */
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
/* The lane mask of the low bit of w: -1 (on) or 0. */
#define LANES_ON(w) ((w)&1u ? -1 : 0)
#else
typedef SPARCL_CAT(float, COLS) floatc;
typedef SPARCL_CAT(int, COLS) intc;
#define LANES_ON(w) (((intc)((int)(w)) & CBITS) != 0)
#endif

/* The exponential of score vectors of ROWS (EXP2R) or COLS (EXP2C) lanes:
 * the builtins take any width; the polynomial of common.clh (EXP=2) takes
 * VEC lanes, so it runs over the score vector VEC lanes at a time through a
 * union (lanes past the vector's are zeros, computed and dropped). */
#if EXP == 2
#define DEF_EXP2_LANES(NAME, T, N)                                                                 \
    typedef union {                                                                                \
        T v;                                                                                       \
        float f[(N + VEC - 1) / VEC * VEC];                                                        \
    } NAME##_lanes;                                                                                \
    inline T NAME(T x)                                                                             \
    {                                                                                              \
        NAME##_lanes u;                                                                            \
        for (int i = N; i < (N + VEC - 1) / VEC * VEC; ++i)                                        \
            u.f[i] = 0.0f;                                                                         \
        u.v = x;                                                                                   \
        for (int i = 0; i < N; i += VEC)                                                           \
            STOREV(sparcl_exp2_nonpos(LOADV(u.f + i)), u.f + i);                                   \
        return u.v;                                                                                \
    }
DEF_EXP2_LANES(exp2_rows, floatr, ROWS)
DEF_EXP2_LANES(exp2_cols, floatc, COLS)
#define EXP2R exp2_rows
#define EXP2C exp2_cols
#else
#define EXP2R EXP2V
#define EXP2C EXP2V
#endif

/* Rows a walk shares across its work-items (K and V tiles in attn_bwd_dq,
 * q and dO tiles in the key-tile kernels) are read from __local float
 * copies with USE_LOCAL, else from global memory in the storage type. */
#if USE_LOCAL
#define RLOAD1(p) (*(p))
#define RLOADV(p) LOADV(p)
#else
#define RLOAD1(p) SLOAD1(p)
#define RLOADV(p) SLOADV(p)
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

/* D[i] = rowsum(dO[i] * O[i]), one work-item per row; also zeroes the row
 * in each of the `nzero` dQ targets of ALGO=1 (zero + s * z_split, with
 * the targets' strides). */
__kernel void attn_bwd_pre(__global const stor_t *restrict o, __global const stor_t *restrict dout,
                           __global float *restrict dsum, __global float *restrict zero,
                           const int nzero, const int q_len, const int q_heads, const long o_sb,
                           const long o_sh, const long o_ss, const long z_sb, const long z_sh,
                           const long z_ss, const long z_split)
{
    const int i = get_global_id(0);
    const int h = get_global_id(1);
    const int b = get_global_id(2);
    if (i >= q_len)
        return;
    const long at = b * o_sb + h * o_sh + (long)i * o_ss;
#if DTYPE == 0
    float x = 0.0f;
    for (int d = 0; d < HEAD_DIM; ++d)
        x = fma(SLOAD1(o + (at + d)), SLOAD1(dout + (at + d)), x);
    dsum[((long)b * q_heads + h) * q_len + i] = x;
    for (int s = 0; s < nzero; ++s) {
        __global float *zr = zero + s * z_split + b * z_sb + h * z_sh + (long)i * z_ss;
        for (int d = 0; d < HEAD_DIM; ++d)
            zr[d] = 0.0f;
    }
#else
    /* Half storage: VEC elements per conversion (POCL's one-element
     * vload_half and vstore_half_rte run several times slower per element
     * than its vector forms: this kernel and the reduction cost the f16
     * backward over a window 7% of its key loop's time scalar). */
    float x = 0.0f; /* summed in element order, as the fp32 kernel does */
    for (int d = 0; d < NV; ++d) {
        const floatv ov = SLOADV(o + (at + d * VEC)), gv = SLOADV(dout + (at + d * VEC));
        for (int l = 0; l < VEC; ++l)
            x = fma(((const float *)&ov)[l], ((const float *)&gv)[l], x);
    }
    for (int t = 0; t < NT; ++t)
        x = fma(SLOAD1(o + (at + NV * VEC + t)), SLOAD1(dout + (at + NV * VEC + t)), x);
    dsum[((long)b * q_heads + h) * q_len + i] = x;
    for (int s = 0; s < nzero; ++s) {
        __global float *zr = zero + s * z_split + b * z_sb + h * z_sh + (long)i * z_ss;
        for (int d = 0; d < NV; ++d)
            STOREV((floatv)(0.0f), zr + d * VEC);
        for (int t = 0; t < NT; ++t)
            zr[NV * VEC + t] = 0.0f;
    }
#endif
}

/* dQ = sum over splits of the partial buffers (contiguous rows, split
 * after split, p_split floats apart), in split order, rounded once to the
 * storage type; one row per work-item. */
__kernel void attn_bwd_reduce(__global const float *restrict part, __global stor_t *restrict dq,
                              const int nsplit, const int q_len, const int q_heads,
                              const long p_split, const long q_sb, const long q_sh,
                              const long q_ss)
{
    const int i = get_global_id(0);
    const int h = get_global_id(1);
    const int b = get_global_id(2);
    if (i >= q_len)
        return;
    __global const float *src = part + (((long)b * q_heads + h) * q_len + i) * HEAD_DIM;
    __global stor_t *out = dq + b * q_sb + h * q_sh + (long)i * q_ss;
#if DTYPE == 0
    for (int d = 0; d < HEAD_DIM; ++d) {
        float x = src[d];
        for (int s = 1; s < nsplit; ++s)
            x += src[s * p_split + d];
        SSTORE1(x, out + d);
    }
#else /* VEC at a time, as attn_bwd_pre; the same sums, in the same order */
    for (int d = 0; d < NV; ++d) {
        floatv x = LOADV(src + d * VEC);
        for (int s = 1; s < nsplit; ++s)
            x += LOADV(src + (s * p_split + d * VEC));
        SSTOREV(x, out + d * VEC);
    }
    for (int t = 0; t < NT; ++t) {
        float x = src[NV * VEC + t];
        for (int s = 1; s < nsplit; ++s)
            x += src[s * p_split + NV * VEC + t];
        SSTORE1(x, out + (NV * VEC + t));
    }
#endif
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_bwd_dq(__global const stor_t *restrict q, __global const stor_t *restrict k,
            __global const stor_t *restrict v, __global const stor_t *restrict dout,
            __global const float *restrict lse, __global const float *restrict dsum,
            __global stor_t *restrict dq, __global const int *restrict tile_ptr,
            __global const int *restrict tile_col, __global const int *restrict tile_mask,
            __global const uint *restrict mask_bits, const int q_len, const int kv_len,
            const int q_heads, const int group, const int layout_heads, const int n_tile_rows,
            const float scale, const long q_sb, const long q_sh, const long q_ss,
            const long k_sb, const long k_sh, const long k_ss, const long v_sb, const long v_sh,
            const long v_ss, const long o_sb, const long o_sh, const long o_ss)
{
#if ALGO == 0
    const int lid = get_local_id(0);
    const int tr = get_group_id(0);
    const int hq = get_group_id(1);
    const int b = get_group_id(2);
    const int hk = hq / group;
    const int lh = layout_heads == 1 ? 0 : hq;
    const int lrow0 = lid * ROWS;
    const int row0 = tr * BLOCK_M + lrow0;
    const float scale_log2 = scale * M_LOG2E_F;

    __global const stor_t *kb = k + b * k_sb + hk * k_sh;
    __global const stor_t *vb = v + b * v_sb + hk * v_sh;

    /* The work-item's rows, transposed: element d of row r is lane r of
     * qt[d].  q carries scale*log2(e) so that scores come out in base 2. */
    floatr qt[HEAD_DIM], dot[HEAD_DIM], acc[HEAD_DIM];
    floatr lse2, drow;
    for (int r = 0; r < ROWS; ++r) {
        /* Rows past q_len work on a clamped copy and are never stored. */
        const int i = min(row0 + r, q_len - 1);
        const long row = ((long)b * q_heads + hq) * q_len + i;
        __global const stor_t *qr = q + b * q_sb + hq * q_sh + (long)i * q_ss;
        __global const stor_t *dr = dout + b * o_sb + hq * o_sh + (long)i * o_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            LANE(qt[d], r) = SLOAD1(qr + d) * scale_log2;
            LANE(dot[d], r) = SLOAD1(dr + d);
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
                s = fma(qt[d], (floatr)(RLOAD1(KROW(c) + d)), s);
                dp = fma(dot[d], (floatr)(RLOAD1(VROW(c) + d)), dp);
            }
            const floatr p = select((floatr)(0.0f), EXP2R(s - lse2), on);
            const floatr ds = select((floatr)(0.0f), p * (dp - drow), on);
            if (mi < 0)
                for (int d = 0; d < HEAD_DIM; ++d)
                    acc[d] = fma(ds, (floatr)(RLOAD1(KROW(c) + d)), acc[d]);
            else
                for (int d = 0; d < HEAD_DIM; ++d)
                    acc[d] = fma(ds, select((floatr)(0.0f), (floatr)(RLOAD1(KROW(c) + d)), on),
                                 acc[d]);
        }
#undef KROW
#undef VROW
    }

    for (int r = 0; r < ROWS; ++r) {
        const int i = row0 + r;
        if (i >= q_len)
            break;
        __global stor_t *out = dq + b * q_sb + hq * q_sh + (long)i * q_ss;
        for (int d = 0; d < HEAD_DIM; ++d)
            SSTORE1(LANE(acc[d], r) * scale, out + d);
    }
#endif
}

/* The arguments both key-tile kernels take, and their names in a call. */
#define KEY_TILE_PARAMS                                                                            \
    __global const stor_t *restrict q, __global const stor_t *restrict k,                          \
        __global const stor_t *restrict v, __global const stor_t *restrict dout,                   \
        __global const float *restrict lse, __global const float *restrict dsum,                   \
        __global stor_t *restrict dk, __global stor_t *restrict dv,                                \
        __global const int *restrict col_ptr, __global const int *restrict col_row,                \
        __global const int *restrict col_mask, __global const uint *restrict mask_bits,            \
        const int q_len, const int kv_len, const int q_heads, const int group,                     \
        const int layout_heads, const int n_tile_cols, const float scale, const long q_sb,         \
        const long q_sh, const long q_ss, const long k_sb, const long k_sh, const long k_ss,       \
        const long v_sb, const long v_sh, const long v_ss, const long o_sb, const long o_sh,       \
        const long o_ss
#define KEY_TILE_ARGS                                                                              \
    q, k, v, dout, lse, dsum, dk, dv, col_ptr, col_row, col_mask, mask_bits, q_len, kv_len,        \
        q_heads, group, layout_heads, n_tile_cols, scale, q_sb, q_sh, q_ss, k_sb, k_sh, k_ss,      \
        v_sb, v_sh, v_ss, o_sb, o_sh, o_ss

/* dQ rows dqr[0..ROWS-1] += dS[r] K over the work-item's COLS keys (ds
 * already carries the scale), along the head dimension in vectors of VEC;
 * element (r, c) only where KEEP(r, c), and only rows below n are stored. */
// clang-format off
#define DQ_UPDATE(KEEP)                                                                            \
    do {                                                                                           \
        for (int x = 0; x < NV; ++x) {                                                             \
            floatv acc[ROWS];                                                                      \
            _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                       \
                acc[r] = LOADV(dqr[r] + x * VEC);                                                  \
            for (int c = 0; c < COLS; ++c) {                                                       \
                const floatv kv = SLOADV(krow[c] + x * VEC);                                       \
                _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                   \
                    if (KEEP(r, c))                                                                \
                        acc[r] = fma((floatv)(LANE(ds[r], c)), kv, acc[r]);                        \
            }                                                                                      \
            _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                       \
                if (r < n)                                                                         \
                    STOREV(acc[r], dqr[r] + x * VEC);                                              \
        }                                                                                          \
        for (int t = NV * VEC; t < HEAD_DIM; ++t) {                                                \
            float acc[ROWS];                                                                       \
            _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                       \
                acc[r] = dqr[r][t];                                                                \
            for (int c = 0; c < COLS; ++c)                                                         \
                _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                   \
                    if (KEEP(r, c))                                                                \
                        acc[r] = fma(LANE(ds[r], c), SLOAD1(krow[c] + t), acc[r]);                 \
            _Pragma("unroll") for (int r = 0; r < ROWS; ++r)                                       \
                if (r < n)                                                                         \
                    dqr[r][t] = acc[r];                                                            \
        }                                                                                          \
    } while (0)
// clang-format on
#define KEEP_ALL(r, c) 1
#define KEEP_BIT(r, c) ILANE(on[r], c)

/* dV += P^T dO and dK += dS^T q for the chunk's rows, with the row element
 * x of row r taken as ROWVAL(x, r): all of it (ROW_ALL) or only in the
 * lanes whose element is attended (ROW_ON). */
// clang-format off
#define DKV_UPDATE(ROWVAL)                                                                         \
    do {                                                                                           \
        for (int d = 0; d < HEAD_DIM; ++d) {                                                       \
            floatc a = dva[d], bk = dka[d];                                                        \
            _Pragma("unroll") for (int r = 0; r < ROWS; ++r) {                                     \
                a = fma(s[r], ROWVAL(OC(r, d), r), a);                                             \
                bk = fma(ds[r], ROWVAL(QC(r, d), r), bk);                                          \
            }                                                                                      \
            dva[d] = a;                                                                            \
            dka[d] = bk;                                                                           \
        }                                                                                          \
    } while (0)
// clang-format on
#define ROW_ALL(x, r) ((floatc)(x))
#define ROW_ON(x, r) select((floatc)(0.0f), (floatc)(x), on[r])

/* One key tile (tc) for the work-item's COLS keys, lid * COLS onwards: the
 * row tiles the transposed list gives for every q head of kv head hk, ROWS
 * rows at a time, into dK and dV; with `fused`, also dS K into the dQ
 * targets dqt (strides t_sb, t_sh, t_ss). */
inline void key_tile(KEY_TILE_PARAMS, const int fused, __global float *restrict dqt,
                     const long t_sb, const long t_sh, const long t_ss, const int tc,
                     const int lid, const int b, const int hk
#if USE_LOCAL
                     ,
                     __local float *qs, __local float *os, __local float *ls, __local float *ds_
#endif
)
{
    const int lcol0 = lid * COLS;
    const int col0 = tc * BLOCK_N + lcol0;
    const float scale_log2 = scale * M_LOG2E_F;
    __global const stor_t *kb = k + b * k_sb + hk * k_sh;

    /* The work-item's keys, transposed (lane c = key col0 + c); k carries
     * scale*log2(e) so that scores come out in base 2.  krow: the keys as
     * rows, unscaled, for dQ. */
    floatc kt[HEAD_DIM], vt[HEAD_DIM], dka[HEAD_DIM], dva[HEAD_DIM];
    __global const stor_t *krow[COLS];
    for (int c = 0; c < COLS; ++c) {
        /* Keys past kv_len work on a clamped copy and are never stored. */
        const int j = min(col0 + c, kv_len - 1);
        krow[c] = kb + (long)j * k_ss;
        __global const stor_t *vr = v + b * v_sb + hk * v_sh + (long)j * v_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            LANE(kt[d], c) = SLOAD1(krow[c] + d) * scale_log2;
            LANE(vt[d], c) = SLOAD1(vr + d);
        }
    }
    for (int d = 0; d < HEAD_DIM; ++d) {
        dka[d] = (floatc)(0.0f);
        dva[d] = (floatc)(0.0f);
    }

    /* The q heads sharing this kv head, in order: the GQA sum happens here,
     * in a fixed order, rather than through atomics. */
    for (int g = 0; g < group; ++g) {
        const int hq = hk * group + g;
        const int lh = layout_heads == 1 ? 0 : hq;
        __global const stor_t *qb = q + b * q_sb + hq * q_sh;
        __global const stor_t *ob = dout + b * o_sb + hq * o_sh;
        __global float *dqb = dqt + b * t_sb + hq * t_sh;
        const long rowb = ((long)b * q_heads + hq) * q_len;
        const int e0 = col_ptr[lh * (n_tile_cols + 1) + tc];
        const int e1 = col_ptr[lh * (n_tile_cols + 1) + tc + 1];
        for (int e = e0; e < e1; ++e) {
            const int r0 = col_row[e] * BLOCK_M;
            const int mi = col_mask[e];
            /* Rows past q_len may sit in FULL tiles (the tile is full over
             * its in-range rows), so the walk stops at nr. */
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
#define QROW(r) (qs + (r)*HEAD_DIM)
#define DOROW(r) (os + (r)*HEAD_DIM)
#define LSE2(r) ls[r]
#define DROW(r) ds_[r]
#else
#define QROW(r) (qb + (long)(r0 + (r)) * q_ss)
#define DOROW(r) (ob + (long)(r0 + (r)) * o_ss)
#define LSE2(r) lse_base2(lse[rowb + r0 + (r)])
#define DROW(r) dsum[rowb + r0 + (r)]
#endif
            for (int rr = 0; rr < nr; rr += ROWS) {
                const int n = min(ROWS, nr - rr);
                /* Lane c of on[r]: row rr + r attends to key lcol0 + c.
                 * COLS is a power of two <= 16 and lcol0 a multiple of it,
                 * so the work-item's bits sit in one word. */
                intc on[ROWS];
                int live = 0;
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    on[r] = (intc)(0);
                    if (r < n)
                        on[r] = mi < 0 ? (intc)(-1)
                                       : LANES_ON(mb[(rr + r) * MW + (lcol0 >> 5)] >>
                                                  (lcol0 & 31));
                    live |= any(on[r]);
                }
                if (!live)
                    continue;
                /* The rows: with ROWS = 1 (the GPU configuration) read in
                 * place; otherwise copied, rows past n as zeros with P = 0. */
                float l2[ROWS], dc[ROWS];
#if ROWS == 1
#define QC(r, d) RLOAD1(QROW(rr) + (d))
#define OC(r, d) RLOAD1(DOROW(rr) + (d))
                l2[0] = LSE2(rr);
                dc[0] = DROW(rr);
#else
#define QC(r, d) qc[r][d]
#define OC(r, d) oc[r][d]
                float qc[ROWS][HEAD_DIM], oc[ROWS][HEAD_DIM];
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    const int ok = r < n, ri = rr + min(r, n - 1);
                    for (int x = 0; x < NV; ++x) {
                        STOREV(ok ? RLOADV(QROW(ri) + x * VEC) : (floatv)(0.0f), qc[r] + x * VEC);
                        STOREV(ok ? RLOADV(DOROW(ri) + x * VEC) : (floatv)(0.0f),
                               oc[r] + x * VEC);
                    }
                    for (int d = NV * VEC; d < HEAD_DIM; ++d) {
                        qc[r][d] = ok ? RLOAD1(QROW(ri) + d) : 0.0f;
                        oc[r][d] = ok ? RLOAD1(DOROW(ri) + d) : 0.0f;
                    }
                    l2[r] = ok ? LSE2(ri) : INFINITY;
                    dc[r] = ok ? DROW(ri) : 0.0f;
                }
#endif
                floatc s[ROWS], ds[ROWS];
#pragma unroll
                for (int r = 0; r < ROWS; ++r)
                    s[r] = (floatc)(0.0f);
                for (int d = 0; d < HEAD_DIM; ++d) {
                    const floatc x = kt[d];
#pragma unroll
                    for (int r = 0; r < ROWS; ++r)
                        s[r] = fma((floatc)(QC(r, d)), x, s[r]);
                }
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    s[r] = select((floatc)(0.0f), EXP2C(s[r] - l2[r]), on[r]); /* P */
                    ds[r] = (floatc)(0.0f);
                }
                for (int d = 0; d < HEAD_DIM; ++d) {
                    const floatc x = vt[d];
#pragma unroll
                    for (int r = 0; r < ROWS; ++r)
                        ds[r] = fma((floatc)(OC(r, d)), x, ds[r]);
                }
                /* dS of a masked element is 0 even where the row's D is
                 * NaN (a NaN q row makes out, and so D, NaN): 0 * NaN
                 * would reach the keys the row does not attend. */
#pragma unroll
                for (int r = 0; r < ROWS; ++r)
                    ds[r] = select((floatc)(0.0f), s[r] * (ds[r] - dc[r]), on[r]);
                /* A FULL tile's whole chunk reads every row; otherwise a
                 * masked element's q and dO stay out (0 * NaN). */
                if (mi < 0 && n == ROWS)
                    DKV_UPDATE(ROW_ALL);
                else
                    DKV_UPDATE(ROW_ON);
                if (fused) {
                    __global float *dqr[ROWS];
#pragma unroll
                    for (int r = 0; r < ROWS; ++r) {
                        dqr[r] = dqb + (long)min(r0 + rr + r, q_len - 1) * t_ss;
                        ds[r] *= scale;
                    }
                    if (mi < 0 && n == ROWS)
                        DQ_UPDATE(KEEP_ALL);
                    else
                        DQ_UPDATE(KEEP_BIT);
                }
            }
#undef QC
#undef OC
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
        __global stor_t *kout = dk + b * k_sb + hk * k_sh + (long)j * k_ss;
        __global stor_t *vout = dv + b * v_sb + hk * v_sh + (long)j * v_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            SSTORE1(LANE(dka[d], c) * scale, kout + d);
            SSTORE1(LANE(dva[d], c), vout + d);
        }
    }
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_bwd_dkv(KEY_TILE_PARAMS)
{
#if ALGO == 0
#if USE_LOCAL
    __local float qs[BLOCK_M * HEAD_DIM];
    __local float os[BLOCK_M * HEAD_DIM];
    __local float ls[BLOCK_M], ds_[BLOCK_M];
#endif
    /* No dQ targets without `fused`: any pointer serves. */
    key_tile(KEY_TILE_ARGS, 0, (__global float *)dk, 0, 0, 0, get_group_id(0), get_local_id(0),
             get_group_id(2), get_group_id(1)
#if USE_LOCAL
                 ,
             qs, os, ls, ds_
#endif
    );
#endif
}

/* ALGO=1: work-item (s, hk, b) takes key tiles s, s + SPLIT, ... of kv
 * head hk; dqt is its split's dQ target (strides t_sb, t_sh, t_ss). */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_bwd_fused(KEY_TILE_PARAMS, __global float *restrict dqt, const long t_sb, const long t_sh,
               const long t_ss, const long t_split)
{
#if ALGO == 1
    const int s = get_global_id(0), nsplit = get_global_size(0);
    const int hk = get_global_id(1), b = get_global_id(2);
    for (int tc = s; tc < n_tile_cols; tc += nsplit)
        key_tile(KEY_TILE_ARGS, 1, dqt + s * t_split, t_sb, t_sh, t_ss, tc, 0, b, hk);
#endif
}
