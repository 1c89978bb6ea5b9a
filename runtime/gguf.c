/* runtime/gguf.c — the GGUF v2/v3 reader: validates a whole file up front, then serves
 * metadata and tensor views that point into a read-only mapping (nothing is copied).
 *
 * The file is hostile until checked (SQLite's discipline). Parsing goes through one cursor
 * (gguf__rd) whose every read first asks gguf__need() whether the bytes are there; every count is
 * bounded by the bytes left divided by the smallest encoding of one element before anything is
 * sized from it; arrays nest at most GGUF__MAX_DEPTH deep. Errors are one line, "gguf: " + the
 * field (kv index and key, or tensor index and name) + the numbers; names are printed escaped so
 * a hostile name cannot break the line.
 *
 * Open: header -> kvs (values decoded, string arrays indexed, nested arrays expanded) -> key
 * hash (duplicates refused) -> general.alignment -> tensor infos (shape, type, size) -> name
 * hash (duplicates refused) -> data section offset -> per-tensor bounds and alignment ->
 * overlap check over tensors sorted by offset. Allocations hang off one list freed at close.
 * Assumes a little-endian host, as GGUF v3 files written by ggml are little-endian.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files with memcpy: port the loads before using a BE host"
#endif

#define GGUF__MAX_DEPTH 8      /* arrays of arrays ... of this many levels at most */
#define GGUF__HEADER 24        /* magic, version, n_tensors, n_kv */
#define GGUF__MIN_KV 13        /* key length (8) + type (4) + the smallest value (1) */
#define GGUF__MIN_TINFO 32     /* name length, n_dims, one ne, type, offset */

/* ---- tensor type table (ggml ids) ------------------------------------------------------ */

typedef struct { const char *name; uint32_t blck, tsize; } gguf__ttype;   /* tsize 0: refused */

static const gguf__ttype gguf__ttypes[] = {
    [0] = {"F32", 1, 4},      [1] = {"F16", 1, 2},      [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},   [9] = {"Q8_1", 0, 0},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 0, 0},   [16] = {"IQ2_XXS", 0, 0},
    [17] = {"IQ2_XS", 0, 0},  [18] = {"IQ3_XXS", 0, 0}, [19] = {"IQ1_S", 0, 0},
    [20] = {"IQ4_NL", 32, 18}, [21] = {"IQ3_S", 0, 0},   [22] = {"IQ2_S", 0, 0},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 0, 0},      [25] = {"I16", 0, 0},
    [26] = {"I32", 0, 0},     [27] = {"I64", 0, 0},     [28] = {"F64", 0, 0},
    [29] = {"IQ1_M", 0, 0},   [30] = {"BF16", 1, 2},    [34] = {"TQ1_0", 0, 0},
    [35] = {"TQ2_0", 0, 0},   [39] = {"MXFP4", 0, 0},
};
#define GGUF__N_TTYPES (int)(sizeof gguf__ttypes / sizeof gguf__ttypes[0])

const char *gguf_ttype_name(int type) {
    return type >= 0 && type < GGUF__N_TTYPES ? gguf__ttypes[type].name : NULL;
}

int gguf_ttype_block(int type, uint32_t *blck, uint32_t *tsize) {
    if (type < 0 || type >= GGUF__N_TTYPES || gguf__ttypes[type].tsize == 0) return 0;
    if (blck) *blck = gguf__ttypes[type].blck;
    if (tsize) *tsize = gguf__ttypes[type].tsize;
    return 1;
}

