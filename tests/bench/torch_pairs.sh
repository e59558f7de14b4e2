#!/bin/sh
# torch_pairs.sh BUILD [PYTHON]: fedopt against PyTorch, batch 20, in
# back-to-back pairs, each side at its best thread count.
#
# In each pair and for each model, fedopt runs 1 and 2 threads
# (bench_train, one process), then PyTorch 1 thread and 2 threads
# (torch_reference.py, one process each: OMP_NUM_THREADS must be set before
# torch loads). A pair's wall ratio is fedopt's better setting over
# PyTorch's better setting; its CPU ratio compares samples per CPU-second
# on one thread each, the figure that stays meaningful when other jobs
# share the machine. Single runs on a shared host spread widely, so the
# medians over pairs are the figures to judge issue 20's goals by (cnn,
# mlp, charlstm >= 2x, resnet18gn >= 1.5x).
#
# FEDOPT_PAIRS sets the number of pairs (default 5), FEDOPT_PAIR_MODELS the
# models (default "cnn mlp charlstm resnet18gn"), FEDOPT_PAIR_SECONDS the
# seconds per figure (default 3). `make bench` runs this where
# python3-torch is installed.
set -eu
build=${1:?usage: torch_pairs.sh BUILD [PYTHON]}
python=${2:-/usr/bin/python3}
pairs=${FEDOPT_PAIRS:-5}
models=${FEDOPT_PAIR_MODELS:-cnn mlp charlstm resnet18gn}
secs=${FEDOPT_PAIR_SECONDS:-3}
here=$(dirname "$0")

if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "torch_pairs: no python3-torch here; skipped"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
echo "batch 20: samples/s of wall time [per CPU-second]; fedopt and PyTorch in back-to-back pairs"
i=0
while [ "$i" -lt "$pairs" ]; do
    i=$((i + 1))
    for m in $models; do
        # bench_train's row: "cnn  W1 [C1]  W2 [C2]  -  -" (brackets split off).
        f=$(FEDOPT_BENCH_MODELS=$m FEDOPT_BENCH_SETTINGS=20x1,20x2 FEDOPT_BENCH_SECONDS=$secs \
            "$build/bench/bench_train" | tr -d '[]' | awk -v m="$m" '$1 == m { print $2, $3, $4, $5 }')
        t1=$(OMP_NUM_THREADS=1 FEDOPT_BENCH_MODELS=$m FEDOPT_BENCH_BATCHES=20 \
             FEDOPT_BENCH_SECONDS=$secs "$python" "$here/torch_reference.py" 1 |
             tr -d '[]' | awk -v m="$m" '$1 == m { print $3, $4 }')
        t2=$(OMP_NUM_THREADS=2 FEDOPT_BENCH_MODELS=$m FEDOPT_BENCH_BATCHES=20 \
             FEDOPT_BENCH_SECONDS=$secs "$python" "$here/torch_reference.py" 2 |
             tr -d '[]' | awk -v m="$m" '$1 == m { print $3, $4 }')
        if [ -z "$f" ] || [ -z "$t1" ] || [ -z "$t2" ]; then
            echo "torch_pairs: $m pair $i gave no figure (fedopt '$f', PyTorch '$t1' '$t2')" >&2
            exit 1
        fi
        echo "$m $f $t1 $t2" | awk -v i="$i" '{
            fw = $2 > $4 ? $2 : $4; ft = $2 > $4 ? 1 : 2;
            tw = $6 > $8 ? $6 : $8; tt = $6 > $8 ? 1 : 2;
            printf "  %-11s pair %d: fedopt %.1f [%.1f] 1t, %.1f [%.1f] 2t; PyTorch %.1f [%.1f] 1t, %.1f [%.1f] 2t; best %dt/%dt wall %.2f, CPU 1t %.2f\n",
                   $1, i, $2, $3, $4, $5, $6, $7, $8, $9, ft, tt, fw / tw, $3 / $7
            print $1, fw / tw, $3 / $7 >> "'"$tmp/ratios"'"
        }'
    done
done
echo "medians over $pairs pairs (min-max):"
for m in $models; do
    for col in 2 3; do
        awk -v m="$m" -v c="$col" '$1 == m { print $c }' "$tmp/ratios" | sort -n |
            awk -v m="$m" -v what="$([ "$col" = 2 ] && echo 'best/best wall' || echo 'per CPU-s, 1 thread each')" \
                '{ v[NR] = $1 } END { md = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                  printf "  %-11s %-25s %.2f (%.2f-%.2f)\n", m, what, md, v[1], v[NR] }'
    done
done
