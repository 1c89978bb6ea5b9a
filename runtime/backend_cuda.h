/* runtime/backend_cuda.h — what the CUDA backend reports beyond the seam (runtime/backend.h):
 * the device and its peaks, so that `sampan bench --backend cuda` can state its ceilings the
 * way it does for the CPU (achieved HBM bandwidth, tensor-core FLOP/s as fractions of peak).
 *
 * Implemented in kernels/cuda/backend_cuda.cu (the module libsampan-cuda.so) and reached
 * through runtime/backend_cuda_load.c, which returns -1 with the reason when there is no
 * module. C header, no CUDA types.
 *
 * Peaks (dense, no sparsity), from the device's attributes (CUDA 13 dropped clockRate and
 * memoryClockRate from cudaDeviceProp: cudaDeviceGetAttribute is used):
 *   HBM      memory clock (cudaDevAttrMemoryClockRate, kHz) x 2 (double data rate)
 *            x bus width (bits) / 8: H100 SXM 2619 MHz x 2 x 5120 / 8 = 3.35 TB/s.
 *   FLOP/s   SMs x SM clock (cudaDevAttrClockRate, the boost clock) x FLOP per SM per clock:
 *              compute capability   BF16/F16 tensor   TF32 tensor   F32 SIMT (FMA = 2)
 *              8.0 (A100)                 2048             1024           128
 *              8.6, 8.9 (A10, L40S)       1024              512           256
 *              9.0 (H100, H200)           4096             2048           256
 *              10.0 (B200)                8192             4096           256
 *            others: 0 (unknown; bench prints no fraction). The per-SM figures are NVIDIA's
 *            datasheet peaks divided by SMs x the clock they were quoted at (A100: 312 TFLOP/s
 *            / (108 x 1.41 GHz); H100 SXM: 989 / (132 x 1.83)). Our clock is the device's
 *            reported boost clock, which can be higher (H100/H200 SXM: 1.98 GHz, so our BF16
 *            peak is 1070 TFLOP/s, 8% above the datasheet's): fractions of it are conservative.
 *            GeForce parts of 8.6/8.9 run F16 with f32 accumulation at half the rate shown.
 */
#ifndef SAMPAN_BACKEND_CUDA_H
#define SAMPAN_BACKEND_CUDA_H

#include <stddef.h>

#include "backend.h"
#include "qtypes.h"

typedef struct {
    char name[96];                 /* "NVIDIA H200" */
    int device;                    /* ordinal the backend runs on */
    int cc_major, cc_minor, n_sm;
    double sm_clock_hz, mem_clock_hz;
    int bus_bits;
    double hbm_bytes_s;            /* peak HBM bandwidth, bytes/s */
    double flops_bf16, flops_f16, flops_tf32, flops_f32;   /* peaks, FLOP/s; 0 = unknown */
    size_t mem_total, mem_free;    /* bytes, now */
    /* the backend's choices (kernels/cuda/backend_cuda.cu's header) */
    int dequant;                   /* quantized weights have BF16 copies for T > 8 */
    int invariant;                 /* GEMV and decode attention for every batch */
    int tf32;                      /* F32 products on TF32 tensor cores */
    size_t weight_bytes;           /* device bytes of the weights as uploaded */
    size_t copy_bytes;             /* of their BF16 copies */
    size_t copy_skipped_bytes;     /* BF16 copies not made: they would eat the reserve */
} backend_cuda_props;

/* b must be a CUDA backend; 0, or -1 with the message in err */
int backend_cuda_info(const backend *b, backend_cuda_props *out, char *err, size_t errlen);

/* the peak FLOP/s of the path a prefill product of this weight type takes: F16 and BF16 on
 * their tensor cores, quantized types through their BF16 copies (or, without copies, the
 * GEMV's F32 SIMT), F32 in F32 SIMT (or TF32 tensor cores when enabled); every type in F32
 * SIMT in the invariant mode (GEMV only); 0 = unknown */
static inline double backend_cuda_peak_flops(const backend_cuda_props *p, int weight_type) {
    if (p->invariant) return p->flops_f32;
    switch (weight_type) {
    case QT_F32: return p->tf32 ? p->flops_tf32 : p->flops_f32;
    case QT_F16: return p->flops_f16;
    case QT_BF16: return p->flops_bf16;
    default: return p->dequant ? p->flops_bf16 : p->flops_f32;
    }
}

#endif
