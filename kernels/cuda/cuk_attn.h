/* kernels/cuda/cuk_attn.h — C-callable host wrappers of the CUDA attention over the paged KV
 * cache (k_attn.cu).
 *
 * Legend: T = query positions in the call, H = this rank's query heads, D = head dim,
 * Hkv = KV heads in this rank's cache. Every pointer is a device pointer unless said otherwise;
 * q and out are (T, H, D) f32, row-major, 16-byte aligned. The cache of one layer, K and V, is
 * each (n_blocks, Hkv, block_size, D) of kv_type (QT_F32, QT_F16 or QT_BF16; f16/bf16 stored
 * as uint16), 16-byte aligned; index math in kernels/attn_math.h. Query t attends causally
 * to positions 0..pos[t] of its own sequence, whose block table is row t of `tables`
 * (T, max_blocks) int32: position p lives in block tables[t * max_blocks + p / block_size],
 * slot p % block_size. Local head h reads KV head (head0 + h) / group - kv_head0. With a
 * sliding window W (a->window > 0) query t reads positions max(0, pos[t]-W+1)..pos[t] only
 * (am_window_first, kernels/attn_math.h).
 *
 * out[t][h] = sum_p softmax_p(scale * q[t][h] . k_p) v_p, f32 accumulation, K/V converted
 * from f16/bf16 exactly: kern_attn_group's values up to the order of float additions (the
 * tests in tests/cuda/test_k_attn.cc hold it to 1e-5 x the output's standard deviation).
 *
 * Each wrapper enqueues on `stream`, never synchronises, never prints, and returns 0 or a
 * cudaError_t (as int): cudaErrorInvalidValue (1) for arguments it refuses (D not a multiple
 * of 8 in 8..256, a type other than F32/F16/BF16, a pointer not 16-byte aligned, a missing
 * scratch, counts < 1), else the launch's error. T == 0 enqueues nothing and returns 0.
 */
#ifndef SAMPAN_CUK_ATTN_H
#define SAMPAN_CUK_ATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *cuk_stream;   /* == cudaStream_t, without the CUDA headers */

/* Positions per split of the decode kernel: contexts longer than this are cut into splits of
 * CUK_ATTN_SPLIT positions, one thread block each, merged by a second kernel. Fixed, so a
 * query's arithmetic depends only on its own operands (batch invariance, as on the CPU). */
enum { CUK_ATTN_SPLIT = 256 };
/* cuk_attention sends a run of at least this many consecutive positions of one sequence to
 * the prefill kernel, everything else to the decode kernel */
enum { CUK_ATTN_PREFILL_MIN = 16 };

/* one layer's cache and the rank's heads; owned by the caller, read during the call only */
typedef struct {
    const void *k, *v;         /* (n_blocks, Hkv, block_size, D) of kv_type */
    int kv_type;               /* QT_F32, QT_F16, QT_BF16 */
    int Hkv;                   /* KV heads in this rank's cache */
    int block_size;            /* positions per block, >= 1 */
    int D;                     /* head dim: a multiple of 8, 8..256 */
    int H;                     /* this rank's query heads */
    int head0;                 /* first global query head of this rank */
    int group;                 /* n_heads / n_kv_heads of the whole model */
    int kv_head0;              /* first global KV head this rank keeps */
    float scale;               /* usually 1/sqrt(D) */
    int window;                /* W > 0: query at p reads p-W+1..p only, and no table entry of
                                  a block wholly before p-W+1 (those may be -1); 0: 0..p */
    const int32_t *tables;     /* (T, max_blocks): row t is query t's block table */
    int max_blocks;            /* row length of tables */
} cuk_attn_args;

/* Bytes of scratch cuk_attn_decode (and cuk_attention) needs for T queries whose contexts
 * are at most max_ctx positions (pos[t] < max_ctx): T * H * splits * (D + 2) floats, splits =
 * ceil(max_ctx / CUK_ATTN_SPLIT); 0 when max_ctx <= CUK_ATTN_SPLIT (no second pass). */
size_t cuk_attn_scratch_bytes(const cuk_attn_args *a, int T, int max_ctx);

/* Decode and mixed batches: T <= 65535 independent queries (any sequences, any positions
 * pos[t] < max_ctx: a longer context is cut to the splits of max_ctx, wrongly but in bounds).
 * Grid (splits, units, T): one block per (split of CUK_ATTN_SPLIT positions, KV-head unit,
 * query), then a merge kernel when splits > 1. scratch: cuk_attn_scratch_bytes(a, T, max_ctx)
 * bytes, 16-byte aligned (may be NULL when that is 0); dynamic shared memory <= 34 KB a
 * block, and 4 bytes per split for the merge: no opt-in above 48 KB is needed. */
int cuk_attn_decode(const cuk_attn_args *a, float *out, const float *q, const int32_t *pos,
                    int T, int max_ctx, void *scratch, cuk_stream stream);

/* Prefill: T queries of one sequence, all reading the block table in row 0 of a->tables
 * (a->tables itself: pass the row of the run's first query), positions pos[t] best
 * consecutive (any order is correct; tiles are sized for a dense causal triangle).
 * Flash-attention style; needs no scratch; dynamic shared memory <= 43 KB a block. */
int cuk_attn_prefill(const cuk_attn_args *a, float *out, const float *q, const int32_t *pos,
                     int T, cuk_stream stream);

/* The one call a backend needs: splits the batch, with the host copies pos_h (T) and seq_h
 * (T: a sequence id per query; equal ids share a block table), into maximal runs of
 * consecutive positions of one sequence; runs of >= CUK_ATTN_PREFILL_MIN go to
 * cuk_attn_prefill, the positions between them to cuk_attn_decode (scratch as there, for T;
 * launches share it in stream order). seq_h NULL: every query is decoded. */
int cuk_attention(const cuk_attn_args *a, float *out, const float *q, const int32_t *pos,
                  int T, const int32_t *pos_h, const int32_t *seq_h, int max_ctx,
                  void *scratch, cuk_stream stream);

#ifdef __cplusplus
}
#endif

#endif
