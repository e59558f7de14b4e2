#!/bin/sh
# A slowloris against the daemon: connections that connect and never finish a
# TLS handshake. With max_handshakes 2, of 5 such connections 3 are closed at
# once: the server says so in its log and counts them in
# fedopt_tls_handshake_failures_total{reason="FL_EAGAIN"}. Once the idle
# connections are gone a real client gets in and finishes its round. Skips
# (77) without curl (which holds the idle connections and scrapes).
command -v curl >/dev/null 2>&1 || { echo "skip: no curl"; exit 77; }
build=${1:-build}
. tests/integration/server_lib.sh
make_pki a
args="--db $work/h.db --rounds 1 --clients_per_round 1 --min_clients 1 --round_deadline 60 --max_handshakes 2"
start_server "$work/server.log" $args --metrics_listen 127.0.0.1:0
mport=$(sed -n 's/.*metrics served on .*, port \([0-9][0-9]*\).*/\1/p' "$work/server.log" | head -n 1)
[ -n "$mport" ] || fail "no metrics port in the server log"
# Five peers that connect and send nothing (curl's telnet with an open,
# silent stdin), one after the other.
mkfifo "$work/silent"
sleep 60 >"$work/silent" &
pids="$pids $!"
idle=""
for i in 1 2 3 4 5; do
    curl -s --max-time 60 "telnet://127.0.0.1:$port" <"$work/silent" >/dev/null 2>&1 &
    idle="$idle $!"
    pids="$pids $!"
    sleep 0.2
done
wait_log "$work/server.log" "handshakes already under way (max_handshakes" 20 || fail "no log line about the cap"
n=0
until curl -sf "http://127.0.0.1:$mport/metrics" | grep -q '^fedopt_tls_handshake_failures_total{reason="FL_EAGAIN"} 3$'; do
    n=$((n + 1))
    [ $n -gt 100 ] && fail "metric: $(curl -sf "http://127.0.0.1:$mport/metrics" | grep handshake_failures)"
    sleep 0.1
done
# The idle ones go; a client gets in and finishes the run.
for p in $idle; do kill "$p" 2>/dev/null; done
client a --weight 1 --mult 1.25 --delay 0.2 --timeout 60
wait_pid "$pid_a" 60 || fail "client a: status $? ($(tail -n 3 "$work/a.log"))"
wait_pid "$server_pid" 20 || fail "server exited with $?"
grep 'max_handshakes' "$work/server.log" | head -n 1
echo "PASS"
