/* tests/sched/test_textstream.c — the text stream (scheduler/textstream.h) and the UTF-8
 * primitives under it (runtime/utf8.h) on hand-made byte sequences, against expectations
 * written out by hand:
 *   1. a stop string split across pushes; only bytes that may start a stop are held
 *   2. several stop strings: the earliest occurrence wins, whatever their order
 *   3. stop strings and multi-byte characters: a stop that is a character, arriving split;
 *      a character with the same lead byte that is no stop; a stop starting mid-character
 *   4. a 4-byte character split over 4 pushes is released whole with the last
 *   5. invalid bytes are released at once (never held waiting for a completion)
 *   6. ts_flush releases a held tail (stop prefix, incomplete character) as it is; nothing
 *      after a stop
 *   7. utf8_incomplete_tail == n - http_utf8_complete (the HTTP front end's former contract, its
 *      formula copied here) over every string of up to 5 bytes from the boundary bytes;
 *      utf8_sanitize on overlong forms, surrogates, code points past U+10FFFF, truncation
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/textstream.h"
#include "utf8.h"

static int passed, failed;
#define CHECK(c, ...) do { if (c) passed++; else { failed++; printf("FAIL %d: ", __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

/* what a front end sees: every released byte, in order */
typedef struct {
    ts t;
    char got[256];
    size_t n;
    int stopped;
} sink;

static void sink_init(sink *k, const char *const *stops, int n) {
    memset(k, 0, sizeof *k);
    CHECK(ts_init(&k->t, stops, n) == 0, "ts_init");
}

/* pushes s; returns the bytes this push released */
static size_t push(sink *k, const char *s, size_t n) {
    const char *out;
    size_t rel;
    int st;
    CHECK(ts_push(&k->t, s, n, &out, &rel, &st) == 0, "ts_push");
    memcpy(k->got + k->n, out, rel);
    k->n += rel;
    k->stopped = st;
    return rel;
}
#define PUSH(k, lit) push(k, lit, sizeof lit - 1)

static size_t flush(sink *k) {
    const char *out;
    size_t n;
    ts_flush(&k->t, &out, &n);
    memcpy(k->got + k->n, out, n);
    k->n += n;
    return n;
}

static int got_is(const sink *k, const char *want) {
    return k->n == strlen(want) && !memcmp(k->got, want, k->n);
}

/* the HTTP front end's former http_utf8_complete, copied: the contract utf8_incomplete_tail keeps */
static size_t ref_complete(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t j = n;
    while (j > 0 && n - j < 4 && (u[j - 1] & 0xC0) == 0x80) j--;
    if (j == 0) return n;
    unsigned c = u[j - 1];
    size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xC2 && c <= 0xDF ? 2 : 1;
    size_t have = n - (j - 1);
    return need > 1 && have < need ? j - 1 : n;
}

