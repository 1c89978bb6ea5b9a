/* launch/oai_parse.c — OpenAI request bodies -> validated jobs (oai.h): JSON syntax, NUL
 * characters in strings, the model name, every field's type and range (unknown fields and
 * unimplemented ones refused), the prompt or the chat messages (rendered by the chat
 * template, then tokenized), stop strings, logit_bias, logprobs, and the context limit.
 * Pure: no server state, no sockets. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oai.h"
#include "tok.h"

void oai_err_set(oai_err *e, int status, const char *param, const char *code, const char *fmt,
                 ...) {
    e->status = status;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

static const char *oai__type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "null";
}

/* the member, or NULL when absent or JSON null */
static cJSON *oai__get(const cJSON *o, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* 1 set, 0 absent, -1 error (e filled) */
static int oai__num(const cJSON *o, const char *key, double lo, double hi, double *out,
                     oai_err *e) {
    cJSON *v = oai__get(o, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        if (cJSON_IsNumber(v))
            oai_err_set(e, 400, key, "invalid_value", "'%s' must be a number in [%g, %g], got %g",
                          key, lo, hi, v->valuedouble);
        else
            oai_err_set(e, 400, key, "invalid_type", "'%s' must be a number, got %s", key,
                          oai__type_name(v));
        return -1;
    }
    *out = v->valuedouble;
    return 1;
}

static int oai__int(const cJSON *o, const char *key, double lo, double hi, long long *out,
                     oai_err *e) {
    cJSON *v = oai__get(o, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || !isfinite(v->valuedouble)) {
        oai_err_set(e, 400, key, "invalid_type", "'%s' must be an integer, got %s", key,
                      cJSON_IsNumber(v) ? "a fraction" : oai__type_name(v));
        return -1;
    }
    if (v->valuedouble < lo || v->valuedouble > hi) {
        oai_err_set(e, 400, key, "invalid_value", "'%s' must be an integer in [%.0f, %.0f], got %.0f",
                      key, lo, hi, v->valuedouble);
        return -1;
    }
    *out = (long long)v->valuedouble;
    return 1;
}

static int oai__bool(const cJSON *o, const char *key, int *out, oai_err *e) {
    cJSON *v = oai__get(o, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) {
        oai_err_set(e, 400, key, "invalid_type", "'%s' must be a boolean, got %s", key,
                      oai__type_name(v));
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 1;
}

/* ---- NUL characters ----------------------------------------------------------------------- */

/* one open container while scanning: an object (its current key) or an array (its index) */
typedef struct {
    int obj;
    long idx;
    const char *key;
    size_t klen;
} oai__frame;

#define OAI__MAX_DEPTH 1024   /* above cJSON's nesting limit (1000): a parsed body fits */

/* appends bytes of a key as written in the body, up to a raw NUL, to path */
static void oai__path_key(char *path, size_t cap, const char *k, size_t kl, int dot) {
    size_t o = strlen(path);
    if (dot && o + 1 < cap) path[o++] = '.';
    for (size_t i = 0; i < kl && k[i] && o + 1 < cap; i++) path[o++] = k[i];
    path[o] = 0;
}

/* Finds the first string of a (well-formed) JSON text that holds a NUL character, raw or as
 * \u0000. Returns 0 if none; else 1 for a value, 2 for a key, with path ("messages[1].content")
 * and top (the top-level key it is under, "" when the top-level key itself is the string);
 * 3 for a raw 0 byte outside any string (path: its offset). Never reads past n. */
static int oai__find_nul(const char *s, size_t n, char *path, size_t pcap, char *top, size_t tcap) {
    oai__frame *f = malloc(OAI__MAX_DEPTH * sizeof *f);
    if (!f) return 0;
    int d = 0, want_key = 0, found = 0;
    size_t i = 0;
    while (i < n && !found) {
        char c = s[i];
        if (c == '{' || c == '[') {
            if (d == OAI__MAX_DEPTH) break;
            f[d++] = (oai__frame){ .obj = c == '{' };
            want_key = c == '{';
            i++;
        } else if (c == '}' || c == ']') {
            if (d > 0) d--;
            want_key = 0;
            i++;
        } else if (c == ',') {
            if (d > 0) {
                if (f[d - 1].obj) want_key = 1;
                else f[d - 1].idx++;
            }
            i++;
        } else if (c == '"') {
            size_t a = ++i;
            int nul = 0;
            while (i < n && s[i] != '"') {
                if (s[i] == 0) nul = 1;
                if (s[i] == '\\' && i + 1 < n) {
                    if (s[i + 1] == 'u' && i + 5 < n && !memcmp(s + i + 2, "0000", 4)) nul = 1;
                    i += 2;
                } else {
                    i++;
                }
            }
            size_t b = i < n ? i : n;
            i++;
            int is_key = d > 0 && f[d - 1].obj && want_key;
            if (is_key) {
                f[d - 1].key = s + a;
                f[d - 1].klen = b - a;
                want_key = 0;
            }
            if (!nul) continue;
            found = is_key ? 2 : 1;
            path[0] = top[0] = 0;
            for (int k = 0; k < d; k++) {
                if (f[k].obj) {
                    if (f[k].key) oai__path_key(path, pcap, f[k].key, f[k].klen, k > 0);
                } else {
                    size_t o = strlen(path);
                    snprintf(path + o, pcap - o, "[%ld]", f[k].idx);
                }
            }
            if (d > 1 || (d == 1 && !is_key)) {
                top[0] = 0;
                oai__path_key(top, tcap, f[0].key ? f[0].key : "", f[0].key ? f[0].klen : 0, 0);
            }
        } else if (c == 0) {
            found = 3;   /* cJSON skips it as whitespace; JSON does not allow it */
            snprintf(path, pcap, "%zu", i);
            top[0] = 0;
        } else {
            i++;   /* ':', whitespace, numbers, literals */
        }
    }
    free(f);
    return found;
}

/* 400 naming the field if a string of the body holds a NUL character */
static int oai__check_nul(const char *body, size_t len, oai_err *e) {
    if (!memchr(body, 0, len) && !memmem(body, len, "\\u0000", 6)) return 0;
    char path[160], top[64];
    int k = oai__find_nul(body, len, path, sizeof path, top, sizeof top);
    if (!k) return 0;   /* "\\u0000": an escaped backslash, then text */
    if (k == 3) {
        oai_err_set(e, 400, NULL, "invalid_json", "the request body holds a 0 byte at byte %s, "
                    "outside any string", path);
        return -1;
    }
    oai_err_set(e, 400, top[0] ? top : NULL, "invalid_value",
                "%s%s contains a NUL character (\\u0000 or a raw 0 byte); text fields must not "
                "contain NUL", k == 2 ? "the key " : "", path[0] ? path : "a string");
    return -1;
}

/* ---- which fields exist ------------------------------------------------------------------- */

enum { OAI__CMPL = 1, OAI__CHAT = 2, OAI__BOTH = 3 };

static const struct {
    const char *name;
    int where;
} oai__fields[] = {
    { "model", OAI__BOTH },           { "stream", OAI__BOTH },
    { "stream_options", OAI__BOTH },  { "temperature", OAI__BOTH },
    { "top_p", OAI__BOTH },           { "n", OAI__BOTH },
    { "stop", OAI__BOTH },            { "max_tokens", OAI__BOTH },
    { "max_completion_tokens", OAI__BOTH },
    { "presence_penalty", OAI__BOTH },{ "frequency_penalty", OAI__BOTH },
    { "logit_bias", OAI__BOTH },      { "logprobs", OAI__BOTH },
    { "seed", OAI__BOTH },            { "user", OAI__BOTH },
    { "metadata", OAI__BOTH },        { "store", OAI__BOTH },
    { "service_tier", OAI__BOTH },
    /* extensions (llama.cpp's and vLLM's names) */
    { "top_k", OAI__BOTH },           { "min_p", OAI__BOTH },
    { "repetition_penalty", OAI__BOTH }, { "ignore_eos", OAI__BOTH },
    /* one endpoint's */
    { "prompt", OAI__CMPL },          { "echo", OAI__CMPL },
    { "best_of", OAI__CMPL },         { "suffix", OAI__CMPL },
    { "messages", OAI__CHAT },        { "top_logprobs", OAI__CHAT },
    { "tools", OAI__CHAT },           { "tool_choice", OAI__CHAT },
    { "functions", OAI__CHAT },       { "function_call", OAI__CHAT },
    { "response_format", OAI__CHAT }, { "parallel_tool_calls", OAI__CHAT },
    { "audio", OAI__CHAT },           { "modalities", OAI__CHAT },
    { "prediction", OAI__CHAT },      { "reasoning_effort", OAI__CHAT },
    { "web_search_options", OAI__CHAT },
};
#define OAI__N_FIELDS (int)(sizeof oai__fields / sizeof *oai__fields)

/* every top-level key is a field of this endpoint, and none appears twice */
static int oai__known(const cJSON *root, int chat, oai_err *e) {
    unsigned char seen[OAI__N_FIELDS] = { 0 };
    int where = chat ? OAI__CHAT : OAI__CMPL;
    for (const cJSON *v = root->child; v; v = v->next) {
        const char *k = v->string ? v->string : "";
        int f = 0;
        while (f < OAI__N_FIELDS && (strcmp(oai__fields[f].name, k) || !(oai__fields[f].where & where)))
            f++;
        if (f == OAI__N_FIELDS) {
            oai_err_set(e, 400, k, "unknown_parameter", "unknown parameter '%.200s' for %s", k,
                        chat ? "/v1/chat/completions" : "/v1/completions");
            return -1;
        }
        if (seen[f]++) {
            oai_err_set(e, 400, k, "invalid_value", "'%s' appears twice in the request", k);
            return -1;
        }
    }
    return 0;
}

/* ---- refused and ignored fields ----------------------------------------------------------- */

static int oai__is_str(const cJSON *v, const char *s) {
    return cJSON_IsString(v) && !strcmp(v->valuestring, s);
}

/* Fields the server knows but does not implement: each absent, null or at its neutral value
 * (empty tools, tool_choice "none", response_format text, modalities ["text"], ...). */
static int oai__unsupported(const cJSON *root, int chat, oai_err *e) {
    cJSON *v;
    const char *bad = NULL, *why = NULL;
    if (chat) {
        if ((v = oai__get(root, "tools")) && !(cJSON_IsArray(v) && !v->child))
            bad = "tools", why = "tools (function calling) are not supported";
        else if ((v = oai__get(root, "tool_choice")) && !oai__is_str(v, "none"))
            bad = "tool_choice", why = "tool_choice is not supported (only \"none\")";
        else if ((v = oai__get(root, "functions")) && !(cJSON_IsArray(v) && !v->child))
            bad = "functions", why = "functions are not supported";
        else if ((v = oai__get(root, "function_call")) && !oai__is_str(v, "none"))
            bad = "function_call", why = "function_call is not supported (only \"none\")";
        else if (oai__get(root, "parallel_tool_calls"))
            bad = "parallel_tool_calls", why = "parallel_tool_calls is not supported (no tools)";
        else if ((v = oai__get(root, "response_format")) &&
                 !(cJSON_IsObject(v) && oai__is_str(cJSON_GetObjectItemCaseSensitive(v, "type"), "text")))
            bad = "response_format", why = "only response_format {\"type\": \"text\"} is supported";
        else if (oai__get(root, "audio"))
            bad = "audio", why = "audio output is not supported";
        else if ((v = oai__get(root, "modalities")) &&
                 !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 && oai__is_str(v->child, "text")))
            bad = "modalities", why = "only modalities [\"text\"] is supported";
        else if (oai__get(root, "prediction"))
            bad = "prediction", why = "predicted outputs are not supported";
        else if (oai__get(root, "reasoning_effort"))
            bad = "reasoning_effort", why = "reasoning_effort is not supported";
        else if (oai__get(root, "web_search_options"))
            bad = "web_search_options", why = "web search is not supported";
    } else {
        if ((v = oai__get(root, "suffix")) && !(cJSON_IsString(v) && !*v->valuestring))
            bad = "suffix", why = "suffix (insertion) is not supported";
        else if ((v = oai__get(root, "best_of")) && !(cJSON_IsNumber(v) && v->valuedouble == 1))
            bad = "best_of", why = "only best_of = 1 is supported (use n for several choices)";
    }
    if (bad) {
        oai_err_set(e, 400, bad, "unsupported_parameter", "%s", why);
        return -1;
    }
    /* accepted and ignored, but of the documented type */
    static const struct { const char *name; int (*is)(const cJSON *); const char *type; } ign[] = {
        { "user", cJSON_IsString, "a string" },     { "metadata", cJSON_IsObject, "an object" },
        { "store", cJSON_IsBool, "a boolean" },     { "service_tier", cJSON_IsString, "a string" },
    };
    for (size_t i = 0; i < sizeof ign / sizeof *ign; i++)
        if ((v = oai__get(root, ign[i].name)) && !ign[i].is(v)) {
            oai_err_set(e, 400, ign[i].name, "invalid_type", "'%s' must be %s, got %s",
                        ign[i].name, ign[i].type, oai__type_name(v));
            return -1;
        }
    return 0;
}

/* ---- prompt and messages ------------------------------------------------------------------ */

static int oai__tokenize(const oai_limits *l, const char *text, size_t len, oai_job *j,
                          const char *param, oai_err *e) {
    int64_t cap = (int64_t)len + 8, n;
    for (;;) {
        free(j->prompt);
        j->prompt = malloc((size_t)cap * sizeof *j->prompt);
        if (!j->prompt) {
            oai_err_set(e, 500, NULL, NULL, "out of memory tokenizing a %zu-byte %s", len, param);
            return -1;
        }
        n = tok_encode(l->tok, text, len, 1, 1, j->prompt, cap);
        if (n < 0) {
            oai_err_set(e, 400, param, "invalid_value", "the %s could not be tokenized", param);
            return -1;
        }
        if (n <= cap) break;
        cap = n;
    }
    j->n_prompt = (int)(n < INT32_MAX ? n : INT32_MAX);
    return 0;
}

/* with echo: the text the choices start with */
static int oai__echo_text(const oai_limits *l, const char *text, size_t len, oai_job *j,
                          oai_err *e) {
    if (!j->echo) return 0;
    if (!text) {
        int64_t need = tok_decode(l->tok, j->prompt, j->n_prompt, NULL, 0);
        if (need < 0) {
            oai_err_set(e, 400, "prompt", "invalid_value", "the prompt's tokens could not be decoded");
            return -1;
        }
        if (!(j->echo_text = malloc((size_t)need + 1))) goto oom;
        tok_decode(l->tok, j->prompt, j->n_prompt, j->echo_text, need + 1);
        j->echo_len = (size_t)need;
        return 0;
    }
    if (!(j->echo_text = malloc(len + 1))) goto oom;
    memcpy(j->echo_text, text, len + 1);
    j->echo_len = len;
    return 0;
oom:
    oai_err_set(e, 500, NULL, NULL, "out of memory copying the prompt for echo");
    return -1;
}

static int oai__prompt(const oai_limits *l, const cJSON *root, oai_job *j, oai_err *e) {
    cJSON *p = oai__get(root, "prompt");
    if (!p) {
        oai_err_set(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
        return -1;
    }
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0);
    if (cJSON_IsString(p)) {
        size_t len = strlen(p->valuestring);   /* whole: oai__check_nul refused a NUL */
        if (oai__tokenize(l, p->valuestring, len, j, "prompt", e)) return -1;
        return oai__echo_text(l, p->valuestring, len, j, e);
    }
    if (!cJSON_IsArray(p)) {
        oai_err_set(e, 400, "prompt", "invalid_type",
                      "'prompt' must be a string or an array of token ids, got %s", oai__type_name(p));
        return -1;
    }
    int n = cJSON_GetArraySize(p);
    if (n == 0) {
        oai_err_set(e, 400, "prompt", "invalid_value", "'prompt' is an empty array");
        return -1;
    }
    if (n > l->n_ctx) {
        oai_err_set(e, 400, "prompt", "context_length_exceeded",
                      "the prompt has %d tokens; this model's context is %d tokens", n, l->n_ctx);
        return -1;
    }
    j->prompt = malloc((size_t)n * sizeof *j->prompt);
    if (!j->prompt) {
        oai_err_set(e, 500, NULL, NULL, "out of memory");
        return -1;
    }
    int i = 0;
    for (cJSON *v = p->child; v; v = v->next, i++) {
        if (cJSON_IsString(v)) {
            oai_err_set(e, 400, "prompt", "invalid_value",
                          "'prompt' holds %d strings; one prompt per request is supported", n);
            return -1;
        }
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble >= l->n_vocab) {
            oai_err_set(e, 400, "prompt", "invalid_value",
                          "'prompt'[%d] must be a token id in [0, %d)", i, l->n_vocab);
            return -1;
        }
        j->prompt[i] = (int32_t)v->valuedouble;
    }
    j->n_prompt = n;
    return oai__echo_text(l, NULL, 0, j, e);
}

