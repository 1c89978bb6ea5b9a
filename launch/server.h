/* launch/server.h — the OpenAI-compatible HTTP front end (libmicrohttpd + cJSON) in front of
 * the scheduler.
 *
 * Endpoints:
 *   POST /v1/completions        prompt (string, [string], or [token ids]) -> text
 *   POST /v1/chat/completions   messages -> the chat template (chat.h) -> text
 *        both: `stream: true` answers with server-sent events, one `data: {chunk}` per token,
 *        a last chunk carrying finish_reason, an optional usage chunk
 *        (stream_options.include_usage), then `data: [DONE]`
 *   GET  /v1/models, /v1/models/NAME
 *   GET  /health                200 {"status":"ok"}; never needs the API key
 *   GET  /metrics               Prometheus text format 0.0.4
 * Every error is an OpenAI error object {"error": {"message", "type", "param", "code"}}.
 *
 * Sampling parameters: temperature, top_p, top_k, min_p, repetition_penalty, seed, stop
 * (string or up to 4 strings), max_tokens / max_completion_tokens, ignore_eos. Accepted and
 * ignored: presence_penalty, frequency_penalty, logit_bias, user, response_format
 * {"type":"text"}, and unknown fields. Refused with 400: n != 1, best_of != 1, echo, suffix,
 * logprobs / top_logprobs, tools, other response formats.
 *
 * Threads: libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION); the
 * scheduler's step loop runs elsewhere and only ever calls http__emit, which appends to the
 * request's queue under the request's mutex and signals its condition variable. Connection
 * threads wait on that condition with a timeout, so a slow or vanished client holds only its
 * own thread.
 *
 * Life cycle of a request (http__req):
 *   1. created by the connection thread with refs = 1 (the connection);
 *   2. sched_submit succeeds -> refs = 2 (the scheduler holds one until its emit callback runs
 *      with finished = 1);
 *   3. the client goes away before the end (hang-up seen while waiting, or libmicrohttpd's
 *      completion callback with a termination code other than COMPLETED_OK) -> sched_cancel,
 *      so its KV blocks are freed at the next step;
 *   4. each side drops its reference exactly once (emit finished / the connection is done);
 *      the last one frees the request. http_free frees whatever the scheduler never finished
 *      (it must run after sched_free, when no emit can come any more).
 *
 *     new --submit--> QUEUED --emit(token)*--> STREAMING --emit(finished)--> FINISHED
 *        \                \ client gone: sched_cancel --> emit(finished, "cancelled")
 *         400 (never reaches the scheduler)
 */
#ifndef SAMPAN_SERVER_H
#define SAMPAN_SERVER_H

#include <stddef.h>

#include "chat.h"

struct sched;
struct tok;

typedef struct {
    const char *host;          /* address to bind: "127.0.0.1", "0.0.0.0", "::1", a name */
    int port;                  /* 0: any free port (see http_port) */
    const char *api_key;       /* NULL or "": no authentication */
    const char *model_name;    /* the id clients must send as "model" */
    size_t max_body;           /* bytes; larger request bodies get 413 */
    int max_connections;       /* concurrent connections (MHD_OPTION_CONNECTION_LIMIT) */
    int timeout_s;             /* idle seconds before a connection is closed (0: never) */
    int n_ctx;                 /* context length: prompt + max_tokens must fit */
    int n_vocab;               /* token ids in prompts must be below this */
    chat_tmpl chat;            /* how /v1/chat/completions renders messages */
} http_opts;

typedef struct http_server http_server;

/* Starts the daemon (its threads begin accepting at once). s and t must outlive it. */
int http_start(const http_opts *o, struct sched *s, const struct tok *t, http_server **out,
               char *err, size_t errlen);
int http_port(const http_server *h);
/* "http://127.0.0.1:8080" or "http://[::1]:8080" */
const char *http_url(const http_server *h);
/* Stops accepting, ends every open connection (waiting requests answer 503 or see their
 * stream cut), joins the connection threads. Idempotent. */
void http_stop(http_server *h);
/* Call after sched_free: frees requests the scheduler never finished, and the server. */
void http_free(http_server *h);

/* How many leading bytes of s[0..n) can be sent now: n, less a trailing incomplete UTF-8
 * sequence that the next token may complete (at most 3 bytes held back). */
size_t http_utf8_complete(const char *s, size_t n);
/* 1 if the bearer token in an Authorization header value matches key; the comparison's
 * time does not depend on where the strings differ. */
int http_auth_ok(const char *header, const char *key);

#endif
