/*
 * attn_entmax.cl -- fused block-sparse attention with sparse normalizations:
 * sparsemax (alpha = 2), 1.5-entmax and alpha-entmax for alpha in (1, 2].
 *
 * Weights of row i are p_j = [z_j - tau]_+ ^ (1 / (alpha - 1)) with
 * z_j = (alpha - 1) * scale * q_i . k_j over the attended keys j, and tau
 * such that they sum to 1.  Unlike softmax, tau depends on every attended
 * score at once, so an online update is impossible; storing the row's
 * scores would cost a workspace proportional to the attended pairs.
 * Instead each work-item walks its rows' tile list (as attn_fwd does) in
 * passes, recomputing the scores each time:
 *   1. keep the TOPK largest scores of each row (sorted, private) and solve
 *      for tau on them: exact formulas from the sorted values for NORM 1
 *      and 2, bisection for NORM 3.  If the support found is smaller than
 *      the buffer (or the buffer holds the whole row), that tau is the
 *      row's: every score outside lies at or below it.
 *   2. only otherwise (a support larger than TOPK): more passes.  NORM 1
 *      and 2: grid passes, each evaluating the mass at GRID + 1 thresholds
 *      of the bracket [lo, hi] and keeping the piece where it crosses 1;
 *      the mass is a closed form on the scores above a threshold, exact up
 *      to the smallest of them, which finishes as soon as that piece is
 *      reached.  NORM 3: Newton passes on the mass, which is convex and
 *      decreasing in tau, so steps from below never overshoot; one pow per
 *      score and pass, quadratic convergence to fp32 resolution.
 *   3. accumulate p_j v_j, dividing by the sum of the weights at the end.
 * Everything is relative to the row maximum m = z_(1), where tau - m lies
 * in [-1, 0).  The lse output receives tau (in z units), -inf for a row
 * that attends to nothing, whose output is 0.  A row whose attended scores
 * hold a NaN or +inf, or are all -inf, has no defined threshold: its
 * output and tau are NaN (flags set in the first pass).  A key outside a
 * row's support, masked or not, never touches the row's output
 * (sparcl_tile_accumulate), so a NaN in its value does not either.
 * DTYPE is the storage of q, k, v and o (common.clh: float, half or
 * bfloat16); scores, thresholds and sums stay float, and each output
 * element is rounded to the storage type once.
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
#ifndef TOPK
#error "TOPK must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#ifndef NORM
#error "NORM must be defined (1 sparsemax, 2 1.5-entmax, 3 alpha-entmax by bisection)"
#endif
#if BLOCK_M != WG_SIZE * ROWS
#error "BLOCK_M must equal WG_SIZE * ROWS"
#endif
#if NV < 1
#error "VEC must not exceed HEAD_DIM"
#endif

#define GRID 8         /* intervals per grid pass */
#define MAX_GRID 12    /* extra passes at most; 8^12 narrows any bracket to fp32 */
#define PHASE_TOPK 0
#define PHASE_GRID 1
#define PHASE_OUT 2

/* [x]_+ ^ (1 / (alpha - 1)) */
inline float entmax_weight(float x, float inv_am1)
{
    if (!(x > 0.0f))
        return 0.0f;
#if NORM == 1
    return x;
#elif NORM == 2
    return x * x;
#else
    return powr(x, inv_am1);
#endif
}

/* Inserts z into the descending buffer top[0..TOPK). */
inline void topk_insert(float *top, float z)
{
    if (!(z > top[TOPK - 1]))
        return;
    int p = TOPK - 1;
    while (p > 0 && top[p - 1] < z) {
        top[p] = top[p - 1];
        --p;
    }
    top[p] = z;
}

