#!/usr/bin/env python3
"""tests/load/check_serve.py — runs `benchmarks/serve_bench.py --quick` and checks its JSON.

Usage: check_serve.py WORKDIR [--fake]. The sampan binary comes from $SAMPAN; models, the
server log and serve.json go to WORKDIR. With --fake the server is tests/load/fake_server.py
(so the benchmark's own plumbing is tested whatever state `sampan serve` is in); without it,
`sampan serve` itself, and the test skips (77) when this sampan has no `serve` command.

Checked: the schema (machine, ceilings for the thread count, one "single" and one
"concurrent" run); counts (every request ok with exactly max_tokens output tokens, since
ignore_eos is sent, and at most one text chunk more than tokens: bytes held back as an
incomplete UTF-8 sequence may be flushed in a chunk of their own at the end); every rate
finite, positive and equal to its count over its duration; fractions of the ceilings
plausible (<= 1.5); percentiles ordered (min <= p50 <= p90 <= p99 <= max); the ratio equal to
the two rates' quotient; the model facts against the `small` shape (dim 256, 4 layers, 8 / 2
heads, ffn 768, vocab 4096); and the server's exit status 0 after SIGTERM (under ASan: no
leaks). Speed is not asserted: the machine is shared. Prints `N passed, N failed` last.
"""
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
passes, failures = 0, []


def check(ok, what):
    global passes
    if ok:
        passes += 1
    else:
        failures.append(what)
        print("FAIL: " + what)


