#!/usr/bin/env bash
# tests/gpu/run.sh — the CUDA backend on a GPU machine, end to end (tests/gpu/README.md: how to
# run it through the device tool, what it costs).
#
#   tests/gpu/run.sh [--quick] [--no-build] [--build-dir DIR] [--shared DIR] [--only STEPS]
#                    [--budget SEC] [--jobs N] [--dry-run]
#   tests/gpu/run.sh --pack DIR [core|rest|extra|MODEL...]
#
# 1. Without a CUDA device (no libcudart, or cudaGetDeviceCount fails or finds none) it prints
#    "skipped: no CUDA device (...)" and exits 77: CI runs it as the meson test `gpu` (suite
#    'gpu', --no-build) and counts it as skipped.
# 2. Preflight (tools, pkg-config modules, NCCL, driver, disk, models: preflight.txt; a missing
#    build dependency ends the run at once with its name), then builds with CUDA into
#    build-gpu (meson setup -Dcuda=enabled -Dbuildtype=release; ninja -jN sampan
#    tests/test_sched kernels/cuda/libsampan-cuda.so; --no-build uses --build-dir's binaries, by
#    default the meson build that runs it), then synthesizes the bench models in the background
#    (CPU, one core each) while the GPU tests run.
# 3. Runs with --backend cuda (a wrapper `sampan` adds it to run/score/serve/bench, so the
#    existing suites drive the GPU unchanged; an mpirun rank of a world larger than the visible
#    GPUs gets --backend cpu, since NCCL allows one rank per GPU, and that is noted), the most
#    important first, so that a short budget still answers them. STEPS (--only, comma list):
#      smoke      one `sampan run`;
#      ref        tests/model/ref_test.py against llama.cpp's logits, the suites at once:
#                 F32 within 1e-3 x std (with the F32 KV cache ref_test.py asks for), F16
#                 1e-2 x std, quantized 0.25 x std with top-1 >= 85% (the CPU's F16 and
#                 quantized tolerances);
#      arch       tests/model/arch_test.py: gemma3 (GeGLU, sliding-window attention, the
#                 embedding scale) and qwen3 on tiny synthetic F32 models against its float64
#                 reference (1e-4 x max |ref|); needs no model files;
#      sched      tests/sched/test_sched.c (batch invariance through the scheduler) with
#                 SAMPAN_TEST_BACKEND=cuda, in the backend's default, invariant mode (also on
#                 a synthesized all-local sliding-window model, tiny-gemma3-swa);
#      bench7b    fast mode (SAMPAN_CUDA_INVARIANT=0): decode of a llama-7b-shaped Q4_0 model
#                 (target >= 60% of HBM peak) and a 512-token prefill of F16 weights (target
#                 >= 50% of the tensor-core peak): figures, and TARGET met / NOT MET (not
#                 counted: what is counted is that the bench runs);
#      http       tests/http/http_test.py against `sampan serve --backend cuda`;
#      tp         tests/gpu/tp_gpu.py: tp=2 and pp=2 over NCCL against one GPU, a killed rank
#                 ending the job (needs 2 visible GPUs, else skipped);
#      bench      tinyllama-1.1b-shaped synthetic models in the default (invariant) mode;
#      schedfast  test_sched with SAMPAN_CUDA_INVARIANT=0, for information (cuBLAS for T > 8
#                 rounds differently: not counted).
#    A step whose models are not there (see --shared) is SKIP, not FAIL.
#    --quick: fewer reference and scheduler models, one tinyllama bench type.
#    --shared DIR: the models and references (default $SAMPAN_SHARED, else ./shared, else
#    ../shared); DIR/models/*.gguf.xz (made by --pack) are unpacked to /tmp first.
#    --pack DIR SET: writes SET's models (xz) and references to DIR, for the device tool's carry
#    (64 MiB a call, the checkout included): core = f16, q4_0, stories260K, tiny-llama-f32 (the
#    first call); rest = q8_0, q4_k_m, q6_k (a second call, --only ref,sched); extra =
#    tiny-qwen2-f32.
#    --budget SEC (default 540, $SAMPAN_GPU_BUDGET): seconds from the start, build included; a
#    step that would not fit is SKIP (budget) and every timeout ends by the budget, so the run
#    stays under the device tool's 600 s per command. 0: no limit.
#    --jobs N: ninja -jN and reference suites at once (default: the CPUs; at most 8 suites).
#    --dry-run (or SAMPAN_GPU_DRY_RUN=1): NOT A GPU RUN. Skips the device check and runs every
#    step with --backend cpu (SAMPAN_TEST_BACKEND=cpu) and small bench models (--layers 1,
#    --pp 32 --tg 8), so that this script's plumbing (paths, options, logs, counting, $OUT,
#    summary, exit status) is checked on a CPU-only machine. Every counted line says so;
#    refused under `meson test` (which then gets the device check and 77, as always).
# 4. Prints one PASS/FAIL/SKIP line per check, "N passed, N failed, N skipped" and the summary
#    again at the end; exits 1 if any failed. With $OUT set, $OUT gets summary.txt, logs.tgz
#    (every log), preflight.txt, nvidia-smi.txt and the bench JSON files, refreshed as each
#    step ends (a run cut short still returns what finished; at most 8 files, as the device
#    tool returns).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build-gpu"
do_build=1
quick=0
dry="${SAMPAN_GPU_DRY_RUN:-0}"
[ "$dry" = 1 ] || dry=0
budget="${SAMPAN_GPU_BUDGET:-}"
jobs=$(nproc 2>/dev/null || echo 4)
only=""
shared_opt=""
pack=""
die() { echo "tests/gpu/run.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --no-build) do_build=0 ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a value"; build="$2"; shift ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a value"; budget="$2"; shift ;;
    --jobs) [ $# -ge 2 ] || die "--jobs needs a value"; jobs="$2"; shift ;;
    --only) [ $# -ge 2 ] || die "--only needs a value"; only="$2"; shift ;;
    --shared) [ $# -ge 2 ] || die "--shared needs a value"; shared_opt="$2"; shift ;;
    --pack) [ $# -ge 2 ] || die "--pack needs a folder"; pack="$2"; shift; shift; break ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,60p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
    esac
    shift
done
case "$jobs" in ''|*[!0-9]*|0) die "--jobs expects a positive number" ;; esac
case "${budget:-x}" in x) ;; *[!0-9]*) die "--budget expects seconds" ;; esac
steps="smoke ref arch sched bench7b http tp bench schedfast"
for s in ${only//,/ }; do
    case " $steps " in *" $s "*) ;; *) die "--only: unknown step '$s' (of: $steps)" ;; esac
