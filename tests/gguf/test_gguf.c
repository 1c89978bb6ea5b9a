/* tests/gguf/test_gguf.c — the GGUF reader and writer against independent expectations.
 *
 *   test_gguf unit     values built by hand (a byte-level GGUF made here, not by gguf_write.c)
 *                      read back; the writer's output checked byte-wise and through the reader;
 *                      v2/v1/v4 version patches; every truncation of a written file refused; every
 *                      single-byte corruption refused or accepted without a crash, with a one-line
 *                      "gguf: " message; writer I/O and validation errors.
 *   test_gguf shared   every model and vocabulary in $SAMPAN_SHARED opens, and the facts stated in
 *                      $SAMPAN_SHARED/README.md, reference/vocab/README.md and
 *                      reference/dequant/index.json hold; stories260K's tensor bytes equal the
 *                      llama2.c checkpoint it was converted from.
 * Prints "N passed, N failed"; exit 0 only if nothing failed; 77 if the shared data is absent.
 */
#include "gguf.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int n_pass, n_fail;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (cond) {                                                                           \
            n_pass++;                                                                         \
        } else {                                                                              \
            n_fail++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                              \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)

/* ---- a hand-made GGUF, byte by byte --------------------------------------------------- */

typedef struct { uint8_t *p; size_t n, cap; } rb;

static void rb_put(rb *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void rb_u32(rb *b, uint32_t v) { rb_put(b, &v, 4); }
static void rb_u64(rb *b, uint64_t v) { rb_put(b, &v, 8); }
static void rb_str(rb *b, const char *s) { rb_u64(b, strlen(s)); rb_put(b, s, strlen(s)); }
static void rb_key(rb *b, const char *k, gguf_vtype t) { rb_str(b, k); rb_u32(b, t); }
static void rb_arr(rb *b, gguf_vtype et, uint64_t n) { rb_u32(b, et); rb_u64(b, n); }

/* One scalar per type and one array per element type; kept in a table so tests can loop. */
static const uint8_t v_u8 = 200;
static const int8_t v_i8 = -100;
static const uint16_t v_u16 = 60000;
static const int16_t v_i16 = -30000;
static const uint32_t v_u32 = 4000000000u;
static const int32_t v_i32 = -2000000000;
static const float v_f32 = 1.5f;
static const uint64_t v_u64 = 0x8000000000000005ull;
static const int64_t v_i64 = -4611686018427387904ll;
static const double v_f64 = 3.141592653589793;
static const char *const v_str = "h\xc3\xa9llo w\xc3\xb6rld";
static const char *const v_strs[] = {"a", "", "ccc", "\xe6\x97\xa5\xe6\x9c\xac"};

/* element values of the numeric arrays, as doubles; arrays have 3 elements of each type */
static const double arr_vals[GGUF_TYPE_COUNT][3] = {
    [GGUF_TYPE_UINT8] = {0, 255, 7},          [GGUF_TYPE_INT8] = {-128, 127, -1},
    [GGUF_TYPE_UINT16] = {65535, 0, 300},     [GGUF_TYPE_INT16] = {-32768, 32767, 2},
    [GGUF_TYPE_UINT32] = {4294967295.0, 1, 0}, [GGUF_TYPE_INT32] = {-2147483648.0, 5, -6},
    [GGUF_TYPE_FLOAT32] = {0.25, -3.5, 1e30}, [GGUF_TYPE_BOOL] = {1, 0, 1},
    [GGUF_TYPE_UINT64] = {9007199254740992.0, 3, 0},
    [GGUF_TYPE_INT64] = {-9007199254740992.0, 4, 5},
    [GGUF_TYPE_FLOAT64] = {0.1, -2.25, 1e300},
};

static int is_num(int t) { return t != GGUF_TYPE_STRING && t != GGUF_TYPE_ARRAY; }

static void rb_elem(rb *b, gguf_vtype t, double d) {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f;
    uint64_t u64; int64_t i64;
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_BOOL: u8 = (uint8_t)d; rb_put(b, &u8, 1); break;
    case GGUF_TYPE_INT8: i8 = (int8_t)d; rb_put(b, &i8, 1); break;
    case GGUF_TYPE_UINT16: u16 = (uint16_t)d; rb_put(b, &u16, 2); break;
    case GGUF_TYPE_INT16: i16 = (int16_t)d; rb_put(b, &i16, 2); break;
    case GGUF_TYPE_UINT32: u32 = (uint32_t)d; rb_put(b, &u32, 4); break;
    case GGUF_TYPE_INT32: i32 = (int32_t)d; rb_put(b, &i32, 4); break;
    case GGUF_TYPE_FLOAT32: f = (float)d; rb_put(b, &f, 4); break;
    case GGUF_TYPE_UINT64: u64 = (uint64_t)d; rb_put(b, &u64, 8); break;
    case GGUF_TYPE_INT64: i64 = (int64_t)d; rb_put(b, &i64, 8); break;
    default: rb_put(b, &d, 8); break;
    }
}

#define N_RAW_KV (13 + 11 + 7)

/* A GGUF v3 with N_RAW_KV kvs and no tensors: every scalar type, every numeric array type,
 * a string array with an empty string, empty arrays and nested arrays up to three levels. */
