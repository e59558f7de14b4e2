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
# The protocol 1.1 clients among them get an UpdateResult for every answer,
# accepted (with its weight) or refused with its ResultReason; the 1.0 ones get
# none. Then the example cap of a client whose Hello declared 0 examples, in
# an update and an evaluation answer alike: max_client_examples or nothing.
build=${1:-build}
. tests/integration/server_lib.sh
make_pki a b c d e f g h i p q r

"$srv" run --help >"$work/help.txt" || fail "run --help"
for k in fed-eval-every fed-eval-clients fed-eval-deadline fed-eval-max-examples max-steps; do
    grep -q -- "--$k " "$work/help.txt" || fail "run --help lacks --$k"
done

start_server "$work/server.log" --db "$work/f.db" --rounds 3 --clients-per-round 2 --min-clients 9 \
    --round-deadline 20 --heartbeat 1 --server-opt fedavg --server-lr 1 \
    --fed-eval-every 1 --fed-eval-clients 9 --fed-eval-deadline 4
first_port=$port
# a, g, c, d, e, h speak protocol 1.1 and print each UpdateResult; b, f, i are
# 1.0 clients (fl_test_client fails if one is sent an UpdateResult).
client a --reconnect --minor 1 --weight 10 --eval good --eval-acc 0.5 --eval-loss 2 --timeout 60
client b --reconnect --weight 30 --eval good --eval-acc 0.9 --eval-loss 1 --timeout 60
client g --reconnect --minor 1 --weight 20 --eval dup --eval-acc 0.2 --eval-loss 0.5 --timeout 60
client c --reconnect --minor 1 --weight 5 --eval nan --timeout 60
client d --reconnect --minor 1 --weight 5 --eval stale --timeout 60
client e --reconnect --minor 1 --weight 5 --eval count --timeout 60
client h --reconnect --minor 1 --weight 5 --eval range --timeout 60
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

# Protocol 1.1: the UpdateResult of every evaluation answer, with its reason.
has() { grep -q "^$1: result eval round $2" "$work/$1.log" || fail "client $1: no 'result eval round $2' ($(grep result "$work/$1.log"))"; }
for r in 1 2 3; do
    has a "$r accepted RESULT_ACCEPTED weight 10: accepted"
    has g "$r accepted RESULT_ACCEPTED weight 20: accepted"
    has g "$r refused RESULT_DUPLICATE weight 0: duplicate"
    has c "$r refused RESULT_BAD_EVAL weight 0: bad loss"
    has d "$((r - 1)) refused RESULT_STALE_ROUND weight 0: stale round"
    has e "$r refused RESULT_BAD_EVAL weight 0: bad example count"
    has h "$r refused RESULT_BAD_EVAL weight 0: bad accuracy"
done
for n in b f i; do
    grep -q "result " "$work/$n.log" && fail "1.0 client $n was sent an UpdateResult"
done
echo "ok: UpdateResult{RESULT_EVAL} for each answer: accepted with its weight, duplicate, stale, bad loss, count and accuracy refused with their reasons; none to 1.0 clients"

# Hello.num_examples = 0 declares nothing: the same cap for an update's weight
# and an evaluation answer's examples. With max_client_examples 8, p (Hello 0,
# 5 examples) counts and q (Hello 0, claims 9) is refused, in the round and in
# the evaluation; without an operator limit p is refused in both, while r
# (Hello 5, 5 examples) counts.
cap_run() { # LOG DB ARGS...
    l=$1 db=$2
    shift 2
    start_server "$work/$l" --db "$work/$db" --rounds 1 --clients-per-round 2 --min-clients 2 --min-reports 1 \
        --round-deadline 10 --heartbeat 1 --server-opt fedavg --server-lr 1 --fed-eval-every 1 --fed-eval-clients 2 \
        --fed-eval-deadline 10 "$@"
}
for n in p q r; do : >"$work/$n.log"; done
cap_run cap8.log cap8.db --max-client-examples 8
client p --minor 1 --hello-examples 0 --weight 5 --eval good --timeout 40
client q --minor 1 --hello-examples 0 --weight 9 --eval good --timeout 40
wait_pid "$server_pid" 40 || fail "server (max_client_examples 8) exited with $?"
wait_pid "$pid_p" 10; wait_pid "$pid_q" 10
has p "1 accepted RESULT_ACCEPTED weight 5"
has q "1 refused RESULT_WEIGHT_CLAIM weight 0: examples beyond the Hello declaration or the cap"
grep -q "^p: result update round 1 accepted RESULT_ACCEPTED weight 5" "$work/p.log" || fail "p's update: $(grep result "$work/p.log")"
grep -q "^q: result update round 1 refused RESULT_WEIGHT_CLAIM" "$work/q.log" || fail "q's update: $(grep result "$work/q.log")"
[ "$(sqlite3 "$work/cap8.db" "SELECT examples || ' ' || clients_reported || ' ' || clients_refused FROM fed_evals")" = "5.0 1 1" ] ||
    fail "cap8 fed_evals: $(sqlite3 "$work/cap8.db" 'SELECT * FROM fed_evals')"
for n in p q r; do : >"$work/$n.log"; done
cap_run cap0.log cap0.db
client p --minor 1 --hello-examples 0 --weight 5 --eval good --timeout 40
client r --minor 1 --weight 5 --eval good --timeout 40
wait_pid "$server_pid" 40 || fail "server (no operator limit) exited with $?"
wait_pid "$pid_p" 10; wait_pid "$pid_r" 10
grep -q "^p: result update round 1 refused RESULT_WEIGHT_CLAIM" "$work/p.log" || fail "p's update: $(grep result "$work/p.log")"
has p "1 refused RESULT_WEIGHT_CLAIM weight 0: examples beyond the Hello declaration or the cap"
has r "1 accepted RESULT_ACCEPTED weight 5"
sqlite3 "$work/cap0.db" "SELECT reason FROM updates WHERE client = 'p'" | grep -q "examples beyond" ||
    fail "cap0: p's update not recorded as a claim refusal"
[ "$(sqlite3 "$work/cap0.db" "SELECT reason FROM fed_eval_results WHERE client = 'p'")" = \
    "examples beyond the Hello declaration or the cap" ] || fail "cap0: p's answer not recorded as a claim refusal"
echo "ok: a Hello of 0 examples: capped by max_client_examples (5 counted, 9 refused) or refused without it, for updates and evaluation answers alike"
echo "ok: federated accuracy 0.6 = (10*0.5 + 30*0.9 + 20*0.2)/60 in all 3 rounds; 4 refused and 2 dropped" \
    "evaluators and a duplicate recorded; stopped evaluations (round 1, last round 3) redone first on --resume"