done
want() { [ -z "$only" ] || case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
case "$build" in /*) ;; *) build="$PWD/$build" ;; esac
py=$(command -v python3 || true)

# ---- --pack: models (xz) and references for the device tool's carry ----------------------------
if [ -n "$pack" ]; then
    [ $# -gt 0 ] || set -- core
    models=()
    for a in "$@"; do
        case "$a" in
        core) models+=(small-llama-f16 small-llama-q4_0 stories260K tiny-llama-f32) ;;
        rest) models+=(small-llama-q8_0 small-llama-q4_k_m small-llama-q6_k) ;;
        extra) models+=(tiny-qwen2-f32) ;;
        *) models+=("$a") ;;
        esac
    done
    src="${shared_opt:-${SAMPAN_SHARED:-$root/../shared}}"
    [ -d "$src/models" ] || die "--pack: no $src/models"
    if [ -e "$pack" ] && [ ! -f "$pack/.sampan-gpu-carry" ] && [ -n "$(ls -A "$pack" 2>/dev/null)" ]; then
        die "--pack: $pack exists and was not made by --pack: not overwriting it"
    fi
    rm -rf "$pack/models" "$pack/reference"
    mkdir -p "$pack/models" "$pack/reference" && : > "$pack/.sampan-gpu-carry" || exit 1
    for m in "${models[@]}"; do
        [ -f "$src/models/$m.gguf" ] || die "--pack: no $src/models/$m.gguf"
        [ -d "$src/reference/$m" ] && cp -r "$src/reference/$m" "$pack/reference/"
    done
    "$py" - "$src/models" "$pack/models" "${models[@]}" <<'EOF' || exit 1
import lzma, os, sys
src, dst, names = sys.argv[1], sys.argv[2], sys.argv[3:]
for n in names:
    with open(os.path.join(src, n + ".gguf"), "rb") as f, \
         lzma.open(os.path.join(dst, n + ".gguf.xz"), "wb", preset=6) as g:
        while True:
            b = f.read(1 << 22)
            if not b: break
            g.write(b)
    print(f"  {n}.gguf.xz {os.path.getsize(os.path.join(dst, n + '.gguf.xz')) / 2**20:.1f} MiB")
EOF
    carry=$(du -sb "$pack" | cut -f1)
    tree=$(cd "$root" && git ls-files -co --exclude-standard -z 2>/dev/null | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
    tot=$((carry + ${tree:-0}))
    echo "packed ${models[*]} into $pack: $((carry / 1048576)) MiB; with the checkout $((tot / 1048576)) MiB of the 64 MiB a device call carries"
    [ "$tot" -le 67108864 ] || { echo "tests/gpu/run.sh: too large for one call: pack fewer models" >&2; exit 1; }
    case "$pack" in "$root"/*|[!/]*) ;; *) echo "note: $pack is outside the checkout: the device tool carries only paths inside it" ;; esac
    exit 0
fi

# a dry run is never what CI counts: under `meson test` (our parent) it is refused
if [ "$dry" -eq 1 ] && tr '\0' ' ' < "/proc/$PPID/cmdline" 2>/dev/null | grep -q 'meson'; then
    echo "tests/gpu/run.sh: dry run refused under meson test; checking for a device instead" >&2
    dry=0
fi

# ---- 1. a device? (asked of the CUDA runtime itself, before anything is built) ------------
probe() {
    [ -n "$py" ] || { echo "no python3 to ask the CUDA runtime"; return 1; }
    "$py" - <<'EOF'
import ctypes, ctypes.util, glob, sys
names = ["libcudart.so", ctypes.util.find_library("cudart") or ""]
names += sorted(glob.glob("/usr/local/cuda/lib64/libcudart.so*"))
lib = None
for n in names:
    try:
        lib = ctypes.CDLL(n) if n else None
    except OSError:
        lib = None
    if lib: break
if not lib:
    print("no libcudart"); sys.exit(1)
n = ctypes.c_int(0)
rc = lib.cudaGetDeviceCount(ctypes.byref(n))
if rc != 0:
    lib.cudaGetErrorString.restype = ctypes.c_char_p
    print(f"cudaGetDeviceCount: {lib.cudaGetErrorString(rc).decode()}"); sys.exit(1)
if n.value <= 0:
    print("cudaGetDeviceCount found 0 devices"); sys.exit(1)
print(n.value)
EOF
}
if [ "$dry" -eq 1 ]; then
    backend=cpu
    ngpu=2          # pretend two, so that tp_gpu.py's plumbing runs too (on the CPU)
    tag="cpu, DRY RUN"
    : "${budget:=0}"
elif ! why=$(probe); then
    echo "skipped: no CUDA device ($why)"
    exit 77
else
    backend=cuda
    ngpu=$why
    tag="cuda"
    : "${budget:=540}"
fi
[ "$dry" -eq 1 ] && gpu=0 || gpu=1

# logs in a scratch folder, copied to $OUT (summary.txt, logs.tgz, ...) as each step ends
out="${OUT:-}"
tmp=$(mktemp -d /tmp/sampan-gpu-XXXXXX)
logs="$tmp/logs"
mkdir -p "$logs" "$tmp/time"
if [ -n "$out" ]; then
    mkdir -p "$out" || { echo "tests/gpu/run.sh: cannot create \$OUT=$out" >&2; exit 1; }
    out=$(cd "$out" && pwd)
fi
trap 'rm -rf "$tmp/shared"' EXIT
summary="$logs/summary.txt"
: > "$summary"
passed=0 failed=0 skipped=0
note() { echo "$*" | tee -a "$summary"; }
publish() {
    [ -n "$out" ] || return 0
    cp -f "$summary" "$out/summary.txt"
    tar czf "$out/logs.tgz.part" -C "$logs" . 2>/dev/null && mv -f "$out/logs.tgz.part" "$out/logs.tgz"
    local f
    for f in preflight.txt nvidia-smi.txt bench-7b.json bench.json; do
        [ -f "$logs/$f" ] && cp -f "$logs/$f" "$out/$f"
    done
    return 0
}
where() { [ -n "$out" ] && echo "logs.tgz:$(basename "$1")" || echo "$1"; }
banner() {
    [ "$dry" -eq 1 ] || return 0
    note "************************************************************************************"
    note "*** DRY RUN: every step on --backend cpu, no GPU involved. NOT A GPU RUN: these    ***"
    note "*** results say nothing about the CUDA backend and must never be reported as such. ***"
    note "************************************************************************************"
}
# result NAME RC LOG [SECONDS]: 0 pass, 77 skip, else fail (last lines of the log shown); the
# step's time (default: since the last result) in brackets
mark=$SECONDS
result() {
    local dt="[${4:-$((SECONDS - mark))} s]"
    mark=$SECONDS
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); note "PASS $1 $dt"
    elif [ "$2" -eq 77 ]; then skipped=$((skipped + 1)); note "SKIP $1 $dt: $(tail -n 1 "$3")"
    else
        local why="exit $2"
        { [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; } && why="timed out, exit $2"
        failed=$((failed + 1)); note "FAIL $1 $dt ($why, log $(where "$3"))"; tail -n 8 "$3" | sed 's/^/    /'
    fi
    publish
}
# the budget: fits NAME EST is true when about EST seconds are left, else records a SKIP;
# tmo MAX is a timeout of at most MAX seconds that ends by the budget
fits() {
    [ "$budget" -eq 0 ] && return 0
    local l=$((budget - SECONDS))
    [ "$l" -ge "$2" ] && return 0
    skipped=$((skipped + 1))
    note "SKIP $1: budget ($l s of $budget s left, needs ~$2 s)"
    publish
    return 1
}
room() { [ "$budget" -eq 0 ] || [ $((budget - SECONDS)) -ge "$1" ]; }
tmo() {
    if [ "$budget" -eq 0 ]; then echo "$1"; return; fi
    local l=$((budget - SECONDS))
    [ "$l" -lt 5 ] && l=5
    [ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}
# parallel steps: spawn NAME LOG TIMEOUT CMD...; collect waits for them and counts, in order
pids=() pnames=() plogs=()
spawn() {
    local name=$1 log=$2 t=$3
    shift 3
    ( s=$SECONDS; timeout -k 10 "$t" "$@" > "$log" 2>&1; rc=$?
      echo $((SECONDS - s)) > "$tmp/time/${#pids[@]}"; exit $rc ) &
    pids+=($!) pnames+=("$name") plogs+=("$log")
}
collect() {
    local i rc
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}"
        rc=$?
        result "${pnames[$i]}" $rc "${plogs[$i]}" "$(cat "$tmp/time/$i" 2>/dev/null || echo '?')"
    done
    pids=() pnames=() plogs=()
    mark=$SECONDS
}

banner
note "sampan GPU checks ($tag): $ngpu device(s), $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${budget} s${only:+, only $only}"
if [ "$gpu" -eq 1 ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi -L | tee -a "$summary"
    nvidia-smi > "$logs/nvidia-smi.txt" 2>&1
fi

# ---- the models: --shared, $SAMPAN_SHARED, ./shared (it travels with the checkout), ../shared
if [ -n "$shared_opt" ]; then src="$shared_opt"
elif [ -n "${SAMPAN_SHARED:-}" ]; then src="$SAMPAN_SHARED"
elif [ -d "$root/shared/models" ]; then src="$root/shared"
else src="$root/../shared"
fi
case "$src" in /*) ;; *) src="$PWD/$src" ;; esac
shared="$src"
if ls "$src"/models/*.gguf.xz > /dev/null 2>&1; then   # packed by --pack: unpack to /tmp
    shared="$tmp/shared"
    mkdir -p "$shared/models"
    [ -d "$src/reference" ] && ln -s "$src/reference" "$shared/reference"
    for f in "$src"/models/*.gguf; do [ -f "$f" ] && ln -s "$f" "$shared/models/"; done
    t=$SECONDS
    "$py" - "$src/models" "$shared/models" <<'EOF' >> "$logs/unpack.log" 2>&1 ||
import glob, lzma, os, shutil, sys
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.gguf.xz"))):
    with lzma.open(p) as f, open(os.path.join(sys.argv[2], os.path.basename(p)[:-3]), "wb") as g:
        shutil.copyfileobj(f, g, 1 << 22)
    print("unpacked", os.path.basename(p))
EOF
        { note "FAIL unpacking the models of $src (log $(where "$logs/unpack.log"))"; publish; exit 1; }
    note "INFO models unpacked from $src [$((SECONDS - t)) s]"
fi
have=$(cd "$shared/models" 2>/dev/null && ls *.gguf 2>/dev/null | sed 's/\.gguf$//' | tr '\n' ' ')
note "INFO models in $src: ${have:-none}"

# ---- 2. preflight: what the build and the suites need, named before anything is spent ---------
# meson and ninja may come as Python packages only (the GPU image's venv)
if ! command -v meson > /dev/null && [ -n "$py" ] && "$py" -c 'import mesonbuild' 2> /dev/null; then
    meson() { "$py" -m mesonbuild.mesonmain "$@"; }
fi
if ! command -v ninja > /dev/null && [ -n "$py" ] && "$py" -c 'import ninja' 2> /dev/null; then
    ninja() { "$py" -m ninja "$@"; }
fi
need_tools="cc c++ pkg-config timeout tar"
[ "$do_build" -eq 1 ] && need_tools="meson ninja $need_tools"
[ "$do_build" -eq 1 ] && [ "$gpu" -eq 1 ] && need_tools="$need_tools nvcc"
missing=()
{
    echo "preflight $(date -u +%Y-%m-%dT%H:%M:%SZ) ($tag), $(uname -srm), $(nproc) CPUs"
    for tl in $need_tools; do
        p=$(type -p "$tl" || { declare -F "$tl" > /dev/null && echo "$py -m (function)"; }) &&
            echo "tool $tl: $p" || { echo "tool $tl: MISSING"; missing+=("$tl"); }
    done
    for tl in mpirun python3 nvidia-smi; do echo "tool $tl: $(command -v "$tl" || echo 'not found')"; done
    if [ "$do_build" -eq 1 ] && command -v pkg-config > /dev/null; then
        for m in libpcre2-8 libcjson hwloc libmicrohttpd; do
            v=$(pkg-config --modversion "$m" 2>/dev/null) && echo "pkg-config $m: $v" ||
                { echo "pkg-config $m: MISSING"; missing+=("$m"); }
        done
        v=$(pkg-config --modversion ompi-c 2>/dev/null || pkg-config --modversion mpich 2>/dev/null) &&
            echo "mpi: $v" || { command -v mpicc > /dev/null && echo "mpi: mpicc $(command -v mpicc)"; } ||
            { echo "mpi: MISSING (no ompi-c or mpich .pc, no mpicc)"; missing+=(mpi); }
    fi
    if [ "$gpu" -eq 1 ]; then
        cu="${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}"
        echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 1)"
        n=$(ls "$cu"/lib64/libnccl.so* "$cu"/lib/libnccl.so* 2>/dev/null | head -n 1)
        [ -z "$n" ] && n=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so/ {print $NF; exit}')
        if [ -n "$n" ]; then echo "nccl: $n"
        else echo "nccl: MISSING (no libnccl.so in $cu or on the loader path)"; [ "$do_build" -eq 1 ] && missing+=(nccl)
        fi
        command -v nvidia-smi > /dev/null &&
            echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 4 | tr '\n' ';')"
    fi
    mkdir -p "$build" 2>/dev/null
    echo "disk free at $build: $(df -Pk "$build" 2>/dev/null | awk 'NR==2 {printf "%.1f GiB", $4 / 1048576}') (bench models: ~22 GB on a GPU run)"
    echo "memory: $(awk '/MemTotal|MemAvailable/ {printf "%s %.1f GiB ", $1, $2 / 1048576}' /proc/meminfo)"
    echo "models: ${have:-none} (from $src)"
    echo "missing: ${missing[*]:-nothing}"
} > "$logs/preflight.txt" 2>&1
if [ "${#missing[@]}" -gt 0 ]; then
    note "FAIL preflight: missing ${missing[*]} (preflight.txt)"
    cat "$logs/preflight.txt"
    publish
    exit 1
fi
note "PASS preflight [$SECONDS s]"

# ---- 3. build ---------------------------------------------------------------------------------
targets=(sampan tests/test_sched)
[ "$gpu" -eq 1 ] && targets+=(kernels/cuda/libsampan-cuda.so)
if [ "$do_build" -eq 1 ]; then
    t=$SECONDS
    if [ ! -f "$build/build.ninja" ]; then
        # a dry run needs no CUDA toolkit (auto); the GPU run needs the backend (enabled)
        meson setup "$build" "$root" -Dcuda=$([ "$gpu" -eq 1 ] && echo enabled || echo auto) \
            -Dbuildtype=release > "$logs/build.log" 2>&1 ||
            { note "FAIL build: meson setup (log $(where "$logs/build.log"))"; tail -n 20 "$logs/build.log"; publish; exit 1; }
    fi
    ninja -C "$build" -j"$jobs" "${targets[@]}" >> "$logs/build.log" 2>&1 ||
        { note "FAIL build: ninja (log $(where "$logs/build.log"))"; tail -n 30 "$logs/build.log"; publish; exit 1; }
    note "PASS build ($build) [$((SECONDS - t)) s]"
fi
real="$build/sampan"
ts="$build/tests/test_sched"
for f in "$real" "$ts"; do
    [ -x "$f" ] || { note "FAIL no $f"; publish; exit 1; }
done
if [ "$gpu" -eq 1 ] && [ ! -f "$build/kernels/cuda/libsampan-cuda.so" ]; then
    note "FAIL no $build/kernels/cuda/libsampan-cuda.so (built without the CUDA toolkit?)"
    publish
    exit 1
fi
publish

# every run/score/serve/bench of the suites below goes to the GPU
wrap="$tmp/bin"
mkdir -p "$wrap"
cat > "$wrap/sampan" <<EOF
#!/bin/sh
# written by tests/gpu/run.sh: --backend $backend for run/score/serve/bench
sub=\$1
[ \$# -gt 0 ] && shift
case "\$sub" in
run|score|serve|bench)
    be=$backend
    # NCCL refuses two ranks on one GPU: a larger world than the GPUs runs on the CPU (noted)
    if [ "\$be" = cuda ] && [ "\${OMPI_COMM_WORLD_SIZE:-1}" -gt $ngpu ]; then
        be=cpu
        echo "\$sub \$*: world of \$OMPI_COMM_WORLD_SIZE ranks > $ngpu GPU(s): --backend cpu" >> "$logs/cpu-fallback.log"
    fi
    exec "$real" "\$sub" --backend "\$be" "\$@" ;;
*) exec "$real" "\$sub" "\$@" ;;
esac
EOF
chmod +x "$wrap/sampan"
export SAMPAN="$wrap/sampan" SAMPAN_SHARED="$shared" SAMPAN_TEST_BACKEND="$backend"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 PYTHONUNBUFFERED=1
fallbacks() {   # NAME: a note when some of its commands ran on the CPU
    local f="$logs/cpu-fallback.log" n
    [ -f "$f" ] || return 0
    n=$(wc -l < "$f")
    note "INFO $1: $n command(s) ran on the CPU: more mpirun ranks than GPUs ($(where "$logs/cpu-fallback-$1.log"))"
    mv "$f" "$logs/cpu-fallback-$1.log"
}

# ---- bench models: synthesized in the background (CPU, one core each) while the GPU tests run
mdir="${SAMPAN_BENCH_MODELS:-$build/bench-models}"
if [ "$dry" -eq 1 ]; then
    bargs=(--layers 1 --pp 32 --tg 8 --reps 1)
    lay="-L1"
else
    bargs=(--pp 512 --tg 128 --reps 3)
    lay=""
fi
types="F16,Q8_0,Q4_0,Q4_K"
[ "$quick" -eq 1 ] && types="Q4_0"
declare -A synth_pid=()
synth_bg() {   # SHAPE TYPE: the file bench looks for (SHAPE[-LN]-TYPE.gguf), made unless there
    local f="$mdir/$1$lay-$2.gguf"
    [ -s "$f" ] && return 0
    mkdir -p "$mdir"
    ( "$real" model synth -o "$f.part" --shape "$1" --type "$2" --seed 1 ${lay:+--layers 1} &&
          mv "$f.part" "$f" ) > "$logs/synth-$1-$2.log" 2>&1 &
    synth_pid["$1-$2"]=$!
}
wait_synth() {   # SHAPE TYPE...: 0 when every model is there (the wait noted; ends by the budget)
    local s=$1 t rc=0 t0=$SECONDS lim
    lim=$(tmo 300)
    shift
    for t in "$@"; do
        local p="${synth_pid[$s-$t]:-}"
        [ -n "$p" ] || continue
        while kill -0 "$p" 2> /dev/null && [ $((SECONDS - t0)) -lt "$lim" ]; do sleep 1; done
        if kill -0 "$p" 2> /dev/null; then
            echo "synth of $s $t still running after $lim s" >&2
            rc=1
            continue
        fi
        wait "$p" ||
            { rc=1; echo "synth of $s $t failed: $logs/synth-$s-$t.log" >&2; cat "$logs/synth-$s-$t.log" >&2; }
        unset "synth_pid[$s-$t]"
    done
    note "INFO waited $((SECONDS - t0)) s for the $s models ($*), at $SECONDS s"
    mark=$SECONDS
    return $rc
}
if want bench7b; then synth_bg llama-7b Q4_0; synth_bg llama-7b F16; fi
if want bench; then for t in ${types//,/ }; do synth_bg tinyllama-1.1b "$t"; done; fi

# ---- 4a. the binary reaches the device at all (its own message otherwise) ---------------------
if want smoke; then
    mark=$SECONDS
    if [ -f "$shared/models/stories260K.gguf" ]; then
        timeout -k 10 "$(tmo 60)" "$SAMPAN" run -m "$shared/models/stories260K.gguf" \
            -p "Once upon a time" -n 8 > "$logs/smoke.log" 2>&1
        result "smoke: sampan run --backend $tag" $? "$logs/smoke.log"
    else
        echo "skip: $shared/models/stories260K.gguf not found" > "$logs/smoke.log"
        result "smoke" 77 "$logs/smoke.log"
    fi
fi

# ---- 4b. reference suites, all at once (tiny models: process start-up dominates) -------------
refs=(
    "small-llama-f16 --tol 1e-2"
    "small-llama-q8_0 --tol 0.25 --top1 0.85"
    "small-llama-q4_0 --tol 0.25 --top1 0.85"
    "small-llama-q4_k_m --tol 0.25 --top1 0.85"
    "stories260K --tol 1e-3 --full-rel 1e-3"
    "tiny-llama-f32 --tol 1e-3 --full-rel 1e-3"
    "tiny-qwen2-f32 --tol 1e-3 --full-rel 1e-3"
    "small-llama-q6_k --tol 0.25 --top1 0.85"
)
[ "$quick" -eq 1 ] && refs=("${refs[@]:0:4}" "${refs[5]}")
par=$jobs
[ "$par" -gt 8 ] && par=8
if want ref && fits "ref-* (${#refs[@]} suites)" 60; then
    t=$(tmo 300)
    n=0
    for r in "${refs[@]}"; do
        set -- $r
        name=$1
        shift
        spawn "ref-$name ($tag)" "$logs/ref-$name.log" "$t" \
            "$py" "$root/tests/model/ref_test.py" "$name" "$@" --threads 1 \
            --report "$logs/ref-$name.json"
        n=$((n + 1))
        [ $((n % par)) -eq 0 ] && collect
    done
    collect
fi

# ---- 4b'. architectures: Gemma 3 and Qwen 3 on synthetic models (no files needed) -----------
if want arch && fits "arch" 60; then
    timeout -k 10 "$(tmo 300)" "$py" "$root/tests/model/arch_test.py" > "$logs/arch.log" 2>&1
    result "arch: tests/model/arch_test.py ($tag)" $? "$logs/arch.log"
fi

# ---- 4c. scheduler: batch invariance in the default (invariant) mode --------------------------
sched_models=("stories260K" "tiny-llama-f32 --f32" "small-llama-q4_k_m")
[ "$quick" -eq 1 ] && sched_models=("tiny-llama-f32 --f32")
# a sliding-window model (every layer local, window 16; as tests/meson.build's
# sched-tiny-gemma3-swa): blocks that leave the window are dropped (table entries -1) while
# the rest of the batch attends; synthesized here, so it needs no file. A name with a / is a
# path rather than a model of $shared/models.
if ! want sched && ! want schedfast; then
    :
elif "$real" model synth -o "$tmp/tiny-gemma3-swa.gguf" --shape tiny-gemma3-swa --type F32 \
         --seed 3 > "$logs/synth-swa.log" 2>&1; then
    sched_models+=("$tmp/tiny-gemma3-swa --f32 --no-penalties")
else
    note "INFO could not synthesize tiny-gemma3-swa (see synth-swa.log): no sliding-window sched run"
fi
# sched_run MODE: test_sched of every model at once with SAMPAN_CUDA_INVARIANT=MODE
sched_run() {
    local mode=$1 r name path log rc i=0 dt t
    local -a names=() spids=()
    t=$(tmo 300)
    for r in "${sched_models[@]}"; do
        set -- $r
        name=$1
        shift
        case "$name" in */*) path="$name.gguf" name=${name##*/} ;; *) path="$shared/models/$name.gguf" ;; esac
        log="$logs/sched-$name-invariant$mode.log"
        ( s=$SECONDS
          SAMPAN_CUDA_INVARIANT=$mode timeout -k 10 "$t" "$ts" "$path" "$@" \
              > "$log" 2>&1
          rc=$?; echo $((SECONDS - s)) > "$tmp/time/sched.${#spids[@]}"; exit $rc ) &
        spids+=($!) names+=("$name")
    done
    for i in "${!spids[@]}"; do
        wait "${spids[$i]}"
        rc=$?
        dt=$(cat "$tmp/time/sched.$i" 2>/dev/null || echo '?')
        name=${names[$i]}
        log="$logs/sched-$name-invariant$mode.log"
        if [ "$rc" -eq 0 ] && ! grep -q "^backend $backend" "$log"; then
            echo "test_sched did not run on the $backend backend (no 'backend $backend' line)" >> "$log"
            rc=1
        fi
        if [ "$mode" -eq 1 ]; then
            result "sched-$name ($tag, SAMPAN_CUDA_INVARIANT=1)" $rc "$log" "$dt"
        else
            note "INFO sched-$name ($tag, fast mode SAMPAN_CUDA_INVARIANT=0) [$dt s]: exit $rc, $(grep -c '^FAIL' "$log") FAIL lines (not counted)"
        fi
    done
    mark=$SECONDS
    publish
}
want sched && fits "sched-* (invariant)" 30 && sched_run 1

