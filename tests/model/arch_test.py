#!/usr/bin/env python3
"""tests/model/arch_test.py — the gemma3 and qwen3 architectures and RoPE scaling against an
independent float64 reference written here in plain Python (no numpy needed), from
`sampan model synth` models in F32: teacher-forced logits of 48 tokens (past the window) from
`sampan score --logits`.
  tiny-gemma3 (head dim 32 != C/H, window 16, layers 1 and 3 global), tiny-gemma3-swa (every
  layer local): embedding x sqrt(C), pre and post RMSNorms, per-head q/k RMSNorm, NeoX RoPE with
  base 10000 on local and 1e6 on global layers, sliding-window attention (p attends to
  p-W+1..p), GeGLU with llama.cpp's half-precision GELU (emulated with struct's 'e' format),
  tied output. tiny-gemma3-linear: linear RoPE scaling (factor 8) on the global layers only.
  tiny-qwen3 (head dim 32 != C/H, q/k norms before RoPE, no bias, SwiGLU, untied head),
  tiny-qwen3-linear (positions / 4), tiny-qwen3-yarn (llama.cpp's YaRN: factor 4 over 64
  original positions, ramp from beta_fast 32 to beta_slow 1, cos/sin x (1 + 0.1 ln 4), tied).
`-b 8` makes the scheduler run 8-position chunks, so on the all-local model blocks that left
the window are dropped between chunks (scheduler/sched.c) while later chunks still attend.
Tolerance: max |ours - ref| <= 1e-4 x max |ref| over all logits."""
import atexit, math, os, random, shutil, struct, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)

# ---- a minimal GGUF reader: metadata scalars and F32 tensors --------------------------------
def read_gguf(path):
    b = open(path, "rb").read()
    o = 0
    def u(fmt):
        nonlocal o
        v = struct.unpack_from("<" + fmt, b, o); o += struct.calcsize("<" + fmt); return v[0]
    def s():
        nonlocal o
        n = u("Q"); v = b[o:o + n].decode(); o += n; return v
    sizes = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def val(t):
        if t == 8: return s()
        if t == 9:
            et, n = u("I"), u("Q")
            return [val(et) for _ in range(n)]
        return u(sizes[t])
    assert b[:4] == b"GGUF"
    o = 4; u("I"); nt, nkv = u("Q"), u("Q")
    meta = {}
    for _ in range(nkv):
        k = s(); meta[k] = val(u("I"))
    infos = []
    for _ in range(nt):
        name = s(); nd = u("I"); ne = [u("Q") for _ in range(nd)]; ty = u("I"); off = u("Q")
        infos.append((name, ne, ty, off))
    al = meta.get("general.alignment", 32)
    base = (o + al - 1) // al * al
    ts = {}
    for name, ne, ty, off in infos:
        assert ty == 0, f"{name}: only F32 here"
        n = 1
        for e in ne: n *= e
        ts[name] = (ne, struct.unpack_from(f"<{n}f", b, base + off))
    return meta, ts

def f16r(x):
    return struct.unpack("e", struct.pack("e", x))[0]

def gelu_f16(x):   # ggml's GGML_GELU_FP16 path
    if x <= -10.0: return 0.0
    if x >= 10.0: return x
    h = f16r(x)
    return f16r(0.5 * h * (1.0 + math.tanh(0.7978845608028654 * h * (1.0 + 0.044715 * h * h))))

def rope_scaling(meta, a, n_rot, base):
    """(freq_scale, yarn ramp (lo, hi) or None, magnitude) of a scaled layer, as llama.cpp's
    ggml_rope_ext computes them (YaRN: beta_fast 32, beta_slow 1)"""
    kind, factor = meta.get(a + ".rope.scaling.type", "linear"), meta.get(a + ".rope.scaling.factor", 0.0)
    if kind == "none" or factor == 0.0: return 1.0, None, 1.0
    if kind == "linear": return 1.0 / factor, None, 1.0
    assert kind == "yarn", kind
    orig = meta.get(a + ".rope.scaling.original_context_length", meta[a + ".context_length"])
    def corr(beta): return n_rot * math.log(orig / (beta * 2 * math.pi)) / (2 * math.log(base))
    lo, hi = max(0.0, math.floor(corr(32.0))), min(n_rot - 1.0, math.ceil(corr(1.0)))
    return 1.0 / factor, (lo, hi), 1.0 + 0.1 * math.log(factor)

def rope(x, pos, base, n_rot, scaling):   # NeoX pairs (i, i + n_rot/2)
    fs, ramp, msc = scaling
    out, half = list(x), n_rot // 2
    for i in range(half):
        ext = pos * base ** (-2.0 * i / n_rot)
        th = fs * ext
        if ramp:
            mix = 1.0 - min(1.0, max(0.0, (i - ramp[0]) / max(0.001, ramp[1] - ramp[0])))
            th = th * (1.0 - mix) + ext * mix
        c, s_ = math.cos(th) * msc, math.sin(th) * msc
        out[i], out[i + half] = x[i] * c - x[i + half] * s_, x[i] * s_ + x[i + half] * c
    return out

