/*
 * bench_multidev.h -- sparcl-bench --multidev N: one call on one device
 * against the same call cut over N devices (bench_multidev.c).
 */
#ifndef SPARCL_BENCH_MULTIDEV_H
#define SPARCL_BENCH_MULTIDEV_H

#include "sparcl.h"

/* Times the set on contexts of devices 0 .. devices-1 (device 0 again
 * where fewer exist) and prints a table; `reps` calls per timing.  Returns
 * the process exit status (0 when every case ran). */
int bench_multidev_run(int devices, int reps);

#endif
