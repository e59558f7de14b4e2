#!/bin/sh
# Installs every Debian package fedopt needs to build, test and run its demo.
# This is the single list of packages. It is idempotent: packages already
# present are left alone, and apt-get runs only when something is missing.
# Usage: [FEDOPT_DEPS=all|build|runtime] deploy/install-deps.sh [--check|--list]
#   --check: exit 1 if anything is missing, install nothing; --list: print the packages
set -eu

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
libinih-dev
libmicrohttpd-dev
"
# What `make test` needs on top (clang for the fuzz targets and the clang build,
# Debian's Prometheus server for the metrics test, a single-node Slurm for the
# array scripts' test).
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
if [ "${1:-}" = "--list" ]; then
    echo $PACKAGES
    exit 0
fi

# One dpkg-query for the whole list keeps the no-op case fast: make runs this
# script on every invocation.
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $PACKAGES 2>/dev/null | awk '/ install ok installed$/ {print $1}')
missing=""
for p in $PACKAGES; do
    case " $(echo $installed) " in
        *" $p "*) ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
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
# A fresh machine may have no package lists yet; update only when an install fails for that reason.
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends $missing
fi
