#!/usr/bin/env python3
"""benchmarks/loadgen.py — a load generator for an OpenAI-compatible completions server.

Replays N requests against the one server named by --url (loopback only, unless
--allow-remote): arrivals are Poisson at --rate requests/s, or all at once with --rate inf,
optionally capped at --concurrency requests in flight. Prompt and output lengths are drawn
with --seed from distributions given in tokens: "fixed:N", "uniform:A:B" (inclusive) or
"normal:MEAN:SD" (rounded, at least 1). Every request streams (SSE, `stream: true`) with
max_tokens = its drawn output length and `ignore_eos: true`, so it should produce exactly that
many tokens. Measured per request, from the moment the request is sent:
  TTFT     time to the first token chunk
  ITL      every gap between consecutive token chunks
  TPOT     (last token chunk - first token chunk) / (output tokens - 1)
  latency  time to the end of the stream (`data: [DONE]`)
  output tokens: usage.completion_tokens from the final chunk (asked for with
  stream_options.include_usage), else the number of token chunks; input tokens likewise.
The run reports requests ok/failed, duration (first send to last end), requests/s, output and
input tokens/s, and p50/p90/p99/mean/min/max of TTFT, TPOT, ITL and latency: a table on stdout
and, with --json, the object described under SCHEMA below. serve_bench.py imports run().

Prompts are random words from a fixed list. How many tokens a word makes depends on the
server's tokenizer, so before the run two small non-streaming requests (max_tokens 1) read
usage.prompt_tokens: the prompt "the" gives the fixed overhead (BOS, template: its count less
one), 48 random words (12 if the context is too small for 48) the tokens per word; without
usage, 1.3 tokens per word and no overhead are assumed.

Bounded: a request fails after --request-timeout seconds (or that long without a byte);
the whole run stops after --timeout seconds, cutting the connections still open and counting
those requests (and any not yet sent) as failed. Python 3 standard library only.

SCHEMA ("sampan-loadgen-1"), times in milliseconds, rates per second:
  schema, machine {host, cpu, cpus_online, cpus_affinity, loadavg}, options {...},
  calibration {tokens_per_word, overhead_tokens, source},
  summary {requests, ok, failed, short, duration_s, requests_per_s, output_tokens,
           input_tokens, output_tokens_per_s, input_tokens_per_s, input_tokens_source,
           ttft_ms, tpot_ms, itl_ms, latency_ms: {n, p50, p90, p99, mean, min, max}, errors},
  requests [{id, arrival_s, start_s, end_s, prompt_tokens_target, prompt_tokens, max_tokens,
             output_tokens, chunks, ttft_ms, tpot_ms, latency_ms, itl_ms[], finish_reason,
             ok, error}]
"""
import argparse
import http.client
import ipaddress
import json
import math
import os
import random
import socket
import sys
import threading
import time
import urllib.parse

SCHEMA = "sampan-loadgen-1"
DEFAULT_TOKENS_PER_WORD = 1.3
CALIBRATION_WORDS = (48, 12)

WORDS = (
    "the of and to in is was he for it with as his on be at by had are but from or have an "
    "they which one you were her all she there would their we him been has when who will more "
    "no if out so said what up its about into than them can only other new some could time "
    "these two may then do first any my now such like our over man me even most made after "
    "also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last might "
    "us great old year off come since against go came right used take three house river city "
    "garden morning letter window music story water bridge harbour market mountain island "
    "language summer winter answer question number paper table school station evening light"
).split()


# ---- distributions and statistics ---------------------------------------------------------

class Dist:
    """A length distribution in tokens, parsed from "fixed:N", "uniform:A:B" or
    "normal:MEAN:SD". sample() returns an int >= 1."""

    def __init__(self, spec):
        self.spec = spec
        parts = spec.strip().split(":")
        kind = parts[0].lower()
        try:
            nums = [float(p) for p in parts[1:]]
        except ValueError:
            raise ValueError(f"length distribution '{spec}': numbers expected after '{kind}:'")
        if any(not math.isfinite(x) for x in nums):
            raise ValueError(f"length distribution '{spec}': numbers must be finite")
        if kind == "fixed" and len(nums) == 1 and nums[0] == int(nums[0]) and nums[0] >= 1:
            self.kind, self.a, self.b = kind, int(nums[0]), int(nums[0])
        elif (kind == "uniform" and len(nums) == 2 and all(x == int(x) for x in nums)
              and 1 <= nums[0] <= nums[1]):
            self.kind, self.a, self.b = kind, int(nums[0]), int(nums[1])
        elif kind == "normal" and len(nums) == 2 and nums[0] >= 1 and nums[1] >= 0:
            self.kind, self.a, self.b = kind, nums[0], nums[1]
        else:
            raise ValueError(f"length distribution '{spec}': expected fixed:N (N >= 1), "
                             "uniform:A:B (integers, 1 <= A <= B) or normal:MEAN:SD "
                             "(MEAN >= 1, SD >= 0)")

    def sample(self, rng):
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.randint(self.a, self.b)
        return max(1, int(round(rng.gauss(self.a, self.b))))

    def mean(self):
        return (self.a + self.b) / 2 if self.kind != "normal" else self.a


