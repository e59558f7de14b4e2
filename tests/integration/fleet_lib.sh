# Shared helpers for the client/fleet integration tests (sourced, not run).
# Sets up a scratch directory with a fleet CA, picks a free loopback port, and
# starts/stops a server and fleets whose pids are remembered so the EXIT trap
# ends exactly the processes the test started.
build=${1:-build}
srv=$build/fedopt-server
cli=$build/fedopt-client
work=$(mktemp -d /tmp/fedopt-test.XXXXXX)
pids=""

cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    if [ "${keep:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f (tail)"; tail -n 25 "$f"; }; done
    exit 1
}

"$srv" certs init "$work/fleet" >/dev/null || fail "certs init"
port=0

# start_server LOG ARGS...: the server on 127.0.0.1:$port with the fleet's
# certificates (LOG: a new name per start). The first start takes port 0 (the kernel picks a free one)
# and reads the port back from the server's log; restarts reuse it.
start_server() {
    log=$1
    shift
    : >"$work/$log"
    "$srv" run --listen "127.0.0.1:$port" --tls-cert "$work/fleet/server.crt" --tls-key "$work/fleet/server.key" \
        --tls-ca "$work/fleet/ca.crt" --db "$work/run.db" --heartbeat 1 "$@" >"$work/$log" 2>&1 &
    server_pid=$!
    pids="$pids $server_pid"
    n=0
    while ! grep -q "listening on" "$work/$log"; do
        n=$((n + 1))
        [ "$n" -gt 300 ] && fail "server did not start"
        kill -0 "$server_pid" 2>/dev/null || fail "server exited at start"
        sleep 0.1
    done
    port=$(sed -n 's/.*listening on .* port \([0-9][0-9]*\).*/\1/p' "$work/$log" | head -n 1)
}

# start_fleet LOG ARGS...: a fleet against that server (progress in LOG too).
start_fleet() {
    log=$1
    shift
    "$cli" fleet --server "127.0.0.1:$port" --server-name localhost --certs "$work/fleet" --progress plain \
        --backoff-max 1 "$@" >>"$work/$log" 2>&1 &
    fleet_pid=$!
    pids="$pids $fleet_pid"
}

# wait_pid PID SECONDS: waits for PID to exit, failing after SECONDS; sets $rc.
wait_pid() {
    n=0
    while kill -0 "$1" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -gt $(($2 * 10)) ] && fail "pid $1 still running after $2 s"
        sleep 0.1
    done
    wait "$1"
    rc=$?
}

# sql QUERY: rows of the run database (sqlite3 CLI, from deploy/install-deps.sh).
sql() {
    sqlite3 "$work/run.db" "$1"
}