static const char *const gguf__vtype_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string",
    "array", "uint64", "int64", "float64",
};
static const uint8_t gguf__vtype_size[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_type_name(gguf_vtype t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? gguf__vtype_names[t] : "invalid";
}

/* ---- context ---------------------------------------------------------------------------- */

typedef struct { gguf_str key; gguf_value val; } gguf__kv;
typedef struct gguf__blk { struct gguf__blk *next; } gguf__blk;   /* header of each allocation */
typedef struct { int64_t *slot; uint64_t mask; } gguf__hash;      /* open addressing, -1 empty */

struct gguf_ctx {
    const uint8_t *base;
    size_t size;
    void *map;                 /* mmap'ed region (gguf_open) or NULL (buffer) */
    uint32_t version;
    uint64_t alignment, data_off;
    int64_t n_kv, n_tensors;
    gguf__kv *kv;
    gguf_tensor *tensors;
    gguf__hash kv_hash, t_hash;
    gguf__blk *blocks;
};

typedef struct {
    gguf_ctx *g;
    size_t pos;
    char *err;
    size_t errlen;
    char where[200];           /* the field being read, for messages: "kv 3 ('general.name')" */
} gguf__rd;

static void *gguf__alloc(gguf_ctx *g, size_t n, size_t size) {
    if (size && n > (SIZE_MAX - 64) / size) return NULL;
    gguf__blk *b = malloc(sizeof(max_align_t) + n * size);
    if (!b) return NULL;
    b->next = g->blocks;
    g->blocks = b;
    return (char *)b + sizeof(max_align_t);
}

static int gguf__fail(gguf__rd *r, int code, const char *fmt, ...) {
    if (r->err && r->errlen) {
        int k = snprintf(r->err, r->errlen, "gguf: ");
        va_list ap;
        va_start(ap, fmt);
        if (k >= 0 && (size_t)k < r->errlen) vsnprintf(r->err + k, r->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Printable copy of a name for messages: at most 64 bytes, non-printable bytes as \xNN. */
static const char *gguf__esc(gguf_str s, char *buf, size_t cap) {
    size_t o = 0;
    for (uint64_t i = 0; i < s.len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (i == 64) { memcpy(buf + o, "...", 3); o += 3; break; }
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = 0;
    return buf;
}

static int gguf__need(gguf__rd *r, uint64_t n, const char *what) {
    size_t left = r->g->size - r->pos;
    if (n <= left) return GGUF_OK;
    return gguf__fail(r, GGUF_ERR_FORMAT, "%s%s%s truncated: needs %llu bytes at offset %zu, "
                      "file ends at %zu", r->where, *r->where ? " " : "", what,
                      (unsigned long long)n, r->pos, r->g->size);
}

/* n (4 or 8) little-endian bytes into *v, a uint32_t or uint64_t */
static int gguf__read(gguf__rd *r, void *v, size_t n, const char *what) {
    int rc = gguf__need(r, n, what);
    if (rc) return rc;
    memcpy(v, r->g->base + r->pos, n);
    r->pos += n;
    return GGUF_OK;
}
#define gguf__u32(r, v, what) gguf__read(r, v, 4, what)
#define gguf__u64(r, v, what) gguf__read(r, v, 8, what)

static int gguf__str(gguf__rd *r, gguf_str *s, const char *what) {
    uint64_t len;
    int rc = gguf__u64(r, &len, what);
    if (rc) return rc;
    if (len > r->g->size - r->pos)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s%s%s length %llu exceeds remaining %zu bytes",
                          r->where, *r->where ? " " : "", what, (unsigned long long)len,
                          r->g->size - r->pos);
    s->ptr = (const char *)r->g->base + r->pos;
    s->len = len;
    r->pos += (size_t)len;
    return GGUF_OK;
}

/* Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
 * Returns the offset of the first bad byte, or -1. */
static int64_t gguf__utf8_bad(gguf_str s) {
    const unsigned char *p = (const unsigned char *)s.ptr;
    uint64_t i = 0;
    while (i < s.len) {
        unsigned c = p[i];
        uint64_t n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                   : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (n == 9 || n > s.len - i - 1) return (int64_t)i;
        unsigned cp = n == 0 ? c : c & (0x3fu >> n);
        for (uint64_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return (int64_t)i;
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        static const unsigned min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (int64_t)i;
        i += n + 1;
    }
    return -1;
}

/* Keys and tensor names: non-empty, valid UTF-8, no control characters (they are looked up
 * as C strings and printed on one line). */
static int gguf__check_name(gguf__rd *r, gguf_str s, const char *what) {
    char e[300];
    if (s.len == 0) return gguf__fail(r, GGUF_ERR_FORMAT, "%s %s is empty", r->where, what);
    for (uint64_t i = 0; i < s.len; i++)
        if ((unsigned char)s.ptr[i] < 0x20 || s.ptr[i] == 0x7f)
            return gguf__fail(r, GGUF_ERR_FORMAT, "%s %s '%s' has control character 0x%02x at "
                              "byte %llu", r->where, what, gguf__esc(s, e, sizeof e),
                              (unsigned char)s.ptr[i], (unsigned long long)i);
    int64_t bad = gguf__utf8_bad(s);
    if (bad < 0) return GGUF_OK;
    return gguf__fail(r, GGUF_ERR_FORMAT, "%s %s '%s' is not valid UTF-8 (byte 0x%02x at %lld)",
                      r->where, what, gguf__esc(s, e, sizeof e),
                      (unsigned char)s.ptr[bad], (long long)bad);
}

/* ---- values ----------------------------------------------------------------------------- */

/* Decodes one scalar of type t at p into out->v, widened as gguf.h documents. */
static void gguf__scalar(gguf_vtype t, const uint8_t *p, gguf_value *out) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } x;
    memcpy(&x, p, gguf__vtype_size[t]);
    switch (t) {
    case GGUF_TYPE_UINT8: out->v.u64 = x.u8; break;
    case GGUF_TYPE_INT8: out->v.i64 = x.i8; break;
    case GGUF_TYPE_UINT16: out->v.u64 = x.u16; break;
    case GGUF_TYPE_INT16: out->v.i64 = x.i16; break;
    case GGUF_TYPE_UINT32: out->v.u64 = x.u32; break;
    case GGUF_TYPE_INT32: out->v.i64 = x.i32; break;
    case GGUF_TYPE_FLOAT32: out->v.f64 = x.f32; break;
    case GGUF_TYPE_BOOL: out->v.b = x.u8 != 0; break;
    case GGUF_TYPE_UINT64: out->v.u64 = x.u64; break;
    case GGUF_TYPE_INT64: out->v.i64 = x.i64; break;
    default: out->v.f64 = x.f64; break;
    }
}

static int gguf__value(gguf__rd *r, gguf_vtype type, gguf_value *out, int depth);

static int gguf__array(gguf__rd *r, gguf_value *out, int depth) {
    uint32_t et;
    uint64_t n;
    int rc = gguf__u32(r, &et, "array element type");
    if (rc) return rc;
    if (et >= GGUF_TYPE_COUNT)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s array element type %u is not a GGUF type "
                          "(0..%d)", r->where, et, GGUF_TYPE_COUNT - 1);
    if ((rc = gguf__u64(r, &n, "array count"))) return rc;
    size_t left = r->g->size - r->pos;
    uint64_t min = et == GGUF_TYPE_STRING ? 8 : et == GGUF_TYPE_ARRAY ? 12 : gguf__vtype_size[et];
    if (n > left / min)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s array count %llu exceeds remaining %zu bytes",
                          r->where, (unsigned long long)n, left);
    if (et == GGUF_TYPE_ARRAY && depth + 1 >= GGUF__MAX_DEPTH)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s arrays nested deeper than %d levels",
                          r->where, GGUF__MAX_DEPTH);
    out->v.arr.elem_type = (gguf_vtype)et;
    out->v.arr.n = n;
    out->v.arr.data = r->g->base + r->pos;
    out->v.arr.aux = NULL;
    if (n == 0) return GGUF_OK;
    if (et == GGUF_TYPE_STRING) {
        uint64_t *off = gguf__alloc(r->g, (size_t)n, sizeof *off);
        if (!off) return gguf__fail(r, GGUF_ERR_NOMEM, "%s: no memory for %llu string offsets",
                                    r->where, (unsigned long long)n);
        const size_t first = r->pos;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len = 0;
            left = r->g->size - r->pos;
            if (left < 8)
                return gguf__fail(r, GGUF_ERR_FORMAT, "%s string %llu of %llu: length truncated "
                                  "at offset %zu (file ends at %zu)", r->where,
                                  (unsigned long long)i, (unsigned long long)n, r->pos,
                                  r->g->size);
            memcpy(&len, r->g->base + r->pos, 8);
            if (len > left - 8)
                return gguf__fail(r, GGUF_ERR_FORMAT, "%s string %llu of %llu: length %llu "
                                  "exceeds remaining %zu bytes", r->where, (unsigned long long)i,
                                  (unsigned long long)n, (unsigned long long)len, left - 8);
            off[i] = r->pos - first;
            r->pos += 8 + (size_t)len;
        }
        out->v.arr.aux = off;
    } else if (et == GGUF_TYPE_ARRAY) {
        gguf_value *vals = gguf__alloc(r->g, (size_t)n, sizeof *vals);
        if (!vals) return gguf__fail(r, GGUF_ERR_NOMEM, "%s: no memory for %llu nested arrays",
                                     r->where, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = gguf__value(r, GGUF_TYPE_ARRAY, &vals[i], depth + 1))) return rc;
        out->v.arr.aux = vals;
    } else {
        r->pos += (size_t)(n * min);   /* bounded by the check above */
    }
    return GGUF_OK;
}

