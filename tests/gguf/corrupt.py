#!/usr/bin/env python3
"""tests/gguf/corrupt.py: hostile GGUF files, and the check that each is refused cleanly.

A small, valid GGUF (three KVs and a string array, three F32 tensors) is written by the minimal
writer below, independent of runtime/gguf_write.c. Each case either patches its bytes or rebuilds
it with one field changed. Every case must make the program under test exit with a code in
1..125 other than 77 (no signal, no skip), with exactly one non-empty stderr line that names
'gguf' or says 'error', and no sanitizer report.

  corrupt.py --check GGUF_CHECK   run `GGUF_CHECK FILE` on each case
  corrupt.py --sampan SAMPAN      run `SAMPAN info FILE` and `SAMPAN run -m FILE -p hi -n 1`
  corrupt.py                      same as --sampan "$SAMPAN"
  corrupt.py --write DIR          only write the corpus (and the valid base.gguf) into DIR

Prints PASS/FAIL per case and `N passed, N failed`; exits 1 on any failure, 77 when the CLI is
a placeholder (it accepts the valid base file but prints nothing).
"""
import argparse
import concurrent.futures
import os
import re
import struct
import subprocess
import sys
import tempfile

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
T_F32, T_Q8_0, T_IQ2_XXS = 0, 8, 16
TIMEOUT = 20
TOKENS = ['hello, a long first token', 'bb', 'ccc', '']   # long enough that a cut inside 'bb'
                                                          # passes the array count bound


def u32(v):
    return struct.pack('<I', v & 0xFFFFFFFF)


def u64(v):
    return struct.pack('<Q', v & 0xFFFFFFFFFFFFFFFF)


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b)) + b


class Gguf:
    """Minimal GGUF v3 writer that can be told to write wrong things."""

    def __init__(self):
        self.magic, self.version, self.align = b'GGUF', 3, 32
        self.n_tensors = self.n_kv = None   # None: the real counts
        self.kvs = []            # (key, type id, encoded value)
        self.tensors = []        # dicts: name, ne, type, nbytes [, n_dims, offset]

    def kv(self, key, vtype, val):
        self.kvs.append((key, vtype, val))

    def tensor(self, name, ne, ttype=T_F32, nbytes=None):
        n = 1
        for x in ne:
            n *= x
        self.tensors.append({'name': name, 'ne': list(ne), 'type': ttype,
                             'nbytes': 4 * n if nbytes is None else nbytes})

    def build(self):
        """Returns (bytes, marks): marks are the offsets where each section starts."""
        out, m = bytearray(self.magic), {}
        m['version'] = len(out)
        out += u32(self.version)
        out += u64(len(self.tensors) if self.n_tensors is None else self.n_tensors)
        out += u64(len(self.kvs) if self.n_kv is None else self.n_kv)
        for i, (k, t, v) in enumerate(self.kvs):
            m['kv%d' % i] = len(out)
            out += gstr(k) + u32(t)
            m['kv%d.val' % i] = len(out)
            out += v
        offs, off = [], 0
        for t in self.tensors:
            off = (off + self.align - 1) // self.align * self.align
            offs.append(off)
            off += t['nbytes']
        for i, t in enumerate(self.tensors):
            m['ti%d' % i] = len(out)
            out += gstr(t['name']) + u32(t.get('n_dims', len(t['ne'])))
            out += b''.join(u64(x) for x in t['ne'])
            out += u32(t['type']) + u64(t.get('offset', offs[i]))
        m['infos_end'] = len(out)
        out += bytes(-len(out) % self.align)
        m['data'] = len(out)
        data = bytearray()
        for i, t in enumerate(self.tensors):
            data += bytes(offs[i] - len(data))
            data += bytes((j * 13 + i * 7 + 1) & 0xFF for j in range(t['nbytes']))
        return bytes(out + data), m


def base():
    g = Gguf()
    g.kv('general.architecture', STR, gstr('llama'))
    g.kv('test.count', U32, u32(7))
    g.kv('tokenizer.ggml.tokens', ARR, u32(STR) + u64(4) + b''.join(
        gstr(s) for s in TOKENS))
    g.kv('test.scale', F32, struct.pack('<f', 0.5))
    g.tensor('a.weight', [4, 2])
    g.tensor('b.weight', [3])
    g.tensor('c.weight', [8])
    return g


