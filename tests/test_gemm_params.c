/*
 * test_gemm_params.c -- the CLBlast parameters of the dense path (kernel
 * family clblast_xgemm): a plan on the dense path (attn_fwd ALGO=1) applies
 * the stored row of its device and problem before its GEMMs run and says so
 * through sparcl_plan_gemm_params(); the context's override wins over the
 * database; an override that breaks the family's constraints or names
 * another parameter fails plan creation with a message naming the rule;
 * a stored row that breaks them is passed over; plans that run no CLBlast
 * GEMM apply nothing.  (No GEMM runs here: CLBlast compiles its kernel at
 * the first call, which POCL takes minutes for; the forward suite checks
 * the dense path's results.)
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "scratch.h"
#include "sparcl.h"

TestSuite(gemm_params, .fini = scratch_remove);

typedef struct env {
    sparcl_ctx *ctx;
    char path[128];
    sparcl_plan_desc desc;
    sparcl_params dense_path; /* attn_fwd ALGO=1 */
} env;

static void setup(env *e, int q_len)
{
    memset(e, 0, sizeof *e);
    cr_assert_eq(scratch_make("sparcl-gemm"), 0);
    cr_assert_eq(sparcl_ctx_init(&e->ctx), SPARCL_OK);
    scratch_path(e->path, sizeof e->path, "user.db");
    cr_assert_eq(sparcl_ctx_set_tuning_db(e->ctx, SPARCL_TUNING_DB_USER, e->path), SPARCL_OK);
    cr_assert_eq(sparcl_ctx_set_tuning_db(e->ctx, SPARCL_TUNING_DB_SHIPPED, ""), SPARCL_OK);
    sparcl_plan_desc_init(&e->desc);
    e->desc.q_heads = 2;
    e->desc.kv_heads = 1;
    e->desc.q_len = e->desc.kv_len = q_len;
    e->desc.head_dim = 72;
    sparcl_params_clear(&e->dense_path);
    sparcl_params_set(&e->dense_path, "ALGO", 1);
    e->desc.params = &e->dense_path;
}

static void teardown(env *e)
{
    sparcl_ctx_set_gemm_params(e->ctx, NULL);
    sparcl_ctx_free(e->ctx);
}

/* A clblast_xgemm parameter set: WGD, MDIMCD = NDIMCD, MDIMAD = NDIMBD,
 * KWID, VWMD = VWND, PADA = PADB. */
static void xgemm(sparcl_params *p, int wgd, int dimc, int dima, int kwid, int vw, int pad)
{
    sparcl_params_clear(p);
    sparcl_params_set(p, "KWID", kwid);
    sparcl_params_set(p, "MDIMAD", dima);
    sparcl_params_set(p, "MDIMCD", dimc);
    sparcl_params_set(p, "NDIMBD", dima);
    sparcl_params_set(p, "NDIMCD", dimc);
    sparcl_params_set(p, "PADA", pad);
    sparcl_params_set(p, "PADB", pad);
    sparcl_params_set(p, "VWMD", vw);
    sparcl_params_set(p, "VWND", vw);
    sparcl_params_set(p, "WGD", wgd);
}

/* Stores `p` as an OK evaluation of clblast_xgemm for the env's problem on
 * this device. */
static void store(env *e, const sparcl_params *p)
{
    sparcl_device_info dev;
    sparcl_tuning_problem key;
    cr_assert_eq(sparcl_ctx_device_info(e->ctx, &dev), SPARCL_OK);
    cr_assert_eq(sparcl_tuning_problem_init(e->ctx, &key, "clblast_xgemm", &e->desc, NULL),
                 SPARCL_OK, "%s", sparcl_ctx_errmsg(e->ctx));
    sparcl_tuning_db *db = NULL;
    cr_assert_eq(sparcl_tuning_db_init(e->ctx, &db, e->path, SPARCL_TUNING_DB_WRITE), SPARCL_OK);
    sparcl_tuning_result r;
    memset(&r, 0, sizeof r);
    r.params = *p;
    r.status = SPARCL_TUNING_OK;
    r.median_ms = r.min_ms = r.max_ms = 1.0;
    r.runs = 3;
    r.max_err = 1e-7;
    cr_assert_eq(sparcl_tuning_db_record(db, &dev, &key, &r), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(e->ctx));
    sparcl_tuning_db_free(db);
}

/* The plan's applied CLBlast parameters, formatted, and its origin. */
static void applied(env *e, char *text, size_t size, char *origin, size_t osize)
{
    sparcl_plan *plan = NULL;
    sparcl_status st = sparcl_plan_init(e->ctx, &plan, &e->desc);
    cr_assert_eq(st, SPARCL_OK, "%s", sparcl_ctx_errmsg(e->ctx));
    sparcl_params p;
    snprintf(origin, osize, "%s", sparcl_plan_gemm_params(plan, &p));
    sparcl_params_format(&p, text, size);
    sparcl_plan_free(plan);
}