static rb build_raw(void) {
    rb b = {0};
    rb_put(&b, "GGUF", 4);
    rb_u32(&b, 3);
    rb_u64(&b, 0);
    rb_u64(&b, N_RAW_KV);
    rb_key(&b, "t.u8", GGUF_TYPE_UINT8); rb_put(&b, &v_u8, 1);
    rb_key(&b, "t.i8", GGUF_TYPE_INT8); rb_put(&b, &v_i8, 1);
    rb_key(&b, "t.u16", GGUF_TYPE_UINT16); rb_put(&b, &v_u16, 2);
    rb_key(&b, "t.i16", GGUF_TYPE_INT16); rb_put(&b, &v_i16, 2);
    rb_key(&b, "t.u32", GGUF_TYPE_UINT32); rb_put(&b, &v_u32, 4);
    rb_key(&b, "t.i32", GGUF_TYPE_INT32); rb_put(&b, &v_i32, 4);
    rb_key(&b, "t.f32", GGUF_TYPE_FLOAT32); rb_put(&b, &v_f32, 4);
    rb_key(&b, "t.bool", GGUF_TYPE_BOOL); rb_put(&b, "\x01", 1);
    rb_key(&b, "t.str", GGUF_TYPE_STRING); rb_str(&b, v_str);
    rb_key(&b, "t.str_empty", GGUF_TYPE_STRING); rb_str(&b, "");
    rb_key(&b, "t.u64", GGUF_TYPE_UINT64); rb_put(&b, &v_u64, 8);
    rb_key(&b, "t.i64", GGUF_TYPE_INT64); rb_put(&b, &v_i64, 8);
    rb_key(&b, "t.f64", GGUF_TYPE_FLOAT64); rb_put(&b, &v_f64, 8);
    for (int t = 0; t < GGUF_TYPE_COUNT; t++) {
        if (!is_num(t)) continue;
        char key[64];
        snprintf(key, sizeof key, "t.arr.%s", gguf_type_name((gguf_vtype)t));
        rb_key(&b, key, GGUF_TYPE_ARRAY);
        rb_arr(&b, (gguf_vtype)t, 3);
        for (int i = 0; i < 3; i++) rb_elem(&b, (gguf_vtype)t, arr_vals[t][i]);
    }
    rb_key(&b, "t.arr_str", GGUF_TYPE_ARRAY);
    rb_arr(&b, GGUF_TYPE_STRING, 4);
    for (int i = 0; i < 4; i++) rb_str(&b, v_strs[i]);
    rb_key(&b, "t.arr_u8_empty", GGUF_TYPE_ARRAY); rb_arr(&b, GGUF_TYPE_UINT8, 0);
    rb_key(&b, "t.arr_str_empty", GGUF_TYPE_ARRAY); rb_arr(&b, GGUF_TYPE_STRING, 0);
    rb_key(&b, "t.arr_arr_empty", GGUF_TYPE_ARRAY); rb_arr(&b, GGUF_TYPE_ARRAY, 0);
    /* [["x", "yz"], [], ["", "w"]] */
    rb_key(&b, "t.nested_str", GGUF_TYPE_ARRAY);
    rb_arr(&b, GGUF_TYPE_ARRAY, 3);
    rb_arr(&b, GGUF_TYPE_STRING, 2); rb_str(&b, "x"); rb_str(&b, "yz");
    rb_arr(&b, GGUF_TYPE_STRING, 0);
    rb_arr(&b, GGUF_TYPE_STRING, 2); rb_str(&b, ""); rb_str(&b, "w");
    /* [[[1, 2], [3]], [[]]] of int32 */
    rb_key(&b, "t.nested3", GGUF_TYPE_ARRAY);
    rb_arr(&b, GGUF_TYPE_ARRAY, 2);
    rb_arr(&b, GGUF_TYPE_ARRAY, 2);
    rb_arr(&b, GGUF_TYPE_INT32, 2);
    rb_elem(&b, GGUF_TYPE_INT32, 1);
    rb_elem(&b, GGUF_TYPE_INT32, 2);
    rb_arr(&b, GGUF_TYPE_INT32, 1); rb_elem(&b, GGUF_TYPE_INT32, 3);
    rb_arr(&b, GGUF_TYPE_ARRAY, 1);
    rb_arr(&b, GGUF_TYPE_INT32, 0);
    /* [[1.25], ["m"]]: nested arrays of different element types */
    rb_key(&b, "t.nested_mixed", GGUF_TYPE_ARRAY);
    rb_arr(&b, GGUF_TYPE_ARRAY, 2);
    rb_arr(&b, GGUF_TYPE_FLOAT32, 1); rb_elem(&b, GGUF_TYPE_FLOAT32, 1.25);
    rb_arr(&b, GGUF_TYPE_STRING, 1); rb_str(&b, "m");
    return b;
}

static int str_is(gguf_str s, const char *c) { return s.ptr && gguf_str_eq(s, c); }

static const gguf_value *get_typed(const gguf_ctx *g, const char *key, gguf_vtype t) {
    const gguf_value *v = gguf_get(g, key);
    CHECK(v && v->type == t, "%s: missing or type %s, want %s", key,
          v ? gguf_type_name(v->type) : "-", gguf_type_name(t));
    return v && v->type == t ? v : NULL;
}

static void check_arr_str(const gguf_value *a, const char *const *want, uint64_t n,
                          const char *what) {
    CHECK(a && a->v.arr.elem_type == GGUF_TYPE_STRING && a->v.arr.n == n,
          "%s: string array of %llu", what, (unsigned long long)n);
    if (!a || a->v.arr.elem_type != GGUF_TYPE_STRING || a->v.arr.n != n) return;
    for (uint64_t i = 0; i < n; i++)
        CHECK(str_is(gguf_arr_str(a, i), want[i]), "%s[%llu] != '%s'", what, (unsigned long long)i,
              want[i]);
    CHECK(gguf_arr_str(a, n).ptr == NULL, "%s: element n is out of range", what);
}

