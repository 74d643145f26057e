#!/usr/bin/env bash
# run.sh -- Quick start command 1: set everything up, build, and run the
# main job on the default device (SPARCL_DEVICE selects another): the tuner
# when it is built, then the benchmark or the demo.
#
# usage: scripts/run.sh [--thorough]
#   --thorough   a long tuning budget instead of the quick default
set -euo pipefail
cd "$(dirname "$0")/.."

THOROUGH=0
for a in "$@"; do
  case "$a" in
    --thorough) THOROUGH=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $a (try --help)" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
export POCL_CACHE_DIR="${POCL_CACHE_DIR:-$PWD/build/pocl-cache}"

if [[ -x build/tuner/sparcl-tune ]]; then
  if ((THOROUGH)); then
    build/tuner/sparcl-tune --budget thorough
  else
    build/tuner/sparcl-tune --budget quick
  fi
fi
if [[ -x build/tuner/sparcl-bench ]]; then
  build/tuner/sparcl-bench --quick
fi
build/examples/sparcl-demo
