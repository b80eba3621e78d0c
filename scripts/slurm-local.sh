#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests and for trying the SLURM backend.
#
#   scripts/slurm-local.sh start    # install slurm-wlm + munge if missing (root + apt), configure,
#                                   # start munged, slurmctld, slurmd; wait until the node is idle
#   scripts/slurm-local.sh stop     # cancel our jobs, end exactly the daemons `start` started
#   scripts/slurm-local.sh status   # "up" (exit 0) or the reason it is not (exit 1)
#   scripts/slurm-local.sh env      # prints `export SLURM_CONF=...` (eval it to use sinfo/sbatch)
#
# Everything lives in $SLURM_LOCAL_DIR (default /tmp/slurm-local): slurm.conf, a munge key and
# socket, state/spool dirs, logs, and the PIDs of the daemons started here. Nothing under /etc is
# written; clients find the cluster through SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf.
# The conf: this host is controller and only node (real core/memory counts from `slurmd -C`),
# select/cons_tres, proctrack/linuxproc, task/none (no cgroups), no accounting, KillWait=5 and
# AuthInfo=cred_expire=10 so that a requeued job restarts within seconds.
# When the cluster cannot start (not root, no apt, a daemon fails), `start` writes the reason to
# $SLURM_LOCAL_DIR/unavailable and exits 1; the tests marked `slurm` skip with that reason.
set -uo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/slurm-local}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"

log() { echo "slurm-local: $*" >&2; }

fail() {
    mkdir -p "$DIR"
    echo "$*" >"$DIR/unavailable"
    log "cannot start: $*"
    exit 1
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

install_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || fail "slurm-wlm/munge not installed and not root (cannot apt-get install)"
    command -v apt-get >/dev/null || fail "slurm-wlm/munge not installed and no apt-get here"
    local t0=$SECONDS
    log "installing slurm-wlm and munge with apt-get (about 35 s)"
    export DEBIAN_FRONTEND=noninteractive
    # `update` once: a fresh machine has no package lists; retried once on a transient mirror error
    apt-get update -qq >"$DIR/apt.log" 2>&1 || { sleep 5; apt-get update -qq >>"$DIR/apt.log" 2>&1; } \
        || fail "apt-get update failed (see $DIR/apt.log)"
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold slurm-wlm munge >>"$DIR/apt.log" 2>&1 \
        || fail "apt-get install slurm-wlm munge failed (see $DIR/apt.log)"
    log "installed in $((SECONDS - t0)) s"
}

write_conf() {
    # `slurmd -C` prints this machine's real NodeName/CPUs/Sockets/Cores/Threads/RealMemory line
    local node
    node="$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -1)"
    [ -n "$node" ] || fail "slurmd -C did not describe this node"
    node="$(echo "$node" | sed -E "s/^NodeName=[^ ]+/NodeName=$HOST/; s/ UpTime=.*//")"
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node test cluster. Do not use in production.
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURM_LOCAL_CTLD_PORT:-6817}
SlurmdPort=${SLURM_LOCAL_SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pidfile
SlurmdPidFile=$DIR/slurmd.pidfile
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=30
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
SchedulerParameters=sched_interval=2
$node State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_daemon() {  # name, then the command (run in the foreground, so $! is the daemon's PID)
    local name=$1
    shift
    setsid "$@" >>"$DIR/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/$name.pid"
    sleep 0.5
    pid_alive "$(cat "$DIR/$name.pid")" || { cmd_stop; fail "$name exited at start (see $DIR/$name.out)"; }
}

node_state() { SLURM_CONF="$CONF" sinfo -h -N -o %T 2>/dev/null | head -1; }

cmd_start() {
    mkdir -p "$DIR"
    rm -f "$DIR/unavailable"
    if [ -f "$DIR/slurmctld.pid" ] && pid_alive "$(cat "$DIR/slurmctld.pid")"; then
        log "already running (SLURM_CONF=$CONF)"
        return 0
    fi
    install_if_missing
    [ "$(id -u)" = 0 ] || fail "the daemons run as root here; rerun as root"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
    chmod 700 "$DIR/munge"
    if [ ! -s "$DIR/munge.key" ]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$DIR/munge.key" --force >/dev/null 2>&1
        fi
        [ -s "$DIR/munge.key" ] || dd if=/dev/urandom of="$DIR/munge.key" bs=1 count=1024 2>/dev/null
        chmod 400 "$DIR/munge.key"
    fi
    write_conf
    start_daemon munged munged --foreground --force --key-file="$DIR/munge.key" \
        --socket="$DIR/munge.socket" --pid-file="$DIR/munge/munged.pidfile" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
    for _ in $(seq 50); do [ -S "$DIR/munge.socket" ] && break; sleep 0.1; done
    start_daemon slurmctld slurmctld -D -i -f "$CONF"
    start_daemon slurmd slurmd -D -f "$CONF"
    local state=""
    for _ in $(seq 120); do
        state="$(node_state)"
        case "$state" in idle*) break ;; esac
        sleep 0.5
    done
    case "$state" in
        idle*) log "node $HOST idle; use it with: export SLURM_CONF=$CONF" ;;
        *) cmd_stop; fail "node $HOST not idle after 60 s (state '${state:-none}'; see $DIR/*.log)" ;;
    esac
}

cmd_stop() {
    if [ -f "$DIR/slurmctld.pid" ] && pid_alive "$(cat "$DIR/slurmctld.pid")"; then
        # our own cluster's jobs only (this SLURM_CONF), so no job step outlives slurmd
        local jobs
        jobs="$(SLURM_CONF="$CONF" squeue -h -o %A 2>/dev/null | sort -u)"
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            SLURM_CONF="$CONF" scancel $jobs 2>/dev/null
            for _ in $(seq 40); do
                [ -z "$(SLURM_CONF="$CONF" squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.25
            done
        fi
    fi
    local name pid
    for name in slurmd slurmctld munged; do
        [ -f "$DIR/$name.pid" ] || continue
        pid="$(cat "$DIR/$name.pid")"
        if pid_alive "$pid"; then
            kill "$pid" 2>/dev/null
            for _ in $(seq 40); do pid_alive "$pid" || break; sleep 0.25; done
            pid_alive "$pid" && kill -9 "$pid" 2>/dev/null
        fi
        rm -f "$DIR/$name.pid"
    done
    log "stopped"
}

cmd_status() {
    if [ -f "$DIR/slurmctld.pid" ] && pid_alive "$(cat "$DIR/slurmctld.pid")"; then
        echo "up: node $HOST $(node_state) (SLURM_CONF=$CONF)"
        return 0
    fi
    if [ -f "$DIR/unavailable" ]; then
        echo "unavailable: $(cat "$DIR/unavailable")"
    else
        echo "not started (scripts/slurm-local.sh start)"
    fi
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
