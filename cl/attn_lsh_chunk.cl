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
#define NBV (BLOCK_N / VEC)
#if BLOCK_N % VEC
#error "BLOCK_N must be a multiple of VEC"
#endif

/* Global size (ceil(n / BLOCK_M), heads * rounds, batch).  order: [b, h,
 * round, n] tokens by sorted position; inv_norm: [b, h, n].  part: round
 * r's output row (b, h, i) at ((r * rows + (b * heads + h) * n + i) *
 * HEAD_DIM, rows = batch * heads * n; part_lse likewise without HEAD_DIM.
 * v: kv head h / group.  scale_log2: the score scale times log2(e).
 *
 * Scores are vectorized across keys: a step gathers BLOCK_N keys, already
 * divided by their norms, transposed into private memory (kT), and every
 * row multiplies its query into VEC keys at a time; the values are then
 * accumulated VEC head dimensions at a time. */
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
    float qs[BLOCK_M][HEAD_DIM];
    floatv acc[BLOCK_M][NV];
    float acct[BLOCK_M][NT_ALLOC], mx[BLOCK_M], l[BLOCK_M];
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
        for (int t = 0; t < HEAD_DIM; ++t)
            qs[m][t] = qr[t] * scale_log2;
        for (int d = 0; d < NV; ++d)
            acc[m][d] = (floatv)(0.0f);
        for (int t = 0; t < NT_ALLOC; ++t)
            acct[m][t] = 0.0f;
    }
    /* Windows grow with the sorted position: the union is [lo[0], hi[last]). */
    const int wlo = lo[0], whi = hi[m_rows - 1];
    for (int k0 = wlo; k0 < whi; k0 += BLOCK_N) {
        float kT[HEAD_DIM][BLOCK_N];
        float s[BLOCK_M][BLOCK_N];
        int kt[BLOCK_N];
        for (int c = 0; c < BLOCK_N; ++c) {
            const int j = ord[min(k0 + c, whi - 1)];
            kt[c] = j;
            __global const float *kr = qh + j * q_ss;
            const float ij = inv[j];
            for (int t = 0; t < HEAD_DIM; ++t)
                kT[t][c] = kr[t] * ij;
        }
        for (int m = 0; m < BLOCK_M; ++m) {
            floatv sv[NBV];
            for (int x = 0; x < NBV; ++x)
                sv[x] = (floatv)(0.0f);
            for (int t = 0; t < HEAD_DIM; ++t) {
                const floatv qb = (floatv)(qs[m][t]);
                for (int x = 0; x < NBV; ++x)
                    sv[x] = fma(qb, LOADV(&kT[t][x * VEC]), sv[x]);
            }
            for (int x = 0; x < NBV; ++x)
                STOREV(sv[x], &s[m][x * VEC]);
            float bm = -INFINITY;
            for (int c = 0; c < BLOCK_N; ++c) {
                const int kp = k0 + c, j = kt[c];
                const int ok = kp < whi && kp >= lo[m] && kp < hi[m] && j != tok[m] &&
                               (!causal || j <= tok[m]);
                others[m] += ok;
                s[m][c] = ok ? s[m][c] : -INFINITY;
                bm = fmax(bm, s[m][c]);
            }
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
            /* Exponentials VEC keys at a time (sparcl_exp2_nonpos, about
             * 2 ulp); masked keys get exactly 0, so they are never read. */
            floatv lv = (floatv)(0.0f);
            for (int x = 0; x < NBV; ++x) {
                const floatv sx = LOADV(&s[m][x * VEC]);
                const floatv e = select(sparcl_exp2_nonpos(sx - mn), (floatv)(0.0f),
                                        sx == (floatv)(-INFINITY));
                STOREV(e, &s[m][x * VEC]);
                lv += e;
            }
            l[m] += HSUMV(lv);
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
            /* Nothing else to attend: the token itself, weight 1, with the
             * score scale * q_i . q_i / ||q_i||. */
            __global const float *vr = vh + i * v_ss;
            float self = 0.0f;
            for (int x = 0; x < HEAD_DIM; ++x) {
                o[x] = vr[x];
                self = fma(qs[m][x], qh[i * q_ss + x], self);
            }
            part_lse[row] = self * inv[i] * M_LN2_F;
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