/* Every value build_raw() wrote, checked against the constants above. */
static void check_raw_kvs(const gguf_ctx *g, const char *label) {
    const gguf_value *v;
    if ((v = get_typed(g, "t.u8", GGUF_TYPE_UINT8))) CHECK(v->v.u64 == v_u8, "%s u8", label);
    if ((v = get_typed(g, "t.i8", GGUF_TYPE_INT8))) CHECK(v->v.i64 == v_i8, "%s i8", label);
    if ((v = get_typed(g, "t.u16", GGUF_TYPE_UINT16))) CHECK(v->v.u64 == v_u16, "%s u16", label);
    if ((v = get_typed(g, "t.i16", GGUF_TYPE_INT16))) CHECK(v->v.i64 == v_i16, "%s i16", label);
    if ((v = get_typed(g, "t.u32", GGUF_TYPE_UINT32))) CHECK(v->v.u64 == v_u32, "%s u32", label);
    if ((v = get_typed(g, "t.i32", GGUF_TYPE_INT32))) CHECK(v->v.i64 == v_i32, "%s i32", label);
    if ((v = get_typed(g, "t.f32", GGUF_TYPE_FLOAT32))) CHECK(v->v.f64 == v_f32, "%s f32", label);
    if ((v = get_typed(g, "t.bool", GGUF_TYPE_BOOL))) CHECK(v->v.b == 1, "%s bool", label);
    if ((v = get_typed(g, "t.str", GGUF_TYPE_STRING)))
        CHECK(str_is(v->v.str, v_str), "%s str", label);
    if ((v = get_typed(g, "t.str_empty", GGUF_TYPE_STRING)))
        CHECK(v->v.str.len == 0, "%s empty str", label);
    if ((v = get_typed(g, "t.u64", GGUF_TYPE_UINT64))) CHECK(v->v.u64 == v_u64, "%s u64", label);
    if ((v = get_typed(g, "t.i64", GGUF_TYPE_INT64))) CHECK(v->v.i64 == v_i64, "%s i64", label);
    if ((v = get_typed(g, "t.f64", GGUF_TYPE_FLOAT64))) CHECK(v->v.f64 == v_f64, "%s f64", label);
    for (int t = 0; t < GGUF_TYPE_COUNT; t++) {
        if (!is_num(t)) continue;
        char key[64];
        snprintf(key, sizeof key, "t.arr.%s", gguf_type_name((gguf_vtype)t));
        if (!(v = get_typed(g, key, GGUF_TYPE_ARRAY))) continue;
        CHECK(v->v.arr.elem_type == (gguf_vtype)t && v->v.arr.n == 3, "%s %s shape", label, key);
        for (uint64_t i = 0; i < 3; i++) {
            double want = t == GGUF_TYPE_FLOAT32 ? (double)(float)arr_vals[t][i] : arr_vals[t][i];
            CHECK(gguf_arr_f64(v, i) == want, "%s %s[%llu] = %g, want %g", label, key,
                  (unsigned long long)i, gguf_arr_f64(v, i), want);
            if (t != GGUF_TYPE_FLOAT32 && t != GGUF_TYPE_FLOAT64)
                CHECK(gguf_arr_i64(v, i) == (int64_t)arr_vals[t][i], "%s %s[%llu] as i64", label,
                      key, (unsigned long long)i);
        }
        CHECK(isnan(gguf_arr_f64(v, 3)), "%s %s[3] out of range gives NAN", label, key);
        CHECK(gguf_arr_str(v, 0).ptr == NULL, "%s %s is not a string array", label, key);
    }
    if ((v = get_typed(g, "t.arr_str", GGUF_TYPE_ARRAY))) check_arr_str(v, v_strs, 4, "t.arr_str");
    if ((v = get_typed(g, "t.arr_u8_empty", GGUF_TYPE_ARRAY)))
        CHECK(v->v.arr.elem_type == GGUF_TYPE_UINT8 && v->v.arr.n == 0, "%s empty u8 array", label);
    if ((v = get_typed(g, "t.arr_str_empty", GGUF_TYPE_ARRAY)))
        check_arr_str(v, NULL, 0, "t.arr_str_empty");
    if ((v = get_typed(g, "t.arr_arr_empty", GGUF_TYPE_ARRAY)))
        CHECK(v->v.arr.elem_type == GGUF_TYPE_ARRAY && v->v.arr.n == 0 &&
              gguf_arr_nested(v, 0) == NULL, "%s empty array of arrays", label);
    if ((v = get_typed(g, "t.nested_str", GGUF_TYPE_ARRAY))) {
        static const char *const e0[] = {"x", "yz"}, *const e2[] = {"", "w"};
        CHECK(v->v.arr.elem_type == GGUF_TYPE_ARRAY && v->v.arr.n == 3, "%s nested_str", label);
        check_arr_str(gguf_arr_nested(v, 0), e0, 2, "t.nested_str[0]");
        check_arr_str(gguf_arr_nested(v, 1), NULL, 0, "t.nested_str[1]");
        check_arr_str(gguf_arr_nested(v, 2), e2, 2, "t.nested_str[2]");
        CHECK(gguf_arr_nested(v, 3) == NULL, "%s nested_str[3] out of range", label);
    }
    if ((v = get_typed(g, "t.nested3", GGUF_TYPE_ARRAY))) {
        const gguf_value *a0 = gguf_arr_nested(v, 0), *a1 = gguf_arr_nested(v, 1);
        const gguf_value *a00 = gguf_arr_nested(a0, 0), *a01 = gguf_arr_nested(a0, 1);
        const gguf_value *a10 = gguf_arr_nested(a1, 0);
        CHECK(v->v.arr.n == 2 && a0 && a1 && a0->v.arr.n == 2 && a1->v.arr.n == 1,
              "%s nested3 outer shape", label);
        CHECK(a00 && a00->v.arr.elem_type == GGUF_TYPE_INT32 && a00->v.arr.n == 2 &&
              gguf_arr_i64(a00, 0) == 1 && gguf_arr_i64(a00, 1) == 2, "%s nested3[0][0]", label);
        CHECK(a01 && a01->v.arr.n == 1 && gguf_arr_i64(a01, 0) == 3, "%s nested3[0][1]", label);
        CHECK(a10 && a10->v.arr.elem_type == GGUF_TYPE_INT32 && a10->v.arr.n == 0,
              "%s nested3[1][0]", label);
    }
    if ((v = get_typed(g, "t.nested_mixed", GGUF_TYPE_ARRAY))) {
        const gguf_value *m0 = gguf_arr_nested(v, 0), *m1 = gguf_arr_nested(v, 1);
        CHECK(m0 && m0->v.arr.elem_type == GGUF_TYPE_FLOAT32 && gguf_arr_f64(m0, 0) == 1.25,
              "%s nested_mixed[0]", label);
        CHECK(m1 && str_is(gguf_arr_str(m1, 0), "m"), "%s nested_mixed[1]", label);
    }
}

