/* scheduler/sched.c — the step loop: continuous batching with chunked prefill, prefix reuse
 * and preemption over the paged KV cache (life cycle and threading in sched.h).
 *
 * Invariants:
 *  1. A request's positions [0, n_computed) have their K/V in the blocks of its table; table
 *     entry i holds positions [i*bs, (i+1)*bs).
 *  2. toks holds the prompt and every sampled token; the last sampled token is not computed
 *     yet (n_computed < n_toks while running).
 *  3. Only the step-loop thread touches running/waiting requests; front-end threads only append
 *     to `incoming` and `cancels` under the lock.
 *  4. Every rank runs the same forward with the same plan: the leader broadcasts it first.
 *  5. A request with prompt_logits has had the logits of prompt positions [0, n_scored)
 *     delivered; recomputing them after a preemption does not deliver them again.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm.h"
#include "scheduler/kv.h"
#include "model.h"
#include "scheduler/sched.h"
#include "tok.h"

enum { R_WAITING = 0, R_RUNNING = 1 };

typedef struct req {
    uint64_t id;
    int state;
    int32_t *toks;
    int n_prompt, n_toks, cap;
    int n_computed;
    int n_generated;
    int counted;              /* its prompt is in stats.tokens_in */
    int max_tokens;           /* >= 0 */
    sched_logits_fn prompt_logits;
    int n_scored;             /* prompt positions whose logits prompt_logits has had */
    int32_t *table;           /* (cap / bs + 1) */
    int n_table;
    uint64_t *hashes;         /* prefix hash of each full block, as far as published */
    int n_hashed;
    sampler *smp;
    char *stops[SCHED_MAX_STOPS];
    int n_stops, ignore_eos;
    char *text;               /* bytes generated but held back while they may start a stop */
    size_t text_len, text_cap;
    sched_emit_fn emit;
    void *user;
    struct req *next;
} req;

struct sched {
    model *m;
    comm *world;
    int leader_rank, is_leader;
    sched_opts o;
    kv_mgr *kv;
    model_state *st;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req *incoming;            /* submitted, not yet seen by the step loop */
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    int stopping;
    uint64_t next_id;
    req **running;            /* (max_seqs) in arrival order */
    int n_running;
    req *waiting;             /* FCFS by id */
    sched_stats stats;
    /* step buffers (max_batch_tokens) */
    int32_t *b_tok, *b_pos;
    int8_t *b_want;
    const int32_t **b_tab;
    req **b_req;              /* request of each position */
    int *b_seq;               /* index of each position's request in this step's list */
    req **b_seqs;             /* (max_seqs) the requests of this step */
    float *slices, *logits;   /* (n_rows, vocab_pad*tp) and (n_rows, V) */
    int n_rows;               /* max_seqs, or more once a prompt_logits step needed them */
    size_t block_bytes;       /* of one KV block on the leader */
    int32_t *plan;            /* serialized plan for the other ranks */
    size_t plan_cap;
};

/* ---- life cycle ----------------------------------------------------------------------- */

