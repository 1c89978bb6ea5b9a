/* runtime/tok.h — tokenizers built from GGUF metadata.
 *
 * `tokenizer.ggml.model`:
 *   "llama": SentencePiece-style BPE over scores (highest-score merge first), a leading space
 *            added to the text ("add_space_prefix", default true), spaces shown as U+2581, byte
 *            fallback tokens <0xXX> for anything not in the vocabulary.
 *   "gpt2":  byte-level BPE: the text is split by the pre-tokenizer of `tokenizer.ggml.pre`
 *            (regexes via PCRE2), each piece mapped byte->unicode (GPT-2's table) and merged by
 *            rank from `tokenizer.ggml.merges`.
 * Special/added tokens (token_type CONTROL or USER_DEFINED) found literally in the text are
 * emitted as single ids when parse_special is set, before pre-tokenization of the rest.
 * BOS/EOS ids and add_bos/add_eos come from tokenizer.ggml.* keys.
 * A byte that no token can stand for (some byte-level vocabularies lack a few: falcon's has no
 * token for 28 control bytes such as 0x0B, starcoder's none for 0xF1) is left out of the ids,
 * as llama.cpp does; an SPM vocabulary without <0xXX> tokens gives <unk> when it has one.
 * Detokenization (tok_piece) returns each token's exact bytes: for "llama" U+2581 becomes a
 * space and <0xXX> its byte; for "gpt2" the byte->unicode map is inverted. Control tokens give
 * empty pieces unless asked for.
 */
#ifndef SAMPAN_TOK_H
#define SAMPAN_TOK_H

#include <stddef.h>
#include <stdint.h>

struct gguf_ctx;
typedef struct tok tok;

typedef enum { TOK_SPM = 1, TOK_BPE = 2 } tok_kind;

/* Reads the vocabulary from metadata; err names the missing or bad key. */
int tok_load(const struct gguf_ctx *g, tok **out, char *err, size_t errlen);
void tok_free(tok *t);

tok_kind tok_kind_of(const tok *t);
const char *tok_pre_name(const tok *t);   /* tokenizer.ggml.pre or "default" */
int32_t tok_n_vocab(const tok *t);
int32_t tok_bos(const tok *t);            /* -1 if none */
int32_t tok_eos(const tok *t);            /* -1 if none */
int tok_is_eog(const tok *t, int32_t id); /* end of generation: eos, eot, ... */
int tok_add_bos(const tok *t);            /* whether the model wants BOS prepended */

/* Tokenize len bytes of text. add_special: prepend BOS (and append EOS) as the metadata says.
 * parse_special: recognise special tokens in the text. Writes at most cap ids; returns the
 * number of ids the whole text needs (call again with a bigger buffer if > cap), or < 0 on error. */
int64_t tok_encode(const tok *t, const char *text, size_t len, int add_special, int parse_special,
                   int32_t *ids, int64_t cap);

/* The bytes of one token (not NUL-terminated) into buf; returns the length (may exceed cap,
 * then only cap bytes were written). For SPM, a piece that starts a text keeps its leading
 * space; callers drop the one space the encoder added (tok_decode does). special: render
 * control tokens' text instead of nothing. */
int tok_piece(const tok *t, int32_t id, char *buf, int cap, int special);
/* Whole-sequence detokenization: exact inverse of tok_encode(add_special=0) on valid text.
 * Returns bytes needed (like snprintf, buffer NUL-terminated when cap > 0). */
int64_t tok_decode(const tok *t, const int32_t *ids, int64_t n, char *buf, int64_t cap);

#endif
