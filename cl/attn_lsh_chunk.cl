/*
 * attn_lsh_chunk.cl -- the attention step of LSH attention (sparcl.h, "LSH
 * attention"): each query of a round's sorted order attends the keys of its
 * own chunk and of the chunk before, and writes that round's partial output
 * and LSE at its original position (the scatter undoes the sort); the
 * rounds are merged afterwards by attn_merge_stacked.
 *
 * Shared QK: attn_lsh_gather has already laid out each round's keys q_j /
 * ||q_j|| in sorted order, in transposed tiles of BLOCK_N, with the token at
 * each sorted position.  A work-item takes BLOCK_M consecutive sorted queries (whose
 * windows overlap, and coincide when they share a chunk), walks the union
 * of their windows BLOCK_N keys at a time with an online softmax in base 2,
 * and masks per row, VEC keys at a time: outside its window, later
 * positions when causal, and the query itself.  A row left with no key
 * attends to itself alone.  DTYPE is the storage of q and v (common.clh:
 * float, half or bfloat16); scores, sums and the partial outputs are
 * float, and the merge rounds the output to the storage type once.
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
#ifndef DTYPE
#error "DTYPE must be defined"
#endif

#define NV (HEAD_DIM / VEC)
#define NT (HEAD_DIM % VEC)
#define NT_ALLOC (NT > 0 ? NT : 1)
#define NBV (BLOCK_N / VEC)
#if BLOCK_N % VEC
#error "BLOCK_N must be a multiple of VEC"
#endif

/* Lane l holds l: the offsets of VEC consecutive sorted positions;
 * LSH_ALL(ok): every lane of a mask from comparisons (a scalar comparison
 * gives 1, a vector one -1 per lane). */
#define LSH_IOTA popcount(LANE_BITSV - 1)
#if VEC == 1
#define LSH_ALL(ok) ((ok) != 0)
#else
#define LSH_ALL(ok) all(ok)
#endif

/* One row's scores of a step, as vectors or as floats. */
typedef union lsh_scores {
    floatv v[NBV];
    float f[BLOCK_N];
} lsh_scores;

/* Global size (ceil(n / BLOCK_M), heads * rounds, batch).  kt and tok:
 * attn_lsh_gather's layout (tiles of BLOCK_N sorted positions, transposed,
 * per segment (b * heads + h) * rounds + round); inv_norm: [b, h, n].
 * part: round r's output row (b, h, i) at ((r * rows + (b * heads + h) * n
 * + i) * HEAD_DIM, rows = batch * heads * n; part_lse likewise without
 * HEAD_DIM.  v: kv head h / group.  scale_log2: the score scale times
 * log2(e).
 *
 * A step is one tile: dimension t of its BLOCK_N keys is NBV contiguous
 * vectors, which every row multiplies its query into (BLOCK_M x NBV
 * independent fma chains); the values are then accumulated VEC head
 * dimensions at a time, each value vector loaded once for all rows, without
 * a branch when no row masks a key of the tile (a masked weight is 0, but
 * its value may be NaN, so partial tiles skip those). */
