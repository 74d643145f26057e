/*
 * dtype.c -- the storage types of tensors (sparcl_dtype): their names and
 * sizes, and the host conversions between float and the two 16-bit
 * formats.  The conversions work on bit patterns in integer arithmetic, so
 * they need no compiler support for _Float16 or bfloat16, and they round
 * exactly as the kernels do when they store (to nearest, ties to even).
 */
#include <string.h>

#include "runtime/error.h"
#include "sparcl.h"

SPARCL_API const char *sparcl_dtype_name(int dtype)
{
    switch (dtype) {
    case SPARCL_DTYPE_F32: return "f32";
    case SPARCL_DTYPE_F16: return "f16";
    case SPARCL_DTYPE_BF16: return "bf16";
    default: return "unknown";
    }
}

SPARCL_API size_t sparcl_dtype_size(int dtype)
{
    switch (dtype) {
    case SPARCL_DTYPE_F32: return 4;
    case SPARCL_DTYPE_F16:
    case SPARCL_DTYPE_BF16: return 2;
    default: return 0;
    }
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* q + 1 when the discarded low `shift` bits `rem` are above half of the
 * unit of q, or exactly half and q is odd: round to nearest, ties to even. */
static uint32_t round_even(uint32_t q, uint32_t rem, unsigned shift)
{
    const uint32_t half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1u)));
}

/* binary32 -> binary16.  Half has 5 exponent bits (bias 15) and 10 mantissa
 * bits; float has 8 (bias 127) and 23. */
static uint16_t f32_to_f16(float f)
{
    const uint32_t x = bits_of(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: quiet, upper payload bits kept */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520, halfway past 65504, or inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) { /* >= 2^-14: normal; rebias 127 -> 15 */
        const uint32_t r = ax - ((127u - 15u) << 23);
        return (uint16_t)(sign | round_even(r >> 13, r & 0x1fffu, 13));
    }
    /* Subnormal half, m * 2^-24: the float is (2^23 + mant) * 2^(e - 150),
     * so m = that mantissa >> (126 - e), rounded.  Below 2^-25 (and float
     * subnormals) everything rounds to zero. */
    const uint32_t e = ax >> 23;
    if (e < 102)
        return sign;
    const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    const unsigned shift = 126u - e; /* 14 .. 24 */
    return (uint16_t)(sign | round_even(mant >> shift, mant & ((1u << shift) - 1u), shift));
}

static float f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) /* inf or NaN, payload kept */
        return float_of(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0)
            return float_of(sign);
        /* Subnormal m * 2^-24: normalize until the implicit bit appears. */
        e = 1;
        while (!(m & 0x400u)) {
            m <<= 1;
            --e;
        }
        m &= 0x3ffu;
    }
    return float_of(sign | ((e + 112u) << 23) | (m << 13));
}

/* binary32 -> bfloat16: keep the upper half, rounded on the lower. */
static uint16_t f32_to_bf16(float f)
{
    const uint32_t x = bits_of(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: set the quiet bit, keep it NaN */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)(round_even(x >> 16, x & 0xffffu, 16) & 0xffffu);
}

static float bf16_to_f32(uint16_t h)
{
    return float_of((uint32_t)h << 16);
}

/* The four directions of sparcl_convert_*. */
enum direction { TO_F16, FROM_F16, TO_BF16, FROM_BF16 };

static sparcl_status convert(const void *src, void *dst, size_t n, enum direction how)
{
    if (n > 0 && (!src || !dst))
        return sparcl__fail(NULL, SPARCL_ERR_INVALID_ARGUMENT, "%s is NULL with n = %zu",
                            !src ? "src" : "dst", n);
    const float *fs = src;
    const uint16_t *hs = src;
    float *fd = dst;
    uint16_t *hd = dst;
    for (size_t i = 0; i < n; ++i)
        switch (how) {
        case TO_F16: hd[i] = f32_to_f16(fs[i]); break;
        case FROM_F16: fd[i] = f16_to_f32(hs[i]); break;
        case TO_BF16: hd[i] = f32_to_bf16(fs[i]); break;
        case FROM_BF16: fd[i] = bf16_to_f32(hs[i]); break;
        }
    return SPARCL_OK;
}

SPARCL_API sparcl_status sparcl_convert_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
    return convert(src, dst, n, TO_F16);
}

SPARCL_API sparcl_status sparcl_convert_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    return convert(src, dst, n, FROM_F16);
}

SPARCL_API sparcl_status sparcl_convert_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
    return convert(src, dst, n, TO_BF16);
}

SPARCL_API sparcl_status sparcl_convert_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    return convert(src, dst, n, FROM_BF16);
}
