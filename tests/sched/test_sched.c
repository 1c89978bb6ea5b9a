/* tests/sched/test_sched.c — the scheduler against the same requests run alone.
 *
 *   test_sched MODEL [--f32 [--no-penalties]]      (under mpirun: tp = world size)
 *
 * 1. Alone: each of 32 greedy requests (different prompts, shared prefixes, prompts longer
 *    than the chunk budget) runs by itself; for stories260K prompt-1 the text must equal the
 *    reference greedy text (llama.cpp's, ../shared/reference). A sliding-window model (every
 *    layer local) holds at most its window plus one chunk of blocks per sequence.
 * 2. Together: all 32 submitted at once with a 48-token step budget: every request returns
 *    exactly its alone tokens; with --f32 every sampled step's logits are bitwise identical.
 * 3. Tight KV pool: preemption happens and every request still returns its alone tokens;
 *    afterwards no block is held.
 * 4. Prefix reuse: a request repeated after its first run reuses cached blocks, same tokens.
 * 5. Cancel: a cancelled request finishes CANCELLED and frees its blocks.
 * 6. Teacher forcing (what `sampan score` submits): max_tokens 0 with prompt_logits gets every
 *    prompt position's logits once, in order, in chunks of the step budget, then LENGTH with
 *    no token; with --f32 the last position's are bitwise the alone run's first sampling step.
 * 7. Finish reasons, one per path: LENGTH; STOP (a stop string cut from the alone text: the
 *    text before its first occurrence comes out); EOS (forced by logit_bias); SHUTDOWN
 *    (sched_stop + sched_run, running and waiting); ERROR (one rank only: a backend whose
 *    embed op fails, submitting one more request from inside it: running, waiting and
 *    incoming all finish ERROR, sched_failed, later submits fail, sched_run returns -1).
 * 8. logit_bias: +100 forces a token, -100 bans the greedy one; every sampled token is the
 *    argmax of the raw logits (on_logits) with the bias applied here; bad ids are refused.
 * 9. Presence / frequency penalties after a repetition penalty: each greedy token is the
 *    argmax of the raw logits penalized here (OpenAI's formula over generated tokens only),
 *    and the logprobs are those of that penalized row.
 * 10. Logprobs: log-softmax (double) of the on_logits row within 1e-5, the top-k list equal
 *    to a full sort's; bitwise the same alone and with 3 other requests sharing the steps.
 * 11. share_prefix_of (n > 1): 3 copies of a long prompt wait while the first computes it,
 *    a later unrelated request is admitted meanwhile; once admitted the copies hold fewer
 *    blocks than 4 prompts' and the forward computed about one prompt plus 3 partial blocks;
 *    all four return the alone tokens.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "kern.h"
#include "backend.h"
#include "model.h"
#include "scheduler/sched.h"
#include "tok.h"

#define NREQ 32
#define NGEN 24
static int passed, failed;
#define CHECK(c, ...) do { if (c) passed++; else { failed++; printf("FAIL %d: ", __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

typedef struct {
    int32_t toks[NGEN + 8];
    int n, done;
    sched_finish finish;
    char text[4096];    /* released bytes; the message when finish is ERROR */
    int text_len;
    float *logits;      /* (NGEN, V) when recording */
    int n_logits;
    float lp[NGEN + 8];                               /* logprobs asked: of each token */
    int n_top[NGEN + 8];
    sched_top top[NGEN + 8][SCHED_MAX_LOGPROBS];
    int finish_calls, events_after_finish;
} result;

static int V;
static result *g_res;   /* results indexed by id - base */
static uint64_t g_base;

static void emit(void *user, const sched_event *ev) {
    result *r = user;
    r->events_after_finish += r->done;
    if (ev->token >= 0 && r->n < NGEN + 8) {
        r->lp[r->n] = ev->logprob;
        r->n_top[r->n] = ev->n_top;
        if (ev->n_top > 0) memcpy(r->top[r->n], ev->top, (size_t)ev->n_top * sizeof *ev->top);
        r->toks[r->n++] = ev->token;
    }
    if (ev->finish == SCHED_FINISH_ERROR) r->text_len = 0;   /* the message alone */
    if (ev->len > 0 && r->text_len + ev->len < (int)sizeof r->text) {
        memcpy(r->text + r->text_len, ev->text, (size_t)ev->len);
        r->text_len += ev->len;
    }
    if (ev->finish != SCHED_FINISH_NONE) {
        r->done = 1;
        r->finish = ev->finish;
        r->finish_calls++;
    }
}

static void on_logits(void *ctx, uint64_t id, const float *l, int n) {
    (void)ctx;
    result *r = &g_res[id - g_base];
    if (r->logits && r->n_logits < NGEN) memcpy(r->logits + (size_t)r->n_logits++ * n, l, (size_t)n * sizeof *l);
}

static char prompts[NREQ][400];

typedef struct {
    int n_pos, in_order, n_tokens, done;
    sched_finish finish;
    float *last;        /* (V) logits of the latest position */
} scored;

static void score_emit(void *user, const sched_event *ev) {
    scored *c = user;
    if (ev->token >= 0) c->n_tokens++;
    if (ev->finish != SCHED_FINISH_NONE) {
        c->done = 1;
        c->finish = ev->finish;
    }
}

static void score_logits(void *user, int pos, const float *l, int n) {
    scored *c = user;
    c->in_order &= pos == c->n_pos;
    c->n_pos++;
    memcpy(c->last, l, (size_t)n * sizeof *l);
}

