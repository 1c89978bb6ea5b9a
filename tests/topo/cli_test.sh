#!/usr/bin/env bash
# tests/topo/cli_test.sh SAMPAN TOPO_CLI TEST_TOPO — `sampan topo` (launch/cmd_topo.c).
#
# Plans printed for nodes this machine is not (--synthetic, --topology with the 8-GPU XML node
# test_topo writes, HWLOC_SYNTHETIC) against lines written out by hand; the node-local rank
# and count read from Open MPI's and Slurm's variables (only local rank 0 prints, the count
# parsed from "2(x3),1" lists); usage errors; and, when mpirun is installed, 2 real ranks that
# bind themselves, checked through the affinity the kernel reports.
# Uses `SAMPAN topo` when launch/main.c dispatches it, TOPO_CLI (the same code) otherwise.
# shellcheck disable=SC2015,SC2016  # ok/bad always return 0; single quotes for the ranks
set -uo pipefail
SAMPAN=$1 TOPO_CLI=$2 TEST_TOPO=$3
TOPO=("$TOPO_CLI" topo)
"$SAMPAN" topo --help >/dev/null 2>&1 && TOPO=("$SAMPAN" topo)
echo "testing: ${TOPO[*]}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset HWLOC_SYNTHETIC HWLOC_XMLFILE OMPI_COMM_WORLD_LOCAL_RANK OMPI_COMM_WORLD_LOCAL_SIZE \
      MPI_LOCALRANKID MPI_LOCALNRANKS SLURM_LOCALID SLURM_STEP_TASKS_PER_NODE \
      SLURM_TASKS_PER_NODE SLURM_NODEID SLURM_PROCID SLURM_STEP_ID

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect NAME WANT_RC WANT_OUTPUT CMD...: exit code and whole stdout
expect() {
    local name=$1 want_rc=$2 want=$3 got rc
    shift 3
    got=$("$@" 2>"$TMP/err")
    rc=$?
    if [ "$rc" = "$want_rc" ] && [ "$got" = "$want" ]; then ok "$name"
    else bad "$name: exit $rc (want $want_rc), stderr '$(cat "$TMP/err")', output:"$'\n'"$got"$'\n'"want:"$'\n'"$want"; fi
}
# expect_err NAME WANT_RC PATTERN CMD...: exit code and a message on stderr
expect_err() {
    local name=$1 want_rc=$2 pat=$3 rc
    shift 3
    "$@" >/dev/null 2>"$TMP/err"
    rc=$?
    [ "$rc" = "$want_rc" ] && grep -q -- "$pat" "$TMP/err" && ok "$name" ||
        bad "$name: exit $rc (want $want_rc), stderr '$(cat "$TMP/err")' lacks '$pat'"
}
H=$(hostname)
SYN="pack:2 numa:2 l3:2 core:8 pu:2"

expect "synthetic, 4 ranks" 0 "node $H (synthetic '$SYN'): 64 cores, 4 NUMA nodes, 0 GPUs; 4 local ranks
rank 0: cores 0-15 (16) numa 0 gpu -1 cpus 0-31
rank 1: cores 16-31 (16) numa 1 gpu -1 cpus 32-63
rank 2: cores 32-47 (16) numa 2 gpu -1 cpus 64-95
rank 3: cores 48-63 (16) numa 3 gpu -1 cpus 96-127" "${TOPO[@]}" --synthetic "$SYN" --ranks 4

"$TEST_TOPO" --write-xml "$TMP/node.xml" a || bad "test_topo --write-xml"
expect "8-GPU XML node, 8 ranks" 0 "node $H (XML $TMP/node.xml): 64 cores, 4 NUMA nodes, 8 GPUs; 8 local ranks
rank 0: cores 0-7 (8) numa 0 gpu 0 (0000:07:00.0) cpus 0-7,64-71
rank 1: cores 8-15 (8) numa 0 gpu 1 (0000:0f:00.0) cpus 8-15,72-79
rank 2: cores 16-23 (8) numa 1 gpu 2 (0000:47:00.0) cpus 16-23,80-87
rank 3: cores 24-31 (8) numa 1 gpu 3 (0000:4e:00.0) cpus 24-31,88-95
rank 4: cores 32-39 (8) numa 2 gpu 4 (0000:87:00.0) cpus 32-39,96-103
rank 5: cores 40-47 (8) numa 2 gpu 5 (0000:90:00.0) cpus 40-47,104-111
rank 6: cores 48-55 (8) numa 3 gpu 6 (0000:b7:00.0) cpus 48-55,112-119
rank 7: cores 56-63 (8) numa 3 gpu 7 (0000:bd:00.0) cpus 56-63,120-127" \
    "${TOPO[@]}" --topology "$TMP/node.xml" --ranks 8
