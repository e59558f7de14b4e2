#!/bin/sh
# Secure aggregation against lying clients, over real mutual TLS with a real
# fleet of 12 (complete graph, k = 11, threshold t = 7): the first client of
# the partition lies in the protocol (fedopt-client fleet --byzantine-rate
# with a secagg-* attack, client/attack.h) and the server must catch it:
#   secagg-share   a wrong share at unmasking: it fails its dealer's
#                  commitment, is dropped, the liar counted, and the secret
#                  rebuilt from honest shares: the unmasked sum is still
#                  exact;
#   secagg-key     a mask key other than the one it signed: the signature
#                  check against its certificate fails, it is excluded, and
#                  the round goes on without it (exact sum of the others);
#   secagg-replay  its key advertisement sent twice: excluded as a replay.
# A device (fedopt-client run) takes part beside the fleet. And a server cannot be configured into rounds so small that the sum gives
# away one client's update: start-up refuses them.
set -u
# Generous deadlines: a phase ends as soon as every party has answered, so
# they cost nothing on a quiet machine and keep a loaded one from turning
# slow parties into dropouts.
. "$(dirname "$0")/fleet_lib.sh"

K=12
common="--model logreg --clients-per-round $K --min-clients $K --eval-data fmnist --eval-max-examples 500
    --round-deadline 300 --server-opt fedavg --server-lr 1 --client-lr 0.1 --batch-size 20 --max-steps 5
    --secure-aggregation true --secagg-phase-timeout 150 --rounds 1"

# run_attack NAME: one run with client 0 mounting the attack NAME.
run_attack() {
    mkdir -p "$work/$1/srv" "$work/$1/cli"
    rm -f "$work/run.db"
    # shellcheck disable=SC2086
    start_server "$1-server.log" $common --secagg-dump-sums "$work/$1/srv"
    start_fleet "$1-fleet.log" --clients $K --data fmnist --partition iid --jobs 2 --give-up 8 \
        --byzantine-rate 0.05 --attack "$1" --secagg-dump-sums "$work/$1/cli"
    wait_pid "$server_pid" 400
    [ "$rc" -eq 0 ] || fail "$1: server exit status $rc"
    wait_pid "$fleet_pid" 60
    [ "$rc" -eq 0 ] || fail "$1: fleet exit status $rc"
    st=$(sql "SELECT status FROM rounds WHERE round = 1")
    [ "$st" = closed ] || fail "$1: round 1 is '$st', want closed"
    cmp -s "$work/$1/srv/round-1.u32" "$work/$1/cli/round-1.u32" ||
        fail "$1: the unmasked sum is not the honest parties' plain sum"
}

run_attack secagg-share
grep -q "unmasked the sum of 12 inputs .* 1 bad shares from 1 liars" "$work/secagg-share-server.log" ||
    fail "secagg-share: the wrong share was not caught"

run_attack secagg-key
grep -q "sim-0000 excluded: its key advertisement's signature does not verify" "$work/secagg-key-server.log" ||
    fail "secagg-key: the substituted key was not caught"
row=$(sql "SELECT status || ' ' || reason FROM updates WHERE client = 'sim-0000'")
case "$row" in "dropped secagg: its key advertisement's signature"*) ;; *) fail "secagg-key: sim-0000's row: $row" ;; esac
rep=$(sql "SELECT clients_reported FROM rounds WHERE round = 1")
[ "$rep" -eq $((K - 1)) ] || fail "secagg-key: $rep parties in the sum, want $((K - 1))"

run_attack secagg-replay
grep -q "sim-0000 excluded: a second key advertisement (a replay)" "$work/secagg-replay-server.log" ||
    fail "secagg-replay: the replayed advertisement was not caught"

# A device (fedopt-client run, its own certificate) takes part beside 11
# fleet clients: the round sums all 12.
"$srv" certs issue "$work/fleet" dev-a >/dev/null || fail "certs issue"
rm -f "$work/run.db"
# shellcheck disable=SC2086
start_server device-server.log $common
start_fleet device-fleet.log --clients $K --count $((K - 1)) --data fmnist --partition iid --jobs 2 --give-up 8
"$cli" run --server "127.0.0.1:$port" --server-name localhost --ca "$work/fleet/ca.crt" \
    --cert "$work/fleet/clients/dev-a.crt" --key "$work/fleet/clients/dev-a.key" --data fmnist --partition iid \
    --clients $K --client-index $((K - 1)) --threads 1 --once --backoff-max 1 >"$work/device.log" 2>&1 &
dev_pid=$!
pids="$pids $dev_pid"
wait_pid "$server_pid" 400
[ "$rc" -eq 0 ] || fail "device: server exit status $rc"
wait_pid "$dev_pid" 30
[ "$rc" -eq 0 ] || fail "device: fedopt-client run exit status $rc"
rep=$(sql "SELECT clients_reported || ' ' || status FROM rounds WHERE round = 1")
[ "$rep" = "$K closed" ] || fail "device: round 1: $rep, want $K closed"
dev=$(sql "SELECT status FROM updates WHERE client = 'dev-a'")
[ "$dev" = accepted ] || fail "device: dev-a's row is '$dev'"
grep -q "masked input sent" "$work/device.log" || fail "device: no masked input in its log"

# A "secure" round of 2 (or 4) parties would hand a colluding client the
# other's update: the settings refuse it before anything runs.
for k in 2 4; do
    if "$srv" run --listen 127.0.0.1:0 --tls-cert "$work/fleet/server.crt" --tls-key "$work/fleet/server.key" \
        --tls-ca "$work/fleet/ca.crt" --db "$work/small.db" --model logreg --secure-aggregation true \
        --clients-per-round $k --min-clients $k >"$work/small.log" 2>&1; then
        fail "a secure run of $k parties started"
    fi
    grep -q "secure_aggregation: no graph and scale for $k parties" "$work/small.log" ||
        fail "no clear refusal of $k parties: $(cat "$work/small.log")"
done
echo "ok: a wrong share, a substituted key and a replayed advertisement caught; sums exact; a device beside a fleet; tiny rounds refused"
