#!/usr/bin/env bash
# run_tool_warns.sh SPARCL_DEMO -- a tool run with a corrupt user tuning
# database ($SPARCL_DB) must say so on stderr (the library falls back to the
# shipped database and reports it through the log callback the tool
# installs) and still succeed.
set -uo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
head -c 4096 /dev/urandom >"$dir/corrupt.db"
SPARCL_DB="$dir/corrupt.db" "$1" --n 17 --heads 1 --dim 16 --reps 1 >"$dir/out" 2>"$dir/err"
rc=$?
if [[ $rc -ne 0 ]]; then
  echo "the tool failed ($rc):"; cat "$dir/out" "$dir/err"; exit 1
fi
if ! grep -q "warning: .*corrupt.db" "$dir/err"; then
  echo "no warning naming the corrupt database on stderr:"; cat "$dir/err"; exit 1
fi
echo "ok: $(grep -m1 warning "$dir/err")"
