#!/bin/sh
# A fleet with chaos: clients vanish mid-round (--drop-rate), report late
# (--straggle-rate/--straggle-delay past the round deadline) and send
# corrupt deltas (NaN or one float short, --corrupt-rate). Every round must
# still close at its deadline with the honest clients' updates, and every
# refusal must be recorded in the database with its reason.
set -u
. "$(dirname "$0")/fleet_lib.sh"

start_server server.log --model logreg --rounds 4 --clients-per-round 10 --min-clients 12 --min-reports 1 \
    --round-deadline 3 --server-opt fedavg --server-lr 1 --client-lr 0.1 --seed 3
start_fleet fleet.log --clients 20 --data fmnist --partition iid --jobs 2 --give-up 3 --seed 5 \
    --drop-rate 0.15 --straggle-rate 0.15 --straggle-delay 5 --corrupt-rate 0.25

wait_pid "$server_pid" 100
[ "$rc" -eq 0 ] || fail "server exit status $rc"
wait_pid "$fleet_pid" 30
[ "$rc" -eq 0 ] || fail "fleet exit status $rc"

summary=$(tail -n 1 "$work/fleet.log")
echo "$summary"
num() { echo "$summary" | sed -n "s/.* \([0-9][0-9]*\) $1.*/\1/p"; }
drops=$(num drops)
strag=$(num stragglers)
corr=$(num corrupt)
[ "$drops" -ge 1 ] && [ "$strag" -ge 1 ] && [ "$corr" -ge 1 ] ||
    fail "chaos did not happen: drops $drops stragglers $strag corrupt $corr"

[ "$(sql "SELECT count(*) FROM rounds WHERE status = 'closed' AND clients_reported >= 1")" -eq 4 ] ||
    fail "not every round closed with honest updates: $(sql "SELECT round, status, clients_reported FROM rounds")"
bad=$(sql "SELECT count(*) FROM updates WHERE status = 'refused' AND reason IN ('non-finite delta', 'wrong shape')")
[ "$bad" -ge 1 ] && [ "$bad" -le "$corr" ] || fail "$bad corrupt deltas refused in the database, fleet sent $corr"
acc_bad=$(sql "SELECT count(*) FROM updates WHERE status = 'accepted' AND (num_examples <= 0 OR delta_norm IS NULL)")
[ "$acc_bad" -eq 0 ] || fail "$acc_bad accepted updates without examples or norm"
nulls=$(sql "SELECT count(*) FROM updates WHERE status != 'accepted' AND (reason IS NULL OR reason = '')")
[ "$nulls" -eq 0 ] || fail "$nulls refused/dropped updates without a reason"
# A straggler or a vanished client leaves its round open until the deadline.
late=$(sql "SELECT count(*) FROM rounds WHERE (julianday(finished_at) - julianday(started_at)) * 86400 >= 2.9")
[ "$late" -ge 1 ] || fail "no round waited for its deadline"
lost=$(sql "SELECT count(*) FROM updates WHERE status = 'dropped'")
[ "$lost" -ge 1 ] || fail "no dropped update recorded"
echo "ok: 4 rounds closed; $bad corrupt deltas refused, $lost dropped, $late rounds closed at the deadline"
sql "SELECT status, reason, count(*) FROM updates GROUP BY status, reason"
