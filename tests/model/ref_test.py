#!/usr/bin/env python3
"""tests/model/ref_test.py — our forward pass against llama.cpp's reference outputs.

For one model of ../shared/models and each ../shared/reference/<model>/prompt-N.json:
  1. `sampan run --temp 0 --ignore-eos --json`: prompt_tokens must equal the reference's and,
     when --greedy is given, the free-running greedy continuation must equal `greedy`;
  2. `sampan score --tokens <prompt + greedy[:-1]> --logits F`: at every position and every
     listed id, |ours - ref| <= tol * std; top-1 must agree at >= --top1 of the positions;
  3. where <prompt>.prompt_logits.f32 exists: the full prompt logits match within --full-rel
     (max-norm relative), agree in top-1 (--full-top1), and their first --exact-positions rows
     are bit-identical (for implementations that keep llama.cpp's float orders).
Prints one line per check and "N passed, N failed"; exits 77 when ../shared is absent.
"""
import atexit, shutil, tempfile
import argparse, array, json, os, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--tol", type=float, required=True, help="max |ours-ref| / std")
ap.add_argument("--top1", type=float, default=1.0, help="min fraction of positions with equal top-1")
ap.add_argument("--tol-frac", type=float, default=1.0,
                help="--tol must hold at >= this fraction of positions (MoE: a quantized model's "
                     "routing flips at near-ties, and the positions after a flip differ by more)")
ap.add_argument("--greedy", action="store_true", help="free-running greedy must match exactly")
ap.add_argument("--full-rel", type=float, default=None)
ap.add_argument("--full-top1", type=float, default=None,
                help="the full prompt logits' top-1 must agree at >= this fraction of positions")
ap.add_argument("--greedy-prefix", type=int, default=0,
                help="the first N greedy tokens must equal the reference's on >= --greedy-min prompts")
ap.add_argument("--greedy-min", type=int, default=0)
ap.add_argument("--exact-positions", type=int, default=0,
                help="the first N rows of each .prompt_logits.f32 must be bit-identical to ours")
ap.add_argument("--threads", default="2")
ap.add_argument("--launcher", default="", help="prefix for every sampan command, e.g. 'mpirun -np 4'")
ap.add_argument("--sampan-args", default="", help="extra arguments for run and score, e.g. '--tp 2 --pp 2'")
ap.add_argument("--report", help="write {worst, top1} over all prompts as JSON here")
ap.add_argument("--model-path", help="run this file against the model's references (e.g. our own quantization)")
ap.add_argument("--quantize", help="run `sampan model quantize` of the model to this type (or mix) first, and test that")
args = ap.parse_args()

sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
mpath = args.model_path or os.path.join(shared, "models", args.model + ".gguf")
rdir = os.path.join(shared, "reference", args.model)
if not os.path.exists(mpath) or not os.path.isdir(rdir):
    print(f"skip: {mpath} or {rdir} not found")
    sys.exit(77)
# outputs of this run in a private directory: concurrent suites (CI and a developer's build)
# must not share file names
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)
if args.quantize:
    qpath = os.path.join(tmp, f"{args.model}-{args.quantize}.gguf")
    r = subprocess.run([sampan, "model", "quantize", mpath, qpath, args.quantize], capture_output=True, text=True, timeout=600)
    check(r.returncode == 0, f"sampan model quantize {args.model} {args.quantize}: {r.stderr.strip().splitlines()[-1:]}")
    if r.returncode != 0:
        finish()
    mpath = qpath
overall_worst, overall_top1 = 0.0, 1.0

def sh(cmd):
    cmd = args.launcher.split() + cmd + args.sampan_args.split()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout

