#!/usr/bin/env python3
"""tests/model/cli_test.py — the sampan CLI as a user drives it: options and their errors,
--json schema, stop strings, seeds, thread defaults from the affinity mask, `info` on every
shared model, `model synth` determinism and every synth type, `model quantize` round trips.
Expected values come from ../shared/reference (stories260K's greedy text) or from the
definition of the option, never from an earlier run of ours."""
import atexit, shutil, tempfile
import hashlib, json, os, re, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
# outputs of this run in a private directory: concurrent suites (CI and a developer's build)
# must not share file names
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)
stories = os.path.join(shared, "models", "stories260K.gguf")

def run(args, prefix=()):
    r = subprocess.run(list(prefix) + [sampan] + args, capture_output=True, timeout=300)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")

def one_line_error(rc, err, code=None):
    lines = [l for l in err.splitlines() if l.strip()]
    return rc != 0 and rc < 128 and (code is None or rc == code) and len(lines) == 1 and "sampan:" in lines[0]

# ---- usage errors: exit 2, one line
for args, what in [(["frobnicate"], "unknown command"), (["run", "-p", "x"], "run without -m"),
                   (["run", "-m", "x.gguf", "-p", "x", "-n", "ten"], "non-numeric -n"),
                   (["run", "-m", "x.gguf", "-p", "x", "--temp", "-1"], "negative temperature"),
                   (["run", "-m", "x.gguf", "-p", "x", "--bogus", "1"], "unknown option"),
                   (["run", "-m"], "option without value"), (["score", "-m", "x.gguf"], "score without input"),
                   (["model", "synth", "-o", "/tmp/x.gguf", "--type", "Q9_9"], "unknown synth type"),
                   (["run", "-m", "x.gguf", "-p", "x", "--kv-type", "q8_0"], "run --kv-type q8_0"),
                   (["run", "-m", "x.gguf", "-p", "x", "--kv-type", "F16"], "run --kv-type F16 (names are lower case)"),
                   (["run", "-m", "x.gguf", "-p", "x", "--kv-type"], "run --kv-type without value"),
                   (["score", "-m", "x.gguf", "-p", "x", "--kv-type", "f8"], "score --kv-type f8"),
                   (["serve", "-m", "x.gguf", "--kv-type", "int8"], "serve --kv-type int8"),
                   (["bench", "--kv-type", "f64"], "bench --kv-type f64"),
                   (["run", "-m", "x.gguf", "-p", "x", "--backend", "tpu"], "run --backend tpu"),
                   (["score", "-m", "x.gguf", "-p", "x", "--backend", "gpu"], "score --backend gpu"),
                   (["serve", "-m", "x.gguf", "--backend", ""], "serve --backend ''"),
                   (["bench", "--backend", "metal"], "bench --backend metal")]:
    rc, out, err = run(args)
    check(one_line_error(rc, err, 2), f"usage error ({what}): exit {rc}, stderr {err.strip()!r}")
rc, out, err = run(["run", "-m", "/nonexistent.gguf", "-p", "x"])
check(one_line_error(rc, err, 1) and "nonexistent" in err, f"missing model file: exit {rc}, {err.strip()!r}")
rc, out, err = run(["--help"])
check(rc == 0 and "run" in out and "score" in out, "--help lists the commands")

if not os.path.exists(stories):
    print(f"skip: {stories} not found"); sys.exit(77)
ref = json.load(open(os.path.join(shared, "reference", "stories260K", "prompt-1.json")))
gtext = bytes.fromhex(ref["greedy_text_hex"]).decode()

# ---- prompt longer than the context
rc, out, err = run(["run", "-m", stories, "-p", "Once upon a time " * 40, "-n", "4", "-t", "1"])
check(one_line_error(rc, err, 1) and "run: prompt of " in err and "+ 4 to generate exceeds the context of " in err,
      f"prompt beyond the context: exit {rc}, {err.strip()!r}")
rc, out, err = run(["run", "-m", stories, "-p", "Once upon a time", "-n", "200", "-t", "1"])
check(one_line_error(rc, err, 1) and "context" in err, f"prompt + n beyond the context: {err.strip()!r}")

