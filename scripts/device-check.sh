#!/usr/bin/env bash
# device-check.sh -- builds sparcl and runs its test suite, benchmark and a
# short forward tuning on one OpenCL device, every step timed and bounded, and
# writes the results into OUTDIR.  Made for a GPU machine lent for a few
# minutes with no network (issue 18): by default it makes NVIDIA's OpenCL
# driver visible through a private ICD directory and runs on it; --pocl runs
# the same on POCL's CPU device, so it can be tried anywhere.
#
# usage: scripts/device-check.sh OUTDIR [--pocl] [--quick] [-R REGEX] [--device SEL]
#                                [--debs DIR] [--force-debs] [--bench-tuned] [--budget S]
#                                [--cases LIST]
#   --pocl         POCL's CPU device, smaller problems (tuner: the quick set)
#   --quick        three fast test suites, one benchmark case, a tiny tuning run
#   -R REGEX       only the CTest suites matching REGEX
#   --device SEL   SPARCL_DEVICE (index or name substring; default: NVIDIA, or
#                  "Portable Computing Language" with --pocl)
#   --debs DIR     .deb files from scripts/device-debs.sh (default: .debs when
#                  it exists); packages the machine lacks are unpacked into
#                  BUILD/deps, never into /
#   --force-debs   unpack every package, even those the machine has (tests the path)
#   --bench-tuned  benchmark again with the rows just tuned (bench_tuned.json)
#   --budget S     wall-clock budget of the whole run (default 480, 1500 --pocl)
#   --cases LIST   the benchmark's cases (sparcl-bench --cases)
#
# OUTDIR receives at most 8 files: summary.txt (environment, each step's
# status, seconds and limit), devices.txt, build.log, ctest.log, bench.json
# (one JSON object per case), tools.log (benchmark stderr, tuner output),
# tuned_<device>.sql (the tuned rows, as shipped in db/) and, with
# --bench-tuned, bench_tuned.json.  A failing or timed-out step is recorded
# and the next one runs; the exit status is 1 when any step failed.
# Environment: SPARCL_CHECK_JOBS (build jobs, default nproc);
# SPARCL_CHECK_NV_OCL (the OpenCL driver library to list in the private ICD
# directory instead of the libnvidia-opencl.so.1 found).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD

usage() {
  sed -n '9,33p' "$0" >&2
  exit 2
}

