#!/usr/bin/env python3
"""tests/http/openai_test.py — the official `openai` Python package, unchanged, against
`sampan serve`: /v1/models, /v1/completions and /v1/chat/completions, streamed and not, usage,
and the package's error classes for 401 / 404 / 400. Greedy completions must return
../shared/reference/stories260K's text. The OpenAI parameters: n (sampled choices differ, greedy
ones agree), logprobs on both endpoints and echo's prompt logprobs (against log-softmax of
`sampan score --logits`), logit_bias (+100 forces, -100 bans), presence / frequency penalties
(against OpenAI's formula on the teacher-forced logits), and 400 for tools. Runs under the venv
made by tests/http/venv.sh ($SAMPAN_VENV, else the build directory's venv, else build/venv);
skips (77) when there is none."""
import math, os, sys

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
from serverlib import SAMPAN, STORIES, Server, check, finish, need, need_serve, reference   # noqa: E402

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
        client.chat.completions.create(model="stories260K", messages=[{"role": "user", "content": "x"}],
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        check(False, "tools raises BadRequestError")
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        check(e.status_code == 400 and body.get("param") == "tools" and body.get("code") == "unsupported_parameter",
              f"tools raises BadRequestError 400 param tools, code unsupported_parameter ({e.body})")
    try:
        client.completions.create(model="stories260K", prompt="x", max_tokens=4, extra_body={"frobnicate": 1})
        check(False, "an unknown parameter raises BadRequestError")
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        check(e.status_code == 400 and body.get("param") == "frobnicate" and body.get("code") == "unknown_parameter",
              f"an unknown parameter raises BadRequestError naming it ({e.body})")
    r = client.chat.completions.create(model="stories260K", messages=[{"role": "user", "content": "Once upon a time"}],
                                       max_tokens=8, temperature=0, user="u-1", metadata={"k": "v"}, store=False)
    check(r.choices[0].finish_reason in ("length", "stop"), "user, metadata, store are accepted (ignored)")

    r = client.completions.create(model="stories260K", prompt=REF["prompt"], max_tokens=64, temperature=0)
    check(r.choices[0].text == GREEDY, "after the errors: greedy text still exact")

    for fn in (params_n, params_logprobs, params_echo, params_logit_bias, params_penalties):
        try:
            fn(client)
        except Exception as e:   # noqa: BLE001 - one failure per group
            import traceback
            traceback.print_exc()
            check(False, f"{fn.__name__} raised {e!r}")
    r = client.completions.create(model="stories260K", prompt=REF["prompt"], max_tokens=64, temperature=0)
    check(r.choices[0].text == GREEDY, "after the parameter tests: greedy text still exact")


# ---- OpenAI parameters: n, logprobs, echo, logit_bias, penalties --------------------------
# References: `sampan score --logits` (teacher-forced logits of every position, an independent
# forward pass) and the vocabulary as the server spells it (an echo of every token id).
M = "stories260K"
PIDS = REF["prompt_tokens"]
_VOCAB = []


def score_rows(ids):
    """the full logits (V floats) at every position of ids, from `sampan score --logits`"""
    import array, json, subprocess, tempfile
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        r = subprocess.run([SAMPAN, "score", "-m", STORIES, "--tokens", ",".join(map(str, ids)), "--logits",
                            f.name, "-t", "1", "--kv-type", "f16"], capture_output=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError("sampan score failed: " + r.stderr.decode(errors="replace")[-300:])
        V = json.loads(r.stdout)["n_vocab"]
        L = array.array("f")
        L.frombytes(open(f.name, "rb").read())
    return [L[i * V:(i + 1) * V] for i in range(len(ids))]


def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def argmax(row):
    return max(range(len(row)), key=lambda v: (row[v], -v))


def vocab(client):
    """the token string of every id, as the server's logprobs spell it (echo, max_tokens 0)"""
    if not _VOCAB:
        V = REF["n_vocab"]
        for a in range(0, V, 100):
            r = client.completions.create(model=M, prompt=list(range(a, min(V, a + 100))), max_tokens=0,
                                          echo=True, logprobs=0)
            _VOCAB.extend(r.choices[0].logprobs.tokens)
    return _VOCAB


def ids_of(client, tokens):
    """token strings -> ids (a string two ids share maps to the higher id: the merged piece, not
    the byte token)"""
    rev = {s: i for i, s in enumerate(vocab(client))}
    return [rev[t] for t in tokens]


def params_n(client):
    kw = dict(model=M, prompt=REF["prompt"], max_tokens=32, temperature=0.8, seed=7, logprobs=0)
    r = client.completions.create(n=2, **kw)
    texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
    check(sorted(c.index for c in r.choices) == [0, 1] and texts[0] != texts[1],
          f"n=2, temperature 0.8, seed 7: two different choices ({texts!r})")
    n_tok = sum(len(c.logprobs.tokens) for c in r.choices)
    check(r.usage.completion_tokens == n_tok and r.usage.prompt_tokens == len(PIDS),
          f"n=2: usage sums the choices' tokens ({r.usage}, {n_tok} tokens)")
    r1 = client.completions.create(n=1, **kw)
    check(r1.choices[0].text == texts[0], "n=2: choice 0 samples with the request's seed (equals n=1)")
    r2 = client.completions.create(n=2, **kw)
    check([c.text for c in sorted(r2.choices, key=lambda c: c.index)] == texts, "n=2: the same seed, the same choices")
    chunks = list(client.completions.create(n=2, stream=True, stream_options={"include_usage": True}, **kw))
    got, fins = {0: "", 1: ""}, {0: [], 1: []}
    for c in chunks:
        for ch in c.choices:
            got[ch.index] += ch.text
            if ch.finish_reason:
                fins[ch.index].append(ch.finish_reason)
    usage = [c.usage for c in chunks if c.usage]
    check([got[0], got[1]] == texts and all(len(f) == 1 for f in fins.values()),
          f"n=2 stream: each index adds up to its choice, one finish_reason each ({fins})")
    check(len(usage) == 1 and usage[0].completion_tokens == n_tok, "n=2 stream: one usage chunk, summed")
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=64, temperature=0, n=2)
    check([c.text for c in r.choices] == [GREEDY, GREEDY], "n=2, temperature 0: both choices are the greedy text")
    msgs = [{"role": "user", "content": "Once upon a time"}]
    r = client.chat.completions.create(model=M, messages=msgs, max_tokens=24, temperature=0, n=3)
    one = client.chat.completions.create(model=M, messages=msgs, max_tokens=24, temperature=0)
    check(len(r.choices) == 3 and all(c.message.content == one.choices[0].message.content for c in r.choices)
          and r.usage.completion_tokens == 3 * one.usage.completion_tokens,
          "chat n=3, temperature 0: three identical choices, usage x3")
    chunks = list(client.chat.completions.create(model=M, messages=msgs, max_tokens=24, temperature=0.9, seed=3,
                                                 n=2, stream=True))
    roles = [ch.index for c in chunks for ch in c.choices if ch.delta.role == "assistant"]
    check(sorted(roles) == [0, 1], f"chat n=2 stream: each choice opens with the assistant role ({roles})")


def check_logprobs(what, ids, n_prompt, gen, lps, tops=None):
    """gen[i] (ids) was generated after ids[:n_prompt + i]; lps[i] its logprob; tops[i] a list
    of the reported top logprob values"""
    rows = score_rows(ids + gen[:-1])
    worst, top_worst = 0.0, 0.0
    for i, t in enumerate(gen):
        ls = log_softmax(rows[n_prompt - 1 + i])
        worst = max(worst, abs(ls[t] - lps[i]))
        if tops is not None:
            want = sorted(ls, reverse=True)[:len(tops[i])]
            top_worst = max([top_worst] + [abs(a - b) for a, b in zip(sorted(tops[i], reverse=True), want)])
    check(len(gen) > 0 and worst <= 1e-4 and top_worst <= 1e-4,
          f"{what}: {len(gen)} logprobs equal log-softmax of `sampan score` logits (worst {worst:.2e}, "
          f"top {top_worst:.2e}; tol 1e-4)")


def params_logprobs(client):
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=16, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    gen = REF["greedy"][:16]
    check(lp.tokens == [vocab(client)[t] for t in gen] and "".join(lp.tokens) == r.choices[0].text,
          "completions logprobs: tokens are the greedy tokens' strings and add up to the text")
    check(all(len(d) == 3 for d in lp.top_logprobs) and lp.text_offset == sorted(lp.text_offset)
          and lp.text_offset[0] == 0 and lp.text_offset[-1] == len(r.choices[0].text) - len(lp.tokens[-1]),
          f"completions logprobs: 3 top entries per token, text_offset ({lp.text_offset[:4]}...)")
    check_logprobs("completions logprobs (greedy)", PIDS, len(PIDS), gen, lp.token_logprobs,
                   [list(d.values()) for d in lp.top_logprobs])
    r3 = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=16, temperature=0, logprobs=3, n=3)
    check(all(c.logprobs.token_logprobs == lp.token_logprobs and c.logprobs.top_logprobs == lp.top_logprobs
              for c in r3.choices), "logprobs are bit-identical alone and as 3 choices sharing each step")
    # sampled tokens: their ids from the server's spelling
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=16, temperature=1.0, seed=11, logprobs=2)
    lp = r.choices[0].logprobs
    check_logprobs("completions logprobs (temperature 1)", PIDS, len(PIDS), ids_of(client, lp.tokens), lp.token_logprobs)
    # streamed: the chunks' entries add up to the non-streamed ones
    st = list(client.completions.create(model=M, prompt=REF["prompt"], max_tokens=16, temperature=1.0, seed=11,
                                        logprobs=2, stream=True))
    toks, vals, offs = [], [], []
    for c in st:
        for ch in c.choices:
            if ch.logprobs:
                toks += ch.logprobs.tokens
                vals += ch.logprobs.token_logprobs
                offs += ch.logprobs.text_offset
    check(toks == lp.tokens and vals == lp.token_logprobs and offs == lp.text_offset,
          "completions stream with logprobs: the chunks carry the same entries")
    # chat: logprobs true + top_logprobs 2; the prompt is the plain template's rendering
    msgs = [{"role": "user", "content": "Once upon a time"}]
    r = client.chat.completions.create(model=M, messages=msgs, max_tokens=12, temperature=0.7, seed=5,
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    ok = (len(content) == r.usage.completion_tokens and all(len(c.top_logprobs) == 2 for c in content)
          and all(bytes(c.bytes).decode("utf-8", "replace") == c.token for c in content))
    check(ok, "chat logprobs: one entry per completion token, 2 top entries, bytes spell the token")
    e = client.completions.create(model=M, prompt=PLAIN, max_tokens=0, echo=True, logprobs=0)
    chat_ids = ids_of(client, e.choices[0].logprobs.tokens)
    check(len(chat_ids) == r.usage.prompt_tokens, "chat: the echoed rendering has the chat's prompt tokens")
    check_logprobs("chat logprobs (temperature 0.7)", chat_ids, len(chat_ids), ids_of(client, [c.token for c in content]),
                   [c.logprob for c in content], [[t.logprob for t in c.top_logprobs] for c in content])
    try:
        client.chat.completions.create(model=M, messages=msgs, max_tokens=4, top_logprobs=2)
        check(False, "top_logprobs without logprobs raises BadRequestError")
    except openai.BadRequestError as ex:
        check(ex.status_code == 400, "top_logprobs without logprobs raises BadRequestError")


def params_echo(client):
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=64, temperature=0, echo=True)
    check(r.choices[0].text == REF["prompt"] + GREEDY, "echo: the prompt, then the completion")
    r = client.completions.create(model=M, prompt=PIDS, max_tokens=8, temperature=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    n = len(PIDS)
    check(len(lp.tokens) == n + 8 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None,
          "echo with logprobs: prompt tokens first, the first without a logprob")
    check(r.choices[0].text.endswith("".join(lp.tokens[n:])) and lp.text_offset == sorted(lp.text_offset),
          "echo with logprobs: text and text_offset")
    rows = score_rows(PIDS)
    worst = max(abs(log_softmax(rows[i - 1])[PIDS[i]] - lp.token_logprobs[i]) for i in range(1, n))
    check(worst <= 1e-4, f"echo: the prompt's logprobs equal log-softmax of `sampan score` ({worst:.2e})")
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=0, echo=True, logprobs=0)
    check(r.choices[0].text == REF["prompt"] and r.usage.completion_tokens == 0 and len(r.choices[0].logprobs.tokens) == n,
          "echo with max_tokens 0: the prompt scored, nothing generated")


