/* launch/http_req.c — the life cycle of one completion request (server.h tells it): created
 * by its connection thread with n choices, each choice filled by the scheduler's emit callback
 * on the step-loop thread (text, and logprob entries when asked), read and finally released by
 * the connection; the last reference frees it. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "http_impl.h"
#include "utf8.h"

/* ---- requests: creation, output queue, release -------------------------------------------- */

http__req *http__req_new(http_server *h, int n) {
    if (n < 1 || n > OAI_MAX_N) return NULL;
    http__req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    clk_cond_init(&r->cv);
    pthread_mutex_init(&r->mu, NULL);
    r->h = h;
    r->refs = 1;
    r->fd = -1;
    r->n = n;
    r->logprobs = -1;
    r->prompt_done = 1;
    for (int i = 0; i < n; i++) {
        r->ch[i].r = r;
        r->ch[i].index = i;
    }
    pthread_mutex_lock(&h->mu);
    uint64_t k = ++h->counter;
    r->next = h->live;
    if (h->live) h->live->prev = r;
    h->live = r;
    pthread_mutex_unlock(&h->mu);
    snprintf(r->id, sizeof r->id, "%016llx%08llx", (unsigned long long)h->nonce,
             (unsigned long long)(k & 0xffffffffu));
    r->created = (long)time(NULL);
    return r;
}

void http__req_destroy(http__req *r) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    for (int i = 0; i < r->n; i++) {
        http__choice *c = &r->ch[i];
        free(c->out);
        free(c->seg);
        free(c->lp);
        free(c->top);
        free(c->errmsg);
    }
    free(r->plp);
    free(r->plp_ntop);
    free(r->plp_top);
    free(r->plp_off);
    free(r->echo_text);
    free(r->prompt);
    free(r->sse);
    free(r);
}

void http__req_release(http__req *r) {
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    http_server *h = r->h;
    pthread_mutex_lock(&h->mu);
    if (r->prev) r->prev->next = r->next;
    else h->live = r->next;
    if (r->next) r->next->prev = r->prev;
    pthread_mutex_unlock(&h->mu);
    http__req_destroy(r);
}

int http__grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Appends an event's bytes (r->mu held): complete characters go to out (invalid and 0 bytes
 * as U+FFFD: oai_text), an incomplete tail waits in pend; final flushes the tail too. */
static void http__choice_append(http__choice *c, const char *text, size_t len, int final) {
    size_t n = (size_t)c->n_pend + len;
    if (n == 0) return;
    char *raw = malloc(n);
    if (!raw) {
        c->oom = 1;
        return;
    }
    memcpy(raw, c->pend, (size_t)c->n_pend);
    if (len) memcpy(raw + c->n_pend, text, len);
    size_t k = final ? n : n - utf8_incomplete_tail(raw, n);
    c->n_pend = (int)(n - k);
    memcpy(c->pend, raw + k, n - k);
    if (k) {
        size_t vl = 0;
        char *v = oai_text(raw, k, &vl);
        if (!v || http__grow((void **)&c->out, &c->out_cap, c->out_len + vl + 1, 1)) {
            c->oom = 1;
        } else {
            memcpy(c->out + c->out_len, v, vl + 1);
            c->out_len += vl;
            c->out_chars += oai_chars(v, vl);
        }
        free(v);
    }
    free(raw);
}

/* a token's logprobs (r->mu held), text_off: characters released before its event */
static void http__choice_lp(http__choice *c, const sched_event *ev, long text_off) {
    int k = c->r->logprobs;
    int nt = ev->n_top < k ? ev->n_top : k;
    if (nt < 0 || !ev->top) nt = 0;
    if (http__grow((void **)&c->lp, &c->lp_cap, c->n_lp + 1, sizeof *c->lp) ||
        (k > 0 && http__grow((void **)&c->top, &c->top_cap, (c->n_lp + 1) * (size_t)k, sizeof *c->top))) {
        c->oom = 1;
        return;
    }
    if (nt) memcpy(c->top + c->n_lp * (size_t)k, ev->top, (size_t)nt * sizeof *c->top);
    c->lp[c->n_lp++] = (http__lp){ .token = ev->token, .logprob = ev->logprob, .n_top = nt,
                                   .text_off = text_off };
}

/* The scheduler's callback for one choice, on its step-loop thread: append, signal, never
 * block on I/O. */
