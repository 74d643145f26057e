/*
 * attn_merge.cl -- combines partial softmax attention results.
 *
 * Part p of a row holds the attention of the row over a subset S_p of its
 * keys: out_p = sum_{j in S_p} exp(s_j - lse_p) v_j and lse_p = log sum_{j
 * in S_p} exp(s_j), with the subsets disjoint.  The attention over their
 * union is then
 *   m = max_p lse_p,  w_p = exp(lse_p - m),  L = sum_p w_p,
 *   out = sum_p w_p out_p / L,  lse = m + log L,
 * which is exact (up to rounding) whatever the split.  A part whose lse is
 * -inf saw no key: it weighs 0 and its out is never read, unless every part
 * is like that; then the row attends to nothing (out 0, lse -inf), or, when
 * some such part's out starts with NaN, to keys whose scores were all -inf
 * (the split-KV kernel marks those parts so), which is undefined: NaN, as
 * the forward gives.  A NaN lse (a part that saw a NaN or +inf score) makes
 * the row NaN through the arithmetic.
 *
 * Two kernels share the row merge: attn_merge takes up to MERGE_ARGS parts
 * as separate buffers (the public sparcl_merge, which chains launches for
 * more), attn_merge_stacked takes the parts stacked in one buffer (the
 * split-KV decoding path's workspace, whose output is stored as the plan's
 * DTYPE: float, half or bfloat16; the parts are always float).  One
 * work-item per row.
 */
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#define MERGE_ARGS 8 /* part buffers of one attn_merge launch */
#define MERGE_MAX 64 /* parts of one attn_merge_stacked launch (SPARCL__MERGE_STACKED_MAX) */

/* The scale of one row's merge from its n parts' log-sum-exps: returns 1
 * and sets w[p] (exp(lse_p - m), 0 for a part that saw no key), *m (the
 * largest lse) and *inv (1 / sum_p w[p]) when
 * some part saw a key with a finite score, else 0 and sets *empty to the
 * row's value, 0 (no key) or NaN (keys whose scores were all -inf, a part
 * marked by NaN as its first element).  *lrow gets the merged lse. */
inline int sparcl_merge_scale(int n, __global const float *const *po, const float *lse, float *w,
                              float *m, float *inv, float *empty, float *lrow)
{
    float mx = -INFINITY;
    int nan_lse = 0;
    for (int p = 0; p < n; ++p) {
        mx = fmax(mx, lse[p]);
        nan_lse |= isnan(lse[p]);
    }
    if (mx == -INFINITY && !nan_lse) {
        int undefined = 0;
        for (int p = 0; p < n; ++p)
            undefined |= isnan(po[p][0]);
        *empty = undefined ? NAN : 0.0f;
        *lrow = undefined ? NAN : -INFINITY;
        return 0;
    }
    /* mx is +inf or finite; a NaN lse gives NaN weights below. */
    float l = 0.0f;
    for (int p = 0; p < n; ++p) {
        w[p] = lse[p] == -INFINITY ? 0.0f : exp(lse[p] - mx);
        l += w[p];
    }
    *m = mx;
    *inv = 1.0f / l;
    *lrow = mx + log(l);
    return 1;
}

/* Element d of the merged row (sparcl_merge_scale returned 1 and set w:
 * one exp per part and row, not per element). */
inline float sparcl_merge_element(int n, __global const float *const *po, const float *lse,
                                  const float *w, float inv, int d)
{
    float acc = 0.0f;
    for (int p = 0; p < n; ++p)
        if (lse[p] != -INFINITY)
            acc = fma(w[p], po[p][d], acc);
    return acc * inv;
}

/* Merges the n parts of one row, part p at po[p] with log-sum-exp lse[p],
 * into the float row orow (and *lrow when lrow is not NULL).  lse[] may
 * alias nothing written here. */
inline void sparcl_merge_row(int n, __global const float *const *po, const float *lse,
                             __global float *orow, __global float *lrow, int head_dim)
{
    float w[MERGE_ARGS + 1], m = 0.0f, inv = 0.0f, empty = 0.0f, l;
    const int any = sparcl_merge_scale(n, po, lse, w, &m, &inv, &empty, &l);
    for (int d = 0; d < head_dim; ++d)
        orow[d] = any ? sparcl_merge_element(n, po, lse, w, inv, d) : empty;
    if (lrow)
        *lrow = l;
}

