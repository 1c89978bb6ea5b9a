#!/usr/bin/env bash
# launch/setup.sh — make sure the build dependencies are present, then configure and build.
#
#   launch/setup.sh [BUILD_DIR [meson options...]]
#
# On a Debian/Ubuntu machine as root, missing packages are installed with apt-get. On a cluster
# login node (no root) nothing is installed: what pkg-config finds (e.g. from `module load`) is
# used, and a missing piece is named so you can load or install it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
shift || true

APT_PKGS="meson ninja-build pkg-config gcc clang libpcre2-dev libcjson-dev python3 python3-venv
          libopenmpi-dev openmpi-bin libhwloc-dev hwloc-nox slurmctld slurmd slurm-client munge libsimde-dev
          libmicrohttpd-dev curl"
need_apt=0
for tool in meson ninja pkg-config cc clang python3 mpirun slurmctld munged curl; do command -v "$tool" >/dev/null || need_apt=1; done
if command -v pkg-config >/dev/null; then
    command -v mpicc >/dev/null || need_apt=1
    for mod in libpcre2-8 libcjson hwloc libmicrohttpd; do pkg-config --exists "$mod" || need_apt=1; done
fi
if [ "$need_apt" = 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing $APT_PKGS" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
        apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends $APT_PKGS >/dev/null
    else
        echo "setup: missing build tools or libraries (need: meson, ninja, pkg-config, a C11 compiler," >&2
        echo "       PCRE2 (libpcre2-8) and cJSON visible to pkg-config). Load them (module load ...)" >&2
        echo "       or, as root on Debian/Ubuntu: apt-get install $APT_PKGS" >&2
        exit 1
    fi
fi
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$@" >/dev/null
fi
ninja -C "$BUILD" >/dev/null
