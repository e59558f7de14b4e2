#!/bin/sh
# FEDOPT_VECTORS adds a directory of vectors (the format of
# tests/vectors/serveropt/README.md) to the repository's own. This test
# writes such a directory itself: a FedYogi case (bias correction, example weighting, a NaN update) whose expected values
# are computed here in float64 by awk, independently of fedopt's C code,
# and checks that the replay finds and passes it — and fails a corrupted copy.
set -eu
build=${1:-build}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

awk -v seed=11 '
function rnd() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 - 0.5 }
function sgn(a) { return a > 0 ? 1 : (a < 0 ? -1 : 0) }
function arr(a, n,   i, s) { s = "["; for (i = 0; i < n; i++) s = s (i ? "," : "") sprintf("%.17g", a[i]); return s "]" }
BEGIN {
    P = 23; lr = 0.02; b1 = 0.9; b2 = 0.99; tau = 0.001; v0 = 1e-6
    for (i = 0; i < P; i++) { x[i] = rnd() * 2; m[i] = 0; v[i] = v0 }
    printf "{\"name\":\"awk_yogi\",\"optimizer\":\"fedyogi\",\"hparams\":{\"weighting\":\"examples\",\"bias_correction\":true,\"initial_accumulator\":%g,\"server_lr\":%g,\"beta1\":%g,\"beta2\":%g,\"tau\":%g},", v0, lr, b1, b2, tau
    printf "\"tolerance\":{\"rtol\":1e-4,\"atol\":1e-6},\"x0\":%s,\"rounds\":[", arr(x, P)
    for (t = 1; t <= 3; t++) {
        printf "%s{\"updates\":[", (t > 1 ? "," : "")
        W = 0; for (i = 0; i < P; i++) S[i] = 0
        for (k = 0; k < 3; k++) {
            w = 10 + 7 * k + t
            for (i = 0; i < P; i++) d[i] = rnd() * 0.2
            if (k == 1 && t == 2) {
                # A poisoned update: the string "NaN" in the JSON, dropped from the mean.
                s = arr(d, P); sub(/\[[^,]*,/, "[\"NaN\",", s)
                printf "%s{\"delta\":%s,\"num_examples\":%d}", (k ? "," : ""), s, w
                continue
            }
            printf "%s{\"delta\":%s,\"num_examples\":%d}", (k ? "," : ""), arr(d, P), w
            for (i = 0; i < P; i++) S[i] += w * d[i]
            W += w
        }
        lrt = lr * sqrt(1 - b2 ^ t) / (1 - b1 ^ t)
        for (i = 0; i < P; i++) {
            D = S[i] / W
            m[i] = b1 * m[i] + (1 - b1) * D
            v[i] = v[i] - (1 - b2) * D * D * sgn(v[i] - D * D)
            x[i] = x[i] + lrt * m[i] / (sqrt(v[i]) + tau)
        }
        printf "],\"expected\":{\"x\":%s,\"m\":%s,\"v\":%s}}", arr(x, P), arr(m, P), arr(v, P)
    }
    print "]}"
}' > "$dir/awk_yogi.json"

out=$(FEDOPT_VECTORS="$dir" "$build/tests/test_serveropt_vectors" 2>&1) || { echo "$out"; exit 1; }
echo "$out" | grep -q "1 from $dir)" || { echo "$out"; exit 1; }

# A wrong expected value must fail the replay: the check can fail.
sed 's/"expected":{"x":\[\([-0-9]\)/"expected":{"x":[9\1/' "$dir/awk_yogi.json" > "$dir/bad.json"
mv "$dir/bad.json" "$dir/awk_yogi.json"
if FEDOPT_VECTORS="$dir" "$build/tests/test_serveropt_vectors" >/dev/null 2>&1; then
    echo "a corrupted vector passed"
    exit 1
fi
echo "FEDOPT_VECTORS: an awk-computed FedYogi vector passes; a corrupted one fails"
