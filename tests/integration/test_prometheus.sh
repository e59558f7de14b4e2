#!/bin/sh
# The server's and a fleet's metrics as Prometheus sees them: Debian's
# prometheus server scrapes a running federation every second: the server
# (metrics_listen) and fleet A (--metrics-listen), shard 0/2 of a 4-client
# population whose shard 1/2 is fleet B. After a few rounds B stops, the
# server waits for clients (min_clients 4) and A sits idle, so every number
# holds still; then the test asks Prometheus's HTTP API for them and compares
# each with the round log in SQLite: the server's (refused updates by reason
# too), and A's uploads and trained samples (2 local epochs: twice the
# examples its updates carry) against A's clients' rows. Also: A's samples/s
# (rate()) while it trained, a duplicate identity rejected at Hello and a
# failed TLS handshake, each counted by reason, /healthz and /readyz. Skips
# (77) without prometheus or curl.
set -u
command -v prometheus >/dev/null 2>&1 || { echo "skip: no prometheus server (apt-get install prometheus)"; exit 77; }
command -v curl >/dev/null 2>&1 || { echo "skip: no curl"; exit 77; }
. "$(dirname "$0")/fleet_lib.sh"

start_server server.log --model logreg --rounds 200 --clients_per_round 3 --min_clients 4 --min_reports 1 \
    --eval_data fmnist --eval_max_examples 500 --eval_every 1 --round_deadline 30 --server_opt fedavg \
    --server_lr 1 --client_lr 0.1 --batch_size 20 --local_epochs 2 --metrics_listen 127.0.0.1:0 --log-format json
mport=$(sed -n 's/.*metrics served on .*, port \([0-9][0-9]*\).*/\1/p' "$work/server.log" | head -n 1)
[ -n "$mport" ] || fail "no metrics port in the server log"
murl="http://127.0.0.1:$mport"
curl -sf "$murl/healthz" >/dev/null || fail "/healthz"
curl -sf "$murl/readyz" >/dev/null || fail "/readyz not ready while listening"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$murl/nothing")" = 404 ] || fail "unknown path is not 404"

# A plain-text client on the TLS port: one failed handshake.
printf 'GET / HTTP/1.0\r\n\r\n' | curl -s --max-time 3 "telnet://127.0.0.1:$port" >/dev/null 2>&1

# Fleet A (shard 0/2: sim-0000 and sim-0002) with its metrics; the server
# starts no round before B is there too.
fleet_args="--clients 4 --data fmnist --partition iid --jobs 2 --give-up 2 --progress none --log-format=json"
start_fleet fleet-a.log $fleet_args --shard 0/2 --metrics-listen 127.0.0.1:0
fleet_a=$fleet_pid
n=0
aport=""
while [ -z "$aport" ]; do
    n=$((n + 1))
    [ "$n" -gt 300 ] && fail "fleet A did not serve metrics"
    kill -0 "$fleet_a" 2>/dev/null || fail "fleet A exited"
    aport=$(sed -n 's/.*metrics served on .*, port \([0-9][0-9]*\).*/\1/p' "$work/fleet-a.log" | head -n 1)
    [ -n "$aport" ] || sleep 0.1
done
A_CLIENTS="'sim-0000', 'sim-0002'"

# Prometheus on a free loopback port, scraping both every second.
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fedopt
    static_configs:
      - targets: ['127.0.0.1:$mport']
  - job_name: fleet
    static_configs:
      - targets: ['127.0.0.1:$aport']
EOF
ppid=""
for try in 1 2 3 4 5; do
    pport=$(( (($$ * 7 + try * 7919) % 20000) + 30000 ))
    ss -ltn | grep -q ":$pport " && continue
    prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
        --web.listen-address="127.0.0.1:$pport" >"$work/prometheus.log" 2>&1 &
    ppid=$!
    pids="$pids $ppid"
    n=0
    until curl -sf "http://127.0.0.1:$pport/-/ready" >/dev/null 2>&1; do
        n=$((n + 1))
        kill -0 "$ppid" 2>/dev/null || break
        [ "$n" -gt 300 ] && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$pport/-/ready" >/dev/null 2>&1 && break
    kill "$ppid" 2>/dev/null
    ppid=""
