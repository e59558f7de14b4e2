#!/bin/sh
# `fedopt-client fleet --shard I/N`: two fleet processes, shards 0/2 and 1/2
# of one 8-client population, against a real server, make the same round as
# one fleet process running all 8: every client selected, and each client's
# update (name, example count, training loss to the last bit) is the same in
# both runs, so the shards kept the partition and the identities. Also the
# flag's refusals, and the fleet's own metrics endpoint.
set -u
. "$(dirname "$0")/fleet_lib.sh"

# Bad shards are usage errors.
for bad in 2/2 0/0 x/2 1 /2 1/; do
    "$cli" fleet --server 127.0.0.1:1 --certs "$work/fleet" --clients 8 --shard "$bad" >/dev/null 2>&1
    [ $? -eq 2 ] || fail "--shard $bad was not refused"
done
"$cli" fleet --server 127.0.0.1:1 --certs "$work/fleet" --clients 8 --first 0 --count 1 --shard 1/2 \
    >"$work/empty.log" 2>&1
[ $? -eq 2 ] && grep -q "has no clients" "$work/empty.log" || fail "an empty shard was not refused"

args="--model logreg --rounds 1 --clients_per_round 8 --min_clients 8 --round_deadline 120 --server_opt fedavg \
    --server_lr 1 --client_lr 0.1 --batch_size 20 --max_steps 20 --seed 3"
fleet_args="--clients 8 --data fmnist --partition dirichlet:0.3 --jobs 1 --give-up 2 --seed 5"
rows="SELECT client || ' ' || num_examples || ' ' || printf('%.17g', train_loss) FROM updates
      WHERE round = 1 AND status = 'accepted' ORDER BY client"

# One process, all 8 clients.
start_server one.log $args
start_fleet fleet-one.log $fleet_args
wait_pid "$server_pid" 120
[ "$rc" -eq 0 ] || fail "server (one fleet) exit status $rc"
wait_pid "$fleet_pid" 30
sql "$rows" >"$work/one.txt"
mv "$work/run.db" "$work/one.db"

# Two shards, each its own process.
start_server two.log $args
start_fleet fleet-s0.log $fleet_args --shard 0/2 --metrics-listen 127.0.0.1:0
s0=$fleet_pid
# The shard's own metrics while it runs: shard 1 starts only after they are
# read, so the round (which needs both shards' clients) cannot end first.
n=0
mport=""
while [ -z "$mport" ]; do
    n=$((n + 1))
    [ "$n" -gt 300 ] && fail "shard 0 did not serve metrics"
    mport=$(sed -n 's/.*metrics served on .*, port \([0-9][0-9]*\).*/\1/p' "$work/fleet-s0.log" | head -n 1)
    [ -z "$mport" ] && sleep 0.1
done
n=0
until curl -sf "http://127.0.0.1:$mport/metrics" 2>/dev/null | grep -q '^fedopt_fleet_connects_total [1-9]'; do
    n=$((n + 1))
    [ "$n" -gt 300 ] && fail "shard 0's metrics never counted a connect"
    sleep 0.1
done
curl -sf "http://127.0.0.1:$mport/metrics" >"$work/s0.metrics"
grep -q '^fedopt_fleet_jobs 1$' "$work/s0.metrics" || fail "fedopt_fleet_jobs"
grep -q '^fedopt_fleet_clients{state="' "$work/s0.metrics" || fail "fedopt_fleet_clients"
start_fleet fleet-s1.log $fleet_args --shard 1/2
s1=$fleet_pid
wait_pid "$server_pid" 120
[ "$rc" -eq 0 ] || fail "server (two shards) exit status $rc"
wait_pid "$s0" 30
[ "$rc" -eq 0 ] || fail "shard 0 exit status $rc"
wait_pid "$s1" 30
[ "$rc" -eq 0 ] || fail "shard 1 exit status $rc"
sql "$rows" >"$work/two.txt"

grep -q "4 clients (sim-0000..0006, every 2-th)" "$work/fleet-s0.log" || fail "shard 0 is not the even clients"
grep -q "4 clients (sim-0001..0007, every 2-th)" "$work/fleet-s1.log" || fail "shard 1 is not the odd clients"
[ "$(wc -l <"$work/one.txt")" -eq 8 ] || fail "one fleet: $(wc -l <"$work/one.txt") updates, want 8"
cmp -s "$work/one.txt" "$work/two.txt" || {
    echo "one process:"; cat "$work/one.txt"; echo "two shards:"; cat "$work/two.txt"
    fail "the shards' updates differ from one process's"
}
echo "ok: 2 shards = 1 process, update for update:"
sed 's/^/  /' "$work/two.txt"
