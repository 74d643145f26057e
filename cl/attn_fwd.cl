/*
 * attn_fwd.cl -- fused block-sparse softmax attention, forward.
 *
 * One work-group owns BLOCK_M query rows of one (batch, head); each of its
 * WG_SIZE work-items owns ROWS of them.  The group walks only the key tiles
 * the tiled layout lists for its tile row, BLOCK_N keys at a time, keeping a
 * running max and sum per row (online softmax, FlashAttention-2 style), so
 * no score matrix is ever stored.  PARTIAL tiles carry one bit per element;
 * FULL tiles need no mask work.  With USE_LOCAL the group stages each K/V
 * tile in __local memory with barriers (the GPU configuration); without it
 * each work-item reads K/V directly (the fast configuration on POCL).
 * Dot products run over the head dimension in vectors of VEC floats.
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

#define NV (HEAD_DIM / VEC) /* whole vectors per row */
#define NT (HEAD_DIM % VEC) /* scalar tail */
#define NT_ALLOC (NT > 0 ? NT : 1)
#define MW ((BLOCK_N + 31) / 32)
#if NV < 1
#error "VEC must not exceed HEAD_DIM"
#endif

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_fwd(__global const float *restrict q, __global const float *restrict k,
         __global const float *restrict v, __global float *restrict o,
         __global float *restrict lse, const int write_lse,
         __global const int *restrict tile_ptr, __global const int *restrict tile_col,
         __global const int *restrict tile_mask, __global const uint *restrict mask_bits,
         const int q_len, const int kv_len, const int q_heads, const int group,
         const int layout_heads, const int n_tile_rows, const float scale_log2,
         const long q_sb, const long q_sh, const long q_ss, const long k_sb, const long k_sh,
         const long k_ss, const long v_sb, const long v_sh, const long v_ss, const long o_sb,
         const long o_sh, const long o_ss)
{
    const int lid = get_local_id(0);
    const int tr = get_group_id(0);
    const int hq = get_group_id(1);
    const int b = get_group_id(2);
    const int hk = hq / group;
    const int lh = layout_heads == 1 ? 0 : hq;
    const int lrow0 = lid * ROWS;
    const int row0 = tr * BLOCK_M + lrow0;

    __global const float *qb = q + b * q_sb + hq * q_sh;
    __global const float *kb = k + b * k_sb + hk * k_sh;
    __global const float *vb = v + b * v_sb + hk * v_sh;

    floatv qv[ROWS][NV], acc[ROWS][NV];
    float qt[ROWS][NT_ALLOC], acct[ROWS][NT_ALLOC];
    float m[ROWS], l[ROWS];
    for (int r = 0; r < ROWS; ++r) {
        /* Rows past q_len compute on a clamped copy and are never stored. */
        const int i = min(row0 + r, q_len - 1);
        __global const float *qr = qb + (long)i * q_ss;
        for (int d = 0; d < NV; ++d) {
            qv[r][d] = LOADV(qr + d * VEC) * scale_log2;
            acc[r][d] = (floatv)(0.0f);
        }
        for (int t = 0; t < NT; ++t) {
            qt[r][t] = qr[NV * VEC + t] * scale_log2;
            acct[r][t] = 0.0f;
        }
        m[r] = -INFINITY;
        l[r] = 0.0f;
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
#if USE_LOCAL
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int x = lid; x < BLOCK_N * HEAD_DIM; x += WG_SIZE) {
            const int c = x / HEAD_DIM, d = x - c * HEAD_DIM;
            const int j = min(c0 + c, kv_len - 1);
            kt[x] = kb[(long)j * k_ss + d];
            vt[x] = vb[(long)j * v_ss + d];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#define KROW(c) (kt + (c) * HEAD_DIM)
#define VROW(c) (vt + (c) * HEAD_DIM)
#else
        /* Columns past kv_len only occur in PARTIAL tiles, whose bits are 0
         * there; reading a clamped key keeps the loads in bounds. */
#define KROW(c) (kb + (long)min(c0 + (c), kv_len - 1) * k_ss)
#define VROW(c) (vb + (long)min(c0 + (c), kv_len - 1) * v_ss)
#endif
        float s[ROWS][BLOCK_N];
        for (int c = 0; c < BLOCK_N; ++c) {
            for (int r = 0; r < ROWS; ++r) {
                floatv a = (floatv)(0.0f);
                for (int d = 0; d < NV; ++d)
                    a = fma(qv[r][d], LOADV(KROW(c) + d * VEC), a);
                float x = HSUMV(a);
                for (int t = 0; t < NT; ++t)
                    x = fma(qt[r][t], KROW(c)[NV * VEC + t], x);
                s[r][c] = x;
            }
        }
        if (mi >= 0) {
            __global const uint *mb = mask_bits + ((long)mi * BLOCK_M + lrow0) * MW;
            for (int r = 0; r < ROWS; ++r)
                for (int c = 0; c < BLOCK_N; ++c)
                    if (!SPARCL_MASK_BIT(mb, r, c, MW))
                        s[r][c] = -INFINITY;
        }
        for (int r = 0; r < ROWS; ++r) {
            float mx = m[r];
            for (int c = 0; c < BLOCK_N; ++c)
                mx = fmax(mx, s[r][c]);
            if (mx == -INFINITY) { /* nothing attended so far */
                for (int c = 0; c < BLOCK_N; ++c)
                    s[r][c] = 0.0f;
                continue;
            }
            const float alpha = exp2(m[r] - mx);
            float sum = 0.0f;
            for (int c = 0; c < BLOCK_N; ++c) {
                const float p = exp2(s[r][c] - mx);
                s[r][c] = p;
                sum += p;
            }
            l[r] = l[r] * alpha + sum;
            m[r] = mx;
            for (int d = 0; d < NV; ++d)
                acc[r][d] *= alpha;
            for (int t = 0; t < NT; ++t)
                acct[r][t] *= alpha;
        }
        for (int c = 0; c < BLOCK_N; ++c) {
            for (int d = 0; d < NV; ++d) {
                const floatv vv = LOADV(VROW(c) + d * VEC);
                for (int r = 0; r < ROWS; ++r)
                    acc[r][d] = fma((floatv)(s[r][c]), vv, acc[r][d]);
            }
            for (int t = 0; t < NT; ++t) {
                const float vs = VROW(c)[NV * VEC + t];
                for (int r = 0; r < ROWS; ++r)
                    acct[r][t] = fma(s[r][c], vs, acct[r][t]);
            }
        }
#undef KROW
#undef VROW
    }

    for (int r = 0; r < ROWS; ++r) {
        const int i = row0 + r;
        if (i >= q_len)
            break;
        __global float *orow = o + b * o_sb + hq * o_sh + (long)i * o_ss;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int d = 0; d < NV; ++d)
            STOREV(acc[r][d] * inv, orow + d * VEC);
        for (int t = 0; t < NT; ++t)
            orow[NV * VEC + t] = acct[r][t] * inv;
        if (write_lse)
            lse[((long)b * q_heads + hq) * q_len + i] =
                l[r] > 0.0f ? (m[r] + log2(l[r])) * M_LN2_F : -INFINITY;
    }
}