/* content: a string, or an array of {"type": "text", "text": ...} parts joined by "\n";
 * returns a malloc'd copy */
static char *oai__content(const cJSON *m, int i, int is_assistant, oai_err *e) {
    cJSON *c = oai__get(m, "content");
    if (!c) {
        if (is_assistant) return strdup("");
        oai_err_set(e, 400, "messages", "missing_required_parameter",
                      "messages[%d].content is required", i);
        return NULL;
    }
    if (cJSON_IsString(c)) return strdup(c->valuestring);
    if (!cJSON_IsArray(c)) {
        oai_err_set(e, 400, "messages", "invalid_type",
                      "messages[%d].content must be a string or an array of text parts, got %s", i,
                      oai__type_name(c));
        return NULL;
    }
    size_t total = 1;
    int k = 0;
    for (cJSON *p = c->child; p; p = p->next, k++) {
        cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text") ||
            !cJSON_IsString(tx)) {
            oai_err_set(e, 400, "messages", "invalid_value",
                          "messages[%d].content[%d]: only {\"type\": \"text\", \"text\": ...} parts "
                          "are supported", i, k);
            return NULL;
        }
        total += strlen(tx->valuestring) + 1;
    }
    char *s = malloc(total), *o = s;
    if (!s) {
        oai_err_set(e, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    *o = 0;
    for (cJSON *p = c->child; p; p = p->next) {
        const char *tx = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        if (o != s) *o++ = '\n';
        size_t l = strlen(tx);
        memcpy(o, tx, l + 1);
        o += l;
    }
    return s;
}

static int oai__messages(const oai_limits *l, const cJSON *root, oai_job *j, oai_err *e) {
    cJSON *ms = oai__get(root, "messages");
    if (!ms) {
        oai_err_set(e, 400, "messages", "missing_required_parameter", "'messages' is required");
        return -1;
    }
    if (!cJSON_IsArray(ms)) {
        oai_err_set(e, 400, "messages", "invalid_type", "'messages' must be an array, got %s",
                      oai__type_name(ms));
        return -1;
    }
    int n = cJSON_GetArraySize(ms);
    if (n == 0) {
        oai_err_set(e, 400, "messages", "invalid_value", "'messages' must not be empty");
        return -1;
    }
    chat_msg *msgs = calloc((size_t)n, sizeof *msgs);
    if (!msgs) {
        oai_err_set(e, 500, NULL, NULL, "out of memory");
        return -1;
    }
    int rc = -1, i = 0;
    for (cJSON *m = ms->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m)) {
            oai_err_set(e, 400, "messages", "invalid_type", "messages[%d] must be an object, got %s",
                          i, oai__type_name(m));
            goto out;
        }
        cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            oai_err_set(e, 400, "messages", "invalid_value", "messages[%d].role must be a string", i);
            goto out;
        }
        if (chat_role_parse(role->valuestring, &msgs[i].role)) {
            oai_err_set(e, 400, "messages", "invalid_value",
                          "messages[%d].role '%.64s' is not one of system, developer, user, assistant",
                          i, role->valuestring);
            goto out;
        }
        if (!(msgs[i].content = oai__content(m, i, msgs[i].role == CHAT_ASSISTANT, e))) goto out;
    }
    char err[256];
    char *text = chat_render(l->chat, msgs, n, err, sizeof err);
    if (!text) {
        oai_err_set(e, 400, "messages", "invalid_value", "%s", err);
        goto out;
    }
    rc = oai__tokenize(l, text, strlen(text), j, "messages", e);
    free(text);
