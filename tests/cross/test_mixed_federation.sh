#!/bin/sh
# A federation of mixed architectures over mutual TLS on loopback: the native
# server, a native fleet of 3 clients, a native `fedopt-client run` device and
# one emulated `fedopt-client run` device per cross-built architecture
# (qemu-user), 2 rounds of mlp on Fashion-MNIST with every client in every
# round. Checks that both rounds close, that every update (the emulated ones
# by name) is recorded as accepted, and that the native device and each
# emulated one, given the same global model, data share (--client-index) and
# seed, upload deltas of the same norm and report the same training loss
# within TOL (relative; different kernels round differently). The observed
# differences are printed.
# Usage: tests/cross/test_mixed_federation.sh NATIVE_BUILD   (make test-cross ARCH=...)
set -u
. "$(dirname "$0")/../integration/fleet_lib.sh"
. "$(dirname "$0")/cross_lib.sh"
skip_unless_cross
trap 'exit 1' INT TERM
TOL=${FEDOPT_CROSS_TOL:-1e-4}

ndev=0
for w in $cross; do
    a=${w%%:*}
    "$srv" certs issue "$work/fleet" "dev-$a" >/dev/null || fail "certs issue dev-$a"
    ndev=$((ndev + 1))
done
"$srv" certs issue "$work/fleet" dev-native >/dev/null || fail "certs issue dev-native"
total=$((3 + 1 + ndev))

# A generous deadline and heartbeat: an emulated client is slow, on a loaded
# machine slower (with the tests' usual 1 s heartbeat the server dropped one).
start_server server.log --model mlp --rounds 2 --clients_per_round $total --min_clients $total \
    --round_deadline 900 --heartbeat 20 --server_opt fedavg --server_lr 1 --client_lr 0.05 --batch_size 20
start_fleet fleet.log --clients 100 --first 0 --count 3 --data fmnist --partition iid --jobs 1 --give-up 5
# The devices: the same share (index 7 of 100) and so the same training stream.
dev_args="--server 127.0.0.1:$port --server-name localhost --ca $work/fleet/ca.crt --data fmnist \
    --partition iid --clients 100 --client-index 7 --threads 1 --once --backoff-max 1"
# shellcheck disable=SC2086
"$cli" run $dev_args --cert "$work/fleet/clients/dev-native.crt" --key "$work/fleet/clients/dev-native.key" \
    >"$work/dev-native.log" 2>&1 &
devpids=$!
pids="$pids $!"
for w in $cross; do
    a=${w%%:*}
    c=${w#*:}
    # shellcheck disable=SC2086
    emu "$a" "$c" run $dev_args --cert "$work/fleet/clients/dev-$a.crt" --key "$work/fleet/clients/dev-$a.key" \
        >"$work/dev-$a.log" 2>&1 &
    devpids="$devpids $!"
    pids="$pids $!"
done

wait_pid "$server_pid" 1800
[ "$rc" -eq 0 ] || fail "server exit status $rc"
for p in $devpids; do
    wait_pid "$p" 120
    [ "$rc" -eq 0 ] || fail "a device exited with $rc"
done
[ "$(sql "SELECT status FROM runs")" = finished ] || fail "the run did not finish"
[ "$(sql "SELECT count(*) FROM rounds WHERE status = 'closed'")" -eq 2 ] || fail "not 2 closed rounds"
acc=$(sql "SELECT count(*) FROM updates WHERE status = 'accepted'")
[ "$acc" -eq $((2 * total)) ] || fail "$acc accepted updates, want $((2 * total))"
for w in $cross; do
    a=${w%%:*}
    n=$(sql "SELECT count(*) FROM updates WHERE client = 'dev-$a' AND status = 'accepted'")
    [ "$n" -eq 2 ] || fail "dev-$a: $n accepted updates, want 2"
    for r in 1 2; do
        row=$(sql "SELECT e.delta_norm, n.delta_norm, e.train_loss, n.train_loss, e.num_examples
                   FROM updates e JOIN updates n ON n.round = e.round AND n.client = 'dev-native'
                   WHERE e.client = 'dev-$a' AND e.round = $r")
        [ -n "$row" ] || fail "round $r: no pair of updates for dev-$a and dev-native"
        echo "$row" | awk -F'|' -v a="$a" -v r="$r" -v tol="$TOL" '{
            dn = ($1 - $2) / $2; if (dn < 0) dn = -dn
            dl = ($3 - $4) / $4; if (dl < 0) dl = -dl
            printf "round %d: %s delta norm %.9g, native %.9g (rel diff %.3g); train loss rel diff %.3g; %d examples\n",
                r, a, $1, $2, dn, dl, $5
            exit !(dn <= tol && dl <= tol && $5 > 0) }' || fail "round $r: dev-$a disagrees with dev-native beyond $TOL"
    done
done
echo "ok: native server, 3 native fleet clients, native device and $ndev emulated ($cross ), 2 rounds, all accepted"
