#!/usr/bin/env bash
# fuzz.sh [SECONDS] -- builds the libFuzzer targets with clang (ASan + UBSan)
# in build-fuzz/ and runs each for SECONDS (default $SPARCL_FUZZ_SECONDS or
# 45) on a scratch copy of its committed seed corpus, with a fixed seed
# ($SPARCL_FUZZ_SEED, default 1) so CI runs repeat.  A crash fails the run
# and leaves the input in build-fuzz/crashes/; commit it to
# tests/fuzz/regressions/<target>/ so CTest replays it forever after.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-${SPARCL_FUZZ_SECONDS:-45}}
JOBS=$(nproc 2>/dev/null || echo 2)

CC=clang cmake -S . -B build-fuzz -DSPARCL_SANITIZE=fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSPARCL_BUILD_TOOLS=OFF -DSPARCL_BUILD_EXAMPLES=OFF >/dev/null
targets=$(sed -n 's/^set(SPARCL_FUZZ_TARGETS \(.*\))$/\1/p' tests/fuzz/CMakeLists.txt)
for t in $targets; do
  cmake --build build-fuzz -j "$JOBS" --target "fuzz_$t" >/dev/null
done

mkdir -p build-fuzz/crashes
status=0
for t in $targets; do
  work=build-fuzz/corpus-$t
  rm -rf "$work" && mkdir -p "$work"
  cp tests/fuzz/corpus/$t/* "$work"/
  log=build-fuzz/fuzz_$t.log
  if build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$SECONDS_PER_TARGET" -seed="${SPARCL_FUZZ_SEED:-1}" -print_final_stats=1 \
       -artifact_prefix=build-fuzz/crashes/$t- "$work" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz_$t: ${runs:-?} executions in ${SECONDS_PER_TARGET}s, no crash"
  else
    echo "fuzz_$t: CRASH; input saved in build-fuzz/crashes/, log:"
    grep -E "ERROR|runtime error|SUMMARY" "$log" | head -10
    status=1
  fi
done
exit $status
