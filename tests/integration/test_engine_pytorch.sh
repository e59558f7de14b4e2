#!/bin/sh
# fedopt's models are PyTorch's: a model trained by fedopt loads (strictly,
# by state_dict name and shape) into an independent PyTorch definition and
# scores the same loss and accuracy on the Fashion-MNIST test set, and a
# PyTorch-initialised model exported to safetensors scores the same in
# `fedopt-client eval`. Needs Debian's python3-torch (not in install-deps.sh:
# it is large and only this interop check uses it) and dataset-fashion-mnist;
# reported as skipped (exit 77) without them.
set -eu
build=${1:-build}
py=/usr/bin/python3
here=$(dirname "$0")
fm=${FEDOPT_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
if ! "$py" -c 'import torch' 2>/dev/null || [ ! -d "$fm" ]; then
    echo "skip: python3-torch or Fashion-MNIST not installed (apt-get install python3-torch)"
    exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
client="$build/fedopt-client"

# Same loss to 1e-4 relative, same accuracy to 2 test images in 10,000 (float
# summation order may flip a prediction that sits on a tie).
same() { # name fedopt_loss fedopt_acc torch_loss torch_acc
    awk -v n="$1" -v a="$2" -v b="$3" -v c="$4" -v d="$5" 'BEGIN {
        rel = (a - c) / (c > 0 ? c : 1); if (rel < 0) rel = -rel
        dacc = b - d; if (dacc < 0) dacc = -dacc
        printf "%s: fedopt loss %s acc %s | pytorch loss %s acc %s\n", n, a, b, c, d
        exit !(rel < 1e-4 && dacc <= 0.0002) }'
}

# 1. fedopt trains, PyTorch evaluates.
for m in logreg mlp; do
    "$client" train --model $m --epochs 1 --limit 3000 --save "$dir/$m.st" --json > "$dir/$m.json"
    set -- $("$client" eval --model $m --init "$dir/$m.st" --json |
             sed 's/.*"loss":\([^,]*\),"accuracy":\([^,]*\),.*/\1 \2/')
    t=$("$py" "$here/pytorch_interop.py" eval $m "$dir/$m.st" "$fm")
    same "$m (trained by fedopt)" "$1" "$2" $t
done

# 2. PyTorch initialises (its own init and RNG), fedopt evaluates: this pins the
#    conv layout [out,in,kh,kw] and the C,H,W flatten order of fc1. (Not with
#    the portable GEMM of BLAS=none: evaluating the cnn on 10,000 images there
#    takes minutes.)
models2="cnn autoencoder"
"$client" models --verbose | grep -q '^gemm: portable' && models2=""
for m in $models2; do
    "$py" "$here/pytorch_interop.py" export $m "$dir/$m.st" 3
    out=$("$client" eval --model $m --init "$dir/$m.st" --json)
    l=$(echo "$out" | sed 's/.*"loss":\([^,]*\),.*/\1/')
    a=$(echo "$out" | sed 's/.*"accuracy":\([^,]*\),.*/\1/')
    [ "$a" = null ] && a=0
    t=$("$py" "$here/pytorch_interop.py" eval $m "$dir/$m.st" "$fm")
    same "$m (initialised by PyTorch)" "$l" "$a" $t
done
echo "pytorch interop: ok"
