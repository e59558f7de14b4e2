#!/bin/sh
# Runs every test program in BUILD/tests, each in its own process with a time
# limit, and every tests/integration/test_*.sh script; counts the cmocka
# results (a script passes with exit 0 and is skipped with exit 77, the
# automake convention) and ends with one summary line. Exits non-zero if
# anything failed.
# Usage: tests/run-tests.sh BUILD_DIR [SCRIPT_DIR [SCRIPT_BUILD]]
#   FEDOPT_TEST_TIMEOUT: seconds per program (default 600)
#   SCRIPT_DIR: where the test_*.sh scripts are (default tests/integration);
#   SCRIPT_BUILD: the build directory they are given (default BUILD_DIR)
#   FEDOPT_TEST_WRAPPER: a command the test programs run under (make
#   test-cross: qemu-user)
set -u
build=${1:-build}
script_dir=${2:-tests/integration}
script_build=${3:-$build}
wrap=${FEDOPT_TEST_WRAPPER:-}
limit=${FEDOPT_TEST_TIMEOUT:-600}
passed=0
failed=0
skipped=0
failed_names=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT

count() { # $1 = pattern; prints the sum of "[ TAG ] N test(s)" counts
    sed -n "s/^\[  *$1  *\] \([0-9][0-9]*\) test.*/\1/p" "$log" | awk '{s+=$1} END {print s+0}'
}

for t in "$build"/tests/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    case "$t" in *.o|*.d) continue ;; esac
    name=$(basename "$t")
    echo "== $name"
    t0=$(date +%s)
    # shellcheck disable=SC2086 # the wrapper is a command line
    timeout "$limit" $wrap "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    echo "-- $name: $(($(date +%s) - t0)) s"
    p=$(count PASSED)
    f=$(count FAILED)
    k=$(count SKIPPED)
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + k))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        # A crash, a timeout or a non-cmocka failure still counts as a failure.
        failed=$((failed + 1))
        echo "!! $name exited with status $rc"
    fi
    [ "$rc" -ne 0 ] && failed_names="$failed_names $name"
done

for s in "$script_dir"/test_*.sh; do
    [ -f "$s" ] || continue
    name=$(basename "$s" .sh)
    echo "== $name"
    t0=$(date +%s)
    timeout "$limit" sh "$s" "$script_build"
    rc=$?
    echo "-- $name: $(($(date +%s) - t0)) s"
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    elif [ "$rc" -eq 77 ]; then
        skipped=$((skipped + 1))
        echo "-- $name skipped"
    else
        failed=$((failed + 1))
        failed_names="$failed_names $name"
        echo "!! $name failed (status $rc)"
    fi
done

[ -n "$failed_names" ] && echo "failing programs:$failed_names"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