done
[ -n "$ppid" ] || fail "prometheus did not start"
api="http://127.0.0.1:$pport/api/v1/query"

# q EXPR: the instant value of EXPR, or "" when Prometheus has none.
q() {
    curl -sf --get "$api" --data-urlencode "query=$1" |
        sed -n 's/.*"value":\[[0-9.e+]*,"\([^"]*\)"\].*/\1/p'
}

# Fleet A's counters are at zero until B joins (min_clients 4): wait for a
# first scrape of A, so the training that follows shows as a rise (on a
# quiet machine three logreg rounds can end before Prometheus's first scrape).
n=0
until [ "$(q 'up{job="fleet"}')" = 1 ]; do
    n=$((n + 1))
    [ "$n" -gt 300 ] && fail "Prometheus did not scrape fleet A in 30 s"
    sleep 0.1
done
# ... and that scrape has the counters at 0 (a counter first served at its
# value after a burst shorter than the scrape interval has no rise to rate()).
[ "$(q fedopt_fleet_samples_total)" = 0 ] ||
    fail "fleet A's fedopt_fleet_samples_total before any training: '$(q fedopt_fleet_samples_total)', want 0"
start_fleet fleet-b.log $fleet_args --shard 1/2
fleet_b=$fleet_pid
n=0
until [ "$(sql "SELECT count(*) FROM rounds" 2>/dev/null)" -ge 3 ] 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -gt 1200 ] && fail "3 rounds not committed in 120 s"
    sleep 0.1
done
kill "$fleet_b"
wait_pid "$fleet_b" 30
# A second connection as sim-0000 while fleet A's sim-0000 is connected:
# rejected at Hello, counted by reason.
"$build/tools/fl_test_client" --port "$port" --ca "$work/fleet/ca.crt" --cert "$work/fleet/clients/sim-0000.crt" \
    --key "$work/fleet/clients/sim-0000.key" >"$work/dup.log" 2>&1 && fail "a duplicate identity was let in"
# Settled: A's two clients alone, the server waiting, A training nothing,
# and Prometheus has scraped that twice.
n=0
until [ "$(q 'fedopt_phase{phase="waiting"}')" = 1 ] && [ "$(q fedopt_clients_connected)" = 2 ] &&
    [ "$(q 'fedopt_fleet_clients{state="ready"}')" = 2 ]; do
    n=$((n + 1))
    [ "$n" -gt 600 ] && fail "server not waiting with fleet A's 2 clients ready (Prometheus: phase $(q 'fedopt_phase{phase="waiting"}'), clients $(q fedopt_clients_connected), A ready $(q 'fedopt_fleet_clients{state="ready"}'))"
    sleep 0.1
done
sleep 2.5
[ "$(q 'up{job="fedopt"}')" = 1 ] || fail "Prometheus says the server is down"
[ "$(q 'up{job="fleet"}')" = 1 ] || fail "Prometheus says fleet A is down"