/* Reads a value of `type` at the cursor; depth = arrays already open around it. */
static int gguf__value(gguf__rd *r, gguf_vtype type, gguf_value *out, int depth) {
    const uint8_t *p = r->g->base + r->pos;
    int rc;
    memset(out, 0, sizeof *out);
    out->type = type;
    switch (type) {
    case GGUF_TYPE_STRING: return gguf__str(r, &out->v.str, "string value");
    case GGUF_TYPE_ARRAY: return gguf__array(r, out, depth);
    default: break;
    }
    if ((rc = gguf__need(r, gguf__vtype_size[type], gguf__vtype_names[type]))) return rc;
    r->pos += gguf__vtype_size[type];
    gguf__scalar(type, p, out);
    return GGUF_OK;
}

/* ---- name hashes ------------------------------------------------------------------------ */

static uint64_t gguf__fnv(const char *p, uint64_t n) {
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static int gguf__hash_init(gguf_ctx *g, gguf__hash *h, int64_t n) {
    uint64_t cap = 8;
    while (cap < 2 * (uint64_t)n) cap *= 2;
    h->slot = gguf__alloc(g, (size_t)cap, sizeof *h->slot);
    if (!h->slot) return GGUF_ERR_NOMEM;
    memset(h->slot, 0xff, (size_t)cap * sizeof *h->slot);
    h->mask = cap - 1;
    return GGUF_OK;
}

/* Slot of `name` in h: holding its index, or the empty slot where it belongs. `name_of` maps
 * an index to the name stored for it. */
static int64_t *gguf__hash_slot(const gguf_ctx *g, const gguf__hash *h, const char *p, uint64_t n,
                                gguf_str (*name_of)(const gguf_ctx *, int64_t)) {
    uint64_t i = gguf__fnv(p, n) & h->mask;
    for (;; i = (i + 1) & h->mask) {
        int64_t *s = &h->slot[i];
        if (*s < 0) return s;
        gguf_str k = name_of(g, *s);
        if (k.len == n && memcmp(k.ptr, p, (size_t)n) == 0) return s;
    }
}

static gguf_str gguf__kv_name(const gguf_ctx *g, int64_t i) { return g->kv[i].key; }
static gguf_str gguf__t_name(const gguf_ctx *g, int64_t i) { return g->tensors[i].name; }

/* ---- parsing ---------------------------------------------------------------------------- */

static int gguf__header(gguf__rd *r) {
    gguf_ctx *g = r->g;
    if (g->size < GGUF__HEADER)
        return gguf__fail(r, GGUF_ERR_FORMAT, "file is %zu bytes, shorter than the %d-byte "
                          "header", g->size, GGUF__HEADER);
    if (memcmp(g->base, "GGUF", 4) != 0)
        return gguf__fail(r, GGUF_ERR_FORMAT, "bad magic %02x %02x %02x %02x (expected 'GGUF'): "
                          "not a GGUF file", g->base[0], g->base[1], g->base[2], g->base[3]);
    uint64_t nt = 0, nkv = 0;
    r->pos = 4;
    gguf__u32(r, &g->version, "version");   /* the three reads cannot fail: size >= 24 */
    if (g->version == 1)
        return gguf__fail(r, GGUF_ERR_FORMAT, "version 1 is not supported (GGUF v1 has 32-bit "
                          "counts; re-convert the model to v3)");
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return gguf__fail(r, GGUF_ERR_FORMAT, "version field reads %u: a big-endian GGUF file, "
                          "not supported", g->version);
    if (g->version != 2 && g->version != 3)
        return gguf__fail(r, GGUF_ERR_FORMAT, "version %u is not supported (this reader handles "
                          "2 and 3)", g->version);
    gguf__u64(r, &nt, "n_tensors");
    gguf__u64(r, &nkv, "n_kv");
    size_t left = g->size - r->pos;
    if (nkv > left / GGUF__MIN_KV)
        return gguf__fail(r, GGUF_ERR_FORMAT, "header n_kv %llu exceeds remaining %zu bytes "
                          "(%d bytes per kv at least)", (unsigned long long)nkv, left,
                          GGUF__MIN_KV);
    if (nt > left / GGUF__MIN_TINFO || nkv * GGUF__MIN_KV + nt * GGUF__MIN_TINFO > left)
        return gguf__fail(r, GGUF_ERR_FORMAT, "header n_tensors %llu exceeds remaining %zu bytes "
                          "(%d bytes per tensor info at least, after %llu kvs)",
                          (unsigned long long)nt, left, GGUF__MIN_TINFO, (unsigned long long)nkv);
    g->n_tensors = (int64_t)nt;
    g->n_kv = (int64_t)nkv;
    g->kv = gguf__alloc(g, (size_t)nkv, sizeof *g->kv);
    g->tensors = gguf__alloc(g, (size_t)nt, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return gguf__fail(r, GGUF_ERR_NOMEM, "no memory for %llu kvs and %llu tensor infos",
                          (unsigned long long)nkv, (unsigned long long)nt);
    return GGUF_OK;
}

static int gguf__kvs(gguf__rd *r) {
    gguf_ctx *g = r->g;
    char e[300];
    int rc;
    if (gguf__hash_init(g, &g->kv_hash, g->n_kv))
        return gguf__fail(r, GGUF_ERR_NOMEM, "no memory for the key table");
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf__kv *kv = &g->kv[i];
        uint32_t type;
        snprintf(r->where, sizeof r->where, "kv %lld", (long long)i);
        if ((rc = gguf__str(r, &kv->key, "key"))) return rc;
        if ((rc = gguf__check_name(r, kv->key, "key"))) return rc;
        snprintf(r->where, sizeof r->where, "kv %lld ('%s')", (long long)i,
                 gguf__esc(kv->key, e, sizeof e));
        int64_t *slot = gguf__hash_slot(g, &g->kv_hash, kv->key.ptr, kv->key.len, gguf__kv_name);
        if (*slot >= 0)
            return gguf__fail(r, GGUF_ERR_FORMAT, "%s duplicates the key of kv %lld", r->where,
                              (long long)*slot);
        if ((rc = gguf__u32(r, &type, "value type"))) return rc;
        if (type >= GGUF_TYPE_COUNT)
            return gguf__fail(r, GGUF_ERR_FORMAT, "%s value type %u is not a GGUF type (0..%d)",
                              r->where, type, GGUF_TYPE_COUNT - 1);
        if ((rc = gguf__value(r, (gguf_vtype)type, &kv->val, 0))) return rc;
        *slot = i;   /* after the value: the key table only ever holds complete kvs */
    }
    r->where[0] = 0;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_value *a = gguf_get(g, "general.alignment");
    if (a && a->type != GGUF_TYPE_UINT32)
        return gguf__fail(r, GGUF_ERR_FORMAT, "general.alignment has type %s, expected uint32",
                          gguf_type_name(a->type));
    if (a && (a->v.u64 == 0 || (a->v.u64 & (a->v.u64 - 1)) != 0))
        return gguf__fail(r, GGUF_ERR_FORMAT, "general.alignment %llu is not a nonzero power "
                          "of two", (unsigned long long)a->v.u64);
    if (a) g->alignment = a->v.u64;
    return GGUF_OK;
}

static int gguf__tensor_info(gguf__rd *r, int64_t i) {
    gguf_ctx *g = r->g;
    gguf_tensor *t = &g->tensors[i];
    char e[300];
    uint32_t type;
    int rc;
    snprintf(r->where, sizeof r->where, "tensor %lld", (long long)i);
    if ((rc = gguf__str(r, &t->name, "name"))) return rc;
    if ((rc = gguf__check_name(r, t->name, "name"))) return rc;
    snprintf(r->where, sizeof r->where, "tensor '%s'", gguf__esc(t->name, e, sizeof e));
    int64_t *slot = gguf__hash_slot(g, &g->t_hash, t->name.ptr, t->name.len, gguf__t_name);
    if (*slot >= 0)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s (tensor %lld) duplicates the name of tensor %lld",
                          r->where, (long long)i, (long long)*slot);
    if ((rc = gguf__u32(r, &t->n_dims, "n_dims"))) return rc;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s n_dims %u is outside 1..%d", r->where,
                          t->n_dims, GGUF_MAX_DIMS);
    uint64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < t->n_dims && (rc = gguf__u64(r, &ne, "ne"))) return rc;
        if (ne == 0 || ne > (uint64_t)INT64_MAX)
            return gguf__fail(r, GGUF_ERR_FORMAT, "%s ne[%d] = %llu is outside 1..2^63-1",
                              r->where, d, (unsigned long long)ne);
        if (nel > (uint64_t)INT64_MAX / ne)
            return gguf__fail(r, GGUF_ERR_FORMAT, "%s element count overflows at ne[%d] = %llu",
                              r->where, d, (unsigned long long)ne);
        nel *= ne;
        t->ne[d] = (int64_t)ne;
    }
    if ((rc = gguf__u32(r, &type, "type"))) return rc;
    uint32_t blck, tsize;
    const char *tn = gguf_ttype_name((int)type);
    if (!tn)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s type id %u is not a known tensor type",
                          r->where, type);
    if (!gguf_ttype_block((int)type, &blck, &tsize))
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s has unsupported tensor type %s (%u)",
                          r->where, tn, type);
    t->type = (int)type;
    if (t->ne[0] % blck != 0)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s ne[0] = %lld is not a multiple of the %s block "
                          "size %u", r->where, (long long)t->ne[0], tn, blck);
    uint64_t blocks = nel / blck;
    if (blocks > UINT64_MAX / tsize)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s byte size overflows (%llu blocks of %u bytes)",
                          r->where, (unsigned long long)blocks, tsize);
    t->nbytes = blocks * tsize;
    if ((rc = gguf__u64(r, &t->offset, "offset"))) return rc;
    if (t->offset % g->alignment != 0)
        return gguf__fail(r, GGUF_ERR_FORMAT, "%s offset %llu is not a multiple of the alignment "
                          "%llu", r->where, (unsigned long long)t->offset,
                          (unsigned long long)g->alignment);
    *slot = i;
    return GGUF_OK;
}