def params_logit_bias(client):
    V = vocab(client)
    g0 = REF["greedy"][0]
    forced = 300 if g0 != 300 else 301
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=4, temperature=0, logprobs=0,
                                  logit_bias={str(forced): 100})
    check(r.choices[0].logprobs.tokens == [V[forced]] * 4 and r.choices[0].text == V[forced] * 4,
          f"logit_bias +100 forces token {forced} ({r.choices[0].logprobs.tokens})")
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=4, temperature=1.0, seed=1, logprobs=0,
                                  logit_bias={str(forced): 100})
    check(r.choices[0].logprobs.tokens == [V[forced]] * 4, "logit_bias +100 forces the token when sampling too")
    r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=1, temperature=0, logprobs=0,
                                  logit_bias={str(g0): -100})
    row = log_softmax(score_rows(PIDS)[-1])
    second = argmax([x if i != g0 else -1e30 for i, x in enumerate(row)])
    check(r.choices[0].logprobs.tokens == [V[second]] and V[second] != V[g0],
          f"logit_bias -100 bans the greedy token {g0}: the second best {second} comes instead")
    r = client.chat.completions.create(model=M, messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                       temperature=0, logit_bias={str(forced): 100}, logprobs=True)
    check([c.token for c in r.choices[0].logprobs.content] == [V[forced]] * 3, "chat logit_bias +100 forces the token")


