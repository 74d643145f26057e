/*
 * attn_fwd.cl -- fused block-sparse softmax attention, forward.
 *
 * One work-group owns BLOCK_M query rows of one (batch, head); each of its
 * WG_SIZE work-items owns ROWS of them.  The group walks only the key tiles
 * the tiled layout lists for its tile row, BLOCK_N keys at a time, keeping a
 * running max and sum per row (online softmax, FlashAttention-2 style), so
 * no score matrix is ever stored.  PARTIAL tiles carry one bit per element;
 * FULL tiles need no mask work.
 *
 * Scores of a tile are held as vectors of VEC keys, so the softmax, the mask
 * and the running sums work on whole vectors.  Two ways to compute them:
 *   KT=0  dot products along the head dimension against K as given (VEC
 *         floats at a time, one horizontal sum per (row, key));
 *   KT=1  against K packed per tile as [HEAD_DIM][BLOCK_N] by attn_fwd_pack_k
 *         (a workspace filled before each call), so each step is one vector
 *         of VEC keys times a broadcast query element: no horizontal sums.
 *         This was the big win on CPUs (shared/notes/pocl.md).
 * With USE_LOCAL the group stages each K/V tile in __local memory with
 * barriers (the GPU configuration); without it each work-item reads K/V
 * directly (the fast configuration on POCL).  EXP picks the softmax's
 * exponential: exp2, native_exp2, or sparcl_exp2_nonpos (common.clh), a
 * short polynomial that is enough for arguments <= 0.  The P.V product runs
 * over the head dimension in vectors of VEC floats, one output vector at a
 * time, so only ROWS accumulators are live at once.
 *
 * DTYPE is the storage of q, k, v and out (common.clh: float, half or
 * bfloat16); elements are widened to float as they are loaded, everything
 * after that is float, and out is rounded once as it is stored.  The packed
 * K of KT=1 and the __local tiles of USE_LOCAL hold floats, so only the
 * loads from the caller's tensors (SLOAD*) and the store of out (SSTORE*)
 * know the storage type.
 *
 * Non-finite inputs give what the double reference gives: a row whose
 * attended scores hold a NaN or +inf (inf - inf), or are all -inf, gets
 * NaN in its output and LSE.  NaN flows through the arithmetic (s - max,
 * the exponential, the sums) rather than through branches, and a per-row
 * flag records whether the row attends to any key at all, so that only a
 * row with no attended key gets 0 and -inf.  Masked elements never touch
 * a row: their scores are selected away, and PARTIAL tiles skip their
 * values in P.V (their weight is 0, but 0 * NaN would be NaN).
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
#ifndef KT
#error "KT must be defined"
#endif
#ifndef EXP
#error "EXP must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#if BLOCK_M != WG_SIZE * ROWS
#error "BLOCK_M must equal WG_SIZE * ROWS"
#endif
#if BLOCK_N % VEC != 0
#error "BLOCK_N must be a multiple of VEC"
#endif

#define NV (HEAD_DIM / VEC) /* whole vectors per row */
#define NT (HEAD_DIM % VEC) /* scalar tail */
#define NT_ALLOC (NT > 0 ? NT : 1)
#define NKV (BLOCK_N / VEC) /* score vectors per row of a tile */
#define MW ((BLOCK_N + 31) / 32)
#define TILE_FLOATS (BLOCK_N * HEAD_DIM)
#if NV < 1
#error "VEC must not exceed HEAD_DIM"
#endif

/* The kernel's k: the packed float workspace (KT=1) or the caller's K. */
#if KT
#define KSTOR float
#else
#define KSTOR stor_t
#endif

/* One row of a tile's scores, as vectors (softmax) or floats (P.V). */
typedef union {
    floatv v[NKV];
    float f[BLOCK_N];
} score_row;

/* Packs K for KT=1: tile t of head (b, hk) becomes [HEAD_DIM][BLOCK_N] at
 * kt + ((b * kv_heads + hk) * n_tiles + t) * TILE_FLOATS; keys past kv_len
 * are zero (their mask bits are 0).  One work-item per tile. */