void http__emit(void *user, const sched_event *ev) {
    http__choice *c = user;
    http__req *r = c->r;
    http_server *h = r->h;
    double now = clk_now(), ttft = -1, itl = -1, dur = -1;
    int finished = ev->finish != SCHED_FINISH_NONE;
    int len = ev->len > 0 ? ev->len : 0;
    pthread_mutex_lock(&r->mu);
    if (c->finished) {
        /* ended already (http_fail ends running choices before the scheduler does): what the
         * scheduler still sends is dropped, its last call drops its reference */
        pthread_mutex_unlock(&r->mu);
        if (finished) http__req_release(r);
        return;
    }
    size_t len0 = c->out_len, lp0 = c->n_lp;
    long chars0 = c->out_chars;
    if (ev->finish == SCHED_FINISH_ERROR) {
        free(c->errmsg);
        c->errmsg = strndup(ev->text ? ev->text : "", (size_t)len);
        http__choice_append(c, "", 0, 1);
    } else if (len > 0 || finished) {
        http__choice_append(c, ev->text ? ev->text : "", (size_t)len, finished);
    }
    if (ev->token >= 0 && r->logprobs >= 0) http__choice_lp(c, ev, chars0);
    if (c->out_len != len0 || c->n_lp != lp0) {
        if (http__grow((void **)&c->seg, &c->seg_cap, c->n_seg + 1, sizeof *c->seg)) c->oom = 1;
        else c->seg[c->n_seg++] = (http__seg){ .text_end = c->out_len, .lp_end = (int)c->n_lp };
    }
    if (ev->token >= 0) {
        c->n_tokens++;
        if (!r->got_first) ttft = now - r->t_submit;
        else if (c->t_last > 0) itl = now - c->t_last;
        r->got_first = 1;
        c->t_last = now;
    }
    /* choice 0 samples only once its prompt is computed, and the others share that prompt */
    if (c->index == 0 && (ev->token >= 0 || finished)) r->prompt_done = 1;
    if (finished) {
        c->finished = 1;
        c->finish = ev->finish;
        r->finished = ++r->n_finished == r->n;
        if (r->finished) dur = now - r->t_submit;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&h->mu);
    if (ttft >= 0) http__hist_observe(&h->met.ttft, ttft);
    if (itl >= 0) http__hist_observe(&h->met.itl, itl);
    if (dur >= 0) http__hist_observe(&h->met.dur, dur);
    pthread_mutex_unlock(&h->mu);
    if (finished) http__req_release(r);
}

/* Teacher-forced logits of choice 0's prompt (echo with logprobs): row pos scores prompt token
 * pos + 1. Positions come in order; a repeat after a preemption is skipped (the same rows). */
void http__prompt_logits(void *user, int pos, const float *logits, int n_vocab) {
    http__choice *c = user;
    http__req *r = c->r;
    pthread_mutex_lock(&r->mu);
    int next = r->plp_next;
    pthread_mutex_unlock(&r->mu);
    if (pos != next || pos >= r->n_prompt) return;
    int k = r->logprobs;
    if (pos + 1 < r->n_prompt)
        r->plp_ntop[pos + 1] = oai_row_logprobs(logits, n_vocab, r->prompt[pos + 1], k,
                                                &r->plp[pos + 1], r->plp_top + (size_t)(pos + 1) * k);
    pthread_mutex_lock(&r->mu);
    r->plp_next = pos + 1;
    if (r->plp_next == r->n_prompt) {
        r->prompt_done = 1;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

/* 1 if the client hung up (or its socket failed) */
int http__client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

void http__cancel(http__req *r) {
    if (r->cancelled) return;
    r->cancelled = 1;
    for (int i = 0; i < r->n; i++)
        if (r->ch[i].submitted && !r->ch[i].finished) sched_cancel(r->h->s, r->ch[i].sched_id);
}

/* r->mu held: wait up to HTTP__WAIT_MS for the next emit */
void http__req_wait(http__req *r) {
    const struct timespec ts = clk_deadline_ms(HTTP__WAIT_MS);
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

size_t http__req_fail_all(http_server *h, const char *msg) {
    /* end each running choice as the scheduler would (ERROR), under an extra reference that
     * the emit drops: the scheduler's own (and any emit it still makes) stays valid */
    http__choice **todo = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&h->mu);
    for (http__req *r = h->live; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < r->n; i++)
            if (r->ch[i].submitted && !r->ch[i].finished &&
                !http__grow((void **)&todo, &cap, n + 1, sizeof *todo)) {
                r->refs++;
                todo[n++] = &r->ch[i];
            }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&h->mu);
    sched_event ev = { .token = -1, .text = msg ? msg : "a rank failed", .finish = SCHED_FINISH_ERROR };
    ev.len = (int)strlen(ev.text);
    for (size_t i = 0; i < n; i++) http__emit(todo[i], &ev);
    free(todo);
    return n;
}