def params_penalties(client):
    """OpenAI's formula, applied here to the teacher-forced logits of the server's own output:
    logit[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty, c[j] the times j was
    generated before; greedy must pick the argmax of that at every step"""
    for pp, fp in ((1.5, 0.0), (0.0, 1.0), (0.6, 0.4), (-1.0, 0.0)):
        r = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=40, temperature=0, logprobs=0,
                                      presence_penalty=pp, frequency_penalty=fp)
        c = r.choices[0]
        gen = ids_of(client, c.logprobs.tokens)
        rows = score_rows(PIDS + gen[:-1])
        bad, worst = [], 0.0
        for i, t in enumerate(gen):
            row = list(rows[len(PIDS) - 1 + i])
            for j in set(gen[:i]):
                k = gen[:i].count(j)
                row[j] -= k * fp + pp
            if argmax(row) != t:
                bad.append(i)
            worst = max(worst, abs(log_softmax(row)[t] - c.logprobs.token_logprobs[i]))
        plain = client.completions.create(model=M, prompt=REF["prompt"], max_tokens=40, temperature=0).choices[0].text
        check(c.text != plain or pp < 0, f"presence {pp}, frequency {fp}: the output changes")
        check(not bad and worst <= 1e-4,
              f"presence {pp}, frequency {fp}: each token is the argmax of the penalized logits (wrong at {bad}), "
              f"logprobs after the penalties (worst {worst:.2e})")


if __name__ == "__main__":
    main()
