#!/bin/sh
# fedopt-server over real mutual TLS on loopback with the protocol test client:
#  A. FedAvg, lr = 1, three deterministic clients with weights 1, 1, 2 and one
#     upload buffer (uploads arriving together wait, paused, in TCP): every
#     round's new global model equals the weighted mean of the client models
#     bit for bit (each client checks the model it receives next round).
#  B. One round with a client killed mid-upload, a silent one, a stalled one
#     (no heartbeats), and stale, duplicate, wrong-shape and NaN updates: the
#     round closes at its deadline with the good updates, and every update is
#     in the log with its reason; the 1.1 clients among them get an
#     UpdateResult with the matching ResultReason, the 1.0 one none.
#  C. No client ever comes: wait_timeout ends the server with a clear log.
#  D. Over-selection: K = 2 with factor 1.5 selects all 3 clients; the round
#     closes at 2 reports and the slow third is recorded as surplus.
build=${1:-build}
. tests/integration/server_lib.sh
make_pki a b c d e f g h i

# --help lists every setting with its default; a bad flag is a usage error (2), a bad value too.
"$srv" run --help >"$work/help.txt" || fail "run --help"
for k in listen tls-cert db model init eval-data eval-every rounds clients-per-round min-clients min-reports \
    over-selection round-deadline heartbeat client-lr client-lr-schedule local-epochs batch-size server-opt \
    server-lr momentum beta1 beta2 tau initial-accumulator bias-correction weighting seed max-buffered-uploads; do
    grep -q -- "--$k " "$work/help.txt" || fail "run --help lacks --$k"
done
"$srv" run --no-such-setting 1 2>/dev/null; [ $? -eq 2 ] || fail "unknown flag: want exit 2"
"$srv" run --round-deadline soon 2>/dev/null; [ $? -eq 2 ] || fail "bad value: want exit 2"

# --- A ------------------------------------------------------------------------
start_server "$work/server.log" --db "$work/a.db" --rounds 4 --clients-per-round 3 --min-clients 3 \
    --round-deadline 20 --heartbeat 1 --server-opt fedavg --server-lr 1 \
    --eval-data fmnist --eval-every 2 --eval-max-examples 1000 --max-buffered-uploads 1 --log-level debug
exp=1:1.25,1:0.75,2:1.5
client a --weight 1 --mult 1.25 --expect $exp --timeout 30
client b --weight 1 --mult 0.75 --expect $exp --timeout 30
client c --weight 2 --mult 1.5 --expect $exp --timeout 30
for n in a b c; do
    eval "p=\$pid_$n"
    wait_pid "$p" 40 || fail "client $n: status $? ($(tail -n 3 "$work/$n.log"))"
done
wait_pid "$server_pid" 10 || fail "server A exited with $?"
for n in a b c; do
    # Rounds 2, 3 and 4 each check the previous round's mean.
    [ "$(grep -c 'model equals the weighted mean' "$work/$n.log")" -eq 3 ] || fail "client $n: $(cat "$work/$n.log")"
