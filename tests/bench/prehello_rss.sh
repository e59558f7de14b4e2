#!/bin/sh
# Memory a crowd of connections can pin before Hello: CONNS (default 1000) mutual-TLS connections each
# announce a 60 KiB frame (just under the 64 KiB cap before Hello) and send half of it, then hold on.
# Prints the server's RSS before, while they are held, and how many the partial-frame budget refused,
# for frame_budget_mb 256 (the default) and 16 (BUDGETS="..." picks others). Run by hand (minutes:
# Python makes the handshakes one by one); needs Debian's python3-protobuf
# and protobuf-compiler (skipped without them). Usage: tests/bench/prehello_rss.sh [BUILD] [CONNS]
build=${1:-build}
conns=${2:-1000}
PY=/usr/bin/python3
if ! $PY -c 'import ssl, google.protobuf' 2>/dev/null || ! command -v protoc >/dev/null; then
    echo "prehello_rss: skipped (needs python3-protobuf and protobuf-compiler)"
    exit 0
fi
. tests/integration/server_lib.sh
make_pki a
protoc --python_out="$work" -Iproto proto/fedopt.proto || fail "protoc"
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
for budget in ${BUDGETS:-256 16}; do
    start_server "$work/server-$budget.log" --db "$work/$budget.db" --rounds 1 --min-clients 1 \
        --hello-timeout 3600 --heartbeat 3600 --frame-budget-mb "$budget" --max-connections 4096
    before=$(rss "$server_pid")
    $PY tests/integration/third_party_client.py "$work" 127.0.0.1 "$port" "$pki/ca.crt" "$pki/clients/a.crt" \
        "$pki/clients/a.key" pin "$conns" 4 >"$work/pin.log" 2>&1 &
    pinner=$!
    wait_log "$work/pin.log" "^pin:" 300 || fail "pinning client: $(cat "$work/pin.log")"
    held=$(rss "$server_pid")
    wait "$pinner"
    echo "frame_budget_mb $budget: $(sed -n 's/^pin: //p' "$work/pin.log"); server RSS ${before} KiB before, ${held} KiB while held (+$(((held - before) / 1024)) MiB)"
    kill -TERM "$server_pid"
    wait_pid "$server_pid" 10 >/dev/null
done