__kernel void attn_fwd_pack_k(__global const stor_t *restrict k, __global float *restrict kt,
                              const int kv_len, const int kv_heads, const int n_tiles,
                              const long k_sb, const long k_sh, const long k_ss)
{
    const int t = get_global_id(0), hk = get_global_id(1), b = get_global_id(2);
    if (t >= n_tiles)
        return;
    __global const stor_t *src = k + b * k_sb + hk * k_sh;
    __global float *dst = kt + (((long)b * kv_heads + hk) * n_tiles + t) * TILE_FLOATS;
    /* VEC keys at a time: gathered loads, one vector store per (d, x);
     * stores are the scarcer port on CPUs. */
    for (int x = 0; x < NKV; ++x) {
        __global const stor_t *rows[VEC];
        int keep[VEC];
#pragma unroll
        for (int l = 0; l < VEC; ++l) {
            const int j = t * BLOCK_N + x * VEC + l;
            rows[l] = src + (long)min(j, kv_len - 1) * k_ss;
            keep[l] = j < kv_len;
        }
        for (int d = 0; d < HEAD_DIM; ++d) {
            float col[VEC];
#pragma unroll
            for (int l = 0; l < VEC; ++l)
                col[l] = keep[l] ? SLOAD1(rows[l] + d) : 0.0f; /* not * 0: the key may be NaN */
            STOREV(LOADV(col), dst + d * BLOCK_N + x * VEC);
        }
    }
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_fwd(__global const stor_t *restrict q, __global const KSTOR *restrict k,
         __global const stor_t *restrict v, __global stor_t *restrict o, __global float *restrict lse,
         const int write_lse, __global const int *restrict tile_ptr,
         __global const int *restrict tile_col, __global const int *restrict tile_mask,
         __global const uint *restrict mask_bits, const int q_len, const int kv_len,
         const int q_heads, const int group, const int layout_heads, const int n_tile_rows,
         const float scale_log2, const long q_sb, const long q_sh, const long q_ss, const long k_sb,
         const long k_sh, const long k_ss, const long v_sb, const long v_sh, const long v_ss,
         const long o_sb, const long o_sh, const long o_ss)
{
    const int lid = get_local_id(0);
    const int tr = get_group_id(0);
    const int hq = get_group_id(1);
    const int b = get_group_id(2);
    const int hk = hq / group;
    const int lh = layout_heads == 1 ? 0 : hq;
    const int lrow0 = lid * ROWS;
    const int row0 = tr * BLOCK_M + lrow0;

    __global const stor_t *qb = q + b * q_sb + hq * q_sh;
    __global const stor_t *vb = v + b * v_sb + hk * v_sh;
#if KT
    /* k is the packed workspace; its tiles follow each other per head. */
    const int n_tiles = (kv_len + BLOCK_N - 1) / BLOCK_N;
    __global const float *kb = k + ((long)b * (q_heads / group) + hk) * n_tiles * TILE_FLOATS;
    float qs[ROWS][HEAD_DIM];
#else
    __global const stor_t *kb = k + b * k_sb + hk * k_sh;
    floatv qv[ROWS][NV];
    float qt[ROWS][NT_ALLOC];
#endif
    floatv acc[ROWS][NV], lsum[ROWS];
    float acct[ROWS][NT_ALLOC];
    float m[ROWS];
    int seen[ROWS]; /* the row attends to some key */
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        /* Rows past q_len compute on a clamped copy and are never stored. */
        const int i = min(row0 + r, q_len - 1);
        __global const stor_t *qr = qb + (long)i * q_ss;
#if KT
        for (int d = 0; d < HEAD_DIM; ++d)
            qs[r][d] = SLOAD1(qr + d) * scale_log2;
#else
#pragma unroll
        for (int d = 0; d < NV; ++d)
            qv[r][d] = SLOADV(qr + d * VEC) * scale_log2;
#pragma unroll
        for (int t = 0; t < NT; ++t)
            qt[r][t] = SLOAD1(qr + NV * VEC + t) * scale_log2;
#endif
#pragma unroll
        for (int d = 0; d < NV; ++d)
            acc[r][d] = (floatv)(0.0f);
#pragma unroll
        for (int t = 0; t < NT; ++t)
            acct[r][t] = 0.0f;
        m[r] = -INFINITY;
        seen[r] = 0;
        lsum[r] = (floatv)(0.0f);
    }

#if USE_LOCAL
    __local float kl[TILE_FLOATS];
    __local float vl[TILE_FLOATS];
#endif

    const int e0 = tile_ptr[lh * (n_tile_rows + 1) + tr];
    const int e1 = tile_ptr[lh * (n_tile_rows + 1) + tr + 1];
    for (int e = e0; e < e1; ++e) {
        const int c0 = tile_col[e] * BLOCK_N;
        const int mi = tile_mask[e];
#if KT
        __global const float *ktile = kb + (long)tile_col[e] * TILE_FLOATS;
#endif
#if USE_LOCAL
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int x = lid; x < TILE_FLOATS; x += WG_SIZE) {
            const int c = x / HEAD_DIM, d = x - c * HEAD_DIM;
            const int j = min(c0 + c, kv_len - 1);
#if KT
            kl[x] = ktile[x];
#else
            kl[x] = SLOAD1(kb + (long)j * k_ss + d);
#endif
            vl[x] = SLOAD1(vb + (long)j * v_ss + d);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#define KTILE kl
#define KROW(c) (kl + (c)*HEAD_DIM)
#define VROW(c) (vl + (c)*HEAD_DIM)
#define TLOADV(p) LOADV(p) /* the tiles are float */
#define TLOAD1(p) (*(p))
#else
        /* Columns past kv_len only occur in PARTIAL tiles, whose bits are 0
         * there; reading a clamped key keeps the loads in bounds. */
#define KTILE ktile
#define KROW(c) (kb + (long)min(c0 + (c), kv_len - 1) * k_ss)
#define VROW(c) (vb + (long)min(c0 + (c), kv_len - 1) * v_ss)
#define TLOADV(p) SLOADV(p) /* the caller's tensors */
#define TLOAD1(p) SLOAD1(p)
#endif
        score_row s[ROWS];
#if KT
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
            for (int x = 0; x < NKV; ++x)
                s[r].v[x] = (floatv)(0.0f);
        for (int d = 0; d < HEAD_DIM; ++d) {
            floatv kv[NKV];
#pragma unroll
            for (int x = 0; x < NKV; ++x)
                kv[x] = LOADV(KTILE + d * BLOCK_N + x * VEC);
#pragma unroll
            for (int r = 0; r < ROWS; ++r)
#pragma unroll
                for (int x = 0; x < NKV; ++x)
                    s[r].v[x] = fma((floatv)(qs[r][d]), kv[x], s[r].v[x]);
        }
#else
        for (int c = 0; c < BLOCK_N; ++c) {
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                floatv a = (floatv)(0.0f);
#pragma unroll
                for (int d = 0; d < NV; ++d)
                    a = fma(qv[r][d], TLOADV(KROW(c) + d * VEC), a);
                float x = HSUMV(a);
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    x = fma(qt[r][t], TLOAD1(KROW(c) + NV * VEC + t), x);
                s[r].f[c] = x;
            }
        }
#endif
        __global const uint *mb = mask_bits + ((long)max(mi, 0) * BLOCK_M + lrow0) * MW;
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
            seen[r] |= sparcl_tile_row_attends(mi < 0, mb, r);
        if (mi >= 0) {
#pragma unroll
            for (int r = 0; r < ROWS; ++r)
#pragma unroll
                for (int x = 0; x < NKV; ++x)
                    s[r].v[x] = sparcl_mask_scores(s[r].v[x], mb + r * MW, x);
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            floatv mv = s[r].v[0];
#pragma unroll
            for (int x = 1; x < NKV; ++x)
                mv = SPARCL_MAXNN(mv, s[r].v[x]);
            const float mx = SPARCL_MAXNN(m[r], HMAXV(mv));
            if (mx == -INFINITY) { /* only -inf so far, or a NaN the max dropped */
#pragma unroll
                for (int x = 0; x < NKV; ++x) {
                    s[r].v[x] = select((floatv)(0.0f), s[r].v[x], isnan(s[r].v[x]));
                    lsum[r] += s[r].v[x];
                }
                continue;
            }
            if (mx > m[r]) { /* rescale only when the running max grows */
                const floatv alpha = EXP2V((floatv)(m[r] - mx));
                lsum[r] *= alpha;
#pragma unroll
                for (int d = 0; d < NV; ++d)
                    acc[r][d] *= alpha;
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    acct[r][t] *= FIRSTV(alpha);
                m[r] = mx;
            }
            floatv sum = lsum[r];
#pragma unroll
            for (int x = 0; x < NKV; ++x) {
                s[r].v[x] = EXP2V(s[r].v[x] - mx);
                sum += s[r].v[x];
            }
            lsum[r] = sum;
        }
        /* P.V, element (r, c) only where KEEP(r, c): every element of a
         * FULL tile; the attended ones of a PARTIAL tile (a masked
         * element's weight is 0, but its value may be NaN). */
        // clang-format off
#define PV_TILE(KEEP)                                                        \
        do {                                                                 \
            _Pragma("unroll")                                                \
            for (int d = 0; d < NV; ++d)                                     \
                for (int c = 0; c < BLOCK_N; ++c) {                          \
                    const floatv vv = TLOADV(VROW(c) + d * VEC);             \
                    _Pragma("unroll")                                        \
                    for (int r = 0; r < ROWS; ++r)                           \
                        if (KEEP(r, c))                                      \
                            acc[r][d] = fma((floatv)(s[r].f[c]), vv, acc[r][d]); \
                }                                                            \
            for (int c = 0; c < BLOCK_N; ++c)                                \
                _Pragma("unroll")                                            \
                for (int t = 0; t < NT; ++t) {                               \
                    const float vs = TLOAD1(VROW(c) + NV * VEC + t);         \
                    _Pragma("unroll")                                        \
                    for (int r = 0; r < ROWS; ++r)                           \
                        if (KEEP(r, c))                                      \
                            acct[r][t] = fma(s[r].f[c], vs, acct[r][t]);     \
                }                                                            \
        } while (0)
        // clang-format on
#define PV_ALL(r, c) 1
#define PV_BIT(r, c) SPARCL_MASK_BIT(mb, r, c, MW)
        if (mi < 0)
            PV_TILE(PV_ALL);
        else
            PV_TILE(PV_BIT);
#undef PV_TILE
#undef PV_ALL
#undef PV_BIT
#undef KTILE
#undef KROW
#undef VROW
#undef TLOADV
#undef TLOAD1
    }

#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int i = row0 + r;
        if (i >= q_len)
            break;
        __global stor_t *orow = o + b * o_sb + hq * o_sh + (long)i * o_ss;
        /* l >= 1 for a row with a finite max (its own term is 1), NaN for
         * a NaN or +inf score; 0 for attended keys whose scores are all
         * -inf: 0/0, so NaN too. */
        const float ls = HSUMV(lsum[r]);
        const float l = seen[r] && ls == 0.0f ? NAN : ls;
        const float inv = seen[r] ? 1.0f / l : 0.0f;
#pragma unroll
        for (int d = 0; d < NV; ++d)
            SSTOREV(acc[r][d] * inv, orow + d * VEC);
#pragma unroll
        for (int t = 0; t < NT; ++t)
            SSTORE1(acct[r][t] * inv, orow + NV * VEC + t);
        if (write_lse)
            lse[((long)b * q_heads + hq) * q_len + i] =
                seen[r] ? (m[r] + log2(l)) * M_LN2_F : -INFINITY;
    }
}
