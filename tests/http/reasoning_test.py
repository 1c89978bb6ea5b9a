#!/usr/bin/env python3
"""tests/http/reasoning_test.py — reasoning_content on /v1/chat/completions, end to end.

../shared's tiny-deepseek-f32 given DeepSeek-R1's chat template (a reasoning template: it
names "</think>") and, for comparison, V3's (not one). Both render one user message the same
way, so greedy answers are the same tokens. The random-weight model never writes "</think>",
so on the R1 server the whole answer is the thought (vLLM's deepseek_r1 rule): non-streamed,
message.reasoning_content is the V3 server's message.content and content is ""; streamed, the
deltas' reasoning_content pieces concatenate to the same text and no delta carries content.
(The split itself, tags cut at every byte, is test_think.c's.)"""
import os, struct, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from serverlib import SHARED, Server, check, finish, need, need_serve   # noqa: E402
from gguf_py import edit, parse, string, write   # noqa: E402

src = os.path.join(SHARED, "models", "tiny-deepseek-f32.gguf")
need(src)
need_serve()
U, A, E = "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"
R1 = ("{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
      "{{'" + U + "' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' %}"
      "{% set content = message['content'] %}{% if '</think>' in content %}"
      "{% set content = content.split('</think>')[-1] %}{% endif %}{{'" + A + "' + content + '" + E + "'}}"
      "{%- endif %}{%- endfor -%}{% if add_generation_prompt %}{{'" + A + "'}}{% endif %}")
V3 = R1.replace("{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}", "")
kvs, tensors = parse(src)
with tempfile.TemporaryDirectory(prefix="sampan-test-") as tmp:
    paths = {}
    for name, tmpl in (("r1", R1), ("v3", V3)):
        paths[name] = os.path.join(tmp, f"tiny-deepseek-{name}.gguf")
        write(paths[name], edit(kvs, {"tokenizer.chat_template": string(tmpl)}), tensors)
    body = {"messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 12,
            "temperature": 0}
    got = {}
    for name in ("v3", "r1"):
        srv = Server(paths[name])
        try:
            st, _, j = srv.json("POST", "/v1/chat/completions", body)
            got[name] = j["choices"][0]["message"] if st == 200 else None
            check(st == 200, f"{name}: chat completion {st}")
            st, ct, events, _ = srv.stream("/v1/chat/completions", dict(body, stream=True))
            deltas = [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")]
            got[name + "-stream"] = ("".join(d.get("reasoning_content", "") for d in deltas),
                                     "".join(d.get("content", "") for d in deltas))
        finally:
            srv.stop()
        srv.check_clean_exit(f"{name} server")
v3, r1 = got.get("v3") or {}, got.get("r1") or {}
check("reasoning_content" not in v3 and v3.get("content"), f"V3 template: plain content {v3.get('content')!r}")
check(r1.get("reasoning_content") == v3.get("content") and r1.get("content") == "",
      f"R1 template: the answer (no </think>) is all reasoning_content {r1.get('reasoning_content')!r}, content ''")
rs, cs = got.get("r1-stream", ("", "x"))
check(rs == v3.get("content") and cs == "", f"R1 streamed: delta.reasoning_content pieces = the same text, no content ({cs!r})")
vs = got.get("v3-stream", ("x", ""))
check(vs == ("", v3.get("content")), "V3 streamed: content only")
finish()