static int gguf__cmp_off(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int gguf__tensors(gguf__rd *r) {
    gguf_ctx *g = r->g;
    char e1[300], e2[300];
    int rc;
    if (gguf__hash_init(g, &g->t_hash, g->n_tensors))
        return gguf__fail(r, GGUF_ERR_NOMEM, "no memory for the tensor table");
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((rc = gguf__tensor_info(r, i))) return rc;
    r->where[0] = 0;
    /* pos <= size, and alignment <= 2^31, so the sum cannot wrap */
    g->data_off = ((uint64_t)r->pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors == 0) return GGUF_OK;   /* a vocab-only file may end without padding */
    if (g->data_off > g->size)
        return gguf__fail(r, GGUF_ERR_FORMAT, "tensor data section starts at %llu past end of "
                          "file (%zu)", (unsigned long long)g->data_off, g->size);
    uint64_t room = g->size - g->data_off;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset > room || t->nbytes > room - t->offset) {
            if (t->offset > UINT64_MAX - g->data_off ||
                t->nbytes > UINT64_MAX - g->data_off - t->offset)
                return gguf__fail(r, GGUF_ERR_FORMAT, "tensor '%s' offset %llu + %llu bytes lies "
                                  "past end of file (%zu)", gguf__esc(t->name, e1, sizeof e1),
                                  (unsigned long long)t->offset,
                                  (unsigned long long)t->nbytes, g->size);
            return gguf__fail(r, GGUF_ERR_FORMAT, "tensor '%s' data ends at %llu past end of file "
                              "(%zu)", gguf__esc(t->name, e1, sizeof e1),
                              (unsigned long long)(g->data_off + t->offset + t->nbytes), g->size);
        }
        t->data = g->base + g->data_off + t->offset;
    }
    const gguf_tensor **by_off = malloc((size_t)g->n_tensors * sizeof *by_off);
    if (!by_off) return gguf__fail(r, GGUF_ERR_NOMEM, "no memory to sort tensors");
    for (int64_t i = 0; i < g->n_tensors; i++) by_off[i] = &g->tensors[i];
    qsort(by_off, (size_t)g->n_tensors, sizeof *by_off, gguf__cmp_off);
    rc = GGUF_OK;
    for (int64_t i = 0; i + 1 < g->n_tensors && rc == GGUF_OK; i++) {
        const gguf_tensor *a = by_off[i], *b = by_off[i + 1];
        if (a->offset + a->nbytes > b->offset)
            rc = gguf__fail(r, GGUF_ERR_FORMAT, "tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) "
                            "overlap", gguf__esc(a->name, e1, sizeof e1),
                            (unsigned long long)a->offset,
                            (unsigned long long)(a->offset + a->nbytes),
                            gguf__esc(b->name, e2, sizeof e2), (unsigned long long)b->offset,
                            (unsigned long long)(b->offset + b->nbytes));
    }
    free(by_off);
    return rc;
}

