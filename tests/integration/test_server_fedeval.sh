#!/bin/sh
# Federated evaluation (fed_eval_every) over real mutual TLS on loopback with
# the protocol test client: after each round's commit the server asks all 9
# connected clients to evaluate the new model. Three answer honestly (10, 30
# and 20 examples; accuracy 0.5, 0.9, 0.2; loss 2, 1, 0.5: the weighted means
# are accuracy 0.6 and loss 1.0), one of them twice; the others answer a NaN
# loss, a stale round, a negative (2^64 - 5) example count or an accuracy of
# 1.5, decline, or never answer. Checked: the metrics in fed_evals and the
# progress lines, every client's row with its reason, the evals admin
# command, and that a stop in the middle of an evaluation is redone first by
# --resume (round 1's before round 2; the last round's, then the run finishes).
build=${1:-build}
. tests/integration/server_lib.sh
make_pki a b c d e f g h i

"$srv" run --help >"$work/help.txt" || fail "run --help"
for k in fed-eval-every fed-eval-clients fed-eval-deadline fed-eval-max-examples max-steps; do
    grep -q -- "--$k " "$work/help.txt" || fail "run --help lacks --$k"
done

start_server "$work/server.log" --db "$work/f.db" --rounds 3 --clients-per-round 2 --min-clients 9 \
    --round-deadline 20 --heartbeat 1 --server-opt fedavg --server-lr 1 \
    --fed-eval-every 1 --fed-eval-clients 9 --fed-eval-deadline 4
first_port=$port
client a --reconnect --weight 10 --eval good --eval-acc 0.5 --eval-loss 2 --timeout 60
client b --reconnect --weight 30 --eval good --eval-acc 0.9 --eval-loss 1 --timeout 60
client g --reconnect --weight 20 --eval dup --eval-acc 0.2 --eval-loss 0.5 --timeout 60
client c --reconnect --weight 5 --eval nan --timeout 60
client d --reconnect --weight 5 --eval stale --timeout 60
client e --reconnect --weight 5 --eval count --timeout 60
client h --reconnect --weight 5 --eval range --timeout 60
client i --reconnect --weight 5 --eval decline --timeout 60
client f --reconnect --weight 5 --eval none --timeout 60

# Stop the server while round 1's evaluation waits for f (its deadline is 4 s).
wait_log "$work/a.log" 'evaluated round 1' 30 || fail "no evaluation request reached client a"
kill -TERM "$server_pid"
wait_pid "$server_pid" 20 || fail "server exited with $? after SIGTERM"
grep -q 'federated evaluation aborted by the stop' "$work/server.log" || fail "evaluation not aborted by the stop"
[ "$(sqlite3 "$work/f.db" 'SELECT count(*) FROM fed_evals')" -eq 0 ] || fail "an aborted evaluation was recorded"

# resume LOG: the same server, --resume yes, on the same port.
resume() {
    : >"$work/$1"
    "$srv" run --listen "127.0.0.1:$first_port" --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" \
        --tls-ca "$pki/ca.crt" --model logreg --db "$work/f.db" --resume yes --rounds 3 --clients-per-round 2 \
        --min-clients 9 --round-deadline 20 --heartbeat 1 --server-opt fedavg --server-lr 1 \
        --fed-eval-every 1 --fed-eval-clients 9 --fed-eval-deadline 4 >>"$work/$1" 2>&1 &
    server_pid=$!
    pids="$pids $server_pid"
    server_log=$work/$1
}