out:
    for (int k = 0; k < n; k++) free((char *)msgs[k].content);
    free(msgs);
    return rc;
}

/* ---- the other fields --------------------------------------------------------------------- */

static int oai__stop_strings(const cJSON *root, oai_job *j, oai_err *e) {
    cJSON *s = oai__get(root, "stop");
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        if (!*s->valuestring) {
            oai_err_set(e, 400, "stop", "invalid_value", "'stop' must not be an empty string");
            return -1;
        }
        j->stops[0] = s->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) > SCHED_MAX_STOPS) {
        oai_err_set(e, 400, "stop", cJSON_IsArray(s) ? "invalid_value" : "invalid_type",
                      "'stop' must be a string or an array of at most %d strings, got %s",
                      SCHED_MAX_STOPS, cJSON_IsArray(s) ? "a longer array" : oai__type_name(s));
        return -1;
    }
    int i = 0;
    for (cJSON *v = s->child; v; v = v->next) {
        if (!cJSON_IsString(v) || !*v->valuestring) {
            oai_err_set(e, 400, "stop", "invalid_value", "'stop'[%d] must be a non-empty string", i);
            return -1;
        }
        j->stops[i++] = v->valuestring;
    }
    return 0;
}

static int oai__bias_cmp(const void *a, const void *b) {
    const sched_bias *x = a, *y = b;
    return (x->token > y->token) - (x->token < y->token);
}

