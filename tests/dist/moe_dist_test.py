#!/usr/bin/env python3
"""tests/dist/moe_dist_test.py — an MoE model (deepseek2) split over ranks gives the single
rank's results bit for bit.

For ../shared/models/tiny-deepseek-f32.gguf (MLA + DeepSeekMoE, 8 experts) and its reference
prompts, under mpirun (oversubscribed) with --tp 2, --pp 2, --ep 2, --ep 4 and --tp 2 --ep 2:
  * `sampan score` over prompt + the single rank's greedy continuation: every logit is
    bitwise the single rank's (experts are combined in expert order whatever holds them);
  * `sampan run --temp 0`: the same greedy tokens;
  * expert parallelism: the layout table names each rank's expert range (contiguous, balanced),
    and the leader's weight bytes drop by exactly the routed experts it does not hold.
A bad layout (--ep larger than the expert count, --ep on a dense model) is refused in one line.
"""
import atexit, shutil, tempfile
import argparse, json, os, subprocess, sys
sys.path.insert(0, os.path.dirname(__file__))
from mpi import mpirun
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true", help="sanitizer builds: one prompt")
args = ap.parse_args()
sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
mpath = os.path.join(shared, "models", "tiny-deepseek-f32.gguf")
rdir = os.path.join(shared, "reference", "tiny-deepseek-f32")
if not os.path.exists(mpath) or not os.path.isdir(rdir):
    print(f"skip: {mpath} not found"); sys.exit(77)
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)

LAYOUTS = [["--tp", "2"], ["--pp", "2"], ["--ep", "2"], ["--ep", "4"], ["--tp", "2", "--ep", "2"]]
E, EXPERT_BYTES = 8, 2 * 3 * 16 * 32 * 4   # routed experts, and their bytes per expert (2 MoE layers x 3 matrices, F32)

def ranks(layout):
    n = 1
    for i in range(0, len(layout), 2):
        n *= int(layout[i + 1])
    return n

def sh(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r

def run(prefix, extra, prompt, n=16):
    r = sh(prefix + [sampan, "run", "-m", mpath, "-p", prompt, "-n", str(n), "--temp", "0",
                     "--ignore-eos", "--json", "-t", "1"] + extra)
    return json.loads(r.stdout), r.stderr

def score(prefix, extra, toks, name):
    path = os.path.join(tmp, name)
    sh(prefix + [sampan, "score", "-m", mpath, "--tokens", ",".join(map(str, toks)), "--logits", path,
                 "-t", "1"] + extra)
    with open(path, "rb") as f:
        return f.read()

prompts = sorted(f for f in os.listdir(rdir) if f.startswith("prompt-") and f.endswith(".json"))
prompts = prompts[:1] if args.quick else prompts[:2]
one_weights = None
for pf in prompts:
    ref = json.load(open(os.path.join(rdir, pf)))
    base, _ = run([], [], ref["prompt"])
    one_weights = base["timings"]["weight_bytes"]
    toks = ref["prompt_tokens"] + base["tokens"][:-1]
    L1 = score([], [], toks, f"one-{pf}.f32")
    for lay in LAYOUTS:
        name = f"{pf} {' '.join(lay)}"
        try:
            L = score(mpirun(ranks(lay)), lay, toks, f"{'_'.join(lay)}-{pf}.f32")
            got, err = run(mpirun(ranks(lay)), lay, ref["prompt"])
        except Exception as e:
            check(False, f"{name}: {e}"); continue
        check(L == L1, f"{name}: {len(L1) // 4} logits bitwise equal to the single rank's")
        check(got["tokens"] == base["tokens"], f"{name}: greedy tokens equal to the single rank's")
        if "--ep" in lay and pf == prompts[0]:
            ep = int(lay[lay.index("--ep") + 1])
            want = [f"experts {E * r // ep}-{E * (r + 1) // ep - 1}" for r in range(ep)]
            check(all(w in err for w in want), f"{name}: layout names the expert ranges {want}")
            held = E // ep   # the leader is ep rank 0
            drop = one_weights - got["timings"]["weight_bytes"]
            if "--tp" not in lay:   # (tp also splits heads, FFN and vocabulary)
                check(drop == (E - held) * EXPERT_BYTES,
                      f"{name}: the leader's weights are {drop} bytes fewer = the {E - held} routed experts it does not hold")

for lay, want in [(["--ep", "16"], "expert parallel size 16"), (["--ep", "2"], "needs an MoE model")]:
    model = mpath if "16" in lay[1] else os.path.join(shared, "models", "tiny-llama-f32.gguf")
    r = subprocess.run(mpirun(ranks(lay)) + [sampan, "run", "-m", model, "-p", "x", "-n", "1"] + lay,
                       capture_output=True, text=True, timeout=300)
    lines = [l for l in r.stderr.splitlines() if want in l]
    check(r.returncode != 0 and lines, f"{' '.join(lay)}: refused, exit {r.returncode}: {lines[:1]}")
finish()