# same NAME PROMQL SQL [TOL]: Prometheus's value equals the database's (to a
# relative 1e-9, or to TOL, absolute).
checked=0
same() {
    p=$(q "$2")
    s=$(sql "$3")
    [ -n "$p" ] || fail "$1: Prometheus has no value for $2"
    awk -v p="$p" -v s="$s" -v t="${4:-}" 'BEGIN { d = p - s; if (d < 0) d = -d;
        tol = t != "" ? t : 1e-9 * (1 + (s < 0 ? -s : s)); exit !(s != "" && d <= tol) }' ||
        fail "$1: Prometheus $p, database $s"
    echo "  $1: $p"
    checked=$((checked + 1))
}
echo "Prometheus vs the round log:"
same run fedopt_run "SELECT id FROM runs"
same rounds_closed 'fedopt_rounds_total{status="closed"}' "SELECT count(*) FROM rounds WHERE status = 'closed'"
same rounds_abandoned 'fedopt_rounds_total{status="abandoned"}' "SELECT count(*) FROM rounds WHERE status = 'abandoned'"
same round_durations fedopt_round_duration_seconds_count "SELECT count(*) FROM rounds"
# The log stores times to the millisecond: each duration is within 2 ms.
same round_duration_sum fedopt_round_duration_seconds_sum \
    "SELECT sum((julianday(finished_at) - julianday(started_at)) * 86400.0) FROM rounds" \
    "$(sql "SELECT count(*) * 0.002 FROM rounds")"
same selected fedopt_clients_selected_total "SELECT sum(clients_selected) FROM rounds"
same reported fedopt_clients_reported_total "SELECT sum(clients_reported) FROM rounds"
same dropped fedopt_clients_dropped_total "SELECT sum(clients_dropped) FROM rounds"
same accepted 'fedopt_updates_total{status="accepted"}' "SELECT count(*) FROM updates WHERE status = 'accepted'"
same not_accepted 'sum(fedopt_updates_refused_total) or vector(0)' "SELECT count(*) FROM updates WHERE status != 'accepted'"
# ... and by reason (fleet B's clients dropped when it stopped).
sql "SELECT reason FROM updates WHERE status != 'accepted' AND reason NOT GLOB '*[\\\"]*' GROUP BY reason" >"$work/reasons"
while IFS= read -r r; do
    same "refused: $r" "fedopt_updates_refused_total{reason=\"$r\"}" \
        "SELECT count(*) FROM updates WHERE status != 'accepted' AND reason = '$(printf %s "$r" | sed "s/'/''/g")'"
done <"$work/reasons"
same rejected_duplicate 'fedopt_connections_rejected_total{reason="a client with this identity is already connected"}' "SELECT 1"
same bytes_in fedopt_received_bytes_total "SELECT sum(bytes_in) FROM rounds"
same bytes_out fedopt_sent_bytes_total "SELECT sum(bytes_out) FROM rounds"
same eval_accuracy fedopt_eval_accuracy \
    "SELECT eval_accuracy FROM rounds WHERE eval_accuracy IS NOT NULL ORDER BY round DESC LIMIT 1"
same eval_loss fedopt_eval_loss "SELECT eval_loss FROM rounds WHERE eval_loss IS NOT NULL ORDER BY round DESC LIMIT 1"
same train_loss fedopt_train_loss "SELECT train_loss FROM rounds WHERE train_loss IS NOT NULL ORDER BY round DESC LIMIT 1"
same next_round fedopt_round "SELECT max(round) + 1 FROM rounds"
same commits fedopt_commit_seconds_count "SELECT count(*) FROM rounds"
same evaluations fedopt_evaluation_seconds_count "SELECT count(*) FROM rounds WHERE eval_accuracy IS NOT NULL"
same finishes fedopt_finish_seconds_count "SELECT count(*) FROM rounds WHERE status = 'closed'"
# Aggregation is timed per batch of uploads (the mean per update): between
# one and one per accepted update.
agg=$(q fedopt_aggregation_seconds_count)
acc=$(sql "SELECT count(*) FROM updates WHERE status = 'accepted'")
[ -n "$agg" ] && [ "$agg" -ge 1 ] && [ "$agg" -le "$acc" ] || fail "fedopt_aggregation_seconds_count '$agg' for $acc accepted updates"
echo "  aggregation batches: $agg for $acc accepted updates"
echo "fleet A (sim-0000, sim-0002) vs the round log:"
same fleet_uploads fedopt_fleet_uploads_total "SELECT count(*) FROM updates WHERE client IN ($A_CLIENTS)"
# 2 local epochs over each client's whole share: every update's examples twice.
same fleet_samples fedopt_fleet_samples_total "SELECT 2 * sum(num_examples) FROM updates WHERE client IN ($A_CLIENTS)"
same fleet_clients 'sum(fedopt_fleet_clients)' "SELECT 2" # shard 0/2 of 4
same fleet_jobs_busy fedopt_fleet_jobs_busy "SELECT 0"
# samples/s: the highest 15-second rate Prometheus saw while A trained (15 s:
# a loaded machine can delay a scrape of the 1 s interval by seconds).
rate=$(q 'max_over_time(rate(fedopt_fleet_samples_total[15s])[10m:1s])')
tsec=$(q fedopt_fleet_train_seconds_total)
scraped=$(q fedopt_fleet_samples_total)
awk -v r="$rate" -v t="$tsec" 'BEGIN { exit !(r > 0 && t > 0) }' ||
    fail "fleet A's samples/s '$rate' or training seconds '$tsec' is not positive (scraped: $(curl -sf --get "$api" --data-urlencode 'query=fedopt_fleet_samples_total[10m]' | tr -d '\n' | tail -c 600))"
