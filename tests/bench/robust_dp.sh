#!/bin/sh
# The robustness and privacy table of docs/robustness.md: make demo's setting
# (cnn, Fashion-MNIST, 100 clients dirichlet:0.3, 10 per round, FedAdam with
# the demo's rates) run once per configuration, each on a fresh database, and
# one line per run: final central accuracy, for DP epsilon at delta 1e-5, and
# the accepted updates' bytes on the wire per round (for --update_codec runs).
#
#   sh tests/bench/robust_dp.sh BUILD ROUNDS NAME [SERVER FLAGS...] [-- FLEET FLAGS...]
#
# e.g. NAME dp1 with --clip_norm 0.5 --dp_noise_multiplier 1, or NAME krum
# with --aggregator krum:2,6 --min_reports 5 -- --byzantine-rate 0.2 --attack scale:-10
# (krum:F needs min_reports >= F + 3).
# BENCH_JOBS sets the fleet's training jobs (default 2), BENCH_EVAL the
# central evaluation's examples (default 2000).
set -u
build=$1 rounds=$2 name=$3
shift 3
srv_flags=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    srv_flags="$srv_flags $1"
    shift
done
[ $# -gt 0 ] && shift
spid="" fpid=""
dir=$(mktemp -d /tmp/fedopt-bench.XXXXXX)
trap '[ -n "$spid$fpid" ] && kill $spid $fpid 2>/dev/null; rm -rf "$dir"' EXIT
"$build/fedopt-server" certs init "$dir/fleet" >/dev/null
# shellcheck disable=SC2086
"$build/fedopt-server" run --listen 127.0.0.1:0 --tls_cert "$dir/fleet/server.crt" --tls_key "$dir/fleet/server.key" \
    --tls_ca "$dir/fleet/ca.crt" --db "$dir/b.db" \
    --model cnn --server_opt fedadam --server_lr 0.0031623 --tau 0.0001 \
    --client_lr 0.031623 --batch_size 20 --local_epochs 1 \
    --rounds "$rounds" --clients_per_round 10 --min_clients 100 --wait_timeout 300 --round_deadline 900 \
    --eval_data fmnist --eval_max_examples "${BENCH_EVAL:-2000}" --heartbeat 5 --seed 1 $srv_flags \
    >"$dir/server.log" 2>&1 &
spid=$!
until grep -q "listening on" "$dir/server.log" 2>/dev/null; do
    kill -0 $spid 2>/dev/null || { tail "$dir/server.log"; exit 1; }
    sleep 0.2
done
port=$(sed -n 's/.*listening on .* port \([0-9][0-9]*\).*/\1/p' "$dir/server.log" | head -n 1)
"$build/fedopt-client" fleet --server "127.0.0.1:$port" --server-name localhost --certs "$dir/fleet" --clients 100 \
    --data fmnist --partition dirichlet:0.3 --jobs "${BENCH_JOBS:-2}" --give-up 10 --progress plain "$@" \
    >"$dir/fleet.log" 2>&1 &
fpid=$!
t0=$(date +%s)
wait $spid
rc=$?
wait $fpid 2>/dev/null
acc=$(sqlite3 "$dir/b.db" "SELECT printf('%.4f', eval_accuracy) FROM rounds WHERE eval_accuracy IS NOT NULL ORDER BY round DESC LIMIT 1")
n=$(sqlite3 "$dir/b.db" "SELECT count(*) FROM rounds WHERE status = 'closed'")
bpr=$(sqlite3 "$dir/b.db" "SELECT coalesce(sum(bytes), 0) / $rounds FROM updates WHERE status = 'accepted'")
eps=$(sqlite3 "$dir/b.db" "SELECT printf('%.3f', dp_epsilon) FROM round_privacy WHERE dp_epsilon IS NOT NULL ORDER BY round DESC LIMIT 1" 2>/dev/null)
echo "$name | rounds $n | accuracy $acc | epsilon ${eps:--} | update bytes/round $bpr | server rc $rc | $(($(date +%s) - t0)) s | flags:$srv_flags | fleet: $*"
