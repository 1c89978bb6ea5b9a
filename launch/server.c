/* launch/server.c — the HTTP daemon (libmicrohttpd): its life cycle (start, drain, fail, stop),
 * and the access handler: routing, authentication, the refusals decided from the headers, the
 * request body, the small GET endpoints. Completions are in http_complete.c, the connection
 * caps and deadlines in http_conn.c, the rest of the front end is listed in http_impl.h; the
 * request life cycle is in server.h.
 *
 * Daemon life cycle (cmd_serve.c drives it):
 *
 *   http_start --> SERVING --http_drain (SIGTERM)--> DRAINING --http_stop--> STOPPED
 *                    `--http_fail (a rank died)---->'   (listen socket shut, new requests 503)
 *   http_fail also ends every running request with an error at once; http_stop first waits up
 *   to HTTP__FLUSH_S for busy connections (the streams' last events), then stopping = 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_impl.h"

/* ---- authentication (exported for tests) ------------------------------------------------- */

int http_auth_ok(const char *header, const char *key) {
    if (!header || !key || !*key) return 0;
    while (*header == ' ') header++;
    if (strncasecmp(header, "Bearer", 6) || header[6] != ' ') return 0;
    const char *bearer = header + 7;
    while (*bearer == ' ') bearer++;
    size_t tl = strlen(bearer), kl = strlen(key);
    while (tl && (bearer[tl - 1] == ' ' || bearer[tl - 1] == '\t')) tl--;
    unsigned diff = tl != kl;
    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned)((unsigned char)bearer[i] ^ (unsigned char)key[i % kl]);
    return diff == 0;
}

/* ---- responses ---------------------------------------------------------------------------- */

/* takes ownership of body (malloc'd); allow: the Allow header of a 405, else NULL;
 * retry: the Retry-After seconds of a 503, else NULL; close: send Connection: close */
static enum MHD_Result http__send_full(http_server *h, struct MHD_Connection *c, int status,
                                       const char *ctype, char *body, size_t len,
                                       const char *allow, const char *retry, int close) {
    struct MHD_Response *res = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!res) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (allow) MHD_add_response_header(res, MHD_HTTP_HEADER_ALLOW, allow);
    if (retry) MHD_add_response_header(res, MHD_HTTP_HEADER_RETRY_AFTER, retry);
    if (close) MHD_add_response_header(res, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == 401) MHD_add_response_header(res, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, res);
    MHD_destroy_response(res);
    http__count(h, status);
    return rc;
}

enum MHD_Result http__send(http_server *h, struct MHD_Connection *c, int status,
                                  const char *ctype, char *body, size_t len, const char *allow) {
    return http__send_full(h, c, status, ctype, body, len, allow, NULL, 0);
}

enum MHD_Result http__send_json(http_server *h, struct MHD_Connection *c, int status,
                                       cJSON *obj, const char *allow) {
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) return MHD_NO;
    return http__send(h, c, status, "application/json", s, strlen(s), allow);
}

enum MHD_Result http__send_err(http_server *h, struct MHD_Connection *c,
                                      const oai_err *e) {
    return http__send_json(h, c, e->status, oai_error_json(e), NULL);
}

enum MHD_Result http__fail(http_server *h, struct MHD_Connection *c, int status,
                                  const char *param, const char *code, const char *fmt, ...) {
    oai_err e;
    oai_err_set(&e, status, param, code, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    return http__send_err(h, c, &e);
}

/* ---- GET endpoints ------------------------------------------------------------------------ */

static cJSON *http__model_obj(http_server *h) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", h->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)h->started);
    cJSON_AddStringToObject(m, "owned_by", "sampan");
    cJSON_AddNumberToObject(m, "max_model_len", h->o.n_ctx);
    return m;
}

enum { R_NONE, R_HEALTH, R_METRICS, R_MODELS, R_MODEL, R_COMPLETIONS, R_CHAT };

static int http__route(const char *url, int *post) {
    static const struct { const char *path; int route, post; } tab[] = {
        { "/health", R_HEALTH, 0 },           { "/metrics", R_METRICS, 0 },
        { "/v1/models", R_MODELS, 0 },        { "/v1/completions", R_COMPLETIONS, 1 },
        { "/v1/chat/completions", R_CHAT, 1 },
    };
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (!strcmp(url, tab[i].path)) {
            *post = tab[i].post;
            return tab[i].route;
        }
    *post = 0;
    return !strncmp(url, "/v1/models/", 11) && url[11] ? R_MODEL : R_NONE;
}