/* 6: prompt i teacher-forced alone; 0 on success */
static int run_score(model *m, comm *world, sched_opts *o, int i, scored *c) {
    char err[256];
    sched *s = sched_new(m, world, 0, o, err, sizeof err);
    if (!s) {
        printf("sched_new: %s\n", err);
        return -1;
    }
    if (world && world->rank != 0) {
        int rc = sched_follow(s);
        sched_free(s);
        return rc;
    }
    int32_t toks[512];
    int64_t n = tok_encode(m->tok, prompts[i], strlen(prompts[i]), 1, 1, toks, 512);
    sched_request rq = { .prompt = toks, .n_prompt = (int)n, .max_tokens = 0,
                         .sampling = sample_defaults(), .prompt_logits = score_logits,
                         .logprobs = -1 };
    c->in_order = 1;
    if (sched_submit(s, &rq, score_emit, c, NULL, err, sizeof err)) {
        printf("submit: %s\n", err);
        return -1;
    }
    for (int steps = 0; steps < 1000 && !c->done; steps++)
        if (sched_step(s) < 0) break;
    CHECK(c->done && c->n_pos == n && c->in_order && c->n_tokens == 0 && c->finish == SCHED_FINISH_LENGTH,
          "teacher-forced prompt %d: %d/%d positions in order %d, %d tokens, reason '%s'", i, c->n_pos,
          (int)n, c->in_order, c->n_tokens, sched_finish_name(c->finish));
    sched_stop(s);
    CHECK(sched_run(s) == 0, "sched_run after teacher forcing");
    sched_free(s);
    return 0;
}

static void make_prompts(void) {
    const char *base[] = { "Once upon a time", "The little dog", "Lily and Tom went to the park",
                           "One day, a big bear" };
    for (int i = 0; i < NREQ; i++) {
        if (i < 4) snprintf(prompts[i], sizeof prompts[i], "%s", base[i]);
        else if (i < 12)   /* shared prefix: a long common story start, different endings */
            snprintf(prompts[i], sizeof prompts[i],
                     "Once upon a time, there was a little girl named Lily. She loved to play "
                     "outside in the park with her friends. Story %d:", i);
        else if (i < 16)   /* longer than the 48-token step budget */
            snprintf(prompts[i], sizeof prompts[i],
                     "Tom had a red ball and a blue car. He liked to play with them every day in "
                     "the garden near the big tree. One morning his mom said that they would go "
                     "to the beach, and Tom was very happy. Number %d.", i);
        else snprintf(prompts[i], sizeof prompts[i], "%s number %d", base[i % 4], i);
    }
}

static long long g_max_held;   /* most KV blocks held after a step of the last run_batch */

/* runs requests [from, to) submitted together; returns 0 on success */
static int run_batch(model *m, comm *world, sched_opts *o, int from, int to, result *res,
                     int record, int cancel_id) {
    char err[256];
    sched *s = sched_new(m, world, 0, o, err, sizeof err);
    if (!s) {
        printf("sched_new: %s\n", err);
        return -1;
    }
    if (world && world->rank != 0) {
        int rc = sched_follow(s);
        sched_free(s);
        return rc;
    }
    g_res = res;
    int ids_base_set = 0;
    for (int i = from; i < to; i++) {
        int32_t toks[512];
        int64_t n = tok_encode(m->tok, prompts[i], strlen(prompts[i]), 1, 1, toks, 512);
        sched_request rq = { 0 };
        rq.prompt = toks;
        rq.n_prompt = (int)n;
        rq.max_tokens = NGEN;
        rq.sampling = sample_defaults();
        rq.sampling.temp = 0;
        rq.ignore_eos = 1;
        rq.logprobs = -1;
        memset(&res[i], 0, sizeof res[i]);
        if (record) res[i].logits = malloc((size_t)NGEN * V * sizeof(float));
        uint64_t id;
        if (sched_submit(s, &rq, emit, &res[i], &id, err, sizeof err)) {
            printf("submit: %s\n", err);
            return -1;
        }
        if (!ids_base_set) {
            g_base = id - (uint64_t)i;
            ids_base_set = 1;
        }
        if (i == cancel_id) sched_cancel(s, id);
    }
    g_max_held = 0;
    for (int steps = 0; steps < 100000; steps++) {
        int all = 1;
        for (int i = from; i < to; i++) all &= res[i].done;
        if (all) break;
        if (sched_step(s) < 0) break;
        sched_stats sw;
        sched_stats_get(s, &sw);
        if (sw.kv_blocks_used > g_max_held) g_max_held = sw.kv_blocks_used;
    }
    sched_stats st;
    sched_stats_get(s, &st);
    CHECK(st.kv_blocks_used == 0, "after requests %d..%d end, %lld KV blocks are still held", from, to - 1,
          (long long)st.kv_blocks_used);
    if (o->kv_mem && o->kv_mem < 200000) printf("tight pool: %lld preemptions\n", (long long)st.preemptions);
    o->block_size = (int)st.preemptions;   /* report back through an unused field */
    sched_stop(s);
    CHECK(sched_run(s) == 0, "sched_run releases the followers");
    sched_free(s);
    return 0;
}

/* ---- 7-11: the emit API, logit bias, penalties, logprobs, share_prefix_of ----------------- */

