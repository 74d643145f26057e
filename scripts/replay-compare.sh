#!/usr/bin/env bash
# replay-compare.sh -- compares sparcl-tune's search strategies on recorded
# exhaustive data, in replay mode (no kernel runs): for each strategy, with
# and without transfer from the nearest stored problem, at 25, 50 and 100
# evaluations, the median and worst gap to the best stored time over 10
# seeds, per problem.  Prints a Markdown table.
#
# usage: scripts/replay-compare.sh [DATA] [-- extra sparcl-tune options]
#   DATA   a database, or a .csv/.csv.gz export (default
#          tuner/replay-data/attn_fwd_dense_d64.csv.gz); exports are imported
#          into a temporary database first.
# Environment: SPARCL_TUNE (the binary; default build/tuner/sparcl-tune),
#   KERNEL (the tuned family, default attn_fwd), PROBLEMS, SPACE (the
#   --fix/--space options the data was recorded with), BUDGETS, SEEDS,
#   STRATEGIES, DEVICE (the name of the device whose rows are replayed:
#   default, for an export, the device of its first row; for a database,
#   this machine's device).  The data's device is named with sparcl-tune
#   --replay-device, so data recorded on one device replays on any.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tune=${SPARCL_TUNE:-$root/build/tuner/sparcl-tune}
data=${1:-$root/tuner/replay-data/attn_fwd_dense_d64.csv.gz}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
kernel=${KERNEL:-attn_fwd}
problems=${PROBLEMS:-"dense:n=256,h=1,d=64;dense:n=512,h=1,d=64"}
# The recorded data: complete (WG_SIZE, VEC) blocks with EXP=2, BLOCK_M x
# BLOCK_N exhaustive in each (tuner/replay-report.md).
space=${SPACE:-"--fix ALGO=0 --fix USE_LOCAL=0 --fix KT=1 --fix EXP=2 --space WG_SIZE=1,2 --space VEC=8,16"}
budgets=${BUDGETS:-"25 50 100"}
seeds=${SEEDS:-10}
strategies=${STRATEGIES:-"random anneal basin"}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
device=${DEVICE:-}
case "$data" in
*.csv.gz)
    gunzip -c "$data" > "$tmp/data.csv"
    "$tune" --db "$tmp/replay.db" --import "$tmp/data.csv" > /dev/null
    [ -n "$device" ] || device=$(sed -n 2p "$tmp/data.csv" | cut -d, -f3 | tr -d '"')
    db=$tmp/replay.db ;;
*.csv)
    "$tune" --db "$tmp/replay.db" --import "$data" > /dev/null
    [ -n "$device" ] || device=$(sed -n 2p "$data" | cut -d, -f3 | tr -d '"')
    db=$tmp/replay.db ;;
*.sql)
    "$tune" --db "$tmp/replay.db" --import "$data" > /dev/null
    db=$tmp/replay.db ;;
*) db=$data ;;
esac
if [ -n "$device" ]; then
    set -- --replay-device "$device" "$@"
    echo "    rows of device: $device"
fi

IFS=';' read -r -a plist <<< "$problems"
header="| strategy | transfer | evals |"
rule="|---|---|---|"
for p in "${plist[@]}"; do
    header+=" $p median | worst |"
    rule+="---|---|"
done
# The size of the space and the best stored time, from one exhaustive replay.
# shellcheck disable=SC2086
"$tune" --replay --db "$db" --kernel "$kernel" --problems "$problems" $space \
    --strategy exhaustive --max-evals 0 --stagnation 0 --seeds 1 "$@" | grep '^replay ' |
    sed 's/^/    /'
echo
echo "$header"
echo "$rule"
for s in $strategies; do
    for transfer in 0 1; do
        flag=""
        [ "$transfer" = 1 ] && flag=--transfer
        for b in $budgets; do
            row="| $s | $([ "$transfer" = 1 ] && echo yes || echo no) | $b |"
            # shellcheck disable=SC2086
            out=$("$tune" --replay --db "$db" --kernel "$kernel" --problems "$problems" $space \
                --strategy "$s" --max-evals "$b" --stagnation 0 --seeds "$seeds" $flag "$@")
            # One summary line per problem, in the order given.
            while read -r line; do
                med=$(sed -n 's/.*median_gap=\([^ ]*\).*/\1/p' <<< "$line")
                worst=$(sed -n 's/.*worst_gap=\([^ ]*\).*/\1/p' <<< "$line")
                row+=" ${med:-n/a} | ${worst:-n/a} |"
            done < <(grep '^replay-summary' <<< "$out")
            echo "$row"
        done
    done
done
