/* scheduler/sched.h — iteration-level continuous batching over a paged KV cache.
 *
 * Threads: any number of front-end threads (HTTP) call sched_submit / sched_cancel /
 * sched_stats; exactly one step-loop thread (on the leader rank) calls sched_run (or
 * sched_step repeatedly). Tokens go back through each request's emit callback, called on the
 * step-loop thread: it must not block (copy the bytes into the request's own queue and return).
 *
 * Request life cycle (a request is owned by the scheduler from submit until its emit callback
 * has been called with finished != 0; after that the scheduler never touches `user` again):
 *
 *   submit --> WAITING --admit (KV blocks for the first chunk)--> RUNNING (prefill chunks,
 *   then one token per step) --max_tokens / EOS / stop string / error--> FINISHED (emit
 *   finished=1, blocks freed)
 *   RUNNING --KV pool exhausted, newest running preempted--> WAITING (blocks freed; its prompt
 *   and the tokens generated so far are recomputed when it is admitted again; tokens already
 *   emitted are not emitted twice)
 *   any state --sched_cancel (client gone)--> FINISHED (emit finished=1, reason "cancelled")
 *
 * Each step takes every running sequence's next token plus chunks of waiting prompts in FCFS
 * order up to max_batch_tokens (chunked prefill), runs one batched forward, samples every
 * sequence that produced logits, and emits. With several ranks, the plan of each step is
 * broadcast to all ranks (sched_follow on non-leaders), which run the same forward in lockstep.
 *
 * This is the one generation driver: `sampan serve` submits many requests from HTTP threads,
 * `sampan run`, `score` and `bench` submit one and call sched_step until it finishes. Text
 * leaves only through the emit callback, after the two hold-backs every front end needs: bytes
 * that may start a stop string, and a trailing incomplete UTF-8 character.
 */
#ifndef SAMPAN_SCHED_H
#define SAMPAN_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "sample.h"

struct model;
struct comm;

#define SCHED_MAX_STOPS 4     /* stop strings per request: `run --stop` and the HTTP `stop` */

/* Teacher forcing: called on the leader's step-loop thread with the full logits (V floats, valid
 * during the call) of prompt position pos, once per position, in increasing order, before any
 * token is sampled from the last one. user: the request's emit user. */
typedef void (*sched_logits_fn)(void *user, int pos, const float *logits, int n_vocab);

typedef struct {
    const int32_t *prompt;     /* (n_prompt) token ids, copied by sched_submit */
    int n_prompt;
    int max_tokens;            /* >= 0; 0: the prompt only (prefill, nothing sampled; the
                                  request finishes "length" once its prompt is computed) */
    sample_params sampling;
    const char *stop[SCHED_MAX_STOPS];   /* NULL-terminated if fewer; copied */
    int ignore_eos;
    sched_logits_fn prompt_logits;       /* NULL, or the logits of every prompt position
                                            (`sampan score`); costs (T, V) floats per step */
} sched_request;

/* Called on the step-loop thread. Every generated token is passed exactly once with its id
 * (token >= 0, finished = 0), the EOS and the token that completes a stop string included, so
 * callers can count completion tokens from these calls. text/len: the bytes released with it
 * (stop strings removed, held back while they may start one or while they end inside a UTF-8
 * character; may be empty; the final flush releases an incomplete tail as it is). The last call has
 * token -1, finished = 1 and reason "length", "stop", "eos", "cancelled" or "error" (then text
 * is the error message); a token id of -1 with finished = 0 only flushes held text. */
typedef void (*sched_emit_fn)(void *user, int32_t token, const char *text, int len,
                              int finished, const char *reason);

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
} sched_stats;

typedef struct sched sched;

/* m: a loaded model; world: NULL or the communicator of all ranks (lockstep). */
sched *sched_new(struct model *m, struct comm *world, int leader_rank, const sched_opts *o,
                 char *err, size_t errlen);
void sched_free(sched *s);

/* Thread-safe. Returns 0 and the request id, or -1 with a message (prompt longer than the
 * context, bad max_tokens, token id out of range, scheduler stopping). */
int sched_submit(sched *s, const sched_request *r, sched_emit_fn emit, void *user, uint64_t *id,
                 char *err, size_t errlen);
/* Thread-safe; the request finishes with reason "cancelled" at the next step. */
void sched_cancel(sched *s, uint64_t id);
void sched_stats_get(sched *s, sched_stats *out);

/* Leader: one iteration; returns the number of sequences that ran (0 = idle). */
int sched_step(sched *s);
/* Leader: steps until sched_stop, sleeping while idle; then finishes what is left
 * ("cancelled") and releases the followers. After sched_stop it does only the latter: a
 * front end that drove sched_step itself ends with sched_stop + sched_run. */
void sched_run(sched *s);
/* Other ranks: follow the leader's plans until it stops. */
int sched_follow(sched *s);
void sched_stop(sched *s);   /* thread-safe */

#endif
