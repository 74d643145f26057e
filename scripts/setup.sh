#!/usr/bin/env bash
# setup.sh -- installs the Debian packages sparcl needs, if any are missing,
# then configures and builds into build/.  Idempotent: a second run installs
# nothing and rebuilds only what changed.
#
# usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config git
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
  libclblast-dev libsqlite3-dev sqlite3 libcriterion-dev
  libopenblas-dev   # the benchmark's SGEMM ceiling and CPU baseline
  oclgrind          # OpenCL simulator: memory, uninitialized-value and race checks
  clang libclang-rt-14-dev  # libFuzzer targets, ThreadSanitizer
  libopenmpi-dev openmpi-bin  # optional libsparcl_mpi (ring attention) and its mpirun tests
  python3-numpy python3-pytest python3-venv python3-setuptools python3-wheel  # the Python package (python/) and its tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup: error: missing packages (${missing[*]}) and not root, and sudo is not available." >&2
    echo "setup: install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${SUDO[@]}" apt-get update -qq; then
    echo "setup: error: apt-get update failed (no network or no package mirror?)" >&2
    exit 1
  fi
  if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    echo "setup: error: apt-get install ${missing[*]} failed" >&2
    exit 1
  fi
fi

if ! clinfo -l 2>/dev/null | grep -q "Device"; then
  echo "setup: error: no OpenCL device visible (clinfo lists none); is pocl-opencl-icd installed?" >&2
  exit 1
fi

[[ "${1:-}" == "--no-build" ]] && exit 0

JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${SPARCL_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$JOBS"
