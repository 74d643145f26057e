#!/usr/bin/env bash
# bundle_offline.sh SPARCL_TUNE DIR -- the offline bundle end to end with the
# tool: `sparcl-tune --build-bundle DIR` for one small problem, then a tuning
# run of that problem with SPARCL_OFFLINE=DIR, which must search only the
# candidates the bundle holds (the runtime's choice and the defaults: one or
# two of the hundreds the space has online) and compile nothing.
set -euo pipefail
tune=$1
dir=$2
problem="dense:n=64,h=2,d=32"
rm -rf "$dir"
"$tune" --build-bundle "$dir" --problems "$problem" --kernel attn_fwd
ls "$dir"/attn_fwd-*.bin >/dev/null
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
out=$(SPARCL_OFFLINE="$dir" "$tune" --db "$db/tuning.db" --problems "$problem" \
      --kernel attn_fwd --budget quick --max-evals 5 --strategy exhaustive 2>&1)
echo "$out"
# "search: E evaluations of V valid candidates, best ..."
valid=$(echo "$out" | sed -n 's/^search: [0-9]* evaluations of \([0-9]*\) valid.*/\1/p')
if [[ -z "$valid" || "$valid" -lt 1 || "$valid" -gt 2 ]]; then
  echo "offline tuning searched ${valid:-no} candidates; the bundle holds 1 or 2"
  exit 1
fi
if echo "$out" | grep -q "build_error\|invalid"; then
  echo "offline tuning tried a candidate outside the bundle"
  exit 1
fi
echo "offline tuning searched $valid bundled candidates"