static void test_raw_and_getters(void) {
    rb b = build_raw();
    gguf_ctx *g = NULL;
    char err[256] = "";
    int rc = gguf_open_buffer(b.p, b.n, &g, err, sizeof err);
    CHECK(rc == GGUF_OK, "hand-made GGUF refused: %s", err);
    if (rc) { free(b.p); return; }
    CHECK(gguf_version(g) == 3 && gguf_n_kv(g) == N_RAW_KV && gguf_n_tensors(g) == 0,
          "raw header facts");
    CHECK(gguf_alignment(g) == GGUF_DEFAULT_ALIGNMENT, "default alignment");
    check_raw_kvs(g, "raw");
    CHECK(gguf_find_key(g, "t.u8") == 0 && gguf_find_key(g, "t.nested_mixed") == N_RAW_KV - 1,
          "find_key gives file order");
    CHECK(gguf_find_key(g, "t.u") == -1 && gguf_get(g, "") == NULL, "absent keys");

    uint32_t u = 0;
    float f = 0;
    gguf_str s;
    CHECK(gguf_get_u32(g, "t.u8", &u, err, sizeof err) == GGUF_OK && u == 200, "get_u32 of u8");
    CHECK(gguf_get_u32(g, "t.u32", &u, err, sizeof err) == GGUF_OK && u == v_u32, "get_u32");
    err[0] = 0;
    CHECK(gguf_get_u32(g, "t.i8", &u, err, sizeof err) == GGUF_ERR_TYPE &&
          strstr(err, "-100") && strncmp(err, "gguf: ", 6) == 0, "negative to u32: '%s'", err);
    CHECK(gguf_get_u32(g, "t.u64", &u, err, sizeof err) == GGUF_ERR_TYPE &&
          strstr(err, "t.u64"), "u64 too big for u32: '%s'", err);
    CHECK(gguf_get_u32(g, "t.str", &u, err, sizeof err) == GGUF_ERR_TYPE &&
          strstr(err, "string"), "string to u32: '%s'", err);
    CHECK(gguf_get_u32(g, "nope", &u, err, sizeof err) == GGUF_ERR_NOTFOUND, "absent u32");
    CHECK(gguf_get_f32(g, "t.f32", &f, err, sizeof err) == GGUF_OK && f == 1.5f, "get_f32");
    CHECK(gguf_get_f32(g, "t.f64", &f, err, sizeof err) == GGUF_OK && f == (float)v_f64,
          "get_f32 of f64");
    CHECK(gguf_get_f32(g, "t.arr_str", &f, err, sizeof err) == GGUF_ERR_TYPE, "array to f32");
    CHECK(gguf_get_str(g, "t.str", &s, err, sizeof err) == GGUF_OK && str_is(s, v_str), "get_str");
    CHECK(gguf_get_str(g, "t.u8", &s, err, sizeof err) == GGUF_ERR_TYPE && strstr(err, "uint8"),
          "u8 to str: '%s'", err);
    CHECK(gguf_kv_value(g, -1) == NULL && gguf_kv_value(g, N_RAW_KV) == NULL &&
          gguf_kv_key(g, N_RAW_KV).ptr == NULL, "kv index range");
    const gguf_value *copy_src = gguf_get(g, "t.arr_str");
    gguf_value copy = *copy_src;   /* values may be copied: the index travels with them */
    CHECK(str_is(gguf_arr_str(&copy, 3), v_strs[3]), "copied value keeps its string index");
    copy.v.arr.aux = NULL;         /* a value without an index is walked */
    CHECK(str_is(gguf_arr_str(&copy, 2), "ccc"), "string array without an index");
    gguf_close(g);
    free(b.p);

    /* arrays nest 8 levels deep at most: [[[...[u8 x 0]...]]] */
    for (int levels = 7; levels <= 9; levels++) {
        rb d = {0};
        rb_put(&d, "GGUF", 4);
        rb_u32(&d, 3);
        rb_u64(&d, 0);
        rb_u64(&d, 1);
        rb_key(&d, "deep", GGUF_TYPE_ARRAY);
        for (int l = 1; l < levels; l++) rb_arr(&d, GGUF_TYPE_ARRAY, 1);
        rb_arr(&d, GGUF_TYPE_UINT8, 0);
        rc = gguf_open_buffer(d.p, d.n, &g, err, sizeof err);
        CHECK(levels <= 8 ? rc == GGUF_OK : rc == GGUF_ERR_FORMAT && strstr(err, "deeper than 8"),
              "%d nested levels: rc %d '%s'", levels, rc, rc ? err : "");
        if (rc == GGUF_OK) {
            const gguf_value *v = gguf_get(g, "deep");
            for (int l = 1; l < levels && v; l++) v = gguf_arr_nested(v, 0);
            CHECK(v && v->v.arr.elem_type == GGUF_TYPE_UINT8 && v->v.arr.n == 0,
                  "%d nested levels walk to the u8 array", levels);
            gguf_close(g);
        }
        free(d.p);
    }
}

/* ---- writer round trip ---------------------------------------------------------------- */

typedef struct { const char *name; int type, n_dims; int64_t ne[4]; uint64_t nbytes; } tspec;

/* nbytes from the block layouts documented in kernels/qtypes.h */
static const tspec tensors[] = {
    {"f32.a", 0, 2, {5, 3, 1, 1}, 5 * 3 * 4},
    {"f16.b", 1, 1, {7, 1, 1, 1}, 7 * 2},
    {"bf16.c", 30, 4, {2, 1, 2, 3}, 12 * 2},
    {"q8_0.d", 8, 2, {64, 2, 1, 1}, 4 * 34},
    {"q4_0.e", 2, 2, {32, 3, 1, 1}, 3 * 18},
    {"q4_k.f", 12, 2, {256, 2, 1, 1}, 2 * 144},
    {"q6_k.g", 14, 1, {512, 1, 1, 1}, 2 * 210},
};
#define N_T (int)(sizeof tensors / sizeof tensors[0])

static uint8_t tdata[N_T][1024];

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
    *n = p ? fread(p, 1, (size_t)sz, f) : 0;
    fclose(f);
    return p;
}

/* Valid or not, a corrupted buffer must give GGUF_OK or a one-line "gguf: " message. */
static int one_line_or_ok(const uint8_t *p, size_t n, int *rc_out) {
    gguf_ctx *g = NULL;
    char err[512] = "";
    int rc = gguf_open_buffer(p, n, &g, err, sizeof err);
    *rc_out = rc;
    if (rc == GGUF_OK) {   /* walk what a consumer would walk */
        for (int64_t i = 0; i < gguf_n_kv(g); i++) {
            const gguf_value *v = gguf_kv_value(g, i);
            if (v->type == GGUF_TYPE_ARRAY && v->v.arr.elem_type == GGUF_TYPE_STRING)
                for (uint64_t k = 0; k < v->v.arr.n; k++) (void)gguf_arr_str(v, k).len;
        }
        int had_ctx = g != NULL;
        gguf_close(g);
        return had_ctx;
    }
    return g == NULL && strncmp(err, "gguf: ", 6) == 0 && !strchr(err, '\n') && strlen(err) > 12;
}