def positive(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def ordered(st):
    return all(st[k] is not None for k in ("min", "p50", "p90", "p99", "max")) and \
        st["min"] <= st["p50"] <= st["p90"] <= st["p99"] <= st["max"]


def main():
    args = sys.argv[1:]
    fake = "--fake" in args
    args = [a for a in args if a != "--fake"]
    work = os.path.abspath(args[0] if args else "serve-quick")
    sampan = os.environ.get("SAMPAN", os.path.join(ROOT, "build", "sampan"))
    os.makedirs(work, exist_ok=True)
    if not fake:
        h = subprocess.run([sampan, "serve", "--help"], capture_output=True, text=True,
                           timeout=60)
        if h.returncode != 0:
            print(f"skip: {sampan} has no working `serve` command "
                  f"({(h.stderr or h.stdout).strip()[:200]})")
            return 77
    out = os.path.join(work, "serve-fake.json" if fake else "serve.json")
    if os.path.exists(out):
        os.remove(out)
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "serve_bench.py"), "--quick",
           "--sampan", sampan, "--model-dir", os.path.join(work, "models"), "--json", out,
           "--server-log", os.path.join(work, "server-fake.log" if fake else "server.log"),
           "--timeout", "300", "--request-timeout", "120", "--startup-timeout", "120"]
    if fake:
        cmd += ["--server-cmd", f"{sys.executable} {os.path.join(HERE, 'fake_server.py')} "
                "--step-ms 3 --per-seq-ms 0.5"]
    print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    print(r.stdout)
    print(r.stderr, file=sys.stderr)
    check(r.returncode == 0, f"serve_bench.py exit status {r.returncode}")
    if not os.path.exists(out):
        check(False, f"{out} written")
        print(f"{passes} passed, {len(failures)} failed")
        return 1
    with open(out) as f:
        j = json.load(f)

    check(j.get("schema") == "sampan-serve-bench-1", f"schema {j.get('schema')!r}")
    for k in ("machine", "options", "model", "calibration", "ceilings", "runs", "ratio",
              "acceptance", "loadgen"):
        check(k in j, f"key {k}")
    o = j["options"]
    check((o["single"], o["concurrent"], o["threads"]) == (2, 8, 2),
          f"quick options {o['single']}, {o['concurrent']}, {o['threads']}")
    check(o["server_exit_status"] == 0,
          f"server exit status {o['server_exit_status']} after SIGTERM (0 expected)")
    m = j["model"]
    layer = 256 * 256 * 2 + 256 * 64 * 2 + 256 * 768 * 3
    check((m["n_layers"], m["dim"], m["n_heads"], m["head_dim"]) == (4, 256, 8, 32),
          f"small shape facts {m}")
    check(m["layer_params"] == 4 * layer and m["output_params"] == 4096 * 256,
          f"small shape params {m['layer_params']}, {m['output_params']}")
    check(m["type"] == "Q4_0", f"model type {m['type']}")

    ceils = j["ceilings"]
    check(len(ceils) == 1 and ceils[0]["threads"] == 2, f"ceilings for 2 threads: {ceils}")
    c = ceils[0]
    for k in ("read_gbs", "triad_gbs", "fma_gflops"):
        check(positive(c.get(k)), f"ceiling {k} = {c.get(k)}")

    runs = j["runs"]
    check([r["test"] for r in runs] == ["single", "concurrent"], "runs single, concurrent")
    for run, n, conc in zip(runs, (2, 8), (1, 8)):
        t = run["test"]
        check(run["kind"] == "serve" and run["threads"] == 2 and run["type"] == "Q4_0",
              f"{t}: kind/threads/type")
        check((run["requests"], run["failed"], run["concurrency"]) == (n, 0, conc),
              f"{t}: requests {run['requests']} failed {run['failed']} conc {run['concurrency']}")
        check(run["tokens"] == n * 16, f"{t}: output tokens {run['tokens']} == {n} x 16")
        for k in ("seconds", "tokens_per_s", "requests_per_s", "input_tokens", "flops",
                  "gflops", "frac_fma_peak"):
            check(positive(run[k]), f"{t}: {k} = {run[k]}")
        check(abs(run["tokens_per_s"] - run["tokens"] / run["seconds"]) < 1e-6 * run["tokens_per_s"],
              f"{t}: tokens_per_s = tokens / seconds")
        check(abs(run["gflops"] - run["flops"] / run["seconds"] * 1e-9) < 1e-6 * run["gflops"],
              f"{t}: gflops = flops / seconds")
        check(run["frac_fma_peak"] <= 1.5, f"{t}: frac_fma_peak {run['frac_fma_peak']} <= 1.5")
        if run["weight_gbs"] is not None:
            check(positive(run["weight_gbs"]) and run["frac_read_bw"] <= 1.5,
                  f"{t}: weight_gbs {run['weight_gbs']}, frac_read_bw {run['frac_read_bw']}")
        check(t != "single" or run["weight_gbs"] is not None, f"{t}: weight GB/s reported")
        check(positive(run["decode_tokens_per_s"]), f"{t}: decode_tokens_per_s")
        check(run["server_cpu_s"] is not None and 0 <= run["cpu_util"] <= 1.5,
              f"{t}: server_cpu_s {run['server_cpu_s']}, cpu_util {run['cpu_util']}")
        check(run["ttft_ms"]["n"] == n and run["latency_ms"]["n"] == n,
              f"{t}: ttft/latency counted for every request")
        for k in ("ttft_ms", "tpot_ms", "itl_ms", "latency_ms"):
            check(ordered(run[k]), f"{t}: {k} percentiles ordered {run[k]}")
        lg = j["loadgen"][t]
        check(lg["schema"] == "sampan-loadgen-1" and len(lg["requests"]) == n,
              f"{t}: loadgen result with {n} requests")
        for q in lg["requests"]:
            ok = (q["ok"] and q["output_tokens"] == q["max_tokens"] == 16 and
                  1 <= q["chunks"] <= 17 and len(q["itl_ms"]) == q["chunks"] - 1 and
                  0 < q["ttft_ms"] <= q["latency_ms"] and q["prompt_tokens"] is not None and
                  q["prompt_tokens"] > 0)
            check(ok, f"{t}: request {q['id']}: {q}" if not ok else "")
    s1, s2 = runs[0]["tokens_per_s"], runs[1]["tokens_per_s"]
    check(j["ratio"] is not None and abs(j["ratio"] - s2 / s1) < 1e-9 * j["ratio"],
          f"ratio {j['ratio']} == {s2} / {s1}")
    check(positive(j["decode_ratio"]), f"decode_ratio {j['decode_ratio']}")
    check(j["acceptance"]["pass"] == (j["ratio"] >= j["acceptance"]["min_ratio"]),
          "acceptance.pass agrees with the ratio")
    check("# ceilings, 2 threads" in r.stdout and "aggregate / single-request" in r.stdout,
          "table prints the ceiling and the ratio")
    print(f"{passes} passed, {len(failures)} failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
