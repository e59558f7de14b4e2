#!/bin/sh
# Federated evaluation and the step cap with the real client: a server
# (logreg, 2 rounds of 5 of 10 fleet clients, max_steps 3 at B = 20) asks 4
# clients to evaluate round 2's model on their own data. Checks: every update
# weighs 60 examples (3 steps of 20: the cap was honoured and reported), the
# federated accuracy is in [0, 1] and is the example-weighted mean of the
# clients' answers, and two clients' answers equal what `fedopt-client eval`
# gives on the same client's data with the exported model.
set -u
. "$(dirname "$0")/fleet_lib.sh"

start_server server.log --model logreg --rounds 2 --clients-per-round 5 --min-clients 10 \
    --round-deadline 60 --server-opt fedavg --server-lr 1 --client-lr 0.1 --batch-size 20 --max-steps 3 \
    --fed-eval-every 2 --fed-eval-clients 4 --fed-eval-deadline 60
start_fleet fleet.log --clients 10 --data fmnist --partition dirichlet:0.3 --jobs 2 --give-up 2
wait_pid "$server_pid" 100
[ "$rc" -eq 0 ] || fail "server exit status $rc"
wait_pid "$fleet_pid" 30
[ "$rc" -eq 0 ] || fail "fleet exit status $rc"

[ "$(sql "SELECT count(*) FROM updates WHERE status = 'accepted' AND num_examples = 60")" -eq 10 ] ||
    fail "updates not capped at 3 steps of 20: $(sql 'SELECT client, status, num_examples FROM updates')"
[ "$(sql "SELECT count(*) FROM fed_evals")" -eq 1 ] || fail "want one federated evaluation (round 2)"
row=$(sql "SELECT round, clients_selected, clients_reported, accuracy >= 0 AND accuracy <= 1,
           abs(accuracy - (SELECT sum(num_examples * accuracy) / sum(num_examples) FROM fed_eval_results
                           WHERE status = 'accepted')) < 1e-12 FROM fed_evals")
[ "$row" = "2|4|4|1|1" ] || fail "fed_evals: $(sql 'SELECT * FROM fed_evals') / $(sql 'SELECT * FROM fed_eval_results')"
grep -Eq 'round 2/2 closed: .*; fed_loss [0-9.]+ fed_acc 0\.[0-9]+ \(4/4 clients' "$work/server.log" ||
    fail "no federated metrics in the progress line"

"$srv" export "$work/run.db" 1 2 "$work/r2.safetensors" >/dev/null || fail "export"
checked=0
for name in $(sql "SELECT client FROM fed_eval_results WHERE status = 'accepted' ORDER BY client LIMIT 2"); do
    i=$(echo "$name" | sed 's/^sim-0*\([0-9]\)/\1/')
    js=$("$cli" eval --model logreg --init "$work/r2.safetensors" --data fmnist --partition dirichlet:0.3 \
        --clients 10 --client-index "$i" --split train --json) || fail "eval of client $i"
    acc=$(echo "$js" | sed 's/.*"accuracy":\([^,]*\),.*/\1/')
    n=$(echo "$js" | sed 's/.*"examples":\([0-9]*\).*/\1/')
    fed=$(sql "SELECT accuracy || ' ' || num_examples FROM fed_eval_results WHERE client = '$name'")
    awk -v a="$acc" -v n="$n" -v f="$fed" 'BEGIN { split(f, p, " "); d = a - p[1]; if (d < 0) d = -d;
        exit !(d < 1e-5 && n == p[2] + 0) }' || fail "client $name: fedopt-client eval says $js, the server got $fed"
    checked=$((checked + 1))
done
[ "$checked" -eq 2 ] || fail "compared $checked clients"
echo "ok: 10 updates of 60 examples (max_steps 3); federated accuracy $(sql 'SELECT printf("%.4f", accuracy) FROM fed_evals')" \
    "over 4 clients, two of them equal to fedopt-client eval"
