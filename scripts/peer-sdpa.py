#!/usr/bin/env python3
"""peer-sdpa.py -- PyTorch's scaled_dot_product_attention on the CPU, timed
as sparcl-bench times sparcl: the forward, the backward and a training step
(forward + backward) of causal attention, and one decoding step (one query
row per head over a long KV cache, GQA 32/8).  A measurement script for the
closing notes, never a dependency of the library.

usage: python3 scripts/peer-sdpa.py [--reps R] [--threads T]
Prints one line per case: median ms over R timed runs after 2 warm-ups,
and the process CPU time per run.
"""
import argparse
import time

import torch
import torch.nn.functional as F


def timed(fn, reps):
    for _ in range(2):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(1e3 * (time.perf_counter() - w0))
        cpu.append(1e3 * (time.process_time() - c0))
    wall.sort()
    cpu.sort()
    return wall[len(wall) // 2], cpu[len(cpu) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # causal-4k: batch 1, 8 heads, n 4096, d 64 (sparcl-bench's causal-4k)
    q, k, v = (torch.rand(1, 8, 4096, 64) * 2 - 1 for _ in range(3))
    fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ms, cpu = timed(fwd, a.reps)
    print(f"sdpa causal-4k forward   {ms:9.2f} ms  {cpu:9.2f} cpu-ms")
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
    dout = torch.rand_like(out)

    def bwd():
        o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
        o.backward(dout)

    # a training step: forward + backward; the backward alone is the
    # difference from the forward measured above
    ms_step, cpu_step = timed(bwd, a.reps)
    print(f"sdpa causal-4k fwd+bwd   {ms_step:9.2f} ms  {cpu_step:9.2f} cpu-ms")
    print(f"sdpa causal-4k backward  {ms_step - ms:9.2f} ms  {cpu_step - cpu:9.2f} cpu-ms (step - forward)")

    # decoding: one query row per head, GQA 32 query heads over 8 KV heads, d 128
    for kv in (4096, 32768):
        qd = torch.rand(1, 32, 1, 128)
        kd, vd = (torch.rand(1, 8, kv, 128) for _ in range(2))
        dec = lambda: F.scaled_dot_product_attention(qd, kd, vd, enable_gqa=True)
        ms, cpu = timed(dec, a.reps)
        gb = 2 * 8 * kv * 128 * 4 / 1e9
        print(f"sdpa decode-gqa-{kv // 1024}k     {ms:9.2f} ms  {cpu:9.2f} cpu-ms  ({gb / (ms / 1e3):.2f} GB/s of K+V)")


if __name__ == "__main__":
    main()
