#!/bin/sh
# Faults from outside the server (issue 15), each with a real server:
#  - another process holds the database's write lock for longer than SQLite's
#    5 s busy wait: the round's commit waits, logs and retries, and the run
#    finishes (the server used to exit 1);
#  - --resume on a database with a damaged older checkpoint: resumes, and the
#    log names the damaged round; on a database whose pages are damaged:
#    refused, saying so, and `fedopt-server check` exits 1 (it used to resume);
#  - a config file with control bytes: the log quotes them as \xNN;
#  - a file-size limit at start-up (RLIMIT_FSIZE, as a full disk): the server
#    exits 1 naming the operation that failed, instead of dying by SIGXFSZ.
build=${1:-build}
. tests/integration/server_lib.sh
dbt="$build/tools/fl_db_tool"
make_pki a b c

# --- a locked database ---------------------------------------------------------
args="--db $work/l.db --rounds 6 --clients_per_round 3 --min_clients 3 --round_deadline 60 --heartbeat 1"
start_server "$work/server.log" $args
for n in a b c; do client $n --weight 1 --mult 1.25 --delay 0.5 --timeout 90; done
i=0
until "$srv" rounds "$work/l.db" 1 2>/dev/null | grep -Eq '^1 +closed'; do
    i=$((i + 1)); [ $i -gt 400 ] && fail "round 1 never committed"
    sleep 0.05
done
"$dbt" "$work/l.db" lock 8 >"$work/lock.out" 2>&1 || fail "lock tool: $(cat "$work/lock.out")"
for n in a b c; do
    eval "p=\$pid_$n"
    wait_pid "$p" 90 || fail "client $n: status $? ($(tail -n 3 "$work/$n.log"))"
done
wait_pid "$server_pid" 20 || fail "server exited with $? while the database was locked"
grep -q 'locked by another process' "$work/server.log" || fail "no line about the lock"
grep -q 'the lock was released' "$work/server.log" || fail "no line about the lock's release"
"$srv" runs "$work/l.db" | grep -q '^1 *finished' || fail "run not finished"
[ "$("$srv" rounds "$work/l.db" 1 | awk '$2 == "closed"' | wc -l)" -eq 6 ] || fail "want 6 rounds"
echo "locked database: the commit waited for the 8 s lock, the run finished"
grep -m 2 'locked by another process\|lock was released' "$work/server.log"

# --- damaged checkpoints and a damaged file ----------------------------------
args="--db $work/d.db --rounds 8 --clients_per_round 3 --min_clients 3 --round_deadline 60 --heartbeat 1"
for n in a b c; do : >"$work/$n.log"; done
start_server "$work/server2.log" $args
for n in a b c; do client $n --weight 1 --mult 1.25 --delay 0.5 --reconnect --timeout 90; done
i=0
until "$srv" rounds "$work/d.db" 1 2>/dev/null | grep -Eq '^3 +closed'; do
    i=$((i + 1)); [ $i -gt 400 ] && fail "round 3 never committed"
    sleep 0.05
done
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null
"$srv" check "$work/d.db" >"$work/check0.out" 2>&1 || fail "check of a sound database: $(cat "$work/check0.out")"
"$dbt" "$work/d.db" sql "UPDATE checkpoints SET model = substr(model, 1, 40) || x'ff' || substr(model, 42) WHERE round = 1" \
    >/dev/null || fail "damaging round 1"
"$srv" check "$work/d.db" >"$work/check1.out" 2>&1 && fail "check passed a damaged checkpoint"
grep -q 'run 1 round 1: checkpoint damaged (checksum mismatch)' "$work/check1.out" || fail "check: $(cat "$work/check1.out")"
start_server "$work/server3.log" $args --resume --listen 127.0.0.1:$port
grep -q 'run 1 round 1: checkpoint damaged (checksum mismatch)' "$work/server3.log" || fail "resume did not name round 1"
grep -q 'resumed run 1' "$work/server3.log" || fail "an older damaged checkpoint stopped the resume"
for n in a b c; do
    eval "p=\$pid_$n"
    wait_pid "$p" 90 || fail "client $n: status $? ($(tail -n 3 "$work/$n.log"))"
done
wait_pid "$server_pid" 20 || fail "resumed server exited with $?"
echo "an older damaged checkpoint: named at resume and by check, the run finished"
"$dbt" "$work/d.db" smash >/dev/null || fail "smash"
"$srv" check "$work/d.db" >"$work/check2.out" 2>&1 && fail "check passed a smashed file"
grep -q 'the database is damaged' "$work/check2.out" || fail "check: $(cat "$work/check2.out")"
"$dbt" "$work/d.db" sql "UPDATE runs SET status = 'stopped'" >/dev/null 2>&1 || true
: >"$work/server4.log"
"$srv" run --listen 127.0.0.1:0 --tls_cert "$pki/server.crt" --tls_key "$pki/server.key" --tls_ca "$pki/ca.crt" \
    --model logreg $args --resume >"$work/server4.log" 2>&1 && fail "resumed a damaged database"
server_log="$work/server4.log"
grep -q 'the database is damaged\|malformed' "$work/server4.log" || fail "no word of the damage"
echo "a damaged file: resume refused ($(grep -m 1 -o 'refusing to resume[^;]*\|database disk image is malformed' "$work/server4.log"))"

# --- control bytes in a config file -------------------------------------------
printf '[rounds]\nbo\033[2Jgus = 1\007\n' >"$work/bad.ini"
"$srv" run --config "$work/bad.ini" >"$work/cfg.log" 2>&1 && fail "a bad config was accepted"
server_log="$work/cfg.log"
grep -q 'bo\\x1b\[2Jgus' "$work/cfg.log" || fail "the key is not quoted escaped: $(cat -v "$work/cfg.log")"
[ "$(tr -d '\n' <"$work/cfg.log" | tr -d '[:print:]' | wc -c)" -eq 0 ] || fail "raw control bytes in the log"
echo "config: control bytes logged as \\xNN"

# --- a file-size limit at start-up ---------------------------------------------
for lim in 2 16; do
    rm -f "$work/f.db" "$work/f.db-wal" "$work/f.db-shm"
    ( ulimit -f $lim
      exec "$srv" run --listen 127.0.0.1:0 --tls_cert "$pki/server.crt" --tls_key "$pki/server.key" \
          --tls_ca "$pki/ca.crt" --model logreg --db "$work/f.db" --rounds 1 ) >"$work/fsize.log" 2>&1
    st=$?
    server_log="$work/fsize.log"
    [ $st -eq 1 ] || fail "file-size limit $lim: exit status $st (want 1)"
    grep -Eq 'store: .*f.db: (setting WAL mode|creating the schema|creating a run|writing a checkpoint|committing a new run): ' \
        "$work/fsize.log" || fail "file-size limit $lim: the failed operation is not named"
    echo "file-size limit $lim blocks: $(grep -m 1 'store:' "$work/fsize.log" | sed 's/^[^ ]* //')"
done
echo "faults: all handled"
