#!/usr/bin/env bash
# two-run-stability.sh -- the two-run stability measurement of sparcl-tune
# (tuner/stability-report.md): two `sparcl-tune --budget quick` runs into two
# fresh databases, the second starting at least GAP minutes after the first
# started, then scripts/retime-interleaved.py re-times each problem's two
# choices and the default in interleaved rounds and prints the table.
#
# usage: scripts/two-run-stability.sh OUTDIR [-- extra sparcl-tune options]
# Environment: SPARCL_TUNE (default build/tuner/sparcl-tune), GAP (minutes,
#   default 10), ROUNDS (re-timing rounds, default 15: with 7, the same two
#   databases re-timed twice on this project's 2-core machine put 19 and 22
#   of 23 problems within 5%, the medians of 7 rounds moving by up to 11%).
# OUTDIR receives run1.db, run2.db, run1.log, run2.log, retime.md (all
# rounds in one worker process), retime_fresh.md (each round in a fresh
# one; about 2 more minutes) and uptime.log (the load average once a
# minute while it runs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tune=${SPARCL_TUNE:-$root/build/tuner/sparcl-tune}
gap=${GAP:-10}
rounds=${ROUNDS:-15}
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [-- sparcl-tune options]" >&2; exit 2; }
out=$1
shift
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
for f in run1.db run2.db; do
    if [ -e "$out/$f" ]; then
        echo "$0: $out/$f exists: the two runs need fresh databases" >&2
        exit 1
    fi
done

(while sleep 60; do echo "$(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)"; done) \
    > "$out/uptime.log" &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT

start1=$(date +%s)
echo "run 1 from $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$tune" --budget quick --db "$out/run1.db" "$@" > "$out/run1.log" 2>&1
tail -n 1 "$out/run1.log"
wait_s=$((start1 + gap * 60 - $(date +%s)))
if [ "$wait_s" -gt 0 ]; then
    echo "waiting ${wait_s} s (run 2 starts $gap minutes after run 1 started)"
    sleep "$wait_s"
fi
echo "run 2 from $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$tune" --budget quick --db "$out/run2.db" "$@" > "$out/run2.log" 2>&1
tail -n 1 "$out/run2.log"
echo "re-timing from $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$root/scripts/retime-interleaved.py" "$out/run1.db" "$out/run2.db" --rounds "$rounds" \
    --tune "$tune" | tee "$out/retime.md"
# The same with each round in a fresh worker process, as the tuner's
# finalist rounds on a CPU device: one configuration's cost per call can
# differ between processes, so one process's re-timing is one sample.
echo "re-timing, each round in a fresh worker, from $(date -u +%H:%M:%S) UTC"
python3 "$root/scripts/retime-interleaved.py" "$out/run1.db" "$out/run2.db" --rounds "$rounds" \
    --tune "$tune" --fresh | tee "$out/retime_fresh.md"
echo "done $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
