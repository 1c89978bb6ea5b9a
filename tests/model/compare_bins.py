#!/usr/bin/env python3
"""tests/model/compare_bins.py — are two sampan binaries bit-identical on the CPU?

  compare_bins.py OLD_SAMPAN NEW_SAMPAN [--models DIR] [--threads 1,2,3] [--batches 1,7,70]
                  [--new-args "--kv-type f32"]

For every model in DIR (default ../shared/models) and the four reference prompts, runs
`sampan score --logits` (every prompt position's full logits) with each thread count and prompt
batch size, and `sampan run --temp 0 --json` (greedy tokens), with both binaries, and compares
the bytes. A developer's check that a refactor kept every logit (the bit-identity promise of
the backend seam); exits 1 at the first difference.
"""
import argparse, filecmp, glob, json, os, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("old")
ap.add_argument("new")
ap.add_argument("--models", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "models"))
ap.add_argument("--threads", default="1,2,3")
ap.add_argument("--batches", default="1,7,70")
ap.add_argument("--new-args", default="", help="extra arguments for the new binary only")
ap.add_argument("--tokens", type=int, default=16, help="greedy tokens for run")
a = ap.parse_args()
prompts = ["Once upon a time", "The Hong Kong AI Supercomputing Centre in Cyberport",
           "香港生成式人工智能研發中心", '  Numbers 12345, symbols <tag> & "quotes"\n\ttabs and newlines.']
tmp = tempfile.mkdtemp(prefix="sampan-cmp-")
models = sorted(glob.glob(os.path.join(a.models, "*.gguf")))
if not models:
    sys.exit(f"compare_bins: no models in {a.models}")
n = 0
for m in models:
    skipped = False
    for pi, p in enumerate(prompts):
        for th in a.threads.split(","):
            for bs in a.batches.split(","):
                outs = []
                for k, (b, extra) in enumerate([(a.old, []), (a.new, a.new_args.split())]):
                    f = os.path.join(tmp, f"{k}.f32")
                    r = subprocess.run([b, "score", "-m", m, "-p", p, "-t", th, "-b", bs, "--logits", f]
                                       + extra, capture_output=True, text=True)
                    if r.returncode and k == 0 and "unsupported architecture" in r.stderr:
                        break
                    if r.returncode:
                        sys.exit(f"compare_bins: {b} score failed on {m}: {r.stderr.strip()}")
                    outs.append(f)
                if len(outs) < 2:
                    break
                if not filecmp.cmp(outs[0], outs[1], shallow=False):
                    sys.exit(f"DIFFER: {os.path.basename(m)} prompt {pi+1} -t {th} -b {bs}")
                n += 1
        if len(outs) < 2:
            print(f"{os.path.basename(m)}: skipped (the old binary cannot load it)")
            skipped = True
            break
        runs = []
        for b, extra in [(a.old, []), (a.new, a.new_args.split())]:
            r = subprocess.run([b, "run", "-m", m, "-p", p, "-n", str(a.tokens), "--temp", "0",
                                "--ignore-eos", "--json", "-t", "2"] + extra, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"compare_bins: {b} run failed on {m}: {r.stderr.strip()}")
            runs.append(json.loads(r.stdout)["tokens"])
        if runs[0] != runs[1]:
            sys.exit(f"DIFFER (greedy): {os.path.basename(m)} prompt {pi+1}: {runs[0]} vs {runs[1]}")
        n += 1
    if not skipped:
        print(f"{os.path.basename(m)}: identical", flush=True)
print(f"compare_bins: {n} comparisons, all bit-identical")