def percentile(sorted_vals, q):
    """q-th percentile (0..100) of an ascending list, linear between closest ranks (the
    default method of numpy.percentile); None for an empty list."""
    n = len(sorted_vals)
    if n == 0:
        return None
    pos = (n - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summarize(vals):
    """{n, p50, p90, p99, mean, min, max} of a list of numbers (None entries when empty)."""
    s = sorted(vals)
    out = {"n": len(s)}
    for q in (50, 90, 99):
        out[f"p{q}"] = percentile(s, q)
    out["mean"] = sum(s) / len(s) if s else None
    out["min"] = s[0] if s else None
    out["max"] = s[-1] if s else None
    return out


# ---- server-sent events -------------------------------------------------------------------

class SSEParser:
    """Feed lines (bytes, with or without the line end); returns the data of each complete
    event (several `data:` lines joined by newlines), as the SSE specification defines."""

    def __init__(self):
        self.data = []

    def feed(self, line):
        line = line.rstrip(b"\r\n").decode("utf-8", "replace")
        if line == "":
            if not self.data:
                return None
            ev, self.data = "\n".join(self.data), []
            return ev
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self.data.append(value)
        return None

    def flush(self):
        """The event left when the stream ends without its blank line."""
        ev, self.data = ("\n".join(self.data) if self.data else None), []
        return ev


# ---- target -------------------------------------------------------------------------------

class Target:
    """The server named by --url: scheme http, host, port and a path prefix (a trailing /v1
    is dropped so that both http://h:p and http://h:p/v1 work)."""

    def __init__(self, url, allow_remote=False):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"--url '{url}': expected http://HOST:PORT")
        try:
            self.port = u.port or 80
        except ValueError:
            raise ValueError(f"--url '{url}': bad port")
        self.host = u.hostname
        prefix = u.path.rstrip("/")
        if prefix.endswith("/v1"):
            prefix = prefix[:-3]
        self.prefix = prefix
        self.url = f"http://{self.host}:{self.port}{prefix}"
        if not allow_remote:
            try:
                addrs = {a[4][0] for a in socket.getaddrinfo(self.host, self.port,
                                                             type=socket.SOCK_STREAM)}
            except socket.gaierror as e:
                raise ValueError(f"--url '{url}': cannot resolve {self.host}: {e}")
            bad = [a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
            if bad:
                raise ValueError(f"--url '{url}': {self.host} is not a loopback address "
                                 f"({', '.join(sorted(bad))}); pass --allow-remote to load it")

    def path(self, p):
        return self.prefix + p


def _headers(api_key, body=True):
    h = {"Accept": "text/event-stream, application/json"}
    if body:
        h["Content-Type"] = "application/json"
    if api_key:
        h["Authorization"] = "Bearer " + api_key
    return h


def _error_text(data):
    try:
        j = json.loads(data)
        e = j.get("error", j) if isinstance(j, dict) else j
        if isinstance(e, dict) and "message" in e:
            return str(e["message"])[:300]
        return json.dumps(e)[:300]
    except (ValueError, TypeError):
        return data[:300].decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def http_json(target, method, path, body=None, api_key=None, timeout=30.0):
    """One plain request; returns (status, parsed JSON or None, raw bytes)."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, target.path(path), body=data,
                     headers=_headers(api_key, body is not None))
        r = conn.getresponse()
        raw = r.read(1 << 22)
        try:
            j = json.loads(raw) if raw else None
        except ValueError:
            j = None
        return r.status, j, raw
    finally:
        conn.close()


def fetch_model(target, api_key, timeout=30.0):
    """The first model id listed by GET /v1/models."""
    st, j, raw = http_json(target, "GET", "/v1/models", api_key=api_key, timeout=timeout)
    if st != 200 or not isinstance(j, dict) or not j.get("data"):
        raise RuntimeError(f"GET {target.url}/v1/models: HTTP {st}: {_error_text(raw)} "
                           "(pass --model)")
    return str(j["data"][0]["id"])


# ---- workload -----------------------------------------------------------------------------

def make_prompt(rng, n_words):
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def words_for_tokens(n_tokens, calib):
    return max(1, int(round((n_tokens - calib["overhead_tokens"]) / calib["tokens_per_word"])))


def _prompt_tokens(target, model, api_key, endpoint, timeout, prompt):
    """(usage.prompt_tokens or None, message) of one non-streaming request."""
    body = _body(endpoint, model, prompt, 1, False, True, 0.0)
    try:
        st, j, raw = http_json(target, "POST", _endpoint_path(endpoint), body, api_key, timeout)
    except (OSError, http.client.HTTPException) as e:
        return None, f"calibration request failed: {e}"
    pt = j.get("usage", {}).get("prompt_tokens") if isinstance(j, dict) else None
    if st != 200 or not isinstance(pt, int):
        return None, f"calibration: HTTP {st}: {_error_text(raw)}"
    return pt, None


def calibrate(target, model, api_key, endpoint, timeout):
    """Tokens per word and fixed overhead of this server's tokenizer (see the file header)."""
    t1, why = _prompt_tokens(target, model, api_key, endpoint, timeout, "the")
    if t1 is None:
        return _default_calibration(why)
    overhead = max(0, t1 - 1)   # "the" is one token in any tokenizer trained on English
    rng = random.Random("calibration")
    for n in CALIBRATION_WORDS:   # the shorter one for models with a tiny context
        t, why = _prompt_tokens(target, model, api_key, endpoint, timeout, make_prompt(rng, n))
        if t is not None:
            if t <= overhead:
                return _default_calibration(f"calibration: {n} words made {t} tokens")
            return {"tokens_per_word": (t - overhead) / n, "overhead_tokens": float(overhead),
                    "source": "server usage"}
    return _default_calibration(why)


def _default_calibration(why):
    return {"tokens_per_word": DEFAULT_TOKENS_PER_WORD, "overhead_tokens": 0.0,
            "source": "default", "note": why}


def make_workload(n, prompt_dist, output_dist, rate, seed, calib):
    """The request list, fixed by the seed before anything is sent: each entry's arrival
    time (s after the start), prompt, target prompt tokens and max_tokens."""
    r_len = random.Random(f"{seed}:lengths")
    r_words = random.Random(f"{seed}:words")
    r_arr = random.Random(f"{seed}:arrivals")
    out, t = [], 0.0
    for i in range(n):
        pt = prompt_dist.sample(r_len)
        mt = output_dist.sample(r_len)
        out.append({"id": i, "arrival_s": t, "prompt_tokens_target": pt, "max_tokens": mt,
                    "prompt": make_prompt(r_words, words_for_tokens(pt, calib))})
        if math.isfinite(rate):
            t += r_arr.expovariate(rate)
    return out


def _endpoint_path(endpoint):
    return "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"


def _body(endpoint, model, prompt, max_tokens, stream, ignore_eos, temperature):
    b = {"model": model, "max_tokens": max_tokens, "temperature": temperature}
    if endpoint == "chat":
        b["messages"] = [{"role": "user", "content": prompt}]
    else:
        b["prompt"] = prompt
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    if ignore_eos:
        b["ignore_eos"] = True
    if model is None:
        del b["model"]
    return b


# ---- one streamed request -----------------------------------------------------------------

class Request:
    """One request's measurements; times are perf_counter seconds until finish() turns them
    into the JSON record."""

    def __init__(self, spec):
        self.spec = spec
        self.start = self.end = None
        self.token_times = []
        self.usage = None
        self.finish_reason = None
        self.error = None
        self.conn = None
        self.lock = threading.Lock()
        self.done = False

    def abort(self, why):
        """From another thread: fail the request and cut its connection."""
        with self.lock:
            if self.done:
                return
            self.error = self.error or why
            self.done = True
            conn = self.conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _set_error(self, msg):
        with self.lock:
            if self.error is None:
                self.error = msg


def _token_chunk(endpoint, obj):
    """(is a token chunk, finish_reason) for one parsed SSE chunk."""
    ch = obj.get("choices")
    if not isinstance(ch, list) or not ch or not isinstance(ch[0], dict):
        return False, None
    c = ch[0]
    fr = c.get("finish_reason")
    if endpoint == "chat":
        d = c.get("delta") or {}
        text = d.get("content")
        if "role" in d and text == "":
            return False, fr
    else:
        text = c.get("text")
    # a token chunk may carry no text (bytes held back by a stop string or an incomplete
    # UTF-8 sequence); an empty chunk that only brings the finish_reason is not a token
    tok = isinstance(text, str) and (text != "" or not fr)
    return tok, fr


def stream_request(target, req, model, opts, run_deadline):
    """Sends req (a Request) and reads its event stream to [DONE], recording times."""
    spec = req.spec
    body = json.dumps(_body(opts.endpoint, model, spec["prompt"], spec["max_tokens"], True,
                            opts.ignore_eos, opts.temperature)).encode()
    io_timeout = max(0.05, min(opts.request_timeout, run_deadline - time.perf_counter()))
    conn = http.client.HTTPConnection(target.host, target.port, timeout=io_timeout)
    with req.lock:
        if req.done:
            return
        req.conn = conn
    parser = SSEParser()
    saw_done = False
    try:
        req.start = time.perf_counter()
        deadline = req.start + opts.request_timeout
        conn.request("POST", target.path(_endpoint_path(opts.endpoint)), body=body,
                     headers=_headers(opts.api_key))
        resp = conn.getresponse()
        if resp.status != 200:
            req._set_error(f"HTTP {resp.status}: {_error_text(resp.read(65536))}")
            return
        ctype = resp.getheader("Content-Type", "")
        if "text/event-stream" not in ctype:
            req._set_error(f"response is not an event stream (Content-Type '{ctype}')")
            return
        while not saw_done:
            line = resp.readline(1 << 20)
            now = time.perf_counter()
            ev = parser.feed(line) if line else parser.flush()
            if ev is not None:
                if ev.strip() == "[DONE]":
                    saw_done = True
                    break
                try:
                    obj = json.loads(ev)
                except ValueError:
                    req._set_error(f"bad JSON in event: {ev[:120]!r}")
                    return
                if not isinstance(obj, dict):
                    req._set_error(f"event is not an object: {ev[:120]!r}")
                    return
                if "error" in obj:
                    req._set_error("error event: " + _error_text(json.dumps(obj)))
                    return
                tok, fr = _token_chunk(opts.endpoint, obj)
                if tok:
                    req.token_times.append(now)
                if fr:
                    req.finish_reason = fr
                if isinstance(obj.get("usage"), dict):
                    req.usage = obj["usage"]
            if not line:
                break
            if now > deadline:
                req._set_error(f"request timeout ({opts.request_timeout:g} s)")
                return
        if not saw_done:
            req._set_error("stream ended before 'data: [DONE]'")
    except socket.timeout:
        req._set_error(f"no data for {io_timeout:.3g} s")
    except (OSError, http.client.HTTPException, ValueError) as e:
        req._set_error(f"{type(e).__name__}: {e}")
    finally:
        req.end = time.perf_counter()
        with req.lock:
            req.done = True
            req.conn = None
        conn.close()


def _record(req, t0):
    s = req.spec
    tt = req.token_times
    u = req.usage or {}
    out_tok = u.get("completion_tokens") if isinstance(u.get("completion_tokens"), int) else len(tt)
    in_tok = u.get("prompt_tokens") if isinstance(u.get("prompt_tokens"), int) else None
    ok = req.error is None and req.start is not None and len(tt) > 0
    err = req.error
    if err is None and req.start is not None and not tt:
        err = "no token chunks"
    if err is None and req.start is None:
        err = "not sent"
    ms = 1000.0
    rec = {"id": s["id"], "arrival_s": s["arrival_s"],
           "start_s": req.start - t0 if req.start is not None else None,
           "end_s": req.end - t0 if req.end is not None else None,
           "prompt_tokens_target": s["prompt_tokens_target"], "prompt_tokens": in_tok,
           "max_tokens": s["max_tokens"], "output_tokens": out_tok, "chunks": len(tt),
           "ttft_ms": (tt[0] - req.start) * ms if tt and req.start is not None else None,
           "tpot_ms": (tt[-1] - tt[0]) / (out_tok - 1) * ms if len(tt) > 1 and out_tok > 1
           else None,
           "latency_ms": (req.end - req.start) * ms if req.start is not None and req.end else None,
           "itl_ms": [(b - a) * ms for a, b in zip(tt, tt[1:])],
           "finish_reason": req.finish_reason, "ok": ok, "error": None if ok else err}
    return rec


# ---- the run ------------------------------------------------------------------------------

def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        aff = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        aff = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"host": socket.gethostname(), "cpu": cpu, "cpus_online": os.cpu_count(),
            "cpus_affinity": aff, "loadavg": load}


