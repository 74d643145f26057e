/*
 * block_select.cl -- dynamic block selection (MInference / XAttention /
 * SpargeAttn style): the kernels that choose, per (batch, head, query
 * block), which key blocks a call attends to, and that write the choice as
 * the tiled layout cl/attn_fwd.cl walks, on the device, in the same queue.
 *
 *   select_pool    the mean of each block's rows of Q or K;
 *   select_blocks  scores every causally visible key block of a query block
 *                  (pooled q . pooled k * scale) and keeps the top k, or the
 *                  smallest set whose estimated softmax mass reaches tau;
 *   select_tiles   per tile row, the union of the pinned tiles (uploaded
 *                  once by the plan) and the tiles of the selected blocks,
 *                  counted (write = 0) or written (write = 1);
 *   select_cols    the same tiles listed by tile column (the backward's
 *                  dK/dV pass);
 *   select_scan    per head, the tile rows' (or columns') counts into
 *                  tile_ptr.
 *
 * The rule, exactly as the host reference in tests/test_select.c states it:
 * key block c is a candidate for query block r when some query of r may see
 * some key of c (every block without causal; with causal, c * S <=
 * last query of r + kv_len - q_len).  Candidates are ordered by score, the
 * higher first, ties to the lower block index; a NaN score ranks as -inf.
 * Top-k keeps the first min(k, candidates).  Mass keeps the shortest prefix
 * whose weights n_c * exp(s_c - max s) (n_c: keys in block c) sum to at
 * least tau times the candidates' total.  No work-group cooperation: one
 * work-item per item, so these run on any device at any work-group size.
 */

/* A total order on (score, block) as one integer: higher score first, then
 * lower block; the float's bits mapped so that unsigned order is float
 * order. */
inline ulong select_key(float s, int c)
{
    const uint u = as_uint(isnan(s) ? -INFINITY : s);
    const uint ord = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((ulong)ord << 32) | (ulong)(0xffffffffu - (uint)c);
}

/* Mean of the rows of block nb of one (batch, head) of x (stored as the
 * plan's DTYPE, common.clh) into
 * pooled[((b * heads + h) * n_blocks + nb) * head_dim + d], one work-item
 * per (nb, d): neighbouring work-items read neighbouring floats of a row,
 * so the loads vectorize across work-items (a work-item per block walking
 * all dimensions read every row head_dim times, one cache line apart). */
__kernel void select_pool(__global const stor_t *restrict x, __global float *restrict pooled,
                          const int len, const int heads, const int head_dim, const int block,
                          const long sb, const long sh, const long ss)
{
    const int g = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const int nb = g / head_dim, d = g - nb * head_dim;
    const int n_blocks = get_global_size(0) / head_dim;
    const int r0 = nb * block, r1 = min(len, r0 + block);
    __global const stor_t *src = x + b * sb + h * sh + d;
    float acc = 0.0f;
    for (int i = r0; i < r1; ++i)
        acc += SLOAD1(src + (long)i * ss);
    pooled[(((long)b * heads + h) * n_blocks + nb) * head_dim + d] = acc * (1.0f / (float)(r1 - r0));
}

/* One work-item per (query block r, query head, batch): writes sel[kb] in
 * {0, 1} for every key block of its row; score and weight are scratch of
 * n_kb floats each per row. */
__kernel void select_blocks(__global const float *restrict pq, __global const float *restrict pk,
                            __global uchar *restrict sel, __global float *restrict score,
                            __global float *restrict weight, const int n_qb, const int n_kb,
                            const int q_len, const int kv_len, const int q_heads, const int group,
                            const int block, const int head_dim, const int causal,
                            const float scale, const int rule, const int k, const float tau)
{
    const int r = get_global_id(0), hq = get_global_id(1), b = get_global_id(2);
    const int kv_heads = q_heads / group;
    const long row = ((long)b * q_heads + hq) * n_qb + r;
    __global const float *qv = pq + row * head_dim;
    __global const float *kv = pk + ((long)b * kv_heads + hq / group) * n_kb * head_dim;
    __global uchar *out = sel + row * n_kb;
    __global float *s = score + row * n_kb;
    __global float *w = weight + row * n_kb;
    const long last = (long)min(q_len, (r + 1) * block) - 1 + (kv_len - q_len);
    const int n_cand = !causal ? n_kb : last < 0 ? 0 : (int)min((long)n_kb, last / block + 1);
    float mx = -INFINITY;
    for (int c = 0; c < n_cand; ++c) {
        float acc = 0.0f;
        for (int d = 0; d < head_dim; ++d)
            acc = fma(qv[d], kv[(long)c * head_dim + d], acc);
        const float x = isnan(acc * scale) ? -INFINITY : acc * scale;
        s[c] = x;
        mx = fmax(mx, x);
    }
    float total = 0.0f;
    for (int c = 0; c < n_cand; ++c) {
        const int n = min(kv_len, (c + 1) * block) - c * block;
        w[c] = mx == -INFINITY ? (float)n : (float)n * exp(s[c] - mx);
        total += w[c];
    }
    /* The largest key T such that the set {key >= T} still satisfies the
     * rule; by the order's uniqueness that set is a prefix of the ranking. */
    const int want = min(k, n_cand);
    const float goal = tau * total;
    ulong lo = 0, hi = ~(ulong)0;
    while (lo < hi) {
        const ulong mid = lo + ((hi - lo) >> 1) + 1;
        int count = 0;
        float mass = 0.0f;
        for (int c = 0; c < n_cand; ++c)
            if (select_key(s[c], c) >= mid) {
                ++count;
                mass += w[c];
            }
        if (rule == 1 ? count >= want : mass >= goal)
            lo = mid;
        else
            hi = mid - 1;
    }
    for (int c = 0; c < n_kb; ++c)
        out[c] = c < n_cand && select_key(s[c], c) >= lo;
}

