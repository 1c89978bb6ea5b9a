/* tests/fuzz/fuzz_chat.c — libFuzzer harness for chat templates (launch/chat.h).
 *
 * Input: byte 0 picks the family ('0'..'4' and every byte = 0..4 mod 6: plain, llama2, llama3,
 * chatml, mistral; 5 mod 6: the family chat_tmpl_detect finds in the template, DeepSeek's
 * included); then the template
 * source up to the first NUL; then messages separated by NUL, each a role byte (mod 3: '0'
 * system, '1' user, '2' assistant) and its content. Printable seeds stay readable that way.
 * Checked for every input:
 *   - chat_tmpl_detect on the whole input (an exact-size copy, so ASan sees any read past it) and
 *     on the template: the family follows the markers in chat.h's table, in its order; a default
 *     system message only for chatml, NUL-terminated inside its buffer; same input, same answer;
 *   - family and role names parse back to themselves; chat_role_parse of any content is one of
 *     the names chat.h lists or -1;
 *   - chat_render refuses exactly what chat.h says (no message; a system message after the
 *     first for llama2/mistral), with a message; otherwise its text equals the family's
 *     rendering written out here from the table in chat.h, which implies (deepseek3 aside: its
 *     system messages go first, R1's drops thoughts): every message's
 *     content appears, in order, whole (trimmed for llama3 and llama2), nothing is cut
 *     (length >= the contents' sum), and the text ends with the assistant turn's opening.
 */
#include "chat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MSGS 64