/* Row (b, h, i) of the output: offsets from the strides. */
#define ROW_OFFSET(sb, sh, ss, b, h, i) ((long)(b) * (sb) + (long)(h) * (sh) + (long)(i) * (ss))

/* Parts given as buffers p0..p7 (the first n used) with their lse buffers
 * l0..l7 (contiguous [batch, heads, q_len]); parts share the strides
 * p_s*.  With `accumulate`, out and lse already hold a merged partial that
 * counts as one more part (how a merge of more than MERGE_ARGS parts is
 * chained).  Global size (q_len, heads, batch). */
__kernel void
attn_merge(__global const float *p0, __global const float *p1, __global const float *p2,
           __global const float *p3, __global const float *p4, __global const float *p5,
           __global const float *p6, __global const float *p7, __global const float *l0,
           __global const float *l1, __global const float *l2, __global const float *l3,
           __global const float *l4, __global const float *l5, __global const float *l6,
           __global const float *l7, const int n, const int accumulate, __global float *out,
           __global float *lse, const int write_lse, const int q_len, const int heads,
           const int head_dim, const long p_sb, const long p_sh, const long p_ss, const long o_sb,
           const long o_sh, const long o_ss)
{
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (i >= q_len)
        return;
    __global const float *parts[MERGE_ARGS] = {p0, p1, p2, p3, p4, p5, p6, p7};
    __global const float *lses[MERGE_ARGS] = {l0, l1, l2, l3, l4, l5, l6, l7};
    const long row = ((long)b * heads + h) * q_len + i;
    const long po = ROW_OFFSET(p_sb, p_sh, p_ss, b, h, i);
    __global float *orow = out + ROW_OFFSET(o_sb, o_sh, o_ss, b, h, i);
    __global const float *rows[MERGE_ARGS + 1];
    float ls[MERGE_ARGS + 1];
    for (int p = 0; p < n; ++p) {
        rows[p] = parts[p] + po;
        ls[p] = lses[p][row];
    }
    int k = n;
    if (accumulate) {
        rows[k] = orow;
        ls[k++] = lse[row];
    }
    /* orow is both a part and the destination when accumulating: each
     * element is read before it is written, by this work-item only. */
    sparcl_merge_row(k, rows, ls, orow, write_lse ? lse + row : 0, head_dim);
}

/* Parts stacked in one buffer: part p's row (b, h, i) at
 * parts + p * part_stride + ((b * heads + h) * q_len + i) * head_dim, its
 * lse at lses[p * lse_stride + (b * heads + h) * q_len + i].  Global size
 * (q_len, heads, batch). */
__kernel void attn_merge_stacked(__global const float *parts, __global const float *lses,
                                 const int n, const long part_stride, const long lse_stride,
                                 __global stor_t *out, __global float *lse, const int write_lse,
                                 const int q_len, const int heads, const int head_dim,
                                 const long o_sb, const long o_sh, const long o_ss)
{
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (i >= q_len)
        return;
    const long row = ((long)b * heads + h) * q_len + i;
    __global const float *rows[MERGE_MAX];
    float ls[MERGE_MAX];
    const int k = min(n, MERGE_MAX);
    for (int p = 0; p < k; ++p) {
        rows[p] = parts + p * part_stride + row * head_dim;
        ls[p] = lses[p * lse_stride + row];
    }
    /* The output in the storage type (DTYPE), rounded once. */
    __global stor_t *orow = out + ROW_OFFSET(o_sb, o_sh, o_ss, b, h, i);
    float w[MERGE_MAX], m = 0.0f, inv = 0.0f, empty = 0.0f, l;
    const int any = sparcl_merge_scale(k, rows, ls, w, &m, &inv, &empty, &l);
    for (int d = 0; d < head_dim; ++d)
        SSTORE1(any ? sparcl_merge_element(k, rows, ls, w, inv, d) : empty, orow + d);
    if (write_lse)
        lse[row] = l;
}
