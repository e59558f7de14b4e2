#!/bin/sh
# Heartbeat echo (protocol 1.1): a client's Heartbeat with `echo` set is
# answered at once with the server's own, which is how bench_server's storm
# times the event loop from a connected client. The server runs with an hour's
# heartbeat, so no heartbeat of its own is taken for an answer: the client
# sends 20 echo requests one after the other and needs all 20 answered before
# the run's Bye; a plain client (no echo) gets no answer and still finishes.
build=${1:-build}
. tests/integration/server_lib.sh
make_pki a b
args="--db $work/e.db --rounds 1 --clients_per_round 2 --min_clients 2 --round_deadline 60 --heartbeat 3600"
start_server "$work/server.log" $args
client a --weight 1 --mult 1.25 --delay 0.5 --echo 20 --timeout 60
client b --weight 1 --mult 1.25 --delay 0.5 --timeout 60
for n in a b; do
    eval "p=\$pid_$n"
    wait_pid "$p" 60 || fail "client $n: status $? ($(tail -n 3 "$work/$n.log"))"
done
wait_pid "$server_pid" 20 || fail "server exited with $?"
grep -q '20 of 20 echo heartbeats answered' "$work/a.log" || fail "echoes: $(grep echo "$work/a.log")"
grep -q 'echo heartbeats' "$work/b.log" && fail "client b asked for no echo"
grep 'echo heartbeats' "$work/a.log"
echo "PASS"