static void test_writer(const char *dir) {
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/rt.gguf", dir);
    rb raw = build_raw();
    gguf_ctx *src = NULL;
    if (gguf_open_buffer(raw.p, raw.n, &src, err, sizeof err) != GGUF_OK) {
        CHECK(0, "raw: %s", err);
        free(raw.p);
        return;
    }
    for (int i = 0; i < N_T; i++)
        for (int k = 0; k < 1024; k++) tdata[i][k] = (uint8_t)(k * 7 + i * 31 + 1);

    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_u32(w, "general.alignment", 64);
    gguf_writer_set_u32(w, "w.u32", 1);
    for (int64_t i = 0; i < gguf_n_kv(src); i++) gguf_writer_copy_kv(w, src, i);
    gguf_writer_set_u32(w, "w.u32", 77);   /* replaces in place */
    gguf_writer_set_i32(w, "w.i32", -5);
    gguf_writer_set_u64(w, "w.u64", UINT64_MAX);
    gguf_writer_set_f32(w, "w.f32", -0.125f);
    gguf_writer_set_bool(w, "w.bool", 0);
    gguf_writer_set_str(w, "w.str", "");
    static const uint16_t u16s[] = {1, 2, 65535};
    static const double f64s[] = {1e-300, -0.0};
    static const char *const strs[] = {"", "b", "\xe2\x82\xac"};
    gguf_writer_set_arr(w, "w.arr_u16", GGUF_TYPE_UINT16, u16s, 3);
    gguf_writer_set_arr(w, "w.arr_f64", GGUF_TYPE_FLOAT64, f64s, 2);
    gguf_writer_set_arr(w, "w.arr_f32_empty", GGUF_TYPE_FLOAT32, NULL, 0);
    gguf_writer_set_arr_str(w, "w.arr_str", strs, 3);
    gguf_writer_set_arr_str(w, "w.arr_str_empty", NULL, 0);
    for (int i = 0; i < N_T; i++)
        gguf_writer_add_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims,
                               tensors[i].ne, tdata[i], tensors[i].nbytes);
    int rc = gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == GGUF_OK, "write: %s", err);
    gguf_writer_free(w);
    gguf_close(src);
    free(raw.p);
    if (rc) return;

    /* header bytes, read without the reader */
    size_t n = 0;
    uint8_t *bytes = read_file(path, &n);
    uint32_t ver = 0;
    uint64_t nt = 0, nkv = 0;
    int64_t n_kv_want = 2 + N_RAW_KV + 10;
    if (bytes && n >= 24) {
        memcpy(&ver, bytes + 4, 4);
        memcpy(&nt, bytes + 8, 8);
        memcpy(&nkv, bytes + 16, 8);
    }
    CHECK(bytes && n >= 24 && memcmp(bytes, "GGUF", 4) == 0 && ver == 3 && nt == N_T &&
          nkv == (uint64_t)n_kv_want, "written header: v%u, %llu tensors, %llu kvs", ver,
          (unsigned long long)nt, (unsigned long long)nkv);

    gguf_ctx *g = NULL;
    rc = gguf_open(path, &g, err, sizeof err);
    CHECK(rc == GGUF_OK, "reading back: %s", err);
    if (rc) { free(bytes); return; }
    check_raw_kvs(g, "written");
    CHECK(gguf_n_kv(g) == n_kv_want, "written kv count");
    CHECK(gguf_find_key(g, "general.alignment") == 0 && gguf_find_key(g, "w.u32") == 1 &&
          gguf_find_key(g, "t.u8") == 2, "insertion order kept, replaced key keeps its place");
    const gguf_value *v;
    if ((v = get_typed(g, "w.u32", GGUF_TYPE_UINT32))) CHECK(v->v.u64 == 77, "w.u32 replaced");
    if ((v = get_typed(g, "w.i32", GGUF_TYPE_INT32))) CHECK(v->v.i64 == -5, "w.i32");
    if ((v = get_typed(g, "w.u64", GGUF_TYPE_UINT64))) CHECK(v->v.u64 == UINT64_MAX, "w.u64");
    if ((v = get_typed(g, "w.f32", GGUF_TYPE_FLOAT32))) CHECK(v->v.f64 == -0.125, "w.f32");
    if ((v = get_typed(g, "w.bool", GGUF_TYPE_BOOL))) CHECK(v->v.b == 0, "w.bool");
    if ((v = get_typed(g, "w.str", GGUF_TYPE_STRING))) CHECK(v->v.str.len == 0, "w.str");
    if ((v = get_typed(g, "w.arr_u16", GGUF_TYPE_ARRAY)))
        CHECK(v->v.arr.elem_type == GGUF_TYPE_UINT16 && v->v.arr.n == 3 &&
              gguf_arr_i64(v, 2) == 65535, "w.arr_u16");
    if ((v = get_typed(g, "w.arr_f64", GGUF_TYPE_ARRAY)))
        CHECK(gguf_arr_f64(v, 0) == 1e-300 && signbit(gguf_arr_f64(v, 1)), "w.arr_f64");
    if ((v = get_typed(g, "w.arr_f32_empty", GGUF_TYPE_ARRAY)))
        CHECK(v->v.arr.elem_type == GGUF_TYPE_FLOAT32 && v->v.arr.n == 0, "w.arr_f32_empty");
    if ((v = get_typed(g, "w.arr_str", GGUF_TYPE_ARRAY))) check_arr_str(v, strs, 3, "w.arr_str");
    if ((v = get_typed(g, "w.arr_str_empty", GGUF_TYPE_ARRAY)))
        check_arr_str(v, NULL, 0, "w.arr_str_empty");

    CHECK(gguf_alignment(g) == 64 && gguf_data_offset(g) % 64 == 0, "alignment 64, data at %llu",
          (unsigned long long)gguf_data_offset(g));
    CHECK(gguf_n_tensors(g) == N_T, "tensor count");
    uint64_t expect_off = 0;
    for (int i = 0; i < N_T && i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const tspec *s = &tensors[i];
        expect_off = (expect_off + 63) / 64 * 64;
        CHECK(str_is(t->name, s->name) && gguf_find_tensor(g, s->name) == t, "tensor %d name", i);
        CHECK(t->type == s->type && (int)t->n_dims == s->n_dims && t->nbytes == s->nbytes,
              "tensor %s type/dims/nbytes", s->name);
        CHECK(memcmp(t->ne, s->ne, sizeof t->ne) == 0, "tensor %s ne", s->name);
        CHECK(t->offset == expect_off, "tensor %s offset %llu, want %llu", s->name,
              (unsigned long long)t->offset, (unsigned long long)expect_off);
        CHECK((const uint8_t *)t->data == gguf_base(g) + gguf_data_offset(g) + t->offset &&
              memcmp(t->data, tdata[i], (size_t)s->nbytes) == 0, "tensor %s data", s->name);
        expect_off += s->nbytes;
    }
    CHECK(gguf_file_size(g) == gguf_data_offset(g) + expect_off && n == gguf_file_size(g),
          "file ends with the last tensor (%zu vs %llu)", gguf_file_size(g),
          (unsigned long long)(gguf_data_offset(g) + expect_off));
    CHECK(gguf_find_tensor(g, "f32") == NULL && gguf_tensor_at(g, N_T) == NULL, "absent tensors");
    gguf_close(g);

    /* v2 shares the v3 layout; v1 and v4 are refused with a message naming the version */
    uint32_t patch = 2;
    memcpy(bytes + 4, &patch, 4);
    rc = gguf_open_buffer(bytes, n, &g, err, sizeof err);
    CHECK(rc == GGUF_OK && gguf_version(g) == 2, "v2 file: %s", rc ? err : "ok");
    if (rc == GGUF_OK) {
        check_raw_kvs(g, "v2");
        gguf_close(g);
    }
    patch = 1;
    memcpy(bytes + 4, &patch, 4);
    rc = gguf_open_buffer(bytes, n, &g, err, sizeof err);
    CHECK(rc == GGUF_ERR_FORMAT && g == NULL && strstr(err, "version 1"), "v1: '%s'", err);
    patch = 4;
    memcpy(bytes + 4, &patch, 4);
    rc = gguf_open_buffer(bytes, n, &g, err, sizeof err);
    CHECK(rc == GGUF_ERR_FORMAT && strstr(err, "version 4"), "v4: '%s'", err);
    patch = 3;
    memcpy(bytes + 4, &patch, 4);

    /* every strict prefix is a truncated file; every single-byte change is handled */
    int bad_prefix = 0, bad_mut = 0, accepted = 0;
    for (size_t k = 0; k < n; k++) {
        uint8_t *cut = malloc(k ? k : 1);   /* exact-size copies let ASan see overreads */
        memcpy(cut, bytes, k);
        int r;
        if (!one_line_or_ok(cut, k, &r) || r == GGUF_OK) {
            if (bad_prefix++ < 3) fprintf(stderr, "prefix %zu: rc %d\n", k, r);
        }
        free(cut);
    }
    CHECK(bad_prefix == 0, "%d of %zu prefixes not refused cleanly", bad_prefix, n);
    uint8_t *mut = malloc(n);
    static const uint8_t repl[] = {0x00, 0xff, 0x80, 0x01};
    for (size_t k = 0; k < n; k++) {
        for (size_t j = 0; j < sizeof repl; j++) {
            memcpy(mut, bytes, n);
            mut[k] = mut[k] == repl[j] ? (uint8_t)(repl[j] + 3) : repl[j];
            int r;
            if (!one_line_or_ok(mut, n, &r)) bad_mut++;
            accepted += r == GGUF_OK;
        }
    }
    CHECK(bad_mut == 0, "%d single-byte corruptions gave no clean result", bad_mut);
    CHECK(accepted > 0 && accepted < (int)(n * sizeof repl), "mutations: %d of %zu accepted",
          accepted, n * sizeof repl);
    free(mut);
    free(bytes);
}