expect "8-GPU XML node, 4 ranks" 0 "node $H (XML $TMP/node.xml): 64 cores, 4 NUMA nodes, 8 GPUs; 4 local ranks
rank 0: cores 0-15 (16) numa 0 gpu 0 (0000:07:00.0) cpus 0-15,64-79
rank 1: cores 16-31 (16) numa 1 gpu 2 (0000:47:00.0) cpus 16-31,80-95
rank 2: cores 32-47 (16) numa 2 gpu 4 (0000:87:00.0) cpus 32-47,96-111
rank 3: cores 48-63 (16) numa 3 gpu 6 (0000:b7:00.0) cpus 48-63,112-127" \
    "${TOPO[@]}" --topology "$TMP/node.xml" --ranks 4

expect "HWLOC_SYNTHETIC, 3 ranks on 2 packages of 3 cores" 0 \
"node $H (synthetic 'pack:2 core:3 pu:1' (HWLOC_SYNTHETIC)): 6 cores, 1 NUMA node, 0 GPUs; 3 local ranks
rank 0: cores 0-1 (2) numa 0 gpu -1 cpus 0-1
rank 1: cores 2-3 (2) numa 0 gpu -1 cpus 2-3
rank 2: cores 4-5 (2) numa 0 gpu -1 cpus 4-5" env HWLOC_SYNTHETIC="pack:2 core:3 pu:1" "${TOPO[@]}" --ranks 3

# the launcher's variables: only local rank 0 prints, for the local count
expect "mpirun variables, local rank 1 prints nothing" 0 "" \
    env OMPI_COMM_WORLD_LOCAL_RANK=1 OMPI_COMM_WORLD_LOCAL_SIZE=2 OMPI_COMM_WORLD_RANK=1 \
    "${TOPO[@]}" --synthetic "$SYN"
got=$(env OMPI_COMM_WORLD_LOCAL_RANK=0 OMPI_COMM_WORLD_LOCAL_SIZE=2 "${TOPO[@]}" --synthetic "$SYN" | head -1)
[[ "$got" == *"; 2 local ranks via mpirun" ]] && ok "mpirun variables, local rank 0" ||
    bad "mpirun variables: header '$got'"
got=$(env SLURM_LOCALID=0 SLURM_NODEID=3 SLURM_STEP_TASKS_PER_NODE="2(x3),1" SLURM_STEP_ID=5 \
      "${TOPO[@]}" --synthetic "$SYN" | head -1)
[[ "$got" == *"; 1 local rank via srun" ]] && ok "srun variables: node 3 of '2(x3),1' has 1 task" ||
    bad "srun variables, node 3: header '$got'"
got=$(env SLURM_LOCALID=0 SLURM_NODEID=2 SLURM_TASKS_PER_NODE="2(x3),1" \
      "${TOPO[@]}" --synthetic "$SYN" | head -1)
[[ "$got" == *"; 2 local ranks via slurm batch" ]] && ok "batch variables: node 2 of '2(x3),1' has 2" ||
    bad "batch variables, node 2: header '$got'"
got=$(env SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_TASKS_PER_NODE="2(x" "${TOPO[@]}" --synthetic "$SYN" | head -1)
[[ "$got" == *"; 1 local rank" ]] && ok "malformed tasks-per-node list: one rank assumed" ||
    bad "malformed tasks-per-node: header '$got'"

