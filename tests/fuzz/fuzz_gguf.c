/* tests/fuzz/fuzz_gguf.c — libFuzzer harness for the GGUF reader.
 *
 * Each input is opened with gguf_open_buffer over an exact-size copy (so ASan sees any read past
 * the end); on success everything a consumer can reach is walked: every kv through the typed
 * getters, every array element (strings, numbers, nested arrays to the bottom), every tensor's
 * first and last byte, and every name looked up again through the hashes. Invariants the reader
 * promises are checked with abort(): tensors lie inside the buffer, aligned, 1 <= n_dims <= 4,
 * ne >= 1, and lookups find what was iterated. A failed open must leave *out NULL and give a
 * one-line message starting "gguf: ".
 */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile uint64_t sink;

#define REQUIRE(c)                                                                            \
    do {                                                                                      \
        if (!(c)) {                                                                           \
            fprintf(stderr, "fuzz_gguf: invariant failed: %s (line %d)\n", #c, __LINE__);    \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

static void walk(const gguf_value *v, int depth) {
    REQUIRE(depth <= 16);
    if (v->type == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < v->v.str.len; i++) sink += (uint8_t)v->v.str.ptr[i];
        return;
    }
    if (v->type != GGUF_TYPE_ARRAY) {
        sink += v->v.u64;
        return;
    }
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        switch (v->v.arr.elem_type) {
        case GGUF_TYPE_STRING: {
            gguf_str s = gguf_arr_str(v, i);
            REQUIRE(s.ptr != NULL);
            if (s.len) sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
            break;
        }
        case GGUF_TYPE_ARRAY: {
            const gguf_value *e = gguf_arr_nested(v, i);
            REQUIRE(e != NULL && e->type == GGUF_TYPE_ARRAY);
            walk(e, depth + 1);
            break;
        }
        default: {
            double d = gguf_arr_f64(v, i);
            uint64_t bits;
            memcpy(&bits, &d, sizeof bits);
            sink += (uint64_t)gguf_arr_i64(v, i) + bits;
        }
        }
    }
    REQUIRE(gguf_arr_nested(v, v->v.arr.n) == NULL && gguf_arr_str(v, v->v.arr.n).ptr == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    gguf_ctx *g = (gguf_ctx *)1;
    char err[512] = "";
    int rc = gguf_open_buffer(buf, size, &g, err, sizeof err);
    if (rc != GGUF_OK) {
        REQUIRE(g == NULL && rc < 0 && strncmp(err, "gguf: ", 6) == 0 && !strchr(err, '\n'));
        free(buf);
        return 0;
    }
    char name[4096], msg[256];
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_str k = gguf_kv_key(g, i);
        const gguf_value *v = gguf_kv_value(g, i);
        REQUIRE(k.ptr && v && k.len > 0);
        walk(v, 0);
        if (k.len < sizeof name) {
            memcpy(name, k.ptr, (size_t)k.len);
            name[k.len] = 0;
            REQUIRE(gguf_find_key(g, name) == i && gguf_get(g, name) == v);
            uint32_t u;
            float f;
            gguf_str s;
            sink += (uint64_t)gguf_get_u32(g, name, &u, msg, sizeof msg);
            sink += (uint64_t)gguf_get_f32(g, name, &f, msg, sizeof msg);
            sink += (uint64_t)gguf_get_str(g, name, &s, msg, sizeof msg);
        }
    }
    const uint8_t *base = gguf_base(g), *end = base + gguf_file_size(g);
    uint64_t align = gguf_alignment(g);
    REQUIRE(align && (align & (align - 1)) == 0);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const uint8_t *d = t->data;
        REQUIRE(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS && t->nbytes > 0);
        for (int k = 0; k < GGUF_MAX_DIMS; k++) REQUIRE(t->ne[k] >= 1);
        REQUIRE(d >= base && t->nbytes <= (uint64_t)(end - d) && t->offset % align == 0);
        REQUIRE(gguf_ttype_block(t->type, NULL, NULL));
        sink += d[0] + d[t->nbytes - 1];
        if (t->name.len < sizeof name) {
            memcpy(name, t->name.ptr, (size_t)t->name.len);
            name[t->name.len] = 0;
            REQUIRE(gguf_find_tensor(g, name) == t);
        }
    }
    gguf_close(g);
    free(buf);
    return 0;
}
