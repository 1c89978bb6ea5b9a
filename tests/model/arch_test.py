#!/usr/bin/env python3
"""tests/model/arch_test.py — the gemma3 architecture against an independent float64 reference
written here in plain Python (no numpy needed): `sampan model synth --shape tiny-gemma3` (head
dim 32 != C/H, window 16, layers 1 and 3 global) and `tiny-gemma3-swa` (every layer local) in
F32, teacher-forced logits of 48 tokens (past the window) from `sampan score --logits` against
the reference: embedding x sqrt(C), pre and post RMSNorms, per-head q/k RMSNorm, NeoX RoPE with
base 10000 on local and 1e6 on global layers, sliding-window attention (p attends to p-W+1..p),
GeGLU with llama.cpp's half-precision GELU (emulated with struct's 'e' format), tied output.
`-b 8` makes the scheduler run 8-position chunks, so on the all-local model blocks that left
the window are dropped between chunks (scheduler/sched.c) while later chunks still attend.
Tolerance: max |ours - ref| <= 1e-4 x max |ref| over all logits."""
import atexit, math, os, random, shutil, struct, subprocess, sys, tempfile

sampan = os.environ.get("SAMPAN", "build/sampan")
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)
passed = failed = 0

def check(ok, what):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + what)
    if ok: passed += 1
    else: failed += 1

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

def reference(path, toks):
    meta, ts = read_gguf(path)
    a = meta["general.architecture"]
    C, L = meta[a + ".embedding_length"], meta[a + ".block_count"]
    H, Hkv = meta[a + ".attention.head_count"], meta[a + ".attention.head_count_kv"]
    D, eps = meta[a + ".attention.key_length"], meta[a + ".attention.layer_norm_rms_epsilon"]
    W, per = meta[a + ".attention.sliding_window"], meta[a + ".attention.sliding_window_pattern"]
    gbase = meta[a + ".rope.freq_base"]
    def mat(name):   # rows of (ne1, ne0)
        (c, r), v = ts[name]
        return [v[i * c:(i + 1) * c] for i in range(r)]
    def vec(name): return ts[name][1]
    def mv(m, x): return [sum(w * xi for w, xi in zip(row, x)) for row in m]
    def rms(x, w):
        sc = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
        return [v * sc * wi for v, wi in zip(x, w)]
    def rope(x, pos, base):   # NeoX pairs (i, i + D/2)
        out = list(x)
        for i in range(D // 2):
            th = pos * base ** (-2.0 * i / D)
            c, s_ = math.cos(th), math.sin(th)
            out[i], out[i + D // 2] = x[i] * c - x[i + D // 2] * s_, x[i] * s_ + x[i + D // 2] * c
        return out
    emb = mat("token_embd.weight")
    layers = []
    for l in range(L):
        p = f"blk.{l}."
        layers.append({k: mat(p + k + ".weight") for k in ["attn_q", "attn_k", "attn_v", "attn_output",
                                                          "ffn_gate", "ffn_up", "ffn_down"]})
        layers[-1].update({k: vec(p + k + ".weight") for k in ["attn_norm", "ffn_norm", "attn_q_norm",
                           "attn_k_norm", "post_attention_norm", "post_ffw_norm"]})
    kc = [[] for _ in range(L)]; vc = [[] for _ in range(L)]
    out = []
    for pos, t in enumerate(toks):
        x = [v * math.sqrt(C) for v in emb[t]]
        for l, Ly in enumerate(layers):
            local = per <= 0 or l % per < per - 1
            base = 10000.0 if local else gbase
            h = rms(x, Ly["attn_norm"])
            q, k, v = mv(Ly["attn_q"], h), mv(Ly["attn_k"], h), mv(Ly["attn_v"], h)
            q = sum((rope(rms(q[i * D:(i + 1) * D], Ly["attn_q_norm"]), pos, base) for i in range(H)), [])
            k = sum((rope(rms(k[i * D:(i + 1) * D], Ly["attn_k_norm"]), pos, base) for i in range(Hkv)), [])
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
            f = [gelu_f16(g_) * u_ for g_, u_ in zip(mv(Ly["ffn_gate"], h), mv(Ly["ffn_up"], h))]
            o = rms(mv(Ly["ffn_down"], f), Ly["post_ffw_norm"])
            x = [a_ + b_ for a_, b_ in zip(x, o)]
        out.append(mv(emb, rms(x, vec("output_norm.weight"))))
    return out

rnd = random.Random(5)
toks = [256] + [rnd.randrange(0, 512) for _ in range(47)]
for shape in ["tiny-gemma3", "tiny-gemma3-swa"]:
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
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
