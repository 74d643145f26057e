/*
 * attn_decode.cl -- split-KV softmax attention for few query rows over many
 * keys (flash-decoding): the decoding path of small q_len.
 *
 * With q_len <= 16 a tile row holds every query row, so the forward's
 * parallelism over tile rows vanishes and each query head re-reads the keys
 * of its KV head.  Here one work-item owns HEADS query heads of one KV
 * group (GQA/MQA: q heads h0 .. h0+HEADS-1 share K/V head hk) with all
 * QROWS (= q_len) of their rows, and one range of key tiles, a split: it
 * loads each key and value row of its range once and applies it to all
 * HEADS x QROWS rows.  Each split writes a partial output, normalized by its
 * own sum, and its log-sum-exp into a workspace; attn_merge_stacked
 * (attn_merge.cl) combines the splits exactly.
 *
 * The pattern is the plan's tiled layout (layout/tiling.c) re-blocked with
 * BLOCK_M = q_len, so its one tile row per layout head lists the key tiles
 * in ascending order with FULL / PARTIAL masks, the causal rule folded in:
 * semantics are exactly the forward's.  With a layout per head the HEADS
 * lists are walked together, always at the smallest pending tile column,
 * so a key tile that several heads attend is still read once.  K is read as
 * stored (no packing), VEC elements along the head dimension.
 *
 * WG_SIZE is the GPU shape: the work-item above becomes a work-group of
 * WG_SIZE lanes across the head dimension (lane l owns the VEC-vectors l,
 * l + WG_SIZE, ... of q, of each K and V row and of the accumulators, so a
 * key row is read by the group in one coalesced sweep).  Each lane's
 * partial dot products of a tile go through local memory and are summed
 * (two barriers per tile); every lane then runs the same softmax on the
 * same scores, and P.V needs no reduction: a lane updates and writes only
 * its own dimensions.  WG_SIZE 1 is the CPU shape, with no local memory and
 * no barrier.  PREFETCH 1 hints each key's row of the next tile of K and V
 * while this tile is read: on POCL's CPU devices the loads otherwise wait
 * on memory (perf put 70% of the kernel's samples at them).  DTYPE is the
 * storage of q, k and v (common.clh: float, half or bfloat16); the scores,
 * accumulators and the partial outputs stay float, and the merge rounds
 * the output to the storage type once.
 *
 * Non-finite inputs follow attn_fwd.cl: NaN flows through the arithmetic,
 * masked elements never touch a row.  A split in which a row attends keys
 * whose scores are all -inf writes lse -inf and NaN as the first element of
 * its partial output, which the merge turns into NaN only when no split saw
 * a finite score (the forward's rule for the whole row).
 */
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif
#ifndef VEC
#error "VEC must be defined"
#endif
#ifndef EXP
#error "EXP must be defined"
#endif
#ifndef HEADS
#error "HEADS must be defined"
#endif
#ifndef QROWS
#error "QROWS must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#ifndef WG_SIZE
#error "WG_SIZE must be defined"
#endif
#ifndef PREFETCH
#error "PREFETCH must be defined"
#endif
#ifndef PV_ROWS
#error "PV_ROWS must be defined"
#endif
#if BLOCK_N % VEC != 0
#error "BLOCK_N must be a multiple of VEC"
#endif

#define NV (HEAD_DIM / VEC)
#define NT (HEAD_DIM % VEC)
#define NT_ALLOC (NT > 0 ? NT : 1)
#define NKV (BLOCK_N / VEC)
#define MW ((BLOCK_N + 31) / 32)
#define R (HEADS * QROWS)                  /* rows of one work-item: head-major */
#define NVL ((NV + WG_SIZE - 1) / WG_SIZE) /* VEC-vectors of one lane */
/* P.V's register block, PV_R rows by PV_VECS vectors of the head
 * dimension, whose accumulators stay in registers while the tile's V rows
 * go by: each V vector is loaded (and, from half storage, converted) once
 * per block.  A lane of the GPU shape holds few vectors, so all R rows of
 * one vector fit.  The CPU shape's R x NVL accumulators exceed the register
 * file: it sweeps the tile once per PV_ROWS rows (tuned) and about 8
 * accumulators, reading each V row front to back (the tile stays in L1
 * after the first sweep).  On a half cache (GQA 4:1, d=128, 32k keys,
 * AVX-512) PV_ROWS 2 beat 1 by 1.05x in the tuner's interleaved rounds. */