# ---- --json schema and content; streaming text equals the reference greedy text
rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "64", "--temp", "0", "--ignore-eos", "--json", "-t", "1"])
j = json.loads(out) if rc == 0 else {}
t = j.get("timings", {})
check(rc == 0 and j.get("prompt_tokens") == ref["prompt_tokens"] and j.get("tokens") == ref["greedy"],
      "run --json: prompt_tokens and tokens equal the reference")
check(j.get("text") == gtext, "run --json: text equals the reference greedy_text")
check(all(t.get(k, 0) > 0 for k in ("prompt_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes")),
      f"run --json timings: {t}")
rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "64", "--temp", "0", "--ignore-eos", "-t", "1"])
check(rc == 0 and out.rstrip("\n") == gtext, "streamed text equals the reference greedy text")
check("tokens/s" in err and "peak RSS" in err, f"stderr reports rates and RSS: {err.strip()!r}")

# ---- stop strings: cut before the first occurrence
stop = "Lily"
rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "64", "--temp", "0", "--stop", stop, "--json", "-t", "1"])
j = json.loads(out) if rc == 0 else {}
check(j.get("text") == gtext[:gtext.index(stop)] and j.get("stop_reason") == "stop",
      f"--stop {stop!r}: text {j.get('text')!r}")
rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "64", "--temp", "0", "--stop", stop, "-t", "1"])
check(out.rstrip("\n") == gtext[:gtext.index(stop)], "--stop while streaming holds back the stop string")

# ---- stop strings: the scheduler's limit of 4, the same as serve's
four = ["Lily", "xyzzy", "qwert", "zzzz"]
rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "64", "--temp", "0", "--json", "-t", "1"]
                   + [a for st in four for a in ("--stop", st)])
j = json.loads(out) if rc == 0 else {}
check(j.get("text") == gtext[:gtext.index("Lily")] and j.get("stop_reason") == "stop", f"--stop x4 accepted: {j.get('text')!r}")
rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "8", "-t", "1"]
                   + [a for st in four + ["five"] for a in ("--stop", st)])
check(one_line_error(rc, err, 2) and "at most 4" in err, f"--stop x5 refused: exit {rc}, {err.strip()!r}")
rc, out, err = run(["run", "--help"])
check(rc == 0 and "at most 4" in out and "--kv-type" in out and "--backend" in out, "run --help: the stop limit, --kv-type, --backend")

# ---- --kv-type: the KV cache of an f16 run is half the f32 one (same context), same prompt handling
kv = {}
for ty in ("f32", "f16", "bf16"):
    rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "8", "--temp", "0", "--json", "-t", "1",
                        "-c", "256", "--kv-type", ty])
    kv[ty] = json.loads(out)["timings"].get("kv_cache_bytes") if rc == 0 else None
check(kv["f32"] and kv["f16"] and kv["f16"] * 2 == kv["f32"] and kv["bf16"] == kv["f16"],
      f"kv_cache_bytes at -c 256: f32 {kv['f32']}, f16 {kv['f16']} (half), bf16 {kv['bf16']}")
rc, out, err = run(["run", "-m", stories, "-p", ref["prompt"], "-n", "8", "--temp", "0", "--json", "-t", "1", "-c", "256"])
check(rc == 0 and json.loads(out)["timings"].get("kv_cache_bytes") == kv["f16"], "run's default KV type is f16")

# ---- score: output format (keys, their order, per-position fields) and its numbers' consistency
toks = ref["prompt_tokens"] + ref["greedy"][:11]
lpath = os.path.join(tmp, "cli-score.f32")
rc, out, err = run(["score", "-m", stories, "--tokens", ",".join(map(str, toks)), "--top", "3", "-t", "1",
                    "-b", "5", "--logits", lpath])
sc = json.loads(out) if rc == 0 else {}
check(list(sc.keys()) == ["prompt_tokens", "positions", "n_vocab", "total_logprob", "n_scored", "perplexity"]
      and sc["prompt_tokens"] == toks and sc["n_scored"] == len(toks) - 1 and sc["n_vocab"] == ref["n_vocab"],
      f"score: top-level keys {list(sc.keys())}")
