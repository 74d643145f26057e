/*
 * attn_span.cl -- adaptive attention span (Sukhbaatar et al., 2019):
 * causal softmax attention whose weights are multiplied by a per-head soft
 * mask of the distance x = pos(i) - j, m(x) = clamp((R + z - x) / R, 0, 1),
 * and renormalized.  A head's keys with m > 0 lie at distances
 * 0 .. ceil(z + R) - 1, so every kernel walks only that band: the work
 * follows the spans, read from a buffer at each call, not kv_len.
 *
 * With s = scale q.k, lse = log sum m exp(s) and P = exp(s - lse), the
 * weights are a = m P, and the softmax backward applies to s + log m:
 *   dS = m P (dO.v - D),  D = dO.out,
 *   dQ = scale sum dS k,  dK = scale sum dS q,  dV = sum m P dO,
 *   dz = (1 / R) sum over the ramp (0 < m < 1) of P (dO.v - D).
 *
 * Entry points (the plan enqueues the backward ones in this order):
 *   attn_span_fwd      a work-group owns BLOCK_M query rows (ROWS per
 *                      work-item) of one (batch, head) and walks its band
 *                      of keys in tiles of BLOCK_N: online softmax.
 *   attn_span_bwd_dq   the same walk: dQ, and per row D and the row's dz
 *                      term into the workspace (2 floats per row).
 *   attn_span_bwd_dkv  a work-group owns BLOCK_N keys (COLS per work-item)
 *                      of one (batch, kv head) and walks, for each q head
 *                      sharing it in order, the band of query rows that
 *                      reach them in tiles of BLOCK_M: dK, dV.
 *   attn_span_bwd_dz   one work-item per q head sums the rows' dz terms
 *                      in a fixed order.
 * USE_LOCAL=1 stages the tile of a walk (K and V rows, or Q and dO rows)
 * in local memory, shared by the group's work-items.  No atomics anywhere.
 * DTYPE is the storage of q, k, v, out, dout and of dq, dk, dv (common.clh:
 * float, half or bfloat16): every kernel reads and writes it, computes in
 * float, and rounds each gradient and output element once, when its owner
 * stores it; lse, the spans, the workspace and dspans are float.
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
#ifndef USE_LOCAL
#error "USE_LOCAL must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#if BLOCK_M != WG_SIZE * ROWS || BLOCK_N != WG_SIZE * COLS
#error "BLOCK_M and BLOCK_N must equal WG_SIZE * ROWS and WG_SIZE * COLS"
#endif
#if NV < 1
#error "VEC must not exceed HEAD_DIM"
#endif

/* A walk's tile rows: floats staged in local memory, or the tensors'
 * stored rows read in place. */
#if USE_LOCAL
#define TILE_SPACE __local
typedef float span_elem_t;
#define SPAN_LOADV(p) LOADV(p)
#define SPAN_LOAD1(p) (*(p))
#else
#define TILE_SPACE __global
typedef stor_t span_elem_t;
#define SPAN_LOADV(p) SLOADV(p)
#define SPAN_LOAD1(p) SLOAD1(p)
#endif

#define SPAN_LOG2E 1.4426950408889634f
#define SPAN_LN2 0.6931471805599453f

/* Distances a span reaches: ceil(z + R) (m > 0 exactly below z + R), at
 * most kv_len (no pair is farther apart), so that index arithmetic with it
 * stays within int. */
inline int span_reach(float z, float ramp, int kv_len)
{
    const float r = ceil(z + ramp);
    return r >= (float)kv_len ? kv_len : (int)r;
}

/* The soft mask at distance x of a span within reach (x >= 0). */
inline float span_mask(int x, float z, float ramp)
{
    return clamp((ramp + z - (float)x) / ramp, 0.0f, 1.0f);
}

/* A stored row of HEAD_DIM elements times `mul` into private vectors and
 * tail. */
inline void load_row(floatv *a, float *at, __global const stor_t *row, float mul)
{
    for (int d = 0; d < NV; ++d)
        a[d] = SLOADV(row + d * VEC) * mul;
    for (int t = 0; t < NT; ++t)
        at[t] = SLOAD1(row + NV * VEC + t) * mul;
}

