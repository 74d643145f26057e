/*
 * attn_lsh_hash.cl -- the hashing step of LSH attention (sparcl.h, "LSH
 * attention"): for every token of every (batch, q head), its bucket in each
 * hash round and the inverse norm that makes its key q / ||q||.
 *
 * The bucket is the argmax of [x; -x] with x = q R_r, each x_c one chain of
 * fused multiply-adds over t = 0 .. HEAD_DIM-1 in that order.  fma is
 * correctly rounded, so the value of every x_c (and with it the bucket) is
 * the one the host reference computes with fmaf in the same order: lanes of
 * a vector are independent chains, so VEC only changes how many columns run
 * at once, never a value.  Ties go to the smallest index, NaN never wins
 * (0 when nothing exceeds -inf), whatever order the candidates are seen in.
 * DTYPE is the storage of q (common.clh: float, half or bfloat16); each
 * element is widened exactly to float, so a half q hashes as its fp32
 * copy would.
 */
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef VEC
#error "VEC must be defined"
#endif
#ifndef DTYPE
#error "DTYPE must be defined"
#endif

#define LSH_CHAINS 4 /* column vectors rotated at once */

/* Keeps (v, c) when it beats (best, at): larger, or equal and earlier. */
#define LSH_CONSIDER(v, c)                                                                         \
    do {                                                                                           \
        const float v_ = (v);                                                                      \
        const int c_ = (c);                                                                        \
        if (v_ > best || (v_ == best && c_ < at)) {                                                \
            best = v_;                                                                             \
            at = c_;                                                                               \
        }                                                                                          \
    } while (0)

/* Offers the VEC columns c .. c+VEC-1 with values acc (and columns cols +
 * c .. with -acc) to the per-lane maxima bp/ip and bq/iq; NaN never wins. */
#define LSH_IOTA popcount(LANE_BITSV - 1) /* lane l holds l */
#define LSH_KEEP(acc, c)                                                                           \
    do {                                                                                           \
        const floatv a_ = (acc), n_ = -a_;                                                         \
        const intv col_ = (intv)(c) + LSH_IOTA;                                                    \
        const intv gp_ = a_ > bp, gq_ = n_ > bq;                                                   \
        bp = select(bp, a_, gp_);                                                                  \
        ip = select(ip, col_, gp_);                                                                \
        bq = select(bq, n_, gq_);                                                                  \
        iq = select(iq, col_ + cols, gq_);                                                         \
    } while (0)

/* Global size (n, heads, batch).  q: row (b, h, i) at b*q_sb + h*q_sh +
 * i*q_ss.  rot: rounds x HEAD_DIM x cols, row-major.  buckets: [b, h,
 * round, i]; inv_norm: [b, h, i], 1/||q_i|| (0 for a zero row). */
__kernel void attn_lsh_hash(__global const stor_t *q, const long q_sb, const long q_sh,
                            const long q_ss, __global const float *rot, const int rounds,
                            const int cols, const int n, const int heads, __global int *buckets,
                            __global float *inv_norm)
{
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (i >= n)
        return;
    __global const stor_t *row = q + b * q_sb + h * q_sh + i * q_ss;
    float x[HEAD_DIM];
    float n2 = 0.0f;
    for (int t = 0; t < HEAD_DIM; ++t) {
        x[t] = SLOAD1(row + t);
        n2 = fma(x[t], x[t], n2);
    }
    const long bh = (long)b * heads + h;
    inv_norm[bh * n + i] = n2 > 0.0f ? 1.0f / sqrt(n2) : 0.0f;
    for (int r = 0; r < rounds; ++r) {
        __global const float *rr = rot + (long)r * HEAD_DIM * cols;
        float best = -INFINITY;
        int at = 0;
        /* Per lane, the best x and -x column so far: a later column
         * replaces only a strictly larger value, so each lane keeps its
         * earliest maximum, and the lanes are considered by index below. */
        floatv bp = (floatv)(-INFINITY), bq = (floatv)(-INFINITY);
        intv ip = (intv)(0), iq = (intv)(0);
        int c0 = 0;
        /* LSH_CHAINS vectors of columns at once: independent fma chains
         * that overlap in the pipeline (one chain waits on each fma). */
        for (; c0 + LSH_CHAINS * VEC <= cols; c0 += LSH_CHAINS * VEC) {
            floatv acc[LSH_CHAINS];
            for (int k = 0; k < LSH_CHAINS; ++k)
                acc[k] = (floatv)(0.0f);
            for (int t = 0; t < HEAD_DIM; ++t)
                for (int k = 0; k < LSH_CHAINS; ++k)
                    acc[k] = fma((floatv)(x[t]), LOADV(rr + (long)t * cols + c0 + k * VEC), acc[k]);
            for (int k = 0; k < LSH_CHAINS; ++k)
                LSH_KEEP(acc[k], c0 + k * VEC);
        }
        for (; c0 + VEC <= cols; c0 += VEC) {
            floatv acc = (floatv)(0.0f);
            for (int t = 0; t < HEAD_DIM; ++t)
                acc = fma((floatv)(x[t]), LOADV(rr + (long)t * cols + c0), acc);
            LSH_KEEP(acc, c0);
        }
        {
            float vp[VEC], vq[VEC];
            int jp[VEC], jq[VEC];
            STOREV(bp, vp);
            STOREV(bq, vq);
            STOREV(ip, jp);
            STOREV(iq, jq);
            for (int l = 0; l < VEC; ++l) {
                LSH_CONSIDER(vp[l], jp[l]);
                LSH_CONSIDER(vq[l], jq[l]);
            }
        }
        for (; c0 < cols; ++c0) {
            float acc = 0.0f;
            for (int t = 0; t < HEAD_DIM; ++t)
                acc = fma(x[t], rr[(long)t * cols + c0], acc);
            LSH_CONSIDER(acc, c0);
            LSH_CONSIDER(-acc, cols + c0);
        }
        buckets[(bh * rounds + r) * n + i] = at;
    }
}
