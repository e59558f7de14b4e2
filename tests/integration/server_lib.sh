# Helpers for the fedopt-server integration tests (sourced, not run).
# Expects $build (the build directory). Creates $work, a temporary directory
# with a fleet PKI, and removes it (and every process started with bg) on exit.
set -u
work=$(mktemp -d /tmp/fedopt-srv-test.XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
srv="$build/fedopt-server"
tcl="$build/tools/fl_test_client"
pki="$work/pki"

server_log=/dev/null
fail() { echo "FAIL: $*"; tail -n 30 "$server_log"; exit 1; }

make_pki() { # names...
    "$srv" certs init "$pki" >/dev/null || fail "certs init"
    for n in "$@"; do "$srv" certs issue "$pki" "$n" >/dev/null || fail "certs issue $n"; done
}

# start_server LOG ARGS...: starts `fedopt-server run` on a free loopback port,
# sets $server_pid and $port.
start_server() {
    log=$1; shift
    server_log=$log
    : >"$log"
    "$srv" run --listen 127.0.0.1:0 --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" \
        --tls-ca "$pki/ca.crt" --model logreg "$@" >>"$log" 2>&1 &
    server_pid=$!
    pids="$pids $server_pid"
    port=""
    i=0
    while [ -z "$port" ] && [ $i -lt 100 ]; do
        port=$(sed -n 's/.*listening on 127.0.0.1 port \([0-9]*\).*/\1/p' "$log" | tail -n 1)
        kill -0 "$server_pid" 2>/dev/null || break
        [ -z "$port" ] && sleep 0.1
        i=$((i + 1))
    done
    [ -n "$port" ] || fail "server did not start"
}

# client NAME ARGS...: starts the test client NAME in the background (log in $work/NAME.log).
client() {
    n=$1; shift
    "$tcl" --port "$port" --ca "$pki/ca.crt" --cert "$pki/clients/$n.crt" --key "$pki/clients/$n.key" \
        --name "$n" "$@" >>"$work/$n.log" 2>&1 &
    eval "pid_$n=$!"
    pids="$pids $!"
}

# wait_log FILE PATTERN SECONDS: waits until FILE has a line matching PATTERN;
# returns 1 on timeout.
wait_log() {
    i=0
    until grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt $(($3 * 10)) ] && return 1
        sleep 0.1
    done
    return 0
}

# wait_pid PID SECONDS: waits for a process to end; returns its status (124 on timeout).
wait_pid() {
    i=0
    while kill -0 "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt $(($2 * 10)) ] && return 124
        sleep 0.1
    done
    wait "$1"
}
