/* runtime/tok_pre.h — private to the tokenizer (tok.c): byte-level BPE pre-tokenization.
 *
 * A pre-tokenizer is the list of regexes that Hugging Face's tokenizer for `tokenizer.ggml.pre`
 * uses (as llama.cpp lists them). They are applied in sequence: the first splits the text into
 * its matches and the gaps between them, each later regex splits every piece of the previous
 * step the same way. Each final piece is mapped byte -> unicode with GPT-2's table and handed to
 * a callback, which runs the BPE merges on it.
 *
 * Text is decoded from UTF-8 as llama.cpp does (an invalid byte becomes U+FFFD); non-ASCII white
 * space is shown to the regexes as U+000B, which is how llama.cpp's regex engine sees it.
 */
#ifndef SAMPAN_TOK_PRE_H
#define SAMPAN_TOK_PRE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok_pre tok_pre;

/* Compiles the regexes of pre-tokenizer `name` ("default" when NULL or empty). An unknown name
 * is an error naming it. */
int tok_pre_new(const char *name, tok_pre **out, char *err, size_t errlen);
void tok_pre_free(tok_pre *p);
const char *tok_pre_name_of(const tok_pre *p);
int tok_pre_ignore_merges(const tok_pre *p);  /* a piece that is a whole token skips merging */
int tok_pre_add_bos(const tok_pre *p);        /* default of add_bos when the key is absent */

/* Called once per piece with its byte-level encoded text; a non-zero return stops the split
 * and is returned by tok_pre_split. */
typedef int (*tok_pre_fn)(void *ud, const char *piece, size_t len);
/* Splits len bytes of text; returns 0, the callback's non-zero value, or -1 (out of memory or
 * regex failure). Safe to call from several threads on one tok_pre. */
int tok_pre_split(const tok_pre *p, const char *text, size_t len, tok_pre_fn fn, void *ud);

/* GPT-2's byte -> unicode table and its inverse. */
uint32_t tok_pre_byte_to_cp(uint8_t b);
int tok_pre_cp_to_byte(uint32_t cp);          /* -1 if cp is not in the table */

/* UTF-8 helpers shared with tok.c (llama.cpp's decoding: invalid byte -> U+FFFD, 1 byte). */
uint32_t tok_utf8_decode(const char *s, size_t len, size_t *adv);
int tok_utf8_encode(uint32_t cp, char out[4]);

#endif
