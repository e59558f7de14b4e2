#!/bin/sh
# deploy/slurm's array scripts. Where Debian's slurm-wlm and munge start here
# (root, a single node on loopback: munged, slurmctld and slurmd with a
# configuration of the test's own), the fleet array is submitted for real
# with `sbatch --wait --array=0-1` against a real server; otherwise each
# array task's command runs with the variables Slurm would set, and the test
# says so. Checks: the server's run finished with the clients of both shards,
# each task ran its shard. The sweep array (3 tasks) runs the real
# `fedopt-server experiment run` over deploy/sweep-grid.ini the same way, each
# task its share of the cells into one directory; then every cell is done and
# `experiment report` over the directory names a best setting per optimizer.
set -u
. "$(dirname "$0")/fleet_lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
abs_cli=$(cd "$(dirname "$cli")" && pwd)/$(basename "$cli")
abs_srv=$(cd "$(dirname "$srv")" && pwd)/$(basename "$srv")
slurm_pids=""

stop_slurm() {
    for f in "$work/slurm/ctld.pid" "$work/slurm/d.pid" "$work/slurm/munge/pid"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    sleep 0.5
}

# start_slurm: munged, slurmctld, slurmd in $work/slurm; returns 1 (with
# $why) if any cannot start.
start_slurm() {
    why=""
    [ "$(id -u)" = 0 ] || { why="not root"; return 1; }
    for b in munged slurmctld slurmd sbatch sinfo; do
        command -v "$b" >/dev/null 2>&1 || { why="no $b (apt-get install slurm-wlm munge)"; return 1; }
    done
    d=$work/slurm
    mkdir -p "$d/state" "$d/spool" "$d/munge"
    chmod 700 "$d/munge"
    head -c 1024 /dev/urandom >"$d/munge/munge.key"
    chmod 400 "$d/munge/munge.key"
    munged --force --socket="$d/munge/sock" --key-file="$d/munge/munge.key" --pid-file="$d/munge/pid" \
        --log-file="$d/munge/log" --seed-file="$d/munge/seed" >/dev/null 2>&1 || { why="munged did not start"; return 1; }
    host=$(hostname -s)
    p1=$(( ($$ % 2000) * 2 + 40000 ))
    p2=$((p1 + 1))
    cat >"$d/slurm.conf" <<EOF
ClusterName=fedopttest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$p1
SlurmdPort=$p2
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge/sock
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/ctld.pid
SlurmdPidFile=$d/d.pid
SlurmctldLogFile=$d/ctld.log
SlurmdLogFile=$d/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=30 State=UP
EOF
    export SLURM_CONF="$d/slurm.conf"
    slurmctld -f "$SLURM_CONF" >/dev/null 2>&1 || { why="slurmctld did not start"; return 1; }
    slurmd -f "$SLURM_CONF" >/dev/null 2>&1 || { why="slurmd did not start"; return 1; }
    n=0
    until sinfo -h -o %t 2>/dev/null | grep -q idle; do
        n=$((n + 1))
        [ "$n" -gt 150 ] && { why="the node never became idle: $(tail -n 2 "$d/ctld.log" "$d/d.log" 2>/dev/null | tr '\n' ' ')"; return 1; }
        sleep 0.1
    done
    return 0
}

trap 'stop_slurm; cleanup' EXIT
# FEDOPT_SLURM=simulate takes the second way even where Slurm would start.
if [ "${FEDOPT_SLURM:-auto}" != simulate ] && start_slurm; then
    mode=slurm
    echo "single-node Slurm $(sinfo -V 2>/dev/null) started: arrays submitted with sbatch"
else
    mode=simulated
    stop_slurm
    [ "${FEDOPT_SLURM:-auto}" = simulate ] && why="FEDOPT_SLURM=simulate"
    echo "NOTE: Slurm could not start here ($why): each array task's command runs with SLURM_ARRAY_TASK_ID/COUNT set instead"
fi

