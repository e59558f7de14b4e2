#!/bin/sh
# Installs every Debian package fedopt needs to build, test and run its demo.
# This is the single list of packages. It is idempotent: packages already
# present are left alone, and apt-get runs only when something is missing.
# Usage: [FEDOPT_DEPS=all|build|runtime|image] deploy/install-deps.sh [--check|--list] [--arch ARCH]
#   --check: exit 1 if anything is missing, install nothing; --list: print the packages
#   --arch ARCH (arm64, armhf): instead of the native sets, what a cross
#   build of the client and `make test-cross` need: the cross compiler, the
#   client's libraries for ARCH (multiarch; the architecture is added to
#   dpkg when it is not there) and qemu-user. The native sets are then left
#   alone: a cross build installs nothing native it does not use.
#   --arch riscv64: the cross compiler, qemu-user and the tools with which
#   deploy/cross-riscv64-libs.sh then builds the client's libraries from
#   Debian's sources into FEDOPT_RISCV64_PREFIX (default /opt/fedopt-riscv64);
#   --check also checks that prefix.
set -eu

check=0
list=0
arch=""
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check=1 ;;
        --list) list=1 ;;
        --arch) arch=${2:-}; shift ;;
        *) echo "usage: $0 [--check|--list] [--arch arm64|armhf|riscv64]" >&2; exit 2 ;;
    esac
    shift
done

# What `make all` needs.
BUILD_PACKAGES="
build-essential
pkg-config
libuv1-dev
libprotobuf-c-dev
protobuf-c-compiler
libmbedtls-dev
libsqlite3-dev
libopenblas-dev
zlib1g-dev
libdeflate-dev
libinih-dev
libmicrohttpd-dev
"
# What `make test` needs on top (clang for the fuzz targets and the clang build,
# Debian's Prometheus server for the metrics test, a single-node Slurm for the
# array scripts' test, gnuplot for the experiment report, protoc and Python's
# protobuf for the third-party client test, openssl's s_client for the
# key-exchange groups test).
TEST_PACKAGES="
clang
libclang-rt-dev
sqlite3
libcmocka-dev
dataset-fashion-mnist
prometheus
curl
slurm-wlm
munge
libfaketime
gnuplot-nox
python3-protobuf
protobuf-compiler
openssl
"
# What the binaries need to run, and the demo data: the container image's
# packages (deploy/Containerfile, make image).
RUNTIME_PACKAGES="
libuv1
libprotobuf-c1
libmbedtls14
libsqlite3-0
libopenblas0-pthread
zlib1g
libdeflate0
libinih1
libmicrohttpd12
dataset-fashion-mnist
"
# `make image` and `make test-image` (the image test runs containers).
IMAGE_PACKAGES="
podman
runc
mmdebstrap
uidmap
catatonit
"
# FEDOPT_DEPS picks the set: all (default: build and test), build, runtime, image;
# `--list` prints the set instead of installing it.
case "${FEDOPT_DEPS:-all}" in
    all) PACKAGES="$BUILD_PACKAGES $TEST_PACKAGES" ;;
    build) PACKAGES="$BUILD_PACKAGES" ;;
    runtime) PACKAGES="$RUNTIME_PACKAGES" ;;
    image) PACKAGES="$IMAGE_PACKAGES" ;;
    *) echo "fedopt: FEDOPT_DEPS must be all, build, runtime or image" >&2; exit 2 ;;
esac
# oneDNN, conv2d's backend on x86-64 (make DNNL=1, the default there); Debian
# builds it for amd64 only, and the other architectures keep conv2d's own path.
case "${FEDOPT_DEPS:-all}" in
    all | build)
        if [ -z "$arch" ] && [ "$(dpkg --print-architecture 2>/dev/null)" = "amd64" ]; then
            PACKAGES="$PACKAGES libdnnl-dev"
        fi ;;
    runtime)
        # the binaries built with it load libdnnl.so.2 (the image's runtime stage)
        if [ -z "$arch" ] && [ "$(dpkg --print-architecture 2>/dev/null)" = "amd64" ]; then
            PACKAGES="$PACKAGES libdnnl2"
        fi ;;