pos = sc.get("positions", [])
check(len(pos) == len(toks) and all(list(p.keys()) == ["top", "logsumexp", "mean", "std"] and len(p["top"]) == 3
                                    for p in pos), f"score: {len(pos)} positions with top/logsumexp/mean/std")
import array, math
L = array.array("f")
if os.path.exists(lpath):
    L.frombytes(open(lpath, "rb").read())
V = sc.get("n_vocab", 1)
ok = len(L) == len(toks) * V and len(pos) == len(toks)
for i, p in enumerate(pos if ok else []):
    row = L[i * V:(i + 1) * V]
    best = sorted(range(V), key=lambda v: (-row[v], v))[:3]
    # cJSON prints 15 significant digits where they read back within its epsilon
    ok &= [t[0] for t in p["top"]] == best and all(abs(t[1] - row[t[0]]) <= 1e-13 * abs(row[t[0]]) for t in p["top"])
tl = sum(L[i * V + toks[i + 1]] - pos[i]["logsumexp"] for i in range(len(toks) - 1)) if ok else 0
check(ok and abs(tl - sc["total_logprob"]) < 1e-6 * max(1, abs(tl))
      and abs(sc["perplexity"] - math.exp(-tl / (len(toks) - 1))) < 1e-9 * sc["perplexity"],
      "score: --logits rows, top ids/values, total_logprob and perplexity agree (prompt in chunks of 5)")
rc, out2, err = run(["score", "-m", stories, "--tokens", ",".join(map(str, toks)), "--top", "3", "-t", "1"])
check(rc == 0 and out2 == out, "score: one step or chunks of 5 positions give the same output")

# ---- seeds: same seed same text, sampling differs from greedy for some seed
outs = []
for seed in (5, 5, 6):
    rc, out, err = run(["run", "-m", stories, "-p", "Lily", "-n", "24", "--temp", "1.0", "--seed", str(seed), "--json", "-t", "1"])
    outs.append(json.loads(out)["tokens"] if rc == 0 else None)
check(outs[0] is not None and outs[0] == outs[1], "same seed, same tokens")
check(outs[0] != outs[2], "another seed, other tokens")

# ---- threads: default from the affinity mask, -t overrides
rc, out, err = run(["run", "-m", stories, "-p", "Lily", "-n", "2", "--json"], prefix=["taskset", "-c", "0"])
check(rc == 0 and json.loads(out)["timings"]["threads"] == 1, "taskset -c 0: one thread by default")
rc, out, err = run(["run", "-m", stories, "-p", "Lily", "-n", "2", "--json", "-t", "3"])
check(rc == 0 and json.loads(out)["timings"]["threads"] == 3, "-t 3: three threads")

# ---- info on every shared model names the tensor types actually present
expect = {"small-llama-q4_k_m": ["Q4_K", "Q6_K"], "small-llama-q4_0": ["Q4_0", "Q6_K"], "small-llama-q8_0": ["Q8_0"],
          "small-llama-f16": ["F16", "F32"], "small-llama-q6_k": ["Q6_K"], "tiny-qwen2-f32": ["F32"]}
for name, types in expect.items():
    rc, out, err = run(["info", os.path.join(shared, "models", name + ".gguf")])
    lines = [l.split()[0] for l in out.splitlines() if l.startswith("  ")]
    check(rc == 0 and all(ty in lines for ty in types) and "model: llama" in out or "model: qwen2" in out,
          f"info {name}: types {lines}")
# deepseek2: the MLA / MoE hyper-parameters, and the latent cache's bytes per token and layer,
# (kv_lora_rank 16 + 8 RoPE dims) x element size, against the block accounting of a run
ds = os.path.join(shared, "models", "tiny-deepseek-f32.gguf")
rc, out, err = run(["info", ds])
check(rc == 0 and "kv_lora_rank 16" in out and "q_lora_rank 24" in out and
      "8 experts (2 used, 1 shared)" in out and "gating sigmoid + selection bias" in out and
      "kv cache: 24 values per token and layer" in out and "48 bytes f16 / 96 bytes f32" in out,
      "info deepseek2: MLA ranks, MoE routing, KV bytes per token and layer = (16 + 8) x size")
