"""No handle leaks: 10,000 create/free cycles of layouts and of plans on one
context, and 2,000 of contexts, with the process's resident memory measured
before and after (after a warm-up, so caches and allocator pools are full).

Measured with handles kept alive (POCL CPU device): a 512-token causal
layout at block 16 costs about 17 KB, a plan over it about 22 KB (its
re-blocked copy and device buffers, host memory on a CPU device), a context
about 10 KB.  So 10,000 leaked layouts or plans would add 170 MB or more
against a bound of 16 MB, and 2,000 leaked contexts 20 MB against 8 MB.  Plans here read no tuning database (quiet_context): the lookup opens
SQLite files and would make the cycles ten times slower, without touching
handles the binding owns."""

import ctypes
import gc


import sparcl
from conftest import quiet_context

BOUND = 16 << 20


try:
    _trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _trim = None


def rss():
    """Resident bytes of this process, after handing free heap memory back to
    the system (glibc's malloc_trim) so that freed pools do not hide growth."""
    gc.collect()
    if _trim is not None:
        _trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def cycle_layouts_and_plans(ctx, n):
    for i in range(n):
        lay = sparcl.Layout.causal(ctx, 512, block=16)
        plan = sparcl.Plan(ctx, q_len=512, head_dim=72, layout=lay)
        if i % 2:
            plan.close()  # deterministic
            lay.close()
        else:
            del plan, lay  # freed by the garbage collector's finalizers


def test_no_leak_across_10000_layout_and_plan_cycles():
    ctx = quiet_context()
    cycle_layouts_and_plans(ctx, 500)
    gc.collect()
    before = rss()
    cycle_layouts_and_plans(ctx, 10000)
    gc.collect()
    grown = rss() - before
    assert grown < BOUND, "resident memory grew by %.1f MB over 10,000 cycles" % (grown / 2**20)
    ctx.close()


def test_no_leak_across_2000_context_cycles():
    for _ in range(50):
        sparcl.Context().close()
    gc.collect()
    before = rss()
    for i in range(2000):
        c = sparcl.Context()
        if i % 2:
            c.close()
        else:
            del c
    gc.collect()
    grown = rss() - before
    assert grown < 8 << 20, "resident memory grew by %.1f MB over 2,000 contexts" % (grown / 2**20)


def test_the_measurement_sees_a_leak():
    # The layout cycles of the first test while keeping every handle: the
    # same measurement must report more than the bound.
    ctx = quiet_context()
    kept = []
    before = rss()
    for _ in range(10000):
        kept.append(sparcl.Layout.causal(ctx, 512, block=16))
    grown = rss() - before
    assert grown > BOUND, "10,000 live layouts only added %.1f MB" % (grown / 2**20)
    del kept
    ctx.close()