done
"$srv" rounds "$work/a.db" 1 >"$work/rounds.txt" || fail "rounds command"
[ "$(grep -c ' closed .* 3 *3 *0 ' "$work/rounds.txt")" -eq 4 ] || fail "rounds A: $(cat "$work/rounds.txt")"
"$srv" runs "$work/a.db" | grep -q '^1 *finished *logreg *fedavg' || fail "runs A: $("$srv" runs "$work/a.db")"
# Central evaluation every 2 rounds (and after the last): rounds 2 and 4 have a loss and an accuracy in [0, 1].
evals=$(awk 'NR > 2 && $8 != "-" && $9 >= 0 && $9 <= 1 {printf "%s ", $1}' "$work/rounds.txt")
[ "$evals" = "2 4 " ] || fail "evaluated rounds: '$evals' ($(cat "$work/rounds.txt"))"
grep -q 'round 2/4 closed: .* eval_loss [0-9.]* eval_acc 0\.[0-9]*' "$work/server.log" || fail "progress line without eval"
# Each round's last upload completes it: its batch runs the finish in the same pass.
[ "$(grep -c "the finish ran in the last batch's pass" "$work/server.log")" -eq 4 ] ||
    fail "fused finishes: $(grep -c "the finish ran in the last batch's pass" "$work/server.log") of 4 rounds"
echo "A: 4 FedAvg rounds, each model the exact weighted mean of the client models" \
    "($(grep -c 'waits for a buffer' "$work/server.log") uploads waited for the single buffer)"

# export -> --init -> export: the model survives the safetensors round trip bit for bit.
"$srv" export "$work/a.db" 1 "$work/r4.safetensors" >/dev/null || fail "export"
"$srv" export "$work/a.db" 1 2 "$work/r2.safetensors" >/dev/null || fail "export round 2"
cmp -s "$work/r4.safetensors" "$work/r2.safetensors" && fail "rounds 2 and 4 exported the same model"
"$srv" export "$work/a.db" 1 99 "$work/x.safetensors" 2>/dev/null && fail "export of a missing round succeeded"
start_server "$work/server-init.log" --db "$work/a.db" --init "$work/r4.safetensors" --rounds 1 --min-clients 1
wait_log "$work/server-init.log" "initial weights from" 10 || fail "--init not loaded"
kill -TERM "$server_pid"
wait_pid "$server_pid" 10 || fail "SIGTERM while waiting: exit $?"
"$srv" export "$work/a.db" 2 0 "$work/init.safetensors" >/dev/null || fail "export run 2"
cmp "$work/r4.safetensors" "$work/init.safetensors" || fail "--init + export changed the model"
echo "export / --init: the exported model reloads bit for bit"

# --- B ------------------------------------------------------------------------
start_server "$work/server-b.log" --db "$work/b.db" --rounds 1 --clients-per-round 9 --min-clients 9 \
    --min-reports 2 --round-deadline 3 --heartbeat 0.5
# a, e, f, g, h speak protocol 1.1 and print the UpdateResult of each upload;
# b is a 1.0 client (it fails if it is sent one).
client a --mode good --minor 1
client b --mode good
client c --mode die
client d --mode silent
client e --mode stale --minor 1
client f --mode dup --minor 1
client g --mode shape --minor 1
client h --mode nan --minor 1
client i --mode mute
wait_pid "$server_pid" 20 || fail "server B exited with $?"
"$srv" updates "$work/b.db" 1 1 >"$work/updates.txt" || fail "updates command"
cat "$work/updates.txt"
want() { grep -Eq "^$1 +$2 +$3" "$work/updates.txt" || fail "no update row '$1 $2 $3'"; }
want a accepted -
want b accepted -
want f accepted -
want f refused duplicate
want e refused 'stale round'
want g refused 'wrong shape'
want h refused 'non-finite delta'
want c dropped 'disconnected mid-upload'
want d dropped deadline
want i dropped stalled
[ "$(grep -c accepted "$work/updates.txt")" -eq 3 ] || fail "exactly 3 accepted updates expected"
"$srv" rounds "$work/b.db" 1 >"$work/rounds.txt"
grep -Eq '^1 +closed +9 +3 +4 ' "$work/rounds.txt" || fail "round B: $(cat "$work/rounds.txt")"
result() { wait_log "$work/$1.log" "^$1: result update round $2" 5 ||
    fail "client $1: no 'result update round $2' ($(grep result "$work/$1.log"))"; }
result a "1 accepted RESULT_ACCEPTED weight 1: added to the round's aggregate"
result f "1 accepted RESULT_ACCEPTED weight 1"
result f "1 refused RESULT_DUPLICATE weight 0: duplicate"
result e "0 refused RESULT_STALE_ROUND weight 0: stale round"
result g "1 refused RESULT_SHAPE weight 0: wrong shape"
result h "1 refused RESULT_NONFINITE weight 0: non-finite value"
grep -q "result " "$work/b.log" && fail "1.0 client b was sent an UpdateResult"
echo "B: refused and dropped updates recorded with their reasons, and told to 1.1 clients in UpdateResult; the round closed at its deadline"

# --- C: nobody comes: with wait_timeout the server gives up (exit 1), logging what it waits for.
start_server "$work/server-c.log" --db "$work/c.db" --min-clients 2 --wait-timeout 1
wait_pid "$server_pid" 10; rc=$?
[ $rc -eq 1 ] || fail "wait_timeout: exit $rc, want 1"
grep -q 'round 1 waits for clients: 0 connected, 2 needed' "$work/server-c.log" || fail "no waiting line"
grep -q 'gave up after waiting 1 s' "$work/server-c.log" || fail "no give-up line"
echo "C: wait_timeout: the server said what it waited for and gave up"

# --- D: over-selection ---------------------------------------------------------
start_server "$work/server-d.log" --db "$work/d.db" --rounds 2 --clients-per-round 2 --over-selection 1.5 \
    --min-clients 3 --round-deadline 20 --heartbeat 1
client a --mode good
client b --mode good
client c --mode good --delay 2
wait_pid "$server_pid" 30 || fail "server D exited with $?"
"$srv" rounds "$work/d.db" 1 >"$work/rounds.txt"
[ "$(grep -Ec '^[12] +closed +3 +2 +0 ' "$work/rounds.txt")" -eq 2 ] || fail "rounds D: $(cat "$work/rounds.txt")"
"$srv" updates "$work/d.db" 1 1 >"$work/updates.txt"
grep -Eq '^c +dropped +surplus' "$work/updates.txt" || fail "no surplus row: $(cat "$work/updates.txt")"
echo "D: over-selection: 3 selected for K = 2, closed at 2 reports, the slow one recorded as surplus"