/* tau - m for the n largest scores top[0..n) alone (n >= 1). */
inline float topk_tau(const float *top, int n, float inv_am1)
{
#if NORM == 1
    /* Support = the k largest with 1 + k y_k > y_1 + ... + y_k. */
    float cs = 0.0f, tau = -1.0f;
    for (int k = 0; k < n; ++k) {
        const float y = top[k] - top[0];
        cs += y;
        const float t = (cs - 1.0f) / (float)(k + 1);
        if (t < y)
            tau = t;
    }
    return tau;
#elif NORM == 2
    /* Per support size k: tau_k = mean - sqrt(1/k - variance) (Peters et
     * al. 2019); the support is the largest k with tau_k <= y_k. */
    float s1 = 0.0f, s2 = 0.0f, tau = -1.0f;
    for (int k = 0; k < n; ++k) {
        const float y = top[k] - top[0];
        s1 += y;
        s2 += y * y;
        const float kk = (float)(k + 1), mean = s1 / kk;
        const float delta = 1.0f / kk - (s2 / kk - mean * mean);
        const float t = mean - sqrt(fmax(delta, 0.0f));
        if (t <= y)
            tau = t;
    }
    return tau;
#else
    /* Mass sum_k [y_k - t]_+^(1/(alpha-1)) is >= 1 at t = -1 and 0 at 0. */
    float lo = -1.0f, hi = 0.0f;
    for (int it = 0; it < 30; ++it) {
        const float mid = 0.5f * (lo + hi);
        float f = 0.0f;
        for (int k = 0; k < n; ++k)
            f += entmax_weight(top[k] - top[0] - mid, inv_am1);
        if (f >= 1.0f)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
#endif
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_entmax(__global const stor_t *restrict q, __global const stor_t *restrict k,
            __global const stor_t *restrict v, __global stor_t *restrict o,
            __global float *restrict lse, const int write_lse,
            __global const int *restrict tile_ptr, __global const int *restrict tile_col,
            __global const int *restrict tile_mask, __global const uint *restrict mask_bits,
            const int q_len, const int kv_len, const int q_heads, const int group,
            const int layout_heads, const int n_tile_rows, const float scale_log2,
            const long q_sb, const long q_sh, const long q_ss, const long k_sb, const long k_sh,
            const long k_ss, const long v_sb, const long v_sh, const long v_ss, const long o_sb,
            const long o_sh, const long o_ss, const float alpha)
{
    const int lid = get_local_id(0);
    const int tr = get_group_id(0);
    const int hq = get_group_id(1);
    const int b = get_group_id(2);
    const int hk = hq / group;
    const int lh = layout_heads == 1 ? 0 : hq;
    const int lrow0 = lid * ROWS;
    const int row0 = tr * BLOCK_M + lrow0;
    const float zscale = scale_log2 * M_LN2_F * (alpha - 1.0f);
    const float inv_am1 = 1.0f / (alpha - 1.0f);

    __global const stor_t *qb = q + b * q_sb + hq * q_sh;
    __global const stor_t *kb = k + b * k_sb + hk * k_sh;
    __global const stor_t *vb = v + b * v_sb + hk * v_sh;

    floatv qv[ROWS][NV], acc[ROWS][NV];
    float qt[ROWS][NT_ALLOC], acct[ROWS][NT_ALLOC];
    float top[ROWS][TOPK], tau[ROWS], lo[ROWS], hi[ROWS], wsum[ROWS];
    int cnt[ROWS], solved[ROWS];
    int seen[ROWS], bad[ROWS]; /* attends to some key; a NaN or +inf score */
    for (int r = 0; r < ROWS; ++r) {
        /* Rows past q_len compute on a clamped copy and are never stored. */
        const int i = min(row0 + r, q_len - 1);
        __global const stor_t *qr = qb + (long)i * q_ss;
        for (int d = 0; d < NV; ++d) {
            qv[r][d] = SLOADV(qr + d * VEC) * zscale;
            acc[r][d] = (floatv)(0.0f);
        }
        for (int t = 0; t < NT; ++t) {
            qt[r][t] = SLOAD1(qr + NV * VEC + t) * zscale;
            acct[r][t] = 0.0f;
        }
        for (int x = 0; x < TOPK; ++x)
            top[r][x] = -INFINITY;
        cnt[r] = seen[r] = bad[r] = 0;
        wsum[r] = 0.0f;
    }
    /* Per grid threshold g: scores above it, their excess sum, the mass
     * (NORM 2 and 3), and the smallest score above it. */
    float g_cnt[ROWS][GRID + 1], g_a1[ROWS][GRID + 1], g_a2[ROWS][GRID + 1];
    float g_mn[ROWS][GRID + 1];

    const int e0 = tile_ptr[lh * (n_tile_rows + 1) + tr];
    const int e1 = tile_ptr[lh * (n_tile_rows + 1) + tr + 1];
    int phase = PHASE_TOPK;
    for (int pass = 0;; ++pass) {
        if (phase == PHASE_GRID)
            for (int r = 0; r < ROWS; ++r)
                for (int g = 0; g <= GRID; ++g) {
                    g_cnt[r][g] = g_a1[r][g] = g_a2[r][g] = 0.0f;
                    g_mn[r][g] = INFINITY;
                }
        for (int e = e0; e < e1; ++e) {
            const int c0 = tile_col[e] * BLOCK_N;
            const int mi = tile_mask[e];
            float s[ROWS][BLOCK_N];
            __global const uint *mb = mask_bits + ((long)max(mi, 0) * BLOCK_M + lrow0) * MW;
            sparcl_tile_scores(s, qv, qt, kb, k_ss, c0, kv_len, mi < 0, mb);
            if (phase == PHASE_TOPK) {
                for (int r = 0; r < ROWS; ++r) {
                    seen[r] |= sparcl_tile_row_attends(mi < 0, mb, r);
                    for (int c = 0; c < BLOCK_N; ++c)
                        if (s[r][c] != -INFINITY) {
                            ++cnt[r];
                            bad[r] |= !(s[r][c] < INFINITY);
                            topk_insert(top[r], s[r][c]);
                        }
                }
            } else if (phase == PHASE_GRID) {
#if NORM == 3
                /* mass and sum of x^(p-1) at lo, for a Newton step */
                for (int r = 0; r < ROWS; ++r)
                    for (int c = 0; c < BLOCK_N && !solved[r]; ++c) {
                        const float x = s[r][c] - top[r][0] - lo[r];
                        if (x > 0.0f) {
                            const float w = entmax_weight(x, inv_am1);
                            g_a1[r][0] += w;
                            g_a2[r][0] += w / x;
                        }
                    }
#else
                for (int r = 0; r < ROWS; ++r) {
                    if (solved[r])
                        continue;
                    const float step = (hi[r] - lo[r]) / GRID;
                    for (int c = 0; c < BLOCK_N; ++c) {
                        const float y = s[r][c] - top[r][0];
                        if (!(y > lo[r])) /* also skips -inf */
                            continue;
                        for (int g = 0; g <= GRID; ++g) {
                            const float x = y - (lo[r] + step * g);
                            if (x > 0.0f) {
                                g_cnt[r][g] += 1.0f;
                                g_a1[r][g] += x;
                                g_a2[r][g] += NORM == 2 ? x * x : entmax_weight(x, inv_am1);
                                g_mn[r][g] = fmin(g_mn[r][g], y);
                            }
                        }
                    }
                }
#endif
            } else {
                for (int r = 0; r < ROWS; ++r)
                    for (int c = 0; c < BLOCK_N; ++c) {
                        const float w = cnt[r] > 0
                                            ? entmax_weight(s[r][c] - top[r][0] - tau[r], inv_am1)
                                            : 0.0f;
                        s[r][c] = w;
                        wsum[r] += w;
                    }
                sparcl_tile_accumulate(acc, acct, s, vb, v_ss, c0, kv_len);
            }
        }
        if (phase == PHASE_OUT)
            break;
        int all = 1;
        for (int r = 0; r < ROWS; ++r) {
            if (phase == PHASE_TOPK) {
                const int n = min(cnt[r], TOPK);
                tau[r] = n > 0 ? topk_tau(top[r], n, inv_am1) : 0.0f;
                /* an undefined row (NaN output) needs no threshold */
                bad[r] |= seen[r] && cnt[r] == 0;
                solved[r] = cnt[r] <= TOPK || tau[r] >= top[r][TOPK - 1] - top[r][0] || bad[r];
                lo[r] = tau[r];
                hi[r] = top[r][TOPK - 1] - top[r][0];
            } else if (!solved[r]) {
#if NORM == 1 || NORM == 2
                const float step = (hi[r] - lo[r]) / GRID;
                int g = 0; /* the last threshold whose mass is still >= 1 */
                while (g + 1 < GRID && (NORM == 1 ? g_a1[r][g + 1] : g_a2[r][g + 1]) >= 1.0f)
                    ++g;
                const float tg = lo[r] + step * g;
                /* Closed form on the scores above tg, valid up to the
                 * smallest of them. */
                const float n = g_cnt[r][g], a1 = g_a1[r][g], a2 = g_a2[r][g];
                const float u = NORM == 1 ? (a1 - 1.0f) / n
                                          : (a1 - sqrt(fmax(a1 * a1 - n * (a2 - 1.0f), 0.0f))) / n;
                if (tg + u <= g_mn[r][g]) {
                    tau[r] = tg + u;
                    solved[r] = 1;
                } else {
                    lo[r] = fmax(tg, g_mn[r][g]);
                    hi[r] = tg + step;
                }
#else
                /* F(lo + dt) ~ F(lo) + F'(lo) dt = 1, F' = -sum x^(p-1) / (alpha - 1) */
                const float dt = (g_a1[r][0] - 1.0f) / (inv_am1 * g_a2[r][0]);
                lo[r] = tau[r] = lo[r] + dt;
                solved[r] = fabs(dt) <= 1e-7f;
#endif
            }
            all &= solved[r];
        }
        if (phase == PHASE_GRID && pass >= MAX_GRID)
            for (int r = 0; r < ROWS; ++r)
                if (!solved[r])
                    tau[r] = lo[r]; /* at fp32 resolution; the weights are renormalized */
        phase = all || pass >= MAX_GRID ? PHASE_OUT : PHASE_GRID;
    }

    for (int r = 0; r < ROWS; ++r) {
        const int i = row0 + r;
        if (i >= q_len)
            break;
        __global stor_t *orow = o + b * o_sb + hq * o_sh + (long)i * o_ss;
        const float inv = bad[r] ? NAN : wsum[r] > 0.0f ? 1.0f / wsum[r] : 0.0f;
        for (int d = 0; d < NV; ++d)
            SSTOREV(acc[r][d] * inv, orow + d * VEC);
        for (int t = 0; t < NT; ++t)
            SSTORE1(acct[r][t] * inv, orow + NV * VEC + t);
        if (write_lse)
            lse[((long)b * q_heads + hq) * q_len + i] =
                bad[r] ? NAN : cnt[r] > 0 ? top[r][0] + tau[r] : -INFINITY;
    }
}
