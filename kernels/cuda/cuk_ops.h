/* kernels/cuda/cuk_ops.h — C-callable host wrappers of the CUDA element-wise, dequantization,
 * KV-write, decode-GEMV, latent-attention and MoE-routing kernels (k_norm.cu, k_rope.cu,
 * k_ew.cu, k_dequant.cu, k_kv.cu, k_gemv.cu, k_mla.cu, k_moe.cu).
 *
 * Legend: T = positions in the batch, C = model dim, H = heads, D = head dim, K = input
 * features, N = output features (rows of a weight). Every pointer is a device pointer unless
 * said otherwise; activations are f32, row-major. Each wrapper enqueues on `stream` (last
 * argument), never synchronises, never prints, and returns 0 or a cudaError_t (as int):
 * cudaErrorInvalidValue (1) for arguments it refuses, else the launch's error.
 * Element types are qt_type ids (kernels/qtypes.h).
 *
 * Numerics against the CPU kernels (kernels/kern.h), which the tests in tests/cuda/ check:
 *   rmsnorm      sum of squares in double (as the CPU), other steps the same float ops
 *   rope         angles bit for bit the CPU's; sin/cos within 1 ulp of glibc's
 *   swiglu       CUDA expf (2 ulp) where the CPU has its own exp: within 1e-6 relative
 *   geglu        the CPU's half table (built on the host, uploaded): bit for bit
 *   scale, add, bias, gather, scatter, sum_rows, interleave, pad, dequant, embed, kv_write:
 *                bit for bit
 *   gemv         the CPU's kern_matmul up to the order of float additions (see k_gemv.cu)
 *   mla_kv_write cuk_rmsnorm then cuk_rope bit for bit (so the CPU's as those two are)
 *   mla_attention kern_attn_group up to the order of float additions (see k_mla.cu)
 *   moe_route    the CPU's rules exactly; weights within 1e-6 relative (expf, see k_moe.cu)
 */
#ifndef SAMPAN_CUK_OPS_H
#define SAMPAN_CUK_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "kern.h"   /* kern_rope_scaling */

typedef struct CUstream_st *cuk_stream;   /* == cudaStream_t, without the CUDA headers */

/* ---- k_norm.cu ---- */
/* out (T,C) = x (T,C) * (1/sqrt(mean(x^2) + eps)) * w (C); out may be x */
int cuk_rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps,
                cuk_stream stream);

/* ---- k_rope.cu ---- */
/* x (T, H, D) rotated in place, position t at pos[t] (T int32); pairs (2i, 2i+1) when
 * neox == 0, (i, i + n_rot/2) when neox != 0, for i < n_rot/2 (n_rot even, <= D);
 * freq_factors (n_rot/2 floats) may be NULL; scaling (kern.h) may be NULL. theta_scale is computed on the host, as the CPU does. */
int cuk_rope(float *x, const int32_t *pos, int T, int H, int D, int n_rot, float freq_base,
             int neox, const float *freq_factors, const kern_rope_scaling *scaling,
             cuk_stream stream);

/* ---- k_ew.cu ---- */
/* out (n) = silu(gate) * up; out may be gate or up */
int cuk_swiglu(float *out, const float *gate, const float *up, size_t n, cuk_stream stream);
/* out (n) = gelu(gate) * up, gelu looked up in table (65536 halves from om_gelu_fill,
 * kernels/ops_math.h: kern_geglu's bits); out may be gate or up */
int cuk_geglu(float *out, const float *gate, const float *up, const uint16_t *table, size_t n,
              cuk_stream stream);
/* x (n) *= s */
int cuk_scale(float *x, float s, size_t n, cuk_stream stream);
/* x (n) += y (n) */
int cuk_add(float *x, const float *y, size_t n, cuk_stream stream);
/* x (T,N) += b (N) for every row */
int cuk_bias(float *x, const float *b, int T, int N, cuk_stream stream);
/* out (n, C) = in[rows[i]] (rows: n int32, each in [0, rows of in)); out must not overlap in */
int cuk_gather_rows(float *out, const float *in, const int32_t *rows, int n, int C,
                    cuk_stream stream);
/* out[dst[i]] (rows of C) = in[i] * w[i] for i < n (dst, w: n int32 / floats, device); the dst
 * rows are distinct; out must not overlap in */
int cuk_scatter_rows_scaled(float *out, const float *in, const int32_t *dst, const float *w, int n,
                            int C, cuk_stream stream);
/* out (n, C) = the k rows y[i*k .. i*k + k) summed in that order, for i < n (k >= 1) */
int cuk_sum_rows(float *out, const float *y, int n, int k, int C, cuk_stream stream);
/* out (T, tp*n) from in (tp, T, n): out row t = in[0][t] | in[1][t] | ... (the all-gathered
 * columns of model.c's gather_cols); out must not overlap in */
int cuk_interleave(float *out, const float *in, int tp, int T, int n, cuk_stream stream);
/* out (R, P) = in (R, V) with columns V..P-1 set to -inf (P >= V); out must not overlap in
 * (the CPU spreads the rows in place; here the GEMV writes to scratch first) */
int cuk_pad_rows(float *out, const float *in, int R, int V, int P, cuk_stream stream);

