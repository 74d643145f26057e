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
 * (batch, head)'s largest over all its rows (head_max, keys).  row_arg:
 * NULL, or (per_row) receives the feature whose projection was the row's
 * stabilizer, the first of equal ones (the backward's subgradient). */
__kernel void favor_phi(__global float *restrict dash, __global const float *restrict x,
                        __global const float *restrict head_max, __global int *restrict row_arg,
                        const int per_row, const int m, const int dim, const long sb,
                        const long sh, const long ss, const float scale)
{
    const long r = FAVOR_ROW_INDEX();
    __global const float *xr = x + FAVOR_ROW_OFFSET(sb, sh, ss);
    float n2 = 0.0f;
    for (int d = 0; d < dim; ++d)
        n2 = fma(xr[d], xr[d], n2);
    __global float *row = dash + (long)r * m;
    float stab = -INFINITY;
    int arg = 0;
    if (per_row) {
        for (int f = 0; f < m; ++f)
            if (row[f] > stab) {
                stab = row[f];
                arg = f;
            }
        if (row_arg)
            row_arg[r] = arg;
    } else
        stab = head_max[get_global_id(2) * get_global_size(1) + get_global_id(1)];
    const float shift = 0.5f * scale * n2 + stab, ratio = rsqrt((float)m);
    for (int f = 0; f < m; ++f)
        row[f] = ratio * (exp(row[f] - shift) + FAVOR_EPS);
}

/* head_max[bh] = the largest of the len * m projections of (batch, head)
 * bh; head_arg: NULL, or receives its index in the head's block (the
 * first of equal ones). */
__kernel void favor_head_max(__global const float *restrict dash, __global float *restrict head_max,
                             __global long *restrict head_arg, const int n_heads,
                             const long per_head)
{
    const int bh = get_global_id(0);
    if (bh >= n_heads)
        return;
    __global const float *p = dash + (long)bh * per_head;
    float mx = -INFINITY;
    long arg = 0;
    for (long e = 0; e < per_head; ++e)
        if (p[e] > mx) {
            mx = p[e];
            arg = e;
        }
    head_max[bh] = mx;
    if (head_arg)
        head_arg[bh] = arg;
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
 * keys of chunks 0 .. c-1; with `reverse`, exclusive suffix sums (the
 * backward: chunk c sees the queries of chunks after it).  One work-item
 * per (bh, element). */
__kernel void favor_prefix(__global float *restrict u, const int n_heads, const int n_chunks,
                           const int width, const int reverse)
{
    const int e = get_global_id(0), bh = get_global_id(1);
    if (e >= width || bh >= n_heads)
        return;
    __global float *p = u + (long)bh * n_chunks * width + e;
    float run = 0.0f;
    for (int i = 0; i < n_chunks; ++i) {
        const long c = reverse ? n_chunks - 1 - i : i;
        const float t = p[c * width];
        p[c * width] = run;
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

/* ---- Backward (src/plan/favor_backward.c) ----
 *
 * With oaug = [numerator n, denominator z] per query row and out = n / z,
 * the gradient with respect to oaug is g = [dout / z, -(dout . n) / z^2]:
 * the same augmented shape, so every product of the backward runs on
 * [V 1]-shaped operands as the forward does. */
__kernel void favor_bwd_out(__global const float *restrict oaug, __global const float *restrict dout,
                            __global float *restrict g, const int dim, const long sb,
                            const long sh, const long ss)
{
    const long r = FAVOR_ROW_INDEX();
    __global const float *src = oaug + r * (dim + 1);
    __global const float *d = dout + FAVOR_ROW_OFFSET(sb, sh, ss);
    __global float *dst = g + r * (dim + 1);
    const float inv = 1.0f / src[dim];
    float dot = 0.0f;
    for (int c = 0; c < dim; ++c) {
        dot = fma(d[c], src[c], dot);
        dst[c] = d[c] * inv;
    }
    dst[dim] = -dot * inv * inv;
}

/* Through the exponential, in place on dphi (rows of m features, `rows`
 * rows): du_f = dphi_f * (phi_f - eps / sqrt(m)), the derivative of phi_f
 * with respect to its exponent.  rsum[r] = sum_f du_f, the exponent's
 * common part (-scale |x|^2 / 2 - stab) gets -rsum.  row_arg: NULL (keys),
 * or each query row's stabilizer feature, whose projection also enters
 * through stab: du[row_arg] -= rsum. */
__kernel void favor_bwd_chain(__global float *restrict dphi, __global const float *restrict phi,
                              __global float *restrict rsum, __global const int *restrict row_arg,
                              const int m, const long rows)
{
    const long r = get_global_id(0);
    if (r >= rows)
        return;
    __global float *du = dphi + r * m;
    __global const float *p = phi + r * m;
    const float floor_ = FAVOR_EPS * rsqrt((float)m);
    float sum = 0.0f;
    for (int f = 0; f < m; ++f) {
        const float t = du[f] * (p[f] - floor_);
        du[f] = t;
        sum += t;
    }
    rsum[r] = sum;
    if (row_arg)
        du[row_arg[r]] -= sum;
}

/* Keys: the stabilizer of (batch, head) bh is its largest projection, at
 * head_arg[bh] in the head's len x m block; every key row's exponent
 * subtracts it, so that projection's gradient loses the sum of the rows'
 * rsum (in row order). */
__kernel void favor_bwd_key_stab(__global float *restrict du, __global const float *restrict rsum,
                                 __global const long *restrict head_arg, const int n_heads,
                                 const int len, const int m)
{
    const int bh = get_global_id(0);
    if (bh >= n_heads)
        return;
    float total = 0.0f;
    for (int j = 0; j < len; ++j)
        total += rsum[(long)bh * len + j];
    du[(long)bh * len * m + head_arg[bh]] -= total;
}

/* dx row = -scale * rsum * x row: the |x|^2 term of the exponent; the
 * projections' part is added by a product afterwards.  x and dx share the
 * strides. */
__kernel void favor_bwd_norm(__global const float *restrict x, __global float *restrict dx,
                             __global const float *restrict rsum, const int dim, const long sb,
                             const long sh, const long ss, const float scale)
{
    const long off = FAVOR_ROW_OFFSET(sb, sh, ss);
    const float c = -scale * rsum[FAVOR_ROW_INDEX()];
    for (int d = 0; d < dim; ++d)
        dx[off + d] = c * x[off + d];
}