OUT="" POCL=0 QUICK=0 REGEX="" DEVICE="${SPARCL_DEVICE:-}" DEBS="" FORCE_DEBS=0
BENCH_TUNED=0 BUDGET="" CASES=""
while (($#)); do
  case "$1" in
    --pocl) POCL=1 ;;
    --quick) QUICK=1 ;;
    -R) (($# > 1)) || usage; REGEX=$2; shift ;;
    --device) (($# > 1)) || usage; DEVICE=$2; shift ;;
    --debs) (($# > 1)) || usage; DEBS=$2; shift ;;
    --force-debs) FORCE_DEBS=1 ;;
    --bench-tuned) BENCH_TUNED=1 ;;
    --budget) (($# > 1)) || usage; BUDGET=$2; shift ;;
    --cases) (($# > 1)) || usage; CASES=$2; shift ;;
    -h | --help) usage ;;
    -*) echo "device-check: unknown option $1" >&2; usage ;;
    *) [[ -z "$OUT" ]] || usage; OUT=$1 ;;
  esac
  shift
done
[[ -n "$OUT" ]] || usage
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
[[ -z "$DEBS" && -d "$REPO/.debs" ]] && DEBS=$REPO/.debs

if ((POCL)); then
  BUILD=$REPO/build-device-pocl
  : "${DEVICE:=Portable Computing Language}"
  : "${BUDGET:=1500}"
  BENCH_CASES=dense-4k,causal-4k,window-16k,bigbird-16k,dense-2k-d128
  TUNE_ARGS=(--problems quick --max-evals 4 --max-seconds 30)
  CTEST_JOBS=1 TEST_JOBS=2
  CAP_BUILD=600 CAP_CTEST=900 CAP_BENCH=300 CAP_TUNE=240
else
  BUILD=$REPO/build-device
  : "${DEVICE:=NVIDIA}"
  : "${BUDGET:=480}"
  BENCH_CASES=dense-4k,causal-4k,window-16k,bigbird-16k,dense-2k-d128,bwd-window-16k
  TUNE_ARGS=(--problems standard --max-evals 12 --max-seconds 12)
  # The suites' time on a GPU goes into compiling every parameter set (the
  # forward suite alone ran past 300 s with 2 Criterion jobs): run several
  # suites at once and several tests of each, and give the suite what is
  # left of the budget.
  CTEST_JOBS=6 TEST_JOBS=6
  CAP_BUILD=300 CAP_CTEST=600 CAP_BENCH=120 CAP_TUNE=150
fi
if ((QUICK)); then
  [[ -n "$REGEX" ]] || REGEX='^(status|layout|misuse)$'
  BENCH_CASES=dense-2k-d128
  TUNE_ARGS=(--problems "dense:n=256,h=2,d=64;window:n=1024,h=2,d=64,w=64" --max-evals 3
             --max-seconds 20)
fi
[[ -n "$CASES" ]] && BENCH_CASES=$CASES
JOBS=${SPARCL_CHECK_JOBS:-$(nproc 2>/dev/null || echo 2)}
export SPARCL_DEVICE=$DEVICE
export POCL_CACHE_DIR=$BUILD/pocl-cache
export CUDA_CACHE_PATH=$BUILD/nv-cache
WORK=$BUILD/device-check # the fresh tuning database and scratch files

SUMMARY=$OUT/summary.txt
T0=$SECONDS
FAILED=0
: >"$SUMMARY"
for f in devices.txt build.log ctest.log bench.json tools.log bench_tuned.json; do
  rm -f "$OUT/$f"
done
rm -f "$OUT"/tuned_*.sql
rm -rf "$WORK"
mkdir -p "$WORK"

say() { echo "$*" | tee -a "$SUMMARY"; }

# run_step NAME CAP LOG CMD...: runs CMD with its output appended to LOG,
# killed after min(CAP, what is left of the budget less 20 s for the export)
# seconds, and records status and time.  Returns CMD's status.
run_step() {
  local name=$1 cap=$2 log=$3
  shift 3
  local left=$((BUDGET - (SECONDS - T0) - 20)) limit=$cap
  [[ $name == export ]] && left=$((BUDGET - (SECONDS - T0)))
  ((left < limit)) && limit=$left
  if ((limit < 5)); then
    printf '%-12s %-10s %5s s  (budget of %d s spent)\n' "$name" SKIPPED - "$BUDGET" |
      tee -a "$SUMMARY"
    FAILED=$((FAILED + 1))
    return 1
  fi
  echo "== $name (limit $limit s): $*" >>"$log"
  local t=$SECONDS rc
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local took=$((SECONDS - t)) what=ok shown
  shown=$(basename "$log")
  case $shown in # logs in $WORK are copied into these files of OUTDIR
    devices.list) shown=devices.txt ;;
    bench.log) shown="bench.json, tools.log" ;;
    bench_tuned.log) shown="bench_tuned.json, tools.log" ;;
  esac
  if ((rc == 124 || rc == 137)); then
    what=TIMEOUT
  elif ((rc != 0)); then
    what="FAILED($rc)"
  fi
  echo "== $name: $what after $took s" >>"$log"
  printf '%-12s %-10s %5d s  (limit %d s; log %s)\n' "$name" "$what" "$took" "$limit" \
    "$shown" | tee -a "$SUMMARY"
  ((rc == 0)) || FAILED=$((FAILED + 1))
  return $rc
}