Test(gemm_params, stored_row_is_applied_before_the_gemms)
{
    env e;
    setup(&e, 113);
    char text[512], origin[600];
    applied(&e, text, sizeof text, origin, sizeof origin);
    cr_assert_str_eq(text, "");
    cr_assert(strstr(origin, "none applied"), "%s", origin);

    sparcl_params row;
    xgemm(&row, 16, 4, 8, 8, 2, 0);
    store(&e, &row);
    applied(&e, text, sizeof text, origin, sizeof origin);
    cr_assert_str_eq(text, "KWID=8 MDIMAD=8 MDIMCD=4 NDIMBD=8 NDIMCD=4 PADA=0 PADB=0 VWMD=2 "
                           "VWND=2 WGD=16");
    cr_assert(strstr(origin, "user database") && strstr(origin, "exact problem"), "%s", origin);

    /* The context's override wins over the row. */
    sparcl_params mine;
    xgemm(&mine, 32, 8, 8, 2, 1, 1);
    cr_assert_eq(sparcl_ctx_set_gemm_params(e.ctx, &mine), SPARCL_OK);
    applied(&e, text, sizeof text, origin, sizeof origin);
    cr_assert_str_eq(text, "KWID=2 MDIMAD=8 MDIMCD=8 NDIMBD=8 NDIMCD=8 PADA=1 PADB=1 VWMD=1 "
                           "VWND=1 WGD=32");
    cr_assert(strstr(origin, "sparcl_ctx_set_gemm_params"), "%s", origin);
    teardown(&e);
}

Test(gemm_params, invalid_override_is_a_clear_error)
{
    env e;
    setup(&e, 64);
    sparcl_params bad;
    xgemm(&bad, 8, 8, 8, 2, 2, 0); /* WGD 8 is not a multiple of MDIMCD x VWMD = 16 */
    cr_assert_eq(sparcl_ctx_set_gemm_params(e.ctx, &bad), SPARCL_OK);
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(e.ctx, &plan, &e.desc), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_null(plan);
    cr_assert(strstr(sparcl_ctx_errmsg(e.ctx), "WGD 8 must be a multiple of MDIMCD x VWMD = 16"),
              "%s", sparcl_ctx_errmsg(e.ctx));

    sparcl_params foreign;
    xgemm(&foreign, 16, 4, 4, 2, 1, 0);
    sparcl_params_set(&foreign, "MWG", 64); /* a parameter of CLBlast's other kernel */
    cr_assert_eq(sparcl_ctx_set_gemm_params(e.ctx, &foreign), SPARCL_OK);
    cr_assert_eq(sparcl_plan_init(e.ctx, &plan, &e.desc), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(e.ctx), "MWG"), "%s", sparcl_ctx_errmsg(e.ctx));

    cr_assert_eq(sparcl_ctx_set_gemm_params(e.ctx, NULL), SPARCL_OK);
    char text[512], origin[600];
    applied(&e, text, sizeof text, origin, sizeof origin);
    cr_assert_str_eq(text, "");
    cr_assert_eq(sparcl_ctx_set_gemm_params(NULL, NULL), SPARCL_ERR_INVALID_ARGUMENT);
    teardown(&e);
}

Test(gemm_params, stored_row_breaking_the_schema_is_passed_over)
{
    env e;
    setup(&e, 17);
    sparcl_params bad;
    xgemm(&bad, 8, 4, 4, 16, 1, 0); /* KWID 16 does not divide WGD 8 */
    store(&e, &bad);
    char text[512], origin[600];
    applied(&e, text, sizeof text, origin, sizeof origin);
    cr_assert_str_eq(text, "");
    cr_assert(strstr(origin, "none applied"), "%s", origin);
    teardown(&e);
}

Test(gemm_params, plans_without_clblast_gemms_apply_nothing)
{
    env e;
    setup(&e, 64);
    sparcl_params row;
    xgemm(&row, 16, 4, 8, 8, 2, 0);
    store(&e, &row);
    e.desc.params = NULL; /* the fused kernel (ALGO=0 by default) */
    sparcl_plan *plan = NULL;
    cr_assert_eq(sparcl_plan_init(e.ctx, &plan, &e.desc), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(e.ctx));
    sparcl_params p, used;
    sparcl_plan_params(plan, &used, NULL);
    int32_t algo = -1;
    cr_assert(sparcl_params_get(&used, "ALGO", &algo));
    cr_assert_eq(algo, 0);
    cr_assert_str_eq(sparcl_plan_gemm_params(plan, &p), "");
    cr_assert_eq(p.count, 0);
    sparcl_plan_free(plan);
    cr_assert_str_eq(sparcl_plan_gemm_params(NULL, &p), "");
    teardown(&e);
}

/* The family is listed for tuners, with CLBlast's names and a default that
 * passes its own check. */
Test(gemm_params, family_is_tunable)
{
    env e;
    setup(&e, 64);
    int found = 0;
    for (int i = 0; i < sparcl_kernel_count(); ++i)
        found |= !strcmp(sparcl_kernel_name(i), "clblast_xgemm");
    cr_assert(found);
    sparcl_param_space space;
    cr_assert_eq(sparcl_kernel_space(e.ctx, "clblast_xgemm", &space), SPARCL_OK);
    cr_assert_eq(space.count, 10);
    sparcl_params def;
    cr_assert_eq(sparcl_kernel_default_params(e.ctx, "clblast_xgemm", &e.desc, &def), SPARCL_OK);
    cr_assert_eq(sparcl_kernel_check_params(e.ctx, "clblast_xgemm", &e.desc, &def), SPARCL_OK, "%s",
                 sparcl_ctx_errmsg(e.ctx));
    char hash[17];
    cr_assert_eq(sparcl_kernel_hash(e.ctx, "clblast_xgemm", hash, sizeof hash), SPARCL_OK);
    teardown(&e);
}
