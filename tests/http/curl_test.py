#!/usr/bin/env python3
"""tests/http/curl_test.py — runs the README's curl examples (tests/http/curl_examples.sh,
one block per "# example: NAME") with the real curl against `sampan serve`, and checks each
output: the greedy completion is ../shared/reference/stories260K's text, streams are
server-sent events ending in [DONE], the metrics lines parse, the bad request is a 400 error
object, and the API-key example works only against a server started with that key."""
import json, os, re, shutil, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from serverlib import STORIES, Server, check, finish, need, need_serve, reference, sse_events   # noqa: E402

need(STORIES)
need_serve()
if not shutil.which("curl"):
    print("skip: curl not found")
    sys.exit(77)
GREEDY = bytes.fromhex(reference(1)["greedy_text_hex"]).decode()
PIECES16 = "".join(reference(1)["greedy_pieces"][:16])


def examples():
    """{name: command text} in file order"""
    out, name, lines = {}, None, []
    for line in open(os.path.join(HERE, "curl_examples.sh")).read().splitlines() + [""]:
        m = re.match(r"# example: (\S+)", line)
        if m:
            name, lines = m.group(1), []
        elif name and not line.strip():
            out[name] = "\n".join(lines)
            name = None
        elif name:
            lines.append(line)
    return out


def run(cmd, srv, key=""):
    env = dict(os.environ, URL=srv.base, SAMPAN_API_KEY=key)
    r = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, timeout=120)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def main():
    ex = examples()
    check(set(ex) == {"health", "models", "completion", "completion-stream", "chat", "chat-stream",
                      "metrics", "bad-request", "api-key"}, f"curl_examples.sh has the examples ({sorted(ex)})")
    srv = Server()
    try:
        rc, out = run(ex["health"], srv)
        check(rc == 0 and json.loads(out) == {"status": "ok"}, f"curl health: {out.strip()}")
        rc, out = run(ex["models"], srv)
        check(rc == 0 and json.loads(out)["data"][0]["id"] == "stories260K", "curl models")
        rc, out = run(ex["completion"], srv)
        j = json.loads(out) if rc == 0 else {}
        check(j.get("choices", [{}])[0].get("text") == GREEDY, "curl completion: the reference greedy text")
        rc, out = run(ex["completion-stream"], srv)
        ev = sse_events(out)
        text = "".join(e["choices"][0]["text"] for e in ev if isinstance(e, dict) and e.get("choices"))
        check(rc == 0 and text == PIECES16 and ev[-1] == "[DONE]", "curl completion-stream: 16 reference tokens, [DONE]")
        rc, out = run(ex["chat"], srv)
        j = json.loads(out) if rc == 0 else {}
        msg = j.get("choices", [{}])[0].get("message", {})
        check(j.get("object") == "chat.completion" and msg.get("role") == "assistant"
              and isinstance(msg.get("content"), str) and j["usage"]["completion_tokens"] <= 32,
              "curl chat: an assistant message")
        rc, out = run(ex["chat-stream"], srv)
        ev = sse_events(out)
        dicts = [e for e in ev if isinstance(e, dict)]
        check(rc == 0 and dicts and dicts[0]["choices"][0]["delta"].get("role") == "assistant"
              and dicts[-1].get("usage", {}).get("completion_tokens", 0) >= 1 and ev[-1] == "[DONE]",
              "curl chat-stream: role first, usage chunk, [DONE]")
        rc, out = run(ex["metrics"], srv)
        vals = dict(line.split() for line in out.strip().splitlines())
        check(rc == 0 and float(vals.get("sampan_requests_total", 0)) >= 4
              and float(vals.get("sampan_tokens_out_total", 0)) >= 64 + 16
              and vals.get("sampan_kv_blocks_used") == "0", f"curl metrics: {vals}")
        rc, out = run(ex["bad-request"], srv)
        body, _, status = out.rpartition("\nHTTP ")
        j = json.loads(body) if body.strip().startswith("{") else {}
        check(status.strip() == "400" and j.get("error", {}).get("param") == "max_tokens",
              f"curl bad-request: 400 with an error object ({out.strip()[:120]})")
        rc, out = run(ex["api-key"], srv)
        check(rc == 0 and json.loads(out)["data"][0]["id"] == "stories260K",
              "curl api-key against a server without a key: the header is ignored")
    finally:
        srv.check_clean_exit("server for the curl examples")

    srv = Server(args=["--api-key", "k3y"])
    try:
        rc, out = run(ex["api-key"], srv, key="k3y")
        check(rc == 0 and json.loads(out)["data"][0]["id"] == "stories260K", "curl api-key: the right key is accepted")
        rc, out = run(ex["models"], srv)
        check(json.loads(out).get("error", {}).get("code") == "invalid_api_key", "curl models without the key: 401 error")
        rc, out = run(ex["api-key"], srv, key="nope")
        check(json.loads(out).get("error", {}).get("code") == "invalid_api_key", "curl api-key with a wrong key: 401 error")
        rc, out = run(ex["health"], srv)
        check(json.loads(out) == {"status": "ok"}, "curl health needs no key")
    finally:
        srv.check_clean_exit("server with an API key")
    finish()


if __name__ == "__main__":
    main()