/* ---- open / close ----------------------------------------------------------------------- */

static int gguf__parse(gguf_ctx *g, gguf_ctx **out, char *err, size_t errlen) {
    gguf__rd r = {.g = g, .err = err, .errlen = errlen};
    int rc = gguf__header(&r);
    if (!rc) rc = gguf__kvs(&r);
    if (!rc) rc = gguf__tensors(&r);
    if (rc) {
        gguf_close(g);
        return rc;
    }
    *out = g;
    return GGUF_OK;
}

int gguf_open_buffer(const void *buf, size_t size, gguf_ctx **out, char *err, size_t errlen) {
    static const uint8_t empty[1];
    *out = NULL;
    gguf_ctx *g = calloc(1, sizeof *g);
    if (!g) {
        gguf__rd r = {.err = err, .errlen = errlen};
        return gguf__fail(&r, GGUF_ERR_NOMEM, "no memory for a context");
    }
    g->base = buf ? buf : empty;
    g->size = buf ? size : 0;
    return gguf__parse(g, out, err, errlen);
}

int gguf_open(const char *path, gguf_ctx **out, char *err, size_t errlen) {
    gguf__rd r = {.err = err, .errlen = errlen};
    struct stat st;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO must not block us */
    if (fd < 0) return gguf__fail(&r, GGUF_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    errno = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return gguf__fail(&r, GGUF_ERR_IO, "'%s' is not a regular file%s%s", path, e ? ": " : "",
                          e ? strerror(e) : "");
    }
    if (st.st_size == 0) {
        close(fd);
        return gguf_open_buffer(NULL, 0, out, err, errlen);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return gguf__fail(&r, GGUF_ERR_IO, "cannot map '%s' (%lld bytes): %s", path,
                          (long long)st.st_size, strerror(e));
    gguf_ctx *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, (size_t)st.st_size);
        return gguf__fail(&r, GGUF_ERR_NOMEM, "no memory for a context");
    }
    g->map = map;
    g->base = map;
    g->size = (size_t)st.st_size;
    return gguf__parse(g, out, err, errlen);
}

