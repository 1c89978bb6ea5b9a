#!/usr/bin/env python3
"""tests/perf/moe_bench_test.py — what `sampan bench` counts for an MoE model (not speed).

On ../shared/models/tiny-deepseek-f32.gguf (F32: a tensor's bytes are 4 x its elements), the
tg row's weight_bytes_per_token must be the active bytes computed here from the file's tensor
list: every 2-D layer matrix and the per-head 3-D ones (attn_k_b, attn_v_b) whole, k / E of
each 3-D routed-expert tensor (a token reads k of the E experts), the output head, and the
norm vectors the pass streams (two per layer and the final one: 4 x C bytes each); the pp
row's must be every matrix once over its tokens."""
import json, os, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402
from gguf_py import meta, parse   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
path = os.path.join(shared, "models", "tiny-deepseek-f32.gguf")
if not os.path.exists(path):
    print(f"skip: {path} not found"); sys.exit(77)
kvs, tensors = parse(path)
md = meta(kvs)
E, k, C, L = (md["deepseek2." + x] for x in ("expert_count", "expert_used_count", "embedding_length", "block_count"))
active = every = 4.0 * (2 * L + 1) * C
for name, dims, raw in tensors:
    if not name.startswith("blk.") and name != "output.weight" or len(dims) < 2:
        continue
    share = k / E if name.endswith("_exps.weight") else 1.0
    active += share * len(raw)
    every += len(raw)
with tempfile.TemporaryDirectory(prefix="sampan-test-") as tmp:
    out = os.path.join(tmp, "b.json")
    r = subprocess.run([sampan, "bench", "-m", path, "--threads", "1", "--pp", "8", "--tg", "4", "--quick",
                        "--json", out], capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"sampan bench on tiny-deepseek ({r.stderr.strip()[-200:]})")
    runs = {x["test"]: x for x in json.load(open(out))["runs"]} if r.returncode == 0 else {}
tg, pp = runs.get("tg", {}), runs.get("pp", {})
check(abs(tg.get("weight_bytes_per_token", 0) - active) < 1, f"tg: active weight bytes per token {tg.get('weight_bytes_per_token')} = {active:.0f} (experts at {k}/{E})")
check(abs(pp.get("weight_bytes_per_token", 0) * 8 - every) < 8, f"pp: every matrix once over 8 tokens: {pp.get('weight_bytes_per_token', 0) * 8:.0f} = {every:.0f}")
finish()
