#!/usr/bin/env python3
"""tests/load/fake_server.py — a tiny OpenAI-compatible streaming server that stands in for
`sampan serve` in the load generator's tests (loopback only, Python standard library).

It imitates a continuous-batching engine: one step thread emits one token to every running
stream per step, and a step takes --step-ms + --per-seq-ms x (streams running), so batching
shows up in the throughput the way it does on a real server. Its "tokenizer" is one token per
whitespace-separated word plus one BOS token, so tests know the exact token counts.

  GET  /health                 {"status": "ok"} (no API key needed)
  GET  /v1/models              {"object": "list", "data": [{"id": MODEL, ...}]}
  GET  /metrics                Prometheus text: requests, tokens, steps
  POST /v1/completions         prompt, max_tokens, stream, stream_options.include_usage,
  POST /v1/chat/completions    ignore_eos (else EOS after --eos-after tokens), messages

Fault injection for tests: --fail-every N answers every Nth generation request with 500,
--stall-every N stops every Nth stream after two tokens (without closing it), --no-usage leaves
usage out of the stream. Prints "sampan: listening on http://127.0.0.1:PORT" on stderr as
`sampan serve` does; stops on SIGTERM or SIGINT.
"""
import argparse
import json
import queue
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Engine:
    """The step loop: each step sleeps step_s + per_seq_s * n, then gives every stream a
    token (put on its queue)."""

    def __init__(self, step_s, per_seq_s):
        self.step_s, self.per_seq_s = step_s, per_seq_s
        self.lock = threading.Condition()
        self.streams = []
        self.steps = 0
        threading.Thread(target=self.loop, daemon=True).start()

    def add(self, q):
        with self.lock:
            self.streams.append(q)
            self.lock.notify()

    def remove(self, q):
        with self.lock:
            if q in self.streams:
                self.streams.remove(q)

    def loop(self):
        while True:
            with self.lock:
                while not self.streams:
                    self.lock.wait()
                n = len(self.streams)
            time.sleep(self.step_s + self.per_seq_s * n)
            with self.lock:
                self.steps += 1
                for q in self.streams:
                    q.put(1)


