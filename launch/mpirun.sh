#!/usr/bin/env bash
# launch/mpirun.sh — start N ranks of a command on this node with Open MPI, each bound to its
# share of the node as `sampan topo` plans it.
#
#   launch/mpirun.sh N [mpirun options ...] -- COMMAND [ARGS ...]
#   launch/mpirun.sh 2 -- sampan run -m model.gguf -p "Hello" --tp 2
#
# What it adds to a bare `mpirun -np N`:
#   - as root, the two OMPI_ALLOW_RUN_AS_ROOT variables Open MPI demands;
#   - more ranks than cores: --oversubscribe, and mpi_yield_when_idle so waiting ranks sleep;
#   - placement: mpirun binds nothing (--bind-to none); each rank runs this script again
#     (--rank mode), reads its line of `sampan topo --ranks N` and execs COMMAND under
#     `taskset -c CPUS`, so the binding is the plan's (one NUMA node per share where possible)
#     whatever COMMAND is. SAMPAN names the sampan binary (default: `sampan` on PATH).
# The exit code is mpirun's.
set -euo pipefail
SAMPAN=${SAMPAN:-sampan}

if [ "${1:-}" = --rank ]; then
    shift
    local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:?--rank runs under mpirun}
    local_size=${OMPI_COMM_WORLD_LOCAL_SIZE:?--rank runs under mpirun}
    cpus=$("$SAMPAN" topo --ranks "$local_size" | sed -n "s/^rank $local_rank: .* cpus \(.*\)$/\1/p")
    if [ -z "$cpus" ]; then
        echo "mpirun.sh: no plan for local rank $local_rank of $local_size from '$SAMPAN topo'" >&2
        exit 1
    fi
    exec taskset -c "$cpus" "$@"
fi

usage() { echo "usage: launch/mpirun.sh N [mpirun options ...] -- COMMAND [ARGS ...]" >&2; exit 2; }
[ $# -ge 3 ] || usage
N=$1
shift
[[ "$N" =~ ^[1-9][0-9]*$ ]] || usage
opts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
if [ "${1:-}" != -- ] || [ $# -lt 2 ]; then usage; fi
shift

if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cores=$("$SAMPAN" topo --ranks 1 | sed -n 's/^node .*): \([0-9]*\) cores,.*/\1/p')
if [ -z "$cores" ]; then
    echo "mpirun.sh: '$SAMPAN topo' did not report the node's cores" >&2
    exit 1
fi
if [ "$N" -gt "$cores" ]; then
    opts=(--oversubscribe "${opts[@]}")
    export OMPI_MCA_mpi_yield_when_idle=1
fi
export SAMPAN
exec mpirun -np "$N" --bind-to none "${opts[@]}" "$(realpath "$0")" --rank "$@"
