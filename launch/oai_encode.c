/* launch/oai_encode.c — OpenAI response objects as cJSON (oai.h): errors, the response and
 * chunk skeleton, choices, usage, logprobs (and the log-softmax of the rows the scheduler
 * does not score itself). The HTTP side (http_complete.c) serializes them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oai.h"
#include "tok.h"
#include "utf8.h"

cJSON *oai_error_json(const oai_err *e) {
    cJSON *o = cJSON_CreateObject(), *x = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(x, "message", e->msg);
    cJSON_AddStringToObject(x, "type", e->type);
    if (e->param[0]) cJSON_AddStringToObject(x, "param", e->param);
    else cJSON_AddNullToObject(x, "param");
    if (e->code) cJSON_AddStringToObject(x, "code", e->code);
    else cJSON_AddNullToObject(x, "code");
    return o;
}

const char *oai_finish_reason(sched_finish f) {
    switch (f) {
    case SCHED_FINISH_LENGTH: return "length";
    case SCHED_FINISH_STOP:
    case SCHED_FINISH_EOS: return "stop";
    case SCHED_FINISH_SHUTDOWN:
    case SCHED_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

cJSON *oai_base(int chat, int chunk, const char *id, long created, const char *model) {
    cJSON *o = cJSON_CreateObject();
    char full[96];
    snprintf(full, sizeof full, "%s-%s", chat ? "chatcmpl" : "cmpl", id);
    cJSON_AddStringToObject(o, "id", full);
    cJSON_AddStringToObject(o, "object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                              : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddNullToObject(o, "system_fingerprint");
    return o;
}

cJSON *oai_usage(int n_prompt, int n_completion) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", n_completion);
    cJSON_AddNumberToObject(u, "total_tokens", n_prompt + n_completion);
    return u;
}

cJSON *oai_choice(int chat, int chunk, int index, const char *text, const char *finish, int role,
                  cJSON *logprobs, const char *reasoning) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", index);
    if (!chat) {
        cJSON_AddStringToObject(c, "text", text ? text : "");
    } else {
        cJSON *m = cJSON_AddObjectToObject(c, chunk ? "delta" : "message");
        if (!chunk || role) cJSON_AddStringToObject(m, "role", "assistant");
        if (reasoning) cJSON_AddStringToObject(m, "reasoning_content", reasoning);
        if (!chunk || role || text) cJSON_AddStringToObject(m, "content", text ? text : "");
    }
    if (logprobs) cJSON_AddItemToObject(c, "logprobs", logprobs);
    else cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

/* ---- logprobs ----------------------------------------------------------------------------- */

/* a token's bytes (control tokens by their text) into *raw (malloc'd, rawlen) and a valid
 * UTF-8 copy into *str; -1 when out of memory */
static int oai__piece(const struct tok *t, int32_t id, char **raw, int *rawlen, char **str) {
    char small[64];
    int n = tok_piece(t, id, small, sizeof small, 1);
    if (n < 0) n = 0;
    char *b = malloc((size_t)n + 1);
    if (!b) return -1;
    if (n <= (int)sizeof small) memcpy(b, small, (size_t)n);
    else tok_piece(t, id, b, n, 1);
    *raw = b;
    *rawlen = n;
    size_t sl;
    *str = oai_text(b, (size_t)n, &sl);
    if (!*str) {
        free(b);
        return -1;
    }
    return 0;
}

static double oai__lp_num(float lp) { return isfinite(lp) ? (double)lp : -9999.0; }

/* {token, logprob, bytes} (chat), or NULL when out of memory */
static cJSON *oai__chat_tok(const struct tok *t, int32_t id, float lp) {
    char *raw, *str;
    int rl;
    if (oai__piece(t, id, &raw, &rl, &str)) return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", str);
    cJSON_AddNumberToObject(o, "logprob", oai__lp_num(lp));
    cJSON *by = cJSON_AddArrayToObject(o, "bytes");
    for (int i = 0; i < rl; i++) cJSON_AddItemToArray(by, cJSON_CreateNumber((unsigned char)raw[i]));
    free(raw);
    free(str);
    return o;
}