# A step that cannot run because an earlier one failed.
skip_step() {
  printf '%-12s %-10s %5s s  (%s)\n' "$1" SKIPPED - "$2" | tee -a "$SUMMARY"
  FAILED=$((FAILED + 1))
}

# ---- the machine ----------------------------------------------------------
say "device-check $(date -u +%FT%TZ) mode=$( ((POCL)) && echo pocl || echo gpu)$( ((QUICK)) && echo ' quick') budget=${BUDGET}s"
say "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
say "host: $(uname -srm); $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"'); $(nproc) cores"
say "SPARCL_DEVICE=$SPARCL_DEVICE"

# Tools: the machine's own, else CMake next to a Python environment's.
CMAKE=$(command -v cmake || true)
for c in /opt/torch/.venv/bin/cmake /usr/local/bin/cmake; do
  [[ -n "$CMAKE" ]] && break
  [[ -x $c ]] && CMAKE=$c
done
CTEST=""
[[ -n "$CMAKE" ]] && CTEST=$(dirname "$CMAKE")/ctest
[[ -x "$CTEST" ]] || CTEST=$(command -v ctest || true)
CC_VERSION=$({ ${CC:-cc} --version 2>/dev/null || echo "none"; } | head -1)
say "cc: $CC_VERSION; cmake: ${CMAKE:-none} $([[ -n "$CMAKE" ]] && "$CMAKE" --version | head -1)"

# ---- Debian packages the machine lacks, unpacked into a prefix -------------
PFX=$BUILD/deps
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# True when every shared library the package declares (shlibs) is already in
# the dynamic linker's cache: the system has it under another package name.
libs_present() {
  local shlibs name ver
  shlibs=$(dpkg-deb -I "$1" shlibs 2>/dev/null) || return 1
  [[ -n "$shlibs" ]] || return 1
  while read -r name ver _; do
    [[ -z "$name" || $name == *: ]] && continue
    ldconfig -p 2>/dev/null | awk -v s="$name.so.$ver" '$1 == s {f = 1} END {exit !f}' || return 1
  done <<<"$shlibs"
}

extract_deb() {
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$2"
  else
    (cd "$2" && ar p "$1" "$(ar t "$1" | grep '^data\.tar')" | tar -x)
  fi
}

# The system path of the library a dangling link named lib*.so* stood for.
system_lib() {
  local stem=${1%%.so*}.so
  ldconfig -p 2>/dev/null | awk -v s="$stem" 'index($1, s) == 1 && /x86-64/ {print $NF; exit}'
}

