#!/bin/sh
# A server and a fleet of 20 simulated clients over real mutual TLS on
# loopback: 4 rounds of 10 clients (logreg, Fashion-MNIST, dirichlet:0.3).
# Checks that the run finishes, that central accuracy rises, that every
# update the fleet sent is an accepted row in the database (one per selected
# client, 20 distinct certificate identities seen), and that the fleet stops
# by itself once the server is gone.
set -u
. "$(dirname "$0")/fleet_lib.sh"

start_server server.log --model logreg --rounds 4 --clients-per-round 10 --min-clients 20 \
    --eval-data fmnist --eval-max-examples 2000 --round-deadline 60 --server-opt fedavg --server-lr 1 \
    --client-lr 0.1 --batch-size 20
start_fleet fleet.log --clients 20 --data fmnist --partition dirichlet:0.3 --jobs 2 --give-up 2

wait_pid "$server_pid" 100
[ "$rc" -eq 0 ] || fail "server exit status $rc"
wait_pid "$fleet_pid" 30
[ "$rc" -eq 0 ] || fail "fleet exit status $rc"

status=$(sql "SELECT status FROM runs")
[ "$status" = finished ] || fail "run status '$status'"
rounds=$(sql "SELECT count(*) FROM rounds WHERE status = 'closed'")
[ "$rounds" -eq 4 ] || fail "$rounds closed rounds, want 4"
first=$(sql "SELECT eval_accuracy FROM rounds WHERE round = 1")
last=$(sql "SELECT eval_accuracy FROM rounds WHERE round = 4")
echo "accuracy: round 1 $first, round 4 $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b > a + 0.03 && b > 0.55) }' ||
    fail "accuracy did not rise: $first -> $last"
# Every selected client delivered, and every delivery is an accepted row.
acc=$(sql "SELECT count(*) FROM updates WHERE status = 'accepted'")
sel=$(sql "SELECT sum(clients_selected) FROM rounds")
rep=$(sql "SELECT sum(clients_reported) FROM rounds")
[ "$acc" -eq 40 ] && [ "$sel" -eq 40 ] && [ "$rep" -eq 40 ] || fail "accepted $acc, selected $sel, reported $rep (want 40)"
bad=$(sql "SELECT count(*) FROM updates WHERE status != 'accepted' OR num_examples <= 0 OR train_loss IS NULL")
[ "$bad" -eq 0 ] || fail "$bad updates not accepted or without metrics"
names=$(sql "SELECT count(DISTINCT client) FROM updates WHERE client LIKE 'sim-00%'")
[ "$names" -ge 15 ] || fail "only $names distinct client identities in 40 updates"
uploads=$(sed -n 's/.* \([0-9]*\) uploads,.*/\1/p' "$work/fleet.log" | tail -n 1)
[ "$uploads" = 40 ] || fail "fleet counted '$uploads' uploads, database 40"
grep -q "round 4: [0-9]*/20 connected, 10 selected" "$work/fleet.log" || fail "no progress line for round 4"
echo "ok: 4 rounds, 40 accepted updates from $names clients, accuracy $first -> $last"
