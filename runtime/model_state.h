/* runtime/model_state.h — private to the forward pass (model.c, model_state.c): what a
 * model_state holds. Everything but the host-side tables lives in backend buffers. */
#ifndef SAMPAN_MODEL_STATE_H
#define SAMPAN_MODEL_STATE_H

#include <stdio.h>

#include "backend.h"
#include "comm.h"
#include "model.h"

/* In the forward pass's functions (backend *be, char *err, size_t errlen in scope): a backend
 * op; on failure the pass returns with the backend's message */
#define BE(call)                                                        \
    do {                                                                \
        if (be->i->call) {                                              \
            snprintf(err, errlen, "model: %s", backend_error(be));      \
            return -1;                                                  \
        }                                                               \
    } while (0)
/* a collective; on failure the forward pass returns with the communicator's message */
#define COMM(c, call)                                                   \
    do {                                                                \
        if (call) {                                                     \
            snprintf(err, errlen, "model: %s", comm_error(c));          \
            return -1;                                                  \
        }                                                               \
    } while (0)

/* x += DeepSeekMoE(rmsnorm(x)) for MoE layer l (runtime/model_moe.c) */
int model_moe_half(const model *m, model_state *s, int l, int T, char *err, size_t errlen);

struct model_state {
    const model *m;
    int n_ctx, max_batch;         /* longest sequence, positions per pass */
    backend_kv kv;                /* the paged cache of this stage's layers */
    size_t kv_bytes;              /* of K and V together */
    /* activations for up to max_batch positions (backend buffers) */
    float *x;                     /* (T, C) residual stream */
    float *xb;                    /* (T, max(C, H*D)) normed input / attention output */
    float *q;                     /* (T, max(C, H*D)) */
    float *k, *v;                 /* (T, n_kv_heads * D) */
    float *hb, *hb2;              /* (T, F) */
    float *g1, *g2;               /* (T, max(C, H*D, F)) all-gather scratch (tp > 1) */
    /* MLA: the absorbed queries (T, H, R + Dr) and latent outputs (T, H, R) */
    float *qlat, *olat;
    /* MoE (runtime/model_moe.c): router logits (T, E); pair rows (T*k, C) as the expert
     * ranks compute them and as this rank combines them; dispatched rows (T + ep, C); the
     * combined output (ep * ceil(T/ep), C) */
    float *elog, *ypair, *ycomb, *xsend, *xrecv, *mout;
    int32_t *ids;                 /* host (T, k) experts of each position, ascending */
    float *wts;                   /* host (T, k) their weights */
    int32_t *plan;                /* host: the step's expert plan (model_moe.c) */
    float *pw;                    /* host (T*k) the plan's pair weights */
    size_t *counts;               /* host (4, ep) all-to-all counts and displacements */
    /* host */
    const int32_t **tabs;         /* (T) the block table of each position of this pass */
    int32_t *rows;                /* (T) positions that want logits */
};

#endif
