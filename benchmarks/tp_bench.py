#!/usr/bin/env python3
"""benchmarks/tp_bench.py — does tensor parallelism pay on one node? Decode tokens/s of
tp=1 with 2 threads against tp=2 (mpirun, 1 thread per rank) on tinyllama-1.1b-shaped
synthetic models (Q4_0, Q8_0), runs interleaved (A B A B ...) so both see the same machine,
best of --repeat; plus `sampan bench allreduce` over 4 KiB-64 MiB with 2 ranks (algbw and
busbw as nccl-tests define them). Table to stdout, JSON to --json.

  benchmarks/tp_bench.py [--sampan build/sampan] [--models-dir build/bench-models]
                         [--types Q4_0,Q8_0] [--tokens 64] [--repeat 3] [--json tp_bench.json]
"""
import argparse, json, os, platform, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--sampan", default="build/sampan")
ap.add_argument("--models-dir", default="build/bench-models")
ap.add_argument("--types", default="Q4_0,Q8_0")
ap.add_argument("--shape", default="tinyllama-1.1b")
ap.add_argument("--layers", type=int, default=0)
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--json", default="tp_bench.json")
args = ap.parse_args()
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1")
MPI2 = ["mpirun", "-np", "2", "--mca", "btl", "self,vader", "--bind-to", "core"]

def decode_tps(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"tp_bench: {' '.join(cmd[:6])}... failed: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)["timings"]["decode_tokens_per_s"]

os.makedirs(args.models_dir, exist_ok=True)
rows = []
for ty in args.types.split(","):
    model = os.path.join(args.models_dir, f"{args.shape}-{ty}{'-l%d' % args.layers if args.layers else ''}.gguf")
    if not os.path.exists(model):
        print(f"# making {model}", flush=True)
        subprocess.run([args.sampan, "model", "synth", "-o", model, "--shape", args.shape, "--type", ty]
                       + (["--layers", str(args.layers)] if args.layers else []), check=True, env=env)
    run = ["run", "-m", model, "-p", "Once upon a time", "-n", str(args.tokens), "--temp", "0",
           "--ignore-eos", "--json"]
    t1, t2 = [], []
    for _ in range(args.repeat):
        t1.append(decode_tps([args.sampan] + run + ["-t", "2"]))
        t2.append(decode_tps(MPI2 + [args.sampan] + run + ["-t", "1", "--tp", "2"]))
    rows.append({"model": os.path.basename(model), "type": ty, "tp1_threads": 2, "tp2_threads_per_rank": 1,
                 "tp1_decode_tokens_per_s": max(t1), "tp2_decode_tokens_per_s": max(t2),
                 "ratio_tp2_over_tp1": max(t2) / max(t1), "tp1_runs": t1, "tp2_runs": t2})

with tempfile.NamedTemporaryFile(suffix=".json") as f:
    r = subprocess.run(MPI2 + [args.sampan, "bench", "allreduce", "--json", f.name], capture_output=True,
                       text=True, env=env, timeout=1800)
    allreduce = json.load(open(f.name)) if r.returncode == 0 else {"error": r.stderr.strip()[-300:]}

out = {"benchmark": "sampan-tp-decode-1", "host": platform.node(), "cpu_count": os.cpu_count(),
       "decode": rows, "allreduce_2ranks": allreduce}
json.dump(out, open(args.json, "w"), indent=1)
print(f"{'model':<28} {'tp1 x2thr tok/s':>16} {'tp2 x1thr tok/s':>16} {'ratio':>6}")
for r in rows:
    print(f"{r['model']:<28} {r['tp1_decode_tokens_per_s']:16.2f} {r['tp2_decode_tokens_per_s']:16.2f} {r['ratio_tp2_over_tp1']:6.2f}")
for row in allreduce.get("results", []) if isinstance(allreduce, dict) else []:
    print("allreduce", {k: row[k] for k in row if k in ("bytes", "time_us", "algbw_gbps", "busbw_gbps")})
print(f"# JSON: {args.json}")
