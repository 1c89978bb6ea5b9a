#!/usr/bin/env python3
"""tests/load/test_loadgen.py — unit and loopback tests of benchmarks/loadgen.py and the model
arithmetic of benchmarks/serve_bench.py.

Independent references: percentiles against hand-computed values (and numpy.percentile when
numpy is importable), distributions against their defining moments, GGUF facts against the
shapes listed in ../shared/README.md, and end-to-end runs against tests/load/fake_server.py,
whose tokenizer is one token per word plus BOS and which streams exactly max_tokens tokens,
so every count is known in advance. Fault injection (HTTP 500, stalled streams, a wrong API key,
no usage in the stream) checks that failures are counted, bounded by the timeouts, and named.
Prints `N passed, N failed` last; exit 0 only if nothing failed.
"""
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import unittest
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import loadgen  # noqa: E402
import serve_bench  # noqa: E402

SHARED = os.environ.get("SAMPAN_SHARED", os.path.join(ROOT, "..", "shared"))


class FakeServer:
    """fake_server.py in its own process, stopped by pid."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_server.py")]
                                     + list(args), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        line = self.proc.stderr.readline().decode()
        m = serve_bench.LISTEN_RE.search(line)
        if not m:
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{m.group(2)}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def opts(url, **kw):
    o = dict(url=url, api_key=None, model=None, endpoint="completions", num_requests=8,
             rate="inf", concurrency=0, prompt_len="fixed:8", output_len="fixed:8", seed=1,
             temperature=0.0, ignore_eos=True, calibrate=True, request_timeout=30.0,
             timeout=60.0, allow_remote=False)
    o.update(kw)
    return SimpleNamespace(**o)


def quiet_run(o):
    return loadgen.run(o, log=lambda m: None)


def ordered(st):
    return st["min"] <= st["p50"] <= st["p90"] <= st["p99"] <= st["max"]


class TestDist(unittest.TestCase):
    def test_valid(self):
        d = loadgen.Dist("fixed:7")
        self.assertEqual([d.sample(random.Random(0)) for _ in range(5)], [7] * 5)
        r = random.Random(3)
        u = [loadgen.Dist("uniform:2:5").sample(r) for _ in range(2000)]
        self.assertEqual(set(u), {2, 3, 4, 5})
        self.assertAlmostEqual(sum(u) / len(u), 3.5, delta=0.1)
        r = random.Random(4)
        n = [loadgen.Dist("normal:100:10").sample(r) for _ in range(20000)]
        mean = sum(n) / len(n)
        sd = math.sqrt(sum((x - mean) ** 2 for x in n) / (len(n) - 1))
        self.assertAlmostEqual(mean, 100, delta=0.5)
        self.assertAlmostEqual(sd, 10, delta=0.5)
        self.assertTrue(all(isinstance(x, int) for x in n))
        self.assertEqual(min(loadgen.Dist("normal:2:50").sample(r) for _ in range(500)), 1)
        self.assertEqual(loadgen.Dist("normal:5:0").sample(r), 5)
        self.assertEqual(loadgen.Dist("Uniform:3:3").sample(r), 3)

    def test_invalid(self):
        for s in ("fixed:0", "fixed:1.5", "fixed:x", "fixed", "fixed:1:2", "uniform:5:3",
                  "uniform:0:3", "uniform:1", "uniform:1.5:3", "normal:0:1", "normal:10:-1",
                  "normal:10", "gamma:1:2", "", "fixed:inf", "normal:nan:1"):
            with self.assertRaises(ValueError, msg=s):
                loadgen.Dist(s)

    def test_seeded(self):
        cal = {"tokens_per_word": 1.0, "overhead_tokens": 1.0}
        a = loadgen.make_workload(50, loadgen.Dist("uniform:1:100"),
                                  loadgen.Dist("normal:20:5"), 3.0, 9, cal)
        b = loadgen.make_workload(50, loadgen.Dist("uniform:1:100"),
                                  loadgen.Dist("normal:20:5"), 3.0, 9, cal)
        c = loadgen.make_workload(50, loadgen.Dist("uniform:1:100"),
                                  loadgen.Dist("normal:20:5"), 3.0, 10, cal)
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)
        # the arrival rate does not change prompts or lengths
        d = loadgen.make_workload(50, loadgen.Dist("uniform:1:100"),
                                  loadgen.Dist("normal:20:5"), math.inf, 9, cal)
        self.assertEqual([(x["prompt"], x["max_tokens"]) for x in a],
                         [(x["prompt"], x["max_tokens"]) for x in d])
        self.assertEqual({x["arrival_s"] for x in d}, {0.0})


class TestStats(unittest.TestCase):
    def test_percentile_by_hand(self):
        p = loadgen.percentile
        self.assertEqual(p([1, 2, 3, 4], 50), 2.5)
        self.assertAlmostEqual(p([1, 2, 3, 4], 90), 3.7)
        self.assertAlmostEqual(p([1, 2, 3, 4], 99), 3.97)
        self.assertEqual(p([5], 99), 5)
        self.assertIsNone(p([], 50))
        self.assertEqual(p([10, 20, 30, 40, 50], 0), 10)
        self.assertEqual(p([10, 20, 30, 40, 50], 100), 50)
        self.assertEqual(p(list(range(101)), 90), 90)
        s = loadgen.summarize([4, 1, 3, 2])
        self.assertEqual((s["n"], s["p50"], s["mean"], s["min"], s["max"]), (4, 2.5, 2.5, 1, 4))
        e = loadgen.summarize([])
        self.assertEqual(e["n"], 0)
        self.assertIsNone(e["p99"])

    def test_percentile_numpy(self):
        try:
            import numpy
        except ImportError:
            self.skipTest("numpy not importable")
        r = random.Random(5)
        for n in (1, 2, 7, 100, 1001):
            v = sorted(r.expovariate(1.0) for _ in range(n))
            for q in (50, 90, 99):
                self.assertAlmostEqual(loadgen.percentile(v, q),
                                       float(numpy.percentile(v, q)), places=12)

    def test_poisson_arrivals(self):
        cal = {"tokens_per_word": 1.0, "overhead_tokens": 0.0}
        w = loadgen.make_workload(5000, loadgen.Dist("fixed:1"), loadgen.Dist("fixed:1"),
                                  4.0, 2, cal)
        gaps = [b["arrival_s"] - a["arrival_s"] for a, b in zip(w, w[1:])]
        mean = sum(gaps) / len(gaps)
        sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
        self.assertAlmostEqual(mean, 0.25, delta=0.25 * 0.05)
        self.assertAlmostEqual(sd, 0.25, delta=0.25 * 0.07)   # exponential: sd == mean
        self.assertEqual(w[0]["arrival_s"], 0.0)

    def test_rate(self):
        self.assertTrue(math.isinf(loadgen.parse_rate("inf")))
        self.assertEqual(loadgen.parse_rate("2.5"), 2.5)
        for s in ("0", "-1", "nan", "abc", ""):
            with self.assertRaises(ValueError, msg=s):
                loadgen.parse_rate(s)

    def test_words_for_tokens(self):
        cal = {"tokens_per_word": 2.0, "overhead_tokens": 1.0}
        self.assertEqual(loadgen.words_for_tokens(21, cal), 10)
        self.assertEqual(loadgen.words_for_tokens(1, cal), 1)


class TestSSE(unittest.TestCase):
    def test_events(self):
        p = loadgen.SSEParser()
        lines = [b": comment\n", b"data: {\"a\": 1}\r\n", b"\r\n", b"event: x\n",
                 b"data:one\n", b"data: two\n", b"\n", b"\n", b"data: [DONE]\n", b"\n"]
        evs = [e for e in (p.feed(x) for x in lines) if e is not None]
        self.assertEqual(evs, ['{"a": 1}', "one\ntwo", "[DONE]"])
        p.feed(b"data: tail\n")
        self.assertEqual(p.flush(), "tail")
        self.assertIsNone(p.flush())

    def test_token_chunks(self):
        tc = loadgen._token_chunk
        self.assertEqual(tc("completions", {"choices": [{"text": "", "finish_reason": None}]}),
                         (True, None))
        self.assertEqual(tc("completions", {"choices": [], "usage": {}}), (False, None))
        self.assertEqual(tc("chat", {"choices": [{"delta": {"role": "assistant",
                                                            "content": ""}}]}), (False, None))
        self.assertEqual(tc("chat", {"choices": [{"delta": {"content": "x"},
                                                  "finish_reason": "length"}]}),
                         (True, "length"))
        self.assertEqual(tc("chat", {"choices": [{"delta": {}, "finish_reason": "stop"}]}),
                         (False, "stop"))
        self.assertEqual(tc("completions", {"choices": [{"text": "", "finish_reason": "length"}]}),
                         (False, "length"))
        self.assertEqual(tc("completions", {"choices": [{"text": "a", "finish_reason": "stop"}]}),
                         (True, "stop"))


class TestTarget(unittest.TestCase):
    def test_loopback_only(self):
        for u in ("http://127.0.0.1:8080", "http://localhost:1/v1", "http://[::1]:9/",
                  "http://127.1.2.3:5"):
            t = loadgen.Target(u)
            self.assertEqual(t.prefix, "")
        for u in ("http://192.0.2.1:8080", "http://10.0.0.1:80", "https://127.0.0.1:1",
                  "ftp://127.0.0.1/", "http://:80", "http://127.0.0.1:99999"):
            with self.assertRaises(ValueError, msg=u):
                loadgen.Target(u)
        self.assertEqual(loadgen.Target("http://192.0.2.1:8", allow_remote=True).port, 8)
        self.assertEqual(loadgen.Target("http://127.0.0.1:8/api/v1").path("/v1/models"),
                         "/api/v1/models")

    def test_cli_refuses_remote(self):
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            rc = loadgen.main(["--url", "http://192.0.2.1:8080", "-n", "1", "--timeout", "5"])
        self.assertEqual(rc, 1)
        self.assertIn("not a loopback address", err.getvalue())
        with redirect_stderr(io.StringIO()), self.assertRaises(SystemExit) as cm:
            loadgen.main(["--url", "http://127.0.0.1:1", "--prompt-len", "fixed:0"])
        self.assertEqual(cm.exception.code, 2)


class TestModelFacts(unittest.TestCase):
    """Params and bytes from the GGUF header against ../shared/README.md's shape table."""

    def model(self, name):
        p = os.path.join(SHARED, "models", name)
        if not os.path.exists(p):
            self.skipTest(f"{p} not found")
        return serve_bench.model_facts(p)

    def test_tiny_llama_f32(self):
        f = self.model("tiny-llama-f32.gguf")
        # dim 64, 2 layers, 4 heads / 2 kv heads (head_dim 16), ffn 128, vocab 32000, tied head
        layer = 64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3
        self.assertEqual((f["n_layers"], f["n_heads"], f["head_dim"]), (2, 4, 16))
        self.assertEqual(f["layer_params"], 2 * layer)
        self.assertEqual(f["output_params"], 32000 * 64)
        self.assertEqual(f["weight_bytes_per_pass"], 4 * (2 * layer + 32000 * 64))
        self.assertEqual(f["type"], "F32")

    def test_small_llama_q4_0(self):
        f = self.model("small-llama-q4_0.gguf")
        # dim 256, 4 layers, 8 / 2 heads (head_dim 32), ffn 768; Q4_0, output.weight Q6_K
        layer = 256 * 256 * 2 + 256 * 64 * 2 + 256 * 768 * 3
        self.assertEqual(f["layer_params"], 4 * layer)
        self.assertEqual(f["weight_bytes_per_pass"], 4 * layer // 32 * 18 + 32000 * 256 // 256 * 210)
        self.assertEqual(f["type"], "Q4_0")

    def test_request_flops(self):
        m = {"layer_params": 1000, "output_params": 100, "n_heads": 2, "head_dim": 4,
             "n_layers": 3}
        # P=3, O=2: positions 0..3 run (n=4): 2*1000*4 + 2*100*2 + 4*2*4*3*(1+2+3+4)
        self.assertEqual(serve_bench.request_flops(m, 3, 2), 8000 + 400 + 96 * 10)

    def test_not_gguf(self):
        with tempfile.NamedTemporaryFile(suffix=".gguf") as t:
            t.write(b"GGML" + b"\0" * 60)
            t.flush()
            with self.assertRaises(serve_bench.GGUFError):
                serve_bench.model_facts(t.name)
            t.seek(0)
            t.write(b"GGUF\x03\0\0\0" + b"\x01")
            t.truncate(9)
            t.flush()
            with self.assertRaises(serve_bench.GGUFError):
                serve_bench.model_facts(t.name)


class TestAgainstFakeServer(unittest.TestCase):
    def check_counts(self, res, n):
        s = res["summary"]
        self.assertEqual((s["requests"], s["ok"], s["failed"], s["short"]), (n, n, 0, 0))
        for r in res["requests"]:
            self.assertTrue(r["ok"], r["error"])
            self.assertEqual(r["output_tokens"], r["max_tokens"])
            self.assertEqual(r["chunks"], r["max_tokens"])
            self.assertEqual(len(r["itl_ms"]), r["max_tokens"] - 1)
            self.assertGreater(r["ttft_ms"], 0)
            self.assertLessEqual(r["ttft_ms"], r["latency_ms"])
            self.assertGreaterEqual(r["start_s"] + 1e-3, r["arrival_s"])
            self.assertEqual(r["finish_reason"], "length")
        self.assertEqual(s["output_tokens"], sum(r["max_tokens"] for r in res["requests"]))
        self.assertGreater(s["duration_s"], 0)
        self.assertAlmostEqual(s["output_tokens_per_s"], s["output_tokens"] / s["duration_s"])
        self.assertAlmostEqual(s["requests_per_s"], n / s["duration_s"])
        self.assertEqual(s["itl_ms"]["n"], sum(r["max_tokens"] - 1 for r in res["requests"]))
        for k in ("ttft_ms", "itl_ms", "latency_ms"):
            self.assertTrue(ordered(s[k]), (k, s[k]))
        json.dumps(res, allow_nan=False)

    def test_counts_and_usage(self):
        with FakeServer("--api-key", "sekrit", "--per-seq-ms", "0.5") as fs:
            res = quiet_run(opts(fs.url, api_key="sekrit", num_requests=12,
                                 prompt_len="uniform:4:20", output_len="uniform:3:12"))
        self.check_counts(res, 12)
        cal = res["calibration"]
        self.assertEqual((cal["tokens_per_word"], cal["overhead_tokens"]), (1.0, 1.0))
        # calibrated prompts hit their target exactly with a one-token-per-word tokenizer
        for r in res["requests"]:
            self.assertEqual(r["prompt_tokens"], r["prompt_tokens_target"])
        s = res["summary"]
        self.assertEqual(s["input_tokens_source"], "usage")
        self.assertEqual(s["input_tokens"], sum(r["prompt_tokens"] for r in res["requests"]))
        self.assertTrue(ordered(s["tpot_ms"]))
        self.assertEqual(res["options"]["model"], "fake-model")

    def test_calibration_small_context(self):
        # 48 words do not fit a context of 30: the 12-word fallback calibrates
        with FakeServer("--ctx", "30") as fs:
            res = quiet_run(opts(fs.url, num_requests=2, prompt_len="fixed:10",
                                 output_len="fixed:4"))
        self.check_counts(res, 2)
        cal = res["calibration"]
        self.assertEqual((cal["tokens_per_word"], cal["overhead_tokens"], cal["source"]),
                         (1.0, 1.0, "server usage"))
        self.assertEqual([r["prompt_tokens"] for r in res["requests"]], [10, 10])

    def test_no_usage_counts_chunks(self):
        with FakeServer("--no-usage") as fs:
            res = quiet_run(opts(fs.url, num_requests=4, output_len="fixed:6"))
        self.check_counts(res, 4)
        self.assertEqual(res["summary"]["input_tokens_source"], "estimate")
        self.assertEqual(res["summary"]["output_tokens"], 24)

    def test_chat(self):
        with FakeServer() as fs:
            res = quiet_run(opts(fs.url, endpoint="chat", num_requests=3, output_len="fixed:5"))
        self.check_counts(res, 3)

    def test_wrong_key_and_errors(self):
        with FakeServer("--api-key", "right", "--fail-every", "3") as fs:
            with self.assertRaises(RuntimeError):
                quiet_run(opts(fs.url, api_key="wrong"))
            res = quiet_run(opts(fs.url, api_key="wrong", model="fake-model", num_requests=3))
            self.assertEqual(res["summary"]["failed"], 3)
            self.assertEqual(list(res["summary"]["errors"]), ["HTTP 401: invalid API key"])
            # requests 3, 6 and 9 the server sees (2 calibration requests come first) fail
            res = quiet_run(opts(fs.url, api_key="right", num_requests=9, concurrency=1))
        s = res["summary"]
        self.assertEqual((s["ok"], s["failed"]), (6, 3))
        self.assertEqual(s["errors"], {"HTTP 500: injected failure": 3})
        self.assertEqual([r["id"] for r in res["requests"] if not r["ok"]], [0, 3, 6])

    def test_request_timeout(self):
        with FakeServer("--stall-every", "2") as fs:
            t0 = time.monotonic()
            res = quiet_run(opts(fs.url, num_requests=4, concurrency=1, calibrate=False,
                                 request_timeout=0.5, output_len="fixed:6"))
            took = time.monotonic() - t0
        s = res["summary"]
        self.assertEqual((s["ok"], s["failed"]), (2, 2))
        self.assertTrue(all(e.startswith("no data for") for e in s["errors"]), s["errors"])
        self.assertLess(took, 10)

    def test_total_timeout(self):
        with FakeServer("--stall-every", "1") as fs:
            t0 = time.monotonic()
            res = quiet_run(opts(fs.url, num_requests=6, concurrency=3, calibrate=False,
                                 request_timeout=60, timeout=1.0))
            took = time.monotonic() - t0
        s = res["summary"]
        self.assertEqual((s["ok"], s["failed"]), (0, 6))
        self.assertEqual(s["errors"], {"total timeout (1 s)": 3, "not sent": 3})
        self.assertLess(took, 6)

    def test_concurrency_cap_and_rate(self):
        with FakeServer("--step-ms", "5") as fs:
            res = quiet_run(opts(fs.url, num_requests=6, concurrency=2, output_len="fixed:5"))
            self.check_counts(res, 6)
            ev = sorted([(r["start_s"], 1) for r in res["requests"]] +
                        [(r["end_s"], -1) for r in res["requests"]])
            live = peak = 0
            for _, d in ev:
                live += d
                peak = max(peak, live)
            self.assertEqual(peak, 2)
            res = quiet_run(opts(fs.url, num_requests=10, rate="20", output_len="fixed:2"))
        self.check_counts(res, 10)
        arr = [r["arrival_s"] for r in res["requests"]]
        self.assertEqual(arr, sorted(arr))
        self.assertGreater(arr[-1], 0)
        for r in res["requests"]:
            self.assertLess(r["start_s"] - r["arrival_s"], 0.5)

    def test_cli_json(self):
        with FakeServer() as fs, tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "lg.json")
            so = io.StringIO()
            with redirect_stdout(so), redirect_stderr(io.StringIO()):
                rc = loadgen.main(["--url", fs.url, "-n", "5", "--output-len", "fixed:4",
                                   "--json", out])
            self.assertEqual(rc, 0)
            with open(out) as f:
                j = json.load(f)
        self.assertEqual(j["schema"], "sampan-loadgen-1")
        self.assertEqual(set(j), {"schema", "machine", "options", "calibration", "summary",
                                  "requests"})
        self.assertEqual(j["summary"]["ok"], 5)
        for k in ("ttft", "tpot", "itl", "latency"):
            self.assertIn("\n" + k + " ", so.getvalue())


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    res = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    passed = res.testsRun - failed - len(res.skipped)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