# ---- 4d. bench: the issue's targets, fast mode ------------------------------------------------
# targets_of JSON: the TARGET lines of a bench JSON (device figures; n/a on the CPU)
targets_of() {
    "$py" - "$1" <<'EOF' | tee -a "$summary"
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
def one(typ, test, key, goal, what):
    r = [x for x in runs if x["type"] == typ and x["test"] == test]
    if not r:
        print(f"TARGET {what}: no {typ} {test} run"); return
    r = r[0]
    if key not in r:
        print(f"TARGET {what}: n/a ({r['tokens_per_s']:.1f} tok/s, no device figures: not a GPU run)"); return
    f = r[key]
    print(f"TARGET {what}: {100*f:.1f}% (need {100*goal:.0f}%; {r['tokens_per_s']:.1f} tok/s, "
          f"{r['weight_gbs']:.0f} GB/s, {r['gflops']/1e3:.1f} TFLOP/s) " + ("met" if f >= goal else "NOT MET"))
one("Q4_0", "tg", "frac_hbm_peak", 0.60, "llama-7b Q4_0 decode, of the HBM peak")
one("F16", "pp", "frac_tc_peak", 0.50, "llama-7b F16 512-token prefill, of the tensor-core peak")
EOF
    publish
}
# bench_step NAME LOG JSON MAXSEC ARGS...: one bench run, counted, its table in the summary
bench_step() {
    local name=$1 log=$2 json=$3 t rc
    t=$(tmo "$4")
    shift 4
    timeout -k 10 "$t" "$SAMPAN" bench --threads 1 "${bargs[@]}" --model-dir "$mdir" \
        --json "$json" "$@" > "$log" 2>&1
    rc=$?
    result "$name" $rc "$log"
    if [ "$rc" -eq 0 ]; then
        grep -v '^# making' "$log" | tail -n 12 | sed 's/^/    /' | tee -a "$summary"
        grep -q '^# making' "$log" && note "INFO $name: bench made a model itself (the background synthesis missed its name?)"
        publish
    fi
    return $rc
}
do_http() {
    mark=$SECONDS
    timeout -k 10 "$(tmo 300)" "$py" "$root/tests/http/http_test.py" > "$logs/http.log" 2>&1
    result "http (sampan serve --backend $tag)" $? "$logs/http.log"
    fallbacks http
    http_done=1
}
http_done=0
synth_running() {   # SHAPE TYPE...: true while one of them is still being made
    local s=$1 t
    shift
    for t in "$@"; do
        [ -n "${synth_pid[$s-$t]:-}" ] && kill -0 "${synth_pid[$s-$t]}" 2> /dev/null && return 0
    done
    return 1
}
# the 7b models take ~1.5 min to make: serving fills the wait when they are not ready yet
if want bench7b && want http && synth_running llama-7b Q4_0 F16 && room 120; then
    note "INFO the llama-7b models are still being made: http first"
    do_http