/* logit_bias: {"token id": bias in [-100, 100]}; keys are decimal strings, as JSON has it */
static int oai__logit_bias(const oai_limits *l, const cJSON *root, oai_job *j, oai_err *e) {
    cJSON *b = oai__get(root, "logit_bias");
    if (!b) return 0;
    if (!cJSON_IsObject(b)) {
        oai_err_set(e, 400, "logit_bias", "invalid_type",
                    "'logit_bias' must be an object mapping token ids to biases, got %s",
                    oai__type_name(b));
        return -1;
    }
    int n = cJSON_GetArraySize(b);
    if (n == 0) return 0;
    if (!(j->bias = malloc((size_t)n * sizeof *j->bias))) {
        oai_err_set(e, 500, NULL, NULL, "out of memory");
        return -1;
    }
    int k = 0;
    for (const cJSON *v = b->child; v; v = v->next) {
        const char *key = v->string ? v->string : "";
        size_t kl = strlen(key);
        long long id = 0;
        int ok = kl >= 1 && kl <= 10;
        for (size_t i = 0; ok && i < kl; i++) {
            ok = key[i] >= '0' && key[i] <= '9';
            id = id * 10 + (key[i] - '0');
        }
        if (!ok || id >= l->n_vocab) {
            oai_err_set(e, 400, "logit_bias", "invalid_value",
                        "logit_bias key '%.32s' must be a token id in [0, %d) written in decimal",
                        key, l->n_vocab);
            return -1;
        }
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < -100 ||
            v->valuedouble > 100) {
            oai_err_set(e, 400, "logit_bias", "invalid_value",
                        "logit_bias['%s'] must be a number in [-100, 100], got %s", key,
                        cJSON_IsNumber(v) ? "a number out of range" : oai__type_name(v));
            return -1;
        }
        j->bias[k++] = (sched_bias){ .token = (int32_t)id, .bias = (float)v->valuedouble };
    }
    qsort(j->bias, (size_t)k, sizeof *j->bias, oai__bias_cmp);
    for (int i = 1; i < k; i++)
        if (j->bias[i].token == j->bias[i - 1].token) {
            oai_err_set(e, 400, "logit_bias", "invalid_value", "logit_bias names token %d twice",
                        (int)j->bias[i].token);
            return -1;
        }
    j->n_bias = k;
    return 0;
}

