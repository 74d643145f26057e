/*
 * expect_status.h -- the assertion of the hostile-input suites: a call
 * returns the status it must, and the message it leaves names what was
 * wrong.  EXPECT reads the message on the suite's own `ctx`.
 */
#ifndef SPARCL_TEST_EXPECT_STATUS_H
#define SPARCL_TEST_EXPECT_STATUS_H

#include <criterion/criterion.h>
#include <string.h>

#include "sparcl.h"

/* `call` returns `status` and the message on `on` (a context, or NULL for
 * the calling thread's) contains `word`. */
#define EXPECT_ON(on, call, status, word)                                                          \
    do {                                                                                           \
        sparcl_status s_ = (call);                                                                 \
        cr_assert_eq(s_, status, "%s gave %d: %s", #call, s_, sparcl_ctx_errmsg(on));              \
        cr_assert(strstr(sparcl_ctx_errmsg(on), word), "%s: message \"%s\" lacks \"%s\"", #call,   \
                  sparcl_ctx_errmsg(on), word);                                                    \
    } while (0)
#define EXPECT(call, status, word) EXPECT_ON(ctx, call, status, word)
#define EXPECT0(call, status, word) EXPECT_ON(NULL, call, status, word)

#endif
