#!/usr/bin/env bash
# test.sh -- Quick start command 2: set everything up, build, and run the
# whole test suite (Criterion suites through CTest), then check that the
# installed library works for a program built with find_package(sparcl).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Programs built once per build tree; CI starts from a fresh clone.
export POCL_CACHE_DIR="$PWD/build/pocl-cache"
mkdir -p "$POCL_CACHE_DIR"

echo "== unit tests (CTest + Criterion)"
(cd build && ctest --output-on-failure --timeout 1200)

echo "== install and build examples/minimal against the installed package"
rm -rf build/_install build/_minimal
cmake --install build --prefix "$PWD/build/_install" >/dev/null
cmake -S examples/minimal -B build/_minimal -DCMAKE_PREFIX_PATH="$PWD/build/_install" >/dev/null
cmake --build build/_minimal >/dev/null
LD_LIBRARY_PATH="$PWD/build/_install/lib:${LD_LIBRARY_PATH:-}" build/_minimal/minimal
pkg_out=$(PKG_CONFIG_PATH="$PWD/build/_install/lib/pkgconfig" pkg-config --libs sparcl)
echo "pkg-config --libs sparcl: $pkg_out"
