#!/bin/sh
# One flag convention for both binaries (common/base/cli.h): kebab-case flags,
# each also accepted with underscores and meaning the same; usage texts show
# kebab-case; a usage error is a plain line naming the option and the value
# (no log timestamp or level), a hint line, and exit status 2.
set -u
build=${1:-build}
srv=$build/fedopt-server
cli=$build/fedopt-client
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# usage_error WANT_LINE CMD...: exit 2, stderr is exactly WANT_LINE and the hint.
usage_error() {
    want=$1; shift
    "$@" >"$work/out" 2>"$work/err"
    rc=$?
    [ "$rc" -eq 2 ] || fail "$*: exit $rc, want 2: $(cat "$work/err")"
    [ "$(sed -n 1p "$work/err")" = "$want" ] || fail "$*: first line '$(sed -n 1p "$work/err")', want '$want'"
    sed -n 2p "$work/err" | grep -Eq '^\(fedopt-(server|client) [a-z ]+ --help lists the options\)$' ||
        fail "$*: no hint line: $(cat "$work/err")"
    [ "$(wc -l <"$work/err")" -eq 2 ] || fail "$*: more than the error and the hint: $(cat "$work/err")"
    grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T|ERROR' "$work/err" && fail "$*: a log line: $(cat "$work/err")"
    [ -s "$work/out" ] && fail "$*: wrote to stdout"
    return 0
}

# Errors name the option (in kebab-case, however it was spelled) and the value.
usage_error "fedopt-client: --epochs: 'x' is not an integer" "$cli" train --model logreg --epochs x
usage_error "fedopt-client: --epochs: '0' is out of range [1, 100000]" "$cli" train --model logreg --epochs=0
usage_error "fedopt-client: --weight-decay: 'heavy' is not a number" \
    "$cli" train --model logreg --weight_decay heavy
usage_error "fedopt-client: --log-level: 'loud' is not one of: error, warn, info, debug" "$cli" run --log_level loud
usage_error "fedopt-client: --log-level: 'loud' is not one of: error, warn, info, debug" "$cli" fleet --log-level loud
usage_error "fedopt-client: --client-index: 'x' is not an integer in [0, 4294967295]" "$cli" data inspect --client_index x
usage_error "fedopt-client: --split: 'valid' is not one of: test, train" "$cli" eval --split valid
usage_error "fedopt-client: unknown option --no-such" "$cli" models --no_such
usage_error "fedopt-client: --server, --ca, --cert and --key are required" "$cli" run
usage_error "fedopt-server: --round-deadline: 'soon' is not a number in [0.01, 1e+07]" "$srv" run --round_deadline soon
usage_error "fedopt-server: --round-deadline: 'soon' is not a number in [0.01, 1e+07]" "$srv" run --round-deadline=soon
usage_error "fedopt-server: unknown setting --no-such-setting" "$srv" run --no_such_setting 1
usage_error "fedopt-server: RUN: 'x' is not an integer" "$srv" rounds "$work/none.db" x
usage_error "fedopt-server: missing arguments (wants DB RUN ROUND)" "$srv" updates "$work/none.db"

# Both spellings mean the same: identical results.
"$cli" data inspect --clients 5 --partition iid --client-index 2 --json >"$work/kebab" 2>&1 || fail "inspect kebab"
"$cli" data inspect --clients 5 --partition iid --client_index 2 --json >"$work/snake" 2>&1 || fail "inspect snake"
cmp -s "$work/kebab" "$work/snake" || fail "--client_index differs from --client-index"
grep -q '"index":2' "$work/kebab" || fail "--client-index 2 not applied: $(head -c 300 "$work/kebab")"
train() { # OUT FLAGS...: a short deterministic training, timing fields dropped
    out=$1; shift
    "$cli" train --model logreg --limit 200 --json "$@" >"$work/$out" 2>&1 || fail "train $*: $(cat "$work/$out")"
    sed -i 's/"samples_per_s":[^,]*,"seconds":[^}]*//' "$work/$out"
}
train a --weight-decay 0.5 --data-seed 3
train b --weight_decay=0.5 --data_seed=3
train c --weight-decay 0 --data-seed 3
grep -q '"train_loss"' "$work/a" || fail "train printed no epoch: $(cat "$work/a")"
cmp -s "$work/a" "$work/b" || fail "--weight_decay=0.5 trains differently from --weight-decay 0.5"
cmp -s "$work/a" "$work/c" && fail "--weight-decay had no effect: the comparison above proves nothing"

# The server's flags: both spellings are taken (the run gets as far as the
# missing certificate, exit 1, not a usage error).
for f in --tls-ca --tls_ca; do
    "$srv" run --listen 127.0.0.1:0 $f "$work/none.crt" --db "$work/x.db" --log_level error >"$work/out" 2>&1
    rc=$?
    [ "$rc" -eq 1 ] || fail "server $f: exit $rc: $(cat "$work/out")"
    grep -q "none.crt" "$work/out" || fail "server $f: the certificate was not the problem: $(cat "$work/out")"
done

# Usage texts show kebab-case flags only.
"$srv" run --help >"$work/help" || fail "run --help"
grep -q '^  --log-level ' "$work/help" || fail "run --help does not list --log-level"
grep -Eq '^  --[a-z0-9-]*_' "$work/help" && fail "run --help lists a snake_case flag: $(grep -E '^  --[a-z0-9-]*_' "$work/help")"
for c in models train eval data run fleet; do
    "$cli" "$c" --help >"$work/help" || fail "$c --help"
    grep -Eq -- '--[a-z0-9]+_[a-z0-9_]*' "$work/help" && fail "client $c --help shows a snake_case flag"
done
echo "ok: both spellings accepted and equal; usage errors are plain, name the option and the value, exit 2"