static size_t free_memory(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return (size_t)1 << 30;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

sched *sched_new(model *m, comm *world, int leader_rank, const sched_opts *o, char *err,
                 size_t errlen) {
    sched *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "sched: out of memory");
        return NULL;
    }
    s->m = m;
    s->world = world && world->size > 1 ? world : NULL;
    s->leader_rank = leader_rank;
    s->is_leader = !s->world || world->rank == leader_rank;
    s->o = *o;
    if (s->o.block_size <= 0) s->o.block_size = 16;
    if (s->o.max_seqs <= 0) s->o.max_seqs = 64;
    if (s->o.max_batch_tokens <= 0) s->o.max_batch_tokens = 512;
    if (s->o.n_ctx <= 0) s->o.n_ctx = m->cfg.n_ctx_train < 4096 ? m->cfg.n_ctx_train : 4096;
    if (s->o.max_batch_tokens < s->o.max_seqs) s->o.max_seqs = s->o.max_batch_tokens;
    /* every rank must agree on the pool size: the leader decides */
    int32_t n_blocks = 0;
    if (s->is_leader) {
        size_t bb = model_kv_block_bytes(m, s->o.block_size);
        s->block_bytes = bb;
        size_t mem = s->o.kv_mem ? s->o.kv_mem : free_memory() / 4;
        n_blocks = (int32_t)(mem / (bb ? bb : 1));
        int min_blocks = (s->o.n_ctx + s->o.block_size - 1) / s->o.block_size;
        if (n_blocks < min_blocks) {
            snprintf(err, errlen,
                     "sched: KV memory of %zu bytes holds %d blocks of %d tokens; one sequence of "
                     "the context (%d) needs %d",
                     mem, n_blocks, s->o.block_size, s->o.n_ctx, min_blocks);
            n_blocks = -1;
        }
    }
    if (s->world && comm_bcast(s->world, &n_blocks, sizeof n_blocks, leader_rank)) {
        snprintf(err, errlen, "sched: %s", comm_error(s->world));
        free(s);
        return NULL;
    }
    if (n_blocks < 0) {
        if (!s->is_leader) snprintf(err, errlen, "sched: the leader could not size the KV pool");
        free(s);
        return NULL;
    }
    int T = s->o.max_batch_tokens, S = s->o.max_seqs;
    s->kv = kv_new(n_blocks, s->o.block_size);
    s->st = model_state_new_paged(m, n_blocks, s->o.block_size, s->o.n_ctx, T, err, errlen);
    s->running = calloc((size_t)S, sizeof *s->running);
    s->b_tok = malloc((size_t)T * sizeof *s->b_tok);
    s->b_pos = malloc((size_t)T * sizeof *s->b_pos);
    s->b_want = malloc((size_t)T);
    s->b_tab = malloc((size_t)T * sizeof *s->b_tab);
    s->b_req = malloc((size_t)T * sizeof *s->b_req);
    s->b_seq = malloc((size_t)T * sizeof *s->b_seq);
    s->b_seqs = malloc((size_t)S * sizeof *s->b_seqs);
    s->slices = malloc(model_logits_floats(m, S) * sizeof *s->slices);
    s->logits = malloc((size_t)S * m->cfg.n_vocab * sizeof *s->logits);
    if (!s->kv || !s->st || !s->running || !s->b_tok || !s->b_pos || !s->b_want || !s->b_tab ||
        !s->b_req || !s->b_seq || !s->b_seqs || !s->slices || !s->logits) {
        if (s->st) snprintf(err, errlen, "sched: out of memory");
        sched_free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->n_rows = S;
    s->stats.kv_blocks_total = n_blocks;
    s->stats.kv_bytes_total = (int64_t)n_blocks * (int64_t)s->block_bytes;
    s->next_id = 1;
    return s;
}

static void req_free(req *r) {
    if (!r) return;
    free(r->toks);
    free(r->table);
    free(r->hashes);
    sample_free(r->smp);
    for (int i = 0; i < r->n_stops; i++) free(r->stops[i]);
    free(r->text);
    free(r);
}

void sched_free(sched *s) {
    if (!s) return;
    for (int i = 0; i < s->n_running; i++) req_free(s->running[i]);
    for (req *r = s->waiting, *n; r; r = n) { n = r->next; req_free(r); }
    for (req *r = s->incoming, *n; r; r = n) { n = r->next; req_free(r); }
    kv_free(s->kv);
    model_state_free(s->st);
    free(s->running);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_want);
    free(s->b_tab);
    free(s->b_req);
    free(s->b_seq);
    free(s->b_seqs);
    free(s->slices);
    free(s->logits);
    free(s->cancels);
    free(s->plan);
    free(s);
}

/* ---- front end (any thread) ------------------------------------------------------------ */

