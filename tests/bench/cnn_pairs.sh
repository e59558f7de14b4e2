#!/bin/sh
# cnn_pairs.sh BUILD [PYTHON]: fedopt against PyTorch on cnn, batch 20, one
# thread each, in back-to-back pairs (fedopt for 4 s, then PyTorch for 8 s).
#
# Single runs on a shared host spread widely, PyTorch's more than fedopt's,
# so one figure of each side says little about their ratio; pairs taken minutes
# apart see the same load, and the median of their ratios is the figure to
# judge issue 3's "fedopt >= 1.5x PyTorch" by. FEDOPT_PAIRS sets the number
# of pairs (default 5). `make bench` runs this where python3-torch is
# installed.
set -eu
build=${1:?usage: cnn_pairs.sh BUILD [PYTHON]}
python=${2:-/usr/bin/python3}
pairs=${FEDOPT_PAIRS:-5}
here=$(dirname "$0")

if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "cnn_pairs: no python3-torch here; skipped"
    exit 0
fi
echo "cnn, batch 20, 1 thread each: fedopt and PyTorch samples/s in back-to-back pairs"
ratios=""
i=0
while [ "$i" -lt "$pairs" ]; do
    i=$((i + 1))
    f=$(FEDOPT_BENCH_MODELS=cnn FEDOPT_BENCH_SETTINGS=20x1 FEDOPT_BENCH_SECONDS=4 \
        "$build/bench/bench_train" | awk '$1 == "cnn" { print $2 }')
    t=$(OMP_NUM_THREADS=1 FEDOPT_BENCH_MODELS=cnn FEDOPT_BENCH_BATCHES=20 FEDOPT_BENCH_SECONDS=8 \
        "$python" "$here/torch_reference.py" 1 | awk '$1 == "cnn" { print $3 }')
    if [ -z "$f" ] || [ -z "$t" ]; then
        echo "cnn_pairs: pair $i gave no figure (fedopt '$f', PyTorch '$t')" >&2
        exit 1
    fi
    r=$(awk -v f="$f" -v t="$t" 'BEGIN { printf "%.2f", f / t }')
    echo "  pair $i: fedopt $f  PyTorch $t  ratio $r"
    ratios="$ratios $r"
done
echo "$ratios" | tr ' ' '\n' | sed '/^$/d' | sort -n |
    awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                              printf "  median ratio %.2f (min %.2f, max %.2f, %d pairs)\n", m, v[1], v[NR], NR }'