class State:
    def __init__(self, a):
        self.a = a
        self.engine = Engine(a.step_ms / 1000.0, a.per_seq_ms / 1000.0)
        self.lock = threading.Lock()
        self.n_gen = 0
        self.tokens_in = self.tokens_out = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-sampan/1"

    def log_message(self, fmt, *args):
        pass

    @property
    def st(self):
        return self.server.state

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, code, msg, typ="invalid_request_error"):
        self.send_json(code, {"error": {"message": msg, "type": typ, "code": code}})

    def authorised(self):
        key = self.st.a.api_key
        if key and self.headers.get("Authorization") != "Bearer " + key:
            self.error(401, "invalid API key", "authentication_error")
            return False
        return True

    def do_GET(self):
        if self.path == "/health":
            return self.send_json(200, {"status": "ok"})
        if not self.authorised():
            return
        if self.path == "/v1/models":
            return self.send_json(200, {"object": "list", "data": [
                {"id": self.st.a.model, "object": "model", "owned_by": "sampan"}]})
        if self.path == "/metrics":
            st = self.st
            text = (f"sampan_requests_total {st.n_gen}\nsampan_tokens_in_total {st.tokens_in}\n"
                    f"sampan_tokens_out_total {st.tokens_out}\n"
                    f"sampan_steps_total {st.engine.steps}\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            return self.wfile.write(text)
        self.error(404, f"no route {self.path}")

    def do_POST(self):
        chat = self.path == "/v1/chat/completions"
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self.error(404, f"no route {self.path}")
        if not self.authorised():
            return
        n = int(self.headers.get("Content-Length", "0"))
        if n > 1 << 20:
            return self.error(413, "body too large")
        try:
            req = json.loads(self.rfile.read(n))
        except ValueError:
            return self.error(400, "malformed JSON")
        if not isinstance(req, dict):
            return self.error(400, "body must be an object")
        a = self.st.a
        if req.get("model", a.model) != a.model:
            return self.error(404, f"unknown model '{req.get('model')}'")
        if chat:
            msgs = req.get("messages")
            if not isinstance(msgs, list):
                return self.error(400, "messages must be a list")
            prompt = " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
        else:
            prompt = req.get("prompt")
            if not isinstance(prompt, str):
                return self.error(400, "prompt must be a string")
        mt = req.get("max_tokens", 16)
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            return self.error(400, "max_tokens must be a positive integer")
        n_prompt = 1 + len(prompt.split())
        if n_prompt + mt > a.ctx:
            return self.error(400, f"prompt of {n_prompt} tokens + max_tokens {mt} exceeds the "
                                   f"context of {a.ctx}")
        with self.st.lock:
            self.st.n_gen += 1
            k = self.st.n_gen
            self.st.tokens_in += n_prompt
        if a.fail_every and k % a.fail_every == 0:
            return self.error(500, "injected failure", "server_error")
        n_out = mt if req.get("ignore_eos") or not a.eos_after else min(mt, a.eos_after)
        stall = bool(a.stall_every and k % a.stall_every == 0)
        if req.get("stream"):
            usage = bool((req.get("stream_options") or {}).get("include_usage")) and a.usage
            return self.stream(chat, k, n_prompt, n_out, mt, usage, stall)
        toks = self.generate(n_out, None)
        text = "".join(toks)
        fr = "length" if n_out == mt else "stop"
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": fr} if chat else
                  {"index": 0, "text": text, "finish_reason": fr})
        self.send_json(200, {"id": f"cmpl-{k}", "object": "chat.completion" if chat else
                             "text_completion", "model": a.model, "choices": [choice],
                             "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                       "total_tokens": n_prompt + n_out}})

    def generate(self, n_out, emit, stall=False):
        """Waits for n_out engine steps; emit(i, text) after each one."""
        q = queue.Queue()
        self.st.engine.add(q)
        out = []
        try:
            for i in range(n_out):
                q.get()
                if stall and i == 2:
                    time.sleep(3600)
                t = f" w{i}"
                out.append(t)
                with self.st.lock:
                    self.st.tokens_out += 1
                if emit:
                    emit(i, t)
        finally:
            self.st.engine.remove(q)
        return out

    def chunk(self, obj):
        data = obj if isinstance(obj, str) else json.dumps(obj)
        payload = f"data: {data}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def stream(self, chat, k, n_prompt, n_out, mt, usage, stall):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": f"cmpl-{k}", "object": "chat.completion.chunk" if chat else
                "text_completion", "model": self.st.a.model}
        if chat:
            self.chunk(dict(base, choices=[{"index": 0, "delta": {"role": "assistant",
                                                                   "content": ""},
                                            "finish_reason": None}]))

        def emit(i, t):
            c = ({"index": 0, "delta": {"content": t}, "finish_reason": None} if chat else
                 {"index": 0, "text": t, "finish_reason": None})
            self.chunk(dict(base, choices=[c]))

        try:
            self.generate(n_out, emit, stall)
            # the finish reason in a chunk of its own, without text, as sampan and OpenAI send it
            fr = "length" if n_out == mt else "stop"
            self.chunk(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": fr} if chat
                                           else {"index": 0, "text": "", "finish_reason": fr}]))
            if usage:
                self.chunk(dict(base, choices=[], usage={
                    "prompt_tokens": n_prompt, "completion_tokens": n_out,
                    "total_tokens": n_prompt + n_out}))
            self.chunk("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main():
    p = argparse.ArgumentParser(description="fake OpenAI-compatible streaming server")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--api-key")
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--step-ms", type=float, default=2.0)
    p.add_argument("--per-seq-ms", type=float, default=0.0)
    p.add_argument("--eos-after", type=int, default=0)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--stall-every", type=int, default=0)
    p.add_argument("--no-usage", dest="usage", action="store_false")
    a, _ = p.parse_known_args()   # extra `sampan serve` options (-m, -t, ...) are ignored
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.state = State(a)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    print(f"sampan: listening on http://127.0.0.1:{srv.server_address[1]}", file=sys.stderr,
          flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    srv.server_close()


if __name__ == "__main__":
    main()