void gguf_close(gguf_ctx *g) {
    if (!g) return;
    while (g->blocks) {
        gguf__blk *b = g->blocks;
        g->blocks = b->next;
        free(b);
    }
    if (g->map) munmap(g->map, g->size);
    free(g);
}

/* ---- accessors -------------------------------------------------------------------------- */

uint32_t gguf_version(const gguf_ctx *g) { return g->version; }
uint64_t gguf_alignment(const gguf_ctx *g) { return g->alignment; }
uint64_t gguf_data_offset(const gguf_ctx *g) { return g->data_off; }
size_t gguf_file_size(const gguf_ctx *g) { return g->size; }
const uint8_t *gguf_base(const gguf_ctx *g) { return g->base; }
int64_t gguf_n_kv(const gguf_ctx *g) { return g->n_kv; }
int64_t gguf_n_tensors(const gguf_ctx *g) { return g->n_tensors; }

gguf_str gguf_kv_key(const gguf_ctx *g, int64_t i) {
    gguf_str none = {NULL, 0};
    return i >= 0 && i < g->n_kv ? g->kv[i].key : none;
}

const gguf_value *gguf_kv_value(const gguf_ctx *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kv[i].val : NULL;
}

int64_t gguf_find_key(const gguf_ctx *g, const char *key) {
    if (!g->kv_hash.slot) return -1;
    return *gguf__hash_slot(g, &g->kv_hash, key, strlen(key), gguf__kv_name);
}

