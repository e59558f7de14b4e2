#!/bin/sh
# Secure aggregation on the wire against a plain round: a fedopt-server and
# a fleet of K clients over mutual TLS on loopback (logreg, Fashion-MNIST,
# iid, every client selected every round, 10 steps of local training), with
# 10 % of the clients vanishing each round after receiving the model
# (--drop-rate 0.1; in a secure round that is after their key
# advertisement). Plain and secure runs alternate PAIRS times, so both see
# the same machine load; one line per run: the mean wall time of a round
# (the server's round lines), the rounds closed, and the CPU seconds of the
# server and of the whole fleet per round (/usr/bin/time).
#
#   sh tests/bench/secagg_rounds.sh BUILD K ROUNDS [PAIRS]
#
# BENCH_JOBS sets the fleet's training jobs (default 2), BENCH_DROP the
# fraction vanishing each round (default 0.1; 0 for none), BENCH_MODES
# which runs alternate (default "plain secagg"), BENCH_CLIENT another
# fedopt-client to run the fleet with (a before/after comparison). Figures
# go in docs/benchmarks.md with the command, commit, machine, date and load.
set -u
build=$1 K=$2 rounds=$3 pairs=${4:-1}
client=${BENCH_CLIENT:-$build/fedopt-client}
modes=${BENCH_MODES:-plain secagg}
dir=$(mktemp -d /tmp/fedopt-bench.XXXXXX)
spid="" fpid=""
trap '[ -n "$spid$fpid" ] && kill $spid $fpid 2>/dev/null; rm -rf "$dir"' EXIT
"$build/fedopt-server" certs init "$dir/fleet" >/dev/null

run() {
    name=$1
    shift
    rm -f "$dir/b.db"
    /usr/bin/time -f "%U %S" -o "$dir/server.time" "$build/fedopt-server" run --listen 127.0.0.1:0 \
        --tls_cert "$dir/fleet/server.crt" --tls_key "$dir/fleet/server.key" --tls_ca "$dir/fleet/ca.crt" \
        --db "$dir/b.db" --model logreg --server_opt fedavg --server_lr 1 --client_lr 0.1 --batch_size 20 \
        --max_steps 10 --rounds "$rounds" --clients_per_round "$K" --min_clients "$K" --wait_timeout 600 \
        --round_deadline 3600 --eval_data fmnist --eval_max_examples 1000 --heartbeat 5 --seed 1 \
        --secagg_phase_timeout 1800 "$@" >"$dir/server.log" 2>&1 &
    spid=$!
    until grep -q "listening on" "$dir/server.log" 2>/dev/null; do
        kill -0 $spid 2>/dev/null || { tail "$dir/server.log"; exit 1; }
        sleep 0.2
    done
    port=$(sed -n 's/.*listening on .* port \([0-9][0-9]*\).*/\1/p' "$dir/server.log" | head -n 1)
    /usr/bin/time -f "%U %S" -o "$dir/fleet.time" "$client" fleet --server "127.0.0.1:$port" \
        --server-name localhost --certs "$dir/fleet" --clients "$K" --data fmnist --partition iid \
        --jobs "${BENCH_JOBS:-2}" --give-up 10 --backoff-max 1 --drop-rate "${BENCH_DROP:-0.1}" --progress none \
        >"$dir/fleet.log" 2>&1 &
    fpid=$!
    wait $spid
    rc=$?
    wait $fpid 2>/dev/null
    spid="" fpid=""
    secs=$(sed -n 's/.*server: round [0-9]*\/[0-9]* [a-z]*: .*, \([0-9.]*\) s$/\1/p' "$dir/server.log" |
        awk '{ s += $1; n++ } END { if (n) printf "%.2f", s / n; else print "-" }')
    closed=$(sqlite3 "$dir/b.db" "SELECT count(*) FROM rounds WHERE status = 'closed'")
    rep=$(sqlite3 "$dir/b.db" "SELECT printf('%.1f', avg(clients_reported)) FROM rounds")
    scpu=$(awk -v r="$rounds" '{ printf "%.2f", ($1 + $2) / r }' "$dir/server.time")
    fcpu=$(awk -v r="$rounds" '{ printf "%.2f", ($1 + $2) / r }' "$dir/fleet.time")
    acc=$(sqlite3 "$dir/b.db" "SELECT printf('%.4f', eval_accuracy) FROM rounds ORDER BY round DESC LIMIT 1")
    echo "$name | K $K | rounds closed $closed/$rounds | reported $rep | round $secs s | server CPU $scpu s/round | fleet CPU $fcpu s/round | accuracy $acc | server rc $rc"
}

i=0
while [ $i -lt "$pairs" ]; do
    for m in $modes; do
        if [ "$m" = plain ]; then
            run plain
        else
            run secagg --secure_aggregation true --secagg_max_weight 10000
        fi
    done
    i=$((i + 1))
done