static void test_writer_errors(const char *dir) {
    char path[512], err[512] = "";
    float x[4] = {0};
    int64_t ne[2] = {4, 1};

    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_add_tensor(w, "x", 0, 1, ne, x, sizeof x);
    int rc = gguf_writer_write(w, "/nonexistent-dir-for-gguf-test/x.gguf", err, sizeof err);
    CHECK(rc == GGUF_ERR_IO && strstr(err, "nonexistent-dir-for-gguf-test") &&
          strstr(err, "No such file"), "cannot create: '%s'", err);
    if (access("/dev/full", W_OK) == 0) {
        rc = gguf_writer_write(w, "/dev/full", err, sizeof err);
        CHECK(rc == GGUF_ERR_IO && strstr(err, "No space left"), "disk full: '%s'", err);
    }
    gguf_writer_free(w);

    struct { const char *what, *expect; int type, n_dims; int64_t ne0; uint64_t nbytes; } bad[] = {
        {"size mismatch", "needs 16 bytes", 0, 1, 4, 12},
        {"unsupported type", "IQ2_XXS", 16, 1, 256, 66},
        {"unknown type", "unknown", 99, 1, 4, 16},
        {"block multiple", "Q8_0", 8, 1, 16, 17},
        {"n_dims 5", "n_dims 5", 0, 5, 4, 16},
        {"ne 0", "ne[0] = 0", 0, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "%s/bad%zu.gguf", dir, i);
        int64_t bne[5] = {bad[i].ne0, 1, 1, 1, 1};
        uint8_t data[256] = {0};
        w = gguf_writer_new();
        gguf_writer_add_tensor(w, "t", bad[i].type, bad[i].n_dims, bne, data, bad[i].nbytes);
        rc = gguf_writer_write(w, path, err, sizeof err);
        CHECK(rc == GGUF_ERR_FORMAT && strstr(err, bad[i].expect) && access(path, F_OK) != 0,
              "writer %s: rc %d '%s'", bad[i].what, rc, err);
        gguf_writer_free(w);
    }
    w = gguf_writer_new();
    gguf_writer_add_tensor(w, "t", 0, 1, ne, x, sizeof x);
    gguf_writer_add_tensor(w, "t", 0, 1, ne, x, sizeof x);
    rc = gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == GGUF_ERR_FORMAT && strstr(err, "twice"), "duplicate tensor: '%s'", err);
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_writer_set_u32(w, "general.alignment", 48);
    rc = gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == GGUF_ERR_FORMAT && strstr(err, "alignment"), "alignment 48: '%s'", err);
    gguf_writer_free(w);

    gguf_ctx *g = NULL;
    rc = gguf_open("/nonexistent-dir-for-gguf-test/x.gguf", &g, err, sizeof err);
    CHECK(rc == GGUF_ERR_IO && g == NULL && strstr(err, "cannot open"), "open missing: '%s'", err);
    rc = gguf_open(dir, &g, err, sizeof err);
    CHECK(rc == GGUF_ERR_IO && strstr(err, "regular file"), "open a directory: '%s'", err);
}

/* ---- shared models ---------------------------------------------------------------------- */

static int has_type(const gguf_ctx *g, int type) {
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        if (gguf_tensor_at(g, i)->type == type) return 1;
    return 0;
}

static uint64_t arr_n(const gguf_ctx *g, const char *key) {
    const gguf_value *v = gguf_get(g, key);
    return v && v->type == GGUF_TYPE_ARRAY ? v->v.arr.n : 0;
}

static void expect_u32(const gguf_ctx *g, const char *file, const char *key, uint32_t want) {
    uint32_t u = 0;
    char err[256] = "";
    int rc = gguf_get_u32(g, key, &u, err, sizeof err);
    CHECK(rc == GGUF_OK && u == want, "%s: %s = %u (rc %d %s), want %u", file, key, u, rc, err,
          want);
}

static void expect_str(const gguf_ctx *g, const char *file, const char *key, const char *want) {
    gguf_str s = {NULL, 0};
    char err[256] = "";
    gguf_get_str(g, key, &s, err, sizeof err);
    CHECK(str_is(s, want), "%s: %s = '%.*s', want '%s'", file, key, (int)s.len,
          s.ptr ? s.ptr : "", want);
}

/* Facts from $SAMPAN_SHARED/README.md: arch, dim, layers, heads / kv heads, ffn, vocab. */
typedef struct {
    const char *file, *arch;
    uint32_t dim, layers, heads, kv, ffn;
    uint64_t vocab;
} mfact;
static const mfact model_facts[] = {
    {"stories260K.gguf", "llama", 64, 5, 8, 4, 172, 512},
    {"tiny-llama-f32.gguf", "llama", 64, 2, 4, 2, 128, 32000},
    {"tiny-qwen2-f32.gguf", "qwen2", 64, 2, 4, 4, 160, 50257},
    {"small-llama-f16.gguf", "llama", 256, 4, 8, 2, 768, 32000},
    {"small-llama-q8_0.gguf", "llama", 256, 4, 8, 2, 768, 32000},
    {"small-llama-q4_0.gguf", "llama", 256, 4, 8, 2, 768, 32000},
    {"small-llama-q4_k_m.gguf", "llama", 256, 4, 8, 2, 768, 32000},
    {"small-llama-q6_k.gguf", "llama", 256, 4, 8, 2, 768, 32000},
    {"tiny-deepseek-f32.gguf", "deepseek2", 32, 3, 4, 0, 64, 102400},
};