cJSON *oai_logprobs(int chat, const struct tok *t, const oai_lp *e, int n) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int bad = 0;
    if (chat) {
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        for (int i = 0; i < n && !bad; i++) {
            cJSON *x = oai__chat_tok(t, e[i].token, e[i].logprob);
            if (!x) {
                bad = 1;
                break;
            }
            cJSON_AddItemToArray(content, x);
            cJSON *tops = cJSON_AddArrayToObject(x, "top_logprobs");
            for (int k = 0; k < e[i].n_top && !bad; k++) {
                cJSON *y = oai__chat_tok(t, e[i].top[k].token, e[i].top[k].logprob);
                if (y) cJSON_AddItemToArray(tops, y);
                else bad = 1;
            }
        }
    } else {
        cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
        cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
        cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
        cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
        for (int i = 0; i < n && !bad; i++) {
            char *raw, *str;
            int rl;
            if (oai__piece(t, e[i].token, &raw, &rl, &str)) {
                bad = 1;
                break;
            }
            cJSON_AddItemToArray(toks, cJSON_CreateString(str));
            free(raw);
            free(str);
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)e[i].text_offset));
            if (isnan(e[i].logprob)) {
                cJSON_AddItemToArray(lps, cJSON_CreateNull());
                cJSON_AddItemToArray(tops, cJSON_CreateNull());
                continue;
            }
            cJSON_AddItemToArray(lps, cJSON_CreateNumber(oai__lp_num(e[i].logprob)));
            cJSON *d = cJSON_CreateObject();
            cJSON_AddItemToArray(tops, d);
            /* the n_top best, then the token itself unless it is among them */
            int self = 0;
            for (int k = 0; k <= e[i].n_top && !bad; k++) {
                int32_t id;
                float lp;
                if (k < e[i].n_top) {
                    id = e[i].top[k].token;
                    lp = e[i].top[k].logprob;
                    self |= id == e[i].token;
                } else if (!self) {
                    id = e[i].token;
                    lp = e[i].logprob;
                } else {
                    break;
                }
                if (oai__piece(t, id, &raw, &rl, &str)) {
                    bad = 1;
                    break;
                }
                if (!cJSON_GetObjectItemCaseSensitive(d, str))
                    cJSON_AddNumberToObject(d, str, oai__lp_num(lp));
                free(raw);
                free(str);
            }
        }
    }
    if (bad) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int oai_row_logprobs(const float *logits, int n_vocab, int32_t token, int k, float *lp,
                     sched_top *top) {
    double mx = -INFINITY;
    for (int v = 0; v < n_vocab; v++)
        if (logits[v] > mx) mx = logits[v];
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)logits[v] - mx);
    double lse = mx + log(sum);
    if (token >= 0 && token < n_vocab) *lp = (float)((double)logits[token] - lse);
    if (k > SCHED_MAX_LOGPROBS) k = SCHED_MAX_LOGPROBS;
    if (k > n_vocab) k = n_vocab;
    /* insertion into the k best (value desc, id asc: a later equal value never enters) */
    int have = 0;
    for (int v = 0; v < n_vocab && k > 0; v++) {
        float x = logits[v];
        if (have == k && !(x > logits[top[k - 1].token])) continue;
        int i = have < k ? have++ : k - 1;
        while (i > 0 && logits[top[i - 1].token] < x) {
            top[i] = top[i - 1];
            i--;
        }
        top[i].token = v;
    }
    for (int i = 0; i < have; i++) top[i].logprob = (float)((double)logits[top[i].token] - lse);
    return have;
}

char *oai_text(const char *s, size_t n, size_t *out_len) {
    char *v = utf8_sanitize(s, n);   /* a 0 byte becomes U+FFFD there too */
    if (v) *out_len = strlen(v);
    return v;
}

long oai_chars(const char *s, size_t n) {
    long c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

int oai_prompt_offsets(const struct tok *t, const int32_t *ids, int n, long *off) {
    if (n <= 0) return 0;
    int64_t len = tok_decode(t, ids, n, NULL, 0);
    char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (!text) return -1;
    tok_decode(t, ids, n, text, len + 1);
    /* tok_decode drops the space the encoder put before the first token's text: the only
     * difference between the decoded prefix ids[0..i) and the pieces' bytes */
    int64_t drop = (int64_t)tok_piece(t, ids[0], NULL, 0, 0) - tok_decode(t, ids, 1, NULL, 0);
    int64_t bytes = 0, at = 0;
    long chars = 0;
    for (int i = 0; i < n; i++) {
        int64_t b = bytes - (i > 0 ? drop : 0);
        if (b > len) b = len;
        if (b > at) {
            chars += oai_chars(text + at, (size_t)(b - at));
            at = b;
        }
        off[i] = chars;
        bytes += tok_piece(t, ids[i], NULL, 0, 0);
    }
    free(text);
    return 0;
}