int sched_submit(sched *s, const sched_request *rq, sched_emit_fn emit, void *user, uint64_t *id,
                 char *err, size_t errlen) {
    if (rq->n_prompt < 1 || rq->max_tokens < 0) {
        snprintf(err, errlen, "the prompt must have at least one token and max_tokens must be >= 0");
        return -1;
    }
    if ((int64_t)rq->n_prompt + rq->max_tokens > s->o.n_ctx) {
        snprintf(err, errlen,
                 "the prompt (%d tokens) plus max_tokens (%d) exceeds the context of %d tokens",
                 rq->n_prompt, rq->max_tokens, s->o.n_ctx);
        return -1;
    }
    req *r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->cap = rq->n_prompt + rq->max_tokens + 1;
    r->toks = malloc((size_t)r->cap * sizeof *r->toks);
    r->table = malloc((size_t)(r->cap / s->o.block_size + 2) * sizeof *r->table);
    r->hashes = malloc((size_t)(r->cap / s->o.block_size + 2) * sizeof *r->hashes);
    r->smp = sample_new(&rq->sampling, s->m->cfg.n_vocab);
    if (!r->toks || !r->table || !r->hashes || !r->smp) goto oom;
    memcpy(r->toks, rq->prompt, (size_t)rq->n_prompt * sizeof *r->toks);
    for (int i = 0; i < rq->n_prompt; i++)
        if (rq->prompt[i] < 0 || rq->prompt[i] >= s->m->cfg.n_vocab) {
            snprintf(err, errlen, "token id %d is out of range [0, %d)", rq->prompt[i],
                     s->m->cfg.n_vocab);
            req_free(r);
            return -1;
        }
    r->n_prompt = r->n_toks = rq->n_prompt;
    r->max_tokens = rq->max_tokens;
    r->prompt_logits = rq->prompt_logits;
    r->ignore_eos = rq->ignore_eos;
    for (int i = 0; i < SCHED_MAX_STOPS && rq->stop[i]; i++)
        if (*rq->stop[i] && !(r->stops[r->n_stops++] = strdup(rq->stop[i]))) goto oom;
    r->emit = emit;
    r->user = user;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        snprintf(err, errlen, "the server is shutting down");
        return -1;
    }
    r->id = s->next_id++;
    req **tail = &s->incoming;
    while (*tail) tail = &(*tail)->next;
    *tail = r;
    s->stats.requests_total++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (id) *id = r->id;
    return 0;
oom:
    req_free(r);
    snprintf(err, errlen, "out of memory");
    return -1;
}

