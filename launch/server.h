/* launch/server.h — the OpenAI-compatible HTTP front end (libmicrohttpd + cJSON) in front of
 * the scheduler.
 *
 * Endpoints:
 *   POST /v1/completions        prompt (string, [string], or [token ids]) -> text
 *   POST /v1/chat/completions   messages -> the chat template (chat.h) -> text
 *        both: `n` choices (index 0..n-1); `stream: true` answers with server-sent events:
 *        a chat stream opens each choice with a {"role": "assistant"} chunk, a completions
 *        stream with echo with the prompt's text; then one chunk per scheduler event that
 *        released text (with logprobs: or delivered a token), choices interleaved; a final
 *        chunk per choice carrying its finish_reason; an error event if a step failed; one
 *        usage chunk (stream_options.include_usage, completion tokens summed over choices);
 *        then `data: [DONE]`
 *   GET  /v1/models, /v1/models/NAME
 *   GET  /health                200 {"status":"ok"}; never needs the API key
 *   GET  /metrics               Prometheus text format 0.0.4
 * Every error is an OpenAI error object {"error": {"message", "type", "param", "code"}}.
 *
 * Parameters (launch/oai_parse.c checks them; oai.h):
 *   both       model, stream, stream_options.include_usage, temperature, top_p, seed, stop
 *              (a string or up to 4), max_tokens / max_completion_tokens, n (1..16: each
 *              choice its own sequence sharing the prompt's KV blocks, choice i seeded with
 *              seed + i * 0x9e3779b97f4a7c15), logit_bias ({"token id": -100..100}, added to
 *              the logits before everything else; -100 bans), presence_penalty /
 *              frequency_penalty (-2..2, OpenAI's formula over the generated tokens);
 *              extensions top_k, min_p, repetition_penalty, ignore_eos
 *   completions  logprobs k (0..20): choices[].logprobs {tokens, token_logprobs, top_logprobs
 *              (the k best and the token itself), text_offset}; echo (the prompt's text
 *              first; with logprobs its tokens too, the first with null; max_tokens 0 allowed:
 *              the prompt scored only)
 *   chat       logprobs true + top_logprobs k (0..20; top_logprobs alone is a 400):
 *              choices[].logprobs.content[] {token, logprob, bytes, top_logprobs}
 *   Logprobs are the natural log of softmax of the logits the token was drawn from (after
 *   logit_bias and the penalties, before temperature and truncation; scheduler/sched.h), the
 *   echoed prompt's from the model's logits alone. Token strings are the token's bytes (control
 *   tokens by their text) made valid UTF-8; "bytes" are exact. text_offset counts characters of
 *   the choice's text (echo included) released before the event that delivered the token: the
 *   token's own start unless its bytes were held back with an earlier token's. In a stream a
 *   token's logprobs ride in the chunk of the event that delivered it.
 *   Refused with 400 unsupported_parameter unless neutral: tools (neutral []), tool_choice
 *   ("none"), functions ([]), function_call ("none"), parallel_tool_calls, response_format
 *   ({"type": "text"}), audio, modalities (["text"]), prediction, reasoning_effort,
 *   web_search_options (chat); suffix (""), best_of (1) (completions). Accepted, type-checked
 *   and ignored: user, metadata, store, service_tier. Anything else, or a field of the other
 *   endpoint (echo on chat, top_logprobs on completions): 400 unknown_parameter naming it.
 *   A NUL character in any string of the body (raw, or \u0000): 400 invalid_value, param the
 *   top-level field, the message naming the path (e.g. messages[1].content).
 *
 * Endings: finish_reason "length", "stop" (a stop string or EOS) or "error" (the server shut
 * down, SCHED_FINISH_SHUTDOWN, or a step failed, SCHED_FINISH_ERROR: a stream then also gets
 * an error event {"error": {..., "code": "generation_failed"}}). A request not streamed answers
 * 503 instead: code "server_shutting_down" or "generation_failed" with the scheduler's message.
 * A cancelled request (its client left) gets nothing.
 *
 * Threads: libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION); the
 * scheduler's step loop runs elsewhere and only ever calls http__emit, which appends to the
 * request's queue under the request's mutex and signals its condition variable. Connection
 * threads wait on that condition with a timeout, so a slow or vanished client holds only its
 * own thread. Connections (http_conn.c): each has request_timeout_s to send its whole request,
 * at most max_conns_per_client come from one address, the one waiting longest for its request
 * is shed when a new one needs the slot, and over capacity a request gets 503 + Retry-After
 * (/health and /metrics are answered all the same). The files are listed in http_impl.h.
 *
 * Life cycle of a request (http__req, n choices, each its own scheduler request):
 *   1. created by the connection thread with refs = 1 (the connection);
 *   2. each sched_submit that succeeds adds one (choice 0 first, then 1..n-1 with
 *      share_prefix_of = choice 0's id); the scheduler holds it until that choice's emit
 *      callback runs with finished; a submit that fails for choice k > 0 cancels 0..k-1;
 *   3. the client goes away before the end (hang-up seen while waiting, or libmicrohttpd's
 *      completion callback with a termination code other than COMPLETED_OK) -> sched_cancel
 *      of every unfinished choice, so their KV blocks are freed at the next step;
 *   4. each holder drops its reference exactly once (each choice's emit finished / the
 *      connection is done); the last one frees the request. http_free frees whatever the
 *      scheduler never finished (it must run after sched_free, when no emit can come any more).
 *
 *     new --submit x n--> QUEUED --emit(token)*--> STREAMING --emit(finished) x n--> FINISHED
 *        \                  \ client gone: sched_cancel x n --> emit(finished, CANCELLED)
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
    size_t max_body;           /* bytes; larger request bodies get 413 (read and discarded
                                  up to 64 MiB so the client can read the answer) */
    int max_connections;       /* connections served at once; up to a quarter more (at least
                                  8) are held only to answer 503 or /health, /metrics */
    int max_conns_per_client;  /* connections from one address; more get 503 (0: no cap) */
    int timeout_s;             /* idle seconds before a connection is closed (0: never) */
    int request_timeout_s;     /* seconds a connection has to deliver a whole request (headers
                                  and body), from its accept or its previous answer; then it
                                  is closed, however slowly it trickles (0: no limit) */
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
/* The start of a graceful stop: no new connections (the listen socket is shut), requests
 * arriving on open keep-alive connections get 503 + Retry-After; running requests go on.
 * Thread-safe, idempotent. */
void http_drain(http_server *h);
/* The end of the process is near (a rank died, the step failed for good): like http_drain,
 * and every request still running ends now with an error (a stream: an error event and
 * `data: [DONE]`), then waits up to 1 s for the answers to go out. For any thread but the
 * step loop's (the communicator's watchdog, the signal thread); once per server: a second
 * call waits for the first to finish. msg says why (sent to the clients). */
void http_fail(http_server *h, const char *msg);
/* Drains (http_drain), gives the answers being sent up to 2 s to finish (call it once the
 * scheduler has finished every request, so each open stream has its last event), then ends
 * every open connection (a request still waiting answers 503, a stream still open is cut),
 * and joins the connection threads. Idempotent. */
void http_stop(http_server *h);
/* Call after sched_free: frees requests the scheduler never finished, and the server. */
void http_free(http_server *h);

/* 1 if the bearer token in an Authorization header value matches key; the comparison's
 * time does not depend on where the strings differ. */
int http_auth_ok(const char *header, const char *key);

#endif