/* a scheduler on every rank; NULL on the followers once the leader released them */
static sched *sched_begin(model *m, comm *w, const sched_opts *o) {
    char err[256];
    sched *s = sched_new(m, w, 0, o, err, sizeof err);
    if (!s) {
        printf("sched_new: %s\n", err);
        failed++;
        return NULL;
    }
    if (w && w->rank != 0) {
        if (sched_follow(s)) failed++;
        sched_free(s);
        return NULL;
    }
    return s;
}

static void sched_end(sched *s) {
    sched_stats st;
    sched_stats_get(s, &st);
    CHECK(st.kv_blocks_used == 0, "%lld KV blocks still held at the end", (long long)st.kv_blocks_used);
    sched_stop(s);
    CHECK(sched_run(s) == 0, "sched_run after sched_stop returns 0");
    sched_free(s);
}

static int encode(model *m, int i, int32_t *toks) {
    return (int)tok_encode(m->tok, prompts[i], strlen(prompts[i]), 1, 1, toks, 512);
}

/* a greedy request for prompt i: EOS ignored, no logprobs */
static sched_request greedy_req(model *m, int i, int32_t *toks, int max_tokens) {
    sched_request rq = { 0 };
    rq.prompt = toks;
    rq.n_prompt = encode(m, i, toks);
    rq.max_tokens = max_tokens;
    rq.sampling = sample_defaults();
    rq.sampling.temp = 0;
    rq.ignore_eos = 1;
    rq.logprobs = -1;
    return rq;
}

/* the id, or 0 (counted as a failure) */
static uint64_t submit(sched *s, const sched_request *rq, result *r) {
    char err[256];
    uint64_t id = 0;
    memset(r, 0, sizeof *r);
    if (sched_submit(s, rq, emit, r, &id, err, sizeof err)) {
        printf("submit: %s\n", err);
        failed++;
        return 0;
    }
    return id;
}

static void step_until_done(sched *s, result *r, int n) {
    for (int steps = 0; steps < 100000; steps++) {
        int all = 1;
        for (int i = 0; i < n; i++) all &= r[i].done;
        if (all || sched_step(s) < 0) break;
    }
}

/* argmax, ties to the lowest id (the sampler's greedy rule, written again) */
static int ref_argmax(const float *l, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

static double ref_lse(const float *l, int n) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < n; i++) sum += exp((double)l[i] - mx);
    return mx + log(sum);
}

static const float *g_sort_l;
static int by_logit_then_id(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (g_sort_l[x] != g_sort_l[y]) return g_sort_l[x] > g_sort_l[y] ? -1 : 1;
    return x - y;
}

/* |got - want| within 1e-5, relative past magnitude 1 (a float holds a logprob of -700 only
 * to 3e-5) */
static int lp_close(float got, double want) { return fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want)); }

/* event k of r against the row l (V) its logprobs must come from: 1 if they match */
static int logprobs_match(const result *r, int k, const float *l, int want_top, int *ord) {
    double lse = ref_lse(l, V);
    if (!lp_close(r->lp[k], (double)l[r->toks[k]] - lse)) return 0;
    if (r->n_top[k] != want_top) return 0;
    for (int i = 0; i < V; i++) ord[i] = i;
    g_sort_l = l;
    qsort(ord, (size_t)V, sizeof *ord, by_logit_then_id);
    for (int i = 0; i < want_top; i++)
        if (r->top[k][i].token != ord[i] || !lp_close(r->top[k][i].logprob, (double)l[ord[i]] - lse))
            return 0;
    return 1;
}

/* the failing backend of test 7: its embed op fails, after submitting one more request (so
 * that one is still incoming when the step fails) */
static sched *g_fail_s;
static result *g_fail_late;
static int32_t g_fail_toks[8];
static int fail_embed(backend *b, float *x, const kern_weight *emb, int row0, int C) {
    if (g_fail_s) {
        sched_request rq = { .prompt = g_fail_toks, .n_prompt = 1, .max_tokens = 4,
                             .sampling = sample_defaults(), .logprobs = -1 };
        submit(g_fail_s, &rq, g_fail_late);
        g_fail_s = NULL;
    }
    snprintf(b->err, sizeof b->err, "injected embed failure");
    return -1;
}

