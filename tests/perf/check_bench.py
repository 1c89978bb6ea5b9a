#!/usr/bin/env python3
"""tests/perf/check_bench.py — runs `sampan bench --quick` and checks its JSON against the schema.

Checks the structure (machine, ceilings per thread count, one pp and one tg run per model and
thread count), that every number is finite and positive, and that the fractions of the measured
ceilings are plausible, i.e. at most 4: the FMA ceiling is the f32 rate, and int8 vpmaddubsw
products of the quantized types do up to 4x its multiply-adds; --quick's one-layer model (about
60 MB) partly stays in a large L3, so its decode can beat the DRAM read ceiling (2026-12-02's
idle machine measured 1.66 for both). Speed itself is not
asserted: the machine is shared. Usage: check_bench.py WORKDIR (models and JSON go there);
the sampan binary comes from $SAMPAN.
"""
import json
import math
import os
import re
import subprocess
import sys

failures = []
passes = 0


def check(ok, what):
    global passes
    if ok:
        passes += 1
    else:
        failures.append(what)
        print("FAIL: " + what)


def positive(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else "bench-quick"
    sampan = os.environ.get("SAMPAN", "sampan")
    os.makedirs(work, exist_ok=True)
    out = os.path.join(work, "bench.json")
    if os.path.exists(out):
        os.remove(out)
    cmd = [sampan, "bench", "--quick", "--threads", "1,2", "--json", out,
           "--model-dir", os.path.join(work, "models")]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=500)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    check(p.returncode == 0, "sampan bench --quick exits 0 (got %d)" % p.returncode)
    check(os.path.exists(out), "JSON written to " + out)
    if not os.path.exists(out):
        return
    with open(out) as f:
        doc = json.load(f)
    check(doc.get("schema") == "sampan-bench-1", "schema is sampan-bench-1")
    m = doc.get("machine", {})
    for k in ("cpu", "isa", "host"):
        check(isinstance(m.get(k), str) and m.get(k), "machine.%s is a non-empty string" % k)
    check(m.get("isa") in ("scalar", "avx2", "avx512"), "machine.isa is a known ISA")
    check(positive(m.get("cpus_affinity")), "machine.cpus_affinity > 0")
    ceils = doc.get("ceilings", [])
    check(sorted(c.get("threads") for c in ceils) == [1, 2], "ceilings for 1 and 2 threads")
    for c in ceils:
        for k in ("read_gbs", "triad_gbs", "fma_gflops"):
            if k == "fma_gflops" and m.get("isa") == "scalar":
                continue
            check(positive(c.get(k)), "ceilings[threads=%s].%s > 0" % (c.get("threads"), k))
    opts = doc.get("options", {})
    check(positive(opts.get("reps")), "options.reps > 0")
    runs = doc.get("runs", [])
    models = sorted(set(r.get("model") for r in runs))
    check(len(models) >= 1, "at least one model benchmarked")
    for model in models:
        for thr in (1, 2):
            for test in ("pp", "tg"):
                n = sum(1 for r in runs if r.get("model") == model and r.get("threads") == thr
                        and r.get("test") == test)
                check(n == 1, "one %s run of %s with %d threads (got %d)" % (test, model, thr, n))
    for r in runs:
        tag = "%s %s %s t=%s" % (os.path.basename(str(r.get("model"))), r.get("type"),
                                 r.get("test"), r.get("threads"))
        check(r.get("kind") in ("model", "matmul"), tag + ": kind")
        if r.get("kind") == "model":   # "Q4_K 80%, Q6_K 20%": shares of the streamed bytes
            mix = re.findall(r"([A-Z0-9_]+) (\d+)%", str(r.get("weight_mix")))
            check(mix and abs(sum(int(p) for _, p in mix) - 100) <= len(mix),
                  tag + ": weight_mix shares sum to 100%% (got %r)" % (r.get("weight_mix"),))
        for k in ("tokens", "seconds", "tokens_per_s", "flops", "gflops", "weight_bytes",
                  "weight_gbs"):
            check(positive(r.get(k)), tag + ": %s > 0" % k)
        if positive(r.get("tokens")) and positive(r.get("seconds")):
            check(abs(r["tokens"] / r["seconds"] - r["tokens_per_s"]) <= 1e-6 * r["tokens_per_s"],
                  tag + ": tokens_per_s == tokens / seconds")
        for k, top in (("frac_fma_peak", 4.0), ("frac_read_bw", 4.0)):
            v = r.get(k)
            ok = isinstance(v, (int, float)) and 0 <= v <= top
            if k == "frac_fma_peak" and m.get("isa") == "scalar":
                ok = isinstance(v, (int, float))
            check(ok, tag + ": 0 <= %s <= %g (got %r)" % (k, top, v))
        if r.get("test") == "tg":   # adjacent read passes, and the fractions derived from them
            adj, frac = r.get("read_adjacent_gbs"), r.get("frac_read_adjacent")
            reps = r.get("frac_read_adjacent_reps")
            check(positive(adj), tag + ": read_adjacent_gbs > 0 (got %r)" % (adj,))
            ok = isinstance(reps, list) and len(reps) == opts.get("reps") and \
                all(isinstance(v, (int, float)) and 0 < v <= 4.0 for v in reps)
            check(ok, tag + ": one frac_read_adjacent_reps entry in (0, 4] per repetition (got %r)" % (reps,))
            if ok:
                v, n = sorted(reps), len(reps)
                med = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
                check(isinstance(frac, (int, float)) and abs(frac - med) <= 1e-9,
                      tag + ": frac_read_adjacent == median of the repetitions (got %r, %r)" % (frac, med))
    # the per-type table of benchmarks/README.md, made from this JSON: one row per decode run
    here = os.path.dirname(os.path.abspath(__file__))
    t = subprocess.run([sys.executable, os.path.join(here, "..", "..", "benchmarks", "types_table.py"), out],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    n_tg = sum(1 for r in runs if r.get("test") == "tg")
    body = [l for l in t.stdout.splitlines()[2:] if l.startswith("| ")]
    check(t.returncode == 0 and len(body) == n_tg and all(l.count("|") == 9 for l in body),
          "types_table.py: one 8-column row per decode run (%d rows for %d runs; %s)" %
          (len(body), n_tg, t.stderr.strip()[-200:]))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash is a failure with a message, not a traceback only
        check(False, "exception: %r" % (e,))
    print("%d passed, %d failed" % (passes, len(failures)))
    sys.exit(1 if failures else 0)
