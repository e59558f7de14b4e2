#!/bin/sh
# deploy/k8s, as far as this machine goes without a cluster:
#  1. a schema check of every manifest and of `certs k8s`'s Secrets, offline
#     (tests/tools/k8s/check.mjs: kubernetes-models' schema, client-node's field
#     names), and proof that the check fails on a misspelled field;
#  2. the fleet Indexed Job's pod command, run once per index with
#     JOB_COMPLETION_INDEX set (the image's paths and the Service name swapped
#     for this build and loopback, a 20-client population for the manifest's
#     100) against a real server: the shards together
#     are the whole population, and the run finishes;
#  3. the sweep Indexed Job's ConfigMap grid (deploy/sweep-grid.ini) and its
#     pod command run for real once per index, all at once into one
#     directory, then `experiment report` over it;
#  4. `podman kube play` of the server's StatefulSet pod with its ConfigMap,
#     Secrets and claim, when podman and the image (make image) are here:
#     /readyz answers 200 and a Prometheus scrape shows the waiting server;
#  5. with the image too: the sweep Job's index-0 command in a container
#     with the pod's security settings (podman 4.3 cannot play a Job).
# The npm packages are installed into BUILD/k8s-check once (skip, 77, where
# node/npm or the registry cannot be reached).
set -u
. "$(dirname "$0")/fleet_lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
k8s=$root/deploy/k8s
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "skip: no node/npm for the schema check"; exit 77; }
chk_dir=$(cd "$build" && pwd)/k8s-check
if ! cmp -s "$root/tests/tools/k8s/package.json" "$chk_dir/package.json" 2>/dev/null || [ ! -d "$chk_dir/node_modules" ]; then
    mkdir -p "$chk_dir"
    cp "$root/tests/tools/k8s/package.json" "$chk_dir/"
    (cd "$chk_dir" && npm install --no-audit --no-fund --loglevel=error >"$chk_dir/npm.log" 2>&1) || {
        rm -f "$chk_dir/package.json"
        echo "skip: npm install of the schema packages failed: $(tail -n 2 "$chk_dir/npm.log")"
        exit 77
    }
fi
cp "$root/tests/tools/k8s/check.mjs" "$chk_dir/check.mjs"
chk() { node "$chk_dir/check.mjs" "$@"; }

