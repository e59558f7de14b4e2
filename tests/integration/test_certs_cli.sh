#!/bin/sh
# fedopt-server certs init / issue: the files and their modes, a chain that
# verifies (with openssl when it is installed; test_tls handshakes with such
# certificates in any case), and clear refusals: existing files, bad names,
# a directory without a CA.
set -u
build=${1:-build}
bin=$build/fedopt-server
dir=$(mktemp -d)
out=$(mktemp)
trap 'rm -rf "$dir" "$out"' EXIT
fail() { echo "FAIL: $*"; cat "$out"; exit 1; }

"$bin" certs init "$dir/fleet" --server-name fl.example.org >"$out" 2>&1 || fail "init"
for f in ca.crt ca.key server.crt server.key; do
    [ -s "$dir/fleet/$f" ] || fail "init did not create $f"
done
[ "$(stat -c %a "$dir/fleet/ca.key")" = 600 ] || fail "ca.key is not mode 600"
[ "$(stat -c %a "$dir/fleet/server.key")" = 600 ] || fail "server.key is not mode 600"
grep -q 'BEGIN CERTIFICATE' "$dir/fleet/server.crt" || fail "server.crt is not PEM"
grep -q 'BEGIN EC PRIVATE KEY' "$dir/fleet/server.key" || fail "server.key is not an EC key"

"$bin" certs issue "$dir/fleet" client-001 >"$out" 2>&1 || fail "issue"
[ -s "$dir/fleet/clients/client-001.crt" ] || fail "issue did not create the certificate"
[ "$(stat -c %a "$dir/fleet/clients/client-001.key")" = 600 ] || fail "client key mode"

# Never overwrite; refuse bad names; refuse without a CA.
"$bin" certs init "$dir/fleet" >"$out" 2>&1 && fail "init over an existing CA succeeded"
grep -q 'already exists' "$out" || fail "no 'already exists' message for init"
"$bin" certs issue "$dir/fleet" client-001 >"$out" 2>&1 && fail "re-issue succeeded"
grep -q 'already exists' "$out" || fail "no 'already exists' message for issue"
"$bin" certs issue "$dir/fleet" 'bad/name' >"$out" 2>&1 && fail "bad name accepted"
grep -q "invalid client name" "$out" || fail "no message for a bad name"
"$bin" certs issue "$dir/nofleet" c1 >"$out" 2>&1 && fail "issue without a CA succeeded"
grep -q "ca.crt" "$out" || fail "no message naming the missing CA"
"$bin" certs >"$out" 2>&1
[ $? -eq 2 ] || fail "usage error should exit 2"

# If openssl happens to be installed, let it check the chain too.
if command -v openssl >/dev/null 2>&1; then
    openssl verify -CAfile "$dir/fleet/ca.crt" "$dir/fleet/server.crt" \
        "$dir/fleet/clients/client-001.crt" >"$out" 2>&1 || fail "openssl verify"
    openssl x509 -in "$dir/fleet/server.crt" -noout -text >"$out" 2>&1
    grep -q 'DNS:fl.example.org, DNS:localhost' "$out" || fail "server subjectAltName"
    grep -q 'ASN1 OID: prime256v1' "$out" || fail "not a P-256 key"
fi
echo "certs: init and issue create a verifiable P-256 fleet; refusals are clear"