/* completions: logprobs k (false: none); chat: logprobs true, top_logprobs k */
static int oai__logprobs(const cJSON *root, int chat, oai_job *j, oai_err *e) {
    cJSON *v = oai__get(root, "logprobs");
    long long k;
    int r;
    if (!chat) {
        if (!v || cJSON_IsFalse(v)) return 0;
        if (!cJSON_IsNumber(v)) {
            oai_err_set(e, 400, "logprobs", "invalid_type",
                        "'logprobs' must be an integer in [0, %d] on /v1/completions, got %s",
                        SCHED_MAX_LOGPROBS, oai__type_name(v));
            return -1;
        }
        if (oai__int(root, "logprobs", 0, SCHED_MAX_LOGPROBS, &k, e) < 0) return -1;
        j->logprobs = (int)k;
        return 0;
    }
    int on = 0;
    if (oai__bool(root, "logprobs", &on, e) < 0) return -1;
    if ((r = oai__int(root, "top_logprobs", 0, SCHED_MAX_LOGPROBS, &k, e)) < 0) return -1;
    if (r && !on) {
        oai_err_set(e, 400, "top_logprobs", "invalid_value",
                    "'top_logprobs' needs 'logprobs': true");
        return -1;
    }
    if (on) j->logprobs = r ? (int)k : 0;
    return 0;
}