prompts = sorted(f for f in os.listdir(rdir) if f.startswith("prompt-") and f.endswith(".json"))
prefix_ok = 0
for pf in prompts:
    ref = json.load(open(os.path.join(rdir, pf)))
    name = f"{args.model}/{pf}"
    V = ref.get("n_vocab")
    ng = len(ref["greedy"])
    try:
        run = json.loads(sh([sampan, "run", "-m", mpath, "-p", ref["prompt"], "-n", str(ng),
                             "--temp", "0", "--ignore-eos", "--json", "-t", args.threads,
                             "--kv-type", "f32"]))   # the F32 tolerances need an F32 KV cache
    except Exception as e:
        check(False, f"{name}: run: {e}")
        continue
    check(run["prompt_tokens"] == ref["prompt_tokens"],
          f"{name}: prompt tokens {run['prompt_tokens'][:8]}... vs ref {ref['prompt_tokens'][:8]}...")
    if args.greedy_prefix:
        k = args.greedy_prefix
        first = next((i for i, (a, b) in enumerate(zip(run["tokens"], ref["greedy"])) if a != b), len(run["tokens"]))
        prefix_ok += run["tokens"][:k] == ref["greedy"][:k]
        print(f"info {name}: greedy equal for the first {first} tokens (want {k} on {args.greedy_min} prompts)")
    if args.greedy:
        same = sum(1 for a, b in zip(run["tokens"], ref["greedy"]) if a == b)
        first = next((i for i, (a, b) in enumerate(zip(run["tokens"], ref["greedy"])) if a != b), None)
        check(run["tokens"] == ref["greedy"],
              f"{name}: greedy continuation equal ({same}/{ng} tokens, first difference at {first})")

    toks = ref["prompt_tokens"] + ref["greedy"][:-1]
    lpath = os.path.join(tmp, f"ref_test_{args.model}_{pf}.f32")
    try:
        sc = json.loads(sh([sampan, "score", "-m", mpath, "--tokens", ",".join(map(str, toks)),
                            "--logits", lpath, "-t", args.threads, "--kv-type", "f32"]))
    except Exception as e:
        check(False, f"{name}: score: {e}")
        continue
    logits = array.array("f")
    with open(lpath, "rb") as f:
        logits.frombytes(f.read())
    os.unlink(lpath)
    V = V or sc["n_vocab"]
    npos = len(ref["positions"])
    check(len(logits) == npos * V, f"{name}: {npos} positions x {V} logits returned")
    worst, worst_at, top1, within = 0.0, -1, 0, 0
    for i, pos in enumerate(ref["positions"]):
        row = logits[i * V:(i + 1) * V]
        pworst = max(abs(row[tid] - val) / pos["std"] for tid, val in pos["top"])
        within += pworst <= args.tol
        if pworst > worst: worst, worst_at = pworst, i
        best = max(range(V), key=row.__getitem__)
        if best == pos["top"][0][0]: top1 += 1
        elif abs(row[best] - row[pos["top"][0][0]]) == 0: top1 += 1   # exact tie: either id
    overall_worst = max(overall_worst, worst)
    overall_top1 = min(overall_top1, top1 / npos)
    if args.tol_frac >= 1.0:
        check(worst <= args.tol, f"{name}: max |ours-ref|/std = {worst:.3g} at position {worst_at} (tol {args.tol:g})")
    else:
        check(within >= args.tol_frac * npos - 1e-9,
              f"{name}: |ours-ref|/std <= {args.tol:g} at {within}/{npos} positions (need {args.tol_frac:.0%}; "
              f"worst {worst:.3g} at position {worst_at})")
    check(top1 >= args.top1 * npos - 1e-9, f"{name}: top-1 equal at {top1}/{npos} positions (need {args.top1:.0%})")

    fp = os.path.join(rdir, pf.replace(".json", ".prompt_logits.f32"))
    if args.full_rel is not None and os.path.exists(fp):
        full = array.array("f")
        with open(fp, "rb") as f:
            full.frombytes(f.read())
        n = len(full)
        mx = max(abs(x) for x in full)
        d = max(abs(full[j] - logits[j]) for j in range(n))
        check(d / mx <= args.full_rel, f"{name}: full prompt logits max-norm relative error {d / mx:.3g} (tol {args.full_rel:g})")
    if args.exact_positions and os.path.exists(fp):
        full = array.array("f")
        with open(fp, "rb") as f:
            full.frombytes(f.read())
        k = min(args.exact_positions, len(full) // V)
        n_diff = sum(1 for j in range(k * V) if full[j] != logits[j])
        check(n_diff == 0, f"{name}: full prompt logits of the first {k} positions bit-identical "
                           f"({n_diff} of {k * V} differ)")
    if args.full_top1 is not None and os.path.exists(fp):
        full = array.array("f")
        with open(fp, "rb") as f:
            full.frombytes(f.read())
        n_p = len(full) // V
        agree = 0
        for i in range(n_p):
            a, b = full[i * V:(i + 1) * V], logits[i * V:(i + 1) * V]
            ra, rb = max(range(V), key=a.__getitem__), max(range(V), key=b.__getitem__)
            agree += ra == rb or b[ra] == b[rb]
        check(agree >= args.full_top1 * n_p - 1e-9,
              f"{name}: full prompt logits top-1 equal at {agree}/{n_p} positions (need {args.full_top1:.0%})")

if args.greedy_prefix:
    check(prefix_ok >= args.greedy_min,
          f"first {args.greedy_prefix} greedy tokens equal on {prefix_ok}/{len(prompts)} prompts (need {args.greedy_min})")
if args.report:
    json.dump({"worst": overall_worst, "top1": overall_top1}, open(args.report, "w"))
finish()