# --resume evaluates round 1's model before round 2; stopped again during the
# evaluation of round 3 (the last), the next --resume evaluates it and finishes.
resume server2.log
wait_log "$work/a.log" 'evaluated round 3' 30 || fail "no evaluation request of round 3 reached client a"
kill -TERM "$server_pid"
wait_pid "$server_pid" 20 || fail "resumed server exited with $? after SIGTERM"
grep -q "round 1's federated evaluation is missing: it comes first" "$work/server2.log" || fail "no redo of round 1"
[ "$(sqlite3 "$work/f.db" 'SELECT status FROM runs')" = stopped ] || fail "run not stopped after the second SIGTERM"
resume server3.log
wait_pid "$server_pid" 60 || fail "resumed server exited with $?"
grep -q "round 3's federated evaluation is missing: it comes first" "$work/server3.log" || fail "no redo of round 3"
[ "$(sqlite3 "$work/f.db" 'SELECT status FROM runs')" = finished ] || fail "run not finished"
for n in a b c d e f g h i; do
    eval "p=\$pid_$n"
    wait_pid "$p" 20 || fail "client $n: status $? ($(tail -n 3 "$work/$n.log"))"
done

q() { sqlite3 "$work/f.db" "$1"; }
[ "$(q "SELECT group_concat(round) FROM (SELECT round FROM fed_evals ORDER BY round)")" = "1,2,3" ] ||
    fail "fed_evals rounds: $(q 'SELECT * FROM fed_evals')"
bad=$(q "SELECT count(*) FROM fed_evals WHERE clients_selected != 9 OR clients_reported != 3
         OR clients_refused != 4 OR clients_dropped != 2 OR examples != 60
         OR abs(accuracy - 0.6) > 1e-12 OR abs(loss - 1.0) > 1e-12")
[ "$bad" -eq 0 ] || fail "fed_evals rows: $(q 'SELECT * FROM fed_evals')"
for r in 1 2 3; do
    got=$(q "SELECT group_concat(client || ':' || status || ':' || coalesce(reason, '-'), ' ') FROM
             (SELECT * FROM fed_eval_results WHERE round = $r ORDER BY client, status)")
    want="a:accepted:- b:accepted:- c:refused:bad loss d:refused:stale round e:refused:bad example count"
    want="$want f:dropped:deadline g:accepted:- g:refused:duplicate h:refused:bad accuracy i:dropped:declined"
    [ "$got" = "$want" ] || fail "round $r results: $got"
done
grep -Eq 'round 1 federated evaluation: fed_loss 1\.0000 fed_acc 0\.6000 \(3/9 clients, 60 examples' \
    "$work/server2.log" || fail "no line for the redone evaluation of round 1"
grep -Eq 'round 2/3 closed: .*; fed_loss 1\.0000 fed_acc 0\.6000 \(3/9 clients, 60 examples' "$work/server2.log" ||
    fail "no federated metrics in round 2's progress line"
grep -Eq 'round 3/3 closed: .*, [0-9.]+ s$' "$work/server2.log" || fail "round 3's progress line not printed at the stop"
grep -Eq 'round 3 federated evaluation: fed_loss 1\.0000 fed_acc 0\.6000 \(3/9 clients, 60 examples' \
    "$work/server3.log" || fail "no line for the redone evaluation of round 3"
"$srv" rounds "$work/f.db" 1 >"$work/rounds.txt" || fail "rounds command"
[ "$(awk 'NR > 2 && $10 == "0.6000"' "$work/rounds.txt" | wc -l)" -eq 3 ] || fail "rounds listing: $(cat "$work/rounds.txt")"
"$srv" evals "$work/f.db" 1 2 >"$work/evals.txt" || fail "evals command"
grep -q '^run 1 round 2: 9 asked, 3 accepted, 4 refused, 2 dropped; 60 examples, loss 1.0000, accuracy 0.6000' \
    "$work/evals.txt" || fail "evals: $(cat "$work/evals.txt")"
grep -Eq '^e +refused +bad example count +184467440737095[0-9]{5} ' "$work/evals.txt" || fail "evals rows: $(cat "$work/evals.txt")"
"$srv" evals "$work/f.db" 1 4 >/dev/null; [ $? -eq 1 ] || fail "evals of a round without one: want exit 1"
echo "ok: federated accuracy 0.6 = (10*0.5 + 30*0.9 + 20*0.2)/60 in all 3 rounds; 4 refused and 2 dropped" \
    "evaluators and a duplicate recorded; stopped evaluations (round 1, last round 3) redone first on --resume"
