/* launch/http_conn.c — the connection table of the HTTP daemon: every TCP connection from its
 * accept to its close, so that slow or many clients cannot take the server from the others.
 *
 *   caps      max_connections (N) are served at once; of those at most N - N/8 (at least 1)
 *             may be waiting for a request (headers or body not all in: a trickling client, an
 *             idle keep-alive); at most max_conns_per_client come from one address.
 *   shedding  a new connection that puts the waiting or the total count over its cap closes
 *             the oldest waiting connection that has waited over HTTP__SHED_AGE (one already
 *             refused first; for a client over its own cap, the oldest of that client's): so a
 *             new connection always finds a slot and /health answers however many clients
 *             trickle. When no connection can be closed (every other one busy answering, or
 *             all just arrived), the new one is refused if over the total: its request gets
 *             503 with Retry-After. libmicrohttpd itself holds a quarter more (at least 8)
 *             than N for those refusals and for /health and /metrics, which are answered even
 *             when refused (the reserved path).
 *   deadline  a waiting connection has request_timeout_s from its accept (or its previous
 *             answer) to deliver a whole request: the reaper thread looks every 100 ms and
 *             shuts down those past it, whatever libmicrohttpd's idle timeout.
 *   flush     http_stop and http_fail wait here for the answers being sent to finish.
 *
 * Life cycle of an entry (http__sock), each transition under conn_mu:
 *
 *   NOTIFY_STARTED --> WAITING --body in: http__sock_busy--> BUSY
 *                      |   ^                                  |
 *                      |   +---request over: http__sock_idle--+
 *                      +--deadline (reaper) / shed (a newer connection): shutdown(fd)--> SHED
 *   any state --NOTIFY_CLOSED--> freed
 *
 * Invariants:
 *   1. libmicrohttpd calls NOTIFY_CLOSED before it closes the socket (MHD_cleanup_connections
 *      joins the connection's thread, notifies, then closes; the failure path of accept does
 *      the same): an entry found in the table under conn_mu names an open socket, never a
 *      number the kernel has given to a newer connection, so shutdown() on it is safe.
 *   2. conn_mu is never held while calling into libmicrohttpd or the scheduler.
 *   3. n_socks, n_waiting and n_busy count the entries that are not shed.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "http_impl.h"

#define HTTP__REAP_MS 100
#define HTTP__SHED_AGE 1.0   /* seconds a waiting connection is safe from shedding */
#define HTTP__LOG_S 10.0   /* seconds between the summaries of closed and refused connections */

static int http__wait_cap(const http_server *h) {
    int n = h->o.max_connections, r = n / 8 > 1 ? n / 8 : 1;
    return n - r > 1 ? n - r : 1;
}

/* family byte + address: IPv4 (an IPv4-mapped IPv6 address counts as its IPv4 one) or IPv6 */
static void http__key(const struct sockaddr *sa, unsigned char key[17]) {
    memset(key, 0, 17);
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (!memcmp(a, mapped, 12)) {
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a, 16);
        }
    }
}

/* conn_mu held: k's address has more connections than its cap (k included) */
static int http__over_client_cap(const http_server *h, const http__sock *k) {
    if (h->o.max_conns_per_client <= 0 || !k->addr[0]) return 0;
    int same = 0;
    for (const http__sock *q = h->socks; q; q = q->next)
        same += !q->shed && !memcmp(q->addr, k->addr, sizeof k->addr);
    return same > h->o.max_conns_per_client;
}

/* conn_mu held */
static void http__shed(http_server *h, http__sock *k) {
    if (k->shed) return;
    if (k->fd >= 0) shutdown(k->fd, SHUT_RDWR);
    k->shed = 1;
    h->n_socks--;
    if (k->busy) h->n_busy--;
    else h->n_waiting--;
    h->n_shed++;
}

/* conn_mu held: the waiting connection to close for the newcomer k, or NULL. Only one that
 * has waited HTTP__SHED_AGE: a burst of clients arriving together is not a slow client. */
