/*
 * attn_entmax_bwd.cl -- the backward of fused block-sparse attention with a
 * sparse normalization (sparsemax, 1.5-entmax, alpha-entmax; the forward is
 * attn_entmax.cl).  The weights are recomputed tile by tile from Q, K and
 * the forward's threshold tau (its lse output), never stored, as the
 * softmax backward recomputes them from the LSE.
 *
 * With z_j = (alpha - 1) s_j, s_j = scale q.k_j, x_j = z_j - tau and, on the
 * support (x_j > 0), the unnormalized weight u_j = x_j^(1 / (alpha - 1)) and
 * its Jacobian weight w_j = u_j^(2 - alpha) = u_j / x_j (1 for sparsemax,
 * x_j for 1.5-entmax): P_j = u_j / U with U = sum u (the forward divides by
 * the same sum), and the Jacobian of entmax gives, for g_j = dO.v_j,
 *   dS_j = W w_j (g_j - G),  G = sum w g / sum w,  W = U^(alpha - 2)
 * (the Jacobian weights of the normalized P are w_j W), then
 *   dQ = scale sum dS k,  dK = scale sum dS q,  dV = sum P dO.
 * Off the support everything is exactly 0, so g is only computed there:
 * with the usual small sparsemax supports most pairs cost one dot product.
 *
 * Two entry points, enqueued in this order by the plan:
 *   attn_entmax_bwd_dq   a work-group owns BLOCK_M query rows (ROWS per
 *                        work-item, vectors of VEC along the head dimension,
 *                        the forward's own score routine) and walks the row
 *                        tile list once: it sums U, sum w, sum w g and the two
 *                        vectors A = sum w g k and B = sum w k, then writes
 *                        dQ = scale W (A - G B) and the row's G, 1 / U and W
 *                        to `stats` (3 floats per row, the only workspace);
 *   attn_entmax_bwd_dkv  a work-group owns BLOCK_N keys (COLS per work-item,
 *                        as vector lanes) and walks the transposed tile list
 *                        of every q head sharing the kv head, in a fixed
 *                        order: no atomics, bit-identical results run to run.
 * Rows with tau = -inf (they attend to nothing) get no support, hence exact
 * zeros.  Masked elements never enter a sum (the tile bits gate them, and
 * in PARTIAL tiles their q rows are not read into dK), nor do keys off a
 * row's support (a NaN in their v stays out).  A row with tau = NaN (its
 * forward was undefined) gets NaN in dQ and in the dK and dV of every key
 * it attends to.  DTYPE is the storage of q, k, v, dout and of dq, dk, dv
 * (common.clh: float, half or bfloat16): every sum stays float, tau and the
 * stats are float, and each gradient element is rounded once, by the
 * work-item that owns its row or key.
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
#ifndef COLS
#error "COLS must be defined"
#endif
#ifndef VEC
#error "VEC must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#ifndef NORM
#error "NORM must be defined (1 sparsemax, 2 1.5-entmax, 3 alpha-entmax)"
#endif
#if BLOCK_M != WG_SIZE * ROWS || BLOCK_N != WG_SIZE * COLS
#error "BLOCK_M and BLOCK_N must equal WG_SIZE * ROWS and WG_SIZE * COLS"
#endif
#if NV < 1
#error "VEC must not exceed HEAD_DIM"
#endif

/* Lanes of the dK/dV work-item: one key each. */
#if COLS == 1
typedef float keysf;
typedef int keysi;
#elif COLS == 2 || COLS == 4 || COLS == 8 || COLS == 16
typedef SPARCL_CAT(float, COLS) keysf;
typedef SPARCL_CAT(int, COLS) keysi;
#else
#error "COLS must be 1, 2, 4, 8 or 16"
#endif
/* A scalar condition as a lane mask: -1 when true, as vector compares
 * give (a scalar compare gives 1, which any() and select() read as false
 * on vectors' most-significant-bit rule). */
#if COLS == 1
#define KEYS_MASK(cond) ((cond) ? -1 : 0)
#else
#define KEYS_MASK(cond) (cond)
#endif
#define KEY_LANE(x, c) (((float *)&(x))[c])
#define KEY_ILANE(x, c) (((int *)&(x))[c])

/* The forward's tau as the kernels use it: a row that attends to nothing
 * (-inf) gets +inf, so that no x = z - tau is positive. */
inline float usable_tau(float tau)
{
    return tau == -INFINITY ? INFINITY : tau;
}