void sched_cancel(sched *s, uint64_t id) {
    pthread_mutex_lock(&s->mu);
    if (s->n_cancels == s->cap_cancels) {
        int cap = s->cap_cancels ? 2 * s->cap_cancels : 16;
        uint64_t *p = realloc(s->cancels, (size_t)cap * sizeof *p);
        if (p) {
            s->cancels = p;
            s->cap_cancels = cap;
        }
    }
    if (s->n_cancels < s->cap_cancels) s->cancels[s->n_cancels++] = id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_stats_get(sched *s, sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}

void sched_stop(sched *s) {
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- step loop helpers ----------------------------------------------------------------- */

static void release_blocks(sched *s, req *r) {
    for (int i = 0; i < r->n_table; i++) kv_unref(s->kv, r->table[i]);
    r->n_table = 0;
    r->n_computed = 0;
    r->n_hashed = 0;
}

/* emits the final callback and frees the request (it is in no list any more) */
static void finish(sched *s, req *r, const char *reason, const char *msg) {
    release_blocks(s, r);
    if (!msg && r->text_len) r->emit(r->user, -1, r->text, (int)r->text_len, 0, NULL);
    r->emit(r->user, -1, msg ? msg : "", msg ? (int)strlen(msg) : 0, 1, reason);
    pthread_mutex_lock(&s->mu);
    s->stats.requests_finished++;
    pthread_mutex_unlock(&s->mu);
    req_free(r);
}

static void waiting_insert(sched *s, req *r) {   /* FCFS: ordered by id */
    req **pp = &s->waiting;
    while (*pp && (*pp)->id < r->id) pp = &(*pp)->next;
    r->next = *pp;
    *pp = r;
    r->state = R_WAITING;
}

static void running_remove(sched *s, int i) {
    memmove(&s->running[i], &s->running[i + 1], (size_t)(s->n_running - i - 1) * sizeof *s->running);
    s->n_running--;
}

/* Gives r blocks up to position `upto` (exclusive); 0 or -1 when the pool is out. */
static int grow_table(sched *s, req *r, int upto) {
    int bs = s->o.block_size;
    while (r->n_table * bs < upto) {
        int b = kv_alloc(s->kv);
        if (b < 0) return -1;
        r->table[r->n_table++] = b;
    }
    return 0;
}

/* Preempts the newest running request at index >= from (not yet placed in this step's batch);
 * 0 if one was preempted. */
static int preempt_newest(sched *s, int from) {
    for (int i = s->n_running - 1; i >= from; i--) {
        req *v = s->running[i];
        running_remove(s, i);
        release_blocks(s, v);
        waiting_insert(s, v);
        s->stats.preemptions++;
        return 0;
    }
    return -1;
}

/* Reuses published blocks for r's leading full blocks (never its last token's block). */
static void reuse_prefix(sched *s, req *r) {
    int bs = s->o.block_size;
    uint64_t h = 0;
    for (int i = 0; (i + 1) * bs <= r->n_toks - 1; i++) {
        h = kv_hash(h, r->toks + (size_t)i * bs, bs);
        int b = kv_lookup(s->kv, h);
        if (b < 0) break;
        r->table[r->n_table++] = b;
        r->hashes[r->n_hashed++] = h;
        r->n_computed += bs;
    }
}

/* Publishes r's blocks that became fully computed. */
static void publish_blocks(sched *s, req *r) {
    int bs = s->o.block_size;
    while ((r->n_hashed + 1) * bs <= r->n_computed) {
        uint64_t parent = r->n_hashed ? r->hashes[r->n_hashed - 1] : 0;
        uint64_t h = kv_hash(parent, r->toks + (size_t)r->n_hashed * bs, bs);
        kv_publish(s->kv, r->table[r->n_hashed], h);
        r->hashes[r->n_hashed++] = h;
    }
}

/* Bytes at the end of s[0..n) that begin a UTF-8 character not complete yet (0 to 3). */
static size_t utf8_incomplete(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t j = n;
    while (j > 0 && n - j < 3 && (u[j - 1] & 0xC0) == 0x80) j--;
    if (j == 0) return 0;
    unsigned c = u[j - 1];
    size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xC2 && c <= 0xDF ? 2 : 1;
    size_t have = n - (j - 1);
    return need > have ? have : 0;
}

/* Appends generated bytes; emits what can no longer be the start of a stop string and ends
 * on a whole UTF-8 character. Returns 1 when a stop string was found (text up to its first
 * occurrence emitted), -1 when out of memory. */
static int emit_text(req *r, int32_t tok, const char *p, int n) {
    if (r->text_len + (size_t)n + 1 > r->text_cap) {
        size_t cap = (r->text_len + (size_t)n + 1) * 2;
        char *t = realloc(r->text, cap);
        if (!t) return -1;
        r->text = t;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, p, (size_t)n);
    r->text_len += (size_t)n;
    size_t hold = 0, first = (size_t)-1;
    for (int i = 0; i < r->n_stops; i++) {
        size_t sl = strlen(r->stops[i]);
        char *hit = r->text_len >= sl ? memmem(r->text, r->text_len, r->stops[i], sl) : NULL;
        if (hit && (size_t)(hit - r->text) < first) first = (size_t)(hit - r->text);
        if (sl - 1 > hold) hold = sl - 1;
    }
    if (first != (size_t)-1) {
        r->emit(r->user, tok, r->text, (int)first, 0, NULL);   /* the token counts */
        r->text_len = 0;
        return 1;
    }
    size_t out = r->text_len > hold ? r->text_len - hold : 0;
    out -= utf8_incomplete(r->text, out);
    r->emit(r->user, tok, r->text, (int)out, 0, NULL);
    memmove(r->text, r->text + out, r->text_len - out);
    r->text_len -= out;
    return 0;
}

/* ---- the plan other ranks follow -------------------------------------------------------- */

/* Layout (int32): n_pos, n_seq, then n_pos x (token, pos, seq index, want), then per sequence
 * (n_blocks, blocks...). n_pos < 0: stop. */
static int plan_send(sched *s, int n_pos, req **seqs, int n_seq, const int *seq_of) {
    if (!s->world) return 0;
    size_t need = 2 + 4 * (size_t)n_pos;
    for (int i = 0; i < n_seq; i++) need += 1 + (size_t)seqs[i]->n_table;
    if (need > s->plan_cap) {
        int32_t *p = realloc(s->plan, need * sizeof *p);
        if (!p) return -1;
        s->plan = p;
        s->plan_cap = need;
    }
    int32_t *p = s->plan;
    *p++ = n_pos;
    *p++ = n_seq;
    for (int t = 0; t < n_pos; t++) {
        *p++ = s->b_tok[t];
        *p++ = s->b_pos[t];
        *p++ = seq_of[t];
        *p++ = s->b_want[t];
    }
    for (int i = 0; i < n_seq; i++) {
        *p++ = seqs[i]->n_table;
        memcpy(p, seqs[i]->table, (size_t)seqs[i]->n_table * sizeof *p);
        p += seqs[i]->n_table;
    }
    int64_t len = (int64_t)need;   /* followers wait for it in comm_bcast_idle: so must we */
    if (comm_bcast_idle(s->world, &len, sizeof len, s->leader_rank) ||
        comm_bcast(s->world, s->plan, need * sizeof(int32_t), s->leader_rank))
        return -1;
    return 0;
}

/* Room for n rows of logits (a prompt_logits step wants more than max_seqs); every rank
 * grows its own buffers from the same plan. */
static int ensure_rows(sched *s, int n, char *err, size_t errlen) {
    if (n <= s->n_rows) return 0;
    float *sl = malloc(model_logits_floats(s->m, n) * sizeof *sl);
    float *lg = malloc((size_t)n * s->m->cfg.n_vocab * sizeof *lg);
    if (!sl || !lg) {
        free(sl);
        free(lg);
        snprintf(err, errlen, "sched: out of memory for the logits of %d positions", n);
        return -1;
    }
    free(s->slices);
    free(s->logits);
    s->slices = sl;
    s->logits = lg;
    s->n_rows = n;
    return 0;
}

/* forward + (last stage) full logits of the wanted rows. With pipeline stages a large step
 * runs as micro-batches of at least 16 positions, about 2 per stage, one after the other on
 * every rank: stage k works on one while stage k+1 works on the one before (each position's
 * result is the same either way; a later micro-batch reads the KV an earlier one wrote). */
static int run_forward(sched *s, int n_pos, int n_out, char *err, size_t errlen) {
    if (ensure_rows(s, n_out, err, errlen)) return -1;
    const int pp = s->m->shard.pp;
    int mb = n_pos;
    if (pp > 1) {
        mb = (n_pos + 2 * pp - 1) / (2 * pp);
        if (mb < 16) mb = 16;
    }
    for (int t0 = 0, rows = 0; t0 < n_pos; t0 += mb) {
        int n = n_pos - t0 < mb ? n_pos - t0 : mb;
        model_batch b = { .n = n, .tokens = s->b_tok + t0, .pos = s->b_pos + t0,
                          .want = s->b_want + t0, .tables = (const int32_t *const *)s->b_tab + t0 };
        if (model_forward(s->m, s->st, &b, s->slices + (size_t)rows * s->m->shard.vocab_pad,
                          err, errlen))
            return -1;
        for (int t = t0; t < t0 + n; t++) rows += s->b_want[t] != 0;
    }
    if (n_out && model_has_logits(s->m) &&
        model_logits_full(s->m, s->slices, n_out, s->logits, err, errlen))
        return -1;
    return 0;
}

int sched_follow(sched *s) {
    if (!s->world) return 0;
    char err[256];
    int32_t **tabs = NULL;
    for (;;) {
        int64_t len = 0;
        if (comm_bcast_idle(s->world, &len, sizeof len, s->leader_rank)) {
            fprintf(stderr, "sampan: %s\n", comm_error(s->world));
            free(tabs);
            return -1;
        }
        if (len <= 0) break;
        if ((size_t)len > s->plan_cap) {
            int32_t *p = realloc(s->plan, (size_t)len * sizeof *p);
            if (!p) return -1;
            s->plan = p;
            s->plan_cap = (size_t)len;
        }
        if (comm_bcast(s->world, s->plan, (size_t)len * sizeof(int32_t), s->leader_rank)) {
            fprintf(stderr, "sampan: %s\n", comm_error(s->world));
            free(tabs);
            return -1;
        }
        int32_t *p = s->plan;
        int n_pos = *p++, n_seq = *p++, n_out = 0;
        if (n_pos < 0) break;
        int32_t **nt = realloc(tabs, (size_t)(n_seq ? n_seq : 1) * sizeof *nt);
        if (!nt) break;
        tabs = nt;
        int32_t *pos_part = p;
        p += 4 * (size_t)n_pos;
        for (int i = 0; i < n_seq; i++) {
            int nb = *p++;
            tabs[i] = p;
            p += nb;
        }
        for (int t = 0; t < n_pos; t++) {
            s->b_tok[t] = pos_part[4 * t];
            s->b_pos[t] = pos_part[4 * t + 1];
            s->b_tab[t] = tabs[pos_part[4 * t + 2]];
            s->b_want[t] = (int8_t)pos_part[4 * t + 3];
            n_out += s->b_want[t];
        }
        if (run_forward(s, n_pos, n_out, err, sizeof err)) {
            fprintf(stderr, "sampan: %s: %s\n", comm_where(s->world), err);
            free(tabs);
            return -1;
        }
    }
    free(tabs);
    return 0;
}

/* ---- one step --------------------------------------------------------------------------- */

/* the gauges front ends read (/metrics): refreshed at every exit of a step */
static void stats_refresh(sched *s) {
    int nw = 0;
    for (req *r = s->waiting; r; r = r->next) nw++;
    pthread_mutex_lock(&s->mu);
    s->stats.requests_running = s->n_running;
    s->stats.requests_waiting = nw;
    s->stats.kv_blocks_used = kv_n_held(s->kv);
    s->stats.kv_bytes_used = s->stats.kv_blocks_used * (int64_t)s->block_bytes;
    s->stats.kv_blocks_cached = kv_n_cached(s->kv);
    pthread_mutex_unlock(&s->mu);
}

static void take_inbox(sched *s) {
    pthread_mutex_lock(&s->mu);
    req *in = s->incoming;
    s->incoming = NULL;
    uint64_t *cancels = s->cancels;
    int n_cancels = s->n_cancels;
    s->cancels = NULL;
    s->n_cancels = s->cap_cancels = 0;
    pthread_mutex_unlock(&s->mu);
    while (in) {
        req *n = in->next;
        waiting_insert(s, in);
        in = n;
    }
    for (int c = 0; c < n_cancels; c++) {
        for (int i = 0; i < s->n_running; i++)
            if (s->running[i]->id == cancels[c]) {
                req *r = s->running[i];
                running_remove(s, i);
                finish(s, r, "cancelled", NULL);
                break;
            }
        for (req **pp = &s->waiting; *pp; pp = &(*pp)->next)
            if ((*pp)->id == cancels[c]) {
                req *r = *pp;
                *pp = r->next;
                finish(s, r, "cancelled", NULL);
                break;
            }
    }
    free(cancels);
}

/* Puts r's next `take` positions into the step's batch at n_pos; returns the new n_pos.
 * Logits: of the last token (to sample from), and of the prompt positions not scored yet. */
static int place_chunk(sched *s, req *r, int take, int n_pos, int seq) {
    for (int t = 0; t < take; t++, n_pos++) {
        int p = r->n_computed + t;
        s->b_tok[n_pos] = r->toks[p];
        s->b_pos[n_pos] = p;
        s->b_req[n_pos] = r;
        s->b_want[n_pos] = p == r->n_toks - 1 ||
                           (r->prompt_logits && p < r->n_prompt && p >= r->n_scored);
        s->b_seq[n_pos] = seq;
    }
    return n_pos;
}

/* Samples r's next token from its logits l (V), emits it; the finish reason, or NULL. */
static const char *sample_emit(sched *s, req *r, float *l) {
    if (s->o.on_logits) s->o.on_logits(s->o.on_logits_ctx, r->id, l, s->m->cfg.n_vocab);
    int32_t next = sample_next(r->smp, l, r->toks, r->n_toks);
    r->toks[r->n_toks++] = next;
    r->n_generated++;
    pthread_mutex_lock(&s->mu);
    s->stats.tokens_out++;
    pthread_mutex_unlock(&s->mu);
    if (!r->ignore_eos && tok_is_eog(s->m->tok, next)) {
        r->emit(r->user, next, "", 0, 0, NULL);   /* no text, but a generated token */
        return "eos";
    }
    char piece[256];
    int pl = tok_piece(s->m->tok, next, piece, sizeof piece, 0);
    if (pl > (int)sizeof piece) pl = sizeof piece;
    int st = emit_text(r, next, piece, pl);
    if (st) return st > 0 ? "stop" : "error";   /* error: out of memory */
    return r->n_generated >= r->max_tokens ? "length" : NULL;
}

int sched_step(sched *s) {
    take_inbox(s);
    const int T = s->o.max_batch_tokens;
    int n_pos = 0, budget = T, n_seq = 0, max_seqs = s->o.max_seqs;
    int *seq_idx = s->b_seq;
    req **seqs = s->b_seqs;

    /* 1. running requests, in arrival order: decodes need one position, prefills a chunk */
    for (int i = 0; i < s->n_running && budget > 0; i++) {
        req *r = s->running[i];
        int take = r->n_toks - r->n_computed;
        if (take > budget) take = budget;
        while (grow_table(s, r, r->n_computed + take))
            if (preempt_newest(s, i + 1)) break;
        if (r->n_table * s->o.block_size < r->n_computed + take) {
            /* nothing left to preempt but r itself: it waits */
            running_remove(s, i);
            release_blocks(s, r);
            waiting_insert(s, r);
            s->stats.preemptions++;
            i--;
            continue;
        }
        n_pos = place_chunk(s, r, take, n_pos, n_seq);
        seqs[n_seq++] = r;
        budget -= take;
    }
    /* 2. admit waiting requests (FCFS) while tokens, slots and blocks last */
    while (s->waiting && budget > 0 && s->n_running < max_seqs) {
        req *r = s->waiting;
        reuse_prefix(s, r);
        int take = r->n_toks - r->n_computed;
        if (take > budget) take = budget;
        if (grow_table(s, r, r->n_computed + take)) {
            release_blocks(s, r);
            break;
        }
        s->waiting = r->next;
        r->next = NULL;
        r->state = R_RUNNING;
        s->running[s->n_running++] = r;
        pthread_mutex_lock(&s->mu);
        s->stats.tokens_in += r->counted ? 0 : r->n_prompt;
        r->counted = 1;
        pthread_mutex_unlock(&s->mu);
        n_pos = place_chunk(s, r, take, n_pos, n_seq);
        seqs[n_seq++] = r;
        budget -= take;
    }
    if (n_pos == 0) {
        stats_refresh(s);
        return 0;
    }
    int n_out = 0;
    for (int t = 0; t < n_pos; t++) {
        s->b_tab[t] = s->b_req[t]->table;
        n_out += s->b_want[t];
    }
    char err[256];
    int sent = plan_send(s, n_pos, seqs, n_seq, seq_idx) == 0;
    if (!sent || run_forward(s, n_pos, n_out, err, sizeof err)) {
        if (!sent) snprintf(err, sizeof err, "%s", comm_error(s->world));
        for (int i = s->n_running - 1; i >= 0; i--) {
            req *r = s->running[i];
            running_remove(s, i);
            finish(s, r, "error", err);
        }
        return -1;
    }
    /* 3. advance, sample, emit */
    for (int i = 0; i < n_seq; i++) {
        req *r = seqs[i];
        int took = 0;
        for (int t = 0; t < n_pos; t++) took += s->b_req[t] == r;
        r->n_computed += took;
        publish_blocks(s, r);
    }
    int row = 0;
    for (int t = 0; t < n_pos; t++) {
        if (!s->b_want[t]) continue;
        req *r = s->b_req[t];
        float *l = s->logits + (size_t)row++ * s->m->cfg.n_vocab;
        int p = s->b_pos[t];
        if (r->prompt_logits && p < r->n_prompt && p >= r->n_scored) {
            r->prompt_logits(r->user, p, l, s->m->cfg.n_vocab);
            r->n_scored = p + 1;
        }
        if (p != r->n_toks - 1) continue;   /* a prompt position scored, nothing to sample */
        const char *reason = r->n_generated < r->max_tokens ? sample_emit(s, r, l) : "length";
        if (reason) {
            for (int i = 0; i < s->n_running; i++)
                if (s->running[i] == r) {
                    running_remove(s, i);
                    break;
                }
            finish(s, r, reason, NULL);
        }
    }
    pthread_mutex_lock(&s->mu);
    s->stats.steps++;
    pthread_mutex_unlock(&s->mu);
    stats_refresh(s);
    return n_seq;
}

void sched_run(sched *s) {
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        int n = sched_step(s);
        if (n > 0) continue;
        pthread_mutex_lock(&s->mu);
        if (!s->stopping && !s->incoming && !s->n_cancels) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        pthread_mutex_unlock(&s->mu);
    }
    /* finish what is left, then release the followers */
    take_inbox(s);
    while (s->n_running) {
        req *r = s->running[s->n_running - 1];
        s->n_running--;
        finish(s, r, "cancelled", NULL);
    }
    while (s->waiting) {
        req *r = s->waiting;
        s->waiting = r->next;
        finish(s, r, "cancelled", NULL);
    }
    if (s->world) {
        int64_t len = 2;
        int32_t stop[2] = { -1, 0 };
        if (comm_bcast_idle(s->world, &len, sizeof len, s->leader_rank) == 0)
            comm_bcast(s->world, stop, sizeof stop, s->leader_rank);
    }
}
