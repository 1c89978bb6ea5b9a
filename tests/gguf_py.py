"""tests/gguf_py.py — a minimal GGUF reader and writer for tests that build model files from
other ones (F32 tensors only): parse() gives the metadata as raw (key, type, value bytes) and
the tensors as (name, ne dims, little-endian f32 bytes); write() lays them out again (version 3,
alignment 32); meta() decodes the scalar and string values."""
import struct

def rd_str(b, o):
    n = struct.unpack_from("<Q", b, o)[0]
    return b[o + 8:o + 8 + n].decode(), o + 8 + n

SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

def skip(b, o, t):
    if t == 8:
        return o + 8 + struct.unpack_from("<Q", b, o)[0]
    if t == 9:
        et, n = struct.unpack_from("<IQ", b, o)
        o += 12
        for _ in range(n):
            o = skip(b, o, et)
        return o
    return o + SIZES[t]

def parse(path):
    b = open(path, "rb").read()
    nt, nk = struct.unpack_from("<QQ", b, 8)
    o, kvs = 24, []
    for _ in range(nk):
        k, o2 = rd_str(b, o)
        t = struct.unpack_from("<I", b, o2)[0]
        end = skip(b, o2 + 4, t)
        kvs.append((k, t, b[o2 + 4:end]))
        o = end
    tensors = []
    for _ in range(nt):
        name, o = rd_str(b, o)
        nd = struct.unpack_from("<I", b, o)[0]
        dims = list(struct.unpack_from("<%dQ" % nd, b, o + 4))
        ty, off = struct.unpack_from("<IQ", b, o + 4 + 8 * nd)
        o += 4 + 8 * nd + 12
        tensors.append([name, dims, ty, off])
    data = (o + 31) // 32 * 32
    out = []
    for name, dims, ty, off in tensors:
        assert ty == 0, "F32 models only"
        n = 1
        for d in dims:
            n *= d
        out.append((name, dims, b[data + off:data + off + 4 * n]))
    return kvs, out

def gstr(s):
    e = s.encode()
    return struct.pack("<Q", len(e)) + e

def write(path, kvs, tensors):
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, raw in kvs:
        head += gstr(k) + struct.pack("<I", t) + raw
    off, infos, blobs = 0, b"", []
    for name, dims, raw in tensors:
        infos += gstr(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", 0, off)
        pad = (len(raw) + 31) // 32 * 32
        blobs.append(raw + bytes(pad - len(raw)))
        off += pad
    head += infos
    head += bytes(-len(head) % 32)
    open(path, "wb").write(head + b"".join(blobs))


def meta(kvs):
    """{key: value} for scalar and string values (arrays left out)"""
    fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    out = {}
    for k, t, raw in kvs:
        if t == 8:
            out[k] = raw[8:].decode()
        elif t in fmt:
            out[k] = struct.unpack("<" + fmt[t], raw)[0]
    return out


def u32(v):
    return (4, struct.pack("<I", v))


def f32(v):
    return (6, struct.pack("<f", v))


def string(v):
    return (8, gstr(v))


def edit(kvs, changes):
    """kvs with {key: (type, raw) or None (drop)} replaced, dropped or added"""
    out = [(k, *changes[k]) if k in changes else (k, t, r) for k, t, r in kvs
           if k not in changes or changes[k] is not None]
    have = {k for k, _, _ in kvs}
    return out + [(k, *v) for k, v in changes.items() if v is not None and k not in have]