/* 7 */
static void test_finish(model *m, comm *w, const sched_opts *o0, const result *alone) {
    sched_opts o = *o0;
    o.on_logits = NULL;
    static result r[4];
    int32_t t0[512], t1[512], t2[512];
    sched *s = sched_begin(m, w, &o);
    if (s) {
        sched_request len = greedy_req(m, 0, t0, 5);
        submit(s, &len, &r[0]);
        /* STOP: 5 bytes from the middle of prompt 0's alone text */
        char stop[8] = "";
        const char *first = NULL;
        if (alone[0].text_len >= 24) {
            memcpy(stop, alone[0].text + 12, 5);
            first = memmem(alone[0].text, (size_t)alone[0].text_len, stop, 5);
            sched_request rq = greedy_req(m, 0, t1, NGEN);
            rq.stop[0] = "\x01never";
            rq.stop[1] = stop;
            submit(s, &rq, &r[1]);
        }
        /* EOS: the bias forces it */
        int32_t eos = tok_eos(m->tok);
        sched_bias fb = { eos, 100.0f };
        if (eos >= 0) {
            sched_request rq = greedy_req(m, 2, t2, NGEN);
            rq.ignore_eos = 0;
            rq.bias = &fb;
            rq.n_bias = 1;
            submit(s, &rq, &r[2]);
        }
        step_until_done(s, r, 1);
        if (first) step_until_done(s, r + 1, 1);
        if (eos >= 0) step_until_done(s, r + 2, 1);
        CHECK(r[0].finish == SCHED_FINISH_LENGTH && r[0].n == 5 &&
              !memcmp(r[0].toks, alone[0].toks, 5 * sizeof(int32_t)) && r[0].finish_calls == 1,
              "LENGTH: '%s' after %d tokens", sched_finish_name(r[0].finish), r[0].n);
        if (first) {
            int want = (int)(first - alone[0].text);
            CHECK(r[1].finish == SCHED_FINISH_STOP && r[1].text_len == want &&
                  !memcmp(r[1].text, alone[0].text, (size_t)want) && r[1].n <= NGEN,
                  "STOP on '%s': '%s', %d bytes out, want %d", stop, sched_finish_name(r[1].finish),
                  r[1].text_len, want);
        }
        if (eos >= 0)
            CHECK(r[2].finish == SCHED_FINISH_EOS && r[2].n == 1 && r[2].toks[0] == eos && r[2].text_len == 0,
                  "EOS forced by logit_bias: '%s', %d tokens", sched_finish_name(r[2].finish), r[2].n);
        CHECK(!strcmp(sched_finish_name(SCHED_FINISH_SHUTDOWN), "shutdown") &&
              !strcmp(sched_finish_name(SCHED_FINISH_NONE), ""), "sched_finish_name");
        sched_end(s);
    }
    /* SHUTDOWN: one running, one waiting (max_seqs 1) when sched_stop comes */
    o.max_seqs = 1;
    s = sched_begin(m, w, &o);
    if (s) {
        sched_request a = greedy_req(m, 0, t0, NGEN), b = greedy_req(m, 1, t1, NGEN);
        submit(s, &a, &r[0]);
        submit(s, &b, &r[1]);
        sched_step(s);
        sched_step(s);
        sched_stop(s);
        char err[256];
        CHECK(sched_submit(s, &a, emit, &r[2], NULL, err, sizeof err) == -1, "submit after sched_stop refused");
        CHECK(sched_run(s) == 0, "sched_run after sched_stop");
        CHECK(r[0].finish == SCHED_FINISH_SHUTDOWN && r[0].n >= 1 && r[0].n < NGEN && r[0].finish_calls == 1,
              "running request at shutdown: '%s' after %d tokens", sched_finish_name(r[0].finish), r[0].n);
        CHECK(r[1].finish == SCHED_FINISH_SHUTDOWN && r[1].n == 0 && r[1].finish_calls == 1,
              "waiting request at shutdown: '%s'", sched_finish_name(r[1].finish));
        sched_stats st;
        sched_stats_get(s, &st);
        CHECK(st.kv_blocks_used == 0 && st.requests_finished == 2, "after shutdown: %lld blocks, %lld finished",
              (long long)st.kv_blocks_used, (long long)st.requests_finished);
        sched_free(s);
    }
    /* ERROR: a failing forward (one rank: with followers the leader's failure strands them,
     * which is the caller's comm_abort to handle) */
    if (w) return;
    s = sched_begin(m, w, &o);
    if (!s) return;
    sched_request a = greedy_req(m, 0, t0, NGEN), b = greedy_req(m, 1, t1, NGEN);
    submit(s, &a, &r[0]);
    submit(s, &b, &r[1]);
    CHECK(sched_step(s) == 1 && r[0].n == 1 && !sched_failed(s), "the step before the failure");
    backend_i bad = *m->be->i;
    const backend_i *orig = m->be->i;
    bad.embed = fail_embed;
    g_fail_s = s;
    g_fail_late = &r[2];
    g_fail_toks[0] = t0[0];
    m->be->i = &bad;
    int rc = sched_step(s);
    m->be->i = orig;
    CHECK(rc == -1 && sched_failed(s), "the failing step returns -1 (%d), sched_failed %d", rc, sched_failed(s));
    const char *what[3] = { "running", "waiting", "incoming" };
    for (int i = 0; i < 3; i++)
        CHECK(r[i].finish == SCHED_FINISH_ERROR && r[i].finish_calls == 1 && !r[i].events_after_finish &&
              memmem(r[i].text, (size_t)r[i].text_len, "injected embed failure", 22),
              "%s request: '%s' with '%.*s'", what[i], sched_finish_name(r[i].finish), r[i].text_len, r[i].text);
    char err[256] = "";
    CHECK(sched_submit(s, &a, emit, &r[3], NULL, err, sizeof err) == -1 && strstr(err, "failed") &&
          strstr(err, "injected"), "submit after the failure: '%s'", err);
    CHECK(sched_step(s) == -1, "sched_step after the failure");
    CHECK(sched_run(s) == -1, "sched_run after the failure returns -1 at once");
    sched_stats st;
    sched_stats_get(s, &st);
    CHECK(st.kv_blocks_used == 0 && st.requests_finished == 3 && st.requests_running == 0 &&
          st.requests_waiting == 0, "after the failure: %lld blocks, %lld finished",
          (long long)st.kv_blocks_used, (long long)st.requests_finished);
    sched_free(s);
}

