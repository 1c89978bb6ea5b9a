/* kernels/kern.h — the CPU kernel library: type traits, row conversions, dot products, matmul
 * and the element-wise ops of a transformer block.
 *
 * Legend: T = tokens in the batch, K = input features (row length of a weight), N = output
 * features (rows of a weight), H = heads, D = head dim. Weights are stored row-major as GGUF
 * stores them: a weight with GGUF dims ne = [K, N] is N rows of K elements each, in blocks of
 * its type. Activations are f32, row-major (T,K).
 *
 * Dot products follow ggml's scheme so that quantized results agree with llama.cpp: a weight
 * type names a `vec_dot_type`; the activation row is first converted to that type
 * (Q8_0 for Q8_0/Q4_0, Q8_K for Q4_K/Q6_K, F16 for F16, BF16 for BF16, F32 for F32), then each
 * weight row is dotted with it. Each (type, ISA) pair has a scalar reference in
 * kernels/cpu/dot_scalar.c; SIMD variants (dot_avx2.c, dot_avx512.c) are chosen at run time
 * from CPUID and tested against the scalar reference on random data.
 */
#ifndef SAMPAN_KERN_H
#define SAMPAN_KERN_H

#include <stddef.h>
#include <stdint.h>
#include "qtypes.h"

/* ---- type traits ---------------------------------------------------------------------- */

/* dst = dot(w_row, x_row) over n elements; w_row of the weight type, x_row of its vec_dot_type. */
typedef float (*qt_vec_dot_fn)(int64_t n, const void *w_row, const void *x_row);
/* convert n floats (n a multiple of the block size) to blocks of a type */
typedef void (*qt_from_float_fn)(const float *src, void *dst, int64_t n);
/* convert n elements of a type back to float */
typedef void (*qt_to_float_fn)(const void *src, float *dst, int64_t n);

typedef struct {
    const char *name;        /* "F32", "Q4_K", ... as GGUF tools print them */
    int block_size;          /* elements per block */
    size_t type_size;        /* bytes per block */
    qt_type vec_dot_type;    /* what activations are converted to before vec_dot */
    qt_to_float_fn to_float; /* dequantize */
    qt_from_float_fn from_float; /* quantize (reference quality; used for activations and
                                    by `sampan model quantize`); NULL if not supported */
    qt_vec_dot_fn vec_dot;   /* best variant for this CPU, set by kern_init() */
} qt_traits;

/* Call once per process before any other kern_ function: reads CPUID, picks SIMD variants.
 * force: NULL = best available, or "scalar", "avx2", "avx512" (tests use this to compare paths;
 * returns -1 if the CPU lacks the requested ISA). */
int kern_init(const char *force);
const char *kern_isa(void);                    /* "scalar", "avx2" or "avx512" */
/* NULL for an id we do not support (callers print the id) */
const qt_traits *qt_get(int type);
int qt_supported(int type);
/* bytes of a row of n elements, or 0 if n is not a multiple of the block size */
size_t qt_row_size(int type, int64_t n);

/* Scalar references, always available, for tests: */
qt_vec_dot_fn qt_vec_dot_scalar(int type);

/* ---- matmul --------------------------------------------------------------------------- */

struct pool;   /* kernels/pool.h: persistent worker threads */

/* A weight matrix view (N,K) in its stored type. Rows may be a slice of a bigger tensor. */
typedef struct {
    const void *data;   /* first byte of row 0 */
    int type;           /* qt_type */
    int64_t n_rows;     /* N */
    int64_t n_cols;     /* K (multiple of the type's block size) */
    size_t row_stride;  /* bytes between rows (== qt_row_size(type, K) for a whole tensor) */
    int layout;         /* KERN_ROWS: rows as GGUF stores them; KERN_X8: made by kern_pack */
} kern_weight;

enum { KERN_ROWS = 0, KERN_X8 = 1 };

/* Packed weights. Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K and F16 have a layout of their own for the
 * AVX2 kernels (KERN_X8, described in kernels/cpu/gemm_x8_avx2.c): rows in groups of 8, each
 * block (F16: each value) of the 8 rows stored together, so that one vector lane is one row
 * and 8 rows are one sequential stream.
 * kern_pack_size(w): bytes of the packed copy of a KERN_ROWS weight, or 0 when its type has no
 * packed layout on this CPU (or the scalar ISA is forced). kern_pack writes it to dst (64-byte
 * aligned) and returns the view over it; the values of kern_matmul are unchanged in meaning
 * (same operands, one f32 accumulator per output), and batch invariance holds as before.
 * A KERN_X8 weight can only be used by kern_matmul (no row views, no to_float). */
size_t kern_pack_size(const kern_weight *w);
kern_weight kern_pack(const kern_weight *w, void *dst);
/* kern_pack's copy made piece by piece: the groups of rows [r0, r1) (r0 a multiple of 8) into
 * their place in dst (the whole copy); the view is kern_pack_view(w, dst) once all are done. */
