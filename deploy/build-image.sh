#!/bin/sh
# `make image`: builds fedopt's OCI image (deploy/Containerfile) with podman.
#
# Without IMAGE_BASE no registry is needed: the Debian 12 base is made here
# by mmdebstrap from the Debian archive (the runtime packages of
# deploy/install-deps.sh included) and imported as localhost/fedopt-base:12,
# once; later builds reuse it (IMAGE_REBASE=1 makes it again). With
# IMAGE_BASE=docker.io/library/debian:12-slim (or any Debian 12 image) the
# base comes from a registry instead.
#
# Environment: IMAGE (default localhost/fedopt:latest), IMAGE_BASE,
# IMAGE_REBASE, BUILD (scratch space, default build), DEBIAN_MIRROR (default:
# this host's apt sources, else deb.debian.org), CONTAINERS_CONF (podman's
# settings; see deploy/podman-conf.sh).
set -eu
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/fedopt:latest}
BUILD=${BUILD:-build}
base=${IMAGE_BASE:-}
. deploy/podman-conf.sh

if [ -z "$base" ]; then
    base=localhost/fedopt-base:12
    if [ "${IMAGE_REBASE:-0}" = 1 ] || ! podman image exists "$base"; then
        command -v mmdebstrap >/dev/null || { echo "build-image: mmdebstrap is missing (FEDOPT_DEPS=image sh deploy/install-deps.sh)" >&2; exit 1; }
        if [ -n "${DEBIAN_MIRROR:-}" ]; then
            set -- "deb $DEBIAN_MIRROR bookworm main" "deb $DEBIAN_MIRROR bookworm-updates main"
        elif [ -r /etc/apt/sources.list.d/debian.sources ] && grep -q bookworm /etc/apt/sources.list.d/debian.sources; then
            set -- /etc/apt/sources.list.d/debian.sources
        else
            set -- "deb http://deb.debian.org/debian bookworm main" \
                   "deb http://deb.debian.org/debian-security bookworm-security main"
        fi
        pkgs=$(FEDOPT_DEPS=runtime sh deploy/install-deps.sh --list | tr ' ' ',')
        mkdir -p "$BUILD"
        tar="$BUILD/fedopt-base.tar"
        echo "build-image: making the Debian 12 base with mmdebstrap (a few minutes)" >&2
        mmdebstrap --variant=apt --include="passwd,$pkgs" bookworm "$tar" "$@" </dev/null
        podman import --change 'CMD ["/bin/bash"]' "$tar" "$base"
        rm -f "$tar"
    fi
fi
echo "build-image: building $IMAGE on $base" >&2
# The build stage installs the build packages with apt: it needs the
# network, and the host's is the one that surely reaches the archive.
podman build --network=host -f deploy/Containerfile --build-arg BASE="$base" -t "$IMAGE" .