for kvt, size in [("f16", 2), ("f32", 4)]:
    rc, out, err = run(["run", "-m", ds, "-p", "Hi", "-n", "1", "--json", "--kv-type", kvt, "-c", "256"])
    kvb = json.loads(out)["timings"]["kv_cache_bytes"] if rc == 0 else -1
    check(kvb == 256 * 3 * (16 + 8) * size,
          f"deepseek2 run --kv-type {kvt} -c 256: kv_cache_bytes {kvb} = 256 positions x 3 layers x 24 x {size}")

# ---- model synth: deterministic, every type runs
def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()
paths = [os.path.join(tmp, f"cli-synth-{i}.gguf") for i in range(3)]
for p, seed in zip(paths, (1, 1, 2)):
    rc, out, err = run(["model", "synth", "-o", p, "--shape", "tiny", "--seed", str(seed)])
check(sha(paths[0]) == sha(paths[1]) and sha(paths[0]) != sha(paths[2]), "synth: same seed same bytes, other seed other bytes")
for ty in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K", "Q2_K", "Q3_K", "IQ4_XS"):
    p = os.path.join(tmp, f"cli-synth-small-{ty}.gguf")
    rc, out, err = run(["model", "synth", "-o", p, "--shape", "small", "--type", ty, "--layers", "2"])
    rc2, out2, err2 = run(["run", "-m", p, "-p", "Hello, world", "-n", "8", "--json", "-t", "1"])
    ok = rc == 0 and rc2 == 0 and len(json.loads(out2)["tokens"]) > 0
    rc3, info, _ = run(["info", p])
    check(ok and f"  {ty} " in info, f"synth small {ty}: runs, info lists {ty}")
    rc4, dec, _ = run(["run", "-m", p, "-p", "Any text: 香港 <tag> 123", "-n", "1", "--json", "-t", "1"])
    check(rc4 == 0, "synth vocabulary tokenizes any text")

# the K-quant mixes as llama.cpp's quantizer makes them: over 22 layers (TinyLlama's count, whose
# Q4_K_M file has 135 Q4_K and 21 Q6_K matrices) use_more_bits picks layers 0, 1, 4, 7, 10, 13,
# 16, 19, 20, 21 for Q6_K attn_v and ffn_down, plus the output head; the file type names the mix
for mix, base in (("Q4_K_M", "Q4_K"), ("Q5_K_M", "Q5_K")):
    p = os.path.join(tmp, f"cli-synth-small-{mix}.gguf")
    rc, out, err = run(["model", "synth", "-o", p, "--shape", "small", "--type", mix, "--layers", "22"])
    rc3, info, _ = run(["info", p])
    counts = dict(re.findall(r"^  (\w+)\s+(\d+) tensors", info, re.M))
    check(rc == 0 and counts.get(base) == "135" and counts.get("Q6_K") == "21",
          f"synth {mix}: 135 {base} + 21 Q6_K matrices over 22 layers (got {counts})")
    rc2, out2, _ = run(["bench", "-m", p, "--threads", "1", "--pp", "0", "--tg", "2", "--json", p + ".json"])
    label = rc2 == 0 and json.load(open(p + ".json"))["runs"][0]["type"]
    check(label == mix, f"bench labels the synth {mix} model by its file type (got {label!r})")
# quantize to a mix: tiny's rows of 64 take llama.cpp's fallbacks (Q4_K -> Q5_0; Q6_K -> Q8_0 for
# the head and, use_more_bits(1, 2), layer 1's attn_v and ffn_down)
rc, out, err = run(["model", "quantize", paths[0], os.path.join(tmp, "cli-mix.gguf"), "Q4_K_M"])
rc3, info, _ = run(["info", os.path.join(tmp, "cli-mix.gguf")])
counts = dict(re.findall(r"^  (\w+)\s+(\d+) tensors", info, re.M))
check(rc == 0 and counts.get("Q8_0") == "3" and counts.get("Q5_0") == "13" and "Q4_K_M" in err,
      f"quantize tiny to Q4_K_M: 13 Q5_0 + 3 Q8_0 (got {counts}, {err.strip()[-120:]!r})")

