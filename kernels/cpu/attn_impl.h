/* kernels/cpu/attn_impl.h — private seam between kern_attn (ops.c, no ISA flags) and its AVX2
 * variant (attn_avx2.c, built with -mavx2 -mfma). */
#ifndef SAMPAN_ATTN_IMPL_H
#define SAMPAN_ATTN_IMPL_H

#include "kern.h"

/* kern_attn_group for D and Dv (kv->v_dim) multiples of 8 on a CPU with AVX2 and FMA */
void attn_avx2_group(float *out, const float *q, int G, int D, float scale, int n,
                     const kern_kv_view *kv, float *att);

#endif
