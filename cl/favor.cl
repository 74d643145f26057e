/*
 * favor.cl -- the elementwise parts and the causal prefix of Performer
 * FAVOR+ attention (src/plan/favor.c).  The matrix products (the feature
 * projection, phi(K)^T [V 1], phi(Q) times that) run in CLBlast; these
 * kernels turn projections into positive features, append the ones column
 * that makes the normalizer ride along with the values, sum chunk states
 * causally, and divide.  They take no tuning parameters: each is one pass
 * over its data.
 *
 * Row kernels run over (len, heads, batch) work-items; row i of head h of
 * batch b is r = (b * heads + h) * len + i in the contiguous scratch.
 */

/* Added to every feature, as in the paper's code: keeps the normalizer
 * positive when all exponentials underflow. */
#define FAVOR_EPS 1e-6f

/* This work-item's row: its index in the scratch, and its offset in a
 * strided [B, H, S, D] tensor. */
#define FAVOR_ROW_INDEX() \
    (((long)get_global_id(2) * get_global_size(1) + get_global_id(1)) * get_global_size(0) + \
     get_global_id(0))
#define FAVOR_ROW_OFFSET(sb, sh, ss) \
    ((long)get_global_id(2) * (sb) + (long)get_global_id(1) * (sh) + (long)get_global_id(0) * (ss))

/* In place on the projections w_f . x (already times sqrt(scale)) of `m`
 * features per row: phi = (exp(w.x - scale |x|^2 / 2 - stab) + eps) / sqrt(m),
 * where stab is the row's own largest projection (per_row, queries) or the
 * (batch, head)'s largest over all its rows (head_max, keys). */
__kernel void favor_phi(__global float *restrict dash, __global const float *restrict x,
                        __global const float *restrict head_max, const int per_row, const int m,
                        const int dim, const long sb, const long sh, const long ss,
                        const float scale)
{
    const long r = FAVOR_ROW_INDEX();
    __global const float *xr = x + FAVOR_ROW_OFFSET(sb, sh, ss);
    float n2 = 0.0f;
    for (int d = 0; d < dim; ++d)
        n2 = fma(xr[d], xr[d], n2);
    __global float *row = dash + (long)r * m;
    float stab = -INFINITY;
    if (per_row)
        for (int f = 0; f < m; ++f)
            stab = fmax(stab, row[f]);
    else
        stab = head_max[get_global_id(2) * get_global_size(1) + get_global_id(1)];
    const float shift = 0.5f * scale * n2 + stab, ratio = rsqrt((float)m);
    for (int f = 0; f < m; ++f)
        row[f] = ratio * (exp(row[f] - shift) + FAVOR_EPS);
}

/* head_max[bh] = the largest of the len * m projections of (batch, head) bh. */
__kernel void favor_head_max(__global const float *restrict dash, __global float *restrict head_max,
                             const int n_heads, const long per_head)
{
    const int bh = get_global_id(0);
    if (bh >= n_heads)
        return;
    __global const float *p = dash + (long)bh * per_head;
    float mx = -INFINITY;
    for (long e = 0; e < per_head; ++e)
        mx = fmax(mx, p[e]);
    head_max[bh] = mx;
}

/* vaug row r = [v row r, 1]: the ones column carries the normalizer
 * through the same products as the values. */
__kernel void favor_augment(__global const float *restrict v, __global float *restrict vaug,
                            const int dim, const long sb, const long sh, const long ss)
{
    __global const float *vr = v + FAVOR_ROW_OFFSET(sb, sh, ss);
    __global float *dst = vaug + FAVOR_ROW_INDEX() * (dim + 1);
    for (int d = 0; d < dim; ++d)
        dst[d] = vr[d];
    dst[dim] = 1.0f;
}

/* Causal: chunk states u[bh][c] (width floats each) become exclusive
 * prefix sums over the chunks of their (batch, head), so chunk c sees the
 * keys of chunks 0 .. c-1.  One work-item per (bh, element). */
__kernel void favor_prefix(__global float *restrict u, const int n_heads, const int n_chunks,
                           const int width)
{
    const int e = get_global_id(0), bh = get_global_id(1);
    if (e >= width || bh >= n_heads)
        return;
    __global float *p = u + (long)bh * n_chunks * width + e;
    float run = 0.0f;
    for (int c = 0; c < n_chunks; ++c) {
        const float t = p[(long)c * width];
        p[(long)c * width] = run;
        run += t;
    }
}

/* Causal, inside a chunk: a[i][j] = 0 for keys j after query i. */
__kernel void favor_causal_mask(__global float *restrict a, const int n, const int ld)
{
    const int j = get_global_id(0), i = get_global_id(1);
    if (i < n && j < n && j > i)
        a[(long)i * ld + j] = 0.0f;
}

/* out row r = oaug[r][0..dim) / oaug[r][dim]. */
__kernel void favor_finish(__global const float *restrict oaug, __global float *restrict o,
                           const int dim, const long sb, const long sh, const long ss)
{
    __global const float *src = oaug + FAVOR_ROW_INDEX() * (dim + 1);
    __global float *dst = o + FAVOR_ROW_OFFSET(sb, sh, ss);
    const float inv = 1.0f / src[dim];
    for (int d = 0; d < dim; ++d)
        dst[d] = src[d] * inv;
}
