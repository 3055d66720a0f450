#!/usr/bin/env bash
# Stand up (or stop) a single-node SLURM cluster on loopback for the tests
# marked `slurm`.
#
#   bash scripts/slurm-ci.sh start    install if needed, start, wait until idle
#   bash scripts/slurm-ci.sh stop     stop exactly the daemons `start` started
#   bash scripts/slurm-ci.sh status   print what runs and what this script owns
#
# Idempotent: packages already installed are not installed again, and daemons
# already running (ours from an earlier `start`, or the machine's own) are
# reused rather than doubled; only the daemons this script started are recorded
# in $STATE_DIR/pids and stopped by `stop`. Must run as root (CI does), on
# Debian 12 (SLURM 22.05, munge 0.5.15).
#
# Environment:
#   IMPLICIT_RMT_SLURM_DIR    state, logs and PID file   [/var/lib/implicit-rmt-slurm]
#   IMPLICIT_RMT_SLURM_WAIT   seconds to wait for an idle node   [60]
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE_DIR="${IMPLICIT_RMT_SLURM_DIR:-/var/lib/implicit-rmt-slurm}"
WAIT_SECONDS="${IMPLICIT_RMT_SLURM_WAIT:-60}"
CONF=/etc/slurm/slurm.conf
TEMPLATE="$HERE/slurm.conf.in"
PIDS="$STATE_DIR/pids"
MARKER="Written by implicit-rmt scripts/slurm-ci.sh"
# Memory left to the operating system and to the processes outside SLURM (MB).
MEMORY_MARGIN_MB=1024

log() { echo "slurm-ci: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Print the PID in FILE if that process is alive and runs COMMAND.
live_pid() {
    local file="$1" command="$2" pid
    [ -s "$file" ] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm")" = "$command" ] || return 1
    echo "$pid"
}

node_state() {
    timeout 10 sinfo --noheader --nodes=localhost --format=%T 2>/dev/null | head -n 1
}

install_packages() {
    local missing=()
    local tool
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "SLURM and munge are installed"
        return
    fi
    log "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    local cpus mem_total_mb real_memory def_mem
    if [ -e "$CONF" ] && ! grep -q "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away or" \
            "start its cluster yourself (sinfo must then show node 'localhost')"
    fi
    cpus="$(nproc)"
    mem_total_mb="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
    real_memory=$((mem_total_mb - MEMORY_MARGIN_MB))
    [ "$real_memory" -gt 0 ] || die "MemTotal=${mem_total_mb} MB leaves no memory for jobs"
    def_mem=$((real_memory / cpus))
    mkdir -p /etc/slurm
    sed -e "s|@CPUS@|$cpus|" \
        -e "s|@REAL_MEMORY@|$real_memory|" \
        -e "s|@DEF_MEM_PER_CPU@|$def_mem|" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" \
        "$TEMPLATE" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    log "wrote $CONF: CPUs=$cpus RealMemory=${real_memory} MB DefMemPerCPU=${def_mem} MB"
}

start_munged() {
    if timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
        log "munged already answers; reusing it"
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        (umask 0377 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none)
        chown munge:munge /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    local pid
    pid="$(live_pid /run/munge/munged.pid munged)" || die "munged did not start; see /var/log/munge/munged.log"
    echo "munged $pid" >>"$PIDS"
    log "started munged (pid $pid)"
}

# start_slurm_daemon NAME PIDFILE ARGS...: start NAME unless one already runs.
start_slurm_daemon() {
    local name="$1" pidfile="$2"
    shift 2
    if pgrep -x "$name" >/dev/null; then
        log "$name already runs (pid $(pgrep -x "$name" | tr '\n' ' ')); reusing it"
        return
    fi
    "$name" "$@"
    local pid tries=0
    until pid="$(live_pid "$pidfile" "$name")"; do
        tries=$((tries + 1))
        [ "$tries" -le 50 ] || die "$name did not start; see $STATE_DIR/log/$name.log"
        sleep 0.1
    done
    echo "$name $pid" >>"$PIDS"
    log "started $name (pid $pid)"
}

wait_until_idle() {
    local deadline=$((SECONDS + WAIT_SECONDS)) state=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        state="$(node_state || true)"
        case "$state" in
            idle* | mix* | alloc*)
                log "node localhost is $state after ${SECONDS} s"
                return
                ;;
        esac
        sleep 0.5
    done
    log "last lines of $STATE_DIR/log/slurmctld.log:"
    tail -n 20 "$STATE_DIR/log/slurmctld.log" >&2 || true
    log "last lines of $STATE_DIR/log/slurmd.log:"
    tail -n 20 "$STATE_DIR/log/slurmd.log" >&2 || true
    die "node localhost not idle after ${WAIT_SECONDS} s (state: '${state:-no answer}')"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"
    install_packages
    mkdir -p "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$STATE_DIR/log"
    touch "$PIDS"

    case "$(node_state || true)" in
        idle* | mix* | alloc*)
            log "a SLURM cluster already answers with node localhost up; reusing it"
            return
            ;;
    esac

    write_config
    start_munged
    # -c: forget jobs a previous run left in the state directory.
    start_slurm_daemon slurmctld "$STATE_DIR/slurmctld.pid" -c
    start_slurm_daemon slurmd "$STATE_DIR/slurmd.pid" -N localhost
    # A node that a previous run left DOWN or DRAINED is put back in service.
    timeout 10 scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    wait_until_idle
}

stop() {
    if [ ! -s "$PIDS" ]; then
        log "no daemon started by this script is recorded in $PIDS; nothing to stop"
        return
    fi
    # Jobs of our own cluster go first, so that no slurmstepd outlives slurmd.
    if grep -q '^slurmctld ' "$PIDS"; then
        timeout 10 scancel --full --quiet --user=root >/dev/null 2>&1 || true
    fi
    # Stop in the reverse order of starting: slurmd, slurmctld, munged.
    local name pid remaining
    tac "$PIDS" | while read -r name pid; do
        if [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                [ -r "/proc/$pid/comm" ] || break
                sleep 0.2
            done
            if [ -r "/proc/$pid/comm" ]; then
                log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            log "stopped $name (pid $pid)"
        else
            log "$name (pid $pid) is no longer running"
        fi
    done
    : >"$PIDS"
    for name in slurmd slurmctld munged; do
        remaining="$(pgrep -x -d ' ' "$name" || true)"
        [ -z "$remaining" ] || log "$name still runs (pid $remaining): not started by this script"
    done
}

status() {
    log "node localhost: $(node_state || echo 'no answer')"
    if [ -s "$PIDS" ]; then
        log "started by this script:"
        cat "$PIDS" >&2
    else
        log "started by this script: none"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status (got '${1:-}')" ;;
esac
