#!/bin/sh
# The device profile of docs/devices.md: `fedopt-client bench --json` for
# every model, for the native client and each cross-built one (under
# qemu-user), each run under a hard memory limit: a memory cgroup (v1,
# memory+swap) of LIMIT_MB when this machine lets root make one, else
# `ulimit -v` (virtual memory, which OpenBLAS's reserved buffers inflate; say
# so when quoting). A run the limit kills prints "killed".
# Usage: tests/bench/device_profile.sh [LIMIT_MB] [MODELS...]
#   (from the repository root; builds: build/, build-arm64/, build-armhf/,
#   build-riscv64/)
#   PROFILE_ARCHS: which of native, arm64, armhf, riscv64 (default all)
#   BENCH_ARGS: more bench options (e.g. --examples 40 to shorten emulated runs)
set -u
limit=${1:-512}
[ $# -gt 0 ] && shift
models=${*:-logreg mlp cnn autoencoder bowlr charlstm wordlstm resnet18gn}
cg=""
if [ "$(id -u)" -eq 0 ] && [ -d /sys/fs/cgroup/memory ]; then
    cg=/sys/fs/cgroup/memory/fedopt-profile.$$
    mkdir "$cg" 2>/dev/null || cg=""
fi
[ -n "$cg" ] && trap 'rmdir "$cg" 2>/dev/null' EXIT

limited() { # CMD...: runs CMD under the limit
    if [ -n "$cg" ]; then
        echo $((limit * 1048576)) >"$cg/memory.limit_in_bytes"
        echo $((limit * 1048576)) >"$cg/memory.memsw.limit_in_bytes" 2>/dev/null
        sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$cg" "$@"
    else
        (ulimit -v $((limit * 1024)) && exec "$@")
    fi
}

echo "# limit ${limit} MB via ${cg:+memory cgroup}${cg:-ulimit -v}; $(date -u +%Y-%m-%dT%H:%MZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
for a in ${PROFILE_ARCHS:-native arm64 armhf riscv64}; do
    c=build-$a/fedopt-client
    [ "$a" = native ] && c=build/fedopt-client
    [ -x "$c" ] || continue
    case "$a" in
        native) run="" ;;
        arm64) run=qemu-aarch64 ;;
        armhf) run=qemu-arm ;;
        # No multiarch libc for riscv64: the cross toolchain's (docs/devices.md).
        riscv64) run="qemu-riscv64 -L /usr/riscv64-linux-gnu" ;;
    esac
    for m in $models; do
        # shellcheck disable=SC2086
        out=$(limited $run "$c" bench --model "$m" --json ${BENCH_ARGS:-} 2>&1)
        rc=$?
        if [ "$rc" -eq 0 ]; then
            echo "$a $out"
        else
            echo "$a {\"model\":\"$m\",\"killed\":\"exit status $rc under ${limit} MB\"}"
        fi
    done
done
