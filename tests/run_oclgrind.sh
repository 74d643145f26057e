#!/usr/bin/env bash
# run_oclgrind.sh TEST_BINARY -- runs a test suite on the oclgrind simulator
# and fails if the suite fails or oclgrind reports anything.
#   pass 1: out-of-bounds memory (always on), API misuse and data races, on
#           every configuration;
#   pass 2: uninitialized values, on the VEC = 1 configurations only:
#           oclgrind 21.10's Uninitialized plugin segfaults inside its own
#           instruction hook on kernels with vector-typed private arrays.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
run() {
  : >"$log"
  "$@" || status=1
  if [[ -s "$log" ]]; then
    echo "oclgrind reported problems:"
    head -100 "$log"
    status=1
  fi
}
run oclgrind --check-api --data-races --log "$log" "$1" --jobs 1
SPARCL_TEST_SCALAR_ONLY=1 run oclgrind --uninitialized --log "$log" "$1" --jobs 1
exit $status
