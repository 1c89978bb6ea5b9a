#!/usr/bin/env python3
"""tests/model/deepseek_arch_test.py — deepseek2's variants against a float64 reference written
here in plain Python (no numpy), in the non-absorbed form DeepSeek's papers write: per head,
k_nope = attn_k_b^T . latent and v = attn_v_b . latent for every cached position, then ordinary
attention — where Sampan multiplies the query into the latent instead.

From ../shared/models/tiny-deepseek-f32.gguf (MLA with q_lora 24, kv_lora 16 + 8 RoPE dims;
block 0 dense, blocks 1-2 MoE: 8 experts top-2, 1 shared) rewritten into variants that the
reference file does not exercise:
  yarn     rope.scaling yarn, factor 4 over 16 original positions, yarn_log_multiplier 0.1:
           YaRN angles on the RoPE dims with magnitude 1, the attention scale x mscale^2
           (mscale = 1 + 0.1 ln 4), as DeepSeek's reference implementation and llama.cpp do;
  groups   expert_group_count 4, expert_group_used_count 2: experts of the two groups with the
           best top-2 score sums only;
  softmax  expert_gating_func 1 (softmax), expert_weights_norm false, scale 1 (DeepSeek-V2);
  plain-q  q_lora_rank 0: a plain attn_q (as V2-Lite) of deterministic pseudo-random values
           replaces attn_q_a / attn_q_a_norm / attn_q_b;
and the file as it is. `sampan score --logits` over 32 tokens: the logits of 3000 vocabulary
rows at every position within 1e-4 x max |ref|, and each variant's differ from the file's. A file
of an older conversion (an unsplit attn_kv_b) is refused in one line naming it.
"""
import atexit, math, os, random, shutil, struct, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402
from gguf_py import edit, f32, meta, parse, u32, write   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
src = os.path.join(shared, "models", "tiny-deepseek-f32.gguf")
if not os.path.exists(src):
    print(f"skip: {src} not found"); sys.exit(77)
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)
A = "deepseek2."
ROWS = list(range(3000))   # vocabulary rows compared (the head is 102400 x 32)


