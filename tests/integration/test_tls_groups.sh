#!/bin/sh
# The key-exchange groups proto/README.md documents, tried with a TLS 1.2
# client that offers exactly the listed groups (openssl s_client, mutual TLS
# with a fleet certificate) against fedopt-server on loopback: X25519 is
# preferred, P-256 is used when the client offers it without X25519, the
# server's order wins over the client's, and a client must list the server
# certificate's curve (P-256): offering only X25519 or only P-384 is refused
# with a handshake_failure alert, as is TLS 1.3. The server still serves a
# round afterwards.
build=${1:-build}
if ! command -v openssl >/dev/null 2>&1; then
    echo "SKIP: needs openssl (deploy/install-deps.sh installs it)"
    exit 77
fi
. tests/integration/server_lib.sh
make_pki a
start_server "$work/server.log" --db "$work/g.db" --rounds 1 --clients-per-round 1 --min-clients 1 \
    --round-deadline 10 --heartbeat 1
# try OUT ARGS...: one handshake with s_client; its output in $work/OUT.
try() {
    o=$1
    shift
    echo | timeout 20 openssl s_client -connect "127.0.0.1:$port" -servername localhost -cert "$pki/clients/a.crt" \
        -key "$pki/clients/a.key" -CAfile "$pki/ca.crt" "$@" >"$work/$o" 2>&1
}
ok() { # OUT GROUPS TEMP-KEY-ERE (OpenSSL 3 names P-256 prime256v1, 1.1 P-256)
    try "$1" -tls1_2 -groups "$2"
    grep -Eq "Server Temp Key: $3" "$work/$1" && grep -q "Verify return code: 0 (ok)" "$work/$1" ||
        fail "groups $2: want key $3: $(grep -E 'Temp Key|alert|Cipher is|Verify' "$work/$1")"
    echo "groups $2: $(grep 'Server Temp Key' "$work/$1" | sed 's/^ *//'), $(grep -o 'Cipher is .*' "$work/$1" | head -n 1)"
}
refused() { # OUT WHAT ARGS...
    o=$1 what=$2
    shift 2
    try "$o" "$@"
    grep -q "alert handshake failure" "$work/$o" && ! grep -q "Server Temp Key" "$work/$o" ||
        fail "$what: not refused with handshake_failure: $(grep -E 'Temp Key|alert|Cipher is' "$work/$o")"
    echo "$what: refused with a handshake_failure alert"
}
ok x25519 X25519:P-256 X25519
ok p256 P-256 "ECDH, (prime256v1|P-256)"
ok p256_p384 P-256:P-384 "ECDH, (prime256v1|P-256)"
ok p384_p256 P-384:P-256 "ECDH, (prime256v1|P-256)"
ok p256_x25519 P-256:X25519 X25519
refused x25519_only "groups X25519 only (no P-256 for the certificate)" -tls1_2 -groups X25519
refused p384_only "groups P-384 only (no P-256 for the certificate)" -tls1_2 -groups P-384
refused tls13 "TLS 1.3" -tls1_3
grep -q "handshake" "$work/server.log" || fail "the refused handshakes are not in the server's log"
client a --weight 5 --timeout 20
wait_pid "$server_pid" 30 || fail "server exited with $? after the handshakes"
wait_pid "$pid_a" 10 || fail "client a: $(tail -n 3 "$work/a.log")"
echo "ok: key-exchange groups as documented (X25519 preferred, P-256 needed for the certificate, P-384 never chosen with it); a round served afterwards"