/* Parses and checks a completion request; on success j holds the prompt tokens and options. */
int oai_parse(const oai_limits *l, const char *body, size_t len, int chat, oai_job *j,
              oai_err *e) {
    memset(j, 0, sizeof *j);
    j->chat = chat;
    j->n = 1;
    j->logprobs = -1;
    const char *end = NULL;
    j->json = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!j->json) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        oai_err_set(e, 400, NULL, "invalid_json", "the request body is not valid JSON (error near byte %zu of %zu)",
                      at, len);
        return -1;
    }
    while (end && (size_t)(end - body) < len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (end && (size_t)(end - body) < len) {
        oai_err_set(e, 400, NULL, "invalid_json", "trailing bytes after the JSON value at byte %zu",
                      (size_t)(end - body));
        return -1;
    }
    const cJSON *root = j->json;
    if (!cJSON_IsObject(root)) {
        oai_err_set(e, 400, NULL, "invalid_json", "the request body must be a JSON object, got %s",
                      oai__type_name(root));
        return -1;
    }
    if (oai__check_nul(body, len, e)) return -1;
    cJSON *model = oai__get(root, "model");
    if (model && !cJSON_IsString(model)) {
        oai_err_set(e, 400, "model", "invalid_type", "'model' must be a string, got %s",
                      oai__type_name(model));
        return -1;
    }
    if (model && strcmp(model->valuestring, l->model_name)) {
        oai_err_set(e, 404, "model", "model_not_found",
                      "the model '%.200s' does not exist; this server serves '%.200s'",
                      model->valuestring, l->model_name);
        return -1;
    }
    if (oai__unsupported(root, chat, e)) return -1;
    if (oai__bool(root, "stream", &j->stream, e) < 0) return -1;
    cJSON *so = oai__get(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) {
            oai_err_set(e, 400, "stream_options", "invalid_type",
                          "'stream_options' must be an object, got %s", oai__type_name(so));
            return -1;
        }
        if (oai__bool(so, "include_usage", &j->include_usage, e) < 0) return -1;
    }
    if (oai__bool(root, "ignore_eos", &j->ignore_eos, e) < 0) return -1;
    if (!chat && oai__bool(root, "echo", &j->echo, e) < 0) return -1;
    long long ll;
    int r;
    if ((r = oai__int(root, "n", 1, OAI_MAX_N, &ll, e)) < 0) return -1;
    if (r) j->n = (int)ll;
    if (oai__logprobs(root, chat, j, e)) return -1;
    if (oai__logit_bias(l, root, j, e)) return -1;

    /* sampling: OpenAI's defaults (temperature 1, top_p 1), extensions off unless given */
    sample_params sp = sample_defaults();
    sp.temp = 1.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.rep_penalty = 1.0f;
    sp.presence_penalty = 0.0f;
    sp.frequency_penalty = 0.0f;
    double d;
    if ((r = oai__num(root, "temperature", 0, 2, &d, e)) < 0) return -1;
    if (r) sp.temp = (float)d;
    if ((r = oai__num(root, "top_p", 0, 1, &d, e)) < 0) return -1;
    if (r) sp.top_p = d > 0 ? (float)d : 1.0f;
    if ((r = oai__int(root, "top_k", -1, l->n_vocab, &ll, e)) < 0) return -1;
    if (r) sp.top_k = ll > 0 ? (int)ll : 0;
    if ((r = oai__num(root, "min_p", 0, 1, &d, e)) < 0) return -1;
    if (r) sp.min_p = (float)d;
    if ((r = oai__num(root, "repetition_penalty", 0.01, 100, &d, e)) < 0) return -1;
    if (r) sp.rep_penalty = (float)d;
    if ((r = oai__num(root, "presence_penalty", -2, 2, &d, e)) < 0) return -1;
    if (r) sp.presence_penalty = (float)d;
    if ((r = oai__num(root, "frequency_penalty", -2, 2, &d, e)) < 0) return -1;
    if (r) sp.frequency_penalty = (float)d;
    if ((r = oai__int(root, "seed", -9.2e18, 9.2e18, &ll, e)) < 0) return -1;
    if (r) {
        sp.seed = (uint64_t)ll;
        j->seed_given = 1;
    }
    j->sp = sp;
    if (oai__stop_strings(root, j, e)) return -1;

    long long max_tokens = 0;
    const char *mt_key = oai__get(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((r = oai__int(root, mt_key, j->echo ? 0 : 1, l->n_ctx, &max_tokens, e)) < 0) return -1;

    if (chat ? oai__messages(l, root, j, e) : oai__prompt(l, root, j, e)) return -1;
    const char *what = chat ? "messages" : "prompt";
    if (j->n_prompt < 1) {
        oai_err_set(e, 400, what, "invalid_value", "the %s is empty (no tokens)", what);
        return -1;
    }
    if (j->n_prompt >= l->n_ctx) {
        oai_err_set(e, 400, what, "context_length_exceeded",
                      "this model's maximum context length is %d tokens, but the %s has %d tokens",
                      l->n_ctx, what, j->n_prompt);
        return -1;
    }
    int room = l->n_ctx - j->n_prompt;
    if (!r) max_tokens = chat ? room : (room < 16 ? room : 16);
    if (max_tokens > room) {
        oai_err_set(e, 400, mt_key, "context_length_exceeded",
                      "this model's maximum context length is %d tokens; you requested %lld tokens "
                      "(%d in the %s, %lld for the completion)",
                      l->n_ctx, j->n_prompt + max_tokens, j->n_prompt, what, max_tokens);
        return -1;
    }
    j->max_tokens = max_tokens;
    return oai__known(root, chat, e);
}

void oai_job_free(oai_job *j) {
    cJSON_Delete(j->json);
    free(j->prompt);
    free(j->bias);
    free(j->echo_text);
    memset(j, 0, sizeof *j);
}