const gguf_value *gguf_get(const gguf_ctx *g, const char *key) {
    return gguf_kv_value(g, gguf_find_key(g, key));
}

const gguf_tensor *gguf_tensor_at(const gguf_ctx *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_ctx *g, const char *name) {
    if (!g->t_hash.slot) return NULL;
    return gguf_tensor_at(g, *gguf__hash_slot(g, &g->t_hash, name, strlen(name), gguf__t_name));
}

int gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

static int gguf__is_int(gguf_vtype t) {
    return t <= GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}
static int gguf__is_signed(gguf_vtype t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

int gguf_get_u32(const gguf_ctx *g, const char *key, uint32_t *out, char *err, size_t errlen) {
    gguf__rd r = {.err = err, .errlen = errlen};
    const gguf_value *v = gguf_get(g, key);
    if (!v) return GGUF_ERR_NOTFOUND;
    if (!gguf__is_int(v->type))
        return gguf__fail(&r, GGUF_ERR_TYPE, "key '%s' has type %s, expected an integer", key,
                          gguf_type_name(v->type));
    if (gguf__is_signed(v->type) ? v->v.i64 < 0 || v->v.i64 > (int64_t)UINT32_MAX
                                 : v->v.u64 > UINT32_MAX) {
        char num[32];
        if (gguf__is_signed(v->type)) snprintf(num, sizeof num, "%lld", (long long)v->v.i64);
        else snprintf(num, sizeof num, "%llu", (unsigned long long)v->v.u64);
        return gguf__fail(&r, GGUF_ERR_TYPE, "key '%s' value %s (%s) does not fit uint32", key,
                          num, gguf_type_name(v->type));
    }
    *out = gguf__is_signed(v->type) ? (uint32_t)v->v.i64 : (uint32_t)v->v.u64;
    return GGUF_OK;
}

int gguf_get_f32(const gguf_ctx *g, const char *key, float *out, char *err, size_t errlen) {
    gguf__rd r = {.err = err, .errlen = errlen};
    const gguf_value *v = gguf_get(g, key);
    if (!v) return GGUF_ERR_NOTFOUND;
    if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64) {
        if (isfinite(v->v.f64) && fabs(v->v.f64) > FLT_MAX)
            return gguf__fail(&r, GGUF_ERR_TYPE, "key '%s' value %g does not fit float32", key,
                              v->v.f64);
        *out = (float)v->v.f64;
    } else if (gguf__is_int(v->type)) {
        *out = gguf__is_signed(v->type) ? (float)v->v.i64 : (float)v->v.u64;
    } else {
        return gguf__fail(&r, GGUF_ERR_TYPE, "key '%s' has type %s, expected float32", key,
                          gguf_type_name(v->type));
    }
    return GGUF_OK;
}