/* Walks every string of every string array (exercises the offset index on real data). */
static uint64_t touch_strings(const gguf_ctx *g) {
    uint64_t total = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_value *v = gguf_kv_value(g, i);
        if (v->type != GGUF_TYPE_ARRAY || v->v.arr.elem_type != GGUF_TYPE_STRING) continue;
        for (uint64_t k = 0; k < v->v.arr.n; k++) total += gguf_arr_str(v, k).len;
    }
    return total;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void check_model(const char *dir, const mfact *m) {
    char path[1024], err[512] = "", key[128];
    snprintf(path, sizeof path, "%s/models/%s", dir, m->file);
    gguf_ctx *g = NULL;
    int rc = gguf_open(path, &g, err, sizeof err);
    CHECK(rc == GGUF_OK, "%s: %s", m->file, err);
    if (rc) return;
    CHECK(gguf_version(g) == 3, "%s: GGUF v3", m->file);
    expect_str(g, m->file, "general.architecture", m->arch);
    snprintf(key, sizeof key, "%s.embedding_length", m->arch);
    expect_u32(g, m->file, key, m->dim);
    snprintf(key, sizeof key, "%s.block_count", m->arch);
    expect_u32(g, m->file, key, m->layers);
    snprintf(key, sizeof key, "%s.attention.head_count", m->arch);
    expect_u32(g, m->file, key, m->heads);
    if (m->kv) {
        snprintf(key, sizeof key, "%s.attention.head_count_kv", m->arch);
        expect_u32(g, m->file, key, m->kv);
    }
    snprintf(key, sizeof key, "%s.feed_forward_length", m->arch);
    expect_u32(g, m->file, key, m->ffn);
    CHECK(arr_n(g, "tokenizer.ggml.tokens") == m->vocab, "%s: %llu tokens, want %llu", m->file,
          (unsigned long long)arr_n(g, "tokenizer.ggml.tokens"), (unsigned long long)m->vocab);
    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    CHECK(te && te->n_dims == 2 && te->ne[0] == m->dim && (uint64_t)te->ne[1] == m->vocab,
          "%s: token_embd.weight is [%u, %llu]", m->file, m->dim, (unsigned long long)m->vocab);
    const gguf_tensor *norm = gguf_find_tensor(g, "blk.0.attn_norm.weight");
    CHECK(norm && norm->type == 0 && norm->n_dims == 1 && norm->ne[0] == m->dim,
          "%s: blk.0.attn_norm.weight is F32 [%u]", m->file, m->dim);
    char last[64];
    snprintf(last, sizeof last, "blk.%u.ffn_norm.weight", m->layers - 1);
    CHECK(gguf_find_tensor(g, last) != NULL, "%s: has %s", m->file, last);
    snprintf(last, sizeof last, "blk.%u.ffn_norm.weight", m->layers);
    CHECK(gguf_find_tensor(g, last) == NULL, "%s: no %s", m->file, last);
    touch_strings(g);

    const char *f = m->file;
    if (strstr(f, "f32") || strstr(f, "stories")) {
        int all_f32 = 1;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) all_f32 &= gguf_tensor_at(g, i)->type == 0;
        CHECK(all_f32, "%s: every tensor F32", f);
    }
    if (strstr(f, "tiny-llama")) CHECK(!gguf_find_tensor(g, "output.weight"), "tied output");
    if (strstr(f, "tiny-qwen2")) {
        float base = 0;
        gguf_get_f32(g, "qwen2.rope.freq_base", &base, err, sizeof err);
        CHECK(base == 1e6f, "qwen2 rope theta 1e6");
        CHECK(gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL, "qwen2 has QKV bias");
        expect_str(g, f, "tokenizer.ggml.model", "gpt2");
        expect_str(g, f, "tokenizer.ggml.pre", "gpt-2");
    }
    if (strstr(f, "stories")) expect_u32(g, f, "llama.context_length", 128);
    if (strstr(f, "f16")) CHECK(has_type(g, 1) && !has_type(g, 8), "%s: F16 matrices", f);
    if (strstr(f, "q8_0")) CHECK(has_type(g, 8), "%s: Q8_0 present", f);
    if (strstr(f, "q4_0")) {
        const gguf_tensor *o = gguf_find_tensor(g, "output.weight");
        CHECK(has_type(g, 2) && o && o->type == 14, "%s: Q4_0, output.weight Q6_K", f);
    }
    if (strstr(f, "q4_k_m")) CHECK(has_type(g, 12) && has_type(g, 14), "%s: Q4_K and Q6_K", f);
    if (strstr(f, "q6_k")) CHECK(has_type(g, 14) && !has_type(g, 2), "%s: Q6_K", f);
    if (strstr(f, "deepseek")) {
        expect_u32(g, f, "deepseek2.attention.q_lora_rank", 24);
        expect_u32(g, f, "deepseek2.attention.kv_lora_rank", 16);
        expect_u32(g, f, "deepseek2.expert_count", 8);
        expect_u32(g, f, "deepseek2.expert_feed_forward_length", 16);
        expect_str(g, f, "tokenizer.ggml.pre", "deepseek-llm");
    }
    gguf_close(g);
}

/* stories260K.gguf was converted from the llama2.c checkpoint beside it: 7 x int32 header, then
 * token embeddings (vocab, dim) and the attention RMSNorm weights (layers, dim), all f32. */
static void check_stories_bytes(const char *dir) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/models/stories260K.bin", dir);
    size_t n = 0;
    uint8_t *bin = read_file(path, &n);
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", dir);
    gguf_ctx *g = NULL;
    if (!bin || gguf_open(path, &g, err, sizeof err) != GGUF_OK) {
        CHECK(0, "stories260K.bin/.gguf: %s", err);
        free(bin);
        return;
    }
    const size_t dim = 64, vocab = 512, emb = 28, norms = emb + 4 * dim * vocab;
    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    CHECK(te && n > norms + 5 * dim * 4 && te->nbytes == 4 * dim * vocab &&
          memcmp(te->data, bin + emb, te->nbytes) == 0, "stories260K token_embd equals the .bin");
    for (int l = 0; l < 5; l++) {
        snprintf(path, sizeof path, "blk.%d.attn_norm.weight", l);
        const gguf_tensor *t = gguf_find_tensor(g, path);
        CHECK(t && t->nbytes == 4 * dim && memcmp(t->data, bin + norms + 4 * dim * l, 4 * dim) == 0,
              "stories260K %s equals the .bin", path);
    }
    gguf_close(g);
    free(bin);
}