def summarize_run(records, duration, calib):
    ok = [r for r in records if r["ok"]]
    out_tok = sum(r["output_tokens"] for r in ok)
    have_in = all(r["prompt_tokens"] is not None for r in ok)
    in_tok = sum((r["prompt_tokens"] if have_in else r["prompt_tokens_target"]) for r in ok)
    errors = {}
    for r in records:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    d = max(duration, 1e-9)
    return {
        "requests": len(records), "ok": len(ok), "failed": len(records) - len(ok),
        "short": sum(1 for r in ok if r["output_tokens"] < r["max_tokens"]),
        "duration_s": duration,
        "requests_per_s": len(ok) / d if ok else 0.0,
        "output_tokens": out_tok, "input_tokens": in_tok,
        "output_tokens_per_s": out_tok / d if ok else 0.0,
        "input_tokens_per_s": in_tok / d if ok else 0.0,
        "input_tokens_source": "usage" if have_in else "estimate",
        "ttft_ms": summarize([r["ttft_ms"] for r in ok]),
        "tpot_ms": summarize([r["tpot_ms"] for r in ok if r["tpot_ms"] is not None]),
        "itl_ms": summarize([x for r in ok for x in r["itl_ms"]]),
        "latency_ms": summarize([r["latency_ms"] for r in ok]),
        "errors": errors,
    }