#if WG_SIZE == 1
#define PV_R (PV_ROWS < R ? PV_ROWS : R)
#define PV_VECS_MAX (8 / PV_R > 1 ? 8 / PV_R : 1)
#define PV_VECS (NVL < PV_VECS_MAX ? NVL : PV_VECS_MAX)
#else
#if PV_ROWS != 1
#error "PV_ROWS applies to the CPU shape (WG_SIZE 1) only"
#endif
#define PV_R R
#define PV_VECS 1
#endif
#if NV < 1
#error "VEC must not exceed HEAD_DIM"
#endif

/* PREFETCH: a cache hint for a row of HEAD_DIM elements, one per 64-byte
 * line.  Compilers for CPU targets (POCL builds for the host's x86-64 or
 * AArch64) lower clang's __builtin_prefetch to the prefetch instruction,
 * which is what keeps the memory busy there; other targets (SPIR for
 * oclgrind, GPU back ends) may have the builtin but no lowering for it, and
 * get OpenCL's prefetch(), which drivers may ignore. */
#if (defined(__x86_64__) || defined(__aarch64__)) && defined(__has_builtin)
#if __has_builtin(__builtin_prefetch)
#define DEC_PREFETCH_LINE(p) __builtin_prefetch(p)
#endif
#endif
#ifndef DEC_PREFETCH_LINE
#define DEC_PREFETCH_LINE(p) prefetch((p), 64)
#endif
#define DEC_PREFETCH_ROW(row)                                                                      \
    do {                                                                                           \
        __global const char *pr_ = (__global const char *)(row);                                   \
        for (int l_ = 0; l_ < HEAD_DIM * (int)sizeof(stor_t); l_ += 64)                            \
            DEC_PREFETCH_LINE(pr_ + l_);                                                           \
    } while (0)

#if R <= 8
#define DEC_UNROLL_ROWS _Pragma("unroll")
#else
#define DEC_UNROLL_ROWS
#endif

typedef union {
    floatv v[NKV];
    float f[BLOCK_N];
} dec_scores;