/* One work-item per (tile row tr, query head, batch).  Tile column c is
 * listed when the pinned tiling lists it, or when its key block is selected
 * for tr's query block and c < edge_hi[tr] (some key of the tile visible).
 * A selected tile is FULL below edge_lo[tr]; from there it takes edge mask
 * edge_base[tr] + c - edge_lo[tr] (the causal and sequence-end bits, a
 * superset of any pinned mask of the tile), stored after the n_pin_masks
 * pinned masks.  write = 0 counts into counts[]; write = 1 writes the list
 * at tile_ptr. */
__kernel void select_tiles(
    __global const uchar *restrict sel, __global const int *restrict pin_ptr,
    __global const int *restrict pin_col, __global const int *restrict pin_mask,
    const int pin_heads, __global const int *restrict edge_lo, __global const int *restrict edge_hi,
    __global const int *restrict edge_base, const int n_pin_masks, __global int *restrict counts,
    __global const int *restrict tile_ptr, __global int *restrict tile_col,
    __global int *restrict tile_mask, const int write, const int n_tr, const int n_tc,
    const int n_qb, const int n_kb, const int tm, const int tn, const int block, const int q_heads)
{
    const int tr = get_global_id(0), hq = get_global_id(1), b = get_global_id(2);
    const long bh = (long)b * q_heads + hq;
    __global const uchar *srow = sel + (bh * n_qb + (long)tr * tm / block) * n_kb;
    const int lp = pin_heads == 1 ? 0 : hq;
    int pi = pin_ptr[lp * (n_tr + 1) + tr];
    const int pe = pin_ptr[lp * (n_tr + 1) + tr + 1];
    const int lo = edge_lo[tr], hi = edge_hi[tr], base = n_pin_masks + edge_base[tr];
    const int o = write ? tile_ptr[bh * (n_tr + 1) + tr] : 0;
    int n = 0;
    for (int c = 0; c < n_tc; ++c) {
        const int s_on = c < hi && srow[c * tn / block];
        const int p_on = pi < pe && pin_col[pi] == c;
        if (s_on || p_on) {
            if (write) {
                tile_col[o + n] = c;
                tile_mask[o + n] = !s_on ? pin_mask[pi] : c < lo ? -1 : base + c - lo;
            }
            ++n;
        }
        pi += p_on;
    }
    if (!write)
        counts[bh * n_tr + tr] = n;
}

/* The column view of the same lists, for the backward's dK/dV pass: one
 * work-item per (tile column tc, query head, batch) walks the tile rows in
 * order; a tile is listed, with the same mask, exactly when select_tiles
 * lists it.  pin_ptr, pin_row and pin_mask are the pinned tiling's column
 * view. */
__kernel void select_cols(
    __global const uchar *restrict sel, __global const int *restrict pin_ptr,
    __global const int *restrict pin_row, __global const int *restrict pin_mask,
    const int pin_heads, __global const int *restrict edge_lo, __global const int *restrict edge_hi,
    __global const int *restrict edge_base, const int n_pin_masks, __global int *restrict counts,
    __global const int *restrict col_ptr, __global int *restrict col_row,
    __global int *restrict col_mask, const int write, const int n_tr, const int n_tc,
    const int n_qb, const int n_kb, const int tm, const int tn, const int block, const int q_heads)
{
    const int tc = get_global_id(0), hq = get_global_id(1), b = get_global_id(2);
    const long bh = (long)b * q_heads + hq;
    __global const uchar *scol = sel + bh * n_qb * n_kb + (long)tc * tn / block;
    const int lp = pin_heads == 1 ? 0 : hq;
    int pi = pin_ptr[lp * (n_tc + 1) + tc];
    const int pe = pin_ptr[lp * (n_tc + 1) + tc + 1];
    const int o = write ? col_ptr[bh * (n_tc + 1) + tc] : 0;
    int n = 0;
    for (int tr = 0; tr < n_tr; ++tr) {
        const int lo = edge_lo[tr];
        const int s_on = tc < edge_hi[tr] && scol[(long)tr * tm / block * n_kb];
        const int p_on = pi < pe && pin_row[pi] == tr;
        if (s_on || p_on) {
            if (write) {
                col_row[o + n] = tr;
                col_mask[o + n] = !s_on    ? pin_mask[pi]
                                  : tc < lo ? -1
                                            : n_pin_masks + edge_base[tr] + tc - lo;
            }
            ++n;
        }
        pi += p_on;
    }
    if (!write)
        counts[bh * n_tc + tc] = n;
}

/* One work-item per (query head, batch): head bh's tile rows start at
 * bh * cap (cap: the most tiles one head can list) and follow each other. */
__kernel void select_scan(__global const int *restrict counts, __global int *restrict tile_ptr,
                          const int n_tr, const int q_heads, const int cap)
{
    const int hq = get_global_id(0), b = get_global_id(1);
    const long bh = (long)b * q_heads + hq;
    __global int *p = tile_ptr + bh * (n_tr + 1);
    int acc = (int)(bh * cap);
    for (int tr = 0; tr < n_tr; ++tr) {
        p[tr] = acc;
        acc += counts[bh * n_tr + tr];
    }
    p[n_tr] = acc;
}
