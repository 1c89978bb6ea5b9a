/* launch/http_metrics.c — what GET /metrics reports (Prometheus text format 0.0.4): the
 * scheduler's counters and gauges (sched_stats), latency histograms fed by the emit callback,
 * and responses per HTTP status. The histograms and status counts live in http_server.met
 * under its mu. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "http_impl.h"


static const double http__ttft_le[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                        30, 60 };
static const double http__itl_le[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                       1, 2.5 };
static const double http__dur_le[] = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                                       300 };

void http__hist_observe(http__hist *hi, double v) {
    int i = 0;
    while (i < hi->n && v > hi->le[i]) i++;
    hi->cnt[i]++;
    hi->sum += v;
    hi->count++;
}

static const int http__codes[HTTP__N_CODES] = { 200, 400, 401, 404, 405, 413, 415, 429, 500, 503 };

void http__metrics_init(http__metrics *m) {
    m->ttft = (http__hist){ .name = "sampan_time_to_first_token_seconds",
                            .help = "Seconds from submission to the first generated token.",
                            .le = http__ttft_le, .n = sizeof http__ttft_le / sizeof *http__ttft_le };
    m->itl = (http__hist){ .name = "sampan_inter_token_latency_seconds",
                           .help = "Seconds between consecutive tokens of one request.",
                           .le = http__itl_le, .n = sizeof http__itl_le / sizeof *http__itl_le };
    m->dur = (http__hist){ .name = "sampan_request_duration_seconds",
                           .help = "Seconds from submission to the last token.",
                           .le = http__dur_le, .n = sizeof http__dur_le / sizeof *http__dur_le };
}

void http__count(http_server *h, int status) {
    int i = 0;
    while (i < HTTP__N_CODES && http__codes[i] != status) i++;
    pthread_mutex_lock(&h->mu);
    h->met.status[i]++;
    pthread_mutex_unlock(&h->mu);
}

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} http__text;

static void http__printf(http__text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void http__printf(http__text *t, const char *fmt, ...) {
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p ? t->p + t->n : NULL, t->p ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->oom = 1;
            return;
        }
        if (t->p && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        if (http__grow((void **)&t->p, &t->cap, t->n + (size_t)k + 1, 1)) {
            t->oom = 1;
            return;
        }
    }
}

static void http__metric(http__text *t, const char *name, const char *type, const char *help,
                         double v) {
    http__printf(t, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void http__hist_print(http__text *t, const http__hist *hi) {
    http__printf(t, "# HELP %s %s\n# TYPE %s histogram\n", hi->name, hi->help, hi->name);
    uint64_t acc = 0;
    for (int i = 0; i < hi->n; i++) {
        acc += hi->cnt[i];
        http__printf(t, "%s_bucket{le=\"%g\"} %llu\n", hi->name, hi->le[i], (unsigned long long)acc);
    }
    http__printf(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", hi->name,
                 (unsigned long long)hi->count, hi->name, hi->sum, hi->name,
                 (unsigned long long)hi->count);
}

enum MHD_Result http__metrics_get(http_server *h, struct MHD_Connection *c) {
    sched_stats st;
    sched_stats_get(h->s, &st);
    http__text t = { 0 };
    http__metric(&t, "sampan_requests_total", "counter", "Requests submitted to the scheduler.",
                 (double)st.requests_total);
    http__metric(&t, "sampan_requests_finished_total", "counter", "Requests the scheduler finished.",
                 (double)st.requests_finished);
    http__metric(&t, "sampan_requests_running", "gauge", "Sequences in the running batch.",
                 (double)st.requests_running);
    http__metric(&t, "sampan_requests_waiting", "gauge", "Requests queued for admission.",
                 (double)st.requests_waiting);
    http__metric(&t, "sampan_tokens_in_total", "counter", "Prompt tokens admitted.", (double)st.tokens_in);
    http__metric(&t, "sampan_tokens_out_total", "counter", "Tokens generated.", (double)st.tokens_out);
    http__metric(&t, "sampan_kv_blocks_total", "gauge", "KV cache blocks in the pool.",
                 (double)st.kv_blocks_total);
    http__metric(&t, "sampan_kv_blocks_used", "gauge", "KV cache blocks held by sequences.",
                 (double)st.kv_blocks_used);
    http__metric(&t, "sampan_kv_blocks_free", "gauge",
                 "KV cache blocks not held by any sequence (prefix-cached ones included).",
                 (double)(st.kv_blocks_total - st.kv_blocks_used));
    http__metric(&t, "sampan_kv_blocks_cached", "gauge",
                 "Free KV cache blocks that still hold a reusable prompt prefix.",
                 (double)st.kv_blocks_cached);
    http__metric(&t, "sampan_kv_bytes_total", "gauge",
                 "Bytes of the KV cache pool on the leader rank (its KV type's).",
                 (double)st.kv_bytes_total);
    http__metric(&t, "sampan_kv_bytes_used", "gauge",
                 "Bytes of the KV cache held by sequences on the leader rank.",
                 (double)st.kv_bytes_used);
    http__metric(&t, "sampan_preemptions_total", "counter",
                 "Running sequences preempted because the KV pool ran out.", (double)st.preemptions);
    http__metric(&t, "sampan_steps_total", "counter", "Forward steps run by the scheduler.",
                 (double)st.steps);
    pthread_mutex_lock(&h->conn_mu);
    double conns[] = { (double)h->n_socks, (double)h->n_waiting, (double)h->n_timed_out,
                       (double)(h->n_shed - h->n_timed_out), (double)h->n_refused };
    pthread_mutex_unlock(&h->conn_mu);
    http__metric(&t, "sampan_http_connections", "gauge", "Open client connections.", conns[0]);
    http__metric(&t, "sampan_http_connections_waiting", "gauge",
                 "Connections still sending their request.", conns[1]);
    http__metric(&t, "sampan_http_request_timeouts_total", "counter",
                 "Connections closed because their request took longer than --request-timeout.",
                 conns[2]);
    http__metric(&t, "sampan_http_connections_shed_total", "counter",
                 "Connections still sending their request closed to make room for a new one.",
                 conns[3]);
    http__metric(&t, "sampan_http_refused_total", "counter",
                 "Requests answered 503 for capacity (server or per-client cap).", conns[4]);
    pthread_mutex_lock(&h->mu);
    http__hist_print(&t, &h->met.ttft);
    http__hist_print(&t, &h->met.itl);
    http__hist_print(&t, &h->met.dur);
    http__printf(&t, "# HELP sampan_http_responses_total HTTP responses by status code.\n"
                     "# TYPE sampan_http_responses_total counter\n");
    for (int i = 0; i < HTTP__N_CODES; i++)
        http__printf(&t, "sampan_http_responses_total{code=\"%d\"} %llu\n", http__codes[i],
                     (unsigned long long)h->met.status[i]);
    http__printf(&t, "sampan_http_responses_total{code=\"other\"} %llu\n",
                 (unsigned long long)h->met.status[HTTP__N_CODES]);
    pthread_mutex_unlock(&h->mu);
    if (t.oom) {
        free(t.p);
        return http__fail(h, c, 500, NULL, NULL, "out of memory");
    }
    return http__send(h, c, 200, "text/plain; version=0.0.4; charset=utf-8", t.p, t.n, NULL);
}
