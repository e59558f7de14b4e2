#!/bin/sh
# Update compression side by side in `make demo`'s setting (deploy/demo.sh: FedAdam, cnn, Fashion-MNIST,
# 100 clients, 10 per round): for each codec, the bytes of client updates per round as they travelled
# and the final test accuracy. Usage: tests/bench/codec_demo.sh [BUILD] [ROUNDS] [CODECS...]
# (default 10 rounds; codecs f32 f16 int8 topk; "topk:F" sets topk_fraction F). Not part of make test:
# each run trains 10 cnn clients per round.
build=${1:-build}
rounds=${2:-10}
shift 2 2>/dev/null || shift $#
codecs=${*:-f32 f16 int8 topk}
out=$(mktemp -d /tmp/fedopt-codec.XXXXXX)
printf '| codec | update bytes per round | per update | final test accuracy | rounds |\n|---|---|---|---|---|\n'
for c in $codecs; do
    name=${c%%:*}
    extra="--update-codec $name"
    [ "$name" != "$c" ] && extra="$extra --topk-fraction ${c#*:}"
    DEMO_ROUNDS=$rounds DEMO_DIR="$out/$name-${c#*:}" DEMO_SERVER_ARGS="$extra" sh deploy/demo.sh "$build" \
        >"$out/$c.log" 2>&1 || { echo "demo with $c failed: $out/$c.log"; exit 1; }
    db="$out/$name-${c#*:}/demo.db"
    sqlite3 -separator ' ' "$db" "SELECT sum(bytes), count(*) FROM updates WHERE status = 'accepted'" |
        while read -r bytes n; do
            acc=$(sqlite3 "$db" "SELECT printf('%.2f', 100 * eval_accuracy) FROM rounds WHERE eval_accuracy IS NOT NULL ORDER BY round DESC LIMIT 1")
            printf '| %s | %d | %d | %s %% | %d |\n' "$c" $((bytes / rounds)) $((bytes / n)) "$acc" "$rounds"
        done
done
rm -rf "$out"