static http__sock *http__victim(http_server *h, const http__sock *k) {
    http__sock *best = NULL;
    int best_refused = 0;
    for (http__sock *q = h->socks; q; q = q->next) {
        if (q == k || q->shed || q->busy || q->since > k->since - HTTP__SHED_AGE) continue;
        int refused = q->refuse != HTTP__OK;   /* those go first, the oldest first */
        if (!refused && k->refuse == HTTP__REFUSE_CLIENT && memcmp(q->addr, k->addr, sizeof k->addr))
            continue;                          /* over its cap, a client displaces only its own */
        if (!best || refused > best_refused || (refused == best_refused && q->since < best->since)) {
            best = q;
            best_refused = refused;
        }
    }
    return best;
}

static void *http__reaper(void *arg) {
    http_server *h = arg;
    uint64_t logged[3] = { 0, 0, 0 };
    double next_log = clk_now() + HTTP__LOG_S;
    pthread_mutex_lock(&h->conn_mu);
    while (!h->reaper_stop) {
        if (clk_now() >= next_log) {   /* a summary, at most every HTTP__LOG_S */
            uint64_t now[3] = { h->n_timed_out, h->n_shed - h->n_timed_out, h->n_refused };
            next_log = clk_now() + HTTP__LOG_S;
            if (memcmp(now, logged, sizeof now)) {
                pthread_mutex_unlock(&h->conn_mu);
                fprintf(stderr, "sampan: http: since the last such line: %llu connection(s) closed "
                        "at the request timeout (%d s), %llu closed to make room, %llu request(s) "
                        "refused (503)\n", (unsigned long long)(now[0] - logged[0]),
                        h->o.request_timeout_s, (unsigned long long)(now[1] - logged[1]),
                        (unsigned long long)(now[2] - logged[2]));
                memcpy(logged, now, sizeof now);
                pthread_mutex_lock(&h->conn_mu);
            }
        }
        const struct timespec ts = clk_deadline_ms(HTTP__REAP_MS);
        pthread_cond_timedwait(&h->conn_cv, &h->conn_mu, &ts);
        if (h->o.request_timeout_s <= 0) continue;
        double now = clk_now(), lim = h->o.request_timeout_s;
        for (http__sock *k = h->socks; k; k = k->next)
            if (!k->shed && !k->busy && now - k->since > lim) {
                http__shed(h, k);
                h->n_timed_out++;
            }
    }
    pthread_mutex_unlock(&h->conn_mu);
    return NULL;
}

int http__conns_init(http_server *h, char *err, size_t errlen) {
    clk_cond_init(&h->conn_cv);
    pthread_mutex_init(&h->conn_mu, NULL);
    pthread_mutex_init(&h->fail_mu, NULL);
    h->conn_init = 1;
    int rc = pthread_create(&h->reaper, NULL, http__reaper, h);
    if (rc) {
        snprintf(err, errlen, "http: cannot start the connection reaper thread: %s", strerror(rc));
        return -1;
    }
    h->reaper_on = 1;
    return 0;
}

void http__conns_free(http_server *h) {
    if (h->reaper_on) {
        pthread_mutex_lock(&h->conn_mu);
        h->reaper_stop = 1;
        pthread_cond_broadcast(&h->conn_cv);
        pthread_mutex_unlock(&h->conn_mu);
        pthread_join(h->reaper, NULL);
        h->reaper_on = 0;
    }
    while (h->socks) {   /* none after MHD_stop_daemon; kept safe all the same */
        http__sock *k = h->socks;
        h->socks = k->next;
        free(k);
    }
    if (h->conn_init) {
        pthread_mutex_destroy(&h->conn_mu);
        pthread_cond_destroy(&h->conn_cv);
        pthread_mutex_destroy(&h->fail_mu);
        h->conn_init = 0;
    }
}