/* A refusal decided from the headers (cc's first call). A body the client may still be
 * sending is then read and thrown away at the close (cc->linger), so the client can read this
 * answer: a socket closed with unread data sends a reset, which can overtake the answer. */
static __attribute__((format(printf, 8, 9)))
enum MHD_Result http__refuse(http_server *h, struct MHD_Connection *c, http__conn *cc,
                                    int status, const char *code, const char *allow,
                                    const char *retry, const char *fmt, ...) {
    oai_err e;
    oai_err_set(&e, status, NULL, code, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    cc->linger = cc->linger < 0 ? 0 : (cl && strtoull(cl, NULL, 10) > 0) || te;
    cJSON *o = oai_error_json(&e);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return MHD_NO;
    return http__send_full(h, c, status, "application/json", s, strlen(s), allow, retry,
                           cc->linger || retry);
}

static enum MHD_Result http__refuse_draining(http_server *h, struct MHD_Connection *c,
                                             http__conn *cc) {
    return http__refuse(h, c, cc, 503, "server_shutting_down", NULL, "5",
                        "the server is shutting down: retry on another replica or later");
}

/* the media type of a Content-Type value, without parameters, is application/json */
static int http__is_json(const char *ct) {
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    return n == 16 && !strncasecmp(ct, "application/json", 16);
}

/* The first call of a request: its headers only. Refuse early what the body cannot fix. */
static enum MHD_Result http__headers(http_server *h, struct MHD_Connection *c, http__conn *cc,
                                     const char *url, const char *method) {
    int post;
    cc->route = http__route(url, &post);
    int reserved = cc->route == R_HEALTH || cc->route == R_METRICS;
    if (atomic_load(&h->draining) && cc->route != R_METRICS) return http__refuse_draining(h, c, cc);
    int refuse = reserved ? HTTP__OK : http__sock_admit(h, http__sock_of(c));
    if (refuse) {
        if (refuse == HTTP__REFUSE_CLIENT)
            return http__refuse(h, c, cc, 503, "too_many_connections", NULL, "1",
                                "more than %d connections from your address: retry when one "
                                "of them is done", h->o.max_conns_per_client);
        return http__refuse(h, c, cc, 503, "server_busy", NULL, "1",
                            "all %d connections are busy: retry shortly", h->o.max_connections);
    }
    if (cc->route != R_HEALTH && h->api_key &&
        !http_auth_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                      h->api_key))
        return http__refuse(h, c, cc, 401, "invalid_api_key", NULL, NULL,
                            "missing or incorrect API key: send 'Authorization: Bearer KEY'");
    if (cc->route == R_NONE)
        return http__refuse(h, c, cc, 404, "not_found", NULL, NULL, "no such endpoint: %s %.200s",
                            method, url);
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (post ? strcmp(method, "POST") : !is_get)
        return http__refuse(h, c, cc, 405, "method_not_allowed", post ? "POST" : "GET, HEAD", NULL,
                            "%s is not allowed on %.200s (use %s)", method, url,
                            post ? "POST" : "GET");
    if (post) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body)
            return http__refuse(h, c, cc, 413, "request_too_large", NULL, NULL,
                                "the request body of %.32s bytes exceeds the limit of %zu bytes",
                                cl, h->o.max_body);
        /* no Content-Type at all is taken as JSON (minimal clients send none) */
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (ct && !http__is_json(ct))
            return http__refuse(h, c, cc, 415, "unsupported_media_type", NULL, NULL,
                                "the body must be JSON: send 'Content-Type: application/json' "
                                "(got '%.100s')", ct);
    }
    return MHD_YES;
}

