#!/bin/sh
# Cross-architecture agreement of whole deltas: from the same global model,
# on the same data share with the same seed, the native client and each
# emulated one (qemu-user) train one local epoch (`fedopt-client train
# --init G --save T`), and fl_delta_diff compares the deltas T - G element by
# element: ||d_emu - d_native|| / ||d_native|| must stay within TOL (kernels
# of other architectures round differently: OpenBLAS's NEON kernels against
# x86 FMA ones, the portable GEMM where BLAS=none). mlp (dense GEMMs) and cnn
# (convolutions, pooling, dropout: the same dropout stream on every
# architecture). The observed differences are printed.
# Usage: tests/cross/test_cross_agreement.sh NATIVE_BUILD   (make test-cross ARCH=...)
set -u
build=${1:-build}
. "$(dirname "$0")/cross_lib.sh"
skip_unless_cross
trap 'exit 1' INT TERM
TOL=${FEDOPT_CROSS_TOL:-1e-4}
cli=$build/fedopt-client
diff=$build/tools/fl_delta_diff
[ -x "$diff" ] || { echo "FAIL: $diff missing (make $diff)"; exit 1; }
work=$(mktemp -d /tmp/fedopt-cross.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f (tail)"; tail -n 15 "$f"; }; done
    exit 1
}

# `train` evaluates on the test split after its epoch, which under emulation
# would take longer than the training: the same training data with a test
# split of 100 images (idx headers rewritten for the count).
fm=${FEDOPT_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
[ -f "$fm/train-images-idx3-ubyte.gz" ] || { echo "skip: no Fashion-MNIST in $fm"; exit 77; }
mkdir "$work/fm"
ln -s "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz" "$work/fm/"
{ printf '\000\000\010\003\000\000\000\144\000\000\000\034\000\000\000\034'
  gzip -dc "$fm/t10k-images-idx3-ubyte.gz" | tail -c +17 | head -c 78400; } | gzip >"$work/fm/t10k-images-idx3-ubyte.gz"
{ printf '\000\000\010\001\000\000\000\144'
  gzip -dc "$fm/t10k-labels-idx1-ubyte.gz" | tail -c +9 | head -c 100; } | gzip >"$work/fm/t10k-labels-idx1-ubyte.gz"
export FEDOPT_FMNIST_DIR="$work/fm"

for model in mlp cnn; do
    # The global model: a short native training from the seeded init, so the
    # deltas start from a trained point rather than the init.
    "$cli" train --model "$model" --data fmnist --limit 100 --seed 2 --save "$work/$model-global.safetensors" \
        >"$work/$model-global.log" 2>&1 || fail "$model: the global model"
    # One local epoch on share 7 of 600 (100 examples), batch 20, lr 0.05.
    args="--model $model --data fmnist --partition iid --clients 600 --client-index 7 --batch 20 --lr 0.05 --seed 5 \
        --init $work/$model-global.safetensors"
    # shellcheck disable=SC2086
    "$cli" train $args --save "$work/$model-native.safetensors" >"$work/$model-native.log" 2>&1 ||
        fail "$model: native training"
    for w in $cross; do
        a=${w%%:*}
        c=${w#*:}
        # shellcheck disable=SC2086
        emu "$a" "$c" train $args --save "$work/$model-$a.safetensors" >"$work/$model-$a.log" 2>&1 ||
            fail "$model: $a training"
        out=$("$diff" "$work/$model-global.safetensors" "$work/$model-native.safetensors" \
            "$work/$model-$a.safetensors" "$TOL")
        rc=$?
        echo "$model $a vs native: $out"
        [ "$rc" -eq 0 ] || fail "$model: the $a delta differs from the native one beyond $TOL"
    done
done
echo "ok: deltas agree within $TOL (relative L2) for mlp and cnn on $cross"
