/* scheduler/sched.h — iteration-level continuous batching over a paged KV cache.
 *
 * Threads: any number of front-end threads (HTTP) call sched_submit / sched_cancel /
 * sched_stats; exactly one step-loop thread (on the leader rank) calls sched_run (or
 * sched_step repeatedly). Tokens go back through each request's emit callback, called on the
 * step-loop thread: it must not block (copy the bytes into the request's own queue and return).
 *
 * Request life cycle (a request is owned by the scheduler from submit until its emit callback
 * has been called with finish != SCHED_FINISH_NONE; after that the scheduler never touches
 * `user` again):
 *
 *   submit --> WAITING --admit (KV blocks for the first chunk)--> RUNNING (prefill chunks,
 *   then one token per step) --max_tokens / EOS / stop string--> FINISHED (emit finish
 *   LENGTH / EOS / STOP, blocks freed)
 *   RUNNING --KV pool exhausted, newest running preempted--> WAITING (blocks freed; its prompt
 *   and the tokens generated so far are recomputed when it is admitted again; tokens already
 *   emitted are not emitted twice)
 *   any state --sched_cancel (client gone)--> FINISHED (emit finish CANCELLED)
 *   any state --sched_stop--> FINISHED (emit finish SHUTDOWN) when sched_run returns
 *   any state --a step fails (plan broadcast, forward)--> FINISHED (emit finish ERROR), and
 *   the scheduler is failed for good (sched_failed)
 *
 * Each step takes every running sequence's next token plus chunks of waiting prompts in FCFS
 * order up to max_batch_tokens (chunked prefill), runs one batched forward, samples every
 * sequence that produced logits, and emits. A request waiting for the request it shares a
 * prefix with (share_prefix_of) is passed over by admission, later ones are not held up. With
 * several ranks, the plan of each step is broadcast to all ranks (sched_follow on
 * non-leaders), which run the same forward in lockstep.
 *
 * Sliding-window models (model_kv_window W > 0: every layer reads only the last W positions)
 * hold at most W + one chunk of positions per sequence: blocks that fall out of the window are
 * released as the sequence advances (published ones stay in the prefix cache). A model with a
 * global layer (Gemma 3: every sixth) keeps every block, since that layer reads them all.
 *
 * This is the one generation driver: `sampan serve` submits many requests from HTTP threads,
 * `sampan run`, `score` and `bench` submit one and call sched_step until it finishes. Text
 * leaves only through the emit callback, after the two hold-backs every front end needs: bytes
 * that may start a stop string, and a trailing incomplete UTF-8 character (textstream.h).
 */
#ifndef SAMPAN_SCHED_H
#define SAMPAN_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "sample.h"

struct model;
struct comm;

#define SCHED_MAX_STOPS 4     /* stop strings per request: `run --stop` and the HTTP `stop` */
#define SCHED_MAX_LOGPROBS 20 /* most likely tokens reported per position (OpenAI's limit) */

/* Why a request ended: one enum from here to the wire (sched_finish_name gives the word). */
typedef enum {
    SCHED_FINISH_NONE = 0,    /* not finished: a token or flush event */
    SCHED_FINISH_LENGTH,      /* max_tokens generated */
    SCHED_FINISH_STOP,        /* a stop string appeared (it is not emitted) */
    SCHED_FINISH_EOS,         /* an end-of-generation token (not emitted as text) */
    SCHED_FINISH_CANCELLED,   /* sched_cancel: the client went away */
    SCHED_FINISH_SHUTDOWN,    /* sched_stop came first (server drain deadline, SIGTERM) */
    SCHED_FINISH_ERROR,       /* the step failed (a dead rank, out of memory): text says why */
} sched_finish;

/* "length", "stop", "eos", "cancelled", "shutdown", "error"; "" for SCHED_FINISH_NONE */
const char *sched_finish_name(sched_finish f);

/* Teacher forcing: called on the leader's step-loop thread with the full logits (V floats, valid
 * during the call) of prompt position pos, once per position, in increasing order, before any
 * token is sampled from the last one. user: the request's emit user. */
typedef void (*sched_logits_fn)(void *user, int pos, const float *logits, int n_vocab);

typedef struct { int32_t token; float bias; } sched_bias;     /* added to the token's logit */
typedef struct { int32_t token; float logprob; } sched_top;   /* one of the most likely */