def rich():
    """A valid file with every value type, nested arrays, alignment 64 and every tensor type
    the reader supports: a fuzzing seed that reaches the deep paths."""
    g = Gguf()
    g.align = 64
    g.kv('general.alignment', U32, u32(64))
    for vtype, fmt, val in [(U8, '<B', 200), (I8, '<b', -3), (U16, '<H', 60000), (I16, '<h', -2),
                            (U32, '<I', 7), (I32, '<i', -7), (F32, '<f', 0.5), (BOOL, '<B', 1),
                            (U64, '<Q', 2**63), (I64, '<q', -2**40), (F64, '<d', 1e300)]:
        g.kv('t.scalar%d' % vtype, vtype, struct.pack(fmt, val))
        g.kv('t.array%d' % vtype, ARR, u32(vtype) + u64(2) + struct.pack(fmt, val) * 2)
    g.kv('t.str', STR, gstr('h\u00e9llo'))
    g.kv('t.nested', ARR, u32(ARR) + u64(3)
         + u32(STR) + u64(2) + gstr('x') + gstr('')
         + u32(ARR) + u64(1) + u32(I32) + u64(2) + struct.pack('<ii', 1, 2)
         + u32(U8) + u64(0))
    g.kv('t.empty', ARR, u32(ARR) + u64(0))
    for name, ne, ttype, nbytes in [('f16', [8], 1, 16), ('bf16', [4, 2], 30, 16),
                                    ('q4_0', [32, 2], 2, 36), ('q8_0', [32], T_Q8_0, 34),
                                    ('q4_k', [256], 12, 144), ('q6_k', [256, 1, 1, 2], 14, 420),
                                    ('f32', [3], T_F32, 12)]:
        g.tensor(name, ne, ttype, nbytes)
    return g