static enum MHD_Result http__handler(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload, size_t *upload_size, void **con_cls) {
    http_server *h = cls;
    http__conn *cc = *con_cls;
    (void)version;
    if (!cc) {
        if (!(cc = calloc(1, sizeof *cc))) return MHD_NO;
        *con_cls = cc;
        return http__headers(h, c, cc, url, method);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (cc->too_large) {
            cc->discarded += n;
            return cc->discarded > HTTP__DRAIN_MAX ? MHD_NO : MHD_YES;
        }
        if (cc->len + n > h->o.max_body) {
            cc->too_large = 1;
            cc->discarded = cc->len + n;
            free(cc->body);
            cc->body = NULL;
            cc->len = cc->cap = 0;
            return MHD_YES;
        }
        if (http__grow((void **)&cc->body, &cc->cap, cc->len + n + 1, 1)) return MHD_NO;
        memcpy(cc->body + cc->len, upload, n);
        cc->len += n;
        cc->body[cc->len] = 0;
        return MHD_YES;
    }
    /* the whole request is in: from here the server, not the client, is the slow side */
    http__sock_busy(h, http__sock_of(c));
    if (cc->too_large)
        return http__fail(h, c, 413, NULL, "request_too_large",
                          "the request body exceeds the limit of %zu bytes", h->o.max_body);
    if (atomic_load(&h->draining) && (cc->route == R_COMPLETIONS || cc->route == R_CHAT)) {
        cc->linger = -1;   /* the body is in: nothing to linger for */
        return http__refuse_draining(h, c, cc);
    }
    switch (cc->route) {
    case R_HEALTH: {
        char *s = strdup("{\"status\":\"ok\"}");
        return s ? http__send(h, c, 200, "application/json", s, strlen(s), NULL) : MHD_NO;
    }
    case R_METRICS: return http__metrics_get(h, c);
    case R_MODELS: {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "list");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), http__model_obj(h));
        return http__send_json(h, c, 200, o, NULL);
    }
    case R_MODEL:
        if (strcmp(url + 11, h->model_name))
            return http__fail(h, c, 404, "model", "model_not_found", "the model '%.200s' does not exist",
                              url + 11);
        return http__send_json(h, c, 200, http__model_obj(h), NULL);
    case R_COMPLETIONS: return http__complete(h, c, cc, 0);
    case R_CHAT: return http__complete(h, c, cc, 1);
    default: return MHD_NO;
    }
}

/* A request is over: libmicrohttpd's own thread for the connection, after the last byte or
 * on failure. A stream whose client left early is cancelled so its KV blocks come back; a
 * request answered before its body was read lingers; the connection waits for the next one. */
static void http__completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe) {
    http_server *h = cls;
    http__conn *cc = *con_cls;
    if (!cc) return;
    if (cc->linger) http__linger(h, c);
    http__sock_idle(h, http__sock_of(c));
    if (cc->req) {
        http__req *r = cc->req;
        pthread_mutex_lock(&r->mu);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !r->finished &&
            !atomic_load(&r->h->stopping))
            http__cancel(r);
        pthread_mutex_unlock(&r->mu);
        http__req_release(r);
    }
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

static void http__log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    /* routine client behaviour; a line each would let slow clients flood the log */
    if (strstr(line, "closed when reading request") || strstr(line, "with incomplete request"))
        return;
    fprintf(stderr, "sampan: http: %s\n", line);
}

/* ---- life cycle --------------------------------------------------------------------------- */

