/* kernels/cpu/pack.c — kern_pack: a weight's rows rearranged into the KERN_X8 layout of
 * gemm_x8_avx2.c (8-row groups, each block of the 8 rows together). Plain C: a copy, done once
 * at load time.
 */
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

/* F16: group g, step k = the 8 rows' f16 w[8g+r][k] (zero past the last row) */
static void pack__f16(const kern_weight *w, uint16_t *dst) {
    const int64_t K = w->n_cols, ng = (w->n_rows + 7) / 8;
    for (int64_t g = 0; g < ng; g++) {
        uint16_t *p = dst + (size_t)g * (size_t)K * 8;
        memset(p, 0, (size_t)K * 16);
        for (int r = 0; r < 8 && g * 8 + r < w->n_rows; r++) {
            const uint16_t *row = (const uint16_t *)((const uint8_t *)w->data +
                                                     (size_t)(g * 8 + r) * w->row_stride);
            for (int64_t k = 0; k < K; k++) p[(size_t)k * 8 + (size_t)r] = row[k];
        }
    }
}

/* Q4_K: see the Q4_K section of gemm_x8_avx2.c */
static void pack__q4k(const kern_weight *w, uint8_t *dst) {
    const int64_t nb = w->n_cols / QK_K, ng = (w->n_rows + 7) / 8;
    const size_t pbs = gemm_x8_group_size(QT_Q4_K, QK_K);
    for (int64_t g = 0; g < ng; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *p = dst + ((size_t)g * (size_t)nb + (size_t)b) * pbs;
            memset(p, 0, pbs);
            for (int r = 0; r < 8 && g * 8 + r < w->n_rows; r++) {
                const block_q4_K *blk = (const block_q4_K *)((const uint8_t *)w->data +
                                                             (size_t)(g * 8 + r) * w->row_stride) + b;
                memcpy(p + 2 * r, &blk->d, 2);
                memcpy(p + 16 + 2 * r, &blk->dmin, 2);
                for (int s = 0; s < 8; s++) {   /* the 6-bit scale and min of sub-block s */
                    const uint8_t *q = blk->scales;
                    uint8_t sc = s < 4 ? q[s] & 63 : (uint8_t)((q[s + 4] & 0xF) | ((q[s - 4] >> 6) << 4));
                    uint8_t mn = s < 4 ? q[s + 4] & 63 : (uint8_t)((q[s + 4] >> 4) | ((q[s] >> 6) << 4));
                    p[32 + 8 * s + r] = sc;
                    p[96 + 8 * s + r] = mn;
                }
                for (int j = 0; j < 4; j++)
                    for (int c = 0; c < 8; c++)
                        memcpy(p + 160 + 32 * (8 * j + c) + 4 * r, blk->qs + 32 * j + 4 * c, 4);
            }
        }
}

kern_weight kern_pack(const kern_weight *w, void *dst) {
    kern_weight v = *w;
    v.data = dst;
    v.layout = KERN_X8;
    v.row_stride = qt_row_size(w->type, w->n_cols);   /* bytes per row, for accounting only */
    if (w->type == QT_F16) {
        pack__f16(w, dst);
        return v;
    }
    if (w->type == QT_Q4_K) {
        pack__q4k(w, dst);
        return v;
    }
    const int q4 = w->type == QT_Q4_0;
    const size_t wbs = q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    const int S = q4 ? 4 : 8;                    /* 32-byte segments per packed block */
    const size_t pbs = 16 + 32 * (size_t)S;      /* bytes of a packed block of 8 rows */
    const int64_t nb = w->n_cols / 32, ng = (w->n_rows + 7) / 8;
    uint8_t *out = dst;
    for (int64_t g = 0; g < ng; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *p = out + ((size_t)g * (size_t)nb + (size_t)b) * pbs;
            memset(p, 0, pbs);
            for (int r = 0; r < 8; r++) {
                int64_t n = g * 8 + r;
                if (n >= w->n_rows) break;
                const uint8_t *blk = (const uint8_t *)w->data + (size_t)n * w->row_stride + (size_t)b * wbs;
                memcpy(p + 2 * r, blk, 2);                       /* f16 scale */
                for (int s = 0; s < S; s++)                      /* quants 4s..4s+3 */
                    memcpy(p + 16 + 32 * s + 4 * r, blk + 2 + 4 * s, 4);
            }
        }
    }
    return v;
}
