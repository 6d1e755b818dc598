#!/bin/sh
# setup.sh -- install the Debian packages moe needs to build and test.
#
#   sh tools/setup.sh         compiler, make, OpenBLAS (OpenMP variant), pkg-config,
#                             Open MPI (for build/moe-mpi)
#   sh tools/setup.sh fuzz    ... and clang with its sanitizer/libFuzzer runtimes
#                             (for `make fuzz` and `make CC=clang`)
#
# Idempotent and quiet: packages already installed are left alone, and
# apt-get runs only when something is missing. Needs root (or sudo).
set -e

pkgs="make gcc libc6-dev libopenblas-openmp-dev pkg-config libopenmpi-dev openmpi-bin"
for arg in "$@"; do
    case "$arg" in
    fuzz|clang) pkgs="$pkgs clang libclang-rt-14-dev" ;;
    *) echo "setup.sh: unknown argument '$arg' (expected: fuzz)" >&2; exit 1 ;;
    esac
done

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: apt-get not found; install by hand:$missing" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup.sh: run as root (or install sudo) to install:$missing" >&2
        exit 1
    fi
fi
echo "setup.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
