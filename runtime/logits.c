/* runtime/logits.c — the last stage's logits after model_forward: the full vocabulary rows
 * gathered from the tensor group's slices, and greedy ids reduced across it without
 * gathering them. Host memory: model_forward's `logits` slot already brought them back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "model.h"

static int comm_fail(const struct comm *c, char *err, size_t errlen) {
    snprintf(err, errlen, "model: %s", comm_error(c));
    return -1;
}

int model_has_logits(const model *m) { return m->shard.stage == m->shard.pp - 1; }

size_t model_logits_floats(const model *m, int n_out) {
    size_t V = (size_t)m->cfg.n_vocab, padded = (size_t)m->shard.tp * m->shard.vocab_pad;
    return (size_t)n_out * (V > padded ? V : padded);
}

int model_logits_full(const model *m, const float *slices, int n_out, float *full, char *err,
                      size_t errlen) {
    const model_shard *sh = &m->shard;
    const int V = m->cfg.n_vocab, P = sh->vocab_pad;
    if (sh->tp <= 1) {
        if (full != slices) memcpy(full, slices, (size_t)n_out * V * sizeof(float));
        return 0;
    }
    float *tmp = malloc((size_t)sh->tp * n_out * P * sizeof(float));
    if (!tmp) {
        snprintf(err, errlen, "model: out of memory gathering %d rows of logits", n_out);
        return -1;
    }
    if (comm_allgather(sh->tp_comm, slices, tmp, (size_t)n_out * P, COMM_F32)) {
        free(tmp);
        return comm_fail(sh->tp_comm, err, errlen);
    }
    /* tmp is (tp, n_out, P); full row r is the concatenation of every rank's row r, cut to V */
    for (int r = 0; r < n_out; r++)
        for (int k = 0; k < sh->tp; k++) {
            int v0 = k * P, n = V - v0 < P ? V - v0 : P;
            if (n > 0)
                memcpy(full + (size_t)r * V + v0, tmp + ((size_t)k * n_out + r) * P,
                       (size_t)n * sizeof(float));
        }
    free(tmp);
    return 0;
}

int model_argmax(const model *m, const float *slices, int n_out, int32_t *ids, char *err,
                 size_t errlen) {
    const model_shard *sh = &m->shard;
    const int P = sh->vocab_pad;
    for (int r = 0; r < n_out; r++) {
        const float *l = slices + (size_t)r * P;
        int32_t best = 0;
        for (int v = 1; v < sh->n_vocab; v++)
            if (l[v] > l[best]) best = v;
        float val = l[best];
        int32_t id = best + sh->vocab0;
        if (sh->tp > 1 && comm_argmax(sh->tp_comm, &val, &id)) return comm_fail(sh->tp_comm, err, errlen);
        ids[r] = id;
    }
    return 0;
}
