#!/bin/sh
# Running out of file descriptors (issue 15): under `ulimit -n 48` the server
# serves the clients its descriptors allow, says that it stopped accepting
# (open-file limit reached, with counts) instead of dropping the others
# without a word, does not spin, and accepts the waiting clients as soon as
# connections close: 16 silent clients that give up after 5 s fill the
# descriptors first, 24 good ones wait in the backlog and finish the run.
build=${1:-build}
. tests/integration/server_lib.sh
names=""
i=0
while [ $i -lt 40 ]; do names="$names c$i"; i=$((i + 1)); done
make_pki $names
args="--db $work/fd.db --rounds 3 --clients_per_round 5 --min_clients 5 --round_deadline 10 --heartbeat 1"
log="$work/server.log"
server_log=$log
( ulimit -n 48
  exec "$srv" run --listen 127.0.0.1:0 --tls_cert "$pki/server.crt" --tls_key "$pki/server.key" \
      --tls_ca "$pki/ca.crt" --model logreg $args ) >"$log" 2>&1 &
server_pid=$!
pids="$pids $server_pid"
wait_log "$log" 'listening on 127.0.0.1 port' 20 || fail "server did not start"
port=$(sed -n 's/.*listening on 127.0.0.1 port \([0-9]*\).*/\1/p' "$log" | tail -n 1)
grep -q 'open-file limit' "$log" || fail "no start-up warning about the open-file limit"
k=0
for n in $names; do
    if [ $k -lt 16 ]; then
        client "$n" --mode silent --timeout 5
        [ $k -eq 15 ] && sleep 1
    else
        client "$n" --weight 1 --mult 1.25 --delay 0.1 --timeout 60
    fi
    k=$((k + 1))
done
wait_log "$log" 'open-file limit 48 reached' 30 || fail "no line about reaching the open-file limit"
# While paused (until the silent clients give up) the server is idle, not
# spinning on the listener.
cpu() { awk '{print $14 + $15}' /proc/"$server_pid"/stat 2>/dev/null || echo 0; }
t0=$(cpu)
sleep 1
t1=$(cpu)
echo "server CPU while clients wait: $((t1 - t0)) ticks in 1 s"
[ $((t1 - t0)) -lt 50 ] || fail "the server spins while out of descriptors ($((t1 - t0)) ticks in 1 s)"
wait_pid "$server_pid" 90 || fail "server exited with $?"
grep -q 'accepting again after' "$log" || fail "the server never accepted again after the pause"
"$srv" runs "$work/fd.db" | grep -q '^1 *finished' || fail "run not finished"
good=0
k=0
for n in $names; do
    [ $k -ge 16 ] && grep -q 'done (' "$work/$n.log" && good=$((good + 1))
    k=$((k + 1))
done
echo "$good of the 24 good clients finished with the server's Bye"
[ "$good" -ge 5 ] || fail "too few of the waiting clients were served"
echo "$(grep -c 'open-file limit 48 reached' "$log") log line(s) about the limit:"
grep -m 1 'open-file limit 48 reached' "$log"
grep -m 1 'accepting again after' "$log"
