/* runtime/gguf_write.c — the GGUF v3 writer (gguf_writer_*, declared in gguf.h).
 *
 * Life cycle: gguf_writer_new -> set_* / copy_kv / add_tensor -> gguf_writer_write -> free.
 * Each kv's value is serialised into its own byte buffer when it is set (a repeated key replaces
 * the buffer in place, so insertion order is kept); tensors are borrowed pointers. Setters cannot
 * fail visibly: the first invalid call or allocation failure is remembered and returned by
 * gguf_writer_write before the file is created. I/O errors (cannot create, short write, disk full
 * found at fclose) come back as GGUF_ERR_IO naming the path, the offset and errno's text; a
 * failed write may leave a partial file, which the reader refuses as truncated.
 *
 * Output: header, kvs, tensor infos, zero padding to the alignment, then each tensor's data at
 * its aligned offset (nothing after the last tensor).
 */
#include "gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint8_t *p; size_t n, cap; int oom; } gw_buf;

typedef struct { char *key; gguf_vtype type; gw_buf val; } gw_kv;

typedef struct {
    char *name;
    int type, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes, offset;
} gw_tensor;

struct gguf_writer {
    gw_kv *kv;
    size_t n_kv, cap_kv;
    gw_tensor *t;
    size_t n_t, cap_t;
    int failed;         /* GGUF_OK or the code of the first failure, with `msg` */
    char msg[256];
};

static void gw__fail(gguf_writer *w, int code, const char *fmt, ...) {
    if (w->failed) return;
    w->failed = code;
    int k = snprintf(w->msg, sizeof w->msg, "gguf: writer: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->msg + k, sizeof w->msg - (size_t)k, fmt, ap);
    va_end(ap);
}

static void gw__put(gw_buf *b, const void *src, size_t n) {
    if (b->oom || n == 0) return;
    if (n > SIZE_MAX / 2 - b->n) { b->oom = 1; return; }
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void gw__u32(gw_buf *b, uint32_t v) { gw__put(b, &v, 4); }
static void gw__u64(gw_buf *b, uint64_t v) { gw__put(b, &v, 8); }
static void gw__str(gw_buf *b, const char *s, uint64_t n) {
    gw__u64(b, n);
    gw__put(b, s, (size_t)n);
}

static size_t gw__scalar_size(gguf_vtype t) {
    static const uint8_t sz[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < GGUF_TYPE_COUNT ? sz[t] : 0;
}

gguf_writer *gguf_writer_new(void) { return calloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* Installs `val` (ownership taken) under key, replacing an earlier value of the same key. */
static void gw__set(gguf_writer *w, const char *key, size_t keylen, gguf_vtype type, gw_buf val) {
    if (val.oom) {
        free(val.p);
        gw__fail(w, GGUF_ERR_NOMEM, "no memory for the value of '%.*s'", (int)keylen, key);
        return;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strlen(w->kv[i].key) == keylen && memcmp(w->kv[i].key, key, keylen) == 0) {
            free(w->kv[i].val.p);
            w->kv[i].type = type;
            w->kv[i].val = val;
            return;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        gw_kv *kv = realloc(w->kv, cap * sizeof *kv);
        if (kv) {
            w->kv = kv;
            w->cap_kv = cap;
        }
    }
    char *k = w->n_kv < w->cap_kv ? malloc(keylen + 1) : NULL;
    if (!k) {
        free(val.p);
        gw__fail(w, GGUF_ERR_NOMEM, "no memory for key '%.*s'", (int)keylen, key);
        return;
    }
    memcpy(k, key, keylen);
    k[keylen] = 0;
    w->kv[w->n_kv++] = (gw_kv){k, type, val};
}

static int gw__key_ok(gguf_writer *w, const char *key) {
    if (!w) return 0;
    if (!key || !*key) {
        gw__fail(w, GGUF_ERR_FORMAT, "empty or NULL key");
        return 0;
    }
    return 1;
}

static void gw__set_scalar(gguf_writer *w, const char *key, gguf_vtype t, const void *v) {
    if (!gw__key_ok(w, key)) return;
    gw_buf b = {0};
    gw__put(&b, v, gw__scalar_size(t));
    gw__set(w, key, strlen(key), t, b);
}

void gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    gw__set_scalar(w, key, GGUF_TYPE_UINT32, &v);
}
void gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
    gw__set_scalar(w, key, GGUF_TYPE_INT32, &v);
}
void gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    gw__set_scalar(w, key, GGUF_TYPE_UINT64, &v);
}
void gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
    gw__set_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}
void gguf_writer_set_bool(gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    gw__set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

void gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    if (!gw__key_ok(w, key)) return;
    gw_buf b = {0};
    gw__str(&b, v ? v : "", v ? strlen(v) : 0);
    gw__set(w, key, strlen(key), GGUF_TYPE_STRING, b);
}

void gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data,
                         uint64_t n) {
    if (!gw__key_ok(w, key)) return;
    size_t es = gw__scalar_size(elem_type);
    if (es == 0 || (n && !data) || n > SIZE_MAX / es) {
        gw__fail(w, GGUF_ERR_FORMAT, "array '%s': element type %d with %llu elements is not a "
                 "numeric array", key, (int)elem_type, (unsigned long long)n);
        return;
    }
    gw_buf b = {0};
    gw__u32(&b, elem_type);
    gw__u64(&b, n);
    gw__put(&b, data, (size_t)n * es);
    gw__set(w, key, strlen(key), GGUF_TYPE_ARRAY, b);
}

void gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    if (!gw__key_ok(w, key)) return;
    gw_buf b = {0};
    gw__u32(&b, GGUF_TYPE_STRING);
    gw__u64(&b, n);
    for (uint64_t i = 0; i < n; i++) gw__str(&b, v[i] ? v[i] : "", v[i] ? strlen(v[i]) : 0);
    gw__set(w, key, strlen(key), GGUF_TYPE_ARRAY, b);
}

/* Serialises a value read by gguf.c back to its on-disk bytes (type id excluded). */
static void gw__value(gw_buf *b, const gguf_value *v) {
    uint8_t u8; uint16_t u16; uint32_t u32; float f32;
    switch (v->type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: u8 = (uint8_t)v->v.u64; gw__put(b, &u8, 1); break;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
        u16 = (uint16_t)v->v.u64; gw__put(b, &u16, 2); break;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32:
        u32 = (uint32_t)v->v.u64; gw__put(b, &u32, 4); break;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: gw__put(b, &v->v.u64, 8); break;
    case GGUF_TYPE_FLOAT32: f32 = (float)v->v.f64; gw__put(b, &f32, 4); break;
    case GGUF_TYPE_FLOAT64: gw__put(b, &v->v.f64, 8); break;
    case GGUF_TYPE_BOOL: u8 = v->v.b != 0; gw__put(b, &u8, 1); break;
    case GGUF_TYPE_STRING: gw__str(b, v->v.str.ptr, v->v.str.len); break;
    case GGUF_TYPE_ARRAY: {
        gguf_vtype et = v->v.arr.elem_type;
        uint64_t n = v->v.arr.n;
        gw__u32(b, et);
        gw__u64(b, n);
        if (et == GGUF_TYPE_STRING) {
            for (uint64_t i = 0; i < n; i++) {
                gguf_str s = gguf_arr_str(v, i);
                gw__str(b, s.ptr, s.len);
            }
        } else if (et == GGUF_TYPE_ARRAY) {
            for (uint64_t i = 0; i < n; i++) {
                const gguf_value *e = gguf_arr_nested(v, i);
                if (e) gw__value(b, e);
                else b->oom = 1;
            }
        } else {
            gw__put(b, v->v.arr.data, (size_t)(n * gw__scalar_size(et)));   /* checked at open */
        }
        break;
    }
    default: b->oom = 1; break;
    }
}

void gguf_writer_copy_kv(gguf_writer *w, const gguf_ctx *src, int64_t i) {
    if (!w) return;
    gguf_str key = gguf_kv_key(src, i);
    const gguf_value *v = gguf_kv_value(src, i);
    if (!v) {
        gw__fail(w, GGUF_ERR_NOTFOUND, "copy_kv: kv %lld is out of range (file has %lld)",
                 (long long)i, (long long)gguf_n_kv(src));
        return;
    }
    gw_buf b = {0};
    gw__value(&b, v);
    gw__set(w, key.ptr, (size_t)key.len, v->type, b);
}

void gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, int n_dims,
                            const int64_t *ne, const void *data, uint64_t nbytes) {
    if (!w) return;
    uint32_t blck, tsize;
    const char *tn = gguf_ttype_name(type);
    if (!name || !*name) { gw__fail(w, GGUF_ERR_FORMAT, "tensor with an empty name"); return; }
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
        gw__fail(w, GGUF_ERR_FORMAT, "tensor '%s' n_dims %d is outside 1..%d", name, n_dims,
                 GGUF_MAX_DIMS);
        return;
    }
    if (!gguf_ttype_block(type, &blck, &tsize)) {
        gw__fail(w, GGUF_ERR_FORMAT, "tensor '%s' has unsupported type %s (%d)", name,
                 tn ? tn : "unknown", type);
        return;
    }
    uint64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || nel > (uint64_t)INT64_MAX / (uint64_t)ne[d]) {
            gw__fail(w, GGUF_ERR_FORMAT, "tensor '%s' ne[%d] = %lld is invalid", name, d,
                     (long long)ne[d]);
            return;
        }
        nel *= (uint64_t)ne[d];
    }
    if (ne[0] % blck != 0 || nel / blck * tsize != nbytes || (nbytes && !data)) {
        gw__fail(w, GGUF_ERR_FORMAT, "tensor '%s' (%s, ne[0] = %lld, %llu elements) needs %llu "
                 "bytes, got %llu", name, tn, (long long)ne[0], (unsigned long long)nel,
                 (unsigned long long)(nel / blck * tsize), (unsigned long long)nbytes);
        return;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            gw__fail(w, GGUF_ERR_FORMAT, "tensor '%s' added twice", name);
            return;
        }
    }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        gw_tensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) { gw__fail(w, GGUF_ERR_NOMEM, "no memory for tensor '%s'", name); return; }
        w->t = t;
        w->cap_t = cap;
    }
    gw_tensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) {
        gw__fail(w, GGUF_ERR_NOMEM, "no memory for tensor '%s'", name);
        return;
    }
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->data = data;
    t->nbytes = nbytes;
    w->n_t++;
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct { FILE *f; const char *path; uint64_t off; int err; } gw_out;

static void gw__emit(gw_out *o, const void *p, size_t n) {
    if (o->err || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) o->err = errno ? errno : EIO;
    else o->off += n;
}

static void gw__pad(gw_out *o, uint64_t align) {
    static const uint8_t zeros[256];
    while (!o->err && o->off % align) {
        uint64_t k = align - o->off % align;
        gw__emit(o, zeros, k < sizeof zeros ? (size_t)k : sizeof zeros);
    }
}

static int gw__alignment(gguf_writer *w, uint64_t *align, char *err, size_t errlen) {
    *align = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        uint32_t a = 0;
        if (w->kv[i].type == GGUF_TYPE_UINT32) memcpy(&a, w->kv[i].val.p, 4);
        if (a == 0 || (a & (a - 1)) != 0) {
            snprintf(err, errlen, "gguf: writer: general.alignment must be a uint32 power of two "
                     "(type %s, value %u)", gguf_type_name(w->kv[i].type), a);
            return GGUF_ERR_FORMAT;
        }
        *align = a;
    }
    return GGUF_OK;
}

int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen) {
    char dummy[8];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    if (!w) {
        snprintf(err, errlen, "gguf: writer: no writer (allocation failed)");
        return GGUF_ERR_NOMEM;
    }
    if (w->failed) {
        snprintf(err, errlen, "%s", w->msg);
        return w->failed;
    }
    uint64_t align;
    int rc = gw__alignment(w, &align, err, errlen);
    if (rc) return rc;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        off = (off + align - 1) / align * align;
        w->t[i].offset = off;
        off += w->t[i].nbytes;
    }

    gw_out o = {.path = path};
    errno = 0;
    o.f = fopen(path, "wb");
    if (!o.f) {
        snprintf(err, errlen, "gguf: cannot create '%s': %s", path, strerror(errno));
        return GGUF_ERR_IO;
    }
    gw_buf h = {0};
    gw__put(&h, "GGUF", 4);
    gw__u32(&h, 3);
    gw__u64(&h, w->n_t);
    gw__u64(&h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        gw__str(&h, w->kv[i].key, strlen(w->kv[i].key));
        gw__u32(&h, w->kv[i].type);
        gw__put(&h, w->kv[i].val.p, w->kv[i].val.n);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const gw_tensor *t = &w->t[i];
        gw__str(&h, t->name, strlen(t->name));
        gw__u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) gw__u64(&h, (uint64_t)t->ne[d]);
        gw__u32(&h, (uint32_t)t->type);
        gw__u64(&h, t->offset);
    }
    if (h.oom) {
        fclose(o.f);
        free(h.p);
        snprintf(err, errlen, "gguf: writer: no memory for the header of '%s'", path);
        return GGUF_ERR_NOMEM;
    }
    uint64_t total = w->n_t ? (h.n + align - 1) / align * align + off : h.n;
    errno = 0;
    gw__emit(&o, h.p, h.n);
    free(h.p);
    if (w->n_t) gw__pad(&o, align);
    for (size_t i = 0; i < w->n_t && !o.err; i++) {
        gw__pad(&o, align);   /* offsets were laid out aligned, so this reaches t->offset */
        gw__emit(&o, w->t[i].data, (size_t)w->t[i].nbytes);
    }
    if (!o.err && fflush(o.f) != 0) o.err = errno ? errno : EIO;
    if (fclose(o.f) != 0 && !o.err) o.err = errno ? errno : EIO;
    if (o.err) {
        snprintf(err, errlen, "gguf: writing '%s' (%llu bytes) failed: %s", path,
                 (unsigned long long)total, strerror(o.err));
        return GGUF_ERR_IO;
    }
    return GGUF_OK;
}