# ---- run's text is valid UTF-8: a random-weight model emits arbitrary bytes; stdout shows
# them with U+FFFD for what is not UTF-8 (no invalid sequence reaches a terminal) and equals
# the --json text of the same run; --json keeps the raw bytes as token ids
p = os.path.join(tmp, "cli-synth-small-Q8_0.gguf")
args = ["run", "-m", p, "-p", "Hello", "-n", "64", "--temp", "1.5", "--seed", "7", "-t", "1",
        "--ignore-eos"]
r1 = subprocess.run([sampan] + args, capture_output=True, timeout=300)
r2 = subprocess.run([sampan] + args + ["--json"], capture_output=True, timeout=300)
try:
    streamed = r1.stdout.decode("utf-8")   # strict: raises on an invalid sequence
    ok = True
except UnicodeDecodeError as e:
    streamed, ok = "", False
    print(f"  invalid UTF-8 on stdout: {e}")
js = json.loads(r2.stdout) if r2.returncode == 0 else {}
check(r1.returncode == 0 and ok and js and streamed.rstrip("\n") == js.get("text") and len(js.get("tokens", [])) == 64,
      f"run: stdout is valid UTF-8 and equals --json's text ({len(streamed)} chars, "
      f"{streamed.count(chr(0xFFFD))} U+FFFD)")

# ---- quantize: our Q8_0 of small-llama-f16 meets llama.cpp's Q8_0 references; for the other
# types, our quantization's error against the F16 model's references is no worse than 1.3x that
# of llama.cpp's quantization of the same weights (its files in ../shared/models, IQ4_XS's in
# ../shared/new-types/models; llama.cpp's keep attn_v and output at higher types, ours do not).
def ref_report(refname, path):
    rep = os.path.join(tmp, "cli-ref-report.json")
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "ref_test.py"), refname,
                        "--model-path", path, "--tol", "1e9", "--top1", "0", "--threads", "1", "--report", rep],
                       capture_output=True, text=True, timeout=600)
    return json.load(open(rep)) if r.returncode == 0 else None
f16 = os.path.join(shared, "models", "small-llama-f16.gguf")
for ty, theirs in (("Q8_0", "small-llama-q8_0"), ("Q4_0", "small-llama-q4_0"), ("Q4_K", "small-llama-q4_k_m"),
                   ("Q6_K", "small-llama-q6_k"), ("IQ4_XS", "new-types/models/small-llama-iq4_xs")):
    out_path = os.path.join(tmp, f"cli-quant-{ty}.gguf")
    rc, out, err = run(["model", "quantize", f16, out_path, ty])
    if ty == "Q8_0":
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "ref_test.py"), theirs,
                            "--model-path", out_path, "--tol", "0.25", "--top1", "0.85", "--threads", "1"],
                           capture_output=True, text=True, timeout=600)
        check(rc == 0 and r.returncode == 0, f"quantize F16 -> Q8_0 meets {theirs}'s references")
        continue
    theirs_path = os.path.join(shared, theirs + ".gguf") if "/" in theirs else os.path.join(shared, "models", theirs + ".gguf")
    ours, ref = ref_report("small-llama-f16", out_path), ref_report("small-llama-f16", theirs_path)
    check(rc == 0 and ours and ref and ours["worst"] <= 1.3 * ref["worst"] and ours["top1"] >= ref["top1"] - 0.1,
          f"quantize F16 -> {ty}: error vs F16 refs {ours and round(ours['worst'], 3)} std (llama.cpp's {theirs}: "
          f"{ref and round(ref['worst'], 3)}), top-1 {ours and round(ours['top1'], 3)} ({ref and round(ref['top1'], 3)})")

finish()
