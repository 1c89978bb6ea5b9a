/* tests/cuda/test_k_util.h — helpers shared by the shim tests of kernels/cuda/k_*.cu
 * (test_k_*.cc): a seeded generator, "device" buffers (the shim's malloc'd memory), a check
 * counter that prints the first failures, and the loop over the shim's thread orders.
 * Include after the kernel file (which brings in the shim). */
#ifndef SAMPAN_TEST_K_UTIL_H
#define SAMPAN_TEST_K_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

extern "C" {
#include "backend.h"
#include "kern.h"
}

static uint64_t tk_state = 0x9e3779b97f4a7c15ull;
static inline uint64_t tk_next(void) {
    tk_state ^= tk_state << 13;
    tk_state ^= tk_state >> 7;
    tk_state ^= tk_state << 17;
    return tk_state;
}
/* uniform in [lo, hi) */
static inline float tk_unif(float lo, float hi) {
    return lo + (hi - lo) * (float)((tk_next() >> 40) * (1.0 / 16777216.0));
}
static inline int tk_int(int n) { return (int)(tk_next() % (uint64_t)n); }

static int tk_fails = 0;
#define TK_CHECK(cond, ...)                                                 \
    do {                                                                    \
        if (!(cond)) {                                                      \
            if (tk_fails++ < 20) {                                          \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);        \
                fprintf(stderr, __VA_ARGS__);                               \
                fprintf(stderr, "\n");                                      \
            }                                                               \
        }                                                                   \
    } while (0)

/* a device copy of n bytes of host data (NULL data: uninitialised) */
static inline void *tk_dev(const void *data, size_t n) {
    void *p = NULL;
    if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc of %zu bytes failed\n", n);
        exit(1);
    }
    if (data) cudaMemcpy(p, data, n, cudaMemcpyHostToDevice);
    return p;
}
static inline void tk_get(void *dst, const void *dev, size_t n) {
    cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost);
}

/* float bits, for exact comparisons that treat equal nans as equal */
static inline uint32_t tk_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* element i of a KV cache buffer of type (QT_F32, QT_F16 or QT_BF16) as f32, and x stored
 * there (rounded by the CPU's conversions) */
static inline float tk_elem_get(const std::vector<uint8_t> &buf, int type, size_t i) {
    if (type == QT_F32) {
        float x;
        memcpy(&x, &buf[4 * i], 4);
        return x;
    }
    uint16_t h;
    memcpy(&h, &buf[2 * i], 2);
    return type == QT_F16 ? qt_f16_to_f32(h) : qt_bf16_to_f32(h);
}
static inline void tk_elem_put(std::vector<uint8_t> &buf, int type, size_t i, float x) {
    if (type == QT_F32) {
        memcpy(&buf[4 * i], &x, 4);
    } else {
        uint16_t h = type == QT_F16 ? qt_f32_to_f16(x) : qt_f32_to_bf16(x);
        memcpy(&buf[2 * i], &h, 2);
    }
}

/* the CPU backend on one thread (the reference of the backend slots), or exit(1) */
static inline backend *tk_cpu_backend(void) {
    char err[256];
    backend *b = backend_cpu_new(1, err, sizeof err);
    if (!b) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return b;
}

/* ../shared from the environment (meson sets SAMPAN_SHARED), or NULL */
static inline const char *tk_shared(void) {
    const char *s = getenv("SAMPAN_SHARED");
    return s && *s ? s : NULL;
}

/* the files of ../shared/new-types/models (the types beyond the first set): two small-llama
 * models and one-tensor files */
static const char *const tk_new_type_files[] = {
    "small-llama-q5_k_m.gguf", "small-llama-iq4_xs.gguf", "tensor-q4_1.gguf",
    "tensor-q5_0.gguf",        "tensor-q5_1.gguf",        "tensor-iq4_nl.gguf",
    "tensor-iq4_xs.gguf",      "tensor-q2_k.gguf",        "tensor-q3_k_m.gguf",
    "tensor-q5_k_m.gguf",
};

#define TK_FOR_ORDERS(o)                                                        \
    for (int o = 0; o < cu_shim_n_orders() && (cu_shim_set_order(o), 1); o++)

static inline int tk_finish(const char *name) {
    if (tk_fails) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, tk_fails);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif
