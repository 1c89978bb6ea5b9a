/* runtime/backend_cpu.c — the CPU backend: kern_matmul on a persistent thread pool.
 * Owns the pool and one growable scratch buffer for activations converted to a weight's
 * vec_dot_type. */
#include <stdio.h>
#include <stdlib.h>
#include "backend.h"

typedef struct {
    pool *pool;
    void *scratch;
    size_t scratch_size;
} cpu_ctx;

static void cpu__free(backend *b) {
    if (!b) return;
    cpu_ctx *c = b->ctx;
    pool_free(c->pool);
    free(c->scratch);
    free(c);
    free(b);
}

static int cpu__scratch(cpu_ctx *c, size_t need) {
    if (need > c->scratch_size) {
        void *p = realloc(c->scratch, need);
        if (!p) return -1;
        c->scratch = p;
        c->scratch_size = need;
    }
    return 0;
}

static int cpu__matmul_n(backend *b, int n, float *const *out, const kern_weight *const *w,
                         const float *x, int T) {
    cpu_ctx *c = b->ctx;
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        size_t s = kern_matmul_scratch(w[i], T);
        need = s > need ? s : need;
    }
    if (cpu__scratch(c, need)) return -1;
    kern_matmul_n(c->pool, n, out, w, x, T, c->scratch);
    return 0;
}

static int cpu__matmul(backend *b, float *out, const kern_weight *w, const float *x, int T) {
    return cpu__matmul_n(b, 1, &out, &w, x, T);   /* kern_matmul_n of one is kern_matmul */
}

static void cpu__parallel(backend *b, pool_fn fn, void *arg) {
    cpu_ctx *c = b->ctx;
    pool_run(c->pool, fn, arg);
}

static int cpu__n_threads(const backend *b) {
    const cpu_ctx *c = b->ctx;
    return pool_size(c->pool);
}

static const backend_i cpu_iface = {
    /* .version   = */ 1,
    /* .name      = */ "cpu",
    /* .free      = */ cpu__free,
    /* .matmul    = */ cpu__matmul,
    /* .matmul_n  = */ cpu__matmul_n,
    /* .parallel  = */ cpu__parallel,
    /* .n_threads = */ cpu__n_threads,
};

backend *backend_cpu_new(int n_threads, char *err, size_t errlen) {
    backend *b = calloc(1, sizeof *b);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        snprintf(err, errlen, "backend cpu: out of memory");
        return NULL;
    }
    c->pool = pool_new(n_threads);
    if (!c->pool) {
        free(b);
        free(c);
        snprintf(err, errlen, "backend cpu: cannot start %d worker threads", n_threads);
        return NULL;
    }
    b->i = &cpu_iface;
    b->ctx = c;
    return b;
}