int main(void) {
    sink k;
    /* 1. split stop */
    {
        const char *st[] = { "STOP" };
        sink_init(&k, st, 1);
        CHECK(PUSH(&k, "abc ST") == 4 && !k.stopped, "'abc ST': 'ST' held, '%.*s' out", (int)k.n, k.got);
        CHECK(PUSH(&k, "O") == 0 && !k.stopped, "'O' held");
        CHECK(PUSH(&k, "P more") == 0 && k.stopped && got_is(&k, "abc "), "stop found: '%.*s'", (int)k.n, k.got);
        CHECK(PUSH(&k, "late") == 0 && k.stopped && flush(&k) == 0 && got_is(&k, "abc "),
              "nothing after a stop");
        ts_free(&k.t);
        /* a false start is released as soon as it cannot be the stop any more */
        sink_init(&k, st, 1);
        CHECK(PUSH(&k, "xyz") == 3, "no prefix of a stop: all out");
        CHECK(PUSH(&k, "STO") == 0 && PUSH(&k, "RM") == 5 && got_is(&k, "xyzSTORM") && !k.stopped,
              "'STORM' released: '%.*s'", (int)k.n, k.got);
        ts_free(&k.t);
    }
    /* 2. earliest wins */
    for (int order = 0; order < 2; order++) {
        const char *st[2] = { order ? "lo w" : "world", order ? "world" : "lo w" };
        sink_init(&k, st, 2);
        PUSH(&k, "hel");
        PUSH(&k, "lo world");
        CHECK(k.stopped && got_is(&k, "hel"), "order %d: '%.*s'", order, (int)k.n, k.got);
        ts_free(&k.t);
    }
    {   /* NULL and empty stops are skipped; a stop inside one push */
        const char *st[3] = { "", NULL, "b" };
        sink_init(&k, st, 3);
        CHECK(k.t.n_stops == 1, "%d stops kept", k.t.n_stops);
        PUSH(&k, "aab cb");
        CHECK(k.stopped && got_is(&k, "aa"), "'%.*s'", (int)k.n, k.got);
        ts_free(&k.t);
    }
    /* 3. stops and multi-byte characters */
    {
        const char *st[] = { "\xC3\xA9" };   /* é */
        sink_init(&k, st, 1);
        CHECK(PUSH(&k, "caf\xC3") == 3, "the lead byte held");
        PUSH(&k, "\xA9!");
        CHECK(k.stopped && got_is(&k, "caf"), "é as a stop, split: '%.*s'", (int)k.n, k.got);
        ts_free(&k.t);
        sink_init(&k, st, 1);
        CHECK(PUSH(&k, "\xC3") == 0 && PUSH(&k, "\xA8") == 2 && !k.stopped && got_is(&k, "\xC3\xA8"),
              "è (same lead byte) released whole");
        ts_free(&k.t);
        const char *mid[] = { "\xA9x" };   /* begins with a continuation byte */
        sink_init(&k, mid, 1);
        CHECK(PUSH(&k, "\xC3") == 0, "lead byte held (incomplete character)");
        PUSH(&k, "\xA9x");
        CHECK(k.stopped && got_is(&k, "\xC3"), "stop matched on bytes mid-character: '%.*s'", (int)k.n, k.got);
        ts_free(&k.t);
    }
    /* 4. a 4-byte character (U+1F600) in 4 pushes */
    {
        sink_init(&k, NULL, 0);
        int held = PUSH(&k, "a\xF0") == 1 && PUSH(&k, "\x9F") == 0 && PUSH(&k, "\x98") == 0;
        CHECK(held && PUSH(&k, "\x80") == 4 && got_is(&k, "a\xF0\x9F\x98\x80"), "4-byte character");
        ts_free(&k.t);
    }
    /* 5. invalid bytes */
    {
        sink_init(&k, NULL, 0);
        CHECK(PUSH(&k, "\xFF") == 1, "0xFF released at once");
        CHECK(PUSH(&k, "\xE2") == 0 && PUSH(&k, "A") == 2, "a lead byte then ASCII: both out");
        CHECK(PUSH(&k, "\x80\x80\x80\x80") == 4, "stray continuation bytes out");
        CHECK(PUSH(&k, "\xC0") == 1 && PUSH(&k, "\xF5") == 1, "never-valid lead bytes out");
        CHECK(PUSH(&k, "\xF0\x9F\x98\x80\x80") == 5, "a character plus a stray byte out");
        ts_free(&k.t);
    }
    /* 6. flush */
    {
        const char *st[] = { "END" };
        sink_init(&k, st, 1);
        CHECK(PUSH(&k, "abcE") == 3 && flush(&k) == 1 && got_is(&k, "abcE"), "stop prefix flushed");
        CHECK(PUSH(&k, "\xE2\x82") == 0 && flush(&k) == 2 && got_is(&k, "abcE\xE2\x82"),
              "incomplete character flushed as it is");
        CHECK(flush(&k) == 0 && PUSH(&k, "N") == 1, "the stream is empty after a flush");
        ts_free(&k.t);
    }
    /* 7. utf8 */
    {
        static const unsigned char alpha[] = { 0x41, 0x80, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED,
                                               0xEF, 0xF0, 0xF4, 0xF5, 0xFF };
        const int A = (int)sizeof alpha;
        long bad = 0, total = 0;
        char b[5];
        for (int n = 0; n <= 5; n++) {
            long combos = 1;
            for (int i = 0; i < n; i++) combos *= A;
            for (long c = 0; c < combos; c++) {
                long x = c;
                for (int i = 0; i < n; i++, x /= A) b[i] = (char)alpha[x % A];
                size_t t = utf8_incomplete_tail(b, (size_t)n);
                bad += t != (size_t)n - ref_complete(b, (size_t)n) || t > 3;
                total++;
            }
        }
        CHECK(bad == 0, "utf8_incomplete_tail differs from http_utf8_complete on %ld of %ld", bad, total);
        static const struct { const char *in; size_t n; const char *want; } cs[] = {
            { "a\xC3\xA9z", 4, "a\xC3\xA9z" },
            { "\xC0\x80", 2, "\xEF\xBF\xBD\xEF\xBF\xBD" },               /* overlong NUL */
            { "\xE0\x80\xAF", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" }, /* overlong '/' */
            { "\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" }, /* surrogate */
            { "\xF4\x90\x80\x80", 4,                                         /* > U+10FFFF */
              "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },
            { "\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80" },
            { "ok\xE2\x82", 4, "ok\xEF\xBF\xBD\xEF\xBF\xBD" },             /* truncated */
            { "x\0y", 3, "x\xEF\xBF\xBDy" },                            /* NUL: a C string */
        };
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
            char *v = utf8_sanitize(cs[i].in, cs[i].n);
            size_t wl = strlen(cs[i].want);
            CHECK(v && !memcmp(v, cs[i].want, wl) && v[wl] == 0, "utf8_sanitize case %zu", i);
            free(v);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