# 1. Schemas.
"$srv" certs init "$work/k8s-pki" --server-name fedopt-server >/dev/null || fail "certs init"
"$srv" certs k8s "$work/k8s-pki" --namespace fedopt >"$work/pki-secrets.yaml" || fail "certs k8s"
chk validate "$k8s"/*.yaml "$work/pki-secrets.yaml" >"$work/validate.log" 2>&1 || { cat "$work/validate.log"; fail "manifests do not validate"; }
sed 's/^/  /' "$work/validate.log"
docs=$(grep -c ': valid (' "$work/validate.log")
[ "$docs" -ge 9 ] || fail "only $docs documents checked"
sed 's/backoffLimitPerIndex:/backoffLimitPerIndx:/' "$k8s/fleet-job.yaml" >"$work/typo.yaml"
chk validate "$work/typo.yaml" >"$work/typo.log" 2>&1 && fail "a misspelled field passed the check"
grep -q "backoffLimitPerIndx: no such field" "$work/typo.log" || fail "the misspelled field is not named: $(cat "$work/typo.log")"
# The Secrets hold the files, byte for byte.
for key in ca.crt server.crt server.key; do
    sed -n "/name: fedopt-server-pki/,/^---/s/^  $key: //p" "$work/pki-secrets.yaml" | base64 -d | cmp -s - "$work/k8s-pki/$key" ||
        fail "Secret fedopt-server-pki: $key differs from the file"
done
sed -n "/name: fedopt-fleet-pki/,\$s/^  ca.key: //p" "$work/pki-secrets.yaml" | base64 -d | cmp -s - "$work/k8s-pki/ca.key" ||
    fail "Secret fedopt-fleet-pki: ca.key differs from the file"

# 2. The fleet Job, one pod command per index.
completions=$(sed -n 's/^  completions: \([0-9]*\)$/\1/p' "$k8s/fleet-job.yaml" | head -n 1)
[ -n "$completions" ] || fail "no completions in fleet-job.yaml"
JOB_COMPLETION_INDEX=0 chk command "$k8s/fleet-job.yaml" fedopt-fleet >"$work/cmd0" || fail "fleet command"
# The manifest's population (100) takes minutes to shake hands on a loaded
# 2-core machine: the pods' commands run here with 20 clients.
[ -n "$(sed -n '/^--clients$/{n;p;}' "$work/cmd0")" ] || fail "no --clients in the fleet command"
clients=20
grep -qx -- "0/$completions" "$work/cmd0" || fail "index 0's --shard is not 0/$completions: $(tr '\n' ' ' <"$work/cmd0")"
start_server server.log --model logreg --rounds 2 --clients_per_round 10 --min_clients "$clients" --round_deadline 60 \
    --server_opt fedavg --server_lr 1 --client_lr 0.1 --batch_size 20 --max_steps 5
i=0
shard_pids=""
while [ "$i" -lt "$completions" ]; do
    JOB_COMPLETION_INDEX=$i chk command "$k8s/fleet-job.yaml" fedopt-fleet >"$work/cmd$i" || fail "command $i"
    # The pod's command with this build's binary, the loopback server and scratch paths.
    set --
    prev=""
    while IFS= read -r a; do
        case "$prev" in
        --server) a=127.0.0.1:$port ;;
        --certs) a=$work/fleet ;;
        --metrics-listen) a=127.0.0.1:0 ;;
        --give-up) a=5 ;;
        --clients) a=$clients ;;
        --jobs) a=1 ;;
        esac
        [ "$a" = fedopt-client ] && a=$cli
        set -- "$@" "$a"
        prev=$a
    done <"$work/cmd$i"
    "$@" --server-name localhost --backoff-max 1 >"$work/shard$i.log" 2>&1 &
    shard_pids="$shard_pids $!"
    pids="$pids $!"
    i=$((i + 1))
done
wait_pid "$server_pid" 180
[ "$rc" -eq 0 ] || fail "server exit status $rc"
for p in $shard_pids; do wait_pid "$p" 30; [ "$rc" -eq 0 ] || fail "a shard exited with $rc"; done
[ "$(sql "SELECT count(*) FROM rounds WHERE status = 'closed'")" -eq 2 ] || fail "2 closed rounds wanted"
# Each index ran its shard: clients i with i mod N = index; together, all of them.
i=0
total=0
while [ "$i" -lt "$completions" ]; do
    n=$(( (clients - i + completions - 1) / completions ))
    grep -q "$n clients (sim-$(printf %04d "$i")\.\." "$work/shard$i.log" || fail "index $i did not run its shard ($n clients from sim-$(printf %04d "$i"))"
    total=$((total + n))
    i=$((i + 1))
done
[ "$total" -eq "$clients" ] || fail "the shards hold $total clients, the population $clients"
certs=$(ls "$work/fleet/clients/"*.crt | wc -l)
[ "$certs" -eq "$clients" ] || fail "$certs client certificates issued, want $clients"
echo "fleet Job: $completions indexes ran their shards of $clients clients against a real server; 2 rounds"

# 3. The sweep Job: its ConfigMap's grid is deploy/sweep-grid.ini; its pod
# command runs once per index, all at once (parallelism = completions) into
# one directory as into the Job's shared volume, each in a pid namespace of
# its own where unshare allows (a pod's command is pid 1); then `experiment
# report` over that directory.
chk data "$k8s/sweep-job.yaml" fedopt-sweep-grid grid.ini >"$work/grid.ini" || fail "no grid.ini in the sweep's ConfigMap"
cmp -s "$work/grid.ini" "$root/deploy/sweep-grid.ini" || fail "the sweep's ConfigMap grid is not deploy/sweep-grid.ini"
ncells=$("$srv" experiment run "$work/grid.ini" --dry-run | grep -c '^ *[0-9]')
scompl=$(sed -n '/^kind: Job/,$s/^  completions: \([0-9]*\)$/\1/p' "$k8s/sweep-job.yaml" | head -n 1)
[ -n "$scompl" ] && [ "$scompl" -ge 2 ] && [ "$scompl" -le "$ncells" ] ||
    fail "sweep completions '$scompl': want 2..$ncells (the grid's cells)"
grep -q "^ *parallelism: $scompl$" "$k8s/sweep-job.yaml" || fail "sweep parallelism is not $scompl"
pidns=""
if unshare -pf --kill-child true 2>/dev/null; then pidns="unshare -pf --kill-child"; fi
i=0
sweep_pids=""
while [ "$i" -lt "$scompl" ]; do
    JOB_COMPLETION_INDEX=$i chk command "$k8s/sweep-job.yaml" fedopt-sweep >"$work/scmd$i" || fail "sweep command $i"
    got=$(tr '\n' ' ' <"$work/scmd$i")
    [ "$got" = "fedopt-server --log-format json experiment run /etc/fedopt/grid/grid.ini --out /var/lib/fedopt/sweep --shard $i/$scompl " ] ||
        fail "sweep index $i: '$got'"
    # The pod's command with this build's binary and scratch paths for the mounts.
    set --
    while IFS= read -r a; do
        case "$a" in
        fedopt-server) a=$srv ;;
        /etc/fedopt/grid/grid.ini) a=$work/grid.ini ;;
        /var/lib/fedopt/sweep) a=$work/sweep ;;
        esac
        set -- "$@" "$a"
    done <"$work/scmd$i"
    $pidns "$@" >"$work/sweep$i.log" 2>&1 &
    sweep_pids="$sweep_pids $!"
    pids="$pids $!"
    i=$((i + 1))
done
for p in $sweep_pids; do wait_pid "$p" 300; [ "$rc" -eq 0 ] || fail "a sweep index exited with $rc"; done
i=0
while [ "$i" -lt "$scompl" ]; do
    n=$(( (ncells - i + scompl - 1) / scompl ))
    grep -q "$ncells cells, $n in this share" "$work/sweep$i.log" || fail "index $i did not run its $n cells: $(head -n 1 "$work/sweep$i.log")"
    i=$((i + 1))
done
"$srv" experiment status "$work/sweep" >"$work/sweep-status.txt" || fail "experiment status"
grep -q ": $ncells cells: $ncells done" "$work/sweep-status.txt" || fail "not every cell is done: $(tail -n 1 "$work/sweep-status.txt")"
"$srv" experiment report "$work/sweep" --out "$work/sweep-report" >"$work/report.log" 2>&1 || fail "experiment report"
[ -s "$work/sweep-report/report.md" ] || fail "no report.md"
[ "$(($(wc -l <"$work/sweep-report/grid.csv") - 1))" -eq "$ncells" ] || fail "grid.csv does not have the $ncells cells"
for opt in fedavg fedadam; do
    grep -q "^custom,$opt,.*,done,3,3," "$work/sweep-report/best.csv" || fail "best.csv has no finished 3-round $opt setting"
done
echo "sweep Job: $scompl indexes${pidns:+ (each pid 1 in its own namespace)} ran the $ncells cells of the ConfigMap's grid into one directory; report's best settings:"
cut -d, -f2-5,13,14 "$work/sweep-report/best.csv" | sed 's/^/  /'

# 4. podman kube play of the server pod.
image=${FEDOPT_IMAGE:-localhost/fedopt:latest}
if ! command -v podman >/dev/null 2>&1; then
    echo "NOTE: no podman: kube play not tried"
elif ! BUILD=$build . "$root/deploy/podman-conf.sh" || ! podman image exists "$image"; then
    echo "NOTE: no image $image (make image): kube play not tried"
elif [ "$(id -u)" != 0 ]; then
    echo "NOTE: not root (the pod's PKI directory must belong to uid 10001): kube play not tried"
else
    pod=fedopt-test-$$
    kube_down() { podman kube down "$work/pod.yaml" >/dev/null 2>&1; podman volume rm -f "$pod-state" >/dev/null 2>&1; }
    trap 'kube_down; cleanup' EXIT
    # Loopback ports for the host network (the Service's 7443/9464 may be
    # taken), a small model; the rest is the manifest's.
    fport=$(( ($$ % 5000) + 45000 ))
    while ss -ltn | grep -qE ":($fport|$((fport + 1))) "; do fport=$((fport + 2)); done
    mport=$((fport + 1))
    sed -e "s/listen = 0.0.0.0:7443/listen = 127.0.0.1:$fport/" -e "s/metrics_listen = 0.0.0.0:9464/metrics_listen = 127.0.0.1:$mport/" \
        -e 's/model = cnn/model = logreg/' "$k8s/server.yaml" | awk '/^---/{exit} {print}' >"$work/configmap.yaml"
    # podman 4.3 mounts a kube-played Secret's whole manifest rather than its
    # keys, so the PKI (the same files as the Secrets checked above) comes
    # from a directory the image's user can read.
    cp -r "$work/k8s-pki" "$work/pod-pki"
    chown -R 10001:10001 "$work/pod-pki"
    POD_NAME=$pod SECRET_DIRS=fedopt-server-pki=$work/pod-pki chk pod "$k8s/server.yaml" fedopt-server host |
        sed "s/port: 9464/port: $mport/" >"$work/pod.yaml"
    chk validate "$work/configmap.yaml" "$work/pod.yaml" >/dev/null || fail "the kube play files do not validate"
    if ! podman kube play --network host --configmap "$work/configmap.yaml" "$work/pod.yaml" >"$work/play.log" 2>&1; then
        echo "NOTE: podman kube play failed here:"
        grep -v "^\s" "$work/play.log" | head -n 5
    else
        n=0
        until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/readyz")" = 200 ]; do
            n=$((n + 1))
            [ "$n" -gt 300 ] && { podman logs "$pod-server" 2>&1 | tail -n 20; fail "the kube-played server never became ready"; }
            sleep 0.1
        done
        # Ready (listening) can come a moment before the phase gauge reads
        # waiting on a loaded machine: scrape until it does, within 30 s.
        n=0
        until curl -sf "http://127.0.0.1:$mport/metrics" >"$work/pod.metrics" &&
            grep -q '^fedopt_phase{phase="waiting"} 1$' "$work/pod.metrics"; do
            n=$((n + 1))
            [ "$n" -gt 300 ] && { grep '^fedopt_phase' "$work/pod.metrics"; fail "the pod's server is not waiting for clients"; }
            sleep 0.1
        done
        uid=$(podman exec "$pod-server" id -u 2>/dev/null)
        [ "$uid" = 10001 ] || fail "the pod runs as uid '$uid', not 10001"
        podman logs "$pod-server" 2>&1 | grep -q '"message":"listening on 127.0.0.1 port '"$fport"'"' ||
            fail "the pod's server did not log (JSON) its listening port"
        echo "podman kube play: the StatefulSet's pod (its ConfigMap, claim and probe endpoints) is ready and waiting, uid $uid"
    fi
fi

# 5. The sweep Job's pod in the image: index 0's command as the pod runs it
# (uid 10001, a read-only root file system, no capabilities, no privilege
# escalation), the ConfigMap's grid and an empty volume mounted where the
# Job mounts them: its cells end up done in the volume.
if command -v podman >/dev/null 2>&1 && podman image exists "$image" 2>/dev/null && [ "$(id -u)" = 0 ]; then
    if ! podman run --rm --network none "$image" fedopt-server experiment --help >/dev/null 2>&1; then
        echo "NOTE: $image has no working 'fedopt-server experiment' (an image older than this tree? make image): the sweep pod not tried"
    else
        mkdir -p "$work/pod-sweep"
        chown 10001:10001 "$work/pod-sweep"
        set --
        while IFS= read -r a; do set -- "$@" "$a"; done <"$work/scmd0"
        podman run --rm --network none --read-only --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges \
            -v "$work/grid.ini:/etc/fedopt/grid/grid.ini:ro" -v "$work/pod-sweep:/var/lib/fedopt" "$image" "$@" \
            >"$work/pod-sweep.log" 2>&1 || fail "the sweep pod's command failed in $image: $(tail -n 3 "$work/pod-sweep.log")"
        n0=$(( (ncells + scompl - 1) / scompl ))
        got=$(ls "$work"/pod-sweep/sweep/cells/*/done 2>/dev/null | wc -l)
        [ "$got" -eq "$n0" ] || fail "the sweep pod finished $got cells in its volume, want index 0's $n0"
        echo "sweep pod in $image: index 0's $n0 cell(s) done in the volume, as uid 10001 on a read-only root"
    fi
fi
echo "ok: deploy/k8s checked"
