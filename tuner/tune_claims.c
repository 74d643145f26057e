/*
 * tune_claims.c -- how sparcl-tune shares a database with other tuners: a
 * candidate is claimed in the database before it is measured, and a
 * candidate another live tuner holds is waited for and then read from the
 * database instead of being measured twice.  A claim left by a tuner that
 * died is taken over once its process is gone or its lease has run out.
 */
#include <time.h>

#include "tune.h"

/* Polling interval while another tuner measures the candidate. */
#define WAIT_MS 50

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int tune_claim(sparcl_tuning_db *db, const sparcl_device_info *device,
               const sparcl_tuning_problem *key, const sparcl_params *params, double lease_s,
               volatile sig_atomic_t *interrupted)
{
    for (;;) {
        sparcl_tuning_claim state;
        if (sparcl_tuning_db_claim(db, device, key, params, lease_s, &state) != SPARCL_OK)
            return TUNE_CLAIM_ERROR;
        if (state == SPARCL_TUNING_CLAIM_TAKEN)
            return TUNE_CLAIM_MINE;
        if (state == SPARCL_TUNING_CLAIM_STORED)
            return TUNE_CLAIM_STORED;
        if (interrupted && *interrupted)
            return TUNE_CLAIM_INTERRUPTED;
        sleep_ms(WAIT_MS);
    }
}
