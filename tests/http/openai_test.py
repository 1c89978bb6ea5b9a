#!/usr/bin/env python3
"""tests/http/openai_test.py — the official `openai` Python package, unchanged, against
`sampan serve`: /v1/models, /v1/completions and /v1/chat/completions, streamed and not, usage,
and the package's error classes for 401 / 404 / 400. Greedy completions must return
../shared/reference/stories260K's text. Runs under the venv made by tests/http/venv.sh
($SAMPAN_VENV, else the build directory's venv, else build/venv); skips (77) when there is none."""
import os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

try:
    import openai
except ImportError:
    sampan = os.environ.get("SAMPAN", "")
    cands = [os.environ.get("SAMPAN_VENV", ""),
             os.path.join(os.path.dirname(sampan), "venv") if sampan else "",
             os.path.join(ROOT, "build", "venv")]
    for v in cands:
        py = os.path.join(v, "bin", "python") if v else ""
        if py and os.path.exists(py) and not os.environ.get("SAMPAN_OPENAI_REEXEC"):
            os.environ["SAMPAN_OPENAI_REEXEC"] = py
            os.execv(py, [py] + sys.argv)
    print("skip: the openai package is not installed (run tests/http/venv.sh to make build/venv)")
    sys.exit(77)

sys.path.insert(0, HERE)
from serverlib import STORIES, Server, check, finish, need, need_serve, reference   # noqa: E402

need(STORIES)
need_serve()
REF = reference(1)
GREEDY = bytes.fromhex(REF["greedy_text_hex"]).decode()
PLAIN = "User: Once upon a time\nAssistant:"   # launch/chat.h's plain template
KEY = "sk-sampan-test"


def main():
    srv = Server(args=["--api-key", KEY])
    try:
        run(srv)
    except Exception as e:   # noqa: BLE001 - one failure, then the server is still stopped
        import traceback
        traceback.print_exc()
        check(False, f"openai client raised {e!r}")
    finally:
        srv.check_clean_exit("server driven by the openai package")
    finish()


def run(srv):
    print(f"openai {openai.__version__} against {srv.base}")
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key=KEY, max_retries=0, timeout=120)

    ids = [m.id for m in client.models.list()]
    check(ids == ["stories260K"], f"models.list(): {ids}")
    check(client.models.retrieve("stories260K").id == "stories260K", "models.retrieve()")

    # completions
    r = client.completions.create(model="stories260K", prompt=REF["prompt"], max_tokens=64, temperature=0)
    check(r.choices[0].text == GREEDY, "completions.create: greedy text equals the reference")
    check(r.choices[0].finish_reason == "length" and r.object == "text_completion",
          f"completions.create: finish_reason {r.choices[0].finish_reason}, object {r.object}")
    check((r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 64, 69),
          f"completions.create: usage {r.usage}")
    r = client.completions.create(model="stories260K", prompt=REF["prompt"], max_tokens=64, temperature=0,
                                  stop=[" park"])
    check(r.choices[0].text == GREEDY[:GREEDY.find(" park")] and r.choices[0].finish_reason == "stop",
          "completions.create with stop")

    chunks = list(client.completions.create(model="stories260K", prompt=REF["prompt"], max_tokens=64,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    check(text == GREEDY, "completions stream: concatenated chunks equal the reference")
    fin = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(fin == ["length"], f"completions stream: one finish_reason ({fin})")
    usage = [c.usage for c in chunks if c.usage]
    check(len(usage) == 1 and usage[0].completion_tokens == 64 and usage[0].prompt_tokens == 5,
          "completions stream: include_usage")

    # chat: the plain template's rendering, compared with a completion of that text
    ref = client.completions.create(model="stories260K", prompt=PLAIN, max_tokens=40, temperature=0)
    msgs = [{"role": "user", "content": "Once upon a time"}]
    r = client.chat.completions.create(model="stories260K", messages=msgs, max_tokens=40, temperature=0)
    check(r.choices[0].message.role == "assistant" and r.object == "chat.completion",
          "chat.completions.create: assistant message")
    check(r.choices[0].message.content == ref.choices[0].text and
          r.usage.prompt_tokens == ref.usage.prompt_tokens,
          "chat.completions.create: equals the completion of the rendered template")
    r2 = client.chat.completions.create(model="stories260K", messages=msgs, max_completion_tokens=40,
                                        temperature=0, seed=7)
    check(r2.choices[0].message.content == r.choices[0].message.content, "chat: max_completion_tokens, seed")

    chunks = list(client.chat.completions.create(model="stories260K", messages=msgs, max_tokens=40,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == r.choices[0].message.content, "chat stream: concatenated deltas equal the non-streamed answer")
    check(chunks[0].choices[0].delta.role == "assistant", "chat stream: first delta has the role")
    usage = [c.usage for c in chunks if c.usage]
    check(len(usage) == 1 and usage[0].total_tokens == r.usage.total_tokens, "chat stream: usage chunk")

    # errors as the package raises them
    bad = openai.OpenAI(base_url=srv.base + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong key raises AuthenticationError")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "a wrong key raises AuthenticationError (401)")
    try:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=4)
        check(False, "an unknown model raises NotFoundError")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and "gpt-4" in str(e), "an unknown model raises NotFoundError (404)")
    try:
        client.completions.create(model="stories260K", prompt="x", max_tokens=0)
        check(False, "max_tokens 0 raises BadRequestError")
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        check(e.status_code == 400 and body.get("param") == "max_tokens",
              f"max_tokens 0 raises BadRequestError with param max_tokens ({e.body})")
    try:
        client.chat.completions.create(model="stories260K", messages=[{"role": "user", "content": "x"}], n=2)
        check(False, "n=2 raises BadRequestError")
    except openai.BadRequestError as e:
        check(e.status_code == 400, "n=2 raises BadRequestError")

    r = client.completions.create(model="stories260K", prompt=REF["prompt"], max_tokens=64, temperature=0)
    check(r.choices[0].text == GREEDY, "after the errors: greedy text still exact")


if __name__ == "__main__":
    main()
