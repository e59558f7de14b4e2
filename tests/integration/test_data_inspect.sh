#!/bin/sh
# fedopt-client data inspect on Fashion-MNIST: text and JSON output agree with
# the partition's promises (sizes, totals, shards' two labels), and bad specs
# fail with a message instead of a crash.
set -u
build=${1:-build}
bin=$build/fedopt-client
out=$(mktemp)
tmp=$(mktemp -d)
trap 'rm -f "$out"; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; cat "$out"; exit 1; }

"$bin" data inspect --partition dirichlet:0.1 --clients 100 --data-seed 3 >"$out" 2>&1 || fail "dirichlet text"
grep -q '^totals: 60000 examples in 100 clients (0 unused)$' "$out" || fail "dirichlet totals"
grep -q '^sizes: min 600, mean 600.0, max 600$' "$out" || fail "dirichlet sizes"

"$bin" data inspect --partition shards --clients 100 --json >"$out" 2>&1 || fail "shards json"
n=$(grep -o '{"index":[0-9]*,' "$out" | wc -l)
[ "$n" -eq 100 ] || fail "expected 100 clients in JSON, got $n"
grep -q '"totals":{"examples":60000,' "$out" || fail "shards totals"
grep -q '"max_labels_per_client":2,' "$out" || fail "shards: more than 2 labels on a client"
grep -q '"labels":{"0":6000,"1":6000,"2":6000,"3":6000,"4":6000,"5":6000,"6":6000,"7":6000,"8":6000,"9":6000}' "$out" \
    || fail "totals per class"

"$bin" data inspect --split test --json >"$out" 2>&1 || fail "test split"
grep -q '"examples":10000,"classes":10,"label_dim":1,"shape":\[1,28,28\]' "$out" || fail "test header"

# The same spec with a client index: just that client, the same counts.
"$bin" data inspect --partition iid --clients 3400 --client-index 17 --json >"$out" 2>&1 || fail "client index"
n=$(grep -o '{"index":[0-9]*,' "$out" | wc -l)
[ "$n" -eq 1 ] || fail "one client expected"
grep -q '{"index":17,"examples":18,' "$out" || fail "client 17 of 3400 has 18 examples"

# Multi-hot tags (bag of words): two users, 5 posts each, 4 train + 1 test.
mkdir -p "$tmp/posts"
for u in alice bob; do
    for i in 1 2 3 4 5; do printf 'c|go\tsort the list %s\n' "$i"; done >"$tmp/posts/$u"
done
printf 'java\tjust java\n' >>"$tmp/posts/bob"
"$bin" data inspect --data "text:$tmp/posts" --data-view bow --partition natural --json >"$out" 2>&1 \
    || fail "bow inspect"
grep -q '"classes":500,"label_dim":500,"shape":\[10000\]' "$out" || fail "bow header"
grep -q '{"index":0,"name":"alice","examples":4,"labels":{"0":4,"1":4}}' "$out" || fail "alice's tags"
grep -q '{"index":1,"name":"bob","examples":5,"labels":{"0":5,"1":5}}' "$out" || fail "bob's tags"
"$bin" data inspect --data "text:$tmp/posts" --data-view bow >"$out" 2>&1 || fail "bow text"
grep -q '(multi-hot tags)' "$out" || fail "multi-hot not named"

for bad in "--data nosuch" "--partition dirichlet:0 --clients 3" "--partition natural --clients 3" \
           "--data idx:/nonexistent"; do
    # shellcheck disable=SC2086
    if "$bin" data inspect $bad >"$out" 2>&1; then fail "accepted: $bad"; fi
    grep -qi 'error\|bad\|cannot' "$out" || fail "no message for: $bad"
done
echo "data inspect: ok"
