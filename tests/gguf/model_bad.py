#!/usr/bin/env python3
"""tests/gguf/model_bad.py: well-formed GGUF files that describe a model Sampan must refuse.

corrupt.py covers files the reader must refuse; these files read cleanly, but their metadata
is wrong or asks for what is not implemented: a head dim (attention.key_length) of zero, odd,
unequal to value_length or not matching the tensors; an embedding that does not divide into
the heads when key_length is absent; an unknown or mistyped rope.scaling.type, a bad scaling
factor; the qwen2moe architecture; for deepseek2 (MLA + MoE), expert counts, groups, gating,
latent ranks and RoPE dims that are impossible or disagree with the tensors. Each case is a
`sampan model synth` model (tiny-qwen3 or tiny-gemma3, F32) or ../shared's tiny-deepseek-f32
(skipped when absent) with its metadata rewritten here (keys replaced, added or dropped; tensor
infos and data copied as they are). `sampan run -m FILE -p hi -n 1` must exit with a code in
1..125, write exactly one stderr line that names the problem (a word the case gives), and no
sanitizer report; `sampan info FILE` must say "model: cannot run:" with the same word. The
unmodified models must run.

  model_bad.py --sampan SAMPAN   (default $SAMPAN)
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corrupt import ARR, F32, STR, U32, check_one, gstr, u32, u64  # noqa: E402

TIMEOUT = 60
VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def split_gguf(b):
    """(header fields, [(key, raw kv bytes)], raw tensor infos, alignment, data section)"""
    o = 24
    n_tensors, n_kv = struct.unpack_from('<QQ', b, 8)

    def skip_value(o, t):
        if t == STR:
            return o + 8 + struct.unpack_from('<Q', b, o)[0]
        if t == ARR:
            et, n = struct.unpack_from('<IQ', b, o)
            o += 12
            for _ in range(n):
                o = skip_value(o, et)
            return o
        return o + VALUE_SIZES[t]

    kvs, align = [], 32
    for _ in range(n_kv):
        start = o
        n = struct.unpack_from('<Q', b, o)[0]
        key = b[o + 8:o + 8 + n].decode()
        t = struct.unpack_from('<I', b, o + 8 + n)[0]
        o = skip_value(o + 8 + n + 4, t)
        if key == 'general.alignment':
            align = struct.unpack_from('<I', b, o - 4)[0]
        kvs.append((key, b[start:o]))
    infos = o
    for _ in range(n_tensors):
        n = struct.unpack_from('<Q', b, o)[0]
        nd = struct.unpack_from('<I', b, o + 8 + n)[0]
        o += 8 + n + 4 + 8 * nd + 4 + 8
    data = (o + align - 1) // align * align
    return n_tensors, kvs, b[infos:o], align, b[data:]


def rewrite(src, changes):
    """src's bytes with the KVs in `changes` ({key: (type, encoded value) or None to drop})
    replaced, added or dropped"""
    n_tensors, kvs, infos, align, data = split_gguf(src)
    out = []
    for key, raw in kvs:
        if key not in changes:
            out.append(raw)
        elif changes[key] is not None:
            out.append(gstr(key) + u32(changes[key][0]) + changes[key][1])
    seen = {k for k, _ in kvs}
    out += [gstr(k) + u32(v[0]) + v[1] for k, v in changes.items() if v and k not in seen]
    head = b'GGUF' + u32(3) + u64(n_tensors) + u64(len(out)) + b''.join(out) + infos
    return head + bytes(-len(head) % align) + data


def cases():
    """(name, synth shape, metadata changes, word the error must name)"""
    q, g, d = 'qwen3.', 'gemma3.', 'deepseek2.'
    f32 = lambda v: (F32, struct.pack('<f', v))  # noqa: E731
    n32 = lambda v: (U32, u32(v))                # noqa: E731
    s = lambda v: (STR, gstr(v))                 # noqa: E731
    return [
        ('qwen3-key-length-0', 'tiny-qwen3', {q + 'attention.key_length': n32(0)}, 'key_length'),
        ('gemma3-key-length-0', 'tiny-gemma3', {g + 'attention.key_length': n32(0)}, 'key_length'),
        ('qwen3-key-length-2^32-1', 'tiny-qwen3', {q + 'attention.key_length': n32(2**32 - 1)},
         'key_length 4294967295'),
        ('gemma3-key-length-odd', 'tiny-gemma3', {g + 'attention.key_length': n32(33),
                                                  g + 'attention.value_length': n32(33)},
         'key_length 33'),
        ('qwen3-value-length-differs', 'tiny-qwen3', {q + 'attention.value_length': n32(16)},
         'value_length 16'),
        ('qwen3-key-length-vs-tensors', 'tiny-qwen3', {q + 'attention.key_length': n32(48),
                                                       q + 'attention.value_length': n32(48),
                                                       q + 'rope.dimension_count': n32(48)},
         'attn_q.weight'),
        ('qwen3-no-key-length-dim-66', 'tiny-qwen3', {q + 'attention.key_length': None,
                                                      q + 'attention.value_length': None,
                                                      q + 'embedding_length': n32(66)},
         'does not divide by 4 heads'),
        ('qwen3-rope-longer-than-head', 'tiny-qwen3', {q + 'rope.dimension_count': n32(64)},
         'rope.dimension_count 64'),
        ('qwen3-scaling-unknown', 'tiny-qwen3', {q + 'rope.scaling.type': s('longrope'),
                                                 q + 'rope.scaling.factor': f32(4.0)},
         "'longrope'"),
        ('gemma3-scaling-unknown', 'tiny-gemma3', {g + 'rope.scaling.type': s('su')}, "'su'"),
        ('qwen3-scaling-type-u32', 'tiny-qwen3', {q + 'rope.scaling.type': n32(1)},
         'rope.scaling.type'),
        ('qwen3-scaling-factor-negative', 'tiny-qwen3', {q + 'rope.scaling.type': s('linear'),
                                                         q + 'rope.scaling.factor': f32(-2.0)},
         'factor -2'),
        ('qwen3-scaling-factor-nan', 'tiny-qwen3', {q + 'rope.scaling.type': s('yarn'),
                                                    q + 'rope.scaling.factor': f32(float('nan'))},
         'factor nan'),
        ('qwen3-yarn-original-context-0', 'tiny-qwen3',
         {q + 'rope.scaling.type': s('yarn'), q + 'rope.scaling.factor': f32(4.0),
          q + 'rope.scaling.original_context_length': n32(0)}, 'original_context_length 0'),
        ('qwen2moe', 'tiny-qwen3', {'general.architecture': s('qwen2moe')}, "'qwen2moe'"),
        ('deepseek2-used-above-count', 'deepseek', {d + 'expert_used_count': n32(9)}, '8 experts, 9 used'),
        ('deepseek2-groups-do-not-divide', 'deepseek', {d + 'expert_group_count': n32(3)}, '3 groups'),
        ('deepseek2-gating-3', 'deepseek', {d + 'expert_gating_func': n32(3)}, 'gating 3'),
        ('deepseek2-kv-lora-0', 'deepseek', {d + 'attention.kv_lora_rank': n32(0)}, 'kv_lora_rank 0'),
        ('deepseek2-rope-as-long-as-key', 'deepseek', {d + 'rope.dimension_count': n32(24)}, 'rope dims 24'),
        ('deepseek2-kv-lora-vs-tensors', 'deepseek', {d + 'attention.kv_lora_rank': n32(32)}, 'attn_kv_a_mqa'),
        ('deepseek2-experts-vs-tensors', 'deepseek', {d + 'expert_count': n32(16)}, 'ffn_gate_inp'),
        ('deepseek2-expert-ffn-vs-tensors', 'deepseek', {d + 'expert_feed_forward_length': n32(32)},
         'ffn_gate_exps'),
        ('deepseek2-ep-scale-0', 'deepseek', {d + 'expert_weights_scale': f32(0.0)}, 'weights scale 0'),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sampan', default=os.environ.get('SAMPAN', 'build/sampan'))
    a = ap.parse_args()
    env = dict(os.environ)
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=1')
    env.setdefault('UBSAN_OPTIONS', 'halt_on_error=1:print_stacktrace=1')
    passed = failed = 0

    def report(ok, what):
        nonlocal passed, failed
        print(('PASS ' if ok else 'FAIL ') + what)
        passed, failed = passed + ok, failed + (not ok)

    def run(*args):
        return subprocess.run([a.sampan, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=TIMEOUT, env=env)

    with tempfile.TemporaryDirectory(prefix='sampan-model-bad-') as tmp:
        bases = {}
        for shape in ('tiny-qwen3', 'tiny-gemma3'):
            path = os.path.join(tmp, shape + '.gguf')
            r = run('model', 'synth', '-o', path, '--shape', shape, '--type', 'F32')
            r = r if r.returncode else run('run', '-m', path, '-p', 'hi', '-n', '1')
            report(r.returncode == 0, '%s runs unmodified (%s)' % (shape, r.stderr.strip()[-200:]))
            with open(path, 'rb') as f:
                bases[shape] = f.read()
            # the rewriter itself changes nothing when told to change nothing
            report(rewrite(bases[shape], {}) == bases[shape], '%s rewritten unchanged' % shape)
        shared = os.environ.get('SAMPAN_SHARED', os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                              '..', '..', '..', 'shared'))
        ds = os.path.join(shared, 'models', 'tiny-deepseek-f32.gguf')
        if os.path.exists(ds):
            with open(ds, 'rb') as f:
                bases['deepseek'] = f.read()
        else:
            print('skip: %s not found: no deepseek2 cases' % ds)
        for name, shape, changes, word in cases():
            if shape not in bases:
                continue
            path = os.path.join(tmp, name + '.gguf')
            with open(path, 'wb') as f:
                f.write(rewrite(bases[shape], changes))
            why = check_one([a.sampan, 'run', '-m', path, '-p', 'hi', '-n', '1'], env, word)
            report(why is None, '%s: %s' % (name, why or 'run refuses it, naming %r' % word))
            info = run('info', path).stdout
            named = [ln for ln in info.splitlines() if ln.startswith('model: cannot run:')]
            report(len(named) == 1 and word in named[0],
                   '%s: info says %r' % (name, named[0] if named else info.strip()[-200:]))
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
