#!/usr/bin/env bash
# run_oclgrind.sh [--pass1-only] TEST_BINARY [ARGS...] -- runs a test
# suite (with its arguments, e.g. a --filter) on the oclgrind simulator and
# fails if the suite fails or oclgrind reports anything.
#   pass 1: out-of-bounds memory (always on), API misuse and data races, on
#           every configuration;
#   pass 2: uninitialized values, on the VEC = 1 configurations only:
#           oclgrind 21.10's Uninitialized plugin segfaults inside its own
#           instruction hook on kernels with vector-typed private arrays.
#           --pass1-only skips it, for suites that do not honor
#           SPARCL_TEST_SCALAR_ONLY (their plans choose their own VEC).
set -uo pipefail
pass2=1
if [[ ${1-} == --pass1-only ]]; then
  pass2=0
  shift
fi
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
run oclgrind --check-api --data-races --log "$log" "$@" --jobs 1
if ((pass2)); then
  SPARCL_TEST_SCALAR_ONLY=1 run oclgrind --uninitialized --log "$log" "$@" --jobs 1
fi
exit $status
