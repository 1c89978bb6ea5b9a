#!/usr/bin/env python3
"""benchmarks/serve_bench.py — the end-to-end serving benchmark: `sampan serve` under load.

Starts `sampan serve -m MODEL -t THREADS --host 127.0.0.1 --port 0 --api-key RANDOM` itself
(the port is read from its "sampan: listening on http://HOST:PORT" line on stderr), then drives
it with benchmarks/loadgen.py in one process:
  single      --single requests one at a time (concurrency 1), --output-len tokens each:
              the single-request output tokens/s
  concurrent  --concurrent requests sent all at once: the aggregate output tokens/s
and reports their ratio (issue 4 asks for >= 2.5x with 32 requests of 64 tokens on the
tinyllama-1.1b Q4_0 shape and 2 threads) together with the ceilings of `sampan bench` (one
harness, one schema: the machine's read bandwidth and peak FMA rate with the same thread
count, measured before the server starts) and, per phase,
  GFLOP/s  useful arithmetic per second: for each request with P prompt and O output tokens,
           2 x layer weight params x (P + O - 1) + 2 x output-head params x O
           + 4 x heads x head_dim x layers x n(n+1)/2 with n = P + O - 1 (attention),
           summed over the requests and divided by the phase's duration; as a fraction of the
           FMA ceiling, since batched decode on a few cores becomes compute-bound
  GB/s     weight bytes streamed (bytes per forward pass x passes: the server's step counter
           from /metrics when it has one, else, for the single phase, one pass per output
           token) as a fraction of the read ceiling, since one-at-a-time decode is memory-bound
  dec_tok/s  decode alone, without prefill: requests in flight / mean TPOT (an estimate that
           assumes they all decode together, as they do when sent at once)
  %cpu     the server's CPU seconds in the phase / (duration x threads): below 100 the
           machine was shared (every figure above is wall-clock; the FMA ceiling is not)
Model facts (params, bytes, heads) are read from the GGUF header here. The default model is a
synthetic tinyllama-1.1b Q4_0 made once by `sampan model synth` in --model-dir (the same file
name `sampan bench` uses, so both share it); --quick uses the `small` shape and a few short
requests (seconds, for CI). Output: a table on stdout and, with --json, the object
"sampan-serve-bench-1" (machine, options, model, ceilings, runs, ratio, acceptance, and each
phase's full loadgen result). Exit status: 0, or 1 if a request failed, the server did not
start, or (--check) the ratio is below --min-ratio.

--kv-compare: the KV cache types side by side instead. Only the concurrent phase (32 requests
of 64 tokens at once), run against one server started with `--kv-type f16` and one with
`--kv-type f32`, for --kv-rounds rounds (f16 first in even rounds, f32 first in odd ones; best
round of each kept, since the machine may be shared); prints both rows and the ratio of their aggregate output tokens/s (f16 / f32),
and with --json writes "sampan-serve-bench-kv-1" (options, model, runs, ratio). The
arithmetic is the same; f16 halves the KV bytes each attention step reads and the pool holds.
"""
import argparse
import json
import math
import os
import re
import secrets
import shlex
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402

SCHEMA = "sampan-serve-bench-1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTEN_RE = re.compile(r"listening on http://(\[[^\]]+\]|[^\s:/]+):(\d+)")

# ggml tensor types: id -> (name, elements per block, bytes per block)
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
              6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
              10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
              13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
              20: ("IQ4_NL", 32, 18), 23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2)}


# ---- model facts from the GGUF header -----------------------------------------------------

class GGUFError(Exception):
    pass


def _gguf_read(f, n):
    b = f.read(n)
    if len(b) != n:
        raise GGUFError("truncated header")
    return b


def _gguf_str(f):
    (n,) = struct.unpack("<Q", _gguf_read(f, 8))
    if n > 1 << 24:
        raise GGUFError(f"string of {n} bytes")
    return _gguf_read(f, n).decode("utf-8", "replace")


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}


