#!/usr/bin/env bash
# test.sh -- Quick start command 2: set everything up, build, and run the
# whole test suite.  Stages (each timed):
#   warnings src/ compiled with -Wconversion -Wsign-conversion -Werror
#   unit     Criterion suites through CTest on the default OpenCL device,
#            including the oclgrind simulator run and the fuzz-corpus replay
#   python   the Python package: pip-installed into build-py/venv (Debian's
#            NumPy and pytest through system site packages, no network), then
#            pytest python/tests from outside the source folder against
#            build/libsparcl.so, so that the installed copy is what runs
#   asan     the same suites built with AddressSanitizer + UBSan
#   tsan     the multi-threaded scenarios under ThreadSanitizer
#   fuzz     each libFuzzer target for $SPARCL_FUZZ_SECONDS (default 45) s
#   install  install, then build examples/minimal with find_package(sparcl)
#   scripts  bash -n on every shell script, and shellcheck (warnings and
#            errors) when it is installed; takes seconds
# `scripts/test.sh unit` (or any list of stage names) runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGES=("$@")
((${#STAGES[@]})) || STAGES=(scripts warnings unit python asan tsan fuzz install)
JOBS=$(nproc 2>/dev/null || echo 2)

bash scripts/setup.sh

declare -A took
run_stage() {
  local name=$1 t0=$SECONDS
  echo "== stage $name"
  "stage_$name"
  took[$name]=$((SECONDS - t0))
  echo "== stage $name passed in ${took[$name]} s"
}

# Runs CTest in build dir $1 (extra args follow) and fails on any sanitizer
# report, since reports printed by a passing test do not change its status.
ctest_in() {
  local dir=$1
  shift
  export POCL_CACHE_DIR="$PWD/$dir/pocl-cache"
  mkdir -p "$POCL_CACHE_DIR"
  (cd "$dir" && ctest --output-on-failure --timeout 1200 --output-log ctest.log "$@")
  if grep -nE "ERROR: (Address|Leak|Thread|UndefinedBehavior)Sanitizer|WARNING: ThreadSanitizer|runtime error:" \
       "$dir/ctest.log" | head -20; then
    echo "sanitizer reports above (full log: $dir/ctest.log)" >&2
    return 1
  fi
}

# src/ builds with -Wall -Wextra -Wconversion -Wsign-conversion and no
# warning at all (gcc; the library alone, in build-warn/).
stage_warnings() {
  cmake -S . -B build-warn -DCMAKE_BUILD_TYPE=Release -DSPARCL_STRICT_WARNINGS=ON \
    -DSPARCL_BUILD_TESTS=OFF -DSPARCL_BUILD_TOOLS=OFF -DSPARCL_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build build-warn -j "$JOBS" --target sparcl_objects
}

stage_unit() {
  ctest_in build
}

stage_python() {
  local root=$PWD venv=$PWD/build-py/venv
  [[ -x "$venv/bin/python" ]] || /usr/bin/python3 -m venv --system-site-packages "$venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q --no-build-isolation --no-index \
    --no-deps --force-reinstall ./python
  mkdir -p build/pocl-cache
  (cd build-py && SPARCL_LIBRARY="$root/build/libsparcl.so" SPARCL_TEST_INSTALLED=1 \
    POCL_CACHE_DIR="$root/build/pocl-cache" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/python/tests")
}

stage_asan() {
  # The unit stage's POCL kernel cache: the kernels are the same, only the
  # host code is instrumented.
  cmake -S . -B build-asan -DSPARCL_SANITIZE=address -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSPARCL_BUILD_TOOLS=OFF -DSPARCL_TEST_POCL_CACHE="$PWD/build/pocl-cache" >/dev/null
  cmake --build build-asan -j "$JOBS" >/dev/null
  # oclgrind preloads its own OpenCL runtime, which ASan cannot interpose.
  ctest_in build-asan -E oclgrind
}

stage_tsan() {
  cmake -S . -B build-tsan -DSPARCL_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSPARCL_BUILD_TOOLS=OFF -DSPARCL_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build build-tsan -j "$JOBS" --target tsan_threads >/dev/null
  ctest_in build-tsan
}

stage_fuzz() {
  bash scripts/fuzz.sh
}

stage_install() {
  rm -rf build/_install build/_minimal
  cmake --install build --prefix "$PWD/build/_install" >/dev/null
  cmake -S examples/minimal -B build/_minimal -DCMAKE_PREFIX_PATH="$PWD/build/_install" >/dev/null
  cmake --build build/_minimal >/dev/null
  LD_LIBRARY_PATH="$PWD/build/_install/lib:${LD_LIBRARY_PATH:-}" build/_minimal/minimal
  echo "pkg-config --libs sparcl: $(PKG_CONFIG_PATH="$PWD/build/_install/lib/pkgconfig" pkg-config --libs sparcl)"
}

stage_scripts() {
  local f
  for f in scripts/*.sh tests/*.sh; do
    bash -n "$f"
  done
  if command -v shellcheck >/dev/null; then
    shellcheck -S warning scripts/*.sh tests/*.sh
  else
    echo "shellcheck not installed: syntax checked only"
  fi
}

for s in "${STAGES[@]}"; do
  declare -F "stage_$s" >/dev/null || { echo "test.sh: unknown stage $s" >&2; exit 2; }
  run_stage "$s"
done
echo "== all stages passed:"
for s in "${STAGES[@]}"; do printf '   %-8s %4d s\n' "$s" "${took[$s]}"; done