def run(opts, log=None):
    """Runs the benchmark described by opts (the argparse namespace of this file, or any
    object with the same attributes) and returns the result object (see SCHEMA)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    prompt_dist, output_dist = Dist(opts.prompt_len), Dist(opts.output_len)
    rate = parse_rate(opts.rate)
    target = Target(opts.url, opts.allow_remote)
    t_begin = time.perf_counter()
    run_deadline = t_begin + opts.timeout
    model = opts.model or fetch_model(target, opts.api_key, min(30.0, opts.request_timeout))
    calib = getattr(opts, "calibration", None)
    if calib is None and opts.calibrate:
        calib = calibrate(target, model, opts.api_key, opts.endpoint,
                          min(60.0, opts.request_timeout))
        if calib["source"] == "default":
            log(f"loadgen: {calib['note']}; assuming {DEFAULT_TOKENS_PER_WORD} tokens per word")
    elif calib is None:
        calib = _default_calibration("--no-calibrate")
    specs = make_workload(opts.num_requests, prompt_dist, output_dist, rate, opts.seed, calib)
    reqs = [Request(s) for s in specs]
    sem = threading.Semaphore(opts.concurrency) if opts.concurrency else None
    threads = []

    def worker(req):
        try:
            stream_request(target, req, model, opts, run_deadline)
        finally:
            if sem:
                sem.release()

    t0 = time.perf_counter()
    for req in reqs:
        wait = t0 + req.spec["arrival_s"] - time.perf_counter()
        if wait > 0:
            time.sleep(min(wait, max(0.0, run_deadline - time.perf_counter())))
        if time.perf_counter() >= run_deadline:
            break
        if sem and not sem.acquire(timeout=max(0.0, run_deadline - time.perf_counter())):
            break
        th = threading.Thread(target=worker, args=(req,), daemon=True)
        th.start()
        threads.append(th)
    for r in reqs[len(threads):]:
        r.abort("not sent")
    for th in threads:
        th.join(max(0.0, run_deadline - time.perf_counter()))
    late = [r for r in reqs if not r.done]
    for r in late:
        r.abort(f"total timeout ({opts.timeout:g} s)")
    for th in threads:
        th.join(2.0)
    ends = [r.end for r in reqs if r.end is not None]
    duration = (max(ends) if ends else time.perf_counter()) - t0
    records = [_record(r, t0) for r in reqs]
    res = {
        "schema": SCHEMA,
        "machine": machine_info(),
        "options": {"url": target.url, "model": model, "endpoint": opts.endpoint,
                    "num_requests": opts.num_requests,
                    "rate": "inf" if math.isinf(rate) else rate,
                    "concurrency": opts.concurrency or None, "prompt_len": prompt_dist.spec,
                    "output_len": output_dist.spec, "seed": opts.seed,
                    "ignore_eos": opts.ignore_eos, "temperature": opts.temperature,
                    "request_timeout_s": opts.request_timeout, "timeout_s": opts.timeout},
        "calibration": calib,
        "summary": summarize_run(records, duration, calib),
        "requests": records,
    }
    return res


def parse_rate(s):
    s = str(s).strip().lower()
    if s in ("inf", "infinity"):
        return math.inf
    try:
        r = float(s)
    except ValueError:
        raise ValueError(f"--rate '{s}': a positive number of requests/s or 'inf'")
    if not (r > 0) or math.isnan(r):
        raise ValueError(f"--rate '{s}': a positive number of requests/s or 'inf'")
    return r


# ---- output -------------------------------------------------------------------------------

def _f(v, fmt="{:9.1f}"):
    return fmt.format(v) if v is not None else "{:>9}".format("-")


def format_table(res, title=None):
    o, s = res["options"], res["summary"]
    lines = []
    lines.append(f"# {title or 'loadgen'} ({res['schema']}): {o['url']} model {o['model']}, "
                 f"{o['num_requests']} requests, rate {o['rate']}, concurrency "
                 f"{o['concurrency'] or '-'}, prompt {o['prompt_len']}, output {o['output_len']}, "
                 f"seed {o['seed']}")
    lines.append(f"requests  ok {s['ok']}  failed {s['failed']}  short {s['short']}   "
                 f"duration {s['duration_s']:.3f} s")
    lines.append(f"throughput  {s['requests_per_s']:.3f} req/s   {s['output_tokens_per_s']:.2f} "
                 f"output tok/s   {s['input_tokens_per_s']:.2f} input tok/s   "
                 f"({s['output_tokens']} out, {s['input_tokens']} in"
                 f"{'' if s['input_tokens_source'] == 'usage' else ' estimated'})")
    lines.append("%-10s %9s %9s %9s %9s %9s %9s %7s" % ("ms", "p50", "p90", "p99", "mean", "min",
                                                         "max", "n"))
    for k in ("ttft_ms", "tpot_ms", "itl_ms", "latency_ms"):
        st = s[k]
        lines.append("%-10s %s %s %s %s %s %s %7d" % (k[:-3], _f(st["p50"]), _f(st["p90"]),
                                                      _f(st["p99"]), _f(st["mean"]),
                                                      _f(st["min"]), _f(st["max"]), st["n"]))
    for msg, n in sorted(s["errors"].items(), key=lambda kv: -kv[1]):
        lines.append(f"error x{n}: {msg}")
    return "\n".join(lines)


def write_json(res, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def build_parser():
    p = argparse.ArgumentParser(description="Load generator for an OpenAI-compatible server "
                                "(streaming completions); see the file header.")
    p.add_argument("--url", required=True, help="server, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", default=os.environ.get("SAMPAN_API_KEY"),
                   help="sent as 'Authorization: Bearer KEY' (default $SAMPAN_API_KEY)")
    p.add_argument("--model", help="model id (default: the first of GET /v1/models)")
    p.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    p.add_argument("-n", "--num-requests", type=int, default=32)
    p.add_argument("--rate", default="inf", help="Poisson arrivals per second, or inf")
    p.add_argument("--concurrency", type=int, default=0, help="cap on requests in flight")
    p.add_argument("--prompt-len", default="fixed:32", help="fixed:N, uniform:A:B, normal:M:SD")
    p.add_argument("--output-len", default="fixed:64", help="fixed:N, uniform:A:B, normal:M:SD")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help=f"assume {DEFAULT_TOKENS_PER_WORD} tokens per word")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --url that is not a loopback address")
    p.add_argument("--json", help="write the result object here")
    return p


def check_opts(p, a):
    if a.num_requests < 1:
        p.error("--num-requests must be >= 1")
    if a.concurrency < 0:
        p.error("--concurrency must be >= 0 (0: no cap)")
    if not (a.request_timeout > 0 and a.timeout > 0):
        p.error("--request-timeout and --timeout must be > 0")
    try:
        Dist(a.prompt_len)
        Dist(a.output_len)
        parse_rate(a.rate)
    except ValueError as e:
        p.error(str(e))


def main(argv=None):
    p = build_parser()
    a = p.parse_args(argv)
    check_opts(p, a)
    try:
        res = run(a)
    except (ValueError, RuntimeError, OSError, http.client.HTTPException) as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 1
    print(format_table(res))
    if a.json:
        write_json(res, a.json)
    return 0 if res["summary"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
