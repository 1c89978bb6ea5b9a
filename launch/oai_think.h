/* launch/oai_think.h — the thought of a reasoning model's answer (DeepSeek-R1: "<think> ...
 * </think> answer"), split from the answer as DeepSeek's and vLLM's APIs return them:
 * `reasoning_content` beside `content`.
 *
 * As vLLM's deepseek_r1 parser: the answer starts inside the thought (R1's template opens it,
 * and the model may or may not write "<think>" itself: a leading one is dropped); everything
 * up to the first "</think>" is reasoning, everything after it content. A stream is fed piece
 * by piece; a piece that ends in what may be the start of a tag ("</thi") holds those bytes
 * back until the next piece (or the last call) decides. Pieces are split only at the ASCII
 * tags, so valid UTF-8 in gives valid UTF-8 out. Pure: no I/O, no allocation.
 */
#ifndef SAMPAN_OAI_THINK_H
#define SAMPAN_OAI_THINK_H

#include <stddef.h>

typedef struct {
    int phase;          /* 0: before a possible leading "<think>", 1: thought, 2: answer */
    char held[16];      /* bytes held back (a possible tag's start) */
    size_t n_held;
} oai_think;

void oai_think_init(oai_think *t);
/* Feeds n bytes of s (last: the stream ends after them; s may be NULL with n 0). The thought's
 * part is written to reason (*rn bytes), the answer's to content (*cn): each buffer must hold
 * n + 16 bytes. */
void oai_think_feed(oai_think *t, const char *s, size_t n, int last, char *reason, size_t *rn,
                    char *content, size_t *cn);

#endif