#define REQUIRE(c)                                                                            \
    do {                                                                                      \
        if (!(c)) {                                                                           \
            fprintf(stderr, "fuzz_chat: invariant failed: %s (line %d)\n", #c, __LINE__);    \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* ---- the reference rendering ----------------------------------------------------------- */

typedef struct { char *p; size_t n, cap; } ref_buf;

static void ref_put(ref_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void ref_puts(ref_buf *b, const char *s) { ref_put(b, s, strlen(s)); }

static int ref_ws(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* s without leading and trailing white space (Python's strip on ASCII white space) */
static void ref_trimmed(const char *s, size_t n, const char **out, size_t *out_n) {
    while (n && ref_ws(*s)) { s++; n--; }
    while (n && ref_ws(s[n - 1])) n--;
    *out = s;
    *out_n = n;
}

static void ref_put_trimmed(ref_buf *b, const char *s) {
    const char *t;
    size_t n;
    ref_trimmed(s, strlen(s), &t, &n);
    ref_put(b, t, n);
}

static const char *const role_name[] = { "system", "user", "assistant" };

/* DeepSeek's markers as chat.h writes them: <｜User｜>, <｜Assistant｜>, <｜end▁of▁sentence｜> */
#define REF_DS_U "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define REF_DS_A "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
#define REF_DS_E "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

/* The text chat.h's table gives for msgs under t; NULL where chat.h says it is refused. */
static char *ref_render(const chat_tmpl *t, const chat_msg *m, int n) {
    if (n < 1) return NULL;
    ref_buf b = { 0 };
    ref_puts(&b, "");
    switch (t->family) {
    case CHAT_LLAMA3:
        for (int i = 0; i < n; i++) {
            ref_puts(&b, "<|start_header_id|>");
            ref_puts(&b, role_name[m[i].role]);
            ref_puts(&b, "<|end_header_id|>\n\n");
            ref_put_trimmed(&b, m[i].content);
            ref_puts(&b, "<|eot_id|>");
        }
        ref_puts(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_CHATML:
        if (t->default_system[0] && m[0].role != CHAT_SYSTEM) {
            ref_puts(&b, "<|im_start|>system\n");
            ref_puts(&b, t->default_system);
            ref_puts(&b, "<|im_end|>\n");
        }
        for (int i = 0; i < n; i++) {
            ref_puts(&b, "<|im_start|>");
            ref_puts(&b, role_name[m[i].role]);
            ref_puts(&b, "\n");
            ref_puts(&b, m[i].content);
            ref_puts(&b, "<|im_end|>\n");
        }
        ref_puts(&b, "<|im_start|>assistant\n");
        break;
    case CHAT_LLAMA2:
    case CHAT_MISTRAL: {
        int llama2 = t->family == CHAT_LLAMA2;
        const char *sys = m[0].role == CHAT_SYSTEM ? m[0].content : NULL;
        int first = sys ? 1 : 0, users = 0;
        /* folded into the user message right after it, else a turn of its own, first */
        if (sys && (n < 2 || m[1].role != CHAT_USER)) {
            ref_puts(&b, "[INST] ");
            if (llama2) {
                ref_puts(&b, "<<SYS>>\n");
                ref_puts(&b, sys);
                ref_puts(&b, "\n<</SYS>>");
            } else {
                ref_puts(&b, sys);
            }
            ref_puts(&b, " [/INST]");
            sys = NULL;
        }
        for (int i = first; i < n; i++) {
            if (m[i].role == CHAT_SYSTEM) { free(b.p); return NULL; }
            if (m[i].role == CHAT_USER) {
                ref_buf c = { 0 };
                ref_puts(&c, "");
                if (!users && sys) {
                    ref_puts(&c, llama2 ? "<<SYS>>\n" : "");
                    ref_puts(&c, sys);
                    ref_puts(&c, llama2 ? "\n<</SYS>>\n\n" : "\n\n");
                }
                ref_puts(&c, m[i].content);
                /* llama2: every user turn opens with <s>, the text's first is the tokenizer's */
                if (llama2 && i > first) ref_puts(&b, "<s>");
                ref_puts(&b, "[INST] ");
                if (llama2) ref_put_trimmed(&b, c.p);
                else ref_puts(&b, c.p);
                ref_puts(&b, " [/INST]");
                free(c.p);
                users++;
            } else if (llama2) {
                ref_puts(&b, " ");
                ref_put_trimmed(&b, m[i].content);
                ref_puts(&b, " </s>");
            } else {
                ref_puts(&b, m[i].content);
                ref_puts(&b, "</s>");
            }
        }
        break;
    }
    case CHAT_DEEPSEEK3: {   /* systems first, joined by a blank line; then the turns */
        int sys = 0;
        for (int i = 0; i < n; i++)
            if (m[i].role == CHAT_SYSTEM) {
                if (sys++) ref_puts(&b, "\n\n");
                ref_puts(&b, m[i].content);
            }
        for (int i = 0; i < n; i++) {
            if (m[i].role == CHAT_SYSTEM) continue;
            ref_puts(&b, m[i].role == CHAT_USER ? REF_DS_U : REF_DS_A);
            const char *c = m[i].content;
            if (m[i].role == CHAT_ASSISTANT && t->reasoning) {   /* after the last </think> */
                for (const char *e = c; (e = strstr(e, "</think>")); e += 8) c = e + 8;
            }
            ref_puts(&b, c);
            if (m[i].role == CHAT_ASSISTANT) ref_puts(&b, REF_DS_E);
        }
        ref_puts(&b, REF_DS_A);
        if (t->think_prompt) ref_puts(&b, "<think>\n");
        break;
    }
    case CHAT_DEEPSEEK2: {
        static const char *const label[] = { "", "User: ", "Assistant: " };
        for (int i = 0; i < n; i++) {
            ref_puts(&b, label[m[i].role]);
            ref_puts(&b, m[i].content);
            ref_puts(&b, m[i].role == CHAT_ASSISTANT ? REF_DS_E : "\n\n");
        }
        ref_puts(&b, "Assistant:");
        break;
    }
    default: {
        static const char *const label[] = { "System: ", "User: ", "Assistant: " };
        for (int i = 0; i < n; i++) {
            ref_puts(&b, label[m[i].role]);
            ref_puts(&b, m[i].content);
            ref_puts(&b, "\n");
        }
        ref_puts(&b, "Assistant:");
    }
    }
    return b.p;
}

/* ---- checks -------------------------------------------------------------------------------- */

static int has(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    return k <= n && memmem(s, n, needle, k) != NULL;
}

static void check_detect(const char *src, size_t len) {
    chat_tmpl a, b;
    memset(&a, 0x55, sizeof a);
    chat_tmpl_detect(src, len, &a);
    chat_family want = CHAT_PLAIN;
    if (src && has(src, len, "<|start_header_id|>")) want = CHAT_LLAMA3;
    else if (src && has(src, len, "<|im_start|>")) want = CHAT_CHATML;
    else if (src && has(src, len, "[INST]"))
        want = has(src, len, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    else if (src && has(src, len, REF_DS_U) && has(src, len, REF_DS_A) && has(src, len, REF_DS_E))
        want = CHAT_DEEPSEEK3;
    else if (src && has(src, len, "'Assistant: ' + message['content'] + eos_token"))
        want = CHAT_DEEPSEEK2;
    REQUIRE(a.family == want);
    REQUIRE(a.reasoning == (want == CHAT_DEEPSEEK3 && has(src, len, "</think>")));
    REQUIRE(a.think_prompt == (want == CHAT_DEEPSEEK3 && has(src, len, REF_DS_A "<think>\\n")));
    REQUIRE(memchr(a.default_system, 0, sizeof a.default_system) != NULL);
    REQUIRE(a.default_system[0] == 0 || a.family == CHAT_CHATML);
    /* the default is what follows "<|im_start|>system" in the source */
    REQUIRE(a.default_system[0] == 0 || has(src, len, "<|im_start|>system"));
    chat_tmpl_detect(src, len, &b);
    REQUIRE(a.family == b.family && strcmp(a.default_system, b.default_system) == 0);
}

/* needles appear in hay in order, without overlapping */
static int in_order(const char *hay, size_t n, const char *const *s, const size_t *len, int k) {
    size_t at = 0;
    for (int i = 0; i < k; i++) {
        if (len[i] == 0) continue;
        const char *p = len[i] <= n - at ? memmem(hay + at, n - at, s[i], len[i]) : NULL;
        if (!p) return 0;
        at = (size_t)(p - hay) + len[i];
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    check_detect(buf, size);   /* not NUL-terminated: the size alone bounds it */
    check_detect(NULL, 0);
    buf[size] = 0;

    /* split: mode byte, template, messages */
    int mode = (uint8_t)buf[0] % 6;
    char *src = buf + 1;
    size_t src_len = strlen(src);
    check_detect(src, src_len);
    chat_tmpl t;
    chat_tmpl_detect(src, src_len, &t);
    if (mode < 5) t.family = (chat_family)mode;
    chat_msg m[MAX_MSGS];
    int n = 0;
    for (char *p = src + src_len; p < buf + size && n < MAX_MSGS;) {
        p++;   /* the NUL before the message */
        m[n].role = p < buf + size && *p ? (chat_role)((uint8_t)*p % 3) : CHAT_USER;
        m[n].content = p < buf + size && *p ? p + 1 : p;
        n++;
        p += strlen(p);
    }

    for (int f = 0; f <= CHAT_DEEPSEEK2; f++) {
        chat_family back;
        REQUIRE(chat_family_parse(chat_family_name((chat_family)f), &back) == 0 && (int)back == f);
    }
    for (int i = 0; i < n; i++) {
        chat_role r;
        if (chat_role_parse(m[i].content, &r) == 0)
            REQUIRE(!strcmp(m[i].content, role_name[r]) ||
                    (r == CHAT_SYSTEM && !strcmp(m[i].content, "developer")));
        chat_family f;
        if (chat_family_parse(m[i].content, &f) == 0)
            REQUIRE(!strcmp(chat_family_name(f), m[i].content));
    }

    char err[512] = "";
    char *got = chat_render(&t, m, n, err, sizeof err);
    char *want = ref_render(&t, m, n);
    if (!want) {
        REQUIRE(got == NULL && err[0] != 0 && memchr(err, 0, sizeof err));
    } else {
        if (!got) fprintf(stderr, "fuzz_chat: %s refused %d messages: %s\n",
                          chat_family_name(t.family), n, err);
        REQUIRE(got != NULL);
        size_t gl = strlen(got), wl = strlen(want);
        if (gl != wl || memcmp(got, want, gl) != 0)
            fprintf(stderr, "fuzz_chat: %s rendering differs\n  want: \"%s\"\n  got:  \"%s\"\n",
                    chat_family_name(t.family), want, got);
        REQUIRE(gl == wl && memcmp(got, want, gl) == 0);
        /* what the equality above implies, stated directly */
        const char *pieces[MAX_MSGS];
        size_t lens[MAX_MSGS], sum = 0;
        int trim = t.family == CHAT_LLAMA3 || t.family == CHAT_LLAMA2;
        for (int i = 0; i < n; i++) {
            if (trim) ref_trimmed(m[i].content, strlen(m[i].content), &pieces[i], &lens[i]);
            else { pieces[i] = m[i].content; lens[i] = strlen(m[i].content); }
            sum += lens[i];
        }
        /* (deepseek3 moves system messages first and may drop an earlier thought) */
        REQUIRE(t.family == CHAT_DEEPSEEK3 || gl >= sum);
        REQUIRE(t.family == CHAT_DEEPSEEK3 || in_order(got, gl, pieces, lens, n));
    }
    free(got);
    free(want);
    free(buf);
    return 0;
}