inline void zero_row(floatv *a, float *at)
{
    for (int d = 0; d < NV; ++d)
        a[d] = (floatv)(0.0f);
    for (int t = 0; t < NT; ++t)
        at[t] = 0.0f;
}

/* Private vectors and tail times `mul` into a stored row, each element
 * rounded once. */
inline void store_row(__global stor_t *row, const floatv *a, const float *at, float mul)
{
    for (int d = 0; d < NV; ++d)
        SSTOREV(a[d] * mul, row + d * VEC);
    for (int t = 0; t < NT; ++t)
        SSTORE1(at[t] * mul, row + NV * VEC + t);
}

/* The private row a . a tile row. */
inline float dot_row(const floatv *a, const float *at, TILE_SPACE const span_elem_t *row)
{
    floatv acc = (floatv)(0.0f);
    for (int d = 0; d < NV; ++d)
        acc = fma(a[d], SPAN_LOADV(row + d * VEC), acc);
    float x = HSUMV(acc);
    for (int t = 0; t < NT; ++t)
        x = fma(at[t], SPAN_LOAD1(row + NV * VEC + t), x);
    return x;
}

/* The private row a += w * a tile row. */
inline void axpy_row(floatv *a, float *at, float w, TILE_SPACE const span_elem_t *row)
{
    for (int d = 0; d < NV; ++d)
        a[d] = fma((floatv)(w), SPAN_LOADV(row + d * VEC), a[d]);
    for (int t = 0; t < NT; ++t)
        at[t] = fma(w, SPAN_LOAD1(row + NV * VEC + t), at[t]);
}

/* The same two products on a private row b (a tile row converted once). */
inline float dot_priv(const floatv *a, const float *at, const floatv *b, const float *bt)
{
    floatv acc = (floatv)(0.0f);
    for (int d = 0; d < NV; ++d)
        acc = fma(a[d], b[d], acc);
    float x = HSUMV(acc);
    for (int t = 0; t < NT; ++t)
        x = fma(at[t], bt[t], x);
    return x;
}

inline void axpy_priv(floatv *a, float *at, float w, const floatv *b, const float *bt)
{
    for (int d = 0; d < NV; ++d)
        a[d] = fma((floatv)(w), b[d], a[d]);
    for (int t = 0; t < NT; ++t)
        at[t] = fma(w, bt[t], at[t]);
}

/* A tile row that the inner loops use in several products: read in place
 * (floats, or __local floats), or, for half storage read in place,
 * converted once into private floats.  Converting at every product cost
 * the f16 backward 1.12x the fp32 time on bwd-span-16k (dQ reads each key
 * row ROWS x 3 times, dK/dV each query row COLS x 4 times). */