def cases():
    B, M = base().build()
    assert M['data'] > M['infos_end'], 'the base file needs padding before its data'
    out = []

    def add(name, data):
        out.append((name, bytes(data)))

    def patch(off, raw):
        b = bytearray(B)
        b[off:off + len(raw)] = raw
        return b

    def variant(fn):
        g = base()
        fn(g)
        return g.build()[0]

    def tset(i, **kw):
        return variant(lambda g: g.tensors[i].update(kw))

    def with_kv(key, vtype, val):
        return variant(lambda g: g.kv(key, vtype, val))

    def trunc(cut, n_tensors, n_kv):
        """B cut at `cut`, with header counts that do not already give the cut away."""
        return B[:8] + u64(n_tensors) + u64(n_kv) + B[24:cut]

    tok = M['kv2.val']   # tokenizer.ggml.tokens: u32 elem type, u64 count, strings
    # truncation inside every section
    add('empty-file', b'')
    add('trunc-magic', B[:2])
    add('trunc-version', B[:6])
    add('trunc-counts', B[:20])
    add('trunc-kv-key-length', trunc(M['kv1'] + 5, 0, 2))
    add('trunc-kv-key', trunc(M['kv1'] + 8 + 3, 0, 2))
    add('trunc-kv-key-plain', B[:M['kv1'] + 8 + 3])
    add('trunc-kv-type', trunc(M['kv1.val'] - 2, 0, 2))
    add('trunc-kv-value', trunc(M['kv1.val'] + 2, 0, 2))
    add('trunc-string-array-header', trunc(tok + 6, 0, 3))
    in_bb = tok + 12 + 8 + len(TOKENS[0]) + 8 + 1
    add('trunc-string-array', trunc(in_bb, 0, 3))
    add('trunc-string-array-length', trunc(in_bb - 5, 0, 3))
    add('trunc-string-array-plain', B[:in_bb])
    add('trunc-tensor-info', B[:M['ti1'] + 10])
    add('trunc-tensor-info-ne', trunc(M['ti1'] + 8 + 8 + 4 + 3, 2, 4))
    add('trunc-tensor-info-offset', trunc(M['infos_end'] - 3, 3, 4))
    add('trunc-padding', B[:M['data'] - 1])
    add('trunc-tensor-data', B[:M['data'] + 5])
    add('trunc-last-byte', B[:-1])
    # header
    add('wrong-magic', b'GGML' + B[4:])
    add('version-0', patch(4, u32(0)))
    add('version-1', patch(4, u32(1)))
    add('version-4', patch(4, u32(4)))
    add('version-big-endian', patch(4, struct.pack('>I', 3)))
    add('n_tensors-2^63', patch(8, u64(2**63)))
    add('n_tensors-2^64-1', patch(8, u64(2**64 - 1)))
    add('n_tensors-plus-one', patch(8, u64(4)))
    add('n_kv-2^63', patch(16, u64(2**63)))
    add('n_kv-2^64-1', patch(16, u64(2**64 - 1)))
    add('n_kv-plus-one', patch(16, u64(5)))
    # kv keys, types, lengths and counts
    add('key-len-2^63', patch(M['kv0'], u64(2**63)))
    add('key-len-2^64-1', patch(M['kv0'], u64(2**64 - 1)))
    add('string-len-2^63', patch(M['kv0.val'], u64(2**63)))
    add('string-len-2^64-1', patch(M['kv0.val'], u64(2**64 - 1)))
    add('value-type-13', patch(M['kv1.val'] - 4, u32(13)))
    add('value-type-2^32-1', patch(M['kv1.val'] - 4, u32(2**32 - 1)))
    add('array-elem-type-99', patch(tok, u32(99)))
    add('array-count-2^63', patch(tok + 4, u64(2**63)))
    add('array-count-2^64-1', patch(tok + 4, u64(2**64 - 1)))
    add('array-string-len-2^64-1', patch(tok + 12, u64(2**64 - 1)))
    add('u8-array-count-past-eof', with_kv('test.bytes', ARR, u32(U8) + u64(10**6) + b'xyz'))
    add('array-of-arrays-count-2^40', with_kv('test.nest', ARR, u32(ARR) + u64(2**40)))
    add('nested-array-depth-bomb', with_kv('test.bomb', ARR,
                                           (u32(ARR) + u64(1)) * 10000 + u32(U8) + u64(0)))
    add('key-empty', with_kv('', U32, u32(1)))
    add('key-invalid-utf8', with_kv(b'test.\xff\xfe', U32, u32(1)))
    add('key-overlong-utf8', with_kv(b'test.\xc0\xae', U32, u32(1)))
    add('key-surrogate-utf8', with_kv(b'test.\xed\xa0\x80', U32, u32(1)))
    add('key-with-nul', with_kv(b'test.\x00x', U32, u32(1)))
    add('key-with-newline', with_kv(b'test.\nx', U32, u32(1)))
    add('duplicate-key', with_kv('test.count', U32, u32(8)))
    # general.alignment
    add('alignment-0', with_kv('general.alignment', U32, u32(0)))
    add('alignment-3', with_kv('general.alignment', U32, u32(3)))
    add('alignment-2^31+1', with_kv('general.alignment', U32, u32(2**31 + 1)))
    add('alignment-string', with_kv('general.alignment', STR, gstr('32')))
    add('alignment-64-misaligns-offsets', with_kv('general.alignment', U32, u32(64)))
    # tensor infos
    add('tensor-type-99', tset(1, type=99))
    add('tensor-type-2^32-1', tset(1, type=2**32 - 1))
    add('tensor-type-IQ2_XXS', tset(1, type=T_IQ2_XXS))
    add('tensor-ne0-not-block-multiple', tset(1, type=T_Q8_0, ne=[16]))
    add('tensor-n_dims-0', tset(1, n_dims=0, ne=[]))
    add('tensor-n_dims-5', tset(1, ne=[3, 1, 1, 1, 1]))
    add('tensor-n_dims-2^32-1', tset(1, n_dims=2**32 - 1))
    add('tensor-ne-0', tset(1, ne=[0]))
    add('tensor-ne-2^63', tset(1, ne=[2**63]))
    add('tensor-ne-product-overflow', tset(1, ne=[2**32, 2**32]))
    add('tensor-nbytes-overflow', tset(1, ne=[2**62, 1]))
    add('tensor-name-empty', tset(1, name=''))
    add('tensor-name-invalid-utf8', tset(1, name=b'b.\xed\xa0\x80'))
    add('tensor-name-len-2^64-1', patch(M['ti1'], u64(2**64 - 1)))
    add('duplicate-tensor-name', tset(2, name='a.weight'))
    add('tensor-offset-misaligned', tset(1, offset=4))
    add('tensors-overlap', tset(1, offset=0))
    add('tensor-data-past-eof', tset(2, offset=4096))
    add('tensor-offset-overflow', tset(2, offset=2**64 - 32))
    add('tensor-data-section-past-eof', B[:M['infos_end']])
    return out


