/*
 * gemm_params.h -- the CLBlast SGEMM parameters (family clblast_xgemm) a
 * plan applies before its GEMMs run: the context's override, else the
 * tuning databases' row for the device and problem, else none (CLBlast's
 * own choice).
 */
#ifndef SPARCL_GEMM_PARAMS_H
#define SPARCL_GEMM_PARAMS_H

#include "plan/plan_api.h"

/* Chooses and applies (sparcl__gemm_override) the parameters for `desc`,
 * writing what was applied and its origin into report->gemm and
 * report->gemm_origin (an empty map when nothing was applied).  Errors: an
 * override that breaks the schema (SPARCL_ERR_INVALID_ARGUMENT or
 * SPARCL_ERR_NOT_SUPPORTED naming the rule) or that CLBlast refuses. */
sparcl_status sparcl__gemm_params_apply(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                        sparcl__plan_report *report);

#endif
