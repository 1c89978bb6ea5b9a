#!/usr/bin/env python3
"""tests/model/deepseek2_test.py — deepseek2 GGUF files that sampan writes, checked as files (the
loader does not run the architecture yet):

  synth     `sampan model synth --arch deepseek2 --shape tiny` (and v3-mini cut to one block):
            deterministic bytes, `sampan info` parses it, every metadata value and tensor shape is
            the shape table's (written out here from DeepSeek's configurations, not from synth.c),
            router / exp_probs_b / norms F32 at any --type.
  quantize  ../shared/models/tiny-deepseek-f32.gguf to Q8_0 and Q4_K_M: each tensor's type is the
            one llama.cpp's quantizer rules give (re-derived here), shapes, names and metadata are
            unchanged, and the values, dequantized here in plain Python from the file's bytes, are
            within each type's documented error of the F32 originals (relative RMS per tensor:
            kernels/cpu/quant.c's bounds as tests/quant checks them; Q8_0 also per element).
            Skips (77) naming the path when ../shared is absent.
"""
import atexit, hashlib, math, os, shutil, struct, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
shared = os.environ.get("SAMPAN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
tmp = tempfile.mkdtemp(prefix="sampan-test-")
atexit.register(shutil.rmtree, tmp, True)

# ggml type ids and (block size, bytes per block)
F32, F16, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K = 0, 1, 6, 7, 8, 12, 13, 14
BLOCK = {F32: (1, 4), F16: (1, 2), Q5_0: (32, 22), Q5_1: (32, 24), Q8_0: (32, 34), Q4_K: (256, 144),
         Q5_K: (256, 176), Q6_K: (256, 210)}
NAME = {F32: "F32", F16: "F16", Q5_0: "Q5_0", Q5_1: "Q5_1", Q8_0: "Q8_0", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K"}


def run(args):
    r = subprocess.run([sampan] + args, capture_output=True, timeout=300)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


# ---- a GGUF reader: metadata, tensor infos, raw tensor bytes (header read only as needed) ----
class Gguf:
    def __init__(self, path):
        self.f = open(path, "rb")
        self.buf, self.o = b"", 0
        assert self.take(4) == b"GGUF"
        self.u("I")
        nt, nkv = self.u("Q"), self.u("Q")
        self.meta, self.vtype = {}, {}
        for _ in range(nkv):
            k = self.s(); t = self.u("I")
            self.vtype[k] = t; self.meta[k] = self.val(t)
        self.tensors = []   # (name, ne, type, offset)
        for _ in range(nt):
            name = self.s(); nd = self.u("I"); ne = [self.u("Q") for _ in range(nd)]
            self.tensors.append((name, ne, self.u("I"), self.u("Q")))
        al = self.meta.get("general.alignment", 32)
        self.base = (self.o + al - 1) // al * al
        self.by_name = {t[0]: t for t in self.tensors}

    def take(self, n):
        while len(self.buf) < self.o + n:
            more = self.f.read(1 << 20)
            if not more: raise EOFError("truncated header")
            self.buf += more
        v = self.buf[self.o:self.o + n]; self.o += n
        return v

    def u(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def s(self):
        return self.take(self.u("Q")).decode()

    def val(self, t):
        if t == 8: return self.s()
        if t == 9:
            et, n = self.u("I"), self.u("Q")
            return [self.val(et) for _ in range(n)]
        return self.u({0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}[t])

    def row(self, name, r):
        """the raw bytes of row r (ne[0] values) of tensor `name`"""
        _, ne, ty, off = self.by_name[name]
        bs, bb = BLOCK[ty]
        rs = ne[0] // bs * bb
        self.f.seek(self.base + off + r * rs)
        return self.f.read(rs)


def f16(b, o):
    return struct.unpack_from("<e", b, o)[0]


def dequant(ty, b, n):
    """n values of type ty from bytes b (GGUF block layouts, kernels/qtypes.h)"""
    if ty == F32: return list(struct.unpack_from(f"<{n}f", b))
    if ty == F16: return list(struct.unpack_from(f"<{n}e", b))
    out = []
    for blk in range(n // 32):
        o = blk * BLOCK[ty][1]
        if ty == Q8_0:
            d = f16(b, o)
            out += [d * q for q in struct.unpack_from("<32b", b, o + 2)]
        elif ty in (Q5_0, Q5_1):
            d = f16(b, o); m = f16(b, o + 2) if ty == Q5_1 else 0.0
            o += 4 if ty == Q5_1 else 2
            qh = struct.unpack_from("<I", b, o)[0]; qs = b[o + 4:o + 20]
            lo = [(qs[j] & 15) | ((qh >> j) & 1) << 4 for j in range(16)]
            hi = [(qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4 for j in range(16)]
            out += [d * q + m for q in lo + hi] if ty == Q5_1 else [d * (q - 16) for q in lo + hi]
        else:
            raise ValueError(f"no dequantizer here for type {ty}")
    return out


# ---- synth ------------------------------------------------------------------------------
# the tiny shape (that of ../shared/models/tiny-deepseek-f32.gguf, synthetic vocabulary of 512)
C, L, H, QL, KVL, NOPE, ROPE, V, F, E, FE, K, S = 32, 3, 4, 24, 16, 16, 8, 16, 64, 8, 16, 2, 1


def ds2_tensors(C, L, H, QL, KVL, NOPE, ROPE, V, dense, F, E, FE, S, vocab, probs_b):
    t = [("token_embd.weight", [C, vocab])]
    for l in range(L):
        b = f"blk.{l}."
        t += [(b + "attn_norm.weight", [C])]
        t += ([(b + "attn_q_a.weight", [C, QL]), (b + "attn_q_a_norm.weight", [QL]),
               (b + "attn_q_b.weight", [QL, H * (NOPE + ROPE)])] if QL else
              [(b + "attn_q.weight", [C, H * (NOPE + ROPE)])])
        t += [(b + "attn_kv_a_mqa.weight", [C, KVL + ROPE]), (b + "attn_kv_a_norm.weight", [KVL]),
              (b + "attn_k_b.weight", [NOPE, KVL, H]), (b + "attn_v_b.weight", [KVL, V, H]),
              (b + "attn_output.weight", [H * V, C]), (b + "ffn_norm.weight", [C])]
        if l < dense:
            t += [(b + "ffn_gate.weight", [C, F]), (b + "ffn_up.weight", [C, F]), (b + "ffn_down.weight", [F, C])]
        else:
            t += [(b + "ffn_gate_inp.weight", [C, E])] + ([(b + "exp_probs_b.bias", [E])] if probs_b else [])
            t += [(b + "ffn_gate_exps.weight", [C, FE, E]), (b + "ffn_up_exps.weight", [C, FE, E]),
                  (b + "ffn_down_exps.weight", [FE, C, E]), (b + "ffn_gate_shexp.weight", [C, FE * S]),
                  (b + "ffn_up_shexp.weight", [C, FE * S]), (b + "ffn_down_shexp.weight", [FE * S, C])]
    return t + [("output_norm.weight", [C]), ("output.weight", [C, vocab])]


def stays_f32(name):
    return name.endswith("_norm.weight") or "ffn_gate_inp" in name or name.endswith(".bias")


def test_synth():
    paths = [os.path.join(tmp, f"ds2-tiny-{i}.gguf") for i in range(3)]
    for p, seed in zip(paths, (1, 1, 2)):
        rc, _, err = run(["model", "synth", "-o", p, "--arch", "deepseek2", "--shape", "tiny", "--seed", str(seed)])
        check(rc == 0, f"synth deepseek2 tiny seed {seed}: exit {rc} {err.strip()[-200:]!r}")
    sha = [hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.exists(p) else None for p in paths]
    check(sha[0] and sha[0] == sha[1] and sha[0] != sha[2], "synth deepseek2: same seed same bytes, other seed other bytes")
    rc, info, _ = run(["info", paths[0]])
    check(rc == 0 and "architecture: deepseek2" in info and "tensors: 52" in info and "512 tokens" in info,
          f"sampan info parses the synth tiny file ({info.splitlines()[:4]})")
    g = Gguf(paths[0])
    want = {"general.architecture": "deepseek2", "deepseek2.context_length": 512, "deepseek2.embedding_length": C,
            "deepseek2.block_count": L, "deepseek2.feed_forward_length": F, "deepseek2.attention.head_count": H,
            "deepseek2.attention.head_count_kv": 1, "deepseek2.leading_dense_block_count": 1,
            "deepseek2.vocab_size": 512, "deepseek2.attention.q_lora_rank": QL,
            "deepseek2.attention.kv_lora_rank": KVL, "deepseek2.attention.key_length": KVL + ROPE,
            "deepseek2.attention.value_length": KVL, "deepseek2.attention.key_length_mla": NOPE + ROPE,
            "deepseek2.attention.value_length_mla": V, "deepseek2.expert_feed_forward_length": FE,
            "deepseek2.expert_count": E, "deepseek2.expert_used_count": K, "deepseek2.expert_shared_count": S,
            "deepseek2.expert_weights_scale": 2.5, "deepseek2.expert_weights_norm": True,
            "deepseek2.expert_gating_func": 2, "deepseek2.rope.dimension_count": ROPE}
    bad = {k: (g.meta.get(k), v) for k, v in want.items() if g.meta.get(k) != v}
    check(not bad, f"synth tiny metadata is the shape table's (wrong: {bad})")
    check(len(g.meta["tokenizer.ggml.tokens"]) == 512 and g.meta["tokenizer.ggml.model"] == "gpt2",
          "synth tiny: the synthetic 512-token byte-level vocabulary")
    check("deepseek2.expert_group_count" not in g.meta and "deepseek2.rope.scaling.type" not in g.meta,
          "synth tiny: no expert groups, no rope scaling")
    expect = ds2_tensors(C, L, H, QL, KVL, NOPE, ROPE, V, 1, F, E, FE, S, 512, True)
    got = [(n, ne) for n, ne, _, _ in g.tensors]
    check(got == expect, f"synth tiny: tensor names, order and shapes as the shared tiny file's "
          f"({[x for x in got if x not in expect][:3]} / {[x for x in expect if x not in got][:3]})")
    check(all(t == F32 for _, _, t, _ in g.tensors), "synth tiny --type F32: every tensor F32")
    ref = Gguf(os.path.join(shared, "models", "tiny-deepseek-f32.gguf")) if os.path.exists(
        os.path.join(shared, "models", "tiny-deepseek-f32.gguf")) else None
    if ref:
        theirs = [(n, ne if n not in ("token_embd.weight", "output.weight") else [ne[0], 512]) for n, ne, _, _ in ref.tensors]
        check(theirs == got, "synth tiny: the same tensors as ../shared/models/tiny-deepseek-f32.gguf (vocabulary aside)")
        same = [k for k in want if k != "deepseek2.vocab_size" and k in ref.meta and ref.meta[k] != g.meta.get(k)]
        check(not same and ref.meta["deepseek2.context_length"] == 512, f"synth tiny: metadata as the shared file's (differs: {same})")
    # the values are sane: matrices uniform with std 1/sqrt(fan-in), norms near 1
    w = dequant(F32, g.row("blk.1.ffn_down_exps.weight", 0) + g.row("blk.1.ffn_down_exps.weight", 1), 32)
    sd = math.sqrt(sum(x * x for x in w) / len(w))
    check(0.5 / math.sqrt(FE) < sd < 2 / math.sqrt(FE), f"synth tiny: expert weights' std {sd:.3f} ~ 1/sqrt({FE})")
    g.f.close()

    # --type Q8_0: the router, exp_probs_b and norms stay F32; rows of 32 and 64 are Q8_0, rows of
    # 16 and 24 fit no block and are F16 (llama.cpp's last resort); --layers 2: one dense, one MoE block
    p = os.path.join(tmp, "ds2-tiny-q8.gguf")
    rc, _, err = run(["model", "synth", "-o", p, "--arch", "deepseek2", "--shape", "tiny", "--type", "Q8_0", "--layers", "2"])
    g = Gguf(p)
    wrong = [(n, t) for n, ne, t, _ in g.tensors
             if t != (F32 if stays_f32(n) or len(ne) == 1 else F16 if ne[0] % 32 else Q8_0)]
    check(rc == 0 and g.meta["deepseek2.block_count"] == 2 and not wrong and
          [(n, ne) for n, ne, _, _ in g.tensors] == ds2_tensors(C, 2, H, QL, KVL, NOPE, ROPE, V, 1, F, E, FE, S, 512, True),
          f"synth tiny --type Q8_0 --layers 2: types and tensors (wrong: {wrong[:4]})")
    g.f.close()
    rc, _, err = run(["model", "synth", "-o", p, "--arch", "deepseek2", "--shape", "tiny", "--layers", "1"])
    g = Gguf(p)
    check(rc == 0 and g.meta["deepseek2.leading_dense_block_count"] == 1 and
          not any("exps" in n for n, _, _, _ in g.tensors), "synth tiny --layers 1: one dense block, no experts")
    g.f.close()

    # v3-mini cut to one block (its vocabulary and first dense block: 100 MB at Q4_0): metadata
    p = os.path.join(tmp, "ds2-v3-mini-1.gguf")
    rc, _, err = run(["model", "synth", "-o", p, "--arch", "deepseek2", "--shape", "v3-mini", "--type", "Q4_0", "--layers", "1"])
    g = Gguf(p)
    want = {"deepseek2.embedding_length": 2048, "deepseek2.block_count": 1, "deepseek2.leading_dense_block_count": 1,
            "deepseek2.attention.head_count": 16, "deepseek2.attention.q_lora_rank": 512,
            "deepseek2.attention.kv_lora_rank": 256, "deepseek2.attention.key_length": 256 + 64,
            "deepseek2.attention.key_length_mla": 192, "deepseek2.attention.value_length_mla": 128,
            "deepseek2.expert_count": 64, "deepseek2.expert_used_count": 8, "deepseek2.expert_shared_count": 1,
            "deepseek2.expert_group_count": 8, "deepseek2.expert_group_used_count": 4,
            "deepseek2.expert_gating_func": 2, "deepseek2.expert_weights_norm": True,
            "deepseek2.rope.scaling.type": "yarn", "deepseek2.rope.scaling.factor": 40.0,
            "deepseek2.rope.scaling.original_context_length": 4096, "deepseek2.vocab_size": 32000}
    bad = {k: (g.meta.get(k), v) for k, v in want.items() if g.meta.get(k) != v}
    lm = g.meta.get("deepseek2.rope.scaling.yarn_log_multiplier", 0)
    check(rc == 0 and not bad and abs(lm - 0.1) < 1e-6 and
          [(n, ne) for n, ne, _, _ in g.tensors] == ds2_tensors(2048, 1, 16, 512, 256, 128, 64, 128, 1, 5632, 64, 768, 1, 32000, True),
          f"synth v3-mini --layers 1: metadata and tensors (wrong: {bad})")
    g.f.close()
    os.remove(p)
    rc, _, err = run(["model", "synth", "-o", p, "--arch", "deepseek2", "--shape", "v9"])
    check(rc == 1 and "tiny, v2-lite, v3-mini" in err, f"unknown deepseek2 shape lists the shapes ({err.strip()!r})")
    rc, _, err = run(["model", "synth", "-o", p, "--arch", "deepseek2", "--shape", "small"])
    check(rc == 1, "--arch deepseek2 --shape small (a llama shape) is refused")
    rc, _, err = run(["model", "synth", "-o", p, "--arch", "llama", "--shape", "tiny-gemma3"])
    check(rc == 1 and "gemma3" in err, f"--arch llama with a gemma3 shape is refused ({err.strip()!r})")
    rc, _, err = run(["model", "synth", "-o", p, "--arch", "mamba", "--shape", "tiny"])
    check(rc == 2, "unknown --arch: usage error")


# ---- quantize ---------------------------------------------------------------------------
def more_bits(i, n):   # llama.cpp's use_more_bits
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(name, ne, mix, n_layer, n_expert):
    """llama.cpp's llama_tensor_get_type and its fallbacks, for a Q8_0 or Q4_K_M file"""
    if len(ne) < 2 or not name.endswith("weight") or "_norm.weight" in name or "ffn_gate_inp.weight" in name:
        return F32
    t = Q8_0
    if mix == "Q4_K_M":
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        t = Q4_K
        if name == "output.weight": t = Q6_K
        elif "attn_output.weight" in name and n_expert == 8: t = Q5_K
        elif "ffn_down" in name and more_bits(layer, n_layer): t = Q6_K
    if ne[0] % BLOCK[t][0]:
        t = {Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}.get(t, F16)
        if ne[0] % BLOCK[t][0]: t = F16
    return t


# relative RMS error bounds of kernels/cpu/quant.c (tests/quant/test_simd.c checks them)
BOUND = {F16: 5e-4, Q8_0: 0.01, Q5_0: 0.08, Q5_1: 0.08}


def test_quantize():
    src = os.path.join(shared, "models", "tiny-deepseek-f32.gguf")
    if not os.path.exists(src):
        print(f"skip: {src} not found"); return False
    a = Gguf(src)
    n_layer, n_expert = a.meta["deepseek2.block_count"], a.meta["deepseek2.expert_count"]
    for mix in ("Q8_0", "Q4_K_M"):
        out = os.path.join(tmp, f"ds2-{mix}.gguf")
        rc, stdout, err = run(["model", "quantize", src, out, mix])
        check(rc == 0 and f"wrote {out}" in err, f"quantize tiny-deepseek-f32 -> {mix}: exit {rc} {err.strip()[-300:]!r}")
        if rc: continue
        lines = [l for l in stdout.splitlines() if l.startswith("[")]
        check(len(lines) == len(a.tensors) and all("->" in l for l in lines),
              f"quantize {mix} prints one line per tensor ({len(lines)} of {len(a.tensors)})")
        rc, info, _ = run(["info", out])
        check(rc == 0 and "architecture: deepseek2" in info, f"sampan info parses the {mix} file")
        b = Gguf(out)
        check([(n, ne) for n, ne, _, _ in b.tensors] == [(n, ne) for n, ne, _, _ in a.tensors],
              f"{mix}: tensor names, order and shapes unchanged")
        extra = {k for k in b.meta if k not in a.meta}
        changed = [k for k in a.meta if k != "general.file_type" and b.meta.get(k) != a.meta[k]]
        check(not changed and extra <= {"general.quantization_version", "general.file_type"} and
              (mix != "Q4_K_M" or b.meta.get("general.file_type") == 15),
              f"{mix}: metadata copied (changed {changed}, added {sorted(extra)})")
        wrong = [(n, NAME.get(t, t), NAME.get(expected_type(n, ne, mix, n_layer, n_expert)))
                 for n, ne, t, _ in b.tensors if t != expected_type(n, ne, mix, n_layer, n_expert)]
        check(not wrong, f"{mix}: every tensor of llama.cpp's type (wrong: {wrong[:5]})")
        kinds = sorted({NAME.get(t, str(t)) for _, _, t, _ in b.tensors})
        print(f"  {mix}: types present {kinds}")
        worst = {}
        bad = []
        for name, ne, t, _ in b.tensors:
            rows = 1
            for d in ne[1:]: rows *= d
            # every row of the small tensors; a spread of rows of the 102400-row vocabulary ones
            sample = range(rows) if rows <= 4096 else sorted(set(range(256)) | set(range(0, rows, 401)) | {rows - 1})
            e2 = s2 = 0.0
            el_bad = 0
            for r in sample:
                x = dequant(F32, a.row(name, r), ne[0])
                raw = b.row(name, r)
                y = dequant(t, raw, ne[0])
                for i, (xi, yi) in enumerate(zip(x, y)):
                    e2 += (xi - yi) ** 2; s2 += xi * xi
                if t == Q8_0:   # |x - d q| <= d/2, plus what rounding d to f16 moves 127 steps
                    for blk in range(ne[0] // 32):
                        d = f16(raw, 34 * blk)
                        el_bad += sum(abs(xi - yi) > d * (0.5 + 127 * 2.0 ** -11) + 1e-12
                                      for xi, yi in zip(x[32 * blk:32 * blk + 32], y[32 * blk:32 * blk + 32]))
            rel = math.sqrt(e2 / s2) if s2 else math.sqrt(e2)
            worst[NAME.get(t, t)] = max(worst.get(NAME.get(t, t), 0.0), rel)
            limit = 0.0 if t == F32 else BOUND.get(t, -1)
            if rel > limit or el_bad:
                bad.append((name, NAME.get(t, t), round(rel, 5), el_bad))
        check(not bad, f"{mix}: dequantized values within each type's bound of the F32 originals "
              f"(worst relative RMS by type {{{', '.join(f'{k}: {v:.2g}' for k, v in sorted(worst.items()))}}}; "
              f"out of bound: {bad[:4]})")
        b.f.close()
        os.remove(out)
    a.f.close()
    return True


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "synth"
    if what == "synth":
        test_synth()
        finish()
    else:
        ran = test_quantize()
        finish(skip_if_none=not ran)
