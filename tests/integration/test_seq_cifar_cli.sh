#!/bin/sh
# The issue-4 models through fedopt-client: `models` shows the paper's counts;
# charlstm trains on a text file and its saved model evaluates; resnet18gn
# trains on CIFAR-10 binary batches (32x32, cropped to 24x24 by train/eval).
# With FEDOPT_TEST_LONG=1 also: charlstm learns real English (the Debian
# license texts) to clearly beyond the unigram baseline.
set -eu
build=${1:-build}
client="$build/fedopt-client"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$client" models > "$dir/models"
for want in "charlstm 820,522" "wordlstm 4,050,748" "resnet18gn 11,181,642"; do
    set -- $want
    grep -Eq "^$1 +$2 " "$dir/models" || fail "models: no '$1 $2'"
done
"$client" models --classes 100 | grep -Eq "^resnet18gn +11,227,812 " || fail "resnet18gn with C=100"
grep -Eq "^charlstm .*\[80\] +\[80, 90\] +seq-ce " "$dir/models" || fail "charlstm shapes/loss"

# charlstm on a small text: one epoch runs, the saved model evaluates to train's figures.
mkdir "$dir/text"
for i in 1 2 3; do
    printf 'HAMLET: To be, or not to be, that is the question:\nWhether tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune.\n' >> "$dir/text/play.txt"
done
"$client" train --model charlstm --data "text:$dir/text" --epochs 1 --batch 4 --lr 1 --json \
    --save "$dir/c.st" > "$dir/c.json"
grep -q '"test_accuracy":[0-9]' "$dir/c.json" || fail "charlstm train: $(cat "$dir/c.json")"
acc=$(sed 's/.*"test_accuracy":\([^,]*\),.*/\1/' "$dir/c.json")
"$client" eval --model charlstm --data "text:$dir/text" --init "$dir/c.st" --json > "$dir/ce.json"
grep -q "\"accuracy\":$acc," "$dir/ce.json" || fail "eval $(cat "$dir/ce.json") vs train accuracy $acc"
# The file is PyTorch's layout: both LSTM biases of both layers are there.
for t in embed.weight lstm.weight_ih_l0 lstm.bias_hh_l0 lstm.bias_hh_l1 fc.bias; do
    grep -aq "\"$t\"" "$dir/c.st" || fail "charlstm file lacks $t"
done

# resnet18gn on CIFAR-10 binary batches of random images (10 records per file).
mkdir "$dir/cifar"
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
    for l in 0 1 2 3 4 5 6 7 8 9; do
        printf "\\$(printf '%03o' "$l")"
        head -c 3072 /dev/urandom
    done > "$dir/cifar/$f.bin"
done
"$client" train --model resnet18gn --data "cifar10:$dir/cifar" --limit 8 --batch 4 --lr 0.05 \
    --json --save "$dir/r.st" > "$dir/r.json"
grep -q '"train_loss":[0-9]' "$dir/r.json" || fail "resnet18gn train: $(cat "$dir/r.json")"
"$client" eval --model resnet18gn --data "cifar10:$dir/cifar" --init "$dir/r.st" --json \
    > "$dir/re.json"
grep -q '"examples":10}' "$dir/re.json" || fail "resnet18gn eval: $(cat "$dir/re.json")"
grep -aq '"layer4.0.shortcut.gn.weight"' "$dir/r.st" || fail "resnet18gn names"

if [ "${FEDOPT_TEST_LONG:-0}" = 1 ]; then
    # Real English: 3,009 training and 741 test sequences of 80 characters from
    # /usr/share/common-licenses (base-files). Predicting the most frequent
    # training character (space) scores 0.172 on the test split; one epoch of
    # the paper's setting (batch 4, client lr 1: 752 steps) reaches 0.315 on
    # 1 thread (deterministic), and must reach 0.30.
    texts=/usr/share/common-licenses
    "$client" train --model charlstm --data "text:$texts" --epochs 1 --batch 4 --lr 1 --json \
        > "$dir/long.json"
    cat "$dir/long.json"
    acc=$(tail -1 "$dir/long.json" | sed 's/.*"test_accuracy":\([^,]*\),.*/\1/')
    awk -v a="$acc" 'BEGIN { exit !(a >= 0.30) }' || fail "charlstm reached only $acc (unigram 0.172)"
fi
echo "issue-4 models via the CLI: ok"
