#!/usr/bin/env bash
# launch/slurm/slurm-down.sh DIR — stop the cluster slurm-up.sh DIR started.
#
# Only the processes named by DIR's pid files are signalled, and only while the pid still
# belongs to the daemon that wrote it (its /proc/PID/comm), never by process name. Waits up to
# 10 s for them to exit, then sends SIGKILL to what is left. Always exits 0 when nothing is left.
set -uo pipefail
D=$(realpath -m "${1:-build/slurm}")
pids=()
for p in slurmd slurmctld munged; do
    f="$D/run/$p.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null)
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$p" ]; then
        kill "$pid" 2>/dev/null && pids+=("$pid:$p")
    fi
    rm -f "$f"
done
for _ in $(seq 1 100); do
    left=()
    for e in "${pids[@]+"${pids[@]}"}"; do
        pid=${e%%:*} name=${e#*:}
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && left+=("$e")
    done
    [ ${#left[@]} -eq 0 ] && exit 0
    pids=("${left[@]}")
    sleep 0.1
done
for e in "${pids[@]}"; do
    echo "slurm-down: ${e#*:} (pid ${e%%:*}) did not stop in 10 s: SIGKILL" >&2
    kill -9 "${e%%:*}" 2>/dev/null
done
exit 0