int http_start(const http_opts *o, struct sched *s, const struct tok *t, http_server **out,
               char *err, size_t errlen) {
    *out = NULL;
    http_server *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->o = *o;
    h->host = strdup(o->host ? o->host : "127.0.0.1");
    h->model_name = strdup(o->model_name ? o->model_name : "model");
    h->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;
    h->s = s;
    h->t = t;
    h->started = (long)time(NULL);
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->life_mu, NULL);
    atomic_init(&h->stopping, 0);
    atomic_init(&h->draining, 0);
    h->listen_fd = -1;
    http__metrics_init(&h->met);
    h->lim = (oai_limits){ .model_name = h->model_name, .n_ctx = o->n_ctx, .n_vocab = o->n_vocab,
                           .tok = t, .chat = &h->o.chat };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->nonce = ((uint64_t)ts.tv_sec * 1000000007ull) ^ ((uint64_t)ts.tv_nsec << 20) ^
               ((uint64_t)getpid() << 40);
    if (!h->host || !h->model_name || (o->api_key && *o->api_key && !h->api_key)) {
        snprintf(err, errlen, "out of memory");
        http_free(h);
        return -1;
    }
    if (o->max_body == 0 || o->max_connections < 1 || o->timeout_s < 0 || o->port < 0 ||
        o->port > 65535 || o->max_conns_per_client < 0 || o->request_timeout_s < 0) {
        snprintf(err, errlen, "http: bad limits (max body %zu, max connections %d, per client %d, "
                 "timeout %d s, request timeout %d s, port %d)", o->max_body, o->max_connections,
                 o->max_conns_per_client, o->timeout_s, o->request_timeout_s, o->port);
        http_free(h);
        return -1;
    }
    if (http__conns_init(h, err, errlen)) {
        http_free(h);
        return -1;
    }

    struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
    struct addrinfo *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", o->port);
    int g = getaddrinfo(h->host, portstr, &hints, &ai);
    if (g || !ai) {
        snprintf(err, errlen, "http: cannot resolve host '%s': %s", h->host, gai_strerror(g));
        http_free(h);
        return -1;
    }
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    int ipv6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);

    /* ITC for MHD_quiesce_daemon; room above max_connections for 503s and /health */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
    int spare = o->max_connections / 4 > 8 ? o->max_connections / 4 : 8;
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, http__handler, h,
                            MHD_OPTION_EXTERNAL_LOGGER, http__log, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->max_connections + spare),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, http__completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, http__conn_notify, h,
                            MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "http: cannot listen on %s port %d (%s)", h->host, o->port,
                 errno ? strerror(errno) : "libmicrohttpd refused the options");
        http_free(h);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    char addr[INET6_ADDRSTRLEN] = "";
    if (ipv6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, addr, sizeof addr);
    else inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, addr, sizeof addr);
    snprintf(h->url, sizeof h->url, ipv6 ? "http://[%s]:%d" : "http://%s:%d", addr, h->port);
    *out = h;
    return 0;
}

int http_port(const http_server *h) { return h->port; }
const char *http_url(const http_server *h) { return h->url; }

void http_drain(http_server *h) {
    if (!h) return;
    pthread_mutex_lock(&h->life_mu);
    if (h->d && !atomic_exchange(&h->draining, 1)) {
        /* quiesced, the daemon no longer accepts; shut, the socket refuses new connections
         * (it may only be closed after MHD_stop_daemon) */
        MHD_socket fd = MHD_quiesce_daemon(h->d);
        if (fd != MHD_INVALID_SOCKET) {
            shutdown(fd, SHUT_RDWR);
            h->listen_fd = fd;
        }
    }
    pthread_mutex_unlock(&h->life_mu);
}

void http_fail(http_server *h, const char *msg) {
    if (!h) return;
    pthread_mutex_lock(&h->fail_mu);
    if (h->failed) goto out;
    http_drain(h);
    size_t n = http__req_fail_all(h, msg);
    int left = http__conns_flush(h, HTTP__FAIL_FLUSH_S);
    fprintf(stderr, "sampan: http: ended %zu running choice(s) with an error%s\n", n,
            left ? " (some answers were still being sent)" : "");
    h->failed = 1;
out:
    pthread_mutex_unlock(&h->fail_mu);
}

void http_stop(http_server *h) {
    if (!h || !h->d) return;
    http_drain(h);
    http__conns_flush(h, HTTP__FLUSH_S);
    pthread_mutex_lock(&h->life_mu);
    if (h->d) {
        atomic_store(&h->stopping, 1);
        pthread_mutex_lock(&h->mu);
        for (http__req *r = h->live; r; r = r->next) {
            pthread_mutex_lock(&r->mu);
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_unlock(&h->mu);
        MHD_stop_daemon(h->d);
        h->d = NULL;
        if (h->listen_fd >= 0) close(h->listen_fd);
        h->listen_fd = -1;
    }
    pthread_mutex_unlock(&h->life_mu);
}

void http_free(http_server *h) {
    if (!h) return;
    http_stop(h);
    http__conns_free(h);
    while (h->live) {
        http__req *r = h->live;
        h->live = r->next;
        http__req_destroy(r);
    }
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->life_mu);
    free(h->host);
    free(h->api_key);
    free(h->model_name);
    free(h);
}
