/* launch/chat.c — chat template recognition and rendering (see chat.h for the formats). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

/* DeepSeek's markers: fullwidth vertical bars (U+FF5C) and U+2581 for the spaces */
#define CHAT__DS_BAR "\xef\xbd\x9c"
#define CHAT__DS_SP "\xe2\x96\x81"
#define CHAT__DS_USER "<" CHAT__DS_BAR "User" CHAT__DS_BAR ">"
#define CHAT__DS_ASSISTANT "<" CHAT__DS_BAR "Assistant" CHAT__DS_BAR ">"
#define CHAT__DS_EOS "<" CHAT__DS_BAR "end" CHAT__DS_SP "of" CHAT__DS_SP "sentence" CHAT__DS_BAR ">"

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} chat__buf;

static void chat__put(chat__buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void chat__puts(chat__buf *b, const char *s) { chat__put(b, s, strlen(s)); }

static int chat__space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* content without leading and trailing whitespace (Jinja's trim, Python's strip) */
static void chat__put_trimmed(chat__buf *b, const char *s) {
    size_t n = strlen(s);
    while (n && chat__space(*s)) { s++; n--; }
    while (n && chat__space(s[n - 1])) n--;
    chat__put(b, s, n);
}

static const char *chat__find(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    return k <= n ? memmem(s, n, needle, k) : NULL;
}

/* A system message the ChatML template writes literally when the conversation has none:
 * the text after "<|im_start|>system\n" up to "<|im_end|>" inside one string literal (no quote
 * or brace in between). The Jinja source spells the newline as the two characters "\n". */
static void chat__default_system(const char *src, size_t len, char *out, size_t cap) {
    static const char *const heads[] = { "<|im_start|>system\\n", "<|im_start|>system\n" };
    out[0] = 0;
    for (int h = 0; h < 2; h++) {
        size_t hl = strlen(heads[h]);
        const char *p = src, *end = src + len;
        while ((p = chat__find(p, (size_t)(end - p), heads[h])) != NULL) {
            const char *t = p + hl;
            const char *e = chat__find(t, (size_t)(end - t), "<|im_end|>");
            if (!e) return;
            int literal = e > t;
            for (const char *q = t; q < e && literal; q++)
                if (*q == '\'' || *q == '"' || *q == '{' || *q == '}') literal = 0;
            if (literal) {
                size_t o = 0;
                for (const char *q = t; q < e && o + 1 < cap; q++) {
                    if (q[0] == '\\' && q + 1 < e && q[1] == 'n') {
                        out[o++] = '\n';
                        q++;
                    } else {
                        out[o++] = *q;
                    }
                }
                out[o] = 0;
                return;
            }
            p = t;
        }
    }
}

void chat_tmpl_detect(const char *src, size_t len, chat_tmpl *out) {
    memset(out, 0, sizeof *out);
    out->family = CHAT_PLAIN;
    if (!src || !len) return;
    if (chat__find(src, len, "<|start_header_id|>")) out->family = CHAT_LLAMA3;
    else if (chat__find(src, len, "<|im_start|>")) {
        out->family = CHAT_CHATML;
        chat__default_system(src, len, out->default_system, sizeof out->default_system);
    } else if (chat__find(src, len, "[INST]")) {
        out->family = chat__find(src, len, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    } else if (chat__find(src, len, CHAT__DS_USER) && chat__find(src, len, CHAT__DS_ASSISTANT) &&
               chat__find(src, len, CHAT__DS_EOS)) {
        out->family = CHAT_DEEPSEEK3;
        out->reasoning = chat__find(src, len, "</think>") != NULL;
        out->think_prompt = chat__find(src, len, CHAT__DS_ASSISTANT "<think>\\n") != NULL;
    } else if (chat__find(src, len, "'Assistant: ' + message['content'] + eos_token")) {
        out->family = CHAT_DEEPSEEK2;
    }
}

static const char *const chat__names[] = { "plain", "llama2", "llama3", "chatml", "mistral",
                                           "deepseek3", "deepseek2" };

const char *chat_family_name(chat_family f) {
    return (unsigned)f < sizeof chat__names / sizeof *chat__names ? chat__names[f] : "?";
}

int chat_family_parse(const char *name, chat_family *out) {
    for (size_t i = 0; i < sizeof chat__names / sizeof *chat__names; i++)
        if (!strcmp(name, chat__names[i])) {
            *out = (chat_family)i;
            return 0;
        }
    return -1;
}

int chat_role_parse(const char *name, chat_role *out) {
    if (!strcmp(name, "system") || !strcmp(name, "developer")) *out = CHAT_SYSTEM;
    else if (!strcmp(name, "user")) *out = CHAT_USER;
    else if (!strcmp(name, "assistant")) *out = CHAT_ASSISTANT;
    else return -1;
    return 0;
}

static const char *const chat__role_names[] = { "system", "user", "assistant" };

static void chat__llama3(chat__buf *b, const chat_msg *m, int n) {
    for (int i = 0; i < n; i++) {
        chat__puts(b, "<|start_header_id|>");
        chat__puts(b, chat__role_names[m[i].role]);
        chat__puts(b, "<|end_header_id|>\n\n");
        chat__put_trimmed(b, m[i].content);
        chat__puts(b, "<|eot_id|>");
    }
    chat__puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void chat__chatml(chat__buf *b, const chat_tmpl *t, const chat_msg *m, int n) {
    if (t->default_system[0] && m[0].role != CHAT_SYSTEM) {
        chat__puts(b, "<|im_start|>system\n");
        chat__puts(b, t->default_system);
        chat__puts(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        chat__puts(b, "<|im_start|>");
        chat__puts(b, chat__role_names[m[i].role]);
        chat__puts(b, "\n");
        chat__puts(b, m[i].content);
        chat__puts(b, "<|im_end|>\n");
    }
    chat__puts(b, "<|im_start|>assistant\n");
}

/* Llama-2 and Mistral: a leading system message is folded into the user turn right after it;
 * without one (only a system message, or an assistant message next) it gets an instruction turn
 * of its own in front, so it still comes first. Each assistant turn closes with EOS; Llama-2
 * also opens each user turn after the first with BOS. */
static int chat__inst(chat__buf *b, int llama2, const chat_msg *m, int n, char *err,
                      size_t errlen) {
    const char *sys = NULL;
    int i0 = 0;
    if (m[0].role == CHAT_SYSTEM) {
        sys = m[0].content;
        i0 = 1;
    }
    int first_user = 1;
    if (sys && (n < 2 || m[1].role != CHAT_USER)) {
        chat__puts(b, "[INST] ");
        if (llama2) {
            chat__puts(b, "<<SYS>>\n");
            chat__puts(b, sys);
            chat__puts(b, "\n<</SYS>>");
        } else {
            chat__puts(b, sys);
        }
        chat__puts(b, " [/INST]");
        sys = NULL;
    }
    for (int i = i0; i < n; i++) {
        if (m[i].role == CHAT_SYSTEM) {
            snprintf(err, errlen, "messages[%d]: the %s chat template allows a system message "
                     "only as the first message", i, llama2 ? "llama2" : "mistral");
            return -1;
        }
        if (m[i].role == CHAT_USER) {
            if (llama2 && i > i0) chat__puts(b, "<s>");
            chat__puts(b, "[INST] ");
            chat__buf c = { 0 };
            if (first_user && sys) {
                if (llama2) {
                    chat__puts(&c, "<<SYS>>\n");
                    chat__puts(&c, sys);
                    chat__puts(&c, "\n<</SYS>>\n\n");
                } else {
                    chat__puts(&c, sys);
                    chat__puts(&c, "\n\n");
                }
            }
            chat__puts(&c, m[i].content);
            if (c.oom) b->oom = 1;
            else if (llama2) chat__put_trimmed(b, c.p ? c.p : "");
            else chat__puts(b, c.p ? c.p : "");
            free(c.p);
            chat__puts(b, " [/INST]");
            first_user = 0;
        } else if (llama2) {
            chat__puts(b, " ");
            chat__put_trimmed(b, m[i].content);
            chat__puts(b, " </s>");
        } else {
            chat__puts(b, m[i].content);
            chat__puts(b, "</s>");
        }
    }
    return 0;
}

/* DeepSeek-V3 / R1, as their Jinja sources render: the system messages first (joined by
 * "\n\n"), then the turns; R1's drops an earlier answer's thought */
static void chat__deepseek3(chat__buf *b, const chat_tmpl *t, const chat_msg *m, int n) {
    int sys = 0;
    for (int i = 0; i < n; i++)
        if (m[i].role == CHAT_SYSTEM) {
            if (sys++) chat__puts(b, "\n\n");
            chat__puts(b, m[i].content);
        }
    for (int i = 0; i < n; i++) {
        if (m[i].role == CHAT_USER) {
            chat__puts(b, CHAT__DS_USER);
            chat__puts(b, m[i].content);
        } else if (m[i].role == CHAT_ASSISTANT) {
            const char *c = m[i].content, *e;
            if (t->reasoning)   /* content.split('</think>')[-1] */
                while ((e = strstr(c, "</think>"))) c = e + strlen("</think>");
            chat__puts(b, CHAT__DS_ASSISTANT);
            chat__puts(b, c);
            chat__puts(b, CHAT__DS_EOS);
        }
    }
    chat__puts(b, CHAT__DS_ASSISTANT);
    if (t->think_prompt) chat__puts(b, "<think>\n");
}

/* DeepSeek-V2, as llama.cpp renders it */
static void chat__deepseek2(chat__buf *b, const chat_msg *m, int n) {
    static const char *const label[] = { "", "User: ", "Assistant: " };
    for (int i = 0; i < n; i++) {
        chat__puts(b, label[m[i].role]);
        chat__puts(b, m[i].content);
        chat__puts(b, m[i].role == CHAT_ASSISTANT ? CHAT__DS_EOS : "\n\n");
    }
    chat__puts(b, "Assistant:");
}

static void chat__plain(chat__buf *b, const chat_msg *m, int n) {
    static const char *const label[] = { "System: ", "User: ", "Assistant: " };
    for (int i = 0; i < n; i++) {
        chat__puts(b, label[m[i].role]);
        chat__puts(b, m[i].content);
        chat__puts(b, "\n");
    }
    chat__puts(b, "Assistant:");
}

char *chat_render(const chat_tmpl *t, const chat_msg *msgs, int n, char *err, size_t errlen) {
    if (n < 1) {
        snprintf(err, errlen, "messages: at least one message is required");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if ((unsigned)msgs[i].role > CHAT_ASSISTANT || !msgs[i].content) {
            snprintf(err, errlen, "messages[%d]: bad role or no content", i);
            return NULL;
        }
    chat__buf b = { 0 };
    switch (t->family) {
    case CHAT_LLAMA3: chat__llama3(&b, msgs, n); break;
    case CHAT_CHATML: chat__chatml(&b, t, msgs, n); break;
    case CHAT_LLAMA2:
    case CHAT_MISTRAL:
        if (chat__inst(&b, t->family == CHAT_LLAMA2, msgs, n, err, errlen)) {
            free(b.p);
            return NULL;
        }
        break;
    case CHAT_DEEPSEEK3: chat__deepseek3(&b, t, msgs, n); break;
    case CHAT_DEEPSEEK2: chat__deepseek2(&b, msgs, n); break;
    default: chat__plain(&b, msgs, n); break;
    }
    if (b.oom || !b.p) {
        free(b.p);
        snprintf(err, errlen, "out of memory rendering %d chat messages", n);
        return NULL;
    }
    return b.p;
}
