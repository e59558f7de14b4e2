#!/bin/sh
# `make demo`: a real federation on this machine. Throw-away certificates, a
# fedopt-server (FedAdam, cnn, Fashion-MNIST split into 100 clients with
# dirichlet:0.3, 10 clients per round, batch 20, one local epoch, the paper's
# EMNIST-CR learning rates) and a fleet of 100 simulated clients over mutual
# TLS on loopback. Shows each round as it closes; ends with the final
# accuracy, the time and where the database is.
#
# Usage: deploy/demo.sh [BUILD_DIR]      (make demo runs it after building)
# Environment: DEMO_ROUNDS (default 30), DEMO_DIR (default a new /tmp dir),
#              DEMO_JOBS (training jobs, default: the cores),
#              DEMO_EVAL (test examples evaluated per round, default 2000).
set -eu
build=${1:-build}
rounds=${DEMO_ROUNDS:-30}
jobs=${DEMO_JOBS:-$(nproc 2>/dev/null || echo 2)}
eval_n=${DEMO_EVAL:-2000}
dir=${DEMO_DIR:-$(mktemp -d /tmp/fedopt-demo.XXXXXX)}
mkdir -p "$dir"
srv=$build/fedopt-server
cli=$build/fedopt-client
server_pid=""
fleet_pid=""

stop() {
    [ -n "$fleet_pid" ] && kill "$fleet_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    [ -n "$fleet_pid" ] && wait "$fleet_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null || true
}
trap 'stop; echo; echo "demo interrupted; logs in $dir"; exit 130' INT TERM

t0=$(date +%s)
echo "fedopt demo: FedAdam on Fashion-MNIST, cnn (1,199,882 parameters), 100 clients (dirichlet 0.3),"
echo "10 clients per round, batch 20, 1 local epoch, client lr 10^-1.5, server lr 10^-2.5, tau 1e-4,"
echo "$rounds rounds, $jobs training jobs. Everything goes to $dir"
echo

"$srv" certs init "$dir/fleet" >/dev/null
echo "certificates: $dir/fleet (fleet CA, server; the fleet issues one per client)"

# Port 0: the kernel picks a free port; the server's log says which.
"$srv" run --listen 127.0.0.1:0 --tls-cert "$dir/fleet/server.crt" --tls-key "$dir/fleet/server.key" \
    --tls-ca "$dir/fleet/ca.crt" --db "$dir/demo.db" \
    --model cnn --server-opt fedadam --server-lr 0.0031623 --tau 0.0001 \
    --client-lr 0.031623 --batch-size 20 --local-epochs 1 \
    --rounds "$rounds" --clients-per-round 10 --min-clients 100 --wait-timeout 120 --round-deadline 300 \
    --eval-data fmnist --eval-max-examples "$eval_n" --heartbeat 5 --seed 1 \
    >"$dir/server.log" 2>&1 &
server_pid=$!
n=0
until grep -q "listening on" "$dir/server.log" 2>/dev/null; do
    n=$((n + 1))
    if [ "$n" -gt 600 ] || ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server did not start:"
        tail -n 20 "$dir/server.log"
        exit 1
    fi
    sleep 0.1
done
port=$(sed -n 's/.*listening on .* port \([0-9][0-9]*\).*/\1/p' "$dir/server.log" | head -n 1)
echo "server: 127.0.0.1:$port, pid $server_pid, log $dir/server.log"

"$cli" fleet --server "127.0.0.1:$port" --server-name localhost --certs "$dir/fleet" --clients 100 \
    --data fmnist --partition dirichlet:0.3 --jobs "$jobs" --give-up 10 --progress plain \
    >"$dir/fleet.log" 2>&1 &
fleet_pid=$!
echo "fleet:  100 clients, pid $fleet_pid, log $dir/fleet.log"
echo

# Show each round as the server commits it (the database is the truth).
shown=0
show_rounds() {
    last=$(sqlite3 "$dir/demo.db" "SELECT coalesce(max(round), 0) FROM rounds" 2>/dev/null || echo "$shown")
    while [ "$shown" -lt "$last" ]; do
        shown=$((shown + 1))
        sqlite3 -separator ' ' "$dir/demo.db" "SELECT round, status, clients_reported,
            printf('%.4f', coalesce(train_loss, 0)), printf('%.4f', coalesce(eval_loss, 0)),
            printf('%.4f', coalesce(eval_accuracy, 0)),
            printf('%.1f', (julianday(finished_at) - julianday(started_at)) * 86400)
            FROM rounds WHERE round = $shown ORDER BY run_id DESC LIMIT 1" |
            while read -r r st rep tl el ea secs; do
                printf 'round %3d/%d %-9s %2d updates  train loss %s  test loss %s  test accuracy %s  (%s s)\n' \
                    "$r" "$rounds" "$st" "$rep" "$tl" "$el" "$ea" "$secs"
            done
    done
}
while kill -0 "$server_pid" 2>/dev/null; do
    sleep 1
    show_rounds
    if [ "$shown" -eq 0 ]; then
        line=$(grep '^fleet ' "$dir/fleet.log" 2>/dev/null | tail -n 1)
        [ -n "$line" ] && [ -t 1 ] && printf '\r%s\033[K' "$line"
    fi
done
show_rounds
wait "$server_pid" && server_rc=0 || server_rc=$?
server_pid=""
# The clients would wait for the server to come back; the run is over.
kill "$fleet_pid" 2>/dev/null || true
wait "$fleet_pid" 2>/dev/null || true
fleet_pid=""
t1=$(date +%s)

echo
if [ "$server_rc" -ne 0 ] || [ "$(sqlite3 "$dir/demo.db" "SELECT status FROM runs ORDER BY id DESC LIMIT 1")" != finished ]; then
    echo "the run did not finish (server exit status $server_rc); last lines of the server log:"
    tail -n 15 "$dir/server.log"
    exit 1
fi
acc=$(sqlite3 "$dir/demo.db" "SELECT printf('%.2f', 100 * eval_accuracy) FROM rounds WHERE eval_accuracy IS NOT NULL ORDER BY round DESC LIMIT 1")
ups=$(sqlite3 "$dir/demo.db" "SELECT count(*) FROM updates WHERE status = 'accepted'")
echo "final test accuracy: $acc % (on $eval_n Fashion-MNIST test images) after $rounds rounds, $ups client updates"
echo "time: $((t1 - t0)) s"
echo "database: $dir/demo.db"
echo "  $srv rounds $dir/demo.db     # the rounds again"
echo "  sqlite3 $dir/demo.db 'SELECT client, status, train_loss FROM updates LIMIT 10'"
