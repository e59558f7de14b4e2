#!/bin/sh
# Secure aggregation with SecAgg+'s sparse graph on the wire: K fleet
# clients (default 150) over real mutual TLS, one round each, every client
# selected; at the default tolerances (10 % dropout, 5 % corrupt) the graph
# has degree k < K - 1 (78 with threshold 52 at K = 150). Three runs: no
# client leaving, 10 % leaving right after their masked input, and k - t
# leaving (threshold-many: any k - t gone leaves every survivor's seed
# exactly t shares at worst). Each run's unmasked sum must equal the fleet's
# plain sum of the quantized updates word for word. Slow on a small machine
# (each client checks k certificates and signatures, 2k agreements): only
# with FEDOPT_TEST_LONG=1 (make test-long).
#
#   FEDOPT_TEST_LONG=1 [FEDOPT_SECAGG_K=300] [FEDOPT_SECAGG_CASES="0 some max"] \
#       sh tests/integration/test_secagg_scale.sh build
set -u
if [ "${FEDOPT_TEST_LONG:-0}" != 1 ]; then
    echo "skip: K = ${FEDOPT_SECAGG_K:-150} secure rounds (FEDOPT_TEST_LONG=1 runs them)"
    exit 77
fi
. "$(dirname "$0")/fleet_lib.sh"

K=${FEDOPT_SECAGG_K:-150}
cases=${FEDOPT_SECAGG_CASES:-0 some max}

# run_case CASE: one run in $work/CASE; CASE is 0, some (K / 10) or max (k - t).
run_case() {
    name=$1
    mkdir -p "$work/$name/srv" "$work/$name/cli"
    rm -f "$work/run.db"
    start_server "$name-server.log" --model logreg --rounds 1 --clients-per-round "$K" --min-clients "$K" \
        --eval-data fmnist --eval-max-examples 1000 --round-deadline 3600 --server-opt fedavg --server-lr 1 \
        --client-lr 0.1 --batch-size 20 --max-steps 5 --heartbeat 5 --secure-aggregation true \
        --secagg-phase-timeout 1800 --secagg-dump-sums "$work/$name/srv"
    # The run records its plan (degree and threshold for K parties) when it opens.
    n=0 plan=""
    while [ -z "$plan" ]; do
        n=$((n + 1))
        [ "$n" -gt 300 ] && fail "$name: the run records no secagg_plan"
        plan=$(sql "SELECT json_extract(config, '\$.secagg_plan') FROM runs" 2>/dev/null)
        [ -n "$plan" ] || sleep 0.1
    done
    k=$(echo "$plan" | sed -n 's/.*"degree":\([0-9]*\).*/\1/p')
    t=$(echo "$plan" | sed -n 's/.*"threshold":\([0-9]*\).*/\1/p')
    [ -n "$k" ] && [ -n "$t" ] || fail "$name: cannot read k and t from $plan"
    case $name in
    0) leave=0 ;;
    some) leave=$((K / 10)) ;;
    max) leave=$((k - t)) ;;
    *) fail "unknown case $name" ;;
    esac
    # --unmask-drop-rate R: the last round(R * K) clients leave after their masked input.
    rate=$(awk -v l="$leave" -v k="$K" 'BEGIN { printf "%.6f", l / k }')
    start_fleet "$name-fleet.log" --clients "$K" --data fmnist --partition iid --jobs 2 --give-up 10 \
        --unmask-drop-rate "$rate" --secagg-dump-sums "$work/$name/cli"
    wait_pid "$server_pid" 3600
    [ "$rc" -eq 0 ] || fail "$name: server exit status $rc"
    wait_pid "$fleet_pid" 60
    [ "$rc" -eq 0 ] || fail "$name: fleet exit status $rc"
    line=$(grep "secagg: round 1: $K parties" "$work/$name-server.log")
    echo "$line" | grep -q "(complete)" && fail "$name: the graph is complete at K = $K: $line"
    [ -s "$work/$name/srv/round-1.u32" ] || fail "$name: no unmasked sum"
    cmp -s "$work/$name/srv/round-1.u32" "$work/$name/cli/round-1.u32" ||
        fail "$name: the unmasked sum differs from the plain sum"
    grep -q "unmasked the sum of $K inputs (U1..U4 $K/$K/$K/$((K - leave)) of $K" "$work/$name-server.log" ||
        fail "$name: the log does not show $K inputs with $((K - leave)) revealers"
    echo "ok: K = $K, k = $k, t = $t, $leave left before unmasking: exact sum ($(grep -o 'round 1/1 [^,]*' "$work/$name-server.log"))"
}

for c in $cases; do
    run_case "$c"
done
