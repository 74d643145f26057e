/*
 * attn_lsh_chunk.cl -- the attention step of LSH attention (sparcl.h, "LSH
 * attention"): each query of a round's sorted order attends the keys of its
 * own chunk and of the chunk before, and writes that round's partial output
 * and LSE at its original position (the scatter undoes the sort); the
 * rounds are merged afterwards by attn_merge_stacked.
 *
 * Shared QK: the key of token j is q_j / ||q_j||, read from q and scaled by
 * the inverse norm attn_lsh_hash wrote.  A work-item takes BLOCK_M
 * consecutive sorted queries (whose windows overlap), walks the union of
 * their windows BLOCK_N keys at a time with an online softmax in base 2,
 * and masks per row: outside its window, later positions when causal, and
 * the query itself.  A row left with no key attends to itself alone.
 */
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef VEC
#error "VEC must be defined"
#endif
#ifndef BLOCK_M
#error "BLOCK_M must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif

#define NV (HEAD_DIM / VEC)
#define NT (HEAD_DIM % VEC)
#define NT_ALLOC (NT > 0 ? NT : 1)

/* qv . row (a query, pre-scaled, against a raw q row). */
inline float lsh_dot(const floatv qv[NV], const float qt[NT_ALLOC], __global const float *row)
{
    floatv a = (floatv)(0.0f);
    for (int d = 0; d < NV; ++d)
        a = fma(qv[d], LOADV(row + d * VEC), a);
    float x = HSUMV(a);
    for (int t = 0; t < NT; ++t)
        x = fma(qt[t], row[NV * VEC + t], x);
    return x;
}

/* Global size (ceil(n / BLOCK_M), heads * rounds, batch).  order: [b, h,
 * round, n] tokens by sorted position; inv_norm: [b, h, n].  part: round
 * r's output row (b, h, i) at ((r * rows + (b * heads + h) * n + i) *
 * HEAD_DIM, rows = batch * heads * n; part_lse likewise without HEAD_DIM.
 * v: kv head h / group.  scale_log2: the score scale times log2(e). */
__kernel void attn_lsh_chunk(__global const float *q, const long q_sb, const long q_sh,
                             const long q_ss, __global const float *v, const long v_sb,
                             const long v_sh, const long v_ss, __global const int *order,
                             __global const float *inv_norm, __global float *part,
                             __global float *part_lse, const long rows, const int n,
                             const int heads, const int group, const int rounds, const int chunk,
                             const int causal, const float scale_log2)
{
    const int p0 = get_global_id(0) * BLOCK_M;
    const int hr = get_global_id(1), b = get_global_id(2);
    const int h = hr / rounds, r = hr - h * rounds;
    if (p0 >= n)
        return;
    const long bh = (long)b * heads + h;
    __global const int *ord = order + (bh * rounds + r) * n;
    __global const float *inv = inv_norm + bh * n;
    __global const float *qh = q + b * q_sb + h * q_sh;
    __global const float *vh = v + b * v_sb + (h / group) * v_sh;
    const int m_rows = min(BLOCK_M, n - p0);

    int tok[BLOCK_M], lo[BLOCK_M], hi[BLOCK_M], others[BLOCK_M];
    floatv qv[BLOCK_M][NV], acc[BLOCK_M][NV];
    float qt[BLOCK_M][NT_ALLOC], acct[BLOCK_M][NT_ALLOC], mx[BLOCK_M], l[BLOCK_M];
    for (int m = 0; m < BLOCK_M; ++m) {
        const int p = min(p0 + m, n - 1);
        const int c = p / chunk;
        tok[m] = ord[p];
        lo[m] = (int)max(0L, (long)(c - 1) * chunk);
        hi[m] = (int)min((long)n, (long)c * chunk + chunk);
        others[m] = 0;
        mx[m] = -INFINITY;
        l[m] = 0.0f;
        __global const float *qr = qh + tok[m] * q_ss;
        for (int d = 0; d < NV; ++d) {
            qv[m][d] = LOADV(qr + d * VEC) * scale_log2;
            acc[m][d] = (floatv)(0.0f);
        }
        for (int t = 0; t < NT_ALLOC; ++t) {
            qt[m][t] = t < NT ? qr[NV * VEC + t] * scale_log2 : 0.0f;
            acct[m][t] = 0.0f;
        }
    }
    /* Windows grow with the sorted position: the union is [lo[0], hi[last]). */
    const int wlo = lo[0], whi = hi[m_rows - 1];
    for (int k0 = wlo; k0 < whi; k0 += BLOCK_N) {
        float s[BLOCK_M][BLOCK_N];
        int kt[BLOCK_N];
        for (int c = 0; c < BLOCK_N; ++c) {
            const int kp = k0 + c;
            const int j = ord[min(kp, whi - 1)];
            kt[c] = j;
            __global const float *kr = qh + j * q_ss;
            const float ij = inv[j];
            for (int m = 0; m < BLOCK_M; ++m) {
                const int ok = kp < whi && kp >= lo[m] && kp < hi[m] && j != tok[m] &&
                               (!causal || j <= tok[m]);
                others[m] += ok;
                s[m][c] = ok ? lsh_dot(qv[m], qt[m], kr) * ij : -INFINITY;
            }
        }
        for (int m = 0; m < BLOCK_M; ++m) {
            float bm = -INFINITY;
            for (int c = 0; c < BLOCK_N; ++c)
                bm = fmax(bm, s[m][c]);
            if (bm == -INFINITY) {
                for (int c = 0; c < BLOCK_N; ++c)
                    s[m][c] = 0.0f;
                continue;
            }
            const float mn = fmax(mx[m], bm);
            const float corr = exp2(mx[m] - mn);
            l[m] *= corr;
            for (int d = 0; d < NV; ++d)
                acc[m][d] *= corr;
            for (int t = 0; t < NT; ++t)
                acct[m][t] *= corr;
            for (int c = 0; c < BLOCK_N; ++c) {
                s[m][c] = exp2(s[m][c] - mn);
                l[m] += s[m][c];
            }
            mx[m] = mn;
        }
        for (int c = 0; c < BLOCK_N; ++c) {
            if (k0 + c >= whi)
                break;
            __global const float *vr = vh + kt[c] * v_ss;
            for (int m = 0; m < BLOCK_M; ++m) {
                const float w = s[m][c];
                if (w == 0.0f)
                    continue;
                for (int d = 0; d < NV; ++d)
                    acc[m][d] = fma((floatv)(w), LOADV(vr + d * VEC), acc[m][d]);
                for (int t = 0; t < NT; ++t)
                    acct[m][t] = fma(w, vr[NV * VEC + t], acct[m][t]);
            }
        }
    }
    for (int m = 0; m < m_rows; ++m) {
        const int i = tok[m];
        const long row = (long)r * rows + bh * n + i;
        __global float *o = part + row * HEAD_DIM;
        if (others[m] == 0) {
            /* Nothing else to attend: the token itself, weight 1. */
            __global const float *vr = vh + i * v_ss;
            for (int x = 0; x < HEAD_DIM; ++x)
                o[x] = vr[x];
            part_lse[row] = lsh_dot(qv[m], qt[m], qh + i * q_ss) * inv[i] * M_LN2_F;
            continue;
        }
        const float il = 1.0f / l[m];
        for (int d = 0; d < NV; ++d)
            STOREV(acc[m][d] * il, o + d * VEC);
        for (int t = 0; t < NT; ++t)
            o[NV * VEC + t] = acct[m][t] * il;
        part_lse[row] = (mx[m] + log2(l[m])) * M_LN2_F;
    }
}
