/* scheduler/textstream.c — stop strings and UTF-8 hold-back over a byte stream (see
 * textstream.h).
 *
 * Invariant: between calls buf[released..len) is held, and it is at most the longest stop
 * string minus one plus 3 bytes (a stop prefix and an incomplete character), so each push
 * searches O(new bytes + longest stop) bytes per stop string.
 */
#include <stdlib.h>
#include <string.h>

#include "scheduler/textstream.h"
#include "utf8.h"

int ts_init(ts *t, const char *const *stops, int n) {
    memset(t, 0, sizeof *t);
    if (n <= 0) return 0;
    t->stops = calloc((size_t)n, sizeof *t->stops);
    t->stop_len = calloc((size_t)n, sizeof *t->stop_len);
    if (!t->stops || !t->stop_len) return -1;
    for (int i = 0; i < n; i++) {
        if (!stops[i] || !*stops[i]) continue;
        if (!(t->stops[t->n_stops] = strdup(stops[i]))) return -1;
        t->stop_len[t->n_stops++] = strlen(stops[i]);
    }
    return 0;
}

void ts_free(ts *t) {
    if (!t) return;
    if (t->stops)
        for (int i = 0; i < t->n_stops; i++) free(t->stops[i]);
    free(t->stops);
    free(t->stop_len);
    free(t->buf);
    memset(t, 0, sizeof *t);
}

/* drops what the last call released */
static void ts__consume(ts *t) {
    if (!t->released) return;
    memmove(t->buf, t->buf + t->released, t->len - t->released);
    t->len -= t->released;
    t->released = 0;
}

/* the longest suffix of buf that is a proper prefix of a stop string: it may still become one */
static size_t ts__stop_prefix(const ts *t) {
    size_t hold = 0;
    for (int i = 0; i < t->n_stops; i++) {
        size_t k = t->stop_len[i] - 1 < t->len ? t->stop_len[i] - 1 : t->len;
        for (; k > hold; k--)
            if (!memcmp(t->buf + t->len - k, t->stops[i], k)) {
                hold = k;
                break;
            }
    }
    return hold;
}

int ts_push(ts *t, const char *bytes, size_t n, const char **out, size_t *release, int *stopped) {
    ts__consume(t);
    *out = t->buf;
    *release = 0;
    *stopped = t->stopped;
    if (t->stopped) return 0;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *b = realloc(t->buf, cap);
        if (!b) return -1;
        t->buf = b;
        t->cap = cap;
    }
    if (n) memcpy(t->buf + t->len, bytes, n);
    t->len += n;
    *out = t->buf;
    size_t first = (size_t)-1;
    for (int i = 0; i < t->n_stops; i++) {
        const char *hit = t->len >= t->stop_len[i]
                              ? memmem(t->buf, t->len, t->stops[i], t->stop_len[i]) : NULL;
        if (hit && (size_t)(hit - t->buf) < first) first = (size_t)(hit - t->buf);
    }
    if (first != (size_t)-1) {
        t->stopped = *stopped = 1;
        t->len = t->released = *release = first;
        return 0;
    }
    size_t rel = t->len - ts__stop_prefix(t);
    rel -= utf8_incomplete_tail(t->buf, rel);
    t->released = *release = rel;
    return 0;
}

void ts_flush(ts *t, const char **out, size_t *n) {
    ts__consume(t);
    *out = t->buf;
    *n = t->stopped ? 0 : t->len;
    t->released = *n;
    if (t->stopped) t->len = 0;
}