/* u = x^(1 / (alpha - 1)) and w = u^(2 - alpha) = u / x of support
 * elements x > 0, scalar (dq) or lanes (dkv); e = 1 / (alpha - 1) of x's
 * type. */
#if NORM == 1
#define WEIGHT_U(x, e) (x)
#define WEIGHT_W(x, u) 1.0f
#elif NORM == 2
#define WEIGHT_U(x, e) ((x) * (x))
#define WEIGHT_W(x, u) (x)
#else
#define WEIGHT_U(x, e) powr((x), (e))
#define WEIGHT_W(x, u) ((u) / (x))
#endif

/* W = U^(alpha - 2) for a row with U > 0. */
inline float row_factor(float u_sum, float alpha)
{
#if NORM == 1
    return 1.0f;
#elif NORM == 2
    return rsqrt(u_sum);
#else
    return powr(u_sum, alpha - 2.0f);
#endif
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_entmax_bwd_dq(__global const stor_t *restrict q, __global const stor_t *restrict k,
                   __global const stor_t *restrict v, __global const stor_t *restrict dout,
                   __global const float *restrict lse, __global float *restrict stats,
                   __global stor_t *restrict dq, __global const int *restrict tile_ptr,
                   __global const int *restrict tile_col, __global const int *restrict tile_mask,
                   __global const uint *restrict mask_bits, const int q_len, const int kv_len,
                   const int q_heads, const int group, const int layout_heads,
                   const int n_tile_rows, const float scale, const long q_sb, const long q_sh,
                   const long q_ss, const long k_sb, const long k_sh, const long k_ss,
                   const long v_sb, const long v_sh, const long v_ss, const long o_sb,
                   const long o_sh, const long o_ss, const float alpha, const long n_rows)
{
    const int lid = get_local_id(0);
    const int tr = get_group_id(0);
    const int hq = get_group_id(1);
    const int b = get_group_id(2);
    const int hk = hq / group;
    const int lh = layout_heads == 1 ? 0 : hq;
    const int lrow0 = lid * ROWS;
    const int row0 = tr * BLOCK_M + lrow0;
    const float inv_am1 = 1.0f / (alpha - 1.0f);

    __global const stor_t *kb = k + b * k_sb + hk * k_sh;
    __global const stor_t *vb = v + b * v_sb + hk * v_sh;

    /* q carries (alpha - 1) * scale, so that scores come out as z. */
    floatv qv[ROWS][NV], dov[ROWS][NV], ga[ROWS][NV], gb[ROWS][NV];
    float qt[ROWS][NT_ALLOC], dot_[ROWS][NT_ALLOC], gat[ROWS][NT_ALLOC], gbt[ROWS][NT_ALLOC];
    float tau[ROWS], u_sum[ROWS], w_sum[ROWS], wg_sum[ROWS];
    for (int r = 0; r < ROWS; ++r) {
        /* Rows past q_len compute on a clamped copy and are never stored. */
        const int i = min(row0 + r, q_len - 1);
        __global const stor_t *qr = q + b * q_sb + hq * q_sh + (long)i * q_ss;
        __global const stor_t *dr = dout + b * o_sb + hq * o_sh + (long)i * o_ss;
        const float zscale = scale * (alpha - 1.0f);
        for (int d = 0; d < NV; ++d) {
            qv[r][d] = SLOADV(qr + d * VEC) * zscale;
            dov[r][d] = SLOADV(dr + d * VEC);
            ga[r][d] = gb[r][d] = (floatv)(0.0f);
        }
        for (int t = 0; t < NT; ++t) {
            qt[r][t] = SLOAD1(qr + (NV * VEC + t)) * zscale;
            dot_[r][t] = SLOAD1(dr + (NV * VEC + t));
            gat[r][t] = gbt[r][t] = 0.0f;
        }
        tau[r] = usable_tau(lse[((long)b * q_heads + hq) * q_len + i]);
        u_sum[r] = w_sum[r] = wg_sum[r] = 0.0f;
    }

    const int e0 = tile_ptr[lh * (n_tile_rows + 1) + tr];
    const int e1 = tile_ptr[lh * (n_tile_rows + 1) + tr + 1];
    for (int e = e0; e < e1; ++e) {
        const int c0 = tile_col[e] * BLOCK_N;
        const int mi = tile_mask[e];
        float s[ROWS][BLOCK_N];
        __global const uint *mb = mask_bits + ((long)max(mi, 0) * BLOCK_M + lrow0) * MW;
        sparcl_tile_scores(s, qv, qt, kb, k_ss, c0, kv_len, mi < 0, mb);
        for (int c = 0; c < BLOCK_N; ++c) {
            /* Keys past kv_len sit in PARTIAL tiles with their bits clear
             * (s = -inf): never on a support. */
            __global const stor_t *kr = kb + (long)min(c0 + c, kv_len - 1) * k_ss;
            __global const stor_t *vr = vb + (long)min(c0 + c, kv_len - 1) * v_ss;
            for (int r = 0; r < ROWS; ++r) {
                const float x = s[r][c] - tau[r];
                if (!(x > 0.0f))
                    continue;
                const float u = WEIGHT_U(x, inv_am1), w = WEIGHT_W(x, u);
                floatv gv = (floatv)(0.0f);
                for (int d = 0; d < NV; ++d)
                    gv = fma(dov[r][d], SLOADV(vr + d * VEC), gv);
                float g = HSUMV(gv);
                for (int t = 0; t < NT; ++t)
                    g = fma(dot_[r][t], SLOAD1(vr + (NV * VEC + t)), g);
                u_sum[r] += u;
                w_sum[r] += w;
                wg_sum[r] += w * g;
                const float wgk = w * g;
                for (int d = 0; d < NV; ++d) {
                    const floatv kx = SLOADV(kr + d * VEC);
                    ga[r][d] = fma((floatv)(wgk), kx, ga[r][d]);
                    gb[r][d] = fma((floatv)(w), kx, gb[r][d]);
                }
                for (int t = 0; t < NT; ++t) {
                    gat[r][t] = fma(wgk, SLOAD1(kr + (NV * VEC + t)), gat[r][t]);
                    gbt[r][t] = fma(w, SLOAD1(kr + (NV * VEC + t)), gbt[r][t]);
                }
            }
        }
    }

    for (int r = 0; r < ROWS; ++r) {
        const int i = row0 + r;
        if (i >= q_len)
            break;
        const long row = ((long)b * q_heads + hq) * q_len + i;
        const int undefined = isnan(tau[r]);
        const int has = u_sum[r] > 0.0f;
        const float gbar = undefined ? NAN : has ? wg_sum[r] / w_sum[r] : 0.0f;
        const float inv_u = undefined ? NAN : has ? 1.0f / u_sum[r] : 0.0f;
        const float wfac = undefined ? NAN : has ? row_factor(u_sum[r], alpha) : 0.0f;
        stats[row] = gbar;
        stats[n_rows + row] = inv_u;
        stats[2 * n_rows + row] = wfac;
        const float f = scale * wfac;
        __global stor_t *out = dq + b * q_sb + hq * q_sh + (long)i * q_ss;
        for (int d = 0; d < NV; ++d)
            SSTOREV(f * fma((floatv)(-gbar), gb[r][d], ga[r][d]), out + d * VEC);
        for (int t = 0; t < NT; ++t)
            SSTORE1(f * fma(-gbar, gbt[r][t], gat[r][t]), out + (NV * VEC + t));
    }
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void attn_entmax_bwd_dkv(
    __global const stor_t *restrict q, __global const stor_t *restrict k,
    __global const stor_t *restrict v, __global const stor_t *restrict dout,
    __global const float *restrict lse, __global const float *restrict stats,
    __global stor_t *restrict dk, __global stor_t *restrict dv, __global const int *restrict col_ptr,
    __global const int *restrict col_row, __global const int *restrict col_mask,
    __global const uint *restrict mask_bits, const int q_len, const int kv_len, const int q_heads,
    const int group, const int layout_heads, const int n_tile_cols, const float scale,
    const long q_sb, const long q_sh, const long q_ss, const long k_sb, const long k_sh,
    const long k_ss, const long v_sb, const long v_sh, const long v_ss, const long o_sb,
    const long o_sh, const long o_ss, const float alpha, const long n_rows)
{
    const int lid = get_local_id(0);
    const int tc = get_group_id(0);
    const int hk = get_group_id(1);
    const int b = get_group_id(2);
    const int lcol0 = lid * COLS;
    const int col0 = tc * BLOCK_N + lcol0;
    const float inv_am1 = 1.0f / (alpha - 1.0f);

    /* The work-item's keys, transposed (lane c = key col0 + c); k carries
     * (alpha - 1) * scale so that scores come out as z. */
    keysf kt[HEAD_DIM], vt[HEAD_DIM], dka[HEAD_DIM], dva[HEAD_DIM];
    for (int c = 0; c < COLS; ++c) {
        /* Keys past kv_len work on a clamped copy and are never stored. */
        const int j = min(col0 + c, kv_len - 1);
        __global const stor_t *kr = k + b * k_sb + hk * k_sh + (long)j * k_ss;
        __global const stor_t *vr = v + b * v_sb + hk * v_sh + (long)j * v_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            KEY_LANE(kt[d], c) = SLOAD1(kr + d) * (scale * (alpha - 1.0f));
            KEY_LANE(vt[d], c) = SLOAD1(vr + d);
        }
    }
    for (int d = 0; d < HEAD_DIM; ++d)
        dka[d] = dva[d] = (keysf)(0.0f);

    for (int g = 0; g < group; ++g) {
        const int hq = hk * group + g;
        const int lh = layout_heads == 1 ? 0 : hq;
        __global const stor_t *qb = q + b * q_sb + hq * q_sh;
        __global const stor_t *ob = dout + b * o_sb + hq * o_sh;
        const long rowb = ((long)b * q_heads + hq) * q_len;
        const int e0 = col_ptr[lh * (n_tile_cols + 1) + tc];
        const int e1 = col_ptr[lh * (n_tile_cols + 1) + tc + 1];
        for (int e = e0; e < e1; ++e) {
            const int r0 = col_row[e] * BLOCK_M;
            const int mi = col_mask[e];
            __global const uint *mb = mask_bits + (long)max(mi, 0) * BLOCK_M * MW;
            /* Rows past q_len may sit in FULL tiles: stop at the last. */
            const int nr = min(BLOCK_M, q_len - r0);
            for (int r = 0; r < nr; ++r) {
                keysi on = (keysi)(-1);
                if (mi >= 0) {
                    /* COLS is a power of two <= 16 and lcol0 a multiple of
                     * it: the work-item's bits sit in one word. */
                    const uint bits = mb[r * MW + (lcol0 >> 5)] >> (lcol0 & 31);
                    for (int c = 0; c < COLS; ++c)
                        KEY_ILANE(on, c) = (bits >> c) & 1u ? -1 : 0;
                    if (!any(on))
                        continue;
                }
                const long row = rowb + r0 + r;
                const float tau = usable_tau(lse[row]);
                __global const stor_t *qr = qb + (long)(r0 + r) * q_ss;
                __global const stor_t *dr = ob + (long)(r0 + r) * o_ss;
                keysf z = (keysf)(0.0f);
                for (int d = 0; d < HEAD_DIM; ++d)
                    z = fma(kt[d], (keysf)(SLOAD1(qr + d)), z);
                const keysf x = z - tau;
                /* An undefined row (NaN tau) counts every attended key. */
                const keysi sup = on & (KEYS_MASK(x > 0.0f) | (keysi)(isnan(tau) ? -1 : 0));
                if (!any(sup))
                    continue;
                keysf gsc = (keysf)(0.0f);
                for (int d = 0; d < HEAD_DIM; ++d)
                    gsc = fma(vt[d], (keysf)(SLOAD1(dr + d)), gsc);
                const keysf xs = select((keysf)(0.0f), x, sup);
                const keysf u = WEIGHT_U(xs, (keysf)(inv_am1));
                const float gbar = stats[row], inv_u = stats[n_rows + row];
                const float f = scale * stats[2 * n_rows + row];
                const keysf p = select((keysf)(0.0f), u * inv_u, sup);
                const keysf ds = select((keysf)(0.0f), f * WEIGHT_W(xs, u) * (gsc - gbar), sup);
                if (mi < 0)
                    for (int d = 0; d < HEAD_DIM; ++d) {
                        dva[d] = fma(p, (keysf)(SLOAD1(dr + d)), dva[d]);
                        dka[d] = fma(ds, (keysf)(SLOAD1(qr + d)), dka[d]);
                    }
                else
                    for (int d = 0; d < HEAD_DIM; ++d) {
                        dva[d] = fma(p, select((keysf)(0.0f), (keysf)(SLOAD1(dr + d)), on), dva[d]);
                        dka[d] = fma(ds, select((keysf)(0.0f), (keysf)(SLOAD1(qr + d)), on), dka[d]);
                    }
            }
        }
    }

    for (int c = 0; c < COLS; ++c) {
        const int j = col0 + c;
        if (j >= kv_len)
            break;
        __global stor_t *kout = dk + b * k_sb + hk * k_sh + (long)j * k_ss;
        __global stor_t *vout = dv + b * v_sb + hk * v_sh + (long)j * v_ss;
        for (int d = 0; d < HEAD_DIM; ++d) {
            SSTORE1(KEY_LANE(dka[d], c), kout + d);
            SSTORE1(KEY_LANE(dva[d], c), vout + d);
        }
    }
}
