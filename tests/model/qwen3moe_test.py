#!/usr/bin/env python3
"""tests/model/qwen3moe_test.py — the qwen3moe architecture against the dense qwen3 path.

No reference implementation's outputs exist here for Qwen3-MoE, so the test builds MoE models
whose answer is known exactly: a `sampan model synth` tiny-qwen3 (F32; the qwen3 path is
checked against llama.cpp by the arch test) rewritten as qwen3moe with E = 4 routed experts,
k = 2, softmax routing with the top-k weights normalised (llama.cpp's qwen3moe rules):
  * experts 0 and 1 are the dense FFN, 2 and 3 another FFN (down projection negated); a router
    of zeros ties all four, so the lowest ids, 0 and 1, are chosen, each weighing exactly 1/2
    after normalisation: the output is bitwise the dense model's (`sampan score` logits equal);
  * the experts swapped (0 and 1 negated): the logits differ (routing decides what runs);
  * through the scheduler (test_sched --f32) the MoE model is bitwise batch-invariant.
"""
import atexit, os, shutil, struct, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish   # noqa: E402
from gguf_py import gstr, parse, write   # noqa: E402

sampan = os.environ.get("SAMPAN", "build/sampan")
test_sched = sys.argv[1] if len(sys.argv) > 1 else None
tmp = tempfile.mkdtemp(prefix="sampan-qwen3moe-")
atexit.register(shutil.rmtree, tmp, True)

def f32s(raw):
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))

def pack(vals):
    return struct.pack("<%df" % len(vals), *vals)

def to_moe(kvs, tensors):
    """the dense model as qwen3moe: 4 experts, 2 used, a router of zeros"""
    E, k = 4, 2
    nk = [(key.replace("qwen3.", "qwen3moe.", 1), t, raw) for key, t, raw in kvs
          if key != "general.architecture"]
    C = F = None
    for key, t, raw in kvs:
        if key == "qwen3.embedding_length": C = struct.unpack("<I", raw)[0]
        if key == "qwen3.feed_forward_length": F = struct.unpack("<I", raw)[0]
    nk = [("general.architecture", 8, gstr("qwen3moe"))] + nk
    nk += [("qwen3moe.expert_count", 4, struct.pack("<I", E)),
           ("qwen3moe.expert_used_count", 4, struct.pack("<I", k)),
           ("qwen3moe.expert_feed_forward_length", 4, struct.pack("<I", F))]
    byname = {n: (d, r) for n, d, r in tensors}
    out = []
    for name, dims, raw in tensors:
        part = name.split(".")
        if len(part) == 4 and part[2] in ("ffn_gate", "ffn_up", "ffn_down"):
            if part[2] != "ffn_gate":
                continue
            blk = ".".join(part[:2])
            g, u, d = (byname[f"{blk}.{w}.weight"][1] for w in ("ffn_gate", "ffn_up", "ffn_down"))
            neg = pack([-x for x in f32s(d)])
            out.append((f"{blk}.ffn_gate_exps.weight", [C, F, E], g * E))
            out.append((f"{blk}.ffn_up_exps.weight", [C, F, E], u * E))
            out.append((f"{blk}.ffn_down_exps.weight", [F, C, E], d + d + neg + neg))
            # router (E, C) of zeros: every expert ties, the lowest ids (0, 1) win
            out.append((f"{blk}.ffn_gate_inp.weight", [C, E], pack([0.0] * (C * E))))
            continue
        out.append((name, dims, raw))
    return nk, out

def sh(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr

dense = os.path.join(tmp, "tiny-qwen3.gguf")
rc, _, err = sh([sampan, "model", "synth", "-o", dense, "--shape", "tiny-qwen3", "--type", "F32", "--seed", "9"])
check(rc == 0, f"synth tiny-qwen3 ({err.strip()[-200:]})")
kvs, tensors = parse(dense)
toks = "1,20,300,45,67,89,100,12,13,14,250,251,252,77,78,79"

def score(path):
    out = os.path.join(tmp, "logits.f32")
    rc, _, err = sh([sampan, "score", "-m", path, "--tokens", toks, "--logits", out, "-t", "2"])
    if rc:
        return None, err.strip()[-300:]
    return open(out, "rb").read(), ""

base, err = score(dense)
check(base is not None, f"dense score ({err})")
# a router of zeros ties every expert: softmax 1/4 each, top-2 by lowest id = 0 and 1, each
# weighing exactly 1/2 after normalisation
moe = os.path.join(tmp, "tiny-qwen3moe.gguf")
write(moe, *to_moe(kvs, tensors))
rc, info, _ = sh([sampan, "info", moe])
check(rc == 0 and "model: qwen3moe" in info and "4 experts (2 used, 0 shared)" in info and "gating softmax" in info
      and "weights normalised" in info, "info qwen3moe: 4 experts, 2 used, softmax, normalised")
got, err = score(moe)
check(got is not None and got == base,
      f"qwen3moe with experts 0, 1 = the dense FFN (each weight 1/2): logits bitwise the dense model's {err}")
# swap the experts: 0 and 1 now carry the negated down projection
kv2, t2 = to_moe(kvs, tensors)
t2 = [(n, d, (r[len(r) // 2:] + r[:len(r) // 2]) if n.endswith("ffn_down_exps.weight") else r) for n, d, r in t2]
moe2 = os.path.join(tmp, "tiny-qwen3moe-neg.gguf")
write(moe2, kv2, t2)
got2, err = score(moe2)
check(got2 is not None and got2 != base, "the chosen experts negated: the logits differ (routing decides what runs)")
if test_sched:
    rc, out, err = sh([test_sched, moe, "--f32"])
    check(rc == 0, f"test_sched --f32 on qwen3moe: {(out.strip().splitlines() or [''])[-1]}")
finish()