# Points symlinks, .pc files and CMake configs of the prefix at the prefix
# (or, for libraries the system already has, at the system's copy).
relocate_prefix() {
  local l t sys f p
  while IFS= read -r -d '' l; do
    t=$(readlink "$l")
    if [[ $t == /* && -e "$PFX$t" ]]; then
      ln -sfn "$PFX$t" "$l"
    elif [[ ! -e $l ]]; then
      sys=$(system_lib "$(basename "$l")")
      if [[ -n "$sys" ]]; then
        ln -sfn "$sys" "$l"
        echo "  link $(basename "$l") -> $sys (system)"
      else
        echo "  dangling link $l -> $t"
      fi
    fi
  done < <(find "$PFX" -type l -print0)
  # Shared linking only: the private fields would name packages not carried.
  while IFS= read -r -d '' f; do
    sed -i -e "s|^prefix=/usr|prefix=$PFX/usr|" -e "s|=/usr/|=$PFX/usr/|g" \
      -e "s| -\([IL]\)/usr/| -\1$PFX/usr/|g" -e '/^Requires\.private:/d' \
      -e '/^Libs\.private:/d' "$f"
  done < <(find "$PFX" -name '*.pc' -print0)
  while IFS= read -r -d '' f; do
    for p in $(grep -o '"/usr/[^"]*"' "$f" | tr -d '"' | sort -u); do
      [[ -e "$PFX$p" ]] && sed -i "s|\"$p\"|\"$PFX$p\"|g" "$f"
    done
  done < <(find "$PFX" -path '*/cmake/*' -name '*.cmake' -print0)
}

install_debs() {
  local log=$OUT/build.log deb pkg role n=0 list=""
  rm -rf "$PFX"
  mkdir -p "$PFX"
  {
    echo "== deps: .deb files from $DEBS into $PFX"
    for deb in "$DEBS"/*.deb; do
      [[ -e $deb ]] || continue
      pkg=$(basename "$deb")
      pkg=${pkg%%_*}
      role=$(awk -v p="$pkg" '$2 == p {print $1}' "$DEBS/MANIFEST" 2>/dev/null)
      if ((FORCE_DEBS)); then
        :
      elif [[ $pkg == libsqlite3-0 && -e "$DEBS/MANIFEST" ]] && ! installed sqlite3 &&
        grep -q '^root sqlite3 ' "$DEBS/MANIFEST"; then
        # The sqlite3 CLI refuses to run against another version of the
        # library ("SQLite header and source version mismatch"): a carried
        # CLI takes its own library along.
        :
      elif [[ $role == dep ]] && { installed "$pkg" || libs_present "$deb"; }; then
        echo "  have $pkg (or its libraries)"
        continue
      elif installed "$pkg"; then
        echo "  have $pkg"
        continue
      fi
      extract_deb "$deb" "$PFX" && echo "  unpacked $pkg" && n=$((n + 1)) && list+="$pkg "
    done
    relocate_prefix
  } >>"$log" 2>&1
  UNPACKED=$n UNPACKED_LIST=$list
}

UNPACKED=0 UNPACKED_LIST=""
if [[ -n "$DEBS" ]]; then
  t=$SECONDS
  install_debs
  say "deps: $UNPACKED packages unpacked from $DEBS in $((SECONDS - t)) s (list in build.log)"
  if ((UNPACKED)); then
    export PATH=$PFX/usr/bin:$PATH
    export LD_LIBRARY_PATH=$PFX/usr/lib/x86_64-linux-gnu:$PFX/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LIBRARY_PATH=$PFX/usr/lib/x86_64-linux-gnu:$PFX/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
    export CPATH=$PFX/usr/include${CPATH:+:$CPATH}
    export CMAKE_PREFIX_PATH=$PFX/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
    export PKG_CONFIG_PATH=$PFX/usr/lib/x86_64-linux-gnu/pkgconfig:$PFX/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  fi
else
  say "deps: no .deb directory (scripts/device-debs.sh .debs makes one); using the system's packages"
fi
# CMake caches where it found each package: another set of unpacked packages
# than an earlier run of this build directory had needs a fresh configure.
if [[ ! -e $BUILD/deps.list || "$(cat "$BUILD/deps.list")" != "$UNPACKED_LIST" ]]; then
  rm -f "$BUILD/CMakeCache.txt"
  echo "$UNPACKED_LIST" >"$BUILD/deps.list"
fi

# ---- NVIDIA's OpenCL driver through a private ICD directory -----------------
find_nvidia_opencl() {
  local p d
  p=$(ldconfig -p 2>/dev/null | awk '$1 == "libnvidia-opencl.so.1" && /x86-64/ {print $NF; exit}')
  [[ -n "$p" ]] && { echo "$p"; return; }
  for d in /usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib64 \
    /usr/lib/nvidia /usr/lib/x86_64-linux-gnu/nvidia/current /usr/local/cuda/compat; do
    [[ -e $d/libnvidia-opencl.so.1 ]] && { echo "$d/libnvidia-opencl.so.1"; return; }
  done
  find /usr/local/nvidia /usr/lib /usr/lib64 -maxdepth 4 -name 'libnvidia-opencl.so.1' \
    2>/dev/null | head -1
}

NV_OCL=""
if ((!POCL)); then
  command -v nvidia-smi >/dev/null &&
    say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_mode \
      --format=csv,noheader 2>&1 | head -1)"
  NV_OCL=${SPARCL_CHECK_NV_OCL:-$(find_nvidia_opencl)}
  if [[ -n "$NV_OCL" ]]; then
    mkdir -p "$BUILD/icd"
    echo "$NV_OCL" >"$BUILD/icd/nvidia.icd"
    export OCL_ICD_VENDORS=$BUILD/icd
    LD_LIBRARY_PATH=$(dirname "$NV_OCL")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
    say "icd: $NV_OCL via OCL_ICD_VENDORS=$OCL_ICD_VENDORS (/etc/OpenCL/vendors holds:" \
      "$(find /etc/OpenCL/vendors -mindepth 1 -printf '%f ' 2>/dev/null))"
  else
    say "icd: libnvidia-opencl.so.1 not found (ldconfig -p, the usual directories); using the system's ICDs"
  fi
fi
say "libOpenCL: $(ldconfig -p 2>/dev/null | awk '$1 == "libOpenCL.so.1" {print $NF; exit}') (system); prefix: $([[ -e $PFX/usr/lib/x86_64-linux-gnu/libOpenCL.so.1 ]] && echo carried || echo none)"
say ""

# ---- build ----------------------------------------------------------------
BUILT=0
if [[ -z "$CMAKE" ]]; then
  skip_step configure "no cmake on PATH"
else
  mkdir -p "$BUILD"
  if run_step configure 90 "$OUT/build.log" "$CMAKE" -S "$REPO" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release -DSPARCL_BUILD_EXAMPLES=OFF -DSPARCL_TEST_JOBS="$TEST_JOBS"; then
    run_step build "$CAP_BUILD" "$OUT/build.log" "$CMAKE" --build "$BUILD" -j "$JOBS" && BUILT=1
  else
    skip_step build "configure failed"
  fi
fi
TUNE=$BUILD/tuner/sparcl-tune
BENCH=$BUILD/tuner/sparcl-bench

# ---- devices ----------------------------------------------------------------
DEV_SLUG=unknown
# The list line SPARCL_DEVICE selects ("i: platform / device (type)"),
# matched as sparcl does: an index, else a case-insensitive substring.
selected_line() {
  local line idx name want=${SPARCL_DEVICE,,}
  while IFS= read -r line; do
    [[ $line =~ ^([0-9]+):\ (.*)\ \([^\)]*\)$ ]] || continue
    idx=${BASH_REMATCH[1]} name=${BASH_REMATCH[2],,}
    if [[ $want =~ ^[0-9]+$ ]]; then
      [[ $idx == "$want" ]] || continue
    elif [[ $name != *"$want"* ]]; then
      continue
    fi
    echo "$line"
    return 0
  done <"$1"
  return 1
}
list_devices() {
  local f=$WORK/devices.list
  : >"$f"
  run_step devices 30 "$f" "$TUNE" --list-devices || return 1
  grep -q '^[0-9]*: ' "$f" && selected_line "$f" >/dev/null
}
if command -v clinfo >/dev/null; then
  { echo "== clinfo -l"; timeout 30 clinfo -l 2>&1; } >>"$OUT/devices.txt"
fi
if ((BUILT)); then
  list_devices
  if ! selected_line "$WORK/devices.list" >/dev/null && [[ -n "$NV_OCL" ]]; then
    # A loader that ignores OCL_ICD_VENDORS (old Khronos loaders) still
    # honours OCL_ICD_FILENAMES.
    say "devices: \"$SPARCL_DEVICE\" not listed; again with OCL_ICD_FILENAMES=$NV_OCL"
    export OCL_ICD_FILENAMES=$NV_OCL
    list_devices
  fi
  {
    echo "== sparcl-tune --list-devices (SPARCL_DEVICE=$SPARCL_DEVICE)"
    cat "$WORK/devices.list"
  } >>"$OUT/devices.txt"
  line=$(selected_line "$WORK/devices.list")
  if [[ -n "$line" ]]; then
    say "selected: $line"
    if [[ $line == *"Portable Computing Language"* ]]; then
      DEV_SLUG=pocl
    else
      name=${line#*: }
      name=${name#* / }
      name=${name% (*}
      DEV_SLUG=$(echo "$name" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\{1,\}/_/g' \
        -e 's/^_//' -e 's/_$//')
    fi
  else
    say "selected: no device matches SPARCL_DEVICE=$SPARCL_DEVICE"
    FAILED=$((FAILED + 1))
  fi
fi

# ---- benchmark, tuning, tests ------------------------------------------------
# The measurements come first: the suite, whose time on a new device is the
# least predictable, runs last with what is left of the budget.
if ((BUILT)) && [[ $DEV_SLUG != unknown ]]; then
  # The benchmark reads no user database: shipped rows and defaults only.
  export SPARCL_DB=$WORK/no-user.db
  run_step bench "$CAP_BENCH" "$WORK/bench.log" "$BENCH" --json --no-baseline --cases "$BENCH_CASES"
  grep '^{' "$WORK/bench.log" >"$OUT/bench.json"
  grep -v '^{' "$WORK/bench.log" >>"$OUT/tools.log"

  # The tuner's worker process alone, before the tuner spawns it: on the
  # first GPU run every worker answered "no OpenCL device matches" while the
  # parent listed the GPU.  The loader's trace shows which drivers it loads.
  say "worker probe (the worker alone, with the ICD loader's trace):"
  echo "problem attn_fwd dense:n=256,h=1,kvh=1,d=64" |
    OCL_ICD_ENABLE_TRACE=1 OCL_ICD_DEBUG=7 timeout 60 "$TUNE" --worker --device "$SPARCL_DEVICE" \
      3>&1 >>"$OUT/tools.log" 2>&1 | head -3 | sed 's/^/  /' | tee -a "$SUMMARY"

  DB=$WORK/tune.db
  run_step tune "$CAP_TUNE" "$OUT/tools.log" "$TUNE" --db "$DB" --kernel attn_fwd --timeout 30 \
    "${TUNE_ARGS[@]}"
  # Rows are committed as they complete: export whatever a cut-short run left.
  if [[ -e $DB ]]; then
    run_step export 30 "$OUT/tools.log" "$TUNE" --db "$DB" --export "$OUT/tuned_$DEV_SLUG.sql"
    if ! grep -q '^INSERT' "$OUT/tuned_$DEV_SLUG.sql" 2>/dev/null; then
      say "tune: no rows stored (see the worker probe above and tools.log)"
      FAILED=$((FAILED + 1))
    fi
    if ((BENCH_TUNED)); then
      export SPARCL_DB=$DB
      run_step bench-tuned "$CAP_BENCH" "$WORK/bench_tuned.log" "$BENCH" --json --no-baseline \
        --cases "$BENCH_CASES"
      grep '^{' "$WORK/bench_tuned.log" >"$OUT/bench_tuned.json"
      grep -v '^{' "$WORK/bench_tuned.log" >>"$OUT/tools.log"
    fi
  else
    skip_step export "no tuning database"
  fi

  ctest_args=(--test-dir "$BUILD" --output-on-failure -j "$CTEST_JOBS" --timeout "$CAP_CTEST" -E '^oclgrind$')
  [[ -n "$REGEX" ]] && ctest_args+=(-R "$REGEX")
  run_step ctest "$CAP_CTEST" "$OUT/ctest.log" "$CTEST" "${ctest_args[@]}"
else
  for s in bench tune export ctest; do skip_step "$s" "no build or no device"; done
fi

say ""
say "total: $((SECONDS - T0)) s; $FAILED step(s) failed; files in $OUT:"
find "$OUT" -maxdepth 1 -type f -printf '  %f %s bytes\n' | sort | tee -a "$SUMMARY"
((FAILED == 0))