def floats(raw):
    return struct.unpack("<%df" % (len(raw) // 4), raw)


def reference(kvs, tensors, toks):
    md = meta(kvs)
    ts = {n: (d, floats(r)) for n, d, r in tensors}
    C, L, H = md[A + "embedding_length"], md[A + "block_count"], md[A + "attention.head_count"]
    ql, R = md.get(A + "attention.q_lora_rank", 0), md[A + "attention.kv_lora_rank"]
    dk = md.get(A + "attention.key_length_mla", md[A + "attention.key_length"])
    dv = md.get(A + "attention.value_length_mla", md[A + "attention.value_length"])
    dr = md[A + "rope.dimension_count"]
    dn, eps, base = dk - dr, md[A + "attention.layer_norm_rms_epsilon"], md.get(A + "rope.freq_base", 10000.0)
    E, k = md[A + "expert_count"], md[A + "expert_used_count"]
    ng, ngu = md.get(A + "expert_group_count", 1), md.get(A + "expert_group_used_count", 1)
    gating, norm_w = md.get(A + "expert_gating_func", 1), md.get(A + "expert_weights_norm", False)
    wscale, n_dense = md.get(A + "expert_weights_scale", 1.0), md.get(A + "leading_dense_block_count", 0)
    fs, ramp, kq = 1.0, None, 1.0 / math.sqrt(dk)
    if md.get(A + "rope.scaling.type") == "yarn":
        factor, orig = md[A + "rope.scaling.factor"], md[A + "rope.scaling.original_context_length"]
        def corr(beta): return dr * math.log(orig / (beta * 2 * math.pi)) / (2 * math.log(base))
        fs, ramp = 1.0 / factor, (max(0.0, math.floor(corr(32.0))), min(dr - 1.0, math.ceil(corr(1.0))))
        ms = 1.0 + md.get(A + "rope.scaling.yarn_log_multiplier", 0.0) * math.log(factor)
        kq *= ms * ms

    def mat(name):
        (ne, v) = ts[name]
        return [v[r * ne[0]:(r + 1) * ne[0]] for r in range(ne[1])]

    def stack(name):   # 3-D [cols, rows, n]: n matrices of (rows, cols)
        (ne, v) = ts[name]
        return [[v[(i * ne[1] + r) * ne[0]:(i * ne[1] + r + 1) * ne[0]] for r in range(ne[1])] for i in range(ne[2])]

    def mv(m, x): return [sum(w * xi for w, xi in zip(row, x)) for row in m]
    def rms(x, w):
        s = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
        return [v * s * wi for v, wi in zip(x, w)]
    def silu(v): return v / (1.0 + math.exp(-v))
    def ffn(g, u, d, x): return mv(d, [silu(a) * b for a, b in zip(mv(g, x), mv(u, x))])
    def rope(x, pos):   # normal pairs (2i, 2i+1), magnitude 1
        out = list(x)
        for i in range(dr // 2):
            ext = pos * base ** (-2.0 * i / dr)
            th = fs * ext
            if ramp:
                mix = 1.0 - min(1.0, max(0.0, (i - ramp[0]) / max(0.001, ramp[1] - ramp[0])))
                th = th * (1.0 - mix) + ext * mix
            c, s_ = math.cos(th), math.sin(th)
            out[2 * i], out[2 * i + 1] = x[2 * i] * c - x[2 * i + 1] * s_, x[2 * i] * s_ + x[2 * i + 1] * c
        return out

    W = {}
    for l in range(L):
        p = f"blk.{l}."
        w = {"an": ts[p + "attn_norm.weight"][1], "fn": ts[p + "ffn_norm.weight"][1],
             "kva": mat(p + "attn_kv_a_mqa.weight"), "kvn": ts[p + "attn_kv_a_norm.weight"][1],
             "kb": stack(p + "attn_k_b.weight"), "vb": stack(p + "attn_v_b.weight"), "o": mat(p + "attn_output.weight")}
        if ql:
            w.update(qa=mat(p + "attn_q_a.weight"), qan=ts[p + "attn_q_a_norm.weight"][1], qb=mat(p + "attn_q_b.weight"))
        else:
            w["q"] = mat(p + "attn_q.weight")
        if l < n_dense:
            w["ffn"] = (mat(p + "ffn_gate.weight"), mat(p + "ffn_up.weight"), mat(p + "ffn_down.weight"))
        else:
            w["router"] = mat(p + "ffn_gate_inp.weight")
            w["bias"] = ts[p + "exp_probs_b.bias"][1] if p + "exp_probs_b.bias" in ts else [0.0] * E
            w["exps"] = (stack(p + "ffn_gate_exps.weight"), stack(p + "ffn_up_exps.weight"), stack(p + "ffn_down_exps.weight"))
            w["sh"] = (mat(p + "ffn_gate_shexp.weight"), mat(p + "ffn_up_shexp.weight"), mat(p + "ffn_down_shexp.weight"))
        W[l] = w
    emb, out_w, on = mat("token_embd.weight"), mat("output.weight"), ts["output_norm.weight"][1]
    cache = {l: [] for l in range(L)}   # per layer: (k_nope per head, k_pe, v per head)
    logits = []
    for pos, t in enumerate(toks):
        x = list(emb[t])
        for l in range(L):
            w = W[l]
            h = rms(x, w["an"])
            q = mv(w["qb"], rms(mv(w["qa"], h), w["qan"])) if ql else mv(w["q"], h)
            kva = mv(w["kva"], h)
            lat, kpe = rms(kva[:R], w["kvn"]), rope(kva[R:], pos)
            # decompressed keys and values of this position, per head
            kn = [[sum(w["kb"][hh][r][i] * lat[r] for r in range(R)) for i in range(dn)] for hh in range(H)]
            vv = [mv(w["vb"][hh], lat) for hh in range(H)]
            cache[l].append((kn, kpe, vv))
            att = []
            for hh in range(H):
                qn, qp = q[hh * dk:hh * dk + dn], rope(q[hh * dk + dn:(hh + 1) * dk], pos)
                sc = [kq * (sum(a * b for a, b in zip(qn, c[0][hh])) + sum(a * b for a, b in zip(qp, c[1])))
                      for c in cache[l]]
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                z = sum(e)
                att += [sum(e[j] / z * cache[l][j][2][hh][d] for j in range(len(e))) for d in range(dv)]
            x = [a + b for a, b in zip(x, mv(w["o"], att))]
            h = rms(x, w["fn"])
            if "ffn" in w:
                y = ffn(*w["ffn"], h)
            else:
                lg = mv(w["router"], h)
                if gating == 2:
                    pr = [1.0 / (1.0 + math.exp(-v)) for v in lg]
                else:
                    m = max(lg)
                    e = [math.exp(v - m) for v in lg]
                    pr = [v / sum(e) for v in e]
                sel = [a + b for a, b in zip(pr, w["bias"])]
                if ng > 1:
                    per = E // ng
                    gs = [sum(sorted(sel[g * per:(g + 1) * per], reverse=True)[:2]) for g in range(ng)]
                    keep = sorted(range(ng), key=lambda g: (-gs[g], g))[:ngu]
                    sel = [s if e_ // per in keep else -math.inf for e_, s in enumerate(sel)]
                chosen = sorted(range(E), key=lambda e_: (-sel[e_], e_))[:k]
                wts = [pr[e_] for e_ in chosen]
                if norm_w:
                    tot = max(sum(wts), 6.103515625e-5)
                    wts = [v / tot for v in wts]
                y = [0.0] * C
                for e_, wt in zip(chosen, wts):
                    ye = ffn(w["exps"][0][e_], w["exps"][1][e_], w["exps"][2][e_], h)
                    y = [a + wt * wscale * b for a, b in zip(y, ye)]
                y = [a + b for a, b in zip(y, ffn(*w["sh"], h))]
            x = [a + b for a, b in zip(x, y)]
        f = rms(x, on)
        logits.append([sum(a * b for a, b in zip(out_w[r], f)) for r in ROWS])
    return logits


kvs, tensors = parse(src)
rng = random.Random(5)
toks = [100000] + [rng.randrange(100, 100000) for _ in range(31)]
md = meta(kvs)
C, H, dk = md[A + "embedding_length"], md[A + "attention.head_count"], md[A + "attention.key_length"]
plain_q = [("blk.%d.attn_q.weight" % l, [C, H * dk], struct.pack("<%df" % (C * H * dk), *[rng.uniform(-0.5, 0.5) for _ in range(C * H * dk)]))
           for l in range(md[A + "block_count"])]
variants = {
    "as-is": (kvs, tensors),
    "yarn": (edit(kvs, {A + "rope.scaling.type": (8, struct.pack("<Q", 4) + b"yarn"),
                        A + "rope.scaling.factor": f32(4.0), A + "rope.scaling.original_context_length": u32(16),
                        A + "rope.scaling.yarn_log_multiplier": f32(0.1)}), tensors),
    "groups": (edit(kvs, {A + "expert_group_count": u32(4), A + "expert_group_used_count": u32(2)}), tensors),
    "softmax": (edit(kvs, {A + "expert_gating_func": u32(1), A + "expert_weights_norm": (7, b"\x00"),
                           A + "expert_weights_scale": f32(1.0)}), tensors),
    "plain-q": (edit(kvs, {A + "attention.q_lora_rank": u32(0)}),
                [t for t in tensors if not any(s in t[0] for s in ("attn_q_a", "attn_q_b"))] + plain_q),
}
first = None
for name, (kv, ts) in variants.items():
    path = os.path.join(tmp, f"tiny-deepseek-{name}.gguf")
    write(path, kv, ts)
    out = os.path.join(tmp, f"{name}.f32")
    r = subprocess.run([sampan, "score", "-m", path, "--tokens", ",".join(map(str, toks)), "--logits", out, "-t", "2"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        check(False, f"{name}: sampan score: {r.stderr.strip()[-300:]}"); continue
    got = floats(open(out, "rb").read())
    V = len(got) // len(toks)
    ref = reference(kv, ts, toks)
    scale = max(abs(v) for row in ref for v in row)
    worst = max(abs(got[p * V + c] - ref[p][i]) for p in range(len(toks)) for i, c in enumerate(ROWS))
    check(worst <= 1e-4 * scale, f"{name}: max |ours - ref| = {worst:.3g} = {worst / scale:.2g} x max |ref| (tol 1e-4)")
    if first is None:
        first = got
    else:   # the variant takes effect: its logits are not the file's
        check(got != first, f"{name}: logits differ from the unmodified file's")
# an older conversion's unsplit attn_kv_b: refused in one line that names it
old = [(n.replace("attn_k_b", "attn_kv_b"), d, r) for n, d, r in tensors if "attn_v_b" not in n]
path = os.path.join(tmp, "tiny-deepseek-kv-b.gguf")
write(path, kvs, old)
r = subprocess.run([sampan, "run", "-m", path, "-p", "hi", "-n", "1"], capture_output=True, text=True, timeout=120)
lines = [l for l in r.stderr.splitlines() if l.strip()]
check(r.returncode not in (0,) and r.returncode < 126 and len(lines) == 1 and "attn_kv_b" in lines[0]
      and "convert" in lines[0], f"unsplit attn_kv_b refused: exit {r.returncode}, {lines[:2]}")
finish()
