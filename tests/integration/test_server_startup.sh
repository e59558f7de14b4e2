#!/bin/sh
# How fedopt-server run starts and how a run ends, in its status:
#  A. A missing CA file and a port in use: the server exits 1 and leaves no
#     run in the database (a missing CA file not even a new database), so a later --resume finds nothing to resume (it
#     does not resume an empty run that a failed start created).
#  B. A run that ends on an error (wait_timeout) is 'failed'; --resume
#     continues it (rounds and checkpoints are whole), and a signal then
#     stops it cleanly: 'stopped', exit 0.
build=${1:-build}
. tests/integration/server_lib.sh
make_pki a

# runs_of DB: the runs table as `fedopt-server runs` prints it, one line per run (no header).
runs_of() { "$srv" runs "$1" | awk '$1 ~ /^[0-9]+$/'; }

# --- A: failed starts ---------------------------------------------------------
"$srv" run --listen 127.0.0.1:0 --tls_cert "$pki/server.crt" --tls_key "$pki/server.key" \
    --tls_ca "$work/no-such-ca.crt" --model logreg --db "$work/a.db" >"$work/a.log" 2>&1 &
a_pid=$!
pids="$pids $a_pid"
server_log="$work/a.log"
wait_pid "$a_pid" 30; rc=$?
[ $rc -eq 1 ] || fail "missing CA file: exit $rc, want 1"
grep -q 'no-such-ca.crt' "$work/a.log" || fail "missing CA file: the log does not name it"
[ ! -e "$work/a.db" ] || fail "missing CA file created the database $work/a.db"
# --resume now has nothing to resume (it used to resume the empty run 1).
"$srv" run --listen 127.0.0.1:0 --tls_cert "$pki/server.crt" --tls_key "$pki/server.key" \
    --tls_ca "$pki/ca.crt" --model logreg --db "$work/a.db" --resume >"$work/a2.log" 2>&1 &
a_pid=$!
pids="$pids $a_pid"
server_log="$work/a2.log"
wait_pid "$a_pid" 30; rc=$?
[ $rc -eq 1 ] || fail "--resume after a failed start: exit $rc, want 1 (nothing to resume)"
grep -q 'no unfinished run' "$work/a2.log" || fail "--resume after a failed start: $(cat "$work/a2.log")"
[ -z "$(runs_of "$work/a.db")" ] || fail "--resume left a run: $(runs_of "$work/a.db")"
echo "A: a missing CA file exits 1 with no run; --resume then finds nothing to resume"

# A port in use: a first server holds it, a second one on the same port fails.
start_server "$work/b1.log" --db "$work/b1.db" --min_clients 1
held=$port
holder=$server_pid
"$srv" run --listen 127.0.0.1:$held --tls_cert "$pki/server.crt" --tls_key "$pki/server.key" \
    --tls_ca "$pki/ca.crt" --model logreg --db "$work/b2.db" >"$work/b2.log" 2>&1 &
b_pid=$!
pids="$pids $b_pid"
server_log="$work/b2.log"
wait_pid "$b_pid" 30; rc=$?
[ $rc -eq 1 ] || fail "port in use: exit $rc, want 1"
grep -q "cannot listen on 127.0.0.1:$held" "$work/b2.log" || fail "port in use: no clear error"
[ -z "$(runs_of "$work/b2.db")" ] || fail "port in use left a run: $(runs_of "$work/b2.db")"
"$srv" run --listen 127.0.0.1:$held --tls_cert "$pki/server.crt" --tls_key "$pki/server.key" \
    --tls_ca "$pki/ca.crt" --model logreg --db "$work/b2.db" --resume >"$work/b3.log" 2>&1 &
b_pid=$!
pids="$pids $b_pid"
server_log="$work/b3.log"
wait_pid "$b_pid" 30; rc=$?
[ $rc -eq 1 ] || fail "--resume after a port in use: exit $rc, want 1"
grep -q 'no unfinished run' "$work/b3.log" || fail "--resume after a port in use: $(cat "$work/b3.log")"
# The holder's clean stop: SIGTERM, exit 0, its run 'stopped'.
server_log="$work/b1.log"
kill -TERM "$holder"
wait_pid "$holder" 10 || fail "SIGTERM: exit $?, want 0"
runs_of "$work/b1.db" | grep -q '^1 *stopped' || fail "after SIGTERM: $(runs_of "$work/b1.db")"
echo "A: a port in use exits 1 with no run; a server stopped by SIGTERM records 'stopped'"

# --- B: an error ends the run 'failed' ------------------------------------------
start_server "$work/c1.log" --db "$work/c.db" --min_clients 2 --wait_timeout 1
wait_pid "$server_pid" 10; rc=$?
[ $rc -eq 1 ] || fail "wait_timeout: exit $rc, want 1"
grep -q 'gave up after waiting 1 s' "$work/c1.log" || fail "no give-up line"
runs_of "$work/c.db" | grep -q '^1 *failed' || fail "after an error: $(runs_of "$work/c.db"), want failed"
# A failed run is resumable; a signal then stops it cleanly.
start_server "$work/c2.log" --db "$work/c.db" --min_clients 2 --resume
# The listening line comes before the run is opened: wait for the resume.
wait_log "$work/c2.log" 'resumed run 1 at round 1 from the checkpoint of round 0' 30 ||
    fail "no resume of run 1"
runs_of "$work/c.db" | grep -q '^1 *running' || fail "resumed: $(runs_of "$work/c.db"), want running"
kill -TERM "$server_pid"
wait_pid "$server_pid" 10 || fail "SIGTERM after the resume: exit $?, want 0"
runs_of "$work/c.db" | grep -q '^1 *stopped' || fail "after SIGTERM: $(runs_of "$work/c.db"), want stopped"
[ "$(runs_of "$work/c.db" | wc -l)" -eq 1 ] || fail "want one run: $(runs_of "$work/c.db")"
echo "B: an error exit records 'failed', --resume continues it, SIGTERM records 'stopped'"
