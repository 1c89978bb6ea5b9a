/* runtime/backend.h — the compute backend seam.
 *
 * A backend is a vtable (ggml's ggml_backend_i): the model's forward pass calls these slots and
 * never tests which device it runs on. The CPU backend (runtime/backend_cpu.c) is first class;
 * a CUDA backend registers the same table from kernels/cuda/. Life cycle:
 * backend_cpu_new -> matmul / parallel ... -> b->i->free(b).
 */
#ifndef SAMPAN_BACKEND_H
#define SAMPAN_BACKEND_H

#include <stddef.h>
#include "kern.h"
#include "pool.h"

typedef struct backend backend;

typedef struct {
    int version;                 /* 1 */
    const char *name;
    void (*free)(backend *b);
    /* out (T,N) = x (T,K) . W^T, batch-invariant per kern_matmul */
    int (*matmul)(backend *b, float *out, const kern_weight *w, const float *x, int T);
    /* out[i] = x . w[i]^T for i < n (n <= 3): the same values as n matmul calls, which a backend
     * may run as one job over a shared input (Q/K/V, gate/up) */
    int (*matmul_n)(backend *b, int n, float *const *out, const kern_weight *const *w,
                    const float *x, int T);
    /* run fn(arg, ith, nth) on every worker of the backend's host threads */
    void (*parallel)(backend *b, pool_fn fn, void *arg);
    int (*n_threads)(const backend *b);
} backend_i;

struct backend {
    const backend_i *i;
    void *ctx;
};

/* n_threads <= 0: the CPUs of this process's affinity mask */
backend *backend_cpu_new(int n_threads, char *err, size_t errlen);

#endif
