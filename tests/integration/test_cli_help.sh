#!/bin/sh
# Every subcommand of both binaries answers --help and -h first: usage on
# stdout, exit 0, and nothing created, run in an empty directory (`certs init
# --help` once made a directory named --help holding a CA key). The commands
# come from each binary's own --help listing, and a command's subcommands
# (certs init, data inspect) from its usage lines, so a new one is covered
# without touching this test. Help also wins when it follows an argument.
set -u
build=${1:-build}
build=$(cd "$build" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

n=0
seen=""
for prog in fedopt-server fedopt-client; do
    bin=$build/$prog
    # "commands:" lines are "  NAME  summary"; --version and --help are not commands.
    cmds=$("$bin" --help | sed -n '/^commands:/,$p' | awk 'NR > 1 && NF && $1 !~ /^-/ {print $1}')
    [ -n "$cmds" ] || fail "$prog --help lists no commands"
    for c in $cmds; do
        # Subcommands: a lower-case word right after "PROG CMD" in its usage lines.
        subs=$("$bin" "$c" --help | sed -n "s/^.*$prog $c \([a-z][a-z0-9-]*\).*/\1/p" | sort -u)
        for sub in "" $subs; do
            for extra in "" "somearg"; do
                for h in --help -h; do
                    what="$prog $c${sub:+ $sub}${extra:+ $extra} $h"
                    mkdir "$work/cwd"
                    # shellcheck disable=SC2086 # sub and extra are single words or empty
                    (cd "$work/cwd" && "$bin" "$c" $sub $extra "$h" >"$work/out" 2>"$work/err")
                    rc=$?
                    [ "$rc" -eq 0 ] || fail "$what: exit $rc: $(cat "$work/err")"
                    grep -Eq "^usage: $prog $c( |\$)" "$work/out" || fail "$what: no usage on stdout: $(head -c 300 "$work/out")"
                    [ -s "$work/err" ] && fail "$what: wrote to stderr: $(cat "$work/err")"
                    left=$(ls -A "$work/cwd")
                    [ -z "$left" ] || fail "$what: created '$left'"
                    rm -rf "$work/cwd"
                    n=$((n + 1))
                    seen="$seen|$prog $c $sub"
                done
            done
        done
    done
done
# The listings were really parsed: the case that once failed is among them.
case "$seen" in *"|fedopt-server certs init"*) ;; *) fail "certs init not covered: is the listing parsed?" ;; esac
case "$seen" in *"|fedopt-client data inspect"*) ;; *) fail "data inspect not covered" ;; esac
echo "ok: $n --help/-h invocations over every subcommand of both binaries: usage on stdout, exit 0, nothing created"