def _gguf_value(f, t, keep=True):
    if t in _SCALARS:
        fmt = _SCALARS[t]
        return struct.unpack(fmt, _gguf_read(f, struct.calcsize(fmt)))[0]
    if t == 8:
        return _gguf_str(f)
    if t == 9:
        et, n = struct.unpack("<IQ", _gguf_read(f, 12))
        if et in _SCALARS and et != 8:
            f.seek(struct.calcsize(_SCALARS[et]) * n, 1)   # arrays (vocabularies) are skipped
        else:
            for _ in range(n):
                _gguf_value(f, et, False)
        return None
    raise GGUFError(f"value type {t}")


def model_facts(path):
    """Params, weight bytes per forward pass, and attention shape of a Llama-family GGUF."""
    kv, tensors = {}, []
    with open(path, "rb") as f:
        magic, version = struct.unpack("<4sI", _gguf_read(f, 8))
        if magic != b"GGUF" or version not in (2, 3):
            raise GGUFError(f"{path}: not a GGUF v2/v3 file")
        n_t, n_kv = struct.unpack("<QQ", _gguf_read(f, 16))
        for _ in range(n_kv):
            k = _gguf_str(f)
            (t,) = struct.unpack("<I", _gguf_read(f, 4))
            kv[k] = _gguf_value(f, t)
        for _ in range(n_t):
            name = _gguf_str(f)
            (nd,) = struct.unpack("<I", _gguf_read(f, 4))
            dims = struct.unpack(f"<{nd}Q", _gguf_read(f, 8 * nd))
            t, _off = struct.unpack("<IQ", _gguf_read(f, 12))
            tensors.append((name, dims, t))
    arch = kv.get("general.architecture", "llama")
    n_layers = int(kv.get(f"{arch}.block_count", 0))
    dim = int(kv.get(f"{arch}.embedding_length", 0))
    heads = int(kv.get(f"{arch}.attention.head_count", 0))
    head_dim = int(kv.get(f"{arch}.attention.key_length", dim // heads if heads else 0))
    if not (n_layers and dim and heads):
        raise GGUFError(f"{path}: block_count, embedding_length or head_count missing")

    def size(dims, t):
        n = math.prod(dims)
        tt = GGML_TYPES.get(t)
        return n, (n // tt[1] * tt[2] if tt else None)

    layer_p = layer_b = 0
    out_p = out_b = None
    emb = None
    wtype = None
    for name, dims, t in tensors:
        n, b = size(dims, t)
        if name.startswith("blk.") and len(dims) >= 2:
            layer_p += n
            layer_b = None if layer_b is None or b is None else layer_b + b
            if name.endswith("attn_q.weight") and wtype is None:
                wtype = GGML_TYPES.get(t, (str(t),))[0]
        elif name == "output.weight":
            out_p, out_b = n, b
        elif name == "token_embd.weight":
            emb = (n, b)
    if out_p is None and emb:   # output head tied to the embedding
        out_p, out_b = emb
    wb = None if layer_b is None or out_b is None else layer_b + out_b
    return {"path": path, "arch": arch, "n_layers": n_layers, "dim": dim, "n_heads": heads,
            "head_dim": head_dim, "type": wtype or "?", "layer_params": layer_p,
            "output_params": out_p or 0, "weight_bytes_per_pass": wb}


def request_flops(m, prompt_tokens, output_tokens):
    """Useful FLOPs of one request (see the file header)."""
    n = prompt_tokens + output_tokens - 1
    att = 4.0 * m["n_heads"] * m["head_dim"] * m["n_layers"]
    return (2.0 * m["layer_params"] * n + 2.0 * m["output_params"] * output_tokens
            + att * n * (n + 1) / 2)


# ---- ceilings from `sampan bench` ---------------------------------------------------------

def measure_ceilings(sampan, threads, quick, out, log):
    """The ceilings object (bench.c's schema) for `threads`, measured by `sampan bench`
    (its JSON goes to `out`): --ceilings-only when this sampan has it, else its matmul mode
    on the tiny shape with no runs."""
    h = subprocess.run([sampan, "bench", "--help"], capture_output=True, text=True, timeout=60)
    if "--ceilings-only" in h.stdout + h.stderr:
        cmd = [sampan, "bench", "--ceilings-only"]
    else:
        cmd = [sampan, "bench", "--matmul", "--shape", "tiny", "--types", "F32", "--pp", "0",
               "--tg", "0"]
    cmd += ["--threads", str(threads), "--json", out] + (["--quick"] if quick else [])
    log("# " + " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return load_ceilings(out, threads)


def load_ceilings(path, threads):
    with open(path) as f:
        j = json.load(f)
    for c in j.get("ceilings", []):
        if c.get("threads") == threads:
            return c
    raise RuntimeError(f"{path}: no ceilings for {threads} threads")


# ---- the server ---------------------------------------------------------------------------

class Server:
    """`sampan serve` (or --server-cmd) as a child process; stderr is kept (last 200 lines)
    and scanned for the listening line."""

    def __init__(self, cmd, log_path=None):
        self.cmd = cmd
        self.tail = deque(maxlen=200)
        self.host = self.port = None
        self.ready = threading.Event()
        self.log = open(log_path, "w") if log_path else None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if self.log:
                self.log.write(line + "\n")
                self.log.flush()
            m = LISTEN_RE.search(line)
            if m and not self.ready.is_set():
                self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout):
        if not self.ready.wait(timeout) or self.port is None:
            raise RuntimeError(f"server did not print 'listening on' within {timeout:g} s "
                               f"(exit status {self.proc.poll()}): " + " | ".join(
                                   list(self.tail)[-8:]))
        return f"http://{self.host}:{self.port}"

    def cpu_seconds(self):
        """User + system CPU seconds of the server process so far (Linux /proc), or None."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self.reader.join(5)
        if self.log:
            self.log.close()
        return self.proc.returncode


def wait_health(target, timeout):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            st, _, raw = loadgen.http_json(target, "GET", "/health", timeout=5)
            if st == 200:
                return
            last = f"HTTP {st}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{target.url}/health not ready after {timeout:g} s ({last})")


def scrape_steps(target, api_key):
    """The server's forward-step counter from /metrics (a metric whose name ends in
    'steps_total' or 'steps'), or None."""
    try:
        st, _, raw = loadgen.http_json(target, "GET", "/metrics", api_key=api_key, timeout=10)
    except OSError:
        return None
    if st != 200:
        return None
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            name = parts[0].split("{")[0]
            if name.endswith("steps_total") or name.endswith("_steps"):
                try:
                    return float(parts[1])
                except ValueError:
                    return None
    return None


# ---- phases -------------------------------------------------------------------------------

def lg_opts(a, url, api_key, model_id, n, concurrency, calibration, output_len=None):
    return SimpleNamespace(
        url=url, api_key=api_key, model=model_id, endpoint="completions", num_requests=n,
        rate="inf", concurrency=concurrency, prompt_len=a.prompt_len,
        output_len=output_len or a.output_len, seed=a.seed, temperature=0.0, ignore_eos=True,
        calibrate=calibration is None, calibration=calibration,
        request_timeout=a.request_timeout, timeout=a.timeout, allow_remote=False)


def phase_run(name, res, facts, ceil, threads, steps, cpu_s):
    """One row of `runs` (bench.c's run schema plus serving fields) from a loadgen result."""
    s = res["summary"]
    ok = [r for r in res["requests"] if r["ok"]]
    tpot = [r["tpot_ms"] for r in ok if r["tpot_ms"]]
    conc_n = res["options"]["concurrency"] or s["requests"]
    flops = sum(request_flops(facts, r["prompt_tokens"] if r["prompt_tokens"] is not None
                              else r["prompt_tokens_target"], r["output_tokens"]) for r in ok)
    sec = s["duration_s"]
    gf = flops / sec * 1e-9 if sec > 0 else 0.0
    passes, src = steps, "metrics"
    if passes is None and name == "single":
        passes, src = sum(r["output_tokens"] for r in ok), "one per output token"
    wb = facts["weight_bytes_per_pass"]
    bytes_ = passes * wb if passes is not None and wb else None
    gb = bytes_ / sec * 1e-9 if bytes_ is not None and sec > 0 else None
    o = res["options"]
    return {
        "kind": "serve", "model": facts["path"], "type": facts["type"], "threads": threads,
        "test": name, "requests": s["requests"], "failed": s["failed"],
        "concurrency": o["concurrency"] or s["requests"],
        "tokens": s["output_tokens"], "input_tokens": s["input_tokens"], "seconds": sec,
        "tokens_per_s": s["output_tokens_per_s"], "requests_per_s": s["requests_per_s"],
        "flops": flops, "gflops": gf,
        "frac_fma_peak": gf / ceil["fma_gflops"] if ceil and ceil.get("fma_gflops") else None,
        "forward_passes": passes, "forward_passes_source": src if passes is not None else None,
        "weight_bytes": bytes_, "weight_gbs": gb,
        "frac_read_bw": gb / ceil["read_gbs"] if gb is not None and ceil and ceil.get("read_gbs")
        else None,
        "decode_tokens_per_s": conc_n * 1000.0 / (sum(tpot) / len(tpot)) if tpot else None,
        "server_cpu_s": cpu_s,
        "cpu_util": cpu_s / (sec * threads) if cpu_s is not None and sec > 0 else None,
        "ttft_ms": s["ttft_ms"], "tpot_ms": s["tpot_ms"], "itl_ms": s["itl_ms"],
        "latency_ms": s["latency_ms"],
    }


def _n(v, fmt):
    return fmt % v if v is not None else "%*s" % (len(fmt % 0), "-")


def format_table(j):
    lines = []
    m, o = j["model"], j["options"]
    lines.append(f"# sampan serve bench ({SCHEMA}): cpu {j['machine']['cpu']}, "
                 f"{os.path.basename(m['path'])} ({m['type']}, "
                 f"{(m['layer_params'] + m['output_params']) / 1e9:.3f} G weight params), "
                 f"{o['threads']} threads, prompt {o['prompt_len']}, output {o['output_len']}")
    for c in j["ceilings"]:
        lines.append(f"# ceilings, {c['threads']} threads: read {c['read_gbs']:.2f} GB/s, "
                     f"triad {c['triad_gbs']:.2f} GB/s, fma {c['fma_gflops']:.1f} GFLOP/s")
    lines.append("%-10s %4s %4s %4s %6s %8s %8s %9s %8s %5s %6s %5s %5s %9s %9s %9s %9s" % (
        "test", "reqs", "fail", "conc", "tokens", "time_s", "tok/s", "dec_tok/s", "GFLOP/s",
        "%fma", "GB/s", "%read", "%cpu", "ttft_p50", "ttft_p99", "tpot_p50", "itl_p99"))
    for r in j["runs"]:
        lines.append("%-10s %4d %4d %4d %6d %8.2f %8.2f %9s %8.2f %s %s %s %s %9s %9s %9s %9s" % (
            r["test"], r["requests"], r["failed"], r["concurrency"], r["tokens"], r["seconds"],
            r["tokens_per_s"], _n(r["decode_tokens_per_s"], "%9.2f"), r["gflops"],
            _n(100 * r["frac_fma_peak"] if r["frac_fma_peak"] is not None else None, "%5.1f"),
            _n(r["weight_gbs"], "%6.2f"),
            _n(100 * r["frac_read_bw"] if r["frac_read_bw"] is not None else None, "%5.1f"),
            _n(100 * r["cpu_util"] if r["cpu_util"] is not None else None, "%5.0f"),
            _n(r["ttft_ms"]["p50"], "%9.1f"), _n(r["ttft_ms"]["p99"], "%9.1f"),
            _n(r["tpot_ms"]["p50"], "%9.1f"), _n(r["itl_ms"]["p99"], "%9.1f")))
    busy = [r["cpu_util"] for r in j["runs"] if r["cpu_util"] is not None]
    if busy and min(busy) < 0.8:
        lines.append(f"# note: the server had {100 * min(busy):.0f}% of its threads' CPU time in a "
                     "phase: the machine was shared and wall-clock rates are low")
    acc = j["acceptance"]
    if j["ratio"] is not None:
        lines.append(f"# aggregate / single-request output tokens/s: {j['ratio']:.2f}x "
                     f"(acceptance >= {acc['min_ratio']:g}x: {'PASS' if acc['pass'] else 'FAIL'})"
                     + (f"; decode only (from TPOT): {j['decode_ratio']:.2f}x"
                        if j.get("decode_ratio") else ""))
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------

def ensure_model(a, log):
    if a.model:
        return a.model
    os.makedirs(a.model_dir, exist_ok=True)
    path = os.path.join(a.model_dir, f"{a.shape}-{a.type}.gguf")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        log(f"# making {path}")
        r = subprocess.run([a.sampan, "model", "synth", "-o", tmp, "--shape", a.shape,
                            "--type", a.type], capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise RuntimeError(f"sampan model synth failed: {r.stderr.strip()}")
        os.replace(tmp, path)
    return path


def build_parser():
    p = argparse.ArgumentParser(description="End-to-end serving benchmark of `sampan serve` "
                                "(see the file header).")
    p.add_argument("--sampan", default=os.environ.get("SAMPAN", os.path.join(ROOT, "build",
                                                                              "sampan")))
    p.add_argument("-m", "--model", help="GGUF model (default: a synthetic --shape/--type model "
                   "in --model-dir)")
    p.add_argument("--model-dir", default=os.path.join("build", "bench-models"))
    p.add_argument("--shape", help="synthetic shape (default tinyllama-1.1b; small with --quick)")
    p.add_argument("--type", default="Q4_0", help="synthetic weight type")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--single", type=int, help="requests of the one-at-a-time phase (default 4)")
    p.add_argument("--concurrent", type=int, help="requests sent at once (default 32)")
    p.add_argument("--prompt-len", help="prompt length distribution (default fixed:16)")
    p.add_argument("--output-len", help="output length distribution (default fixed:64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-ratio", type=float, default=2.5)
    p.add_argument("--check", action="store_true", help="exit 1 if the ratio is below --min-ratio")
    p.add_argument("--quick", action="store_true", help="CI smoke run: small model, few requests")
    p.add_argument("--ceilings-json", help="take the ceilings from this `sampan bench --json` file")
    p.add_argument("--server-cmd", help="command that replaces `SAMPAN serve` (tests)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra argument for sampan serve (repeatable)")
    p.add_argument("--server-log", help="write the server's stderr here")
    p.add_argument("--no-api-key", dest="api_key", action="store_false",
                   help="start the server without a random --api-key")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per phase")
    p.add_argument("--json", help="write the result object here")
    p.add_argument("--kv-compare", action="store_true",
                   help="concurrent phase with --kv-type f16 and f32: their ratio (see the header)")
    p.add_argument("--kv-rounds", type=int, default=2,
                   help="--kv-compare: rounds, the order alternating (default 2: the first server "
                   "started often runs slower, whichever its KV type)")
    return p


def serve_session(a, model, facts, ceil, extra, phases, log):
    """Starts the server with `extra` arguments, calibrates, warms up and runs each phase
    (name, requests, concurrency). Returns (runs, loadgen results, cmd shown, calibration,
    server exit status)."""
    key = secrets.token_hex(16) if a.api_key else None
    base = shlex.split(a.server_cmd) if a.server_cmd else [a.sampan, "serve"]
    cmd = base + ["-m", model, "-t", str(a.threads), "--host", "127.0.0.1", "--port", "0"]
    cmd += (["--api-key", key] if key else []) + a.server_arg + extra
    shown = [c if c != key else "KEY" for c in cmd]
    log("# " + " ".join(shown))
    server = Server(cmd, a.server_log)
    try:
        url = server.wait_ready(a.startup_timeout)
        target = loadgen.Target(url)
        wait_health(target, 60)
        model_id = loadgen.fetch_model(target, key)
        calib = loadgen.calibrate(target, model_id, key, "completions", a.request_timeout)
        if calib["source"] == "default":
            log(f"# {calib['note']}; assuming {loadgen.DEFAULT_TOKENS_PER_WORD} tokens per word")
        warm = loadgen.run(lg_opts(a, url, key, model_id, 1, 1, calib, "fixed:4"), log)
        if warm["summary"]["failed"]:
            raise RuntimeError("warm-up request failed: " + next(iter(warm["summary"]["errors"])))
        results, runs = {}, []
        for name, n, conc in phases:
            s0, c0 = scrape_steps(target, key), server.cpu_seconds()
            res = loadgen.run(lg_opts(a, url, key, model_id, n, conc, calib), log)
            s1, c1 = scrape_steps(target, key), server.cpu_seconds()
            steps = s1 - s0 if s0 is not None and s1 is not None else None
            cpu = c1 - c0 if c0 is not None and c1 is not None else None
            results[name] = res
            runs.append(phase_run(name, res, facts, ceil, a.threads, steps, cpu))
            print(loadgen.format_table(res, f"serve_bench {name} {' '.join(extra)}".rstrip()),
                  flush=True)
    except BaseException:
        server.stop()
        raise
    return runs, results, shown, calib, server.stop()


def kv_compare(a, model, facts, log):
    """--kv-compare: the concurrent phase with an f16 and an f32 KV cache, alternated."""
    best = {}
    for rnd in range(a.kv_rounds):
        for kv in (("f16", "f32") if rnd % 2 == 0 else ("f32", "f16")):   # order alternates
            runs, _, _, _, rc = serve_session(a, model, facts, None, ["--kv-type", kv],
                                              [("concurrent", a.concurrent, 0)], log)
            r = runs[0]
            r["kv_type"], r["round"], r["server_exit_status"] = kv, rnd, rc
            if r["failed"]:
                log(f"serve_bench: {r['failed']} request(s) failed with --kv-type {kv}")
                return 1
            if kv not in best or r["tokens_per_s"] > best[kv]["tokens_per_s"]:
                best[kv] = r
    f16, f32 = best["f16"], best["f32"]
    ratio = f16["tokens_per_s"] / f32["tokens_per_s"] if f32["tokens_per_s"] > 0 else None
    print("%-6s %4s %6s %8s %8s %9s %9s %9s" % ("kv", "reqs", "tokens", "time_s", "tok/s",
                                                 "dec_tok/s", "ttft_p50", "tpot_p50"))
    for r in (f16, f32):
        print("%-6s %4d %6d %8.2f %8.2f %9s %9s %9s" % (
            r["kv_type"], r["requests"], r["tokens"], r["seconds"], r["tokens_per_s"],
            _n(r["decode_tokens_per_s"], "%9.2f"), _n(r["ttft_ms"]["p50"], "%9.1f"),
            _n(r["tpot_ms"]["p50"], "%9.1f")))
    print(f"# aggregate output tokens/s, --kv-type f16 / f32: {ratio:.3f}x "
          f"({a.concurrent} concurrent x {a.output_len}, best of {a.kv_rounds} round(s) each)",
          flush=True)
    if a.json:
        loadgen.write_json({"schema": "sampan-serve-bench-kv-1", "machine": loadgen.machine_info(),
                            "options": {"threads": a.threads, "concurrent": a.concurrent,
                                        "prompt_len": a.prompt_len, "output_len": a.output_len,
                                        "rounds": a.kv_rounds, "seed": a.seed},
                            "model": facts, "runs": [f16, f32], "ratio": ratio}, a.json)
    return 0


def main(argv=None):
    p = build_parser()
    a = p.parse_args(argv)
    a.shape = a.shape or ("small" if a.quick else "tinyllama-1.1b")
    a.single = a.single if a.single is not None else (2 if a.quick else 4)
    a.concurrent = a.concurrent if a.concurrent is not None else (8 if a.quick else 32)
    a.prompt_len = a.prompt_len or ("fixed:8" if a.quick else "fixed:16")
    a.output_len = a.output_len or ("fixed:16" if a.quick else "fixed:64")
    if a.single < 1 or a.concurrent < 1 or a.threads < 1 or a.kv_rounds < 1:
        p.error("--single, --concurrent, --threads and --kv-rounds must be >= 1")
    try:
        loadgen.Dist(a.prompt_len)
        loadgen.Dist(a.output_len)
    except ValueError as e:
        p.error(str(e))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if a.kv_compare:
        try:
            model = ensure_model(a, log)
            return kv_compare(a, model, model_facts(model), log)
        except (RuntimeError, ValueError, OSError, GGUFError, subprocess.TimeoutExpired) as e:
            log(f"serve_bench: {e}")
            return 1
    try:
        model = ensure_model(a, log)
        facts = model_facts(model)
        ceil_out = (a.json + ".ceilings.json" if a.json else
                    os.path.join(a.model_dir, f"ceilings-{os.getpid()}.json"))
        ceil = (load_ceilings(a.ceilings_json, a.threads) if a.ceilings_json else
                measure_ceilings(a.sampan, a.threads, a.quick, ceil_out, log))
        runs, results, cmd, calib, rc_server = serve_session(
            a, model, facts, ceil, [], (("single", a.single, 1), ("concurrent", a.concurrent, 0)),
            log)
    except (RuntimeError, ValueError, OSError, GGUFError, subprocess.TimeoutExpired) as e:
        log(f"serve_bench: {e}")
        return 1
    single, conc = runs
    ratio = (conc["tokens_per_s"] / single["tokens_per_s"]
             if single["tokens_per_s"] > 0 and conc["tokens_per_s"] > 0 else None)
    dr = (conc["decode_tokens_per_s"] / single["decode_tokens_per_s"]
          if conc["decode_tokens_per_s"] and single["decode_tokens_per_s"] else None)
    j = {
        "schema": SCHEMA,
        "machine": loadgen.machine_info(),
        "options": {"quick": a.quick, "threads": a.threads, "single": a.single,
                    "concurrent": a.concurrent, "prompt_len": a.prompt_len,
                    "output_len": a.output_len, "seed": a.seed,
                    "server_cmd": cmd,
                    "server_exit_status": rc_server},
        "model": facts,
        "calibration": calib,
        "ceilings": [ceil],
        "runs": runs,
        "ratio": ratio,
        "decode_ratio": dr,
        "acceptance": {"min_ratio": a.min_ratio, "pass": ratio is not None and
                       ratio >= a.min_ratio},
        "loadgen": results,
    }
    print(format_table(j), flush=True)
    if a.json:
        loadgen.write_json(j, a.json)
    failed = sum(r["failed"] for r in runs)
    if failed:
        log(f"serve_bench: {failed} request(s) failed")
    return 1 if failed or (a.check and not j["acceptance"]["pass"]) else 0


if __name__ == "__main__":
    sys.exit(main())