/* 8 */
static void test_bias(model *m, comm *w, const sched_opts *o0, const result *alone) {
    sched_opts o = *o0;
    o.on_logits = on_logits;
    static result r[3];
    int32_t t0[512], t1[512], t2[512];
    sched *s = sched_begin(m, w, &o);
    if (!s) return;
    g_res = r;
    g_base = 1;
    int32_t x = (alone[1].toks[0] + 7) % V;
    int32_t g = alone[2].toks[0];
    sched_bias force = { x, 100.0f };
    sched_bias ban[2] = { { g, -100.0f }, { 3 % V, 0.25f } };
    sched_bias *all = malloc((size_t)V * sizeof *all);
    for (int i = 0; i < V; i++) all[i] = (sched_bias){ i, -100.0f };
    sched_request a = greedy_req(m, 1, t0, 4), b = greedy_req(m, 2, t1, 4), c = greedy_req(m, 0, t2, 2);
    a.bias = &force;
    a.n_bias = 1;
    b.bias = ban;
    b.n_bias = 2;
    c.bias = all;
    c.n_bias = V;
    submit(s, &a, &r[0]);
    submit(s, &b, &r[1]);
    submit(s, &c, &r[2]);
    for (int i = 0; i < 3; i++) r[i].logits = malloc((size_t)NGEN * V * sizeof(float));
    step_until_done(s, r, 3);
    float *l = malloc((size_t)V * sizeof *l);
    int ok_a = r[0].n == 4 && r[0].n_logits == 4, ok_b = r[1].n == 4 && r[1].n_logits == 4;
    int ok_c = r[2].n == 2 && r[2].n_logits == 2;
    for (int k = 0; k < r[0].n_logits; k++) {
        memcpy(l, r[0].logits + (size_t)k * V, (size_t)V * sizeof *l);
        l[x] += 100.0f;
        ok_a &= r[0].toks[k] == ref_argmax(l, V) && r[0].toks[k] == x;
    }
    for (int k = 0; k < r[1].n_logits; k++) {
        memcpy(l, r[1].logits + (size_t)k * V, (size_t)V * sizeof *l);
        l[g] = -INFINITY;
        l[3 % V] += 0.25f;
        ok_b &= r[1].toks[k] == ref_argmax(l, V) && r[1].toks[k] != g;
    }
    for (int k = 0; k < r[2].n_logits; k++) {
        memcpy(l, r[2].logits + (size_t)k * V, (size_t)V * sizeof *l);
        for (int i = 0; i < V; i++) l[i] += -100.0f;
        ok_c &= r[2].toks[k] == ref_argmax(l, V);
    }
    CHECK(ok_a, "bias +100 forces token %d: got %d %d %d %d", x, r[0].toks[0], r[0].toks[1], r[0].toks[2], r[0].toks[3]);
    CHECK(ok_b && alone[2].toks[0] == g, "bias -100 bans greedy token %d: got %d %d %d %d", g, r[1].toks[0],
          r[1].toks[1], r[1].toks[2], r[1].toks[3]);
    CHECK(ok_c && r[2].finish == SCHED_FINISH_LENGTH, "every token banned: the bans act as biases (%d tokens)", r[2].n);
    /* refused at submit, the id named */
    char err[256] = "";
    sched_bias bad = { V, 1.0f };
    a.bias = &bad;
    a.n_bias = 1;
    char want[32];
    snprintf(want, sizeof want, "token id %d", V);
    CHECK(sched_submit(s, &a, emit, &r[0], NULL, err, sizeof err) == -1 && strstr(err, want),
          "bias id out of range: '%s'", err);
    bad = (sched_bias){ -1, 1.0f };
    CHECK(sched_submit(s, &a, emit, &r[0], NULL, err, sizeof err) == -1 && strstr(err, "token id -1"),
          "negative bias id: '%s'", err);
    bad = (sched_bias){ 5 % V, NAN };
    CHECK(sched_submit(s, &a, emit, &r[0], NULL, err, sizeof err) == -1, "NaN bias refused: '%s'", err);
    a.n_bias = 0;
    a.logprobs = SCHED_MAX_LOGPROBS + 1;
    CHECK(sched_submit(s, &a, emit, &r[0], NULL, err, sizeof err) == -1, "logprobs 21 refused: '%s'", err);
    for (int i = 0; i < 3; i++) free(r[i].logits);
    free(l);
    free(all);
    sched_end(s);
}

/* 9: presence / frequency after the repetition penalty, bias before them, logprobs of the row.
 * Request 0: penalties against repetition; request 1: a negative frequency penalty (OpenAI
 * allows down to -2; -30 here) that makes the first token win every later step, so the
 * penalties change the argmax whatever the model's logits look like. */
