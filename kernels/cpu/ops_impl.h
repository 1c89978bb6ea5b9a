/* kernels/cpu/ops_impl.h — private seam between the element-wise ops (ops.c, no ISA flags) and
 * their AVX2 variants (ops_avx2.c, built with -mavx2 -mfma). */
#ifndef SAMPAN_OPS_IMPL_H
#define SAMPAN_OPS_IMPL_H

/* x[i] = e^(x[i] - shift), i < n (the exponentials of kern_softmax) */
void ops_avx2_exp_shift(float *x, int n, float shift);
/* out = silu(gate) * up, n elements (kern_swiglu) */
void ops_avx2_swiglu(float *out, const float *gate, const float *up, int n);

#endif