def reference(path, toks):
    """float64 logits of gemma3 or qwen3: the block's variants read from the file (q/k norms and
    post norms where their tensors are, tied head without output.weight), the architecture's
    choices from its name (Gemma: sqrt(C) embedding scale, GeGLU, base 10000 and no scaling on
    local layers; Qwen3: SwiGLU, every layer global)"""
    meta, ts = read_gguf(path)
    a = meta["general.architecture"]
    gemma = a == "gemma3"
    C, L = meta[a + ".embedding_length"], meta[a + ".block_count"]
    H, Hkv = meta[a + ".attention.head_count"], meta[a + ".attention.head_count_kv"]
    D, eps = meta[a + ".attention.key_length"], meta[a + ".attention.layer_norm_rms_epsilon"]
    n_rot = meta.get(a + ".rope.dimension_count", D)
    W, per = meta.get(a + ".attention.sliding_window", 0), meta.get(a + ".attention.sliding_window_pattern", 0)
    gbase = meta[a + ".rope.freq_base"]
    def mat(name):   # rows of (ne1, ne0)
        (c, r), v = ts[name]
        return [v[i * c:(i + 1) * c] for i in range(r)]
    def vec(name): return ts[name][1]
    def mv(m, x): return [sum(w * xi for w, xi in zip(row, x)) for row in m]
    def rms(x, w):
        if w is None: return x
        sc = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
        return [v * sc * wi for v, wi in zip(x, w)]
    def act(g_): return gelu_f16(g_) if gemma else g_ / (1.0 + math.exp(-g_))
    emb = mat("token_embd.weight")
    head = mat("output.weight") if "output.weight" in ts else emb
    layers = []
    for l in range(L):
        p = f"blk.{l}."
        layers.append({k: mat(p + k + ".weight") for k in ["attn_q", "attn_k", "attn_v", "attn_output",
                                                          "ffn_gate", "ffn_up", "ffn_down"]})
        layers[-1].update({k: ts[p + k + ".weight"][1] if p + k + ".weight" in ts else None
                           for k in ["attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm",
                                     "post_attention_norm", "post_ffw_norm"]})
    kc = [[] for _ in range(L)]; vc = [[] for _ in range(L)]
    out = []
    for pos, t in enumerate(toks):
        x = [v * math.sqrt(C) for v in emb[t]] if gemma else list(emb[t])
        for l, Ly in enumerate(layers):
            local = W > 0 and (per <= 0 or l % per < per - 1)
            base = 10000.0 if local else gbase
            sc_ = (1.0, None, 1.0) if local else rope_scaling(meta, a, n_rot, base)
            h = rms(x, Ly["attn_norm"])
            q, k, v = mv(Ly["attn_q"], h), mv(Ly["attn_k"], h), mv(Ly["attn_v"], h)
            q = sum((rope(rms(q[i * D:(i + 1) * D], Ly["attn_q_norm"]), pos, base, n_rot, sc_) for i in range(H)), [])
            k = sum((rope(rms(k[i * D:(i + 1) * D], Ly["attn_k_norm"]), pos, base, n_rot, sc_) for i in range(Hkv)), [])
            kc[l].append(k); vc[l].append(v)
            lo = max(0, pos - W + 1) if local else 0
            att = []
            for hh in range(H):
                g = hh // (H // Hkv)
                qh = q[hh * D:(hh + 1) * D]
                sc = [sum(a_ * b_ for a_, b_ in zip(qh, kc[l][p][g * D:(g + 1) * D])) / math.sqrt(D)
                      for p in range(lo, pos + 1)]
                m = max(sc); e = [math.exp(z - m) for z in sc]; z = sum(e)
                att += [sum(e[j] / z * vc[l][lo + j][g * D + d] for j in range(len(e))) for d in range(D)]
            o = rms(mv(Ly["attn_output"], att), Ly["post_attention_norm"])
            x = [a_ + b_ for a_, b_ in zip(x, o)]
            h = rms(x, Ly["ffn_norm"])
            f = [act(g_) * u_ for g_, u_ in zip(mv(Ly["ffn_gate"], h), mv(Ly["ffn_up"], h))]
            o = rms(mv(Ly["ffn_down"], f), Ly["post_ffw_norm"])
            x = [a_ + b_ for a_, b_ in zip(x, o)]
        out.append(mv(head, rms(x, vec("output_norm.weight"))))
    return out

rnd = random.Random(5)
toks = [256] + [rnd.randrange(0, 512) for _ in range(47)]
for shape in ["tiny-gemma3", "tiny-gemma3-swa", "tiny-gemma3-linear", "tiny-qwen3", "tiny-qwen3-linear",
              "tiny-qwen3-yarn"]:
    m = os.path.join(tmp, shape + ".gguf")
    r = subprocess.run([sampan, "model", "synth", "-o", m, "--shape", shape, "--type", "F32", "--seed", "3"],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, f"synth {shape} ({r.stderr.strip()[-200:]})")
    if r.returncode: continue
    ref = reference(m, toks)
    for b in (["-b", "512"], ["-b", "8"]):
        lp = os.path.join(tmp, "l.f32")
        r = subprocess.run([sampan, "score", "-m", m, "--tokens", ",".join(map(str, toks)), "--logits", lp,
                            "-t", "2", "--kv-type", "f32"] + b, capture_output=True, text=True, timeout=300)
        if r.returncode:
            check(False, f"{shape} score {' '.join(b)}: {r.stderr.strip()[-300:]}"); continue
        data = open(lp, "rb").read()
        ours = struct.unpack(f"<{len(data) // 4}f", data)
        V = len(ref[0])
        mx = max(abs(v) for row in ref for v in row)
        d = max(abs(ours[i * V + j] - ref[i][j]) for i in range(len(ref)) for j in range(V))
        check(len(ours) == len(ref) * V and d <= 1e-4 * mx,
              f"{shape} {' '.join(b)}: {len(ref)} positions, max |ours-ref| {d:.3g} vs max |ref| {mx:.3g} (tol 1e-4 rel)")
finish()