static void test_penalties(model *m, comm *w, const sched_opts *o0, const result *alone) {
    sched_opts o = *o0;
    o.on_logits = on_logits;
    static result r[2];
    int32_t t[2][512];
    sched *s = sched_begin(m, w, &o);
    if (!s) return;
    g_res = r;
    g_base = 1;
    const float rp[2] = { 1.1f, 1.3f }, pp[2] = { 0.6f, 0.5f }, fp[2] = { 0.9f, -30.0f };
    const int last_n = 16;
    sched_request q[2];
    sched_bias b = { alone[4].toks[1], 2.0f };
    for (int i = 0; i < 2; i++) {
        q[i] = greedy_req(m, 4 + i, t[i], NGEN);
        q[i].sampling.rep_penalty = rp[i];
        q[i].sampling.rep_last_n = last_n;
        q[i].sampling.presence_penalty = pp[i];
        q[i].sampling.frequency_penalty = fp[i];
        q[i].logprobs = 3;
        q[i].bias = &b;
        q[i].n_bias = 1;
        submit(s, &q[i], &r[i]);
        r[i].logits = malloc((size_t)NGEN * V * sizeof(float));
    }
    step_until_done(s, r, 2);
    float *l = malloc((size_t)V * sizeof *l);
    int *cnt = calloc((size_t)V, sizeof *cnt), *ord = malloc((size_t)V * sizeof *ord);
    int moved = 0;
    for (int i = 0; i < 2; i++) {
        int n_prompt = q[i].n_prompt, ok = r[i].n == NGEN && r[i].n_logits == NGEN, ok_lp = ok;
        int32_t hist[512 + NGEN];
        memcpy(hist, t[i], (size_t)n_prompt * sizeof *hist);
        memcpy(hist + n_prompt, r[i].toks, NGEN * sizeof *hist);
        for (int k = 0; k < r[i].n_logits; k++) {
            memcpy(l, r[i].logits + (size_t)k * V, (size_t)V * sizeof *l);
            int raw_best = ref_argmax(l, V);
            l[b.token] += b.bias;
            int n = n_prompt + k, from = n > last_n ? n - last_n : 0;
            for (int h = from; h < n; h++) {   /* repetition: each distinct recent token once */
                int dup = 0;
                for (int j = from; j < h; j++) dup |= hist[j] == hist[h];
                if (!dup) l[hist[h]] = l[hist[h]] > 0 ? l[hist[h]] / rp[i] : l[hist[h]] * rp[i];
            }
            memset(cnt, 0, (size_t)V * sizeof *cnt);
            for (int h = n_prompt; h < n; h++) cnt[hist[h]]++;   /* generated tokens only */
            for (int j = 0; j < V; j++) l[j] -= cnt[j] * fp[i] + (cnt[j] > 0) * pp[i];
            int best = ref_argmax(l, V);
            ok &= r[i].toks[k] == best;
            moved += best != raw_best;
            ok_lp &= logprobs_match(&r[i], k, l, 3, ord);
        }
        CHECK(ok, "request %d: penalized greedy tokens equal the reference argmax (%d tokens)", i, r[i].n);
        CHECK(ok_lp, "request %d: logprobs are those of the biased, penalized row", i);
        free(r[i].logits);
    }
    CHECK(moved > 0, "the bias and penalties changed the argmax at %d of %d steps", moved, 2 * NGEN);
    free(l);
    free(cnt);
    free(ord);
    sched_end(s);
}

/* 10: logprobs against the on_logits row; the same alone and sharing steps with 3 others */
static void test_logprobs(model *m, comm *w, const sched_opts *o0, int f32) {
    sched_opts o = *o0;
    o.on_logits = on_logits;
    static result solo[1], mix[4];
    int32_t t0[512], t1[512], t2[512], t3[512];
    sched *s = sched_begin(m, w, &o);
    if (s) {
        g_res = solo;
        g_base = 1;
        sched_request a = greedy_req(m, 5, t0, NGEN);
        a.logprobs = 5;
        submit(s, &a, &solo[0]);
        solo[0].logits = malloc((size_t)NGEN * V * sizeof(float));
        step_until_done(s, solo, 1);
        int ok = solo[0].n == NGEN && solo[0].n_logits == NGEN, top_is_token = 1;
        int *ord = malloc((size_t)V * sizeof *ord);
        for (int k = 0; k < solo[0].n_logits; k++) {
            ok &= logprobs_match(&solo[0], k, solo[0].logits + (size_t)k * V, 5, ord);
            top_is_token &= solo[0].top[k][0].token == solo[0].toks[k];
        }
        CHECK(ok, "logprobs = log-softmax of the on_logits row within 1e-5, top-5 = a full sort's");
        CHECK(top_is_token, "greedy: the best of the top list is the token");
        free(ord);
        free(solo[0].logits);
        solo[0].logits = NULL;
        sched_end(s);
    }
    o.on_logits = NULL;
    s = sched_begin(m, w, &o);
    if (!s) return;
    sched_request a = greedy_req(m, 5, t0, NGEN);
    a.logprobs = 5;
    sched_request b = greedy_req(m, 12, t1, NGEN), c = greedy_req(m, 13, t2, NGEN), d = greedy_req(m, 6, t3, NGEN);
    b.logprobs = 0;
    c.sampling.temp = 0.8f;
    c.sampling.seed = 5;
    c.logprobs = 2;
    submit(s, &b, &mix[1]);
    submit(s, &c, &mix[2]);
    submit(s, &a, &mix[0]);
    submit(s, &d, &mix[3]);
    step_until_done(s, mix, 4);
    int same = mix[0].n == solo[0].n && !memcmp(mix[0].toks, solo[0].toks, sizeof mix[0].toks) &&
               !memcmp(mix[0].lp, solo[0].lp, sizeof mix[0].lp) &&
               !memcmp(mix[0].n_top, solo[0].n_top, sizeof mix[0].n_top) &&
               !memcmp(mix[0].top, solo[0].top, sizeof mix[0].top);
    double worst = 0;
    for (int k = 0; k < mix[0].n && k < solo[0].n; k++)
        worst = fmax(worst, fabs((double)mix[0].lp[k] - solo[0].lp[k]));
    if (f32) CHECK(same, "logprobs bitwise identical alone and with 3 others (worst diff %g)", worst);
    else CHECK(!memcmp(mix[0].toks, solo[0].toks, sizeof mix[0].toks) && worst < 1e-3,
               "logprobs alone and with 3 others: same tokens, worst diff %g (bitwise: %d)", worst, same);
    int zero_top = mix[1].n == NGEN;
    for (int k = 0; k < mix[1].n; k++) zero_top &= mix[1].n_top[k] == 0 && mix[1].lp[k] <= 0;
    CHECK(zero_top, "logprobs 0: a logprob and no top list");
    sched_end(s);
}