int gguf_get_str(const gguf_ctx *g, const char *key, gguf_str *out, char *err, size_t errlen) {
    const gguf_value *v = gguf_get(g, key);
    if (!v) return GGUF_ERR_NOTFOUND;
    if (v->type != GGUF_TYPE_STRING) {
        gguf__rd r = {.err = err, .errlen = errlen};
        return gguf__fail(&r, GGUF_ERR_TYPE, "key '%s' has type %s, expected string", key,
                          gguf_type_name(v->type));
    }
    *out = v->v.str;
    return GGUF_OK;
}

static int gguf__arr_ok(const gguf_value *a, uint64_t i) {
    return a && a->type == GGUF_TYPE_ARRAY && i < a->v.arr.n;
}

gguf_str gguf_arr_str(const gguf_value *arr, uint64_t i) {
    gguf_str s = {NULL, 0};
    if (!gguf__arr_ok(arr, i) || arr->v.arr.elem_type != GGUF_TYPE_STRING) return s;
    const uint8_t *p = arr->v.arr.data;
    if (arr->v.arr.aux) {
        p += ((const uint64_t *)arr->v.arr.aux)[i];
    } else {   /* a value not made by the reader: walk (its strings are trusted) */
        for (uint64_t k = 0; k < i; k++) {
            memcpy(&s.len, p, 8);
            p += 8 + s.len;
        }
    }
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

/* Element i of a numeric array decoded into *e; 0 if there is none. */
static int gguf__elem(const gguf_value *arr, uint64_t i, gguf_value *e) {
    if (!gguf__arr_ok(arr, i)) return 0;
    e->type = arr->v.arr.elem_type;
    if (e->type == GGUF_TYPE_STRING || e->type == GGUF_TYPE_ARRAY) return 0;
    gguf__scalar(e->type, arr->v.arr.data + i * gguf__vtype_size[e->type], e);
    return 1;
}

double gguf_arr_f64(const gguf_value *arr, uint64_t i) {
    gguf_value e;
    if (!gguf__elem(arr, i, &e)) return NAN;
    if (e.type == GGUF_TYPE_FLOAT32 || e.type == GGUF_TYPE_FLOAT64) return e.v.f64;
    if (e.type == GGUF_TYPE_BOOL) return e.v.b;
    return gguf__is_signed(e.type) ? (double)e.v.i64 : (double)e.v.u64;
}

int64_t gguf_arr_i64(const gguf_value *arr, uint64_t i) {
    gguf_value e;
    if (!gguf__elem(arr, i, &e)) return 0;
    if (e.type == GGUF_TYPE_FLOAT32 || e.type == GGUF_TYPE_FLOAT64)
        return isfinite(e.v.f64) && fabs(e.v.f64) < 9.2e18 ? (int64_t)e.v.f64 : 0;
    if (e.type == GGUF_TYPE_BOOL) return e.v.b;
    if (gguf__is_signed(e.type)) return e.v.i64;
    return e.v.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)e.v.u64;
}

const gguf_value *gguf_arr_nested(const gguf_value *arr, uint64_t i) {
    if (!gguf__arr_ok(arr, i) || arr->v.arr.elem_type != GGUF_TYPE_ARRAY || !arr->v.arr.aux)
        return NULL;
    return &((const gguf_value *)arr->v.arr.aux)[i];
}