/* ---- k_dequant.cu ---- */
/* out (n_rows, K) = rows of w (type, rows row_stride bytes apart, K a multiple of the block
 * size) dequantized to out_type: QT_F32 (bit for bit to_float), QT_F16 or QT_BF16 (that value
 * rounded to nearest even, bit for bit qt_f32_to_f16 / qt_f32_to_bf16). w types: F32, F16,
 * BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS; w and
 * row_stride multiples of 4 for F32, of 2 for the others. */
int cuk_dequant(void *out, int out_type, const void *w, int type, int64_t n_rows, int64_t K,
                size_t row_stride, cuk_stream stream);
/* out (T,C) f32: row tokens[t] - row0 of the embedding table w (n_rows rows of C elements of
 * type, row_stride bytes apart) dequantized when 0 <= tokens[t] - row0 < n_rows, else zeros
 * (another rank owns that row); alignment as for cuk_dequant */
int cuk_embed(float *out, const void *w, int type, int64_t n_rows, int64_t row0, size_t row_stride,
              const int32_t *tokens, int T, int C, cuk_stream stream);

/* ---- k_kv.cu ---- */
/* Paged KV write of one layer: k and v are (T, Hkv*D) f32; k_cache and v_cache are
 * (n_blocks, Hkv, block_size, D) of elem_type (QT_F32, QT_F16 or QT_BF16, rounded to nearest
 * even). Position t goes to block tables[t * max_blocks + pos[t] / block_size], slot
 * pos[t] % block_size (tables: (T, max_blocks) int32, one row per position; a negative block
 * id skips the position). */
int cuk_kv_write(void *k_cache, void *v_cache, int elem_type, const float *k, const float *v,
                 const int32_t *pos, const int32_t *tables, int max_blocks, int T, int Hkv,
                 int D, int block_size, cuk_stream stream);

/* ---- k_mla.cu ---- */
/* Multi-head latent attention's cache write of one layer: kva (T, R + Dr) f32 is each
 * position's latent then its RoPE key; the latent is RMS-normed by norm (R), the key rotated
 * (pairs (2i, 2i+1), Dr even; freq_factors (Dr/2) and scaling may be NULL) at pos[t], and the
 * R + Dr values stored to cache (n_blocks, block_size, R + Dr) of elem_type (QT_F32, QT_F16 or
 * QT_BF16, rounded to nearest even) at block tables[t * max_blocks + pos[t] / block_size],
 * slot pos[t] % block_size (a negative block id skips the position). */
int cuk_mla_kv_write(void *cache, int elem_type, const float *kva, const float *norm, float eps,
                     const int32_t *pos, const int32_t *tables, int max_blocks, int T, int R,
                     int Dr, int block_size, float freq_base, const float *freq_factors,
                     const kern_rope_scaling *scaling, cuk_stream stream);
/* out (T, H, Dv) = attention of q (T, H, D) over one KV head: cache (n_blocks, block_size, D)
 * of elem_type, keys the whole rows, values their first Dv elements (Dv <= D); query t reads
 * positions 0..pos[t] through row t of tables (T, max_blocks); scale applied to q.k. T <=
 * 65535; cudaErrorInvalidValue when the queries of one head and their accumulators (D + Dv
 * floats) do not fit 48 KB of shared memory. */
int cuk_mla_attention(const void *cache, int elem_type, int block_size, int D, int Dv,
                      float *out, const float *q, const int32_t *pos, const int32_t *tables,
                      int max_blocks, int T, int H, float scale, cuk_stream stream);

/* ---- k_moe.cu ---- */
/* DeepSeekMoE routing of T positions from router logits (T, E): ids (T, k) in ascending order
 * and weights (T, k), both device, by cpu__moe_route's rules (runtime/backend_cpu.c): gating
 * 1 softmax, 2 sigmoid; bias (E) or NULL added for selection only; n_group > 1: group-limited
 * (E a multiple of n_group, 1 <= n_group_used <= n_group); norm: the weights over their sum
 * (clamped at 2^-14), then times scale. A position with fewer than k selectable experts gets
 * -1 ids past those it found. 1 <= k <= E. */
int cuk_moe_route(int32_t *ids, float *w, const float *logits, const float *bias, int T, int E,
                  int k, int n_group, int n_group_used, int gating, int norm, float scale,
                  cuk_stream stream);

/* ---- k_gemv.cu ---- */
/* Decode GEMV: out (T,N) = x (T,K) · W^T for 1 <= T <= 8; W is N rows of K elements of type
 * (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)
 * in the file layout (KERN_ROWS), row_stride bytes apart (w and row_stride multiples of 4 for
 * F32 and Q4_K, of 2 for the others). x is first converted to the type's vec_dot_type
 * exactly as the CPU does (Q8_0 for the 32-element types, Q8_K for the 256-element ones,
 * f16/bf16 rounding for F16/BF16) into `scratch` (cuk_gemv_scratch_bytes(type, K, T) bytes, 16-byte aligned; not
 * used for F32). Returns cudaErrorInvalidValue for T outside 1..8, an unsupported type or K not
 * a multiple of the block size. */
size_t cuk_gemv_scratch_bytes(int type, int64_t K, int T);
int cuk_gemv(float *out, const void *w, int type, int N, int K, size_t row_stride,
             const float *x, int T, void *scratch, cuk_stream stream);

#ifdef __cplusplus
}
#endif

#endif