/* 11 */
static void test_share_prefix(model *m, comm *w, const sched_opts *o0, const result *alone) {
    sched_opts o = *o0;
    o.on_logits = NULL;
    static result r[6];
    int32_t t[5][512];
    sched *s = sched_begin(m, w, &o);
    if (!s) return;
    const int n = 4, bs = o.block_size;
    sched_request a = greedy_req(m, 12, t[0], NGEN);
    const int n_prompt = a.n_prompt, bpp = (n_prompt + bs - 1) / bs, reusable = (n_prompt - 1) / bs * bs;
    uint64_t id_a = submit(s, &a, &r[0]);
    for (int i = 1; i < n; i++) {
        sched_request c = greedy_req(m, 12, t[i], NGEN);
        c.share_prefix_of = id_a;
        submit(s, &c, &r[i]);
    }
    sched_request e = greedy_req(m, 0, t[4], NGEN);   /* unrelated, submitted last */
    submit(s, &e, &r[4]);
    sched_stats st;
    int steps = 0, held_ok = 1;
    while (r[0].n == 0 && steps < 100) {   /* until the first has computed its prompt */
        sched_step(s);
        steps++;
        sched_stats_get(s, &st);
        held_ok &= st.requests_waiting >= n - 1 && r[1].n == 0 && r[2].n == 0 && r[3].n == 0;
    }
    sched_stats_get(s, &st);
    CHECK(held_ok && st.requests_waiting == n - 1 && st.requests_running == 2,
          "the copies wait while the first computes its prompt (%d steps): %lld waiting, %lld running",
          steps, (long long)st.requests_waiting, (long long)st.requests_running);
    for (int k = 0; k < 4 && st.requests_waiting > 0; k++) {
        sched_step(s);
        steps++;
        sched_stats_get(s, &st);
    }
    int64_t bound = n_prompt + (int64_t)(n - 1) * (n_prompt - reusable) + e.n_prompt + 2 * steps;
    printf("share_prefix_of: prompt %d tokens (%d blocks, %d reusable tokens); after %d steps %lld blocks held, "
           "%lld positions computed (bound %lld)\n", n_prompt, bpp, reusable, steps,
           (long long)st.kv_blocks_used, (long long)st.tokens_computed, (long long)bound);
    CHECK(st.requests_waiting == 0 && st.requests_running == n + 1, "all admitted: %lld waiting",
          (long long)st.requests_waiting);
    CHECK(st.kv_blocks_used < (int64_t)n * bpp, "%lld KV blocks held for %d copies of %d blocks",
          (long long)st.kv_blocks_used, n, bpp);
    CHECK(st.tokens_computed <= bound && st.tokens_computed < (int64_t)n * n_prompt / 2 + e.n_prompt + 2 * steps,
          "%lld positions computed for %d copies of %d tokens", (long long)st.tokens_computed, n, n_prompt);
    /* one naming a request that ended: admitted at once */
    sched_request late = greedy_req(m, 12, t[1], 2);
    step_until_done(s, r, 5);
    late.share_prefix_of = id_a;
    submit(s, &late, &r[5]);
    step_until_done(s, r + 5, 1);
    int same = 0;
    for (int i = 0; i < n; i++) same += r[i].n == NGEN && !memcmp(r[i].toks, alone[12].toks, NGEN * sizeof(int32_t));
    CHECK(same == n, "the copies return the alone tokens: %d/%d", same, n);
    CHECK(r[4].n == NGEN && !memcmp(r[4].toks, alone[0].toks, NGEN * sizeof(int32_t)), "the unrelated request");
    CHECK(r[5].finish == SCHED_FINISH_LENGTH && r[5].n == 2 && !memcmp(r[5].toks, alone[12].toks, 2 * sizeof(int32_t)),
          "share_prefix_of a finished request");
    sched_end(s);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_sched MODEL [--f32] [--ref FILE.json]\n");
        return 2;
    }
    const char *path = argv[1];
    int f32 = argc > 2 && !strcmp(argv[2], "--f32");
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("skip: %s not found\n", path);
        return 77;
    }
    fclose(f);
    kern_init(NULL);
    char err[512];
    comm *world = NULL;
    if (comm_world_init(&argc, &argv, 0, &world, err, sizeof err)) {
        printf("%s\n", err);
        return 1;
    }
    comm *w = world->size > 1 ? world : NULL;
    /* SAMPAN_TEST_BACKEND=cuda: the same checks on a GPU (tests/gpu/run.sh; one rank) */
    const char *be = getenv("SAMPAN_TEST_BACKEND");
    model_opts mo = { .n_threads = 1, .tp = world->size, .tp_rank = world->rank, .tp_comm = w,
                      .backend = be ? be : "cpu", .device = -1 };
    model *m = NULL;
    if (model_load(path, &mo, &m, err, sizeof err)) {
        printf("%s\n", err);
        return 1;
    }
    if (world->rank == 0) printf("backend %s\n", m->be->i->name);
    V = m->cfg.n_vocab;
    make_prompts();
    static result alone[NREQ], together[NREQ], tight[NREQ], again[NREQ];
    sched_opts o = { .max_batch_tokens = 48, .max_seqs = 32, .kv_mem = 0, .block_size = 16,
                     .n_ctx = m->cfg.n_ctx_train < 512 ? m->cfg.n_ctx_train : 512 };
    size_t bb = model_kv_block_bytes(m, 16);
    o.kv_mem = bb * 512;
    if (f32) {
        o.on_logits = on_logits;
    }
    int leader = world->rank == 0;
    /* 1. alone; a sliding-window model (every layer local) holds at most its window plus one
     *    48-token chunk per sequence, however long the sequence grows */
    const int W = model_kv_window(m);
    int win_ok = 0, win_long = 0;
    const long long win_cap = (W - 1 + 48) / 16 + 2;
    for (int i = 0; i < NREQ; i++) {
        run_batch(m, w, &o, i, i + 1, alone, f32, -1);
        if (W > 0 && leader) {
            int32_t t[512];
            int n = (int)tok_encode(m->tok, prompts[i], strlen(prompts[i]), 1, 1, t, 512) + NGEN;
            win_ok += g_max_held <= win_cap;
            win_long += (n + 15) / 16 > win_cap;   /* would have needed more without dropping */
        }
    }
    if (W > 0 && leader) {
        printf("sliding window %d: sequences held at most %lld blocks each\n", W, win_cap);
        CHECK(win_ok == NREQ, "window %d: each sequence alone held <= %lld blocks: %d/%d", W,
              win_cap, win_ok, NREQ);
        CHECK(win_long > 0, "window %d: %d sequences outgrew the window (blocks were dropped)",
              W, win_long);
    }
    if (leader && strstr(path, "stories260K")) {
        /* llama.cpp's greedy text for this prompt (../shared/reference/stories260K/prompt-1.json) */
        const char *ref = ", there was a little girl named Lily. She loved to play outside in the park. One day";
        CHECK(alone[0].text_len > 60 && !strncmp(alone[0].text, ref, (size_t)alone[0].text_len),
              "stories260K greedy through the scheduler: '%.*s'", alone[0].text_len, alone[0].text);
    }
    /* 2. together */
    o.block_size = 16;
    run_batch(m, w, &o, 0, NREQ, together, f32, -1);
    if (leader) {
        int same = 0, same_logits = 0;
        for (int i = 0; i < NREQ; i++) {
            same += together[i].n == NGEN && !memcmp(together[i].toks, alone[i].toks, sizeof(int32_t) * NGEN);
            if (f32) same_logits += together[i].n_logits == NGEN &&
                                    !memcmp(together[i].logits, alone[i].logits, (size_t)NGEN * V * sizeof(float));
        }
        CHECK(same == NREQ, "32 concurrent requests return their alone tokens: %d/%d", same, NREQ);
        if (f32) CHECK(same_logits == NREQ, "per-step logits bitwise identical to alone: %d/%d", same_logits, NREQ);
    }
    /* 3. tight pool: preemption */
    sched_opts ot = o;
    ot.on_logits = NULL;
    ot.block_size = 16;
    ot.kv_mem = bb * ((size_t)(ot.n_ctx + 15) / 16 + 8);
    run_batch(m, w, &ot, 0, NREQ, tight, 0, -1);
    if (leader) {
        int same = 0;
        for (int i = 0; i < NREQ; i++)
            same += tight[i].n == NGEN && !memcmp(tight[i].toks, alone[i].toks, sizeof(int32_t) * NGEN);
        CHECK(ot.block_size > 0, "the tight pool preempted (%d preemptions)", ot.block_size);
        CHECK(same == NREQ, "with preemption every request returns its alone tokens: %d/%d", same, NREQ);
    }
    /* 4 + 5. one scheduler: the shared-prefix requests twice (second time from the cache), and
     * a cancelled one */
    o.on_logits = NULL;
    o.block_size = 16;
    run_batch(m, w, &o, 4, 12, again, 0, 7);
    if (leader) {
        int same = 0;
        for (int i = 4; i < 12; i++)
            if (i != 7) same += again[i].n == NGEN && !memcmp(again[i].toks, alone[i].toks, sizeof(int32_t) * NGEN);
        CHECK(same == 7, "shared-prefix requests after cache warm-up: %d/7 equal", same);
        CHECK(again[7].done && again[7].finish == SCHED_FINISH_CANCELLED, "cancelled request finished '%s'",
              sched_finish_name(again[7].finish));
    }
    /* 6. teacher forcing: prompt 12 is longer than the 48-token step budget */
    {
        scored c = { 0 };
        c.last = malloc((size_t)V * sizeof(float));
        run_score(m, w, &o, 12, &c);
        if (leader && f32)
            CHECK(alone[12].n_logits > 0 && !memcmp(c.last, alone[12].logits, (size_t)V * sizeof(float)),
                  "last prompt position's teacher-forced logits equal the first sampling step's");
        free(c.last);
    }
    /* 7-11 */
    o.on_logits = NULL;
    o.block_size = 16;
    test_finish(m, w, &o, alone);
    test_bias(m, w, &o, alone);
    /* a synthetic model with wide logit margins (tiny-gemma3-swa) may never let the penalties
     * move an argmax, which test_penalties requires to see at least once: --no-penalties */
    if (!(argc > 3 && !strcmp(argv[3], "--no-penalties"))) test_penalties(m, w, &o, alone);
    test_logprobs(m, w, &o, f32);
    test_share_prefix(m, w, &o, alone);
    for (int i = 0; i < NREQ; i++) {
        free(alone[i].logits);
        free(together[i].logits);
    }
    model_free(m);
    comm_world_finalize();
    if (leader) printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
