#!/bin/sh
# Installs every Debian package fedopt needs to build, test and run its demo.
# This is the single list of packages. It is idempotent: packages already
# present are left alone, and apt-get runs only when something is missing.
# Usage: deploy/install-deps.sh [--check]   (--check: exit 1 if anything is missing, install nothing)
set -eu

PACKAGES="
build-essential
pkg-config
clang
libclang-rt-dev
libuv1-dev
libprotobuf-c-dev
protobuf-c-compiler
libmbedtls-dev
libsqlite3-dev
sqlite3
libopenblas-dev
zlib1g-dev
libcmocka-dev
libinih-dev
libfaketime
dataset-fashion-mnist
"
# oneDNN, conv2d's backend on x86-64 (make DNNL=1, the default there); Debian
# builds it for amd64 only, and the other architectures keep conv2d's own path.
if [ "$(dpkg --print-architecture 2>/dev/null)" = "amd64" ]; then
    PACKAGES="$PACKAGES libdnnl-dev"
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