fi
if want bench7b && fits "bench-7b (fast mode)" 60; then
    if ! wait_synth llama-7b Q4_0 F16 2> "$logs/bench-7b.log"; then
        result "bench-7b ($tag, fast mode): synthesizing the models" 1 "$logs/bench-7b.log"
    elif SAMPAN_CUDA_INVARIANT=0 bench_step \
            "bench-7b ($tag, fast mode SAMPAN_CUDA_INVARIANT=0: llama-7b Q4_0 decode, F16 prefill)" \
            "$logs/bench-7b.log" "$logs/bench-7b.json" 240 --shape llama-7b --types Q4_0,F16 \
            < /dev/null; then
        targets_of "$logs/bench-7b.json"
    fi
fi

# ---- 4e. serving --------------------------------------------------------------------------------
if [ "$http_done" -eq 0 ] && want http && fits "http" 60; then
    do_http
fi

# ---- 4f. tensor and pipeline parallel over NCCL ----------------------------------------------
if ! want tp; then :
elif [ "$ngpu" -lt 2 ]; then
    echo "skip: tp=2 needs 2 visible GPUs, $ngpu visible" > "$logs/tp-gpu.log"
    result "tp-gpu" 77 "$logs/tp-gpu.log"
elif fits "tp-gpu" 120; then
    mark=$SECONDS
    timeout -k 10 "$(tmo 400)" "$py" "$here/tp_gpu.py" > "$logs/tp-gpu.log" 2>&1
    result "tp-gpu ($tag: tp=2, pp=2, killed rank)" $? "$logs/tp-gpu.log"
    fallbacks tp-gpu