esac
case "$arch" in
    "") ;;
    arm64 | armhf)
        case "$arch" in
            arm64) triplet=aarch64-linux-gnu ;;
            armhf) triplet=arm-linux-gnueabihf ;;
        esac
        # The client's libraries, cmocka for its unit tests, the data set
        # they read.
        PACKAGES="gcc-$triplet libc6-dev-$arch-cross pkg-config protobuf-c-compiler qemu-user
dataset-fashion-mnist"
        for p in libuv1-dev libprotobuf-c-dev libmbedtls-dev libsqlite3-dev zlib1g-dev \
            libopenblas-dev libcmocka-dev libinih-dev libmicrohttpd-dev; do
            PACKAGES="$PACKAGES $p:$arch"
        done
        ;;
    riscv64)
        # Debian 12 has the cross compiler but no riscv64 packages: the
        # client's libraries are cross-built from Debian's source packages
        # by deploy/cross-riscv64-libs.sh into FEDOPT_RISCV64_PREFIX, with
        # these tools (tcl: SQLite's build generates its header with tclsh).
        PACKAGES="gcc-riscv64-linux-gnu libc6-dev-riscv64-cross pkg-config protobuf-c-compiler qemu-user
dataset-fashion-mnist gcc libc6-dev make cmake ninja-build meson dpkg-dev xz-utils tcl python3
debian-archive-keyring"
        ;;
    *) echo "fedopt: --arch must be arm64, armhf or riscv64" >&2; exit 2 ;;
esac
if [ "$list" -eq 1 ]; then
    echo $PACKAGES
    exit 0
fi

# One dpkg-query for the whole list keeps the no-op case fast: make runs this
# script on every invocation. A foreign package is named NAME:ARCH.
installed=$(dpkg-query -W -f='${Package} ${Package}:${Architecture} ${Status}\n' $PACKAGES 2>/dev/null |
    awk '/ install ok installed$/ {print $1; print $2}')
missing=""
for p in $PACKAGES; do
    case " $(echo $installed) " in
        *" $p "*) ;;
        *) missing="$missing $p" ;;
    esac
done

# riscv64: the libraries built from source (deploy/cross-riscv64-libs.sh).
rv_prefix=${FEDOPT_RISCV64_PREFIX:-/opt/fedopt-riscv64}
rv_missing=0
if [ "$arch" = riscv64 ]; then
    for pc in libuv libprotobuf-c sqlite3 zlib inih libmicrohttpd cmocka; do
        [ -f "$rv_prefix/lib/pkgconfig/$pc.pc" ] || rv_missing=1
    done
    [ -f "$rv_prefix/lib/libmbedtls.a" ] || rv_missing=1
fi
rv_build() {
    [ "$rv_missing" -eq 1 ] || return 0
    sh "$(dirname "$0")/cross-riscv64-libs.sh" "$rv_prefix"
}

if [ -z "$missing" ]; then
    if [ "$rv_missing" -eq 1 ] && [ "$check" -eq 1 ]; then
        echo "the riscv64 libraries are not built in $rv_prefix (deploy/cross-riscv64-libs.sh)" >&2
        exit 1
    fi
    rv_build
    exit 0
fi
if [ "$check" -eq 1 ]; then
    echo "missing packages:$missing" >&2
    exit 1
fi

echo "fedopt: installing missing Debian packages:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "fedopt: need root or sudo to install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# (riscv64 is not added: Debian 12's archive has no riscv64 packages.)
if [ -n "$arch" ] && [ "$arch" != riscv64 ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    $SUDO dpkg --add-architecture "$arch"
    $SUDO apt-get update || true
fi
# A fresh machine may have no package lists yet; update only when an install fails for that reason.
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
    # One index that fails to download (a mirror mid-sync) must not stop
    # the install: the install below says whether what we need was found.
    $SUDO apt-get update || echo "fedopt: apt-get update reported errors; trying the install anyway" >&2
    $SUDO apt-get install -y --no-install-recommends $missing
fi
rv_build
