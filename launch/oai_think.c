/* launch/oai_think.c — the reasoning split of an answer (see oai_think.h). */
#include <string.h>

#include "oai_think.h"

static const char oai__open[] = "<think>", oai__close[] = "</think>";

void oai_think_init(oai_think *t) { memset(t, 0, sizeof *t); }

/* byte i of the held bytes followed by s */
static char oai__at(const char *held, size_t nh, const char *s, size_t i) {
    return i < nh ? held[i] : s[i - nh];
}

/* 1 if the bytes [i, i + len) are tag[0, len) */
static int oai__match(const char *held, size_t nh, const char *s, size_t i, const char *tag,
                      size_t len) {
    for (size_t k = 0; k < len; k++)
        if (oai__at(held, nh, s, i + k) != tag[k]) return 0;
    return 1;
}

static void oai__copy(const char *held, size_t nh, const char *s, size_t i0, size_t i1, char *dst,
                      size_t *dn) {
    for (size_t i = i0; i < i1; i++) dst[(*dn)++] = oai__at(held, nh, s, i);
}

void oai_think_feed(oai_think *t, const char *s, size_t n, int last, char *reason, size_t *rn,
                    char *content, size_t *cn) {
    char held[sizeof t->held];
    const size_t nh = t->n_held, total = nh + n;
    memcpy(held, t->held, nh);
    t->n_held = 0;
    *rn = *cn = 0;
    size_t i = 0;
    if (t->phase == 0) {   /* a leading "<think>" is dropped */
        const size_t lo = sizeof oai__open - 1, m = total < lo ? total : lo;
        if (oai__match(held, nh, s, 0, oai__open, m)) {
            if (m < lo && !last) {   /* undecided: keep it all */
                oai__copy(held, nh, s, 0, total, t->held, &t->n_held);
                return;
            }
            if (m == lo) i = lo;
        }
        t->phase = 1;
    }
    if (t->phase == 1) {
        const size_t lc = sizeof oai__close - 1;
        size_t j = i, hold_from = total;
        for (; j < total; j++) {
            size_t avail = total - j < lc ? total - j : lc;
            if (!oai__match(held, nh, s, j, oai__close, avail)) continue;
            if (avail == lc) break;          /* the whole tag */
            if (!last) hold_from = j;        /* a possible start: decided by the next piece */
            j = total;
            break;
        }
        if (j < total) {   /* the thought ends at j */
            oai__copy(held, nh, s, i, j, reason, rn);
            i = j + lc;
            t->phase = 2;
        } else {
            oai__copy(held, nh, s, i, hold_from, reason, rn);
            oai__copy(held, nh, s, hold_from, total, t->held, &t->n_held);
            return;
        }
    }
    oai__copy(held, nh, s, i, total, content, cn);
}
