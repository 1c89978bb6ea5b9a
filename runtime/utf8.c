/* runtime/utf8.c — UTF-8 hold-back and sanitizing (see utf8.h). */
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* bytes a character starting with lead byte c has (1 for ASCII and for invalid lead bytes) */
static size_t utf8__need(unsigned c) {
    return c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
}

size_t utf8_incomplete_tail(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t j = n;
    while (j > 0 && n - j < 4 && (u[j - 1] & 0xC0) == 0x80) j--;
    if (j == 0) return 0;   /* only continuation bytes: invalid, nothing to wait for */
    size_t need = utf8__need(u[j - 1]), have = n - (j - 1);
    return need > 1 && have < need ? have : 0;
}

/* Length of the valid sequence at s (n bytes left), or 0 if it is invalid. */
static size_t utf8__seq(const unsigned char *s, size_t n) {
    unsigned c = s[0], cp;
    size_t len = utf8__need(c);
    if (c < 0x80) return 1;
    if (len == 1 || n < len) return 0;
    cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

char *utf8_sanitize(const char *s, size_t n) {
    char *out = malloc(3 * n + 1);   /* each bad byte becomes U+FFFD (3 bytes) */
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = s[i] ? utf8__seq((const unsigned char *)s + i, n - i) : 0;   /* NUL: bad */
        if (l) {
            memcpy(out + o, s + i, l);
            o += l;
            i += l;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}