typedef struct {
    const int32_t *prompt;     /* (n_prompt) token ids, copied by sched_submit */
    int n_prompt;
    int max_tokens;            /* >= 0; 0: the prompt only (prefill, nothing sampled; the
                                  request finishes LENGTH once its prompt is computed) */
    sample_params sampling;    /* presence/frequency penalties included (sample.h) */
    const char *stop[SCHED_MAX_STOPS];   /* NULL-terminated if fewer; copied */
    int ignore_eos;
    const sched_bias *bias;    /* (n_bias) copied; applied to the logits before the penalties,
                                  logprobs and sampling; bias <= -100 bans the token (logit
                                  -inf). Entries for one token add up; one ban bans it. Ids
                                  out of range or a bias that is not finite: submit fails. If
                                  the bans name every token, they are plain biases instead
                                  (nothing would be left to sample) */
    int n_bias;
    int logprobs;              /* -1: none; 0..SCHED_MAX_LOGPROBS: every token event carries
                                  the sampled token's logprob and the k most likely tokens */
    uint64_t share_prefix_of;  /* 0, or the id of a request submitted before with the same
                                  prompt (the other choices of an `n > 1` request): this one is
                                  admitted once that one's prompt is computed (or it ended), so
                                  it reuses the prompt's KV blocks through prefix reuse */
    sched_logits_fn prompt_logits;       /* NULL, or the logits of every prompt position
                                            (`sampan score`, `echo` with logprobs); costs (T, V)
                                            floats per step */
} sched_request;

/* One emit call. Every generated token is passed exactly once with its id (token >= 0,
 * finish NONE), the EOS and the token that completes a stop string included, so callers can
 * count completion tokens from these calls. text/len: the bytes released with it (stop strings
 * removed; held back while they may start one or while they end inside a UTF-8 character, so a
 * token's bytes may come with a later event; may be empty; the final flush releases an
 * incomplete tail as it is). The last call has token -1 and finish != NONE (ERROR: text is the
 * message); token -1 with finish NONE only flushes held text.
 * logprob/top: only when the request asked (logprobs >= 0) and token >= 0: the natural log of
 * the token's probability under softmax of the logits after bias and penalties, before
 * temperature and truncation; top[0..n_top) the n_top most likely by the same measure, best
 * first, ties to the lower id. Identical whatever else shares the step. */
typedef struct {
    int32_t token;
    const char *text;
    int len;
    sched_finish finish;
    float logprob;
    int n_top;
    const sched_top *top;
} sched_event;

/* Called on the step-loop thread; must not block. */
typedef void (*sched_emit_fn)(void *user, const sched_event *ev);

typedef struct {
    int max_batch_tokens;      /* tokens per forward step (decodes + prefill chunks) */
    int max_seqs;              /* sequences running at once */
    size_t kv_mem;             /* bytes for the KV pool; 0 = a fraction of free memory */
    int block_size;            /* tokens per KV block (16) */
    int n_ctx;                 /* longest sequence (prompt + output) */
    /* debug: called on the leader with the full logits (V) each time request `id` samples */
    void (*on_logits)(void *ctx, uint64_t id, const float *logits, int n_vocab);
    void *on_logits_ctx;
} sched_opts;

typedef struct {
    int64_t requests_total, requests_running, requests_waiting, requests_finished;
    int64_t tokens_in, tokens_out;       /* prompt tokens admitted, tokens generated */
    int64_t preemptions;
    int64_t kv_blocks_total, kv_blocks_used, kv_blocks_cached;
    int64_t kv_bytes_total, kv_bytes_used;   /* the same on the leader rank, in bytes of its KV
                                                cache (model_kv_block_bytes: the KV type's) */
    int64_t steps;
    int64_t tokens_computed;   /* positions run through the forward pass: prompt chunks and
                                  decodes, recomputation after preemption included, positions
                                  taken from the prefix cache not */
} sched_stats;

typedef struct sched sched;

/* m: a loaded model; world: NULL or the communicator of all ranks (lockstep). */
sched *sched_new(struct model *m, struct comm *world, int leader_rank, const sched_opts *o,
                 char *err, size_t errlen);
void sched_free(sched *s);

/* Thread-safe. Returns 0 and the request id, or -1 with a message (prompt longer than the
 * context, bad max_tokens or logprobs, a prompt or logit_bias token id out of range, the
 * scheduler stopping or failed). */
int sched_submit(sched *s, const sched_request *r, sched_emit_fn emit, void *user, uint64_t *id,
                 char *err, size_t errlen);
/* Thread-safe: 1 once a step failed for good (a dead rank, a failed collective); every
 * request then finished ERROR and sched_run returns -1 as soon as it sees it. */
int sched_failed(sched *s);
/* Thread-safe; the request finishes CANCELLED at the next step. */
void sched_cancel(sched *s, uint64_t id);
void sched_stats_get(sched *s, sched_stats *out);

/* Leader: one iteration; returns the number of sequences that ran (0 = idle), or -1 when
 * this step failed or one before it did (sched_failed: every request has finished ERROR). */
int sched_step(sched *s);
/* Leader: steps until sched_stop, sleeping while idle; then finishes what is left (SHUTDOWN)
 * and releases the followers. After sched_stop it does only the latter: a front end that
 * drove sched_step itself ends with sched_stop + sched_run. Returns 0, or -1 when a step
 * failed for good (sched_failed: the followers may be gone; the caller aborts the world). */
int sched_run(sched *s);
/* Other ranks: follow the leader's plans until it stops. */
int sched_follow(sched *s);
void sched_stop(sched *s);   /* thread-safe */

#endif
