/* runtime/model_state.h — private to the forward pass (model.c, model_state.c): what a
 * model_state holds. Everything but the host-side tables lives in backend buffers. */
#ifndef SAMPAN_MODEL_STATE_H
#define SAMPAN_MODEL_STATE_H

#include "backend.h"
#include "model.h"

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
    /* host */
    const int32_t **tabs;         /* (T) the block table of each position of this pass */
    int32_t *rows;                /* (T) positions that want logits */
};

#endif
