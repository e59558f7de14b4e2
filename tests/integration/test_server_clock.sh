#!/bin/sh
# The daemon measures deadlines, heartbeat silences and wait_timeout on the
# monotonic clock. Under libfaketime its wall clock runs 50 times too fast
# (the monotonic clock is left alone): a 5 s wait_timeout, a 3 s heartbeat
# silence and a 20 s round deadline would each pass within a real second if
# the daemon timed them on the wall clock. Here clients come after a real
# second and take 1.5 s per round: both rounds close with every update and
# nobody is dropped. The stored times still come from the (fast) wall clock.
build=${1:-build}
. tests/integration/server_lib.sh
lib=""
for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [ -e "$f" ] && lib=$f && break
done
if [ -z "$lib" ]; then
    echo "SKIP: libfaketime is not installed (deploy/install-deps.sh installs it)"
    exit 77
fi
make_pki a b

# Only the server runs under libfaketime. (ASan wants to come first in the
# preload order; faketime only wraps the clock functions.)
asan_was=${ASAN_OPTIONS:-}
export LD_PRELOAD="$lib" FAKETIME="+0 x50" FAKETIME_DONT_FAKE_MONOTONIC=1
export ASAN_OPTIONS="${asan_was:+$asan_was:}verify_asan_link_order=0"
start_server "$work/server.log" --db "$work/c.db" --rounds 2 --clients_per_round 2 --min_clients 2 \
    --wait_timeout 5 --round_deadline 20 --heartbeat 1
unset LD_PRELOAD FAKETIME FAKETIME_DONT_FAKE_MONOTONIC
export ASAN_OPTIONS="$asan_was"
sleep 1
client a --weight 1 --mult 1 --delay 1.5 --timeout 60
client b --weight 1 --mult 2 --delay 1.5 --timeout 60
wait_pid "$server_pid" 60; rc=$?
[ $rc -eq 0 ] || fail "server exited with $rc"
grep -q 'gave up after waiting' "$work/server.log" && fail "wait_timeout ran on the wall clock"
grep -q 'silent for' "$work/server.log" && fail "a heartbeat silence was timed on the wall clock"
"$srv" rounds "$work/c.db" 1 >"$work/rounds.txt"
cat "$work/rounds.txt"
[ "$(grep -Ec '^[12] +closed +2 +2 +0 ' "$work/rounds.txt")" -eq 2 ] || fail "want rounds 1, 2 closed 2/2, none dropped"
# The stored started_at/finished_at are wall-clock: a round of about 1.5 real
# seconds spans well over 20 of the fast wall clock's.
[ "$(awk '$1 ~ /^[12]$/ && $13 + 0 > 20' "$work/rounds.txt" | wc -l)" -eq 2 ] || fail "stored times are not wall-clock"
"$srv" updates "$work/c.db" 1 1 | grep -q dropped && fail "an update was dropped: $("$srv" updates "$work/c.db" 1 1)"
"$srv" runs "$work/c.db" | grep -q '^1 *finished' || fail "run not finished"
echo "a wall clock running 50x fast moved no deadline, silence or wait_timeout"
