#!/usr/bin/env bash
# launch/slurm/slurm-up.sh DIR — start a private single-node Slurm cluster for tests.
#
# Everything lives in DIR (config, munge key and socket, state, spool, logs, pid files); the
# daemons are munged, slurmctld and slurmd, started as the current user (root on the CI
# machines, which have no systemd and whose packages do not start services). Ports:
# SAMPAN_SLURM_PORT (default 16817) for slurmctld and the next one for slurmd.
# On success it prints the line to source, `export SLURM_CONF=DIR/etc/slurm.conf`, which every
# client command (sinfo, srun, sbatch, squeue, scontrol) needs. Stop with slurm-down.sh DIR.
# Exit codes: 0 the node is idle; 77 Slurm or munge is not installed; 1 anything else.
set -euo pipefail
D=$(realpath -m "${1:-build/slurm}")
PORT=${SAMPAN_SLURM_PORT:-16817}
for b in munged slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
    if ! command -v "$b" >/dev/null 2>&1; then
        echo "slurm-up: '$b' not found (Debian: apt-get install slurmctld slurmd slurm-client munge)" >&2
        exit 77
    fi
done
for p in munged slurmctld slurmd; do
    f="$D/run/$p.pid"
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
        echo "slurm-up: $p from $D is already running (pid $(cat "$f")); run slurm-down.sh $D first" >&2
        exit 1
    fi
done

mkdir -p "$D"/{etc,state,spool,log,run,munge}
install -d -m 755 "$D/msock"        # munged refuses a socket folder others cannot traverse
chmod 700 "$D/munge"
if [ ! -f "$D/munge/munge.key" ]; then
    dd if=/dev/urandom of="$D/munge/munge.key" bs=128 count=1 status=none
    chmod 400 "$D/munge/munge.key"
fi

# the node as slurmd sees it (sockets, cores, threads); 80% of its memory
HW=$(slurmd -C 2>/dev/null | head -1 || true)
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
NCPU=$(field CPUs); SOCK=$(field SocketsPerBoard); CPS=$(field CoresPerSocket); TPC=$(field ThreadsPerCore)
if [ -z "$NCPU" ] || [ -z "$SOCK" ] || [ -z "$CPS" ] || [ -z "$TPC" ]; then
    NCPU=$(nproc); SOCK=1; CPS=$NCPU; TPC=1
fi
MEM=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 8 / 10 ))
USER_NAME=$(id -un)

cat > "$D/etc/slurm.conf" <<CONF
# written by launch/slurm/slurm-up.sh: a private single-node cluster for tests
ClusterName=sampan-ci
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/msock/munge.sock
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
MailProg=/bin/true
NodeName=localhost CPUs=$NCPU Sockets=$SOCK CoresPerSocket=$CPS ThreadsPerCore=$TPC RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

munged --socket="$D/msock/munge.sock" --key-file="$D/munge/munge.key" \
       --pid-file="$D/run/munged.pid" --log-file="$D/log/munged.log" \
       --seed-file="$D/munge/munged.seed"
export SLURM_CONF="$D/etc/slurm.conf"
slurmctld           # both daemonise and write their pid files
slurmd
for _ in $(seq 1 120); do
    if [ "$(sinfo -h -o %T 2>/dev/null)" = idle ]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.25
done
echo "slurm-up: the node did not become idle within 30 s; last log lines:" >&2
tail -n 20 "$D"/log/*.log >&2 || true
exit 1
