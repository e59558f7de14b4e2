#!/bin/sh
# The server is killed (SIGKILL, no goodbye) in the middle of a run while a
# fleet of 20 clients is connected, and restarted with --resume yes: the
# clients reconnect by themselves (back-off with jitter) and the run
# completes all its rounds in the same run, from the last checkpoint. The
# clients give up 20 s after the server is gone for good: a restart on a
# loaded machine can take several seconds. The fleet's metrics count the
# reconnections (fedopt_fleet_reconnects_total).
set -u
. "$(dirname "$0")/fleet_lib.sh"

# Rounds enough that the fleet still trains for a while after its clients
# came back: its metrics (updated every second) are scraped then. 16 were
# not enough on a quiet machine (the fleet ended 2 s after the restart).
R=40
settings="--model logreg --rounds $R --clients-per-round 10 --min-clients 20 --eval-data fmnist
    --eval-max-examples 1000 --round-deadline 60 --server-opt fedadam --server-lr 0.01 --client-lr 0.1"
# shellcheck disable=SC2086
start_server server1.log $settings
start_fleet fleet.log --clients 20 --data fmnist --partition iid --jobs 2 --give-up 20 --metrics-listen 127.0.0.1:0
# The fleet's metrics, scraped every 0.2 s until it ends; the first scrape
# in which every client has come back (20 reconnects or more) is kept.
n=0
mport=""
while [ -z "$mport" ]; do
    n=$((n + 1))
    [ "$n" -gt 300 ] && fail "the fleet did not serve metrics"
    mport=$(sed -n 's/.*metrics served on .*, port \([0-9][0-9]*\).*/\1/p' "$work/fleet.log" | head -n 1)
    [ -n "$mport" ] || sleep 0.1
done
if command -v curl >/dev/null 2>&1; then
    (while kill -0 "$fleet_pid" 2>/dev/null; do
        if curl -sf "http://127.0.0.1:$mport/metrics" >"$work/scrape.tmp" 2>/dev/null && [ ! -f "$work/scrape.after" ] &&
            [ "$(sed -n 's/^fedopt_fleet_reconnects_total \([0-9][0-9]*\)$/\1/p' "$work/scrape.tmp")" -ge 20 ] 2>/dev/null; then
            mv "$work/scrape.tmp" "$work/scrape.after"
        fi
        sleep 0.2
    done) &
    pids="$pids $!"
fi

# Let two rounds commit, then kill the server without warning.
n=0
while [ "$(sql "SELECT count(*) FROM rounds" 2>/dev/null || echo 0)" -lt 2 ]; do
    n=$((n + 1))
    [ "$n" -gt 600 ] && fail "no 2 rounds within 60 s"
    sleep 0.1
done
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null
before=$(sql "SELECT count(*) FROM rounds")
echo "killed the server after $before committed rounds"
sleep 1
# shellcheck disable=SC2086
start_server server2.log $settings --resume=yes
grep -q "resumed run 1" "$work/server2.log" || { sleep 1; grep -q "resumed run 1" "$work/server2.log"; } ||
    fail "the restarted server did not resume run 1"

wait_pid "$server_pid" 240
[ "$rc" -eq 0 ] || fail "restarted server exit status $rc"
wait_pid "$fleet_pid" 90
[ "$rc" -eq 0 ] || fail "fleet exit status $rc"

[ "$(sql "SELECT count(*) FROM runs")" -eq 1 ] || fail "more than one run"
[ "$(sql "SELECT status FROM runs")" = finished ] || fail "run not finished"
closed=$(sql "SELECT count(*) FROM rounds WHERE status = 'closed'")
[ "$closed" -eq "$R" ] || fail "$closed closed rounds, want $R"
connects=$(sed -n 's/.*s: \([0-9]*\) connects,.*/\1/p' "$work/fleet.log" | tail -n 1)
[ "$connects" -ge 40 ] || fail "fleet connected $connects times: the 20 clients did not all come back"
grep -q "sim-00.. connected from" "$work/server2.log" || fail "no client reached the restarted server"
# The fleet's reconnects as Prometheus would read them: every client came
# back once at least (min_clients 20), each one's first Welcome is not one.
if command -v curl >/dev/null 2>&1; then
    [ -f "$work/scrape.after" ] || fail "no scrape of the fleet's metrics showed its 20 clients reconnected"
    m() { sed -n "s/^$1 \([0-9][0-9]*\)$/\1/p" "$work/scrape.after"; }
    rec=$(m fedopt_fleet_reconnects_total)
    con=$(m fedopt_fleet_connects_total)
    [ "$((con - rec))" -eq 20 ] || fail "fedopt_fleet_connects_total $con - reconnects $rec is not the 20 first connections"
    [ "$con" -le "$connects" ] || fail "a scrape says $con connects, the fleet's summary only $connects"
    echo "fleet metrics: $rec reconnects of $con connects"
fi
echo "ok: killed after $before rounds, $connects connections, $R rounds closed in one run"
