# shellcheck shell=sh
# Shared helpers of the emulated tests (sourced, not run; make test-cross).
# Expects $build (the native build) and sets $cross: "ARCH:CLIENT" words, one
# per cross-built client found (FEDOPT_CROSS_CLIENTS overrides the search of
# build-arm64/, build-armhf/ and build-riscv64/); `emu ARCH PROG ARGS...` runs a
# program of that architecture under qemu-user.
cross=${FEDOPT_CROSS_CLIENTS:-}
if [ -z "$cross" ]; then
    for a in arm64 armhf riscv64; do
        [ -x "build-$a/fedopt-client" ] && cross="$cross $a:build-$a/fedopt-client"
    done
fi

qemu_for() {
    case "$1" in
        arm64) echo qemu-aarch64 ;;
        armhf) echo qemu-arm ;;
        riscv64) echo qemu-riscv64 ;;
        *) return 1 ;;
    esac
}

# On arm64 and armhf the target's loader and libraries come from the
# multiarch packages (no -L /usr/TRIPLET: that loader does not match the
# multiarch libc, and threads hang; docs/devices.md). riscv64 has no multiarch
# libc: its loader and libc are both the cross toolchain's.
emu() {
    a=$1
    shift
    case "$a" in
        riscv64) qemu-riscv64 -L /usr/riscv64-linux-gnu "$@" ;;
        *) "$(qemu_for "$a")" "$@" ;;
    esac
}

# skip_unless_cross: exit 77 (skip) with a reason when nothing can be emulated.
skip_unless_cross() {
    if [ -z "$cross" ]; then
        echo "skip: no cross-built client (make ARCH=arm64 client)"
        exit 77
    fi
    for w in $cross; do
        a=${w%%:*}
        command -v "$(qemu_for "$a")" >/dev/null 2>&1 || {
            echo "skip: $(qemu_for "$a") missing (make cross-deps ARCH=$a)"
            exit 77
        }
    done
}