void http__conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code) {
    http_server *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        http__sock *k = *socket_context;
        if (!k) return;
        pthread_mutex_lock(&h->conn_mu);
        if (!k->shed) {
            h->n_socks--;
            if (k->busy) h->n_busy--;
            else h->n_waiting--;
        }
        if (k->prev) k->prev->next = k->next;
        else h->socks = k->next;
        if (k->next) k->next->prev = k->prev;
        else h->socks_tail = k->prev;
        pthread_cond_broadcast(&h->conn_cv);
        pthread_mutex_unlock(&h->conn_mu);
        free(k);
        *socket_context = NULL;
        return;
    }
    if (code != MHD_CONNECTION_NOTIFY_STARTED) return;
    /* out of memory: the connection is served without caps or deadline */
    http__sock *k = calloc(1, sizeof *k);
    *socket_context = k;
    if (!k) return;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    k->fd = ci ? ci->connect_fd : -1;
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) http__key(ci->client_addr, k->addr);
    k->since = clk_now();

    pthread_mutex_lock(&h->conn_mu);
    k->prev = h->socks_tail;
    if (h->socks_tail) h->socks_tail->next = k;
    else h->socks = k;
    h->socks_tail = k;
    h->n_socks++;
    h->n_waiting++;
    if (http__over_client_cap(h, k)) k->refuse = HTTP__REFUSE_CLIENT;
    int cap = http__wait_cap(h);
    while (h->n_waiting > cap || h->n_socks > h->o.max_connections) {
        http__sock *v = http__victim(h, k);
        if (!v) break;
        http__shed(h, v);
    }
    if (h->n_socks > h->o.max_connections && !k->refuse) k->refuse = HTTP__REFUSE_BUSY;
    pthread_mutex_unlock(&h->conn_mu);
}

int http__sock_admit(http_server *h, http__sock *k) {
    if (!k) return HTTP__OK;
    pthread_mutex_lock(&h->conn_mu);
    /* counted again now: a connection the client closed just before opening this one may
     * still have been in the table at the accept (libmicrohttpd removes it a moment later),
     * and a busy one may have finished */
    if (k->refuse == HTTP__REFUSE_CLIENT && !http__over_client_cap(h, k)) k->refuse = HTTP__OK;
    if (k->refuse == HTTP__REFUSE_BUSY && !k->shed && h->n_socks <= h->o.max_connections)
        k->refuse = HTTP__OK;   /* a slot came free meanwhile */
    int r = k->refuse;
    if (r) h->n_refused++;
    pthread_mutex_unlock(&h->conn_mu);
    return r;
}

http__sock *http__sock_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void http__sock_busy(http_server *h, http__sock *k) {
    if (!k) return;
    pthread_mutex_lock(&h->conn_mu);
    if (!k->shed && !k->busy) {
        k->busy = 1;
        h->n_waiting--;
        h->n_busy++;
    }
    pthread_mutex_unlock(&h->conn_mu);
}

void http__sock_idle(http_server *h, http__sock *k) {
    if (!k) return;
    pthread_mutex_lock(&h->conn_mu);
    if (!k->shed && k->busy) {
        k->busy = 0;
        h->n_busy--;
        h->n_waiting++;
    }
    k->since = clk_now();
    pthread_cond_broadcast(&h->conn_cv);
    pthread_mutex_unlock(&h->conn_mu);
}

int http__conns_flush(http_server *h, double seconds) {
    double end = clk_now() + seconds;
    pthread_mutex_lock(&h->conn_mu);
    while (h->n_busy > 0 && clk_now() < end) {
        const struct timespec ts = clk_deadline_ms(20);
        pthread_cond_timedwait(&h->conn_cv, &h->conn_mu, &ts);
    }
    int left = h->n_busy;
    pthread_mutex_unlock(&h->conn_mu);
    return left;
}

void http__linger(http_server *h, struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    if (fd < 0) return;
    shutdown(fd, SHUT_WR);
    double end = clk_now() + 10.0;
    size_t total = 0;
    char buf[16384];
    while (total < HTTP__DRAIN_MAX && clk_now() < end && !atomic_load(&h->stopping)) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, HTTP__REAP_MS);
        if (r < 0 && errno != EINTR) break;
        if (r <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
        if (n > 0) total += (size_t)n;
    }
}
