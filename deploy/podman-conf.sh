# Sourced by deploy/build-image.sh and the image test: podman's settings for
# machines like the project's VMs, where crun cannot set resource limits.
# There podman needs the runc runtime and no default ulimits; a
# containers.conf saying so is written to $BUILD/containers.conf and used
# unless CONTAINERS_CONF already names one (or runc is not installed).
if [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null 2>&1; then
    mkdir -p "${BUILD:-build}"
    CONTAINERS_CONF="$(cd "${BUILD:-build}" && pwd)/containers.conf"
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$CONTAINERS_CONF"
    export CONTAINERS_CONF
fi
