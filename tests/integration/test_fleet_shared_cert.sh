#!/bin/sh
# One certificate serving a whole simulated fleet: the server lists the
# certificate's name in shared_certs and identifies each client as
# CN/hello-name. Checks that 8 clients on one certificate complete 2 rounds
# of 4, every update recorded under a CN/hello-name identity.
set -u
. "$(dirname "$0")/fleet_lib.sh"

"$srv" certs issue "$work/fleet" fleetcert >/dev/null || fail "certs issue"
cert="$work/fleet/clients/fleetcert.crt"
key="$work/fleet/clients/fleetcert.key"
[ -f "$cert" ] && [ -f "$key" ] || fail "issued certificate not found"

start_server server.log --model logreg --rounds 2 --clients-per-round 4 --min-clients 8 \
    --round-deadline 60 --server-opt fedavg --server-lr 1 --client-lr 0.1 --batch-size 20 \
    --shared-certs fleetcert
start_fleet fleet.log --clients 8 --data fmnist --partition iid --jobs 2 --give-up 2 \
    --cert "$cert" --key "$key"
wait_pid "$server_pid" 100
[ "$rc" -eq 0 ] || fail "server exit status $rc"
wait_pid "$fleet_pid" 30
[ "$rc" -eq 0 ] || fail "fleet exit status $rc"
[ "$(sql "SELECT status FROM runs")" = finished ] || fail "run not finished"
acc=$(sql "SELECT count(*) FROM updates WHERE status = 'accepted'")
[ "$acc" -eq 8 ] || fail "$acc accepted updates, want 8"
bad=$(sql "SELECT count(*) FROM updates WHERE client NOT LIKE 'fleetcert/sim-00%'")
[ "$bad" -eq 0 ] || fail "$bad updates with an identity not of the form fleetcert/NAME"
grep -q "shared certificates fleetcert" "$work/server.log" || fail "shared_certs not logged"
echo "ok: 8 clients on one certificate, 2 rounds, identities fleetcert/sim-00NN"
