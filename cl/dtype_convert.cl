/*
 * dtype_convert.cl -- conversions between a plan's half storage and fp32,
 * for the kinds whose kernels read and write fp32 only: the plan stages
 * their half tensors through fp32 workspaces (src/plan/dtype_stage.c) and
 * runs their kernels unchanged.
 *
 * A tensor is [B, H, S, D] rows of D contiguous elements at strided row
 * offsets b * sb + h * sh + i * ss (the caller's strides, in elements); the
 * fp32 side is always contiguous.  One work-item per row (global size S x H
 * x B), VEC elements at a time with a scalar tail.  The element access is
 * common.clh's storage layer (built with DTYPE 1 or 2): half is read with
 * vload_half and written with vstore_half_rte, bfloat16 is the upper half
 * of a float, shifted in exactly and rounded to nearest even on the way
 * out, NaN kept a NaN.  Reading half into float is exact, so a staged
 * kernel sees exactly the values the caller stored.
 */
#ifndef DTYPE
#error "DTYPE must be defined"
#endif
#ifndef VEC
#error "VEC must be defined"
#endif

/* Row (b, h, i) of a contiguous [B, H, S, D] fp32 tensor. */
inline long sparcl_dense_row(int len, int heads, int dim)
{
    return (((long)get_global_id(2) * heads + (long)get_global_id(1)) * len +
            (long)get_global_id(0)) *
           dim;
}

/* Row (b, h, i) of a strided tensor. */
inline long sparcl_strided_row(long sb, long sh, long ss)
{
    return (long)get_global_id(2) * sb + (long)get_global_id(1) * sh + (long)get_global_id(0) * ss;
}

/* Half storage (strided) -> fp32 (contiguous). */
__kernel void dtype_to_float(__global const stor_t *src, long sb, long sh, long ss,
                             __global float *dst, int len, int heads, int dim)
{
    __global const stor_t *s = src + sparcl_strided_row(sb, sh, ss);
    __global float *d = dst + sparcl_dense_row(len, heads, dim);
    int x = 0;
    for (; x + VEC <= dim; x += VEC)
        STOREV(SLOADV(s + x), d + x);
    for (; x < dim; ++x)
        d[x] = SLOAD1(s + x);
}

/* fp32 (contiguous) -> half storage (strided), rounded to nearest even. */
__kernel void float_to_dtype(__global const float *src, __global stor_t *dst, long sb, long sh,
                             long ss, int len, int heads, int dim)
{
    __global const float *s = src + sparcl_dense_row(len, heads, dim);
    __global stor_t *d = dst + sparcl_strided_row(sb, sh, ss);
    int x = 0;
    for (; x + VEC <= dim; x += VEC)
        SSTOREV(LOADV(s + x), d + x);
    for (; x < dim; ++x)
        SSTORE1(s[x], d + x);
}
