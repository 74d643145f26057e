/*
 * attn_lsh_chunk.cl -- the attention step of LSH attention (sparcl.h, "LSH
 * attention"): each query of a round's sorted order attends the keys of its
 * own chunk and of the chunk before, and writes that round's partial output
 * and LSE at its original position (the scatter undoes the sort); the
 * rounds are merged afterwards by attn_merge_stacked.
 *
 * Shared QK: attn_lsh_gather has already laid out each round's keys q_j /
 * ||q_j|| in sorted order, transposed, with the token at each sorted
 * position.  A work-item takes BLOCK_M consecutive sorted queries (whose
 * windows overlap, and coincide when they share a chunk), walks the union
 * of their windows BLOCK_N keys at a time with an online softmax in base 2,
 * and masks per row, VEC keys at a time: outside its window, later
 * positions when causal, and the query itself.  A row left with no key
 * attends to itself alone.
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

/* Lane l holds l: the offsets of VEC consecutive sorted positions. */
#if VEC == 1
#define LSH_IOTA 0
#elif VEC == 2
#define LSH_IOTA ((int2)(0, 1))
#elif VEC == 4
#define LSH_IOTA ((int4)(0, 1, 2, 3))
#elif VEC == 8
#define LSH_IOTA ((int8)(0, 1, 2, 3, 4, 5, 6, 7))
#elif VEC == 16
#define LSH_IOTA ((int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#else
#error "VEC must be 1, 2, 4, 8 or 16"
#endif

/* Global size (ceil(n / BLOCK_M), heads * rounds, batch).  kt and tok:
 * attn_lsh_gather's layout (rows of n + BLOCK_N sorted positions per
 * segment (b * heads + h) * rounds + round); inv_norm: [b, h, n].  part:
 * round r's output row (b, h, i) at ((r * rows + (b * heads + h) * n + i) *
 * HEAD_DIM, rows = batch * heads * n; part_lse likewise without HEAD_DIM.
 * v: kv head h / group.  scale_log2: the score scale times log2(e).
 *
 * A step loads the BLOCK_N keys' dimension t as NBV vectors (contiguous:
 * no gather) and every row multiplies its query into them, BLOCK_M x NBV
 * independent fma chains; the values are then accumulated VEC head
 * dimensions at a time, each value row loaded once for all rows. */
__kernel void attn_lsh_chunk(__global const float *q, const long q_sb, const long q_sh,
                             const long q_ss, __global const float *v, const long v_sb,
                             const long v_sh, const long v_ss, __global const float *kt,
                             __global const int *tok, __global const float *inv_norm,
                             __global float *part, __global float *part_lse, const long rows,
                             const int n, const int heads, const int group, const int rounds,
                             const int chunk, const int causal, const float scale_log2)
{
    const int p0 = get_global_id(0) * BLOCK_M;
    const int hr = get_global_id(1), b = get_global_id(2);
    const int h = hr / rounds, r = hr - h * rounds;
    if (p0 >= n)
        return;
    const long bh = (long)b * heads + h, seg = bh * rounds + r;
    const long stride = (long)n + BLOCK_N;
    __global const float *ks = kt + seg * HEAD_DIM * stride;
    __global const int *ts = tok + seg * stride;
    __global const float *inv = inv_norm + bh * n;
    __global const float *qh = q + b * q_sb + h * q_sh;
    __global const float *vh = v + b * v_sb + (h / group) * v_sh;
    const int m_rows = min(BLOCK_M, n - p0);

    int ti[BLOCK_M], pos[BLOCK_M], lo[BLOCK_M], hi[BLOCK_M], seen[BLOCK_M];
    float qs[BLOCK_M][HEAD_DIM];
    floatv acc[BLOCK_M][NV];
    float acct[BLOCK_M][NT_ALLOC], mx[BLOCK_M], l[BLOCK_M];
    for (int m = 0; m < BLOCK_M; ++m) {
        const int p = min(p0 + m, n - 1);
        const int c = p / chunk;
        pos[m] = p;
        ti[m] = ts[p];
        lo[m] = (int)max(0L, (long)(c - 1) * chunk);
        hi[m] = (int)min((long)n, (long)c * chunk + chunk);
        seen[m] = 0;
        mx[m] = -INFINITY;
        l[m] = 0.0f;
        __global const float *qr = qh + ti[m] * q_ss;
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
        floatv sv[BLOCK_M][NBV];
        float ps[BLOCK_M][BLOCK_N];
        for (int m = 0; m < BLOCK_M; ++m)
            for (int x = 0; x < NBV; ++x)
                sv[m][x] = (floatv)(0.0f);
        __global const float *kk = ks + k0;
        for (int t = 0; t < HEAD_DIM; ++t) {
            for (int x = 0; x < NBV; ++x) {
                const floatv kv = LOADV(kk + t * stride + x * VEC);
                for (int m = 0; m < BLOCK_M; ++m)
                    sv[m][x] = fma((floatv)(qs[m][t]), kv, sv[m][x]);
            }
        }
        for (int m = 0; m < BLOCK_M; ++m) {
            floatv bmv = (floatv)(-INFINITY);
            for (int x = 0; x < NBV; ++x) {
                const intv kp = (intv)(k0 + x * VEC) + LSH_IOTA;
                intv ok = (kp >= (intv)(lo[m])) & (kp < (intv)(hi[m])) & (kp != (intv)(pos[m]));
                if (causal)
                    ok &= LOADV(ts + k0 + x * VEC) <= (intv)(ti[m]);
                sv[m][x] = select((floatv)(-INFINITY), sv[m][x], ok);
                bmv = SPARCL_MAXNN(bmv, sv[m][x]);
            }
            const float bm = HMAXV(bmv);
            seen[m] |= !(bm == -INFINITY); /* a NaN score counts as seen */
            if (bm == -INFINITY) {
                for (int c = 0; c < BLOCK_N; ++c)
                    ps[m][c] = 0.0f;
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
                const floatv sx = sv[m][x];
                const floatv e = select(sparcl_exp2_nonpos(sx - mn), (floatv)(0.0f),
                                        sx == (floatv)(-INFINITY));
                STOREV(e, &ps[m][x * VEC]);
                lv += e;
            }
            l[m] += HSUMV(lv);
            mx[m] = mn;
        }
        const int cn = min(BLOCK_N, whi - k0);
        for (int c = 0; c < cn; ++c) {
            __global const float *vr = vh + ts[k0 + c] * v_ss;
            floatv vv[NV];
            for (int d = 0; d < NV; ++d)
                vv[d] = LOADV(vr + d * VEC);
            for (int m = 0; m < BLOCK_M; ++m) {
                const float w = ps[m][c];
                if (w == 0.0f)
                    continue;
                for (int d = 0; d < NV; ++d)
                    acc[m][d] = fma((floatv)(w), vv[d], acc[m][d]);
                for (int t = 0; t < NT; ++t)
                    acct[m][t] = fma(w, vr[NV * VEC + t], acct[m][t]);
            }
        }
    }
    for (int m = 0; m < m_rows; ++m) {
        const int i = ti[m];
        const long row = (long)r * rows + bh * n + i;
        __global float *o = part + row * HEAD_DIM;
        if (!seen[m]) {
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