expect_err "unknown option" 2 "unknown option '--rank'" "${TOPO[@]}" --rank 2
expect_err "--ranks 0" 2 "--ranks expects an integer" "${TOPO[@]}" --ranks 0
expect_err "--ranks without a value" 2 "needs a value" "${TOPO[@]}" --ranks
expect_err "--topology and --synthetic" 2 "exclude each other" "${TOPO[@]}" --topology x.xml --synthetic "$SYN"
expect_err "missing XML file" 2 "$TMP/none.xml" "${TOPO[@]}" --topology "$TMP/none.xml"
expect_err "bad synthetic" 2 "pack:two" "${TOPO[@]}" --synthetic "pack:two"
expect_err "--bind with --ranks" 2 "cannot be combined" "${TOPO[@]}" --ranks 2 --bind
expect "--bind on a synthetic node binds nothing" 0 \
"node $H (synthetic 'pack:1 core:2 pu:1'): 2 cores, 1 NUMA node, 0 GPUs; 1 local rank
rank 0: cores 0-1 (2) numa 0 gpu -1 cpus 0-1
$H rank - (local 0): topo: not binding rank 0: the topology (synthetic 'pack:1 core:2 pu:1') is not this machine's" \
    "${TOPO[@]}" --synthetic "pack:1 core:2 pu:1" --bind

# two real ranks under mpirun bind themselves to the plan for 2 local ranks on this machine
if command -v mpirun >/dev/null 2>&1; then
    plan=$("${TOPO[@]}" --ranks 2 | grep '^rank ')
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    out=$(timeout 60 mpirun -np 2 --oversubscribe --bind-to none "${TOPO[@]}" --bind 2>&1)
    rc=$?
    [ $rc -eq 0 ] && [ "$(echo "$out" | grep '^rank ')" = "$plan" ] &&
        [[ "$out" == *"2 local ranks via mpirun"* ]] && ok "mpirun -np 2: plan" ||
        bad "mpirun -np 2 (exit $rc): $out"
    for r in 0 1; do
        cpus=$(echo "$plan" | sed -n "s/^rank $r: .* cpus \(.*\)$/\1/p")
        line=$(echo "$out" | grep " (local $r): ")
        [[ "$line" == *"rank $r (local $r): bound to cpus $cpus, affinity now $cpus" ]] &&
            ok "mpirun rank $r bound to cpus $cpus" || bad "mpirun rank $r: '$line', want cpus $cpus"
    done
    # launch/mpirun.sh: 3 ranks on this machine (oversubscribed on 2 cores), each under
    # taskset with its planned cpus, whatever the command
    SAMPAN_FOR_SH=$SAMPAN
    if [ "${TOPO[0]}" = "$TOPO_CLI" ]; then
        SAMPAN_FOR_SH=$TMP/sampan
        # shellcheck disable=SC2016  # $1 and $@ belong to the wrapper
        printf '#!/bin/sh\nif [ "$1" = topo ]; then exec "%s" "$@"; fi\nexec "%s" "$@"\n' \
            "$TOPO_CLI" "$SAMPAN" >"$SAMPAN_FOR_SH"
        chmod +x "$SAMPAN_FOR_SH"
    fi
    plan3=$("${TOPO[@]}" --ranks 3 | grep '^rank ')
    out=$(SAMPAN=$SAMPAN_FOR_SH timeout 60 "$(dirname "$0")/../../launch/mpirun.sh" 3 -- \
          sh -c 'echo "local $OMPI_COMM_WORLD_LOCAL_RANK: $(taskset -pc $$)"' 2>&1)
    rc=$?
    for r in 0 1 2; do
        cpus=$(echo "$plan3" | sed -n "s/^rank $r: .* cpus \(.*\)$/\1/p")
        line=$(echo "$out" | grep "^local $r: ")
        [ $rc -eq 0 ] && [ -n "$cpus" ] && [[ "$line" == *"affinity list: $cpus" ]] &&
            ok "mpirun.sh rank $r under taskset -c $cpus" ||
            bad "mpirun.sh rank $r (exit $rc): '$line', want cpus $cpus; output: $out"
    done
    SAMPAN=$SAMPAN_FOR_SH timeout 60 "$(dirname "$0")/../../launch/mpirun.sh" 2 -- sh -c 'exit 3' \
        >/dev/null 2>&1
    rc=$?
    [ $rc -eq 3 ] && ok "mpirun.sh passes a rank's exit code 3" || bad "mpirun.sh exit $rc, want 3"
else
    echo "note: mpirun not installed: the launched-ranks checks are skipped"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
