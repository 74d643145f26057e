#!/usr/bin/env bash
# device-debs.sh -- downloads (does not install) the Debian packages that
# scripts/device-check.sh needs on a machine without network: the OpenCL ICD
# loader and headers, CLBlast, SQLite (library, headers and CLI), Criterion,
# pkg-config and clinfo, with the run-time libraries they load.  The compiler
# and CMake are not included: the machine must have them.
#
# usage: scripts/device-debs.sh DIR
#
# DIR receives the .deb files and MANIFEST, one line per package:
#   root PACKAGE VERSION   a package the build or the script uses directly
#   dep  PACKAGE VERSION   a library one of them loads; device-check.sh skips
#                          it when the machine already has its libraries
# Development packages are taken without their own dependencies (only their
# headers, .pc files and CMake configs are used; device-check.sh drops the
# static-linking fields of the .pc files).  Libraries every Debian/Ubuntu
# system has (libc, libgcc, libstdc++, zlib, ...) are left out.
# Keep DIR inside the repository but ignored (/.debs/ is in .gitignore) and
# carry it to the device machine with the working tree.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
DIR=$1

# Used directly: headers, CMake configs, .pc files and tools.
DEV_ROOTS=(ocl-icd-opencl-dev opencl-c-headers libclblast-dev libsqlite3-dev libcriterion-dev)
# Used at run time: recursed for the libraries they load.
RUN_ROOTS=(ocl-icd-libopencl1 libclblast1 libsqlite3-0 sqlite3 libcriterion3 pkgconf pkgconf-bin
           libpkgconf3 clinfo)
# Present on every Debian/Ubuntu base system, or not wanted in a prefix.
BASE='^(libc6|libc-bin|libgcc-s1|gcc-[0-9]+-base|libstdc\+\+6|zlib1g|libzstd1|liblzma5|libbz2-1\.0|libtinfo6|libacl1|libselinux1|libmd0|libpcre2-8-0|libcrypt1|dpkg|tar|install-info|readline-common|debconf|perl-base)$'

if ! command -v apt-get >/dev/null || ! command -v apt-cache >/dev/null; then
  echo "device-debs: error: needs apt-get and apt-cache (a Debian/Ubuntu machine)" >&2
  exit 1
fi

# The run-time closure: every real package the run roots depend on,
# recursively, without recommends and virtual names, minus the base set.
mapfile -t deps < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
                      --no-breaks --no-replaces --no-enhances "${RUN_ROOTS[@]}" |
                    grep -v '^ ' | grep -v '^<' | sort -u | grep -Ev "$BASE" || true)

declare -A role
for p in "${DEV_ROOTS[@]}" "${RUN_ROOTS[@]}"; do role[$p]=root; done
for p in "${deps[@]}"; do [[ -n "${role[$p]:-}" ]] || role[$p]=dep; done

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
rm -f "$DIR"/*.deb "$DIR/MANIFEST"
mapfile -t pkgs < <(printf '%s\n' "${!role[@]}" | sort)
echo "device-debs: downloading ${#pkgs[@]} packages into $DIR"
if ! (cd "$DIR" && apt-get download -q "${pkgs[@]}"); then
  echo "device-debs: error: apt-get download failed (stale package lists? run apt-get update)" >&2
  exit 1
fi
for p in "${pkgs[@]}"; do
  v=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
  echo "${role[$p]} $p $v" >>"$DIR/MANIFEST"
done
n=$(find "$DIR" -maxdepth 1 -name '*.deb' | wc -l)
echo "device-debs: $n .deb files, $(du -sh "$DIR" | cut -f1) in all; MANIFEST:"
cat "$DIR/MANIFEST"
