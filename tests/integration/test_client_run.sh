#!/bin/sh
# The device client, `fedopt-client run`: three devices, each loading only
# its own share of Fashion-MNIST by --client-index, serve a server for two
# rounds and exit 0 with --once when the run finishes. Then the clear errors:
# a server certificate from another CA (exit 1 at once, "does not verify"),
# and a server training a model the client's data cannot fit (exit 1, the
# server's refusal and the models the client can train are named).
set -u
. "$(dirname "$0")/fleet_lib.sh"

"$srv" certs issue "$work/fleet" dev-a >/dev/null && "$srv" certs issue "$work/fleet" dev-b >/dev/null &&
    "$srv" certs issue "$work/fleet" dev-c >/dev/null || fail "certs issue"
start_server server.log --model logreg --rounds 2 --clients-per-round 3 --min-clients 3 --round-deadline 60 \
    --server-opt fedavg --server-lr 1 --client-lr 0.1 --eval-data fmnist --eval-max-examples 1000
i=0
cpids=""
for d in dev-a dev-b dev-c; do
    "$cli" run --server "127.0.0.1:$port" --server-name localhost --ca "$work/fleet/ca.crt" \
        --cert "$work/fleet/clients/$d.crt" --key "$work/fleet/clients/$d.key" --data fmnist --partition iid \
        --clients 3 --client-index $i --threads 1 --once --backoff-max 1 >"$work/$d.log" 2>&1 &
    cpids="$cpids $!"
    pids="$pids $!"
    i=$((i + 1))
done
wait_pid "$server_pid" 90
[ "$rc" -eq 0 ] || fail "server exit status $rc"
for p in $cpids; do
    wait_pid "$p" 20
    [ "$rc" -eq 0 ] || fail "a device exited with $rc"
done
[ "$(sql "SELECT count(*) FROM updates WHERE status = 'accepted'")" -eq 6 ] || fail "not 6 accepted updates"
[ "$(sql "SELECT count(DISTINCT client) FROM updates")" -eq 3 ] || fail "not 3 identities"
[ "$(sql "SELECT min(num_examples) FROM updates")" = "20000.0" ] || fail "a device did not train on its 20000 examples"
grep -q "connected to .* as 'dev-a'" "$work/dev-a.log" || fail "dev-a did not log its identity"

# A server certificate signed by another CA: refused by the client, no retry.
"$srv" certs init "$work/other" >/dev/null || fail "certs init other"
start_server server2.log --model logreg --rounds 1 --db "$work/run2.db" --tls-cert "$work/other/server.crt" \
    --tls-key "$work/other/server.key"
"$cli" run --server "127.0.0.1:$port" --server-name localhost --ca "$work/fleet/ca.crt" \
    --cert "$work/fleet/clients/dev-a.crt" --key "$work/fleet/clients/dev-a.key" --data fmnist \
    --clients 3 --client-index 0 --partition iid >"$work/badca.log" 2>&1 &
p=$!
pids="$pids $p"
wait_pid "$p" 30
[ "$rc" -eq 1 ] || fail "wrong CA: exit status $rc, want 1"
grep -q "does not verify against --ca" "$work/badca.log" || fail "wrong CA: no clear error"
kill "$server_pid"
wait "$server_pid" 2>/dev/null

# A server that trains a model Fashion-MNIST cannot feed (bag-of-words tags).
start_server server3.log --model bowlr --rounds 1 --db "$work/run3.db"
"$cli" run --server "127.0.0.1:$port" --server-name localhost --ca "$work/fleet/ca.crt" \
    --cert "$work/fleet/clients/dev-b.crt" --key "$work/fleet/clients/dev-b.key" --data fmnist \
    --clients 3 --client-index 1 --partition iid >"$work/misfit.log" 2>&1 &
p=$!
pids="$pids $p"
wait_pid "$p" 30
[ "$rc" -eq 1 ] || fail "misfit model: exit status $rc, want 1"
grep -q "the server refused this client: .*model" "$work/misfit.log" || fail "misfit model: no clear error"
grep -q "can train: logreg, mlp, cnn" "$work/misfit.log" || fail "misfit model: the trainable models are not named"
kill "$server_pid"
wait "$server_pid" 2>/dev/null
echo "ok: 3 devices x 2 rounds accepted; wrong CA and misfit model refused with clear errors"
