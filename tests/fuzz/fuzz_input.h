/*
 * fuzz_input.h -- a tiny reader that turns fuzzer bytes into bounded
 * integers, shared by the fuzz targets.  Reading past the end yields 0.
 */
#ifndef SPARCL_FUZZ_INPUT_H
#define SPARCL_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct fuzz_input {
    const uint8_t *data;
    size_t size, pos;
} fuzz_input;

static inline uint32_t fuzz_u32(fuzz_input *in)
{
    uint32_t v = 0;
    for (int b = 0; b < 4; ++b)
        v = v << 8 | (in->pos < in->size ? in->data[in->pos++] : 0u);
    return v;
}

/* An integer in [lo, hi]. */
static inline int fuzz_range(fuzz_input *in, int lo, int hi)
{
    return lo + (int)(fuzz_u32(in) % (uint32_t)(hi - lo + 1));
}

/* A raw int, edge values included (negative, zero, huge). */
static inline int fuzz_int(fuzz_input *in)
{
    return (int)fuzz_u32(in);
}

/* A raw int64, biased towards the edges that break size arithmetic:
 * 0, small, powers of two near 2^31/2^61/2^63, INT64_MIN/MAX, negatives. */
static inline int64_t fuzz_i64(fuzz_input *in)
{
    uint32_t kind = fuzz_u32(in) % 8u;
    uint64_t raw = (uint64_t)fuzz_u32(in) << 32 | fuzz_u32(in);
    switch (kind) {
    case 0: return 0;
    case 1: return (int64_t)(raw % 4096u);                             /* ordinary strides */
    case 2: return (int64_t)1 << (raw % 63u);                          /* powers of two */
    case 3: return ((int64_t)1 << (raw % 63u)) - (int64_t)(raw >> 60); /* just below */
    case 4: return raw & 1u ? INT64_MAX - (int64_t)(raw >> 58) : INT64_MIN + (int64_t)(raw >> 58);
    case 5: return -(int64_t)(raw % 4096u) - 1; /* negative */
    default: return (int64_t)raw;               /* anything */
    }
}

/* Fills buf[0..n) with raw bytes (NUL or not; zeros past the input). */
static inline void fuzz_bytes(fuzz_input *in, void *buf, size_t n)
{
    uint8_t *b = (uint8_t *)buf;
    for (size_t i = 0; i < n; ++i)
        b[i] = in->pos < in->size ? in->data[in->pos++] : 0u;
}

/* A text field of capacity n: usually a short identifier-like string,
 * sometimes raw bytes that may lack a NUL or hold spaces and quotes. */
static inline void fuzz_text(fuzz_input *in, char *buf, size_t n, const char *usual)
{
    switch (fuzz_u32(in) % 4u) {
    case 0: fuzz_bytes(in, buf, n); break;
    case 1:
        for (size_t i = 0; i < n; ++i)
            buf[i] = (char)('A' + (int)(fuzz_u32(in) % 26u)); /* no NUL at all */
        break;
    default: {
        size_t i = 0;
        for (; usual[i] && i + 1 < n; ++i)
            buf[i] = usual[i];
        buf[i] = '\0';
    }
    }
}

#endif