/* The first entry in [lo, hi) of an ascending column list with col >= t. */
inline int first_at_or_after(__global const int *col, int lo, int hi, int t)
{
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (col[mid] < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Global size (splits * WG_SIZE, kv_heads * group / HEADS, batch), one
 * work-group per (split, HEADS heads of a KV group, batch).  Split s covers key tiles [s *
 * tiles_per_split, (s + 1) * tiles_per_split); its partial output of row (b, h, i) is at part_o +
 * (s * rows_total + (b * q_heads + h) * QROWS + i) * HEAD_DIM, its lse at
 * part_lse[s * rows_total + ...], rows_total = batch * q_heads * QROWS.
 *
 * Without kv_lens (use_lens 0) the keys are the plan's kv_len keys of the
 * tiled layout.  With kv_lens, sequence b has kv_lens[b] keys (a KV cache's
 * current length, at most the plan's kv_len, its capacity); with use_lens 2
 * (a plan with a layout, all lengths equal to kv_len) the tiled layout is
 * walked as without lengths; with use_lens 1 the plan's pattern follows the
 * sequence (no layout, or a dense, causal, window or streaming one) and is
 * applied to each sequence's own length, with no tile list: row i, at
 * position pos = i + kv_lens[b] - QROWS (queries sit at the end of the
 * sequence, as everywhere), attends keys j < kv_lens[b] with
 * j <= pos + f_right and (j < f_sink or j >= pos - f_left) (the host folds
 * `causal` into f_right and passes kv_len for an unbounded side).  The walk
 * then covers the key tiles of the sinks, [0, st), and those of the rows'
 * windows, [lt, nt), as one list whose entries the splits share evenly.  With
 * page_size > 0 the cache is paged: key j of sequence b lives in page
 * block_table[b * max_pages + j / page_size] of the pools k and v, at row
 * j % page_size; the batch strides k_sb, v_sb are the pools' page strides.
 * The host has checked every table entry the lengths reach. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_decode(__global const stor_t *restrict q, __global const stor_t *restrict k,
            __global const stor_t *restrict v, __global float *restrict part_o,
            __global float *restrict part_lse, __global const int *restrict tile_ptr,
            __global const int *restrict tile_col, __global const int *restrict tile_mask,
            __global const uint *restrict mask_bits, const int q_len, const int kv_len,
            const int q_heads, const int group, const int layout_heads, const int n_tile_rows,
            const int tiles_per_split, const float scale_log2, const long q_sb, const long q_sh,
            const long q_ss, const long k_sb, const long k_sh, const long k_ss, const long v_sb,
            const long v_sh, const long v_ss, __global const int *restrict kv_lens,
            const int use_lens, const int causal, __global const int *restrict block_table,
            const int page_size, const int max_pages, const int f_sink, const int f_left,
            const int f_right)
{
    const int split = get_group_id(0);
    const int lane = get_local_id(0);
#if WG_SIZE > 1
    /* each lane's partial dot products of a tile, then their sums */
    __local float part_dot[WG_SIZE * R * BLOCK_N];
    __local float tile_dot[R * BLOCK_N];
#endif
    const int chunks = group / HEADS;
    const int hk = get_group_id(1) / chunks;
    const int h0 = hk * group + (get_group_id(1) - hk * chunks) * HEADS;
    const int b = get_group_id(2);
    const int t0 = split * tiles_per_split;
    const int n_keys = use_lens ? kv_lens[b] : kv_len;
    const int dense_walk = use_lens == 1;
    const int nt = (n_keys + BLOCK_N - 1) / BLOCK_N;
    (void)q_len; /* == QROWS: the program is built for the plan's q_len */
    /* The last key each row may see when the lengths come with the call,
     * and (use_lens 1) the first one past the sinks. */
    int lim[R], lo[R], lim_min = INT_MAX, lo_min = INT_MAX, lo_max = INT_MIN;
    for (int r = 0; r < R; ++r) {
        const int pos = r % QROWS + n_keys - QROWS;
        lim[r] = !use_lens ? INT_MAX
                 : dense_walk ? (int)min((long)n_keys - 1, (long)pos + f_right)
                 : causal     ? pos
                              : n_keys - 1;
        lo[r] = dense_walk ? (int)max((long)pos - f_left, -1L) : INT_MIN;
        lim_min = min(lim_min, lim[r]);
        lo_min = min(lo_min, lo[r]);
        lo_max = max(lo_max, lo[r]);
    }
    /* use_lens 1: the split's share [u, u1) of the tiles [0, st) ++ [lt, nt). */
    const int st = min(nt, (f_sink + BLOCK_N - 1) / BLOCK_N);
    const int lt = max(st, min(nt, max(lo_min, 0) / BLOCK_N));
    const int u1 = min(t0 + tiles_per_split, st + nt - lt);
    const int t1 = dense_walk ? nt : min(t0 + tiles_per_split, nt);

    floatv qv[R][NVL], acc[R][NVL], lsum[R];
    float qt[R][NT_ALLOC], acct[R][NT_ALLOC], m[R];
    int seen[R];
    for (int r = 0; r < R; ++r) {
        __global const stor_t *qr = q + b * q_sb + (h0 + r / QROWS) * q_sh + (r % QROWS) * q_ss;
        for (int j = 0; j < NVL; ++j) {
            const int d = min(lane + j * WG_SIZE, NV - 1); /* past NV: loaded, never used */
            qv[r][j] = SLOADV(qr + d * VEC) * scale_log2;
            acc[r][j] = (floatv)(0.0f);
        }
        for (int t = 0; t < NT; ++t) { /* the tail of the head dimension: lane 0's */
            qt[r][t] = SLOAD1(qr + NV * VEC + t) * scale_log2;
            acct[r][t] = 0.0f;
        }
        lsum[r] = (floatv)(0.0f);
        m[r] = -INFINITY;
        seen[r] = 0;
    }

    /* One cursor per head into its tile list, from the split's first tile. */
    int e[HEADS], e_end[HEADS];
    for (int hh = 0; hh < HEADS; ++hh) {
        const int base = (layout_heads == 1 ? 0 : h0 + hh) * (n_tile_rows + 1);
        e_end[hh] = tile_ptr[base + 1];
        e[hh] = first_at_or_after(tile_col, tile_ptr[base], e_end[hh], t0);
    }
    __global const stor_t *kb = k + hk * k_sh + (page_size ? 0 : b * k_sb);
    __global const stor_t *vb = v + hk * v_sh + (page_size ? 0 : b * v_sb);
    __global const int *pages = block_table + (long)b * max_pages;
    /* Key j's row (clamped into the sequence: keys past it only occur
     * where the mask or the row limit drops them). */
#define DEC_ROW(base, sb, ss, j)                                                                   \
    ((base) + (page_size ? (long)pages[min(j, n_keys - 1) / page_size] * (sb) +                    \
                               (long)(min(j, n_keys - 1) % page_size) * (ss)                       \
                         : (long)min(j, n_keys - 1) * (ss)))

    /* Whether row r sees key j under the lengths (lo[r] is INT_MIN unless
     * use_lens is 1). */
#define DEC_IN(r, j) ((j) <= lim[r] && ((j) < f_sink || (j) >= lo[r]))
    int next = t0; /* the walk of use_lens 1, an index into [0, st) ++ [lt, nt) */
    for (;;) {
        int c = t1;
        if (dense_walk) {
            if (next >= u1)
                break;
            c = next < st ? next : lt + next - st;
            ++next;
        } else
            for (int hh = 0; hh < HEADS; ++hh)
                if (e[hh] < e_end[hh])
                    c = min(c, tile_col[e[hh]]);
        if (c >= t1)
            break;
        /* Per head: whether it attends this tile, and its mask (-1 FULL). */
        int act[HEADS], mi[HEADS];
        for (int hh = 0; hh < HEADS; ++hh) {
            act[hh] = dense_walk || (e[hh] < e_end[hh] && tile_col[e[hh]] == c);
            mi[hh] = dense_walk ? -1 : act[hh] ? tile_mask[e[hh]] : 0;
            e[hh] += act[hh] && !dense_walk;
        }
        const int c0 = c * BLOCK_N;
        /* Some row's limit falls inside the tile (elements past it drop),
         * or the start of its window does, past the sinks. */
        const int bounded = c0 + BLOCK_N - 1 > lim_min || (c0 + BLOCK_N > f_sink && c0 < lo_max);
        int all_full = !bounded;
        for (int hh = 0; hh < HEADS; ++hh)
            all_full &= act[hh] && mi[hh] < 0;

        dec_scores s[R];
        for (int x = 0; x < BLOCK_N; ++x) {
            /* Keys past kv_len only occur in PARTIAL tiles (bits 0 there);
             * the clamped row keeps the load in bounds. */
            __global const stor_t *kr = DEC_ROW(kb, k_sb, k_ss, c0 + x);
#if PREFETCH
            /* the next tile's K and V rows, one hint per 64-byte line */
            DEC_PREFETCH_ROW(DEC_ROW(kb, k_sb, k_ss, c0 + BLOCK_N + x));
            DEC_PREFETCH_ROW(DEC_ROW(vb, v_sb, v_ss, c0 + BLOCK_N + x));
#endif
            /* Unrolled, a few rows' partial sums stay in registers through
             * the row (rolled, POCL spilled and reloaded them every key);
             * many rows spill either way, and unrolling them only multiplies
             * the compile time (q_len 16 x 4 heads: 15 s a program). */
            floatv a[R];
            DEC_UNROLL_ROWS
            for (int r = 0; r < R; ++r)
                a[r] = (floatv)(0.0f);
            DEC_UNROLL_ROWS
            for (int j = 0; j < NVL; ++j) {
                const int d = lane + j * WG_SIZE;
                if (NV % WG_SIZE != 0 && d >= NV)
                    break;
                const floatv kk = SLOADV(kr + d * VEC);
#pragma unroll
                for (int r = 0; r < R; ++r)
                    a[r] = fma(qv[r][j], kk, a[r]);
            }
            DEC_UNROLL_ROWS
            for (int r = 0; r < R; ++r) {
                float y = HSUMV(a[r]);
                for (int t = 0; t < NT && lane == 0; ++t)
                    y = fma(qt[r][t], SLOAD1(kr + NV * VEC + t), y);
#if WG_SIZE > 1
                part_dot[(lane * R + r) * BLOCK_N + x] = y;
#else
                s[r].f[x] = y;
#endif
            }
        }
#if WG_SIZE > 1
        /* The lanes' partial dots summed, then every lane takes the sums. */
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int i = lane; i < R * BLOCK_N; i += WG_SIZE) {
            float y = 0.0f;
            for (int l = 0; l < WG_SIZE; ++l)
                y += part_dot[l * R * BLOCK_N + i];
            tile_dot[i] = y;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int r = 0; r < R; ++r)
            for (int x = 0; x < BLOCK_N; ++x)
                s[r].f[x] = tile_dot[r * BLOCK_N + x];
#endif

        for (int r = 0; r < R; ++r) {
            const int hh = r / QROWS;
            if (!act[hh]) {
                for (int x = 0; x < NKV; ++x)
                    s[r].v[x] = (floatv)(0.0f);
                continue;
            }
            __global const uint *mb = mask_bits + ((long)max(mi[hh], 0) * QROWS + r % QROWS) * MW;
            if (bounded) {
                int kept = 0;
                for (int x = 0; x < BLOCK_N; ++x) {
                    const int keep = DEC_IN(r, c0 + x);
                    s[r].f[x] = keep ? s[r].f[x] : -INFINITY;
                    kept |= keep;
                }
                seen[r] |= kept;
            }
            if (mi[hh] >= 0) {
                uint any = 0;
                for (int w = 0; w < MW; ++w)
                    any |= mb[w];
                seen[r] |= any != 0;
                for (int x = 0; x < NKV; ++x)
                    s[r].v[x] = sparcl_mask_scores(s[r].v[x], mb, x);
            } else if (!bounded) {
                seen[r] = 1;
            }
            floatv mv = s[r].v[0];
            for (int x = 1; x < NKV; ++x)
                mv = SPARCL_MAXNN(mv, s[r].v[x]);
            const float mx = SPARCL_MAXNN(m[r], HMAXV(mv));
            if (mx == -INFINITY) { /* only -inf so far, or a NaN the max dropped */
                for (int x = 0; x < NKV; ++x) {
                    s[r].v[x] = select((floatv)(0.0f), s[r].v[x], isnan(s[r].v[x]));
                    lsum[r] += s[r].v[x];
                }
                continue;
            }
            if (mx > m[r]) {
                const floatv alpha = EXP2V((floatv)(m[r] - mx));
                lsum[r] *= alpha;
                for (int j = 0; j < NVL; ++j)
                    acc[r][j] *= alpha;
                for (int t = 0; t < NT; ++t)
                    acct[r][t] *= FIRSTV(alpha);
                m[r] = mx;
            }
            for (int x = 0; x < NKV; ++x) {
                s[r].v[x] = EXP2V(s[r].v[x] - mx);
                lsum[r] += s[r].v[x];
            }
        }

        /* P.V over the tile's keys, PV_ROWS rows by PV_VECS vectors of the
         * head dimension at a time, their accumulators in registers (see
         * PV_ROWS).  Element (r, x) counts only where its head attends the
         * tile and, in a PARTIAL tile, its bit is set (a masked value may be
         * NaN; 0 * NaN is NaN): checked per element unless every head's tile
         * is FULL. */
#define DEC_VROW(x) DEC_ROW(vb, v_sb, v_ss, c0 + (x))
#define DEC_KEEP(r, x)                                                                             \
    (act[(r) / QROWS] && DEC_IN(r, c0 + (x)) &&                                                    \
     (mi[(r) / QROWS] < 0 ||                                                                       \
      SPARCL_MASK_BIT(mask_bits + (long)mi[(r) / QROWS] * QROWS * MW, (r) % QROWS, x, MW)))
#define DEC_PV(KEEP)                                                                               \
    do {                                                                                           \
        for (int r0 = 0; r0 < R; r0 += PV_R)                                                       \
            for (int j0 = 0; j0 < NVL; j0 += PV_VECS) {                                            \
                floatv a[PV_R][PV_VECS];                                                           \
                for (int rr = 0; rr < PV_R && r0 + rr < R; ++rr)                                   \
                    for (int jj = 0; jj < PV_VECS && j0 + jj < NVL; ++jj)                          \
                        a[rr][jj] = acc[r0 + rr][j0 + jj];                                         \
                for (int x = 0; x < BLOCK_N; ++x) {                                                \
                    __global const stor_t *vr = DEC_VROW(x);                                       \
                    _Pragma("unroll") for (int jj = 0; jj < PV_VECS; ++jj)                         \
                    {                                                                              \
                        const int d = lane + (j0 + jj) * WG_SIZE;                                  \
                        if (j0 + jj >= NVL || (NV % WG_SIZE != 0 && d >= NV))                      \
                            break;                                                                 \
                        const floatv vv = SLOADV(vr + d * VEC);                                    \
                        _Pragma("unroll") for (int rr = 0; rr < PV_R; ++rr) if (                   \
                            r0 + rr < R && KEEP(r0 + rr, x)) a[rr][jj] =                           \
                            fma((floatv)(s[r0 + rr].f[x]), vv, a[rr][jj]);                         \
                    }                                                                              \
                }                                                                                  \
                for (int rr = 0; rr < PV_R && r0 + rr < R; ++rr)                                   \
                    for (int jj = 0; jj < PV_VECS && j0 + jj < NVL; ++jj)                          \
                        acc[r0 + rr][j0 + jj] = a[rr][jj];                                         \
            }                                                                                      \
        for (int x = 0; x < BLOCK_N && lane == 0; ++x)                                             \
            for (int t = 0; t < NT; ++t) {                                                         \
                const float vs = SLOAD1(DEC_VROW(x) + NV * VEC + t);                               \
                _Pragma("unroll") for (int r = 0; r < R; ++r) if (KEEP(r, x)) acct[r][t] =         \
                    fma(s[r].f[x], vs, acct[r][t]);                                                \
            }                                                                                      \
    } while (0)
#define DEC_ALL(r, x) 1
        if (all_full)
            DEC_PV(DEC_ALL);
        else
            DEC_PV(DEC_KEEP);
#undef DEC_PV
#undef DEC_ALL
#undef DEC_KEEP
#undef DEC_VROW
    }
#undef DEC_ROW
#undef DEC_IN

    const long rows_total = (long)get_num_groups(2) * q_heads * QROWS;
    for (int r = 0; r < R; ++r) {
        const long row = ((long)b * q_heads + h0 + r / QROWS) * QROWS + r % QROWS;
        __global float *orow = part_o + (split * rows_total + row) * HEAD_DIM;
        const float ls = HSUMV(lsum[r]);
        /* Attended, but every score -inf: marked for the merge. */
        const int all_ninf = seen[r] && ls == 0.0f;
        const float inv = seen[r] && !all_ninf ? 1.0f / ls : 0.0f;
        for (int j = 0; j < NVL; ++j) {
            const int d = lane + j * WG_SIZE;
            if (NV % WG_SIZE == 0 || d < NV)
                STOREV(acc[r][j] * inv, orow + d * VEC);
        }
        if (lane != 0)
            continue;
        for (int t = 0; t < NT; ++t)
            orow[NV * VEC + t] = acct[r][t] * inv;
        if (all_ninf)
            orow[0] = NAN; /* element 0 is in lane 0's first vector */
        part_lse[split * rows_total + row] =
            seen[r] && !all_ninf ? (m[r] + log2(ls)) * M_LN2_F : -INFINITY;
    }
}