# run_array SCRIPT N: the array 0..N-1 of SCRIPT, for real or simulated;
# task I's output in $work/SCRIPTNAME-I.out.
run_array() {
    name=$(basename "$1" .sbatch)
    if [ "$mode" = slurm ]; then
        sbatch --wait --quiet --array=0-$(($2 - 1)) --cpus-per-task=1 --chdir="$work" \
            --output="$work/$name-%a.out" "$1" || fail "sbatch $name: status $?"
    else
        tp=""
        i=0
        while [ "$i" -lt "$2" ]; do
            SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=$2 SLURM_CPUS_PER_TASK=1 sh "$1" >"$work/$name-$i.out" 2>&1 &
            tp="$tp $!"
            pids="$pids $!"
            i=$((i + 1))
        done
        for p in $tp; do wait "$p" || fail "$name task (pid $p): status $?"; done
    fi
}

# The fleet array: 2 tasks, 6 clients, against a real server.
start_server server.log --model logreg --rounds 2 --clients_per_round 6 --min_clients 6 --round_deadline 60 \
    --server_opt fedavg --server_lr 1 --client_lr 0.1 --batch_size 20 --max_steps 10
FEDOPT_SERVER=127.0.0.1:$port FEDOPT_CERTS=$work/fleet FEDOPT_CLIENTS=6 FEDOPT_PARTITION=iid FEDOPT_GIVE_UP=2 \
FEDOPT_CLIENT=$abs_cli FEDOPT_FLEET_ARGS="--server-name localhost --backoff-max 1" \
    run_array "$root/deploy/slurm/fleet.sbatch" 2
wait_pid "$server_pid" 60
[ "$rc" -eq 0 ] || fail "server exit status $rc"
[ "$(sql "SELECT status FROM runs")" = finished ] || fail "run not finished"
[ "$(sql "SELECT count(*) FROM rounds WHERE status = 'closed'")" -eq 2 ] || fail "2 closed rounds wanted"
names=$(sql "SELECT group_concat(client, ' ') FROM (SELECT DISTINCT client FROM updates ORDER BY client)")
[ "$names" = "sim-0000 sim-0001 sim-0002 sim-0003 sim-0004 sim-0005" ] || fail "clients in the log: $names"
grep -q "3 clients (sim-0000..0004, every 2-th)" "$work/fleet-0.out" || fail "task 0 is not shard 0/2"
grep -q "3 clients (sim-0001..0005, every 2-th)" "$work/fleet-1.out" || fail "task 1 is not shard 1/2"
echo "fleet array ($mode): 2 tasks, 2 rounds, clients $names"

# The sweep array: 3 tasks over deploy/sweep-grid.ini (4 cells) into one
# directory, then `experiment report` over it.
grid=$root/deploy/sweep-grid.ini
ncells=$("$abs_srv" experiment run "$grid" --dry-run | grep -c '^ *[0-9]')
[ "$ncells" -ge 3 ] || fail "deploy/sweep-grid.ini has $ncells cells, fewer than the 3 tasks"
FEDOPT_GRID=$grid FEDOPT_OUT=$work/sweep FEDOPT_SERVER_BIN=$abs_srv \
    run_array "$root/deploy/slurm/sweep.sbatch" 3
i=0
while [ "$i" -lt 3 ]; do
    n=$(( (ncells - i + 2) / 3 ))
    grep -q "$ncells cells, $n in this share" "$work/sweep-$i.out" || fail "sweep task $i did not run its $n cells: $(head -n 1 "$work/sweep-$i.out")"
    i=$((i + 1))
done
"$abs_srv" experiment status "$work/sweep" >"$work/sweep-status.txt" || fail "experiment status"
grep -q ": $ncells cells: $ncells done" "$work/sweep-status.txt" || fail "not every cell is done: $(tail -n 1 "$work/sweep-status.txt")"
"$abs_srv" experiment report "$work/sweep" --out "$work/report" >"$work/report.log" 2>&1 || fail "experiment report"
[ -s "$work/report/report.md" ] || fail "no report.md"
[ "$(($(wc -l <"$work/report/grid.csv") - 1))" -eq "$ncells" ] || fail "grid.csv does not have the $ncells cells"
for opt in fedavg fedadam; do
    grep -q "^custom,$opt,.*,done,3,3," "$work/report/best.csv" || fail "best.csv has no finished 3-round $opt setting"
done
echo "sweep array ($mode): 3 tasks ran the $ncells cells of deploy/sweep-grid.ini into one directory; report's best settings:"
cut -d, -f2-5,13,14 "$work/report/best.csv" | sed 's/^/  /'
echo "ok: deploy/slurm arrays ($mode)"