__kernel void attn_lsh_chunk(__global const stor_t *q, const long q_sb, const long q_sh,
                             const long q_ss, __global const stor_t *v, const long v_sb,
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
    const long tiles = (n + BLOCK_N - 1) / BLOCK_N;
    __global const float *ks = kt + seg * tiles * HEAD_DIM * BLOCK_N;
    __global const int *ts = tok + seg * tiles * BLOCK_N;
    __global const float *inv = inv_norm + bh * n;
    __global const stor_t *qh = q + b * q_sb + h * q_sh;
    __global const stor_t *vh = v + b * v_sb + (h / group) * v_sh;
    const int m_rows = min(BLOCK_M, n - p0);

    int ti[BLOCK_M], pos[BLOCK_M], lo[BLOCK_M], hi[BLOCK_M], seen[BLOCK_M];
    float qs[BLOCK_M][HEAD_DIM];
    floatv acc[BLOCK_M][NV];
    float acct[BLOCK_M][NT_ALLOC], mx[BLOCK_M], l[BLOCK_M];
#pragma unroll
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
        __global const stor_t *qr = qh + ti[m] * q_ss;
        for (int t = 0; t < HEAD_DIM; ++t)
            qs[m][t] = SLOAD1(qr + t) * scale_log2;
#pragma unroll
        for (int d = 0; d < NV; ++d)
            acc[m][d] = (floatv)(0.0f);
#pragma unroll
        for (int t = 0; t < NT_ALLOC; ++t)
            acct[m][t] = 0.0f;
    }
    /* Windows grow with the sorted position: the union is [lo[0], hi[last]),
     * walked in whole tiles. */
    const int whi = hi[m_rows - 1];
    for (int k0 = lo[0] / BLOCK_N * BLOCK_N; k0 < whi; k0 += BLOCK_N) {
        __global const float *tile = ks + (long)k0 * HEAD_DIM;
        lsh_scores s[BLOCK_M];
#pragma unroll
        for (int m = 0; m < BLOCK_M; ++m)
#pragma unroll
            for (int x = 0; x < NBV; ++x)
                s[m].v[x] = (floatv)(0.0f);
        for (int t = 0; t < HEAD_DIM; ++t) {
            floatv kv[NBV];
#pragma unroll
            for (int x = 0; x < NBV; ++x)
                kv[x] = LOADV(tile + t * BLOCK_N + x * VEC);
#pragma unroll
            for (int m = 0; m < BLOCK_M; ++m)
#pragma unroll
                for (int x = 0; x < NBV; ++x)
                    s[m].v[x] = fma((floatv)(qs[m][t]), kv[x], s[m].v[x]);
        }
        int full = 1;
#pragma unroll
        for (int m = 0; m < BLOCK_M; ++m)
#pragma unroll
            for (int x = 0; x < NBV; ++x) {
                const intv kp = (intv)(k0 + x * VEC) + LSH_IOTA;
                intv ok = (kp >= (intv)(lo[m])) & (kp < (intv)(hi[m])) & (kp != (intv)(pos[m]));
                if (causal)
                    ok &= LOADV(ts + k0 + x * VEC) <= (intv)(ti[m]);
                full &= LSH_ALL(ok);
                s[m].v[x] = select((floatv)(-INFINITY), s[m].v[x], ok);
            }
#pragma unroll
        for (int m = 0; m < BLOCK_M; ++m) {
            floatv mv = s[m].v[0];
#pragma unroll
            for (int x = 1; x < NBV; ++x)
                mv = SPARCL_MAXNN(mv, s[m].v[x]);
            const float bm = HMAXV(mv);
            seen[m] |= !(bm == -INFINITY); /* a NaN score counts as seen */
            if (bm == -INFINITY) {
#pragma unroll
                for (int x = 0; x < NBV; ++x)
                    s[m].v[x] = (floatv)(0.0f);
                continue;
            }
            if (bm > mx[m]) { /* rescale only when the running max grows */
                const float corr = exp2(mx[m] - bm);
                l[m] *= corr;
#pragma unroll
                for (int d = 0; d < NV; ++d)
                    acc[m][d] *= corr;
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    acct[m][t] *= corr;
                mx[m] = bm;
            }
            /* Exponentials VEC keys at a time (sparcl_exp2_nonpos, about
             * 2 ulp); masked keys get exactly 0. */
            floatv lv = (floatv)(0.0f);
#pragma unroll
            for (int x = 0; x < NBV; ++x) {
                const floatv sx = s[m].v[x];
                s[m].v[x] = select(sparcl_exp2_nonpos(sx - mx[m]), (floatv)(0.0f),
                                   sx == (floatv)(-INFINITY));
                lv += s[m].v[x];
            }
            l[m] += HSUMV(lv);
        }
        // clang-format off
#define LSH_PV(KEEP)                                                         \
        do {                                                                 \
            _Pragma("unroll")                                                \
            for (int d = 0; d < NV; ++d)                                     \
                for (int c = 0; c < BLOCK_N; ++c) {                          \
                    const floatv vv = SLOADV(vh + ts[k0 + c] * v_ss + d * VEC); \
                    _Pragma("unroll")                                        \
                    for (int m = 0; m < BLOCK_M; ++m)                        \
                        if (KEEP(m, c))                                      \
                            acc[m][d] = fma((floatv)(s[m].f[c]), vv, acc[m][d]); \
                }                                                            \
            for (int c = 0; c < BLOCK_N; ++c)                                \
                _Pragma("unroll")                                            \
                for (int t = 0; t < NT; ++t) {                               \
                    const float vs = SLOAD1(vh + ts[k0 + c] * v_ss + NV * VEC + t); \
                    _Pragma("unroll")                                        \
                    for (int m = 0; m < BLOCK_M; ++m)                        \
                        if (KEEP(m, c))                                      \
                            acct[m][t] = fma(s[m].f[c], vs, acct[m][t]);     \
                }                                                            \
        } while (0)
        // clang-format on
#define LSH_ALL_KEYS(m, c) 1
#define LSH_WEIGHTED(m, c) (s[m].f[c] != 0.0f)
        if (full)
            LSH_PV(LSH_ALL_KEYS);
        else
            LSH_PV(LSH_WEIGHTED);
#undef LSH_PV
#undef LSH_ALL_KEYS
#undef LSH_WEIGHTED
    }
    for (int m = 0; m < m_rows; ++m) {
        const int i = ti[m];
        const long row = (long)r * rows + bh * n + i;
        __global float *o = part + row * HEAD_DIM;
        if (!seen[m]) {
            /* Nothing else to attend: the token itself, weight 1, with the
             * score scale * q_i . q_i / ||q_i||. */
            __global const stor_t *vr = vh + i * v_ss;
            float self = 0.0f;
            for (int x = 0; x < HEAD_DIM; ++x) {
                o[x] = SLOAD1(vr + x);
                self = fma(qs[m][x], SLOAD1(qh + i * q_ss + x), self);
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