fi

# ---- 4g. bench, default (invariant) mode, tinyllama-1.1b -------------------------------------
if want bench && fits "bench tinyllama-1.1b" 60; then
    if ! wait_synth tinyllama-1.1b ${types//,/ } 2> "$logs/bench.log"; then
        result "bench ($tag, tinyllama-1.1b): synthesizing the models" 1 "$logs/bench.log"
    else
        bench_step "bench ($tag, default mode, tinyllama-1.1b: $types)" "$logs/bench.log" \
            "$logs/bench.json" 240 --shape tinyllama-1.1b --types "$types" < /dev/null
    fi
fi

# ---- 4h. scheduler in the fast mode, for information ------------------------------------------
want schedfast && fits "sched-* (fast mode, not counted)" 30 && sched_run 0

# models still being made when the budget ran out: not left behind (nor their parts)
for k in "${!synth_pid[@]}"; do kill "${synth_pid[$k]}" 2> /dev/null; done
wait 2> /dev/null
rm -f "$mdir"/*.part 2> /dev/null

note "$passed passed, $failed failed, $skipped skipped ($tag, $SECONDS s)"
banner
[ "$dry" -eq 1 ] && note "DRY RUN finished: exit status $([ "$failed" -eq 0 ] && echo 0 || echo 1) (NOT A GPU RUN)"
publish
echo "---- summary.txt${out:+ (and logs.tgz in $out)}; logs in $logs ----"
grep -v '^\*\*\*\|^\*\*\*\*' "$summary"
[ "$failed" -eq 0 ]
