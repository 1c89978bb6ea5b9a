/* runtime/sample.h — choosing the next token from logits.
 *
 * Order of the pipeline (llama.cpp's common order): repetition penalty over the last
 * `rep_last_n` tokens -> top-k -> top-p -> min-p -> temperature -> draw. temp <= 0 is greedy:
 * argmax, ties to the lowest id, and the other settings do not matter. The generator is
 * seeded, so the same seed and logits give the same tokens.
 */
#ifndef SAMPAN_SAMPLE_H
#define SAMPAN_SAMPLE_H

#include <stdint.h>

typedef struct {
    float temp;          /* <= 0: greedy */
    int top_k;           /* <= 0: off */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float rep_penalty;   /* 1: off */
    int rep_last_n;      /* how many recent tokens the penalty looks at */
    uint64_t seed;
} sample_params;

sample_params sample_defaults(void);

typedef struct sampler sampler;
sampler *sample_new(const sample_params *p, int n_vocab);
void sample_free(sampler *s);
/* logits (V) are modified in place; history holds the n previous tokens (prompt included) */
int32_t sample_next(sampler *s, float *logits, const int32_t *history, int64_t n);
int32_t sample_argmax(const float *logits, int n);

#endif
