/* runtime/gguf.h — GGUF v2/v3 reader (mmap, hostile-input safe) and writer.
 *
 * File layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv metadata pairs
 * (string key, u32 value type, value), then n_tensors infos (string name, u32 n_dims,
 * u64 ne[n_dims], u32 type, u64 offset), padding to `general.alignment` (default 32), then the
 * tensor data section; each tensor's offset is relative to the data section and aligned.
 * Strings are u64 length + bytes (no NUL). Arrays are u32 element type + u64 count + elements
 * and may nest.
 *
 * Reader discipline (SQLite's): every count, length, offset and type id is checked against the
 * bytes left in the file before it is used or used to size an allocation; a bad file yields
 * GGUF_ERR_* and a one-line message naming the field and the numbers, e.g.
 *   "gguf: tensor 'blk.3.attn_q.weight' data ends at 123456 past end of file (99999)".
 * Nothing is copied: keys, strings and tensor data point into the read-only mapping, which lives
 * until gguf_close.
 */
#ifndef SAMPAN_GGUF_H
#define SAMPAN_GGUF_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12, GGUF_TYPE_COUNT
} gguf_vtype;

enum { GGUF_OK = 0, GGUF_ERR_IO = -1, GGUF_ERR_FORMAT = -2, GGUF_ERR_NOMEM = -3,
       GGUF_ERR_NOTFOUND = -4, GGUF_ERR_TYPE = -5 };

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct { const char *ptr; uint64_t len; } gguf_str;   /* not NUL-terminated */

/* A value: scalars decoded; strings point into the mapping; arrays described lazily.
 * Widening: UINT8/16/32/64 -> v.u64, INT8/16/32/64 -> v.i64, FLOAT32/64 -> v.f64, BOOL -> v.b
 * (0 or 1); `type` keeps the stored type. */
typedef struct gguf_value {
    gguf_vtype type;
    union {
        uint64_t u64; int64_t i64; double f64; int b;   /* every integer/float/bool scalar is
                                                           widened into these */
        gguf_str str;
        struct { gguf_vtype elem_type; uint64_t n; const uint8_t *data; const void *aux; } arr;
        /* arr.data: first element's bytes in the mapping; use gguf_arr_* to read elements.
         * arr.aux: reader-owned index (STRING: n u64 offsets from data; ARRAY: n gguf_value),
         * NULL when n == 0. */
    } v;
} gguf_value;

typedef struct {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];   /* ne[0] is the contiguous (row) dimension; unused dims are 1 */
    int type;                    /* qt_type id (kernels/qtypes.h) */
    uint64_t offset;             /* relative to the data section */
    uint64_t nbytes;
    const void *data;            /* into the mapping */
} gguf_tensor;

typedef struct gguf_ctx gguf_ctx;

/* Opens and validates the whole file (every kv and tensor info, every tensor's bounds and
 * alignment, no overlapping tensors, known tensor types). err gets a one-line message. */
int gguf_open(const char *path, gguf_ctx **out, char *err, size_t errlen);
/* Same over a caller-owned buffer (fuzzing, tests); the buffer must outlive the ctx. */
int gguf_open_buffer(const void *buf, size_t size, gguf_ctx **out, char *err, size_t errlen);
void gguf_close(gguf_ctx *g);

uint32_t gguf_version(const gguf_ctx *g);
uint64_t gguf_data_offset(const gguf_ctx *g);   /* start of the tensor data section */
uint64_t gguf_alignment(const gguf_ctx *g);
size_t gguf_file_size(const gguf_ctx *g);
const uint8_t *gguf_base(const gguf_ctx *g);   /* first byte of the mapping */

/* metadata */
int64_t gguf_n_kv(const gguf_ctx *g);
gguf_str gguf_kv_key(const gguf_ctx *g, int64_t i);
const gguf_value *gguf_kv_value(const gguf_ctx *g, int64_t i);
int64_t gguf_find_key(const gguf_ctx *g, const char *key);          /* -1 if absent */
const gguf_value *gguf_get(const gguf_ctx *g, const char *key);     /* NULL if absent */
/* Typed getters: GGUF_OK, GGUF_ERR_NOTFOUND, or GGUF_ERR_TYPE (wrong type; message in err).
 * Integer getters accept any integer type whose value fits; gguf_get_f32 accepts FLOAT32,
 * FLOAT64 and integers. */
int gguf_get_u32(const gguf_ctx *g, const char *key, uint32_t *out, char *err, size_t errlen);
int gguf_get_f32(const gguf_ctx *g, const char *key, float *out, char *err, size_t errlen);
int gguf_get_str(const gguf_ctx *g, const char *key, gguf_str *out, char *err, size_t errlen);
/* element i of an array value (checked i < n). Out of range or wrong element type gives
 * {NULL, 0}, NAN, 0 and NULL respectively. Bool elements read as 0/1; arr_i64 saturates u64
 * above INT64_MAX and truncates floats (0 if not finite or out of range). */
gguf_str gguf_arr_str(const gguf_value *arr, uint64_t i);   /* STRING arrays: O(1) via an index
                                                               built at open */
double gguf_arr_f64(const gguf_value *arr, uint64_t i);     /* numeric arrays */
int64_t gguf_arr_i64(const gguf_value *arr, uint64_t i);
const gguf_value *gguf_arr_nested(const gguf_value *arr, uint64_t i);  /* ARRAY-of-ARRAY */

/* tensors */
int64_t gguf_n_tensors(const gguf_ctx *g);
const gguf_tensor *gguf_tensor_at(const gguf_ctx *g, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_ctx *g, const char *name);  /* NULL if absent */

int gguf_str_eq(gguf_str s, const char *c);
const char *gguf_type_name(gguf_vtype t);
/* Tensor type ids (ggml's): name of any id ggml has defined ("Q5_K"), NULL if unknown. */
const char *gguf_ttype_name(int type);
/* 1 if this reader accepts the type (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K) and then sets
 * elements per block and bytes per block; 0 otherwise. */
int gguf_ttype_block(int type, uint32_t *blck, uint32_t *tsize);

/* ---- writer ----------------------------------------------------------------------------
 * gguf_writer_new -> set_* / add_tensor (any order; keys kept in insertion order, a repeated key
 * replaces) -> gguf_writer_write (v3, streams tensor data with alignment padding) -> free.
 * Tensor data is borrowed, not copied: it must live until gguf_writer_write returns.
 * Setters return nothing: an invalid call (empty key, bad tensor shape or type, nbytes not
 * matching the type and shape, duplicate tensor name) or an allocation failure is remembered
 * and returned by gguf_writer_write before it creates the file. I/O failures (cannot create,
 * disk full) return GGUF_ERR_IO naming the path and errno's text. The data section and every
 * tensor's offset are multiples of `general.alignment` (must be a u32 power of two) if set,
 * else 32; nothing follows the last tensor. */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
void gguf_writer_set_bool(gguf_writer *w, const char *key, int v);
void gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* arrays of scalars: elem_type one of the numeric/bool types, data packed as that type */
void gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data,
                         uint64_t n);
void gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* copy a kv (any type, nested arrays included) from an open file, e.g. for quantize */
void gguf_writer_copy_kv(gguf_writer *w, const gguf_ctx *src, int64_t i);
/* ne[0] is the row length; data holds nbytes (= qt_row_size(type, ne[0]) * rows) */
void gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, int n_dims,
                            const int64_t *ne, const void *data, uint64_t nbytes);
int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen);

#endif
