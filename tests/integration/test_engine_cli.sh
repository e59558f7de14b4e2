#!/bin/sh
# fedopt-client models / train / eval end to end: the parameter counts of the
# paper, train's per-epoch JSON, save -> eval giving back train's own test
# figures, clear refusals of bad model files, and the OpenBLAS kernel fix.
set -eu
build=${1:-build}
client="$build/fedopt-client"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# models: the counts the paper's architectures have.
"$client" models > "$dir/models"
for want in "logreg 7,850" "mlp 199,210" "cnn 1,199,882" "autoencoder 2,837,314" "bowlr 5,000,500"; do
    set -- $want
    grep -Eq "^$1 +$2 " "$dir/models" || fail "models: no '$1 $2'"
done
"$client" models --classes 62 | grep -Eq "^cnn +1,206,590 " || fail "cnn with C=62"
"$client" models --json | grep -q '"model":"cnn","params":1199882,"input":\[1, 28, 28\],"output":\[10\]' ||
    fail "models --json"

if [ -d "${FEDOPT_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}" ]; then
    # train --json: one object per epoch with the documented keys.
    "$client" train --model logreg --epochs 2 --limit 2000 --json --save "$dir/lr.st" > "$dir/train.json"
    [ "$(wc -l < "$dir/train.json")" -eq 2 ] || fail "train --json: expected 2 lines"
    for k in epoch train_loss test_loss test_accuracy samples_per_s; do
        grep -q "\"$k\":" "$dir/train.json" || fail "train --json lacks $k"
    done
    # eval of the saved model reproduces train's last test figures exactly.
    acc=$(tail -1 "$dir/train.json" | sed 's/.*"test_accuracy":\([^,]*\),.*/\1/')
    loss=$(tail -1 "$dir/train.json" | sed 's/.*"test_loss":\([^,]*\),.*/\1/')
    "$client" eval --model logreg --init "$dir/lr.st" --json > "$dir/eval.json"
    grep -q "^{\"loss\":$loss,\"accuracy\":$acc,\"examples\":10000}\$" "$dir/eval.json" ||
        fail "eval $(cat "$dir/eval.json") differs from train's loss $loss accuracy $acc"
    # --init continues from a file: a second run starts where the first ended.
    "$client" train --model logreg --epochs 1 --limit 2000 --init "$dir/lr.st" --json > "$dir/t2.json"
    # Bad files: truncated, wrong model, not a file at all -> exit 1 with a reason.
    head -c 1000 "$dir/lr.st" > "$dir/cut.st"
    if "$client" eval --model logreg --init "$dir/cut.st" 2> "$dir/err"; then fail "truncated file accepted"; fi
    grep -q "cut.st: .*truncated\|cut.st: truncated" "$dir/err" || fail "truncation not explained: $(cat "$dir/err")"
    if "$client" eval --model mlp --init "$dir/lr.st" 2> "$dir/err"; then fail "logreg file accepted as mlp"; fi
    grep -q "unexpected tensor 'fc.weight'" "$dir/err" || fail "wrong model not explained: $(cat "$dir/err")"
    if "$client" eval --model logreg --init "$dir/nope.st" 2> "$dir/err"; then fail "missing file accepted"; fi
    grep -q "nope.st: cannot open" "$dir/err" || fail "missing file not explained"
fi

# Usage errors exit 2.
set +e
"$client" train > /dev/null 2>&1; [ $? -eq 2 ] || fail "train without --model should exit 2"
"$client" train --model logreg --lr abc > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad --lr should exit 2"
set -e

# The OpenBLAS kernel fix, end to end: pretend the library loaded its generic
# Prescott kernel; on an AVX2+FMA CPU the client must re-exec itself with a
# better OPENBLAS_CORETYPE and end up running it. The machine's environment may
# set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE itself (CI machines of this kind do):
# each command here sets or clears them for itself and nothing else.
noenv() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }
kernel() { "$@" models --verbose | sed -n 's/^gemm: .*kernel //p'; }
if grep -q ' avx2 ' /proc/cpuinfo && grep -q ' fma ' /proc/cpuinfo && noenv "$client" models --verbose | grep -q '^gemm: openblas'; then
    k=$(kernel noenv FEDOPT_BLAS_ASSUME_LOADED=Prescott "$client")
    case "$k" in "Haswell (chosen by fedopt"*|"Zen (chosen by fedopt"*|"SkylakeX (chosen by fedopt"*) ;;
        *) fail "kernel fix: got '$k'" ;; esac
    # Where OpenBLAS picked an AVX2/AVX-512 kernel itself, nothing is re-executed.
    k=$(kernel noenv "$client")
    case "$k" in *"chosen by fedopt"*) fail "re-executed although OpenBLAS chose '$k'" ;;
        Haswell|Zen|SkylakeX|Cooperlake|SapphireRapids) ;;
        *) echo "note: OpenBLAS loaded '$k' here" ;; esac
    # A user's own choice is never overridden, even over a generic kernel.
    k=$(kernel noenv OPENBLAS_CORETYPE=Prescott "$client")
    [ "$k" = Prescott ] || fail "user's OPENBLAS_CORETYPE overridden: $k"
    k=$(kernel noenv OPENBLAS_CORETYPE=Haswell FEDOPT_BLAS_ASSUME_LOADED=Prescott "$client")
    case "$k" in *"chosen by fedopt"*) fail "user's OPENBLAS_CORETYPE=Haswell overridden: $k" ;; esac
    # OPENBLAS_L2_SIZE alone is not a kernel choice: the fix still applies.
    k=$(kernel noenv OPENBLAS_L2_SIZE=512 FEDOPT_BLAS_ASSUME_LOADED=Prescott "$client")
    case "$k" in *"chosen by fedopt"*) ;; *) fail "kernel fix with OPENBLAS_L2_SIZE set: got '$k'" ;; esac
fi
echo "engine cli: ok"
