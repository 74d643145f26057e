/*
 * test_status.c -- status codes, error messages, device selection and
 * wrapping the application's own OpenCL objects.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sparcl.h"

Test(status, strings_are_distinct_and_never_null)
{
    sparcl_status all[] = {SPARCL_OK,
                           SPARCL_ERR_INVALID_ARGUMENT,
                           SPARCL_ERR_NOT_SUPPORTED,
                           SPARCL_ERR_OPENCL,
                           SPARCL_ERR_BUILD,
                           SPARCL_ERR_OUT_OF_MEMORY,
                           SPARCL_ERR_DATABASE,
                           SPARCL_ERR_INTERNAL,
                           SPARCL_ERR_CONFIG};
    size_t n = sizeof all / sizeof all[0];
    for (size_t a = 0; a < n; ++a) {
        cr_assert(all[a] <= 0);
        cr_assert_not_null(sparcl_status_string(all[a]));
        for (size_t b = a + 1; b < n; ++b) {
            cr_assert_neq(all[a], all[b]);
            cr_assert_str_neq(sparcl_status_string(all[a]), sparcl_status_string(all[b]));
        }
    }
    cr_assert_str_eq(sparcl_status_string((sparcl_status)-999), "unknown status");
}

Test(status, default_context_has_a_device)
{
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK, "%s", sparcl_ctx_errmsg(NULL));
    cr_assert_not_null(sparcl_ctx_cl_context(ctx));
    cr_assert_not_null(sparcl_ctx_cl_queue(ctx));
    cr_assert(strlen(sparcl_ctx_device_string(ctx)) > 0);
    cr_assert_str_eq(sparcl_ctx_errmsg(ctx), "");
    sparcl_ctx_free(ctx);
    sparcl_ctx_free(NULL);
}

Test(status, device_list_and_selection)
{
    char buf[4096];
    int count = 0;
    cr_assert_eq(sparcl_device_list(buf, sizeof buf, &count), SPARCL_OK);
    cr_assert(count >= 1);
    cr_assert(strstr(buf, "0: ") == buf, "list: %s", buf);

    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init_device(&ctx, "0"), SPARCL_OK);
    sparcl_ctx_free(ctx);

    cr_assert_eq(sparcl_ctx_init_device(&ctx, "9999"), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_null(ctx);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "9999"), "%s", sparcl_ctx_errmsg(NULL));

    cr_assert_eq(sparcl_ctx_init_device(&ctx, "no-such-device-xyz"), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "no-such-device-xyz"));

    setenv("SPARCL_DEVICE", "no-such-device-xyz", 1);
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_ERR_INVALID_ARGUMENT);
    unsetenv("SPARCL_DEVICE");
}

static int log_calls;
static void on_log(void *user, sparcl_log_level level, const char *msg)
{
    (void)msg;
    cr_assert_eq(user, &log_calls);
    cr_assert_eq(level, SPARCL_LOG_ERROR);
    ++log_calls;
}

Test(status, wrap_retains_and_reports_errors)
{
    sparcl_ctx *own = NULL;
    cr_assert_eq(sparcl_ctx_init(&own), SPARCL_OK);
    cl_context c = sparcl_ctx_cl_context(own);
    cl_device_id d = sparcl_ctx_cl_device(own);
    cl_command_queue q = sparcl_ctx_cl_queue(own);
    cl_uint before = 0, after = 0;
    clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof before, &before, NULL);

    sparcl_ctx *w = NULL;
    cr_assert_eq(sparcl_ctx_init_wrap(&w, c, d, q), SPARCL_OK);
    clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof after, &after, NULL);
    cr_assert_eq(after, before + 1, "wrap must retain the context");

    sparcl_ctx_set_log(w, on_log, &log_calls);
    sparcl_layout *l = NULL;
    cr_assert_eq(sparcl_layout_init_dense(w, &l, 0, 4, 4, 4), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert_eq(log_calls, 1);
    cr_assert(strstr(sparcl_ctx_errmsg(w), "heads"), "%s", sparcl_ctx_errmsg(w));

    sparcl_ctx_free(w);
    clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof after, &after, NULL);
    cr_assert_eq(after, before, "free must release exactly what wrap retained");

    cr_assert_eq(sparcl_ctx_init_wrap(&w, NULL, d, q), SPARCL_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(sparcl_ctx_errmsg(NULL), "context"));
    sparcl_ctx_free(own);
}