/* Tensor types and dims from reference/dequant/index.json. */
static void check_dequant_index(const char *dir) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/reference/dequant/index.json", dir);
    size_t n = 0;
    uint8_t *txt = read_file(path, &n);
    cJSON *root = txt ? cJSON_ParseWithLength((const char *)txt, n) : NULL;
    CHECK(root != NULL, "parse %s", path);
    int seen = 0;
    for (cJSON *e = root ? root->child : NULL; e; e = e->next) {
        const char *model = cJSON_GetStringValue(cJSON_GetObjectItem(e, "model"));
        const char *tname = cJSON_GetStringValue(cJSON_GetObjectItem(e, "tensor"));
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(e, "type"));
        cJSON *ne = cJSON_GetObjectItem(e, "ne");
        if (!model || !tname || !type || !cJSON_IsArray(ne)) continue;
        snprintf(path, sizeof path, "%s/models/%s", dir, model);
        gguf_ctx *g = NULL;
        if (gguf_open(path, &g, err, sizeof err) != GGUF_OK) {
            CHECK(0, "%s: %s", model, err);
            continue;
        }
        const gguf_tensor *t = gguf_find_tensor(g, tname);
        int ok = t && gguf_ttype_name(t->type) && strcmp(gguf_ttype_name(t->type), type) == 0 &&
                 (int)t->n_dims == cJSON_GetArraySize(ne);
        for (int d = 0; ok && d < cJSON_GetArraySize(ne); d++)
            ok = t->ne[d] == (int64_t)cJSON_GetArrayItem(ne, d)->valuedouble;
        CHECK(ok, "%s %s: type %s and ne as in index.json", model, tname, type);
        seen++;
        gguf_close(g);
    }
    CHECK(seen >= 4, "index.json lists %d tensors", seen);
    cJSON_Delete(root);
    free(txt);
}

/* reference/vocab/README.md's table. */
typedef struct { const char *name, *arch, *model, *pre; uint64_t tokens; int add_bos; } vfact;
static const vfact vocab_facts[] = {
    {"deepseek-coder", "llama", "gpt2", "deepseek-coder", 32256, 1},
    {"deepseek-llm", "llama", "gpt2", "deepseek-llm", 102400, 1},
    {"falcon", "falcon", "gpt2", "falcon", 65024, 0},
    {"gpt-2", "gpt2", "gpt2", "gpt-2", 50257, 0},
    {"llama-spm", "llama", "llama", "default", 32000, 1},
    {"mpt", "mpt", "gpt2", "mpt", 50432, 0},
    {"phi-3", "phi3", "llama", "default", 32064, 1},
    {"refact", "refact", "gpt2", "refact", 49216, 0},
    {"starcoder", "starcoder2", "gpt2", "starcoder", 49152, 0},
};

static void check_vocab(const char *dir, const vfact *v) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/reference/vocab/ggml-vocab-%s.gguf", dir, v->name);
    gguf_ctx *g = NULL;
    double t0 = now_s();
    int rc = gguf_open(path, &g, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(rc == GGUF_OK, "%s: %s", v->name, err);
    if (rc) return;
    CHECK(dt < 2.0, "%s: open took %.3f s", v->name, dt);
    expect_str(g, v->name, "general.architecture", v->arch);
    expect_str(g, v->name, "tokenizer.ggml.model", v->model);
    expect_str(g, v->name, "tokenizer.ggml.pre", v->pre);
    CHECK(arr_n(g, "tokenizer.ggml.tokens") == v->tokens, "%s: %llu tokens", v->name,
          (unsigned long long)arr_n(g, "tokenizer.ggml.tokens"));
    const gguf_value *ab = gguf_get(g, "tokenizer.ggml.add_bos_token");
    CHECK(v->add_bos ? ab && ab->type == GGUF_TYPE_BOOL && ab->v.b : ab == NULL,
          "%s: add_bos_token %s", v->name, v->add_bos ? "true" : "absent");
    CHECK(gguf_n_tensors(g) == 0, "%s: vocabulary only", v->name);
    const gguf_value *tok = gguf_get(g, "tokenizer.ggml.tokens");
    if (!strcmp(v->model, "llama"))   /* SentencePiece vocabularies start <unk> <s> </s> */
        CHECK(str_is(gguf_arr_str(tok, 0), "<unk>") && str_is(gguf_arr_str(tok, 1), "<s>") &&
              str_is(gguf_arr_str(tok, 2), "</s>"), "%s: first tokens", v->name);
    if (!strcmp(v->name, "gpt-2"))   /* GPT-2's byte-level vocabulary: '!' first, EOT last */
        CHECK(str_is(gguf_arr_str(tok, 0), "!") &&
              str_is(gguf_arr_str(tok, 50256), "<|endoftext|>"), "gpt-2: first and last tokens");
    t0 = now_s();
    touch_strings(g);
    CHECK(now_s() - t0 < 1.0, "%s: walking every string took %.3f s", v->name, now_s() - t0);
    gguf_close(g);
}

static int run_shared(void) {
    const char *dir = getenv("SAMPAN_SHARED");
    if (!dir || !*dir) dir = "../shared";
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/models", dir);
    DIR *d = opendir(probe);
    if (!d) {
        printf("skip: %s not found\n", probe);
        return 77;
    }
    /* every .gguf present opens (models added later included) */
    struct dirent *e;
    int n_files = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".gguf") != 0) continue;
        char path[2048], err[512] = "";
        snprintf(path, sizeof path, "%s/%s", probe, e->d_name);
        gguf_ctx *g = NULL;
        int rc = gguf_open(path, &g, err, sizeof err);
        CHECK(rc == GGUF_OK, "%s: %s", e->d_name, err);
        gguf_close(g);
        n_files++;
    }
    closedir(d);
    CHECK(n_files >= 9, "%d models found", n_files);
    for (size_t i = 0; i < sizeof model_facts / sizeof model_facts[0]; i++)
        check_model(dir, &model_facts[i]);
    for (size_t i = 0; i < sizeof vocab_facts / sizeof vocab_facts[0]; i++)
        check_vocab(dir, &vocab_facts[i]);
    check_stories_bytes(dir);
    check_dequant_index(dir);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "unit";
    if (!strcmp(mode, "shared")) {
        int rc = run_shared();
        if (rc == 77) return 77;
    } else {
        char dir[] = "/tmp/sampan-gguf-test-XXXXXX";
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
        test_raw_and_getters();
        test_writer(dir);
        test_writer_errors(dir);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
