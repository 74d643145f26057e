/*
 * fuzz_tuning.c -- tuning-database rows as the runtime reads them at plan
 * creation.  Each input becomes up to four rows written straight into a
 * scratch database with SQL (device fields, kernel hash, problem sizes,
 * timings and a params JSON that may name unknown parameters, carry huge,
 * fractional, string, nested or null values, or be arbitrary valid JSON),
 * then one more row goes through the public sparcl_tuning_db_record() with
 * fuzzed fields (device and problem strings that may lack a NUL, any
 * params count, raw parameter names, status, timings, runs, message), and
 * the lookup runs.  It must never crash; a recorded row must have had
 * readable fields; and whatever the lookup returns from the database must
 * be a valid parameter set for the problem and device.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/ctx.h"
#include "fuzz_input.h"
#include "kernels/kernel_registry.h"
#include "kernels/params.h"
#include "sparcl.h"
#include "tuning/tuning_lookup.h"

#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c))                                                                            \
            __builtin_trap();                                                                \
    } while (0)

static sparcl_ctx *ctx;
static sqlite3 *raw;
static sparcl_device_info device;
static sparcl_tuning_problem problem;
static sparcl_plan_desc desc;
static sparcl_tuning_db *handle; /* the public write path, same file */

static void setup(void)
{
    static char dir[] = "/tmp/sparcl-fuzz-XXXXXX";
    char path[256];
    CHECK(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tuning.db", dir);
    CHECK(sparcl_ctx_init(&ctx) == SPARCL_OK);
    CHECK(sparcl_tuning_db_init(NULL, &handle, path, SPARCL_TUNING_DB_WRITE) == SPARCL_OK);
    CHECK(sqlite3_open(path, &raw) == SQLITE_OK);
    CHECK(sqlite3_exec(raw, "PRAGMA synchronous = OFF", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_USER, path) == SPARCL_OK);
    CHECK(sparcl_ctx_set_tuning_db(ctx, SPARCL_TUNING_DB_SHIPPED, "") == SPARCL_OK);
    sparcl_plan_desc_init(&desc);
    desc.q_heads = desc.kv_heads = 2;
    desc.q_len = desc.kv_len = 128;
    desc.head_dim = 64;
    CHECK(sparcl_ctx_device_info(ctx, &device) == SPARCL_OK);
    CHECK(sparcl_tuning_problem_init(ctx, &problem, "attn_fwd", &desc, NULL) == SPARCL_OK);
}

/* Appends a fuzzed JSON value. */
static void json_value(fuzz_input *in, char *buf, size_t size)
{
    size_t n = strlen(buf);
    switch (fuzz_range(in, 0, 7)) {
    case 0: snprintf(buf + n, size - n, "%d", fuzz_int(in)); break;
    case 1: snprintf(buf + n, size - n, "%d", fuzz_range(in, 0, 8) ? 1 << fuzz_range(in, 0, 8) : 0); break;
    case 2: snprintf(buf + n, size - n, "1e%d", fuzz_range(in, -40, 400)); break;
    case 3: snprintf(buf + n, size - n, "%d.5", fuzz_range(in, -3, 300)); break;
    case 4: snprintf(buf + n, size - n, "\"%d\"", fuzz_range(in, 0, 64)); break;
    case 5: snprintf(buf + n, size - n, "[%d]", fuzz_range(in, 0, 64)); break;
    case 6: snprintf(buf + n, size - n, "null"); break;
    default: snprintf(buf + n, size - n, "%s", fuzz_range(in, 0, 1) ? "true" : "false");
    }
}

static void make_params(fuzz_input *in, char *buf, size_t size)
{
    static const char *names[] = {"BLOCK_M", "BLOCK_N", "USE_LOCAL", "VEC", "WG_SIZE",
                                  "KT",      "",        "ROWS",      "HEAD_DIM",
                                  "A_VERY_LONG_PARAMETER_NAME_THAT_DOES_NOT_FIT"};
    snprintf(buf, size, "{");
    int count = fuzz_range(in, 0, 20);
    for (int k = 0; k < count && strlen(buf) + 80 < size; ++k) {
        size_t n = strlen(buf);
        snprintf(buf + n, size - n, "%s\"%s\":", k ? "," : "",
                 names[fuzz_range(in, 0, (int)(sizeof names / sizeof names[0]) - 1)]);
        json_value(in, buf, size);
    }
    size_t n = strlen(buf);
    snprintf(buf + n, size - n, "}");
}

static int terminated(const char *s, size_t n)
{
    return memchr(s, '\0', n) != NULL;
}

/* One evaluation through sparcl_tuning_db_record() with fuzzed fields. */
static void record_fuzzed(fuzz_input *in)
{
    sparcl_device_info dev = device;
    sparcl_tuning_problem prob = problem;
    sparcl_tuning_result res;
    memset(&res, 0, sizeof res);
    if (fuzz_range(in, 0, 3) == 0)
        fuzz_text(in, dev.name, sizeof dev.name, device.name);
    if (fuzz_range(in, 0, 3) == 0)
        fuzz_text(in, dev.type, sizeof dev.type, device.type);
    if (fuzz_range(in, 0, 3) == 0)
        fuzz_text(in, prob.kernel_hash, sizeof prob.kernel_hash, problem.kernel_hash);
    if (fuzz_range(in, 0, 3) == 0)
        fuzz_text(in, prob.pattern, sizeof prob.pattern, "dense");
    if (fuzz_range(in, 0, 3) == 0)
        prob.q_len = fuzz_int(in);
    if (fuzz_range(in, 0, 1)) {
        fuzz_bytes(in, &res.params, sizeof res.params);
        if (fuzz_range(in, 0, 1))
            res.params.count = fuzz_range(in, -1, SPARCL_PARAMS_MAX + 1);
    } else {
        CHECK(sparcl_kernel_default_params(ctx, "attn_fwd", &desc, &res.params) == SPARCL_OK);
        if (fuzz_range(in, 0, 1))
            fuzz_text(in, res.params.item[fuzz_range(in, 0, res.params.count - 1)].name,
                      SPARCL_PARAM_NAME_MAX, "VEC");
    }
    res.status = (sparcl_tuning_status)fuzz_range(in, -2, 100);
    const double ms[] = {1.0, 0.0, -5.0, 1e308, NAN, -INFINITY, INFINITY};
    res.median_ms = ms[fuzz_range(in, 0, 6)];
    res.min_ms = ms[fuzz_range(in, 0, 6)];
    res.max_ms = ms[fuzz_range(in, 0, 6)];
    res.max_err = ms[fuzz_range(in, 0, 6)];
    res.runs = fuzz_int(in);
    fuzz_text(in, res.message, sizeof res.message, "");
    sparcl_status st = sparcl_tuning_db_record(handle, &dev, &prob, &res);
    const int key_ok = terminated(dev.name, sizeof dev.name) &&
                       terminated(dev.type, sizeof dev.type) &&
                       terminated(prob.kernel_hash, sizeof prob.kernel_hash) &&
                       terminated(prob.pattern, sizeof prob.pattern);
    if (st == SPARCL_OK) {
        CHECK(key_ok && terminated(res.message, sizeof res.message));
        CHECK(res.params.count >= 0 && res.params.count <= SPARCL_PARAMS_MAX);
        for (int i = 0; i < res.params.count; ++i)
            CHECK(terminated(res.params.item[i].name, SPARCL_PARAM_NAME_MAX));
    }
    sparcl_tuning_result back;
    int found = 0;
    int64_t count = 0;
    st = sparcl_tuning_db_find(handle, &dev, &prob, &res.params, &back, &found);
    CHECK(st != SPARCL_OK || !found || terminated(back.message, sizeof back.message));
    st = sparcl_tuning_db_count(handle, &dev, &prob, &count);
    CHECK(key_ok || st == SPARCL_ERR_INVALID_ARGUMENT);
    st = sparcl_tuning_db_best(handle, &dev, &prob, &back, &found);
    CHECK(st != SPARCL_OK || !found ||
          (back.params.count >= 0 && back.params.count <= SPARCL_PARAMS_MAX));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx)
        setup();
    fuzz_input in = {data, size, 0};
    CHECK(sqlite3_exec(raw,
                       "DELETE FROM evaluation; DELETE FROM problem; DELETE FROM device; "
                       "DELETE FROM kernel;",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(
              raw,
              "INSERT INTO evaluation_flat (platform, vendor, device, driver, version, type, "
              "compute_units, global_mem, local_mem, max_alloc, kernel, kernel_hash, dtype, batch, "
              "q_heads, kv_heads, q_len, kv_len, head_dim, causal, pattern, block, density, params, "
              "status, median_ms, min_ms, max_ms, runs, max_err, message, created) VALUES "
              "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'','')",
              -1, &st, NULL) == SQLITE_OK);
    int rows = fuzz_range(&in, 1, 4);
    for (int r = 0; r < rows; ++r) {
        int real = fuzz_range(&in, 0, 3); /* mostly this very device */
        int other_driver = real == 1;
        sqlite3_bind_text(st, 1, device.platform, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, device.vendor, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, real ? device.name : "fuzz device", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, other_driver ? "0.0-other" : device.driver, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, device.version, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, fuzz_range(&in, 0, 3) ? device.type : "GPU", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, device.compute_units);
        sqlite3_bind_int64(st, 8, (sqlite3_int64)device.global_mem);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)device.local_mem);
        sqlite3_bind_int64(st, 10, (sqlite3_int64)device.max_alloc);
        sqlite3_bind_text(st, 11, "attn_fwd", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 12, fuzz_range(&in, 0, 7) ? problem.kernel_hash : "0123456789abcdef",
                          -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 13, "f32", -1, SQLITE_STATIC);
        for (int c = 14; c <= 20; ++c) /* batch .. causal */
            sqlite3_bind_int(st, c, fuzz_range(&in, 0, 1) ? fuzz_int(&in) : fuzz_range(&in, 1, 4096));
        sqlite3_bind_text(st, 21, "dense", -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 22, fuzz_int(&in));
        double dens[] = {0.0, 0.5, 1.0, -1.0, 1e300, 0.0 / 0.0};
        sqlite3_bind_double(st, 23, dens[fuzz_range(&in, 0, 5)]);
        char params[1024];
        make_params(&in, params, sizeof params);
        sqlite3_bind_text(st, 24, params, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 25, "ok", -1, SQLITE_STATIC);
        double ms[] = {1.0, 0.0, -5.0, 1e308, 0.0 / 0.0};
        for (int c = 26; c <= 28; ++c)
            sqlite3_bind_double(st, c, ms[fuzz_range(&in, 0, 4)]);
        sqlite3_bind_int(st, 29, fuzz_int(&in));
        sqlite3_bind_double(st, 30, 0.0);
        sqlite3_step(st); /* constraint failures are fine: the row is just absent */
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    sqlite3_finalize(st);
    record_fuzzed(&in);

    sparcl_params params;
    sparcl_param_source source;
    char origin[SPARCL__ORIGIN_MAX];
    sparcl__tuning_choose(ctx, &sparcl__schema_attn_fwd, &desc, &params, &source, origin,
                          sizeof origin);
    if (source == SPARCL_PARAMS_DATABASE) {
        sparcl__problem prob = sparcl__problem_from_desc(&desc);
        CHECK(sparcl__params_check(NULL, &sparcl__schema_attn_fwd, &params, &prob,
                                   &ctx->limits) == SPARCL_OK);
    }
    CHECK(memchr(origin, '\0', sizeof origin) != NULL);
    return 0;
}
