#!/bin/sh
# A client written from proto/README.md alone (tests/integration/third_party_client.py: Python's ssl
# and Debian's protobuf, fedopt_pb2 generated here by protoc) against fedopt-server over mutual TLS on
# loopback, so the document cannot drift from the server:
#  A. it joins, checks the tensor table, uploads an f16-encoded delta and gets
#     UpdateResult{accepted, RESULT_ACCEPTED}; its next update claims 1000x the examples
#     its Hello declared and gets UpdateResult{refused, RESULT_WEIGHT_CLAIM}, recorded in
#     the round log with its reason; a 1.0 client (fl_test_client) claiming too much is
#     refused and recorded the same way.
#  B. admission: a connection silent after the handshake gets Error{ETIMEDOUT} at
#     hello_timeout; a 1 MiB frame before Hello gets Error{ETOOBIG}; connections that
#     pin partial frames before Hello beyond frame_budget_mb get Error{ETOOBIG}; the
#     server still serves a round afterwards.
build=${1:-build}
PY=/usr/bin/python3
if ! $PY -c 'import ssl, google.protobuf' 2>/dev/null || ! command -v protoc >/dev/null; then
    echo "SKIP: needs Debian's python3-protobuf and protobuf-compiler (deploy/install-deps.sh installs them)"
    exit 77
fi
. tests/integration/server_lib.sh
make_pki py a
protoc --python_out="$work" -Iproto proto/fedopt.proto || fail "protoc"
py() { n=$1; shift; $PY tests/integration/third_party_client.py "$work" 127.0.0.1 "$port" "$pki/ca.crt" \
    "$pki/clients/$n.crt" "$pki/clients/$n.key" "$@"; }

# --- A ------------------------------------------------------------------------
start_server "$work/server.log" --db "$work/a.db" --rounds 2 --clients-per-round 1 --min-clients 1 \
    --round-deadline 3 --heartbeat 1 --update-codec f16
py py join 600 1 overclaim >"$work/py.log" 2>&1 || fail "third-party client: $(cat "$work/py.log")"
cat "$work/py.log"
grep -q 'UpdateResult: round 1 accepted RESULT_ACCEPTED (code OK: added to the round' "$work/py.log" || fail "no accepted UpdateResult"
grep -q 'UpdateResult: round 2 refused RESULT_WEIGHT_CLAIM' "$work/py.log" || fail "no WEIGHT_CLAIM refusal"
grep -q "offer: round 1, logreg, 7850 params: fc.weight\[10, 784\], fc.bias\[10\]; codec CODEC_F16" "$work/py.log" ||
    fail "offer without the table or the codec"
wait_pid "$server_pid" 20 || fail "server A exited with $?"
"$srv" updates "$work/a.db" 1 2 >"$work/updates.txt" || fail "updates command"
grep -q "refused *examples beyond" "$work/updates.txt" || fail "claim not recorded: $(cat "$work/updates.txt")"
echo "A: third-party client: accepted f16 update, over-claim refused with RESULT_WEIGHT_CLAIM and recorded"

# The same rule for a 1.0 client (no UpdateResult: it reads the log), and uniform weighting ignores the claim.
start_server "$work/server-v1.log" --db "$work/v1.db" --rounds 1 --clients-per-round 1 --min-clients 1 \
    --round-deadline 3 --heartbeat 1
client a --mode overclaim --weight 5 --timeout 10
wait_pid "$server_pid" 20 || fail "server v1 exited with $?"
"$srv" updates "$work/v1.db" 1 1 | grep -q "refused *examples beyond" || fail "1.0 over-claim not refused"
start_server "$work/server-u.log" --db "$work/u.db" --rounds 1 --clients-per-round 1 --min-clients 1 \
    --round-deadline 3 --heartbeat 1 --weighting uniform
client a --mode overclaim --weight 5 --timeout 10
wait_pid "$server_pid" 20 || fail "server uniform exited with $?"
"$srv" updates "$work/u.db" 1 1 | grep -q "accepted" || fail "uniform weighting refused a claim it ignores"
echo "A: 1.0 client: over-claim refused under examples weighting, ignored under uniform"

# --- B ------------------------------------------------------------------------
start_server "$work/server-b.log" --db "$work/b.db" --rounds 1 --clients-per-round 1 --min-clients 1 \
    --round-deadline 5 --heartbeat 1 --hello-timeout 1 --frame-budget-mb 1
py a silent >"$work/silent.log" 2>&1 || fail "silent connection: $(cat "$work/silent.log")"
grep -q "ETIMEDOUT" "$work/silent.log" || fail "silent: $(cat "$work/silent.log")"
py a bigframe >"$work/big.log" 2>&1 || fail "1 MiB frame before Hello: $(cat "$work/big.log")"
grep -q "ETOOBIG: frame of 1048576 bytes exceeds the limit of 65536" "$work/big.log" || fail "big: $(cat "$work/big.log")"
grep -q "no Hello within 1000 ms" "$work/server-b.log" || fail "Hello deadline not logged"
kill -TERM "$server_pid"
wait_pid "$server_pid" 10 || fail "server B1 exited with $?"
# A Hello deadline and a silence limit (3 heartbeats) long enough for all the pinning connections
# to be open at once.
start_server "$work/server-b2.log" --db "$work/b2.db" --rounds 1 --clients-per-round 1 --min-clients 1 \
    --round-deadline 5 --heartbeat 30 --hello-timeout 60 --frame-budget-mb 1
# 1 MiB of budget holds 17 of the 60 KiB frames: of 30 connections, 13 or more are refused.
py a pin 30 >"$work/pin.log" 2>&1 || fail "pin: $(cat "$work/pin.log")"
refused=$(sed -n 's/.* \([0-9]*\) refused with ETOOBIG.*/\1/p' "$work/pin.log")
[ -n "$refused" ] && [ "$refused" -ge 13 ] || fail "budget: $(cat "$work/pin.log")"
grep -q "beyond the budget" "$work/server-b2.log" || fail "budget refusals not logged"
# ... and the server still serves.
py py join 600 1 >"$work/py-b.log" 2>&1 || fail "after the hostile connections: $(cat "$work/py-b.log")"
wait_pid "$server_pid" 20 || fail "server B exited with $?"
echo "B: silent and oversized connections before Hello refused with their codes; $refused of 30 pinning connections refused at the budget; a round still served"
