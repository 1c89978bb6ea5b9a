/* runtime/sample.h — choosing the next token from logits.
 *
 * Order of the pipeline (llama.cpp's common order, OpenAI's penalties added):
 *   sample_penalize: repetition penalty over the last `rep_last_n` tokens (prompt included)
 *                    -> presence / frequency penalties over the generated tokens
 *   sample_draw:     top-k -> top-p -> min-p -> temperature -> draw
 * sample_next is the two in a row. A caller that needs the penalized logits themselves (the
 * scheduler: logit bias first, logprobs between) calls the stages one by one. temp <= 0 is
 * greedy: argmax, ties to the lowest id, and the truncation settings do not matter. The
 * generator is seeded, so the same seed and logits give the same tokens.
 */
#ifndef SAMPAN_SAMPLE_H
#define SAMPAN_SAMPLE_H

#include <stdint.h>

typedef struct {
    float temp;              /* <= 0: greedy */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float rep_penalty;       /* 1: off */
    int rep_last_n;          /* how many recent tokens the penalty looks at */
    uint64_t seed;
    /* OpenAI's: logit[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty, with
     * c[j] the times token j was generated so far (prompt tokens not counted); 0: off */
    float presence_penalty;
    float frequency_penalty;
} sample_params;

sample_params sample_defaults(void);

typedef struct sampler sampler;
/* A sampler serves one sequence (its generated-token counts are state). NULL: out of memory. */
sampler *sample_new(const sample_params *p, int n_vocab);
void sample_free(sampler *s);

/* The penalties, on logits (V) in place. history (n): the sequence so far, its first n_prompt
 * tokens the prompt (0 <= n_prompt <= n). Presence / frequency counts are kept incrementally:
 * a call costs O(tokens generated since the last call + distinct generated tokens); a history
 * that is not the last one extended (shorter, or another prompt length) is recounted once. */
void sample_penalize(sampler *s, float *logits, const int32_t *history, int64_t n,
                     int64_t n_prompt);
/* Truncation, temperature and the draw from logits (V), not modified; advances the generator
 * (not when greedy). */
int32_t sample_draw(sampler *s, const float *logits);
/* sample_penalize then sample_draw; logits (V) are modified in place */
int32_t sample_next(sampler *s, float *logits, const int32_t *history, int64_t n,
                    int64_t n_prompt);
int32_t sample_argmax(const float *logits, int n);

#endif
