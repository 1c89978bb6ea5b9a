/* kernels/attn_math.h — index math of attention over the paged KV cache, shared by the CUDA
 * kernels (kernels/cuda/k_attn.cu) and their tests.
 *
 * Layout of one layer's cache on one rank: K and V each (n_blocks, Hkv, block_size, D) of the
 * cache's element type. Position p of a sequence whose block table is `table` lives in block
 * table[p / block_size], slot p % block_size; the row of KV head kvh there starts at element
 * ((block * Hkv + kvh) * block_size + slot) * D. This is runtime/model.c's kv_index with the
 * layer folded into the base pointer; the CPU keeps its own copy of the formula (model.c), so
 * nothing here changes what the CPU computes.
 *
 * Heads: local query head h (0..H-1) of a rank whose first global head is head0 reads the
 * rank's KV head (head0 + h) / group - kv_head0 (group = n_heads / n_kv_heads of the whole
 * model, kv_head0 = first global KV head the rank keeps).
 *
 * Units: the kernels give one thread block the query heads of one KV head, so each K/V row is
 * read once for all of them. A KV head's group of heads is cut into am_unit_chunks(group)
 * chunks of at most AM_UNIT_MAX heads (one chunk when group <= AM_UNIT_MAX); unit u of a rank
 * is chunk u % chunks of its (u / chunks)-th KV head; the rank's head range [head0, head0 + H)
 * may cut the first and last unit short, or leave a unit empty.
 */
#ifndef SAMPAN_ATTN_MATH_H
#define SAMPAN_ATTN_MATH_H

#include <stddef.h>
#include <stdint.h>

#include "cuda/hd.h"   /* QT_HD */

enum { AM_UNIT_MAX = 8 };   /* most query heads one thread block serves */

/* element offset of the row of KV head kvh in block blk, slot `slot` */
static inline QT_HD size_t am_kv_row(int32_t blk, int slot, int Hkv, int kvh, int block_size,
                                     int D) {
    return (((size_t)blk * (size_t)Hkv + (size_t)kvh) * (size_t)block_size + (size_t)slot) *
           (size_t)D;
}

/* Sliding window (backend_attn.window): the first position a query at pos reads, pos - W + 1
 * when W > 0 cuts its context (the CPU's kern_kv_view.first, runtime/backend_cpu.c), else 0.
 * Blocks wholly before it may have table entry -1: the kernels never read their entries. */
static inline QT_HD int am_window_first(int pos, int W) {
    return W > 0 && pos >= W ? pos - W + 1 : 0;
}

/* this rank's KV head of its local query head h */
static inline QT_HD int am_kv_head(int h, int head0, int group, int kv_head0) {
    return (head0 + h) / group - kv_head0;
}

/* chunks per KV head, and heads per chunk (the last chunk of a group may be shorter) */
static inline QT_HD int am_unit_chunks(int group) {
    return (group + AM_UNIT_MAX - 1) / AM_UNIT_MAX;
}
static inline QT_HD int am_unit_width(int group) {
    int c = am_unit_chunks(group);
    return (group + c - 1) / c;
}

/* units of a rank with H local heads */
static inline QT_HD int am_unit_count(int H, int head0, int group) {
    int k_first = head0 / group, k_last = (head0 + H - 1) / group;
    return (k_last - k_first + 1) * am_unit_chunks(group);
}

/* local heads [*h_lo, *h_hi) of unit u (empty when *h_lo >= *h_hi) */
static inline QT_HD void am_unit_heads(int u, int H, int head0, int group, int *h_lo,
                                       int *h_hi) {
    int chunks = am_unit_chunks(group), width = am_unit_width(group);
    int k = head0 / group + u / chunks, c = u % chunks;
    int g0 = k * group + c * width;
    int g1 = g0 + width < (k + 1) * group ? g0 + width : (k + 1) * group;
    int lo = g0 > head0 ? g0 : head0;
    int hi = g1 < head0 + H ? g1 : head0 + H;
    *h_lo = lo - head0;
    *h_hi = hi - head0;
}

#endif
