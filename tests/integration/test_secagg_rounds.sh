#!/bin/sh
# Secure aggregation over real mutual TLS with a real fleet (logreg,
# Fashion-MNIST): every round's unmasked sum must equal, word for word, the
# sum of the quantized updates the fleet's clients masked and sent
# (secagg_dump_sums on the server, --secagg-dump-sums on the fleet, both
# modulo 2^32), with 0, some and threshold-many clients leaving after their
# masked input; one more than the threshold abandons the round, which is
# recorded and never unmasked (no sum, no checkpoint to export). The server
# stores per client only its participation.
#
# K = 20 parties: the graph is complete (k = 19) with threshold t = 11 at the
# default tolerances (10 % dropout, 5 % corrupt), so every secret survives up
# to k - t = 8 parties leaving before unmasking, and 9 is one too many.
# (tests/integration/test_secagg_scale.sh runs K = 200 with SecAgg+'s sparse
# graph under FEDOPT_TEST_LONG=1.)
set -u
# Generous deadlines: a phase ends as soon as every party has answered, so
# they cost nothing on a quiet machine and keep a loaded one from turning
# slow parties into dropouts.
. "$(dirname "$0")/fleet_lib.sh"

K=20
common="--model logreg --clients-per-round $K --min-clients $K --eval-data fmnist --eval-max-examples 1000
    --round-deadline 300 --server-opt fedavg --server-lr 1 --client-lr 0.1 --batch-size 20 --max-steps 10
    --secure-aggregation true --secagg-phase-timeout 150 --secagg-max-weight 100"

# run_case NAME ROUNDS DROP_RATE: one run in $work/NAME (its own database and dump directories).
run_case() {
    name=$1
    mkdir -p "$work/$name/srv" "$work/$name/cli"
    rm -f "$work/run.db"
    # shellcheck disable=SC2086
    start_server "$name-server.log" $common --rounds "$2" --secagg-dump-sums "$work/$name/srv"
    start_fleet "$name-fleet.log" --clients $K --data fmnist --partition iid --jobs 2 --give-up 8 \
        --unmask-drop-rate "$3" --secagg-dump-sums "$work/$name/cli"
    wait_pid "$server_pid" 400
    [ "$rc" -eq 0 ] || fail "$name: server exit status $rc"
    wait_pid "$fleet_pid" 60
    [ "$rc" -eq 0 ] || fail "$name: fleet exit status $rc"
    cp "$work/run.db" "$work/$name/run.db"
}

# same_sums NAME ROUND: the server's unmasked sum is the fleet's plain sum.
same_sums() {
    s="$work/$1/srv/round-$2.u32"
    c="$work/$1/cli/round-$2.u32"
    [ -s "$s" ] || fail "$1: no unmasked sum for round $2"
    [ -s "$c" ] || fail "$1: the fleet summed nothing for round $2"
    cmp -s "$s" "$c" || fail "$1: round $2: the unmasked sum differs from the clients' plain sum"
    # 7,850 logreg parameters + the weight: 7,851 words
    [ "$(wc -c <"$s")" -eq 31404 ] || fail "$1: round $2: the sum has $(wc -c <"$s") bytes, want 31404"
}

# --- no dropouts, two rounds -------------------------------------------------
run_case none 2 0
same_sums none 1
same_sums none 2
cfg=$(sql "SELECT json_extract(config, '\$.secagg_plan') FROM runs")
echo "$cfg" | grep -q '"degree":19' && echo "$cfg" | grep -q '"threshold":11' ||
    fail "the run does not record the round's graph and threshold: $cfg"
closed=$(sql "SELECT count(*) FROM rounds WHERE status = 'closed' AND clients_reported = $K")
[ "$closed" -eq 2 ] || fail "$closed rounds closed with $K reports, want 2"
# K parties at most 100 examples of weight each (secagg_max_weight): the
# unmasked total weight is what the round records.
ex=$(sql "SELECT examples FROM rounds WHERE round = 1")
awk -v e="$ex" 'BEGIN { exit !(e == 2000) }' || fail "round 1 records $ex examples, want 2000 (20 x 100)"
# Nothing of one client: no per-client weight, loss or norm in the store.
leaked=$(sql "SELECT count(*) FROM updates WHERE num_examples IS NOT NULL OR train_loss IS NOT NULL OR
    delta_norm IS NOT NULL OR train_accuracy IS NOT NULL")
[ "$leaked" -eq 0 ] || fail "$leaked update rows carry a client's own numbers"
acc=$(sql "SELECT count(*) FROM updates WHERE status = 'accepted'")
[ "$acc" -eq $((2 * K)) ] || fail "$acc accepted update rows, want $((2 * K))"
a1=$(sql "SELECT eval_accuracy FROM rounds WHERE round = 1")
a2=$(sql "SELECT eval_accuracy FROM rounds WHERE round = 2")
awk -v a="$a1" -v b="$a2" 'BEGIN { exit !(b > 0.5 && a > 0.3) }' || fail "the model did not learn: $a1, $a2"
echo "no dropouts: sums exact in 2 rounds, accuracy $a1 -> $a2"

# --- some parties leave before unmasking (4 of 20) -----------------------------
run_case some 1 0.2
same_sums some 1
grep -q "unmasked the sum of 20 inputs (U1..U4 20/20/20/16" "$work/some-server.log" ||
    fail "some: the log does not show 20 inputs unmasked with 16 revealers"

# --- threshold-many leave (8 of 20: a survivor's seed keeps exactly t = 11 shares) --
run_case threshold 1 0.4
same_sums threshold 1
grep -q "U1..U4 20/20/20/12 of 20" "$work/threshold-server.log" ||
    fail "threshold: the log does not show 12 revealers"

# --- one more than the threshold (9): abandoned, never unmasked ---------------
run_case over 1 0.45
[ ! -e "$work/over/srv/round-1.u32" ] || fail "over: an abandoned round was unmasked"
st=$(sql "SELECT status FROM rounds WHERE round = 1")
[ "$st" = abandoned ] || fail "over: round 1 is '$st', want abandoned"
why=$(sql "SELECT count(*) FROM updates WHERE round = 1 AND status = 'refused' AND reason LIKE 'secure round abandoned%'")
[ "$why" -eq $K ] || fail "over: $why rows say the secure round was abandoned, want $K"
grep -q "too few checked shares to rebuild a secret" "$work/over-server.log" ||
    fail "over: the log does not say why the round was abandoned"
# The round has no model to export: nothing of it left the masks.
if "$srv" export "$work/run.db" 1 1 "$work/over.safetensors" >"$work/export.log" 2>&1; then
    fail "over: an abandoned secure round's model was exported"
fi
echo "ok: secure rounds over TLS with $K fleet clients: exact sums with 0, 4 and 8 leaving; 9 abandoned"
