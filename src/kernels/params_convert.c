/*
 * params_convert.c -- the dtype_convert family (cl/dtype_convert.cl: half
 * storage to fp32 and back, for the plans that stage half tensors through
 * fp32 workspaces, src/plan/dtype_stage.c).  Nothing is tuned: DTYPE comes
 * from the plan, and the vector width is fixed, a conversion being bound
 * by memory traffic.
 */
#include "kernels/params.h"

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const sparcl__kernel_decl convert_kernels[] = {{"dtype_to_float", 0}, {"float_to_dtype", 0}};
static const sparcl__program_decl convert_programs[] = {
    {"dtype_convert.cl", convert_kernels, N_OF(convert_kernels)},
};
static const char *const convert_fixed[] = {"-DVEC=8"};
static const sparcl__param_id convert_derived[] = {SPARCL__P_DTYPE};

const sparcl__kernel_schema sparcl__schema_dtype_convert = {
    .name = "dtype_convert",
    .programs = convert_programs,
    .n_programs = N_OF(convert_programs),
    .fixed_options = convert_fixed,
    .n_fixed = N_OF(convert_fixed),
    .derived = convert_derived,
    .n_derived = N_OF(convert_derived),
};