echo "  fleet samples/s (highest 15 s rate): $rate; training job-seconds: $tsec"
tls=$(q 'sum(fedopt_tls_handshake_failures_total)')
[ -n "$tls" ] && [ "$tls" -ge 1 ] || fail "the plain-text connection is not a counted handshake failure ($tls)"
rss=$(q process_resident_memory_bytes)
awk -v r="$rss" 'BEGIN { exit !(r > 1e6) }' || fail "process_resident_memory_bytes '$rss'"
echo "  tls_handshake_failures: $tls, rss: $rss"

kill "$server_pid"
wait_pid "$server_pid" 30
wait_pid "$fleet_a" 30
# What fleet A says of itself when it ends: the samples Prometheus scraped.
said=$(sed -n 's/.* uploads, \([0-9]*\) samples trained in .*/\1/p' "$work/fleet-a.log")
[ -n "$said" ] && [ "$said" = "$scraped" ] || fail "fleet A's summary says '$said' samples, Prometheus scraped '$scraped'"

# --log-format json: every log line of both is one JSON object (the fleet's
# summary on stdout aside); round lines carry the run and the round.
jsonl() { # FILE QUERY: QUERY over table l(line) of FILE's lines
    sqlite3 :memory: '.mode ascii' '.separator "\037" "\n"' 'CREATE TABLE l(line TEXT);' ".import $1 l" '.mode list' "$2"
}
for f in server fleet-a fleet-b; do
    v=$(jsonl "$work/$f.log" "SELECT count(*) || ' ' || coalesce(sum(CASE WHEN json_valid(line) THEN
            json_type(line) = 'object' AND json_extract(line, '$.level') IN ('error', 'warn', 'info', 'debug')
            AND json_type(line, '$.module') = 'text' AND json_type(line, '$.message') = 'text'
            AND json_type(line, '$.time') = 'text' ELSE 0 END), 0) FROM l WHERE line NOT LIKE 'fleet: % clients, %'")
    set -- $v
    [ "$1" -gt 3 ] && [ "$1" = "$2" ] || fail "$f.log: ${2:-?} of ${1:-?} lines are fedopt JSON log objects"
done
r=$(jsonl "$work/server.log" "SELECT json_extract(line, '$.run') || '/' || json_extract(line, '$.round') FROM l
                              WHERE json_valid(line) AND json_extract(line, '$.message') LIKE 'round 3/200 closed%'")
[ "$r" = "1/3" ] || fail "the JSON line of round 3's close carries run/round '$r', not 1/3"
echo "  JSON logs: every line of the server's and the fleets' is an object; round 3's line has run 1, round 3"
echo "ok: $checked metrics scraped by Prometheus equal the round log"
