/*
 * attn_lsh_sort.cl -- the stable sort of LSH attention: per (batch, q
 * head, round) the tokens ordered by (bucket, position).  A counting sort:
 * count each bucket, turn the counts into starting offsets, then scatter
 * the tokens in position order, which keeps equal buckets in position
 * order (stable) without comparing positions at all.  One work-item per
 * (batch, head, round) segment; O(n + buckets) each.
 */

/* Global size: the segments, batch * heads * rounds.  buckets and order:
 * [segment, n]; counts: [segment, nb] scratch; every bucket in [0, nb). */
__kernel void attn_lsh_sort(__global const int *buckets, const int n, const int nb,
                            __global int *counts, __global int *order)
{
    const long seg = get_global_id(0);
    __global const int *bk = buckets + seg * n;
    __global int *cnt = counts + seg * nb;
    __global int *out = order + seg * n;
    for (int c = 0; c < nb; ++c)
        cnt[c] = 0;
    for (int i = 0; i < n; ++i)
        ++cnt[bk[i]];
    int start = 0;
    for (int c = 0; c < nb; ++c) {
        const int k = cnt[c];
        cnt[c] = start;
        start += k;
    }
    for (int i = 0; i < n; ++i)
        out[cnt[bk[i]]++] = i;
}
