#!/usr/bin/env python3
"""retime-interleaved.py -- the two-run stability measurement of sparcl-tune.

Given two tuning databases of the same problems (two `sparcl-tune --budget
quick` runs made apart in time), re-times, per kernel family and problem, the
configuration each run chose and the default, interleaved: R rounds, each one
separate evaluation of every configuration (plan built, verified, timed to a
stable median) in a rotating order, all in one `sparcl-tune --worker` process
(with --fresh each round in a new one, as the tuner's finalist rounds on a CPU
device), with POCL's threads bound to cores as sparcl-tune's workers are
unless the environment sets POCL_AFFINITY.  Prints a Markdown table: the
two choices, their round-by-round ratio (median [lowest-highest]) and each vs
the default.

usage: scripts/retime-interleaved.py RUN1.db RUN2.db [--rounds R] [--runs N]
         [--problems "spec;spec"] [--tune build/tuner/sparcl-tune] [--only K] [--fresh]
The problems (default: the quick set) name the specs the worker sets up;
rows are matched to them by pattern, length, heads and head_dim.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile

QUICK = ("dense:n=512,h=2,d=64;causal:n=512,h=2,d=64;window:n=2048,h=2,d=64,w=64;"
         "bigbird:n=2048,h=2,d=64;dense:n=256,h=2,d=128")


def spec_key(spec):
    pattern, rest = spec.split(":", 1)
    f = dict(kv.split("=") for kv in rest.split(","))
    return (pattern, int(f["n"]), int(f["h"]), int(f["d"]))


def export(tune, db, path):
    subprocess.run([tune, "--db", db, "--export", path], check=True, stdout=subprocess.DEVNULL)
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def params_text(js):
    return " ".join(f"{k}={v}" for k, v in sorted(json.loads(js).items()))


def choices(rows):
    """(kernel, key) -> {'chosen': params, 'default': params}"""
    out = {}
    for r in rows:
        key = (r["kernel"], (r["pattern"], int(r["q_len"]), int(r["q_heads"]), int(r["head_dim"])))
        e = out.setdefault(key, {})
        if r["chosen"] == "1":
            e["chosen"] = params_text(r["params"])
        # The default is the finalist compared with itself: speedup 1 in every round.
        if r["rounds"] not in ("", "0") and r["speedup_lo"] == "1" and r["speedup_hi"] == "1":
            e["default"] = params_text(r["params"])
    return out


class Worker:
    def __init__(self, tune):
        r, w = os.pipe()
        # as sparcl-tune starts its workers: POCL's threads bound to cores
        # unless the environment says otherwise (tuner/tune_child.c)
        env = dict(os.environ)
        env.setdefault("POCL_AFFINITY", "1")
        self.p = subprocess.Popen([tune, "--worker"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, close_fds=False, env=env,
                                  preexec_fn=lambda: os.dup2(w, 3), text=True)
        os.close(w)
        self.out = os.fdopen(r, "r")

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        answer = self.out.readline().strip()
        if not answer:
            sys.exit(f"worker died on: {line}")
        return answer

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db1")
    ap.add_argument("db2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--problems", default=QUICK)
    ap.add_argument("--tune", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                   "tuner", "sparcl-tune"))
    ap.add_argument("--only", help="kernel family to re-time (default: all in both)")
    ap.add_argument("--fresh", action="store_true",
                    help="each round in a fresh worker process, as sparcl-tune's finalist "
                         "rounds on a CPU device (one configuration's cost can differ "
                         "between processes); default: all rounds in one worker")
    a = ap.parse_args()
    specs = {spec_key(s): s for s in a.problems.split(";")}
    with tempfile.TemporaryDirectory() as tmp:
        c1 = choices(export(a.tune, a.db1, os.path.join(tmp, "1.csv")))
        c2 = choices(export(a.tune, a.db2, os.path.join(tmp, "2.csv")))
    print("| kernel | problem | run 1 chose | run 2 chose | run 2 / run 1 time | "
          "run 1 vs default | run 2 vs default |")
    print("|---|---|---|---|---|---|---|")
    worker = Worker(a.tune)
    tally = []  # per problem: (choices within 5%, neither slower than the default)
    for key in sorted(set(c1) & set(c2)):
        kernel, pkey = key
        if a.only and kernel != a.only or pkey not in specs:
            continue
        e1, e2 = c1[key], c2[key]
        default = e1.get("default") or e2.get("default")
        if "chosen" not in e1 or "chosen" not in e2 or not default:
            continue
        ready = worker.ask(f"problem {kernel} {specs[pkey]}")
        if ready != "ready":
            print(f"| {kernel} | {specs[pkey]} | set-up failed: {ready} |")
            continue
        configs = list(dict.fromkeys([e1["chosen"], e2["chosen"], default]))
        times = {c: [] for c in configs}
        for r in range(a.rounds):
            if a.fresh and r > 0:
                worker.close()
                worker = Worker(a.tune)
                ready = worker.ask(f"problem {kernel} {specs[pkey]}")
                if ready != "ready":
                    sys.exit(f"{kernel} {specs[pkey]}: set-up failed in a fresh worker: {ready}")
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for c in order:
                f = worker.ask(f"eval {a.runs} {c}").split()
                times[c].append(float(f[2]) if f[1] == "0" else float("inf"))

        failed = [c for c in configs if float("inf") in times[c]]
        if failed:  # a ratio with a failed evaluation means nothing
            print(f"| {kernel} | {specs[pkey]} | re-timing failed for {', '.join(failed)} |",
                  flush=True)
            tally.append((False, False))
            continue

        def median_ratio(x, y):  # y's time / x's time, round by round: > 1 means x is faster
            return statistics.median(ty / tx for tx, ty in zip(times[x], times[y]))

        def ratio(x, y):
            r = [ty / tx for tx, ty in zip(times[x], times[y])]
            return f"{statistics.median(r):.3f} [{min(r):.3f}-{max(r):.3f}]"

        between = median_ratio(e1["chosen"], e2["chosen"])
        slower = min(median_ratio(e1["chosen"], default), median_ratio(e2["chosen"], default))
        tally.append((abs(between - 1) <= 0.05 and abs(1 / between - 1) <= 0.05, slower >= 1))

        def name(c):
            return "default" if c == default else c

        print(f"| {kernel} | {specs[pkey]} | {name(e1['chosen'])} | {name(e2['chosen'])} | "
              f"{ratio(e1['chosen'], e2['chosen'])} | {ratio(e1['chosen'], default)} | "
              f"{ratio(e2['chosen'], default)} |", flush=True)
    worker.close()
    print(f"\nchoices within 5% of each other (median ratio): {sum(t[0] for t in tally)} of "
          f"{len(tally)} problems; neither choice slower than the default (median ratio): "
          f"{sum(t[1] for t in tally)} of {len(tally)}")
    print(f"{a.rounds} interleaved rounds"
          f"{', each in a fresh worker process' if a.fresh else ' in one worker process'}, "
          f"{a.runs} timed runs at most per evaluation; "
          "ratios are default (or run 2) time / chosen (or run 1) time per round: "
          "median [lowest-highest]; > 1 means the chosen one is faster.")


if __name__ == "__main__":
    main()
