/*
 * struct_size.h -- the rule for public structs that grow (see "Versioned
 * structs" in sparcl.h): each starts with struct_size, set by its _init
 * from the caller's own sizeof; the library reads only the bytes the
 * caller's struct has and takes its defaults for the rest.
 */
#ifndef SPARCL_STRUCT_SIZE_H
#define SPARCL_STRUCT_SIZE_H

#include "sparcl.h"

/* Writes `size` bytes of `defaults` (a full struct of `full` bytes whose
 * struct_size is already `size`) into dst, the caller's struct of `size`
 * bytes.  Errors: SPARCL_ERR_INVALID_ARGUMENT for NULL or a size outside
 * [min, full] (nothing is written). */
sparcl_status sparcl__struct_init(void *dst, size_t size, const void *defaults, size_t min,
                                  size_t full, const char *type);

/* Reads the caller's struct `in` into `out`, a full struct holding the
 * defaults of every field: the first in->struct_size bytes are copied and
 * out->struct_size becomes `full`.  Errors: SPARCL_ERR_INVALID_ARGUMENT
 * (on ctx) for NULL or a struct_size outside [min, full], naming the type,
 * the size and the accepted range. */
sparcl_status sparcl__struct_read(sparcl_ctx *ctx, const void *in, void *out, size_t min,
                                  size_t full, const char *type);

/* The oldest layout each struct accepts (fields every version has). */
#define SPARCL__PLAN_DESC_MIN (offsetof(sparcl_plan_desc, params) + sizeof(void *))

/* The library's full copy of a caller's plan descriptor. */
sparcl_status sparcl__plan_desc_read(sparcl_ctx *ctx, const sparcl_plan_desc *in,
                                     sparcl_plan_desc *out);

#endif