def check_one(cmd, env, word=None):
    """Returns None if the run is a clean refusal, else what was wrong. The one stderr line must
    name `word`, or without one say 'gguf' or 'error'."""
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT,
                           env=env)
    except subprocess.TimeoutExpired:
        return 'timed out after %d s' % TIMEOUT
    err = p.stderr.decode('utf-8', 'replace')
    text = err + p.stdout.decode('utf-8', 'replace')
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if p.returncode < 0:
        return 'killed by signal %d: %s' % (-p.returncode, err.strip()[:300])
    for bad in ('AddressSanitizer', 'LeakSanitizer', 'runtime error', 'Segmentation'):
        if bad in text:
            return 'sanitizer/crash output: ' + err.strip()[:300]
    if p.returncode == 0 or p.returncode == 77 or p.returncode > 125:
        return 'exit code %d' % p.returncode
    if len(lines) != 1:
        return '%d stderr lines: %r' % (len(lines), lines[:4])
    if word is not None:
        return None if word in lines[0] else 'the error does not name %r: %r' % (word, lines[0])
    if 'gguf' not in lines[0].lower() and not re.search(r'\berror\b', lines[0], re.I):
        return "stderr names neither 'gguf' nor 'error': %r" % lines[0]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', help='gguf_check binary')
    ap.add_argument('--sampan', help='sampan CLI (default: $SAMPAN)')
    ap.add_argument('--write', metavar='DIR', help='only write the corpus into DIR')
    a = ap.parse_args()
    corpus = cases()
    names = [n for n, _ in corpus]
    assert len(set(names)) == len(names)

    if a.write:
        os.makedirs(a.write, exist_ok=True)
        valid = [('base', base().build()[0]), ('rich', rich().build()[0])]
        for name, data in corpus + valid:
            with open(os.path.join(a.write, name + '.gguf'), 'wb') as f:
                f.write(data)
        print('wrote %d files to %s' % (len(corpus) + len(valid), a.write))
        return 0

    if a.check:
        runs = [('check', lambda f: [a.check, f])]
    else:
        cli = a.sampan or os.environ.get('SAMPAN')
        if not cli:
            print('skip: neither --check, --sampan nor $SAMPAN given')
            return 77
        runs = [('info', lambda f: [cli, 'info', f]),
                ('run', lambda f: [cli, 'run', '-m', f, '-p', 'hi', '-n', '1'])]
    env = dict(os.environ)
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=1')
    env.setdefault('UBSAN_OPTIONS', 'halt_on_error=1:print_stacktrace=1')

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix='sampan-gguf-corrupt-') as tmp:
        for vname, vdata in [('base', base().build()[0]), ('rich', rich().build()[0])]:
            good = os.path.join(tmp, vname + '.gguf')
            with open(good, 'wb') as f:
                f.write(vdata)
            first = runs[0][1](good)
            if not os.access(first[0], os.X_OK):
                print('FAIL: %s is not an executable file' % first[0])
                print('0 passed, 1 failed')
                return 1
            p = subprocess.run(first, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=TIMEOUT, env=env)
            if p.returncode == 0 and not p.stdout.strip() and not a.check:
                print('skip: %s accepts the valid %s file but prints nothing (placeholder CLI)'
                      % (' '.join(first[:2]), vname))
                return 77
            if p.returncode != 0:
                print('FAIL %s (valid file): exit %d: %s' % (
                    vname, p.returncode, p.stderr.decode('utf-8', 'replace').strip()))
                failed += 1
            else:
                print('PASS %s (valid file accepted)' % vname)
                passed += 1
        jobs = []
        for name, data in corpus:
            path = os.path.join(tmp, name + '.gguf')
            with open(path, 'wb') as f:
                f.write(data)
            jobs += [(name, label, make(path)) for label, make in runs]
        # the runs are independent processes: a few at a time keeps sanitizer builds quick
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:
            results = list(ex.map(lambda j: check_one(j[2], env), jobs))
        for (name, label, _), why in zip(jobs, results):
            if why is None:
                passed += 1
                print('PASS %-34s %s' % (name, label))
            else:
                failed += 1
                print('FAIL %-34s %s: %s' % (name, label, why))
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
