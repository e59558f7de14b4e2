#!/bin/sh
# A federation run from the container image (make image): a server container
# and a fleet container on loopback (--network=host), mutual TLS with a PKI
# made by the image's own `certs init`, the server's database in a named
# volume mounted at /var/lib/fedopt. Checks that the rounds are committed in
# that volume by the image's unprivileged user, and that the run finished.
# `make test-image` builds the image first; in `make test` this skips unless
# an image is already there. Skips (77) with its reason where podman cannot
# start a container.
# Usage: tests/integration/test_image.sh BUILD_DIR   (FEDOPT_IMAGE: the image)
set -u
build=${1:-build}
image=${FEDOPT_IMAGE:-localhost/fedopt:latest}
cd "$(dirname "$0")/../.."

command -v podman >/dev/null 2>&1 || { echo "skip: podman is not installed (FEDOPT_DEPS=image sh deploy/install-deps.sh)"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "skip: not root (the test hands directories to the image's uid and reads the volume)"; exit 77; }
command -v sqlite3 >/dev/null 2>&1 || { echo "skip: no sqlite3 to read the volume's database"; exit 77; }
BUILD=$build
. deploy/podman-conf.sh
podman image exists "$image" || { echo "skip: no image $image (make test-image builds it)"; exit 77; }
if ! out=$(podman run --rm --network=host "$image" true 2>&1); then
    echo "skip: podman cannot start a container here: $(echo "$out" | tail -n 3)"
    exit 77
fi
# A container starts: now a binary that cannot (a library missing from the
# image's runtime packages) is a failure, not a skip.
for b in fedopt-server fedopt-client; do
    out=$(podman run --rm --network=host "$image" "$b" --version 2>&1) ||
        { echo "FAIL: $b does not run in $image: $(echo "$out" | tail -n 3)"; exit 1; }
    echo "image: $out"
done

tag=fedopt-test-$$
work=$(mktemp -d /tmp/fedopt-image-test.XXXXXX)
cleanup() {
    podman rm -f -t 2 "$tag-srv" "$tag-fleet" >/dev/null 2>&1
    podman volume rm -f "$tag-state" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for c in srv fleet; do echo "--- $c (tail)"; podman logs "$tag-$c" 2>&1 | tail -n 20; done
    exit 1
}

# The image runs as uid 10001 (fedopt): the PKI directory must be its own.
uid=$(podman run --rm "$image" id -u) || fail "id"
[ "$uid" != 0 ] || fail "the image runs as root"
mkdir -p "$work/pki"
chown "$uid" "$work/pki"
podman run --rm -v "$work/pki:/pki" "$image" fedopt-server certs init /pki/fleet >/dev/null || fail "certs init in the image"
podman volume create "$tag-state" >/dev/null || fail "volume create"

podman run -d --name "$tag-srv" --network=host -v "$tag-state:/var/lib/fedopt" -v "$work/pki/fleet:/etc/fedopt/pki:ro" \
    "$image" fedopt-server run --listen 127.0.0.1:0 --tls_cert /etc/fedopt/pki/server.crt \
    --tls_key /etc/fedopt/pki/server.key --tls_ca /etc/fedopt/pki/ca.crt --db /var/lib/fedopt/fedopt.db \
    --model logreg --rounds 3 --clients_per_round 4 --min_clients 6 --eval_data fmnist --eval_max_examples 1000 \
    --round_deadline 60 --server_opt fedavg --server_lr 1 --client_lr 0.1 --batch_size 20 --heartbeat 1 \
    >/dev/null || fail "server container did not start"
port=""
n=0
while [ -z "$port" ]; do
    n=$((n + 1))
    [ "$n" -gt 300 ] && fail "server did not listen"
    port=$(podman logs "$tag-srv" 2>&1 | sed -n 's/.*listening on .* port \([0-9][0-9]*\).*/\1/p' | head -n 1)
    [ -z "$port" ] && sleep 0.2
done
echo "server container listening on 127.0.0.1:$port"

podman run -d --name "$tag-fleet" --network=host -v "$work/pki/fleet:/fleet" "$image" \
    fedopt-client fleet --server "127.0.0.1:$port" --server-name localhost --certs /fleet --clients 6 \
    --data fmnist --partition iid --jobs 2 --give-up 3 --backoff-max 1 --progress plain \
    >/dev/null || fail "fleet container did not start"

rc=$(timeout 300 podman wait "$tag-srv") || fail "server container still running after 300 s"
[ "$rc" = 0 ] || fail "server container exit status $rc"
rc=$(timeout 60 podman wait "$tag-fleet") || fail "fleet container still running after 60 s"
[ "$rc" = 0 ] || fail "fleet container exit status $rc"

dir=$(podman volume inspect --format '{{.Mountpoint}}' "$tag-state") || fail "volume inspect"
db="$dir/fedopt.db"
[ -f "$db" ] || fail "no database in the volume ($db)"
owner=$(stat -c %u "$db")
[ "$owner" = "$uid" ] || fail "database owned by uid $owner, not the image's user $uid"
status=$(sqlite3 "$db" "SELECT status FROM runs")
[ "$status" = finished ] || fail "run status '$status'"
closed=$(sqlite3 "$db" "SELECT count(*) FROM rounds WHERE status = 'closed'")
[ "$closed" -eq 3 ] || fail "$closed closed rounds in the volume, want 3"
acc=$(sqlite3 "$db" "SELECT count(*) FROM updates WHERE status = 'accepted' AND client LIKE 'sim-%'")
[ "$acc" -ge 12 ] || fail "$acc accepted updates from the fleet container, want 12"
last=$(sqlite3 "$db" "SELECT eval_accuracy FROM rounds WHERE round = 3")
podman logs "$tag-fleet" 2>&1 | grep -q "^fleet: 6 clients" || fail "no fleet summary"
echo "ok: image $image (uid $uid): 3 rounds committed in the volume, $acc accepted updates, accuracy $last"
