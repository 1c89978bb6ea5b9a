/* kernels/cpu/pack.c — kern_pack: a weight's rows rearranged into the KERN_X8 layout of
 * gemm_x8_avx2.c (8-row groups, each block of the 8 rows together; the layouts and the X8_
 * offsets are described there and in gemm_impl.h). Plain C: a copy, done once at load time.
 */
#include <stddef.h>
#include <string.h>

#include "gemm_impl.h"
#include "kern.h"

size_t kern_pack_size(const kern_weight *w) {
    if (w->layout != KERN_ROWS || !gemm_x8_supported(w->type) || strcmp(kern_isa(), "scalar") == 0 ||
        (w->type != QT_F16 && w->n_cols % qt_get(w->type)->block_size) || w->n_rows <= 0 ||
        w->n_cols <= 0)
        return 0;
    return (size_t)((w->n_rows + 7) / 8) * gemm_x8_group_size(w->type, w->n_cols);
}

/* F16: group g, step k = the 8 rows' f16 w[8g+r][k] (zero past the last row); groups of rows
 * [r0, r1) */
static void pack__f16(const kern_weight *w, int64_t r0, int64_t r1, uint16_t *dst) {
    const int64_t K = w->n_cols;
    for (int64_t g = r0 / 8; g < (r1 + 7) / 8; g++) {
        uint16_t *p = dst + (size_t)g * (size_t)K * 8;
        memset(p, 0, (size_t)K * 16);
        for (int r = 0; r < 8 && g * 8 + r < w->n_rows; r++) {
            const uint16_t *row = (const uint16_t *)((const uint8_t *)w->data +
                                                     (size_t)(g * 8 + r) * w->row_stride);
            for (int64_t k = 0; k < K; k++) p[(size_t)k * 8 + (size_t)r] = row[k];
        }
    }
}

/* An h segment byte (the header of gemm_x8_avx2.c): bit sh = bit lo[sh], bit 4 + sh = bit
 * hi[sh] of the source, for the 4 segments sh = 0..3 of a family (one bit each: Q5_0, Q5_K). */
static uint8_t pack__hbyte(uint32_t src, const int lo[4], const int hi[4]) {
    uint8_t v = 0;
    for (int s = 0; s < 4; s++)
        v |= (uint8_t)(((src >> lo[s]) & 1) << s | ((src >> hi[s]) & 1) << (4 + s));
    return v;
}

/* Row r of one packed block p (8 rows) from the row's block blk. */
static void pack__row(int type, const uint8_t *blk, uint8_t *p, int r) {
    switch (type) {
    case QT_Q4_0:
    case QT_Q5_0:
    case QT_Q8_0:
    case QT_IQ4_NL:
    case QT_Q4_1:
    case QT_Q5_1: {
        const int S = type == QT_Q8_0 ? 8 : 4;
        const uint8_t *h = type == QT_Q5_0 ? ((const block_q5_0 *)blk)->qh
                         : type == QT_Q5_1 ? ((const block_q5_1 *)blk)->qh : NULL;
        const uint8_t *qs = type == QT_Q5_0 ? ((const block_q5_0 *)blk)->qs
                          : type == QT_Q4_1 ? ((const block_q4_1 *)blk)->qs
                          : type == QT_Q5_1 ? ((const block_q5_1 *)blk)->qs : blk + 2;
        memcpy(p + 2 * r, blk, 2);                   /* f16 scale */
        if (type == QT_Q4_1 || type == QT_Q5_1)      /* f16 min, after d */
            memcpy(p + (type == QT_Q4_1 ? X8_Q4_1_M : X8_Q5_1_M) + 2 * r, blk + 2, 2);
        for (int s = 0; s < S; s++) memcpy(p + X8_B32_Q + 32 * s + 4 * r, qs + 4 * s, 4);
        if (h) {   /* byte k: the fifth bits of values 4s + k and 16 + 4s + k */
            uint32_t qh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
            for (int k = 0; k < 4; k++) {
                const int lo[4] = { k, 4 + k, 8 + k, 12 + k }, hi[4] = { 16 + k, 20 + k, 24 + k, 28 + k };
                p[(type == QT_Q5_0 ? X8_Q5_0_H : X8_Q5_1_H) + 4 * r + k] = pack__hbyte(qh, lo, hi);
            }
        }
        return;
    }
    case QT_Q4_K:
    case QT_Q5_K: {
        const int q5 = type == QT_Q5_K;
        const uint8_t *scales = blk + offsetof(block_q4_K, scales);
        const uint8_t *qs = blk + (q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs));
        memcpy(p + 2 * r, blk, 2);              /* d */
        memcpy(p + 16 + 2 * r, blk + 2, 2);     /* dmin */
        for (int s = 0; s < 8; s++) qt_q4k_scale_min(s, scales, p + X8_QK_SC + 8 * s + r, p + X8_QK_MN + 8 * s + r);
        for (int u = 0; u < 4; u++)
            for (int c = 0; c < 8; c++) memcpy(p + X8_QK_Q + 32 * (8 * u + c) + 4 * r, qs + 32 * u + 4 * c, 4);
        if (q5) {   /* qh[l] bits 2u, 2u+1: the fifth bits of values 64u + l and 64u + 32 + l */
            static const int lo[4] = { 0, 2, 4, 6 }, hi[4] = { 1, 3, 5, 7 };
            const uint8_t *qh = ((const block_q5_K *)blk)->qh;
            for (int l = 0; l < 32; l++) p[X8_Q5K_H + 32 * (l / 4) + 4 * r + l % 4] = pack__hbyte(qh[l], lo, hi);
        }
        return;
    }
    default: {   /* Q6_K: ql and qh as stored, segment by segment */
        const block_q6_K *q = (const block_q6_K *)blk;
        memcpy(p + 2 * r, &q->d, 2);
        for (int s = 0; s < 16; s++) memcpy(p + X8_Q6K_SC + 8 * s + r, &q->scales[s], 1);
        for (int i = 0; i < 32; i++) memcpy(p + X8_Q6K_QL + 32 * i + 4 * r, q->ql + 4 * i, 4);
        for (int i = 0; i < 16; i++) memcpy(p + X8_Q6K_QH + 32 * i + 4 * r, q->qh + 4 * i, 4);
        return;
    }
    }
}

void kern_pack_rows(const kern_weight *w, int64_t r0, int64_t r1, void *dst) {
    if (w->type == QT_F16) {
        pack__f16(w, r0, r1, dst);
        return;
    }
    const qt_traits *t = qt_get(w->type);
    const size_t wbs = t->type_size;
    const size_t pbs = gemm_x8_group_size(w->type, t->block_size);   /* one packed block */
    const int64_t nb = w->n_cols / t->block_size;
    uint8_t *out = dst;
    for (int64_t g = r0 / 8; g < (r1 + 7) / 8; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *p = out + ((size_t)g * (size_t)nb + (size_t)b) * pbs;
            memset(p, 0, pbs);
            for (int r = 0; r < 8 && g * 8 + r < w->n_rows; r++)
                pack__row(w->type, (const uint8_t *)w->data + (size_t)(g * 8 + r) * w->row_stride + (size_t)b * wbs,
                          p, r);
        }
}

kern_weight kern_pack_view(const kern_weight *w, void *dst) {
    kern_weight v = *w;
    v.data = dst;
    v.layout = KERN_X8;
    v.row_stride = qt_row_size(w->type, w->n_cols);   /* bytes per row, for accounting only */
    return v;
}

kern_weight kern_pack(const kern_weight *w, void *dst) {
    kern_pack_rows(w, 0, w->n_rows, dst);
    return kern_pack_view(w, dst);
}