void kern_pack_rows(const kern_weight *w, int64_t r0, int64_t r1, void *dst);
kern_weight kern_pack_view(const kern_weight *w, void *dst);

/* out (T,N) = x (T,K) · W^T. `scratch` must hold kern_matmul_scratch(w, T) bytes (the
 * activations converted to vec_dot_type). Work is split over the pool's threads by rows of W;
 * the result for each (t, n) is computed by exactly one vec_dot of the same operands whatever T
 * and the thread count are, so it is batch- and thread-invariant bit for bit.
 * pool may be NULL (runs on the calling thread). */
size_t kern_matmul_scratch(const kern_weight *w, int T);
void kern_matmul(struct pool *pool, float *out, const kern_weight *w, const float *x, int T,
                 void *scratch);
/* out[i] = x · w[i]^T for i < n, the same values as n kern_matmul calls; when the weights share
 * type, K and layout (and n <= 3) it is one pool job: the input converted once, one barrier,
 * the rows of all n in one dynamic queue (Q/K/V, gate/up). scratch: kern_matmul_scratch of
 * the largest of them. */
void kern_matmul_n(struct pool *pool, int n, float *const *out, const kern_weight *const *w,
                   const float *x, int T, void *scratch);

/* ---- element-wise ops (f32) ----------------------------------------------------------- */

/* out (C) = x (C) / rms(x) * w (C) */
void kern_rmsnorm(float *out, const float *x, const float *w, int C, float eps);
/* RoPE scaling, as llama.cpp's ggml_rope_ext takes it; all zero is none (the angle of pair i
 * is then pos * base^(-2i/n_rot) / freq_factor[i], unscaled). */
typedef struct {
    float freq_scale;       /* interpolated angle = freq_scale * angle (linear: 1/factor); 0: 1 */
    float ext_factor;       /* YaRN: 1 mixes in the unscaled angle on the ramp; 0: none */
    float attn_factor;      /* cos and sin are multiplied by this (YaRN: times
                               1 + 0.1 ln(1/freq_scale)); 0: 1 */
    float corr_lo, corr_hi; /* YaRN: pairs below corr_lo keep the unscaled angle, above
                               corr_hi the interpolated one, linear ramp between */
} kern_rope_scaling;

/* Rotate q or k in place: x is (H, D); pairs are (2i, 2i+1) when neox == 0, (i, i + D/2) when
 * neox != 0, for i < n_rot/2. freq_factors (n_rot/2) may be NULL (Llama-3 rope_freqs);
 * sc may be NULL (no scaling). */
void kern_rope(float *x, int H, int D, int n_rot, int pos, float freq_base, int neox,
               const float *freq_factors, const kern_rope_scaling *sc);
void kern_softmax(float *x, int n);   /* in place, max-subtracted */

/* One KV head of one layer in a paged cache: position p's key is element
 * table[p / block_size] * block_stride + (p % block_size) * slot_stride of k, its value the
 * same of v. Elements are f32, f16 or bf16 (`type`; 0 = QT_F32); f16/bf16 rows are widened to
 * f32 exactly before any arithmetic, so the arithmetic is the f32 one on the stored values. */
typedef struct {
    const void *k, *v;           /* block 0, slot 0 of this layer and KV head */
    const int32_t *table;        /* block ids, one per block_size positions */
    int block_size;
    size_t block_stride, slot_stride;   /* in elements */
    int type;                    /* QT_F32, QT_F16 or QT_BF16 */
    int first;                   /* position of row 0: a sliding window's view starts there, so
                                    table entries of blocks wholly before it are never read */
    int v_dim;                   /* Dv: elements of a value (and of out); 0: D. Latent attention
                                    (MLA) reads its values as the first Dv elements of the key
                                    rows: v == k there */
} kern_kv_view;

/* One query head's causal attention: out (Dv) = sum_p softmax_p(scale * q . k_p) v_p over
 * positions p < n (Dv = kv->v_dim, or D); att: n floats of scratch. The arithmetic of a call depends only on its
 * operands (batch invariant); AVX2 when the ISA allows and D % 8 == 0, else scalar. */
void kern_attn(float *out, const float *q, int D, float scale, int n, const kern_kv_view *kv,
               float *att);
/* G query heads that share one KV head (grouped-query attention): q (G, D) and out (G, Dv), att
 * G*n floats. Each head's output is bit for bit kern_attn's on it; the K and V rows are read
 * once for the group instead of once per head. */
void kern_attn_group(float *out, const float *q, int G, int D, float scale, int n,
                     const kern_kv_view *kv, float *att);
/* out = silu(gate) * up, n elements */
void kern_swiglu(float *out, const float *gate, const float *up, int n);
/* out = gelu(gate) * up, n elements, GELU's tanh approximation as llama.cpp's CPU backend
 * evaluates it (om_gelu_f16: through half precision) */
void kern_geglu(float *out, const float *gate, const float *up, int n);

#endif