#define SPAN_PRIV_ROWS (!USE_LOCAL && DTYPE != 0)
#if SPAN_PRIV_ROWS
#define SPAN_ROW(name, src)                                                                        \
    floatv name##_v[NV];                                                                           \
    float name##_t[NT_ALLOC];                                                                      \
    load_row(name##_v, name##_t, (src), 1.0f)
#define SPAN_DOT(a, at, name) dot_priv((a), (at), name##_v, name##_t)
#define SPAN_AXPY(a, at, w, name) axpy_priv((a), (at), (w), name##_v, name##_t)
#else
#define SPAN_ROW(name, src) TILE_SPACE const span_elem_t *name = (src)
#define SPAN_DOT(a, at, name) dot_row((a), (at), name)
#define SPAN_AXPY(a, at, w, name) axpy_row((a), (at), (w), name)
#endif

inline void scale_row(floatv *a, float *at, float mul)
{
    for (int d = 0; d < NV; ++d)
        a[d] *= mul;
    for (int t = 0; t < NT; ++t)
        at[t] *= mul;
}

/* Where a work-item of the row walks (forward, dQ) stands: its (batch,
 * q head, kv head), the head's span and reach, its first row r0, the
 * offset pos(i) - i, and the key band lo .. hi its group's rows reach
 * (hi < lo when they reach none). */
typedef struct row_walk {
    int b, h, hk, off, reach, r0;
    float z;
    int2 band;
} row_walk;

inline row_walk row_walk_at(__global const float *spans, float ramp, int q_len, int kv_len,
                            int group)
{
    row_walk w;
    w.b = get_group_id(2);
    w.h = get_group_id(1);
    w.hk = w.h / group;
    w.off = kv_len - q_len;
    w.z = spans[w.h];
    w.reach = span_reach(w.z, ramp, kv_len);
    const int first = get_group_id(0) * BLOCK_M, last = min(first + BLOCK_M, q_len) - 1;
    w.r0 = first + get_local_id(0) * ROWS;
    w.band = (int2)(max(0, first + w.off - w.reach + 1), min(kv_len - 1, last + w.off));
    return w;
}

/* A tile of `rows` rows from `first` of two tensors a and b (row strides
 * sa, sb) as a walk reads it: row c of a at a + c * sa.  With USE_LOCAL it
 * is staged into la and lb between barriers (every work-item of the group
 * calls this; rows past `last` are clamped to it), else read in place. */
typedef struct tile_pair {
    TILE_SPACE const span_elem_t *a, *b;
    long sa, sb;
} tile_pair;

#if USE_LOCAL
#define LOCAL_PAIR(la, lb) , la, lb
#define LOCAL_PAIR_DECL , __local float *la, __local float *lb
#else
#define LOCAL_PAIR(la, lb)
#define LOCAL_PAIR_DECL
#endif

inline tile_pair tile_pair_at(__global const stor_t *a, long sa, __global const stor_t *b,
                              long sb, int first, int rows, int last LOCAL_PAIR_DECL)
{
    tile_pair t;
#if USE_LOCAL
    const int lid = get_local_id(0);
    barrier(CLK_LOCAL_MEM_FENCE);
    sparcl_stage_rows(la, a, sa, first, rows, last, lid);
    sparcl_stage_rows(lb, b, sb, first, rows, last, lid);
    barrier(CLK_LOCAL_MEM_FENCE);
    t.a = la;
    t.b = lb;
    t.sa = t.sb = HEAD_DIM;
#else
    (void)rows;
    (void)last;
    t.a = a + (long)first * sa;
    t.b = b + (long)first * sb;
    t.sa = sa;
    t.sb = sb;
#endif
    return t;
}

__kernel void attn_span_fwd(__global const stor_t *q, __global const stor_t *k,
                            __global const stor_t *v, __global stor_t *out, __global float *lse,
                            int has_lse, __global const float *spans, float ramp, float scale,
                            long q_sb, long q_sh, long q_ss, long k_sb, long k_sh, long k_ss,
                            long v_sb, long v_sh, long v_ss, long o_sb, long o_sh, long o_ss,
                            int q_len, int kv_len, int group)
{
    const row_walk rw = row_walk_at(spans, ramp, q_len, kv_len, group);
    const int b = rw.b, h = rw.h, off = rw.off, reach = rw.reach, r0 = rw.r0;
    const float z = rw.z;
    __global const stor_t *qb = q + b * q_sb + h * q_sh;
    __global const stor_t *kb = k + b * k_sb + rw.hk * k_sh;
    __global const stor_t *vb = v + b * v_sb + rw.hk * v_sh;
    const float sl = scale * SPAN_LOG2E; /* scores in log2 units */
    floatv qv[ROWS][NV], acc[ROWS][NV];
    float qt[ROWS][NT_ALLOC], acct[ROWS][NT_ALLOC];
    float mx[ROWS], sum[ROWS];
    int any[ROWS];
    for (int r = 0; r < ROWS; ++r) {
        load_row(qv[r], qt[r], qb + (long)min(r0 + r, q_len - 1) * q_ss, sl);
        zero_row(acc[r], acct[r]);
        mx[r] = -INFINITY;
        sum[r] = 0.0f;
        any[r] = 0;
    }
#if USE_LOCAL
    __local float tk[BLOCK_N * HEAD_DIM], tv[BLOCK_N * HEAD_DIM];
#endif
    for (int c0 = rw.band.x; c0 <= rw.band.y; c0 += BLOCK_N) {
        const int n = min(BLOCK_N, rw.band.y - c0 + 1);
        const tile_pair t =
            tile_pair_at(kb, k_ss, vb, v_ss, c0, BLOCK_N, rw.band.y LOCAL_PAIR(tk, tv));
        /* Keys outer, rows inner: each key row is loaded once for all
         * ROWS rows.  w holds the scores, then the weights m exp2(s - max)
         * (0 where m = 0, so such keys are never read again). */
        float w[ROWS][BLOCK_N], m[ROWS][BLOCK_N];
        for (int c = 0; c < n; ++c) {
            SPAN_ROW(kr, t.a + c * t.sa);
            for (int r = 0; r < ROWS; ++r) {
                const int x = r0 + r + off - (c0 + c);
                m[r][c] = r0 + r < q_len && x >= 0 && x < reach ? span_mask(x, z, ramp) : 0.0f;
                w[r][c] = m[r][c] > 0.0f ? SPAN_DOT(qv[r], qt[r], kr) : -INFINITY;
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            float tmax = -INFINITY;
            int seen = 0;
            for (int c = 0; c < n; ++c)
                if (m[r][c] > 0.0f) {
                    tmax = fmax(tmax, w[r][c]);
                    seen = 1;
                }
            if (!seen)
                continue;
            any[r] = 1;
            const float nmax = fmax(mx[r], tmax);
            const float corr = exp2(mx[r] - nmax);
            sum[r] *= corr;
            scale_row(acc[r], acct[r], corr);
            mx[r] = nmax;
            for (int c = 0; c < n; ++c) {
                w[r][c] = m[r][c] > 0.0f ? m[r][c] * exp2(w[r][c] - nmax) : 0.0f;
                sum[r] += w[r][c];
            }
        }
        for (int c = 0; c < n; ++c) {
            SPAN_ROW(vr, t.b + c * t.sb);
            for (int r = 0; r < ROWS; ++r)
                if (m[r][c] > 0.0f)
                    SPAN_AXPY(acc[r], acct[r], w[r][c], vr);
        }
    }
    for (int r = 0; r < ROWS; ++r) {
        const int i = r0 + r;
        if (i >= q_len)
            continue;
        store_row(out + b * o_sb + h * o_sh + (long)i * o_ss, acc[r], acct[r],
                  any[r] ? 1.0f / sum[r] : 0.0f);
        if (has_lse)
            lse[((long)b * get_num_groups(1) + h) * q_len + i] =
                any[r] ? (mx[r] + log2(sum[r])) * SPAN_LN2 : -INFINITY;
    }
}

/* ws: D of every row, then its dz term (not yet divided by R), each
 * [batch, q_heads, q_len]. */
__kernel void attn_span_bwd_dq(__global const stor_t *q, __global const stor_t *k,
                               __global const stor_t *v, __global const stor_t *out,
                               __global const float *lse, __global const stor_t *dout,
                               __global stor_t *dq, __global float *ws, __global const float *spans,
                               float ramp, float scale, long q_sb, long q_sh, long q_ss, long k_sb,
                               long k_sh, long k_ss, long v_sb, long v_sh, long v_ss, long o_sb,
                               long o_sh, long o_ss, int q_len, int kv_len, int group)
{
    const row_walk rw = row_walk_at(spans, ramp, q_len, kv_len, group);
    const int b = rw.b, h = rw.h, off = rw.off, reach = rw.reach, r0 = rw.r0;
    const float z = rw.z;
    const int heads = get_num_groups(1);
    __global const stor_t *kb = k + b * k_sb + rw.hk * k_sh;
    __global const stor_t *vb = v + b * v_sb + rw.hk * v_sh;
    const float sl = scale * SPAN_LOG2E;
    const long nrows = (long)get_num_groups(2) * heads * q_len;
    floatv qv[ROWS][NV], dov[ROWS][NV], acc[ROWS][NV];
    float qt[ROWS][NT_ALLOC], dtl[ROWS][NT_ALLOC], acct[ROWS][NT_ALLOC];
    float dd[ROWS], l2[ROWS], dz[ROWS];
    for (int r = 0; r < ROWS; ++r) {
        const long i = min(r0 + r, q_len - 1);
        const long row = ((long)b * heads + h) * q_len + i;
        load_row(qv[r], qt[r], q + b * q_sb + h * q_sh + i * q_ss, sl);
        /* D = dO . out, out borrowed into the dQ accumulator for a moment. */
        load_row(dov[r], dtl[r], dout + b * o_sb + h * o_sh + i * o_ss, 1.0f);
        load_row(acc[r], acct[r], out + b * o_sb + h * o_sh + i * o_ss, 1.0f);
        floatv t = (floatv)(0.0f);
        for (int d = 0; d < NV; ++d)
            t = fma(dov[r][d], acc[r][d], t);
        dd[r] = HSUMV(t);
        for (int x = 0; x < NT; ++x)
            dd[r] = fma(dtl[r][x], acct[r][x], dd[r]);
        zero_row(acc[r], acct[r]);
        l2[r] = lse[row] * SPAN_LOG2E;
        dz[r] = 0.0f;
    }
#if USE_LOCAL
    __local float tk[BLOCK_N * HEAD_DIM], tv[BLOCK_N * HEAD_DIM];
#endif
    for (int c0 = rw.band.x; c0 <= rw.band.y; c0 += BLOCK_N) {
        const int n = min(BLOCK_N, rw.band.y - c0 + 1);
        const tile_pair t =
            tile_pair_at(kb, k_ss, vb, v_ss, c0, BLOCK_N, rw.band.y LOCAL_PAIR(tk, tv));
        /* Keys outer, rows inner, as in the forward. */
        for (int c = 0; c < n; ++c) {
            SPAN_ROW(kr, t.a + c * t.sa);
            SPAN_ROW(vr, t.b + c * t.sb);
            for (int r = 0; r < ROWS; ++r) {
                const int x = r0 + r + off - (c0 + c);
                const float m =
                    r0 + r < q_len && x >= 0 && x < reach ? span_mask(x, z, ramp) : 0.0f;
                if (!(m > 0.0f))
                    continue;
                const float p = exp2(SPAN_DOT(qv[r], qt[r], kr) - l2[r]);
                const float e = p * (SPAN_DOT(dov[r], dtl[r], vr) - dd[r]);
                SPAN_AXPY(acc[r], acct[r], m * e, kr);
                if (m < 1.0f)
                    dz[r] += e;
            }
        }
    }
    for (int r = 0; r < ROWS; ++r) {
        const int i = r0 + r;
        if (i >= q_len)
            continue;
        const long row = ((long)b * heads + h) * q_len + i;
        store_row(dq + b * q_sb + h * q_sh + (long)i * q_ss, acc[r], acct[r], scale);
        ws[row] = dd[r];
        ws[nrows + row] = dz[r];
    }
}

/* dk, dv: k's and v's strides.  ws: as attn_span_bwd_dq wrote it. */
__kernel void attn_span_bwd_dkv(__global const stor_t *q, __global const stor_t *k,
                                __global const stor_t *v, __global const float *lse,
                                __global const stor_t *dout, __global stor_t *dk,
                                __global stor_t *dv,
                                __global const float *ws, __global const float *spans, float ramp,
                                float scale, long q_sb, long q_sh, long q_ss, long k_sb, long k_sh,
                                long k_ss, long v_sb, long v_sh, long v_ss, long o_sb, long o_sh,
                                long o_ss, int q_len, int kv_len, int group)
{
    const int hk = get_group_id(1), b = get_group_id(2);
    const int heads = get_num_groups(1) * group;
    const int off = kv_len - q_len;
    const int kfirst = get_group_id(0) * BLOCK_N, c0 = kfirst + get_local_id(0) * COLS;
    const int klast = min(kfirst + BLOCK_N, kv_len) - 1;
    const float sl = scale * SPAN_LOG2E;
    floatv kv_[COLS][NV], vv[COLS][NV], dkv[COLS][NV], dvv[COLS][NV];
    float kt_[COLS][NT_ALLOC], vt_[COLS][NT_ALLOC], dkt[COLS][NT_ALLOC], dvt[COLS][NT_ALLOC];
    for (int c = 0; c < COLS; ++c) {
        const long j = min(c0 + c, kv_len - 1);
        load_row(kv_[c], kt_[c], k + b * k_sb + hk * k_sh + j * k_ss, sl);
        load_row(vv[c], vt_[c], v + b * v_sb + hk * v_sh + j * v_ss, 1.0f);
        zero_row(dkv[c], dkt[c]);
        zero_row(dvv[c], dvt[c]);
    }
#if USE_LOCAL
    __local float tq[BLOCK_M * HEAD_DIM], tdo[BLOCK_M * HEAD_DIM];
#endif
    for (int g = 0; g < group; ++g) {
        const int h = hk * group + g;
        const float z = spans[h];
        const int reach = span_reach(z, ramp, kv_len);
        /* Rows whose position lies in kfirst .. klast + reach - 1. */
        const int ilo = max(0, kfirst - off), ihi = min(q_len - 1, klast + reach - 1 - off);
        __global const stor_t *qb = q + b * q_sb + h * q_sh;
        __global const stor_t *ob = dout + b * o_sb + h * o_sh;
        const long rbase = ((long)b * heads + h) * q_len;
        for (int i0 = ilo; i0 <= ihi; i0 += BLOCK_M) {
            const int n = min(BLOCK_M, ihi - i0 + 1);
            const tile_pair t =
                tile_pair_at(qb, q_ss, ob, o_ss, i0, BLOCK_M, ihi LOCAL_PAIR(tq, tdo));
            for (int r = 0; r < n; ++r) {
                const int pos = i0 + r + off;
                const float l2 = lse[rbase + i0 + r] * SPAN_LOG2E, dd = ws[rbase + i0 + r];
                SPAN_ROW(qr, t.a + r * t.sa);
                SPAN_ROW(gr, t.b + r * t.sb);
                for (int c = 0; c < COLS; ++c) {
                    const int x = pos - (c0 + c);
                    if (c0 + c >= kv_len || x < 0 || x >= reach)
                        continue;
                    const float m = span_mask(x, z, ramp);
                    if (!(m > 0.0f))
                        continue;
                    const float w = m * exp2(SPAN_DOT(kv_[c], kt_[c], qr) - l2);
                    const float ds = w * (SPAN_DOT(vv[c], vt_[c], gr) - dd);
                    SPAN_AXPY(dvv[c], dvt[c], w, gr);
                    SPAN_AXPY(dkv[c], dkt[c], ds, qr);
                }
            }
        }
    }
    for (int c = 0; c < COLS; ++c) {
        const long j = c0 + c;
        if (j >= kv_len)
            continue;
        store_row(dk + b * k_sb + hk * k_sh + j * k_ss, dkv[c], dkt[c], scale);
        store_row(dv + b * v_sb + hk * v_sh + j * v_ss, dvv[c], dvt[c], 1.0f);
    }
}

/* dspans[h] = (1 / R) sum over batch and rows of the dz terms, compensated
 * (Kahan) so that long sequences keep their precision, in a fixed order. */
__kernel void attn_span_bwd_dz(__global const float *ws, __global float *dspans, int batch,
                               int q_len, float ramp)
{
    const int h = get_global_id(0), heads = get_global_size(0);
    const long nrows = (long)batch * heads * q_len;
    float sum = 0.0f, comp = 0.0f;
    for (int b = 0; b < batch; ++b) {
        __global const float *t = ws + nrows + ((long)b * heads + h) * q_len;
        for (int i = 0; i < q_len; ++i) {
            const float y = t[i] - comp;
            const float s = sum + y;
            comp = (s - sum) - y;
            sum = s;
        }
    }
    dspans[h] = sum / ramp;
}
