/* launch/oai.h — the OpenAI API's wire format, with no sockets and no scheduler in it:
 *   oai_parse.c   a request body (JSON) -> a validated job or an OpenAI error (pure: the same
 *                 body and limits give the same answer; unit-tested and fuzzed without a server)
 *   oai_encode.c  responses, stream chunks, usage, logprobs and error objects as cJSON
 *
 * Text in, text out, exactly: a NUL character in any string of a request body (a raw 0 byte
 * inside a JSON string, or the escape \u0000), key or value, known field or not, is refused
 * with 400 invalid_value, param the top-level field ("prompt", "messages", "stop", ...) and a
 * message naming the path ("messages[1].content contains a NUL character"). The check runs on
 * the raw body before any field is read, because cJSON's strings are C strings: nothing is
 * ever cut at a NUL. A raw 0 byte outside any string (cJSON would skip it as whitespace) is a
 * 400 invalid_json.
 *
 * Fields (server.h lists them for users): a field the server does not know is a 400
 * unknown_parameter naming it; a field it knows but does not implement (tools, ...) is a 400
 * unsupported_parameter unless it has its neutral value; user, metadata, store and
 * service_tier are type-checked and ignored.
 */
#ifndef SAMPAN_OAI_H
#define SAMPAN_OAI_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "sample.h"
#include "scheduler/sched.h"

struct tok;

#define OAI_MAX_N 16                 /* choices per request (`n`) */
#define OAI_SEED_STEP 0x9e3779b97f4a7c15ull   /* choice i samples with seed + i * this */

/* An OpenAI error object {"error": {message, type, param, code}} and its HTTP status. */
typedef struct {
    int status;
    const char *type, *code;     /* static strings; code may be NULL */
    char param[64];              /* "" for null (a copy: a field name may come from the body) */
    char msg[512];
} oai_err;

/* param: NULL for none; copied (truncated to 63 bytes) */
void oai_err_set(oai_err *e, int status, const char *param, const char *code, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
cJSON *oai_error_json(const oai_err *e);

/* What validation needs to know about the server. */
typedef struct {
    const char *model_name;      /* the one id "model" may name */
    int n_ctx;                   /* prompt + max_tokens must fit */
    int n_vocab;                 /* token ids below this (prompts, logit_bias) */
    const struct tok *tok;       /* must not be NULL */
    const chat_tmpl *chat;       /* how messages are rendered */
} oai_limits;

/* A validated request, ready for sched_submit (one sched_request per choice). */
typedef struct {
    cJSON *json;                 /* owns the strings stops point into */
    int chat;                    /* /v1/chat/completions */
    int stream, include_usage, ignore_eos;
    int echo;                    /* completions: the prompt's text before each choice's text */
    char *echo_text;             /* (echo_len) with echo: the prompt string as sent, or the
                                    decoded text of a token-id prompt; malloc'd, not valid
                                    UTF-8 necessarily */
    size_t echo_len;
    int n;                       /* choices, 1..OAI_MAX_N */
    int logprobs;                /* -1: none; else how many most-likely tokens per position,
                                    0..SCHED_MAX_LOGPROBS (completions: logprobs k; chat:
                                    logprobs true + top_logprobs k) */
    int32_t *prompt;             /* (n_prompt) token ids */
    int n_prompt;
    long long max_tokens;        /* >= 1; 0 only with echo (the prompt scored, nothing sampled) */
    sample_params sp;            /* presence/frequency penalties included */
    int seed_given;              /* 0: the server picks sp.seed */
    const char *stops[SCHED_MAX_STOPS + 1];   /* NULL-terminated */
    sched_bias *bias;            /* (n_bias) logit_bias, distinct token ids */
    int n_bias;
} oai_job;

/* Parses and checks one completion request (chat: a chat completion). 0 and *j filled, or -1
 * and *e filled (*j must still be freed). */
int oai_parse(const oai_limits *l, const char *body, size_t len, int chat, oai_job *j,
              oai_err *e);
void oai_job_free(oai_job *j);

/* ---- responses (oai_encode.c) ---- */

/* the wire word of a finish reason: "length", "stop" (stop string or EOS), "error" (the
 * server stopped or failed first); NULL while running or for CANCELLED (nobody listens) */
const char *oai_finish_reason(sched_finish f);
/* {"id": "cmpl-ID" or "chatcmpl-ID", "object", "created", "model", "system_fingerprint"} */
cJSON *oai_base(int chat, int chunk, const char *id, long created, const char *model);
/* {"prompt_tokens", "completion_tokens", "total_tokens"} */
cJSON *oai_usage(int n_prompt, int n_completion);
/* one element of "choices": text (NULL: none), finish (NULL: null), role: a chat stream's
 * first chunk, which carries {"role": "assistant"}; logprobs (taken; NULL: null); reasoning
 * (chat: a reasoning model's thought, "reasoning_content"; NULL: none) */
cJSON *oai_choice(int chat, int chunk, int index, const char *text, const char *finish, int role,
                  cJSON *logprobs, const char *reasoning);

/* One position's logprobs, as the scheduler reported them (sched_event) or as the echo of a
 * prompt computed them. */
typedef struct {
    int32_t token;
    float logprob;               /* NAN: none (the first token of an echoed prompt) */
    long text_offset;            /* completions: characters of the choice's text before it */
    int n_top;
    const sched_top *top;        /* (n_top) best first */
} oai_lp;

/* The "logprobs" of a choice or a chunk for positions e[0..n):
 *   chat:        {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob,
 *                bytes}]}]}
 *   completions: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset};
 *                each top_logprobs object holds the n_top best and the token itself (OpenAI's
 *                "up to logprobs + 1"); a second token with the same text keeps the first's
 *                entry; null where logprob is NAN
 * Token strings are the token's bytes (tok_piece, control tokens by their text) as oai_text
 * makes them (an invalid or 0 byte becomes U+FFFD); "bytes" are the exact bytes. A logprob that is not
 * finite (a banned token) is written as -9999.0. NULL when out of memory. */
cJSON *oai_logprobs(int chat, const struct tok *t, const oai_lp *e, int n);

/* Log-softmax of one logits row (V floats) in double, at token (its logprob into *lp) and
 * the k most likely (k <= SCHED_MAX_LOGPROBS, ties to the lower id) into top; returns how many
 * were written (min(k, V)). The scheduler's measure, for rows it does not score itself (the
 * prompt positions of an echo). */
int oai_row_logprobs(const float *logits, int n_vocab, int32_t token, int k, float *lp,
                     sched_top *top);

/* Text for a JSON string: a malloc'd, NUL-terminated copy of s[0..n) with each byte that is
 * not part of valid UTF-8 replaced by U+FFFD, and so is a 0 byte (a generated byte token; a
 * cJSON string cannot hold it, and cutting the text there would lose the rest); *out_len its
 * length. NULL when out of memory. */
char *oai_text(const char *s, size_t n, size_t *out_len);
/* Characters (code points) of valid UTF-8 s[0..n): the bytes that are not continuation
 * bytes */
long oai_chars(const char *s, size_t n);
/* off[i]: characters of the decoded prompt ids[0..n) before token i (tok_decode's text, as
 * echo returns it for a token-id prompt, and as a string prompt tokenizes back) */
int oai_prompt_offsets(const struct tok *t, const int32_t *ids, int n, long *off);

#endif
