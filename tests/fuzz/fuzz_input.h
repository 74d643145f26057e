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

#endif
