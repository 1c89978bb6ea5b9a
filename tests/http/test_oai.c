/* tests/http/test_oai.c — the OpenAI request parser (launch/oai_parse.c) with no sockets and no
 * scheduler: every field's accepted and refused forms against the status, param and code the
 * OpenAI API documents, NUL characters (raw and \u0000) in every kind of string, unknown and
 * unimplemented fields; then the logprobs encoders (oai_encode.c) against a log-softmax
 * computed here. The tokenizer is stories260K's from ../shared (or $SAMPAN_SHARED); exit 77
 * when it is absent. Prints one line per failure and "N passed, N failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "oai.h"
#include "tok.h"

static int n_pass, n_fail;
static oai_limits lim;

static void check(int ok, const char *what) {
    if (ok) n_pass++;
    else {
        n_fail++;
        printf("FAIL: %s\n", what);
    }
}

/* body of len bytes (len 0: strlen) must be refused with status, param ("" for null), code,
 * and a message containing msg (NULL: any) */
static void refuse(int chat, const char *body, size_t len, int status, const char *param,
                   const char *code, const char *msg, const char *what) {
    oai_job j;
    oai_err e;
    memset(&e, 0, sizeof e);
    int rc = oai_parse(&lim, body, len ? len : strlen(body), chat, &j, &e);
    int ok = rc == -1 && e.status == status && !strcmp(e.param, param) &&
             (code ? e.code && !strcmp(e.code, code) : !e.code) && e.msg[0] &&
             (!msg || strstr(e.msg, msg));
    check(ok, what);
    if (!ok)
        printf("  rc %d status %d param '%s' code %s msg '%s'\n", rc, e.status, e.param,
               e.code ? e.code : "(null)", e.msg);
    oai_job_free(&j);
}

/* body must parse; j is left for the caller to inspect and free */
static int accept(int chat, const char *body, size_t len, oai_job *j, const char *what) {
    oai_err e;
    memset(&e, 0, sizeof e);
    int rc = oai_parse(&lim, body, len ? len : strlen(body), chat, j, &e);
    check(rc == 0, what);
    if (rc) printf("  refused: %d '%s' %s\n", e.status, e.param, e.msg);
    return rc == 0;
}

static void accept_only(int chat, const char *body, const char *what) {
    oai_job j;
    accept(chat, body, 0, &j, what);
    oai_job_free(&j);
}

static void test_nul(void) {
    /* raw 0 bytes inside JSON strings, and the escape \u0000 */
    static const char raw_prompt[] = "{\"prompt\": \"Once upon\0 a time\"}";
    refuse(0, raw_prompt, sizeof raw_prompt - 1, 400, "prompt", "invalid_value",
           "prompt contains a NUL character", "NUL: raw byte in prompt");
    refuse(0, "{\"prompt\": \"Once upon\\u0000 a time\"}", 0, 400, "prompt", "invalid_value",
           "prompt contains a NUL character", "NUL: \\u0000 in prompt");
    refuse(0, "{\"prompt\": [\"Once upon\\u0000 a time\"]}", 0, 400, "prompt", "invalid_value",
           "prompt[0] contains", "NUL: in a one-string prompt array");
    static const char raw_chat[] = "{\"messages\": [{\"role\": \"system\", \"content\": \"hi\"}, "
                                   "{\"role\": \"user\", \"content\": \"a\0b\"}]}";
    refuse(1, raw_chat, sizeof raw_chat - 1, 400, "messages", "invalid_value",
           "messages[1].content contains a NUL", "NUL: raw byte in messages[1].content");
    refuse(1, "{\"messages\": [{\"role\": \"system\", \"content\": \"hi\"}, {\"role\": \"user\", "
              "\"content\": \"a\\u0000b\"}]}", 0, 400, "messages", "invalid_value",
           "messages[1].content contains a NUL", "NUL: \\u0000 in messages[1].content");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
              "\"ok\"}, {\"type\": \"text\", \"text\": \"x\\u0000\"}]}]}", 0, 400, "messages",
           "invalid_value", "messages[0].content[1].text", "NUL: in a content part");
    refuse(1, "{\"messages\": [{\"role\": \"us\\u0000er\", \"content\": \"x\"}]}", 0, 400,
           "messages", "invalid_value", "messages[0].role", "NUL: in a role");
    refuse(0, "{\"prompt\": \"x\", \"stop\": [\"a\", \"b\\u0000\"]}", 0, 400, "stop",
           "invalid_value", "stop[1] contains", "NUL: in stop[1]");
    refuse(0, "{\"prompt\": \"x\", \"stop\": \"\\u0000\"}", 0, 400, "stop", "invalid_value",
           "stop contains", "NUL: a stop string that is only NUL");
    refuse(0, "{\"prompt\": \"x\", \"user\": \"u\\u0000\"}", 0, 400, "user", "invalid_value",
           "user contains", "NUL: in an ignored field (user)");
    refuse(0, "{\"prompt\": \"x\", \"metadata\": {\"k\": [1, {\"z\": \"\\u0000\"}]}}", 0, 400,
           "metadata", "invalid_value", "metadata.k[1].z", "NUL: deep in metadata, path named");
    refuse(0, "{\"pro\\u0000mpt\": \"x\"}", 0, 400, "", "invalid_value", "the key",
           "NUL: in a top-level key (param null)");
    refuse(0, "{\"prompt\": \"x\", \"logit_bias\": {\"1\\u0000\": 5}}", 0, 400, "logit_bias",
           "invalid_value", "the key logit_bias.1", "NUL: in a logit_bias key");
    refuse(0, "{\"prompt\": \"x\\u0000\", \"bogus\": 1}", 0, 400, "prompt", "invalid_value", NULL,
           "NUL is reported before an unknown field");
    /* not NUL: an escaped backslash followed by "u0000" */
    oai_job j;
    if (accept(0, "{\"prompt\": \"a\\\\u0000b\", \"echo\": true, \"max_tokens\": 1}", 0, &j,
               "\\\\u0000 (a backslash, then text) is accepted"))
        check(j.echo_text && !strcmp(j.echo_text, "a\\u0000b"), "\\\\u0000: the text is whole");
    oai_job_free(&j);
    /* a raw 0 byte outside any string is a JSON error */
    static const char raw_out[] = "{\"prompt\": \"x\"\0}";
    refuse(0, raw_out, sizeof raw_out - 1, 400, "", "invalid_json", NULL, "raw 0 byte outside strings: invalid_json");
    /* the whole prompt reaches the tokenizer: its token count is the tokenizer's */
    const char *text = "Once upon a time, there was a little girl named Lily.";
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\": \"%s\"}", text);
    int32_t ids[64];
    int64_t n = tok_encode(lim.tok, text, strlen(text), 1, 1, ids, 64);
    if (accept(0, body, 0, &j, "a plain prompt"))
        check(j.n_prompt == n && !memcmp(j.prompt, ids, (size_t)n * sizeof *ids),
              "a plain prompt: the tokenizer's ids");
    oai_job_free(&j);
}

static void test_fields(void) {
    oai_job j;
    /* defaults */
    if (accept(0, "{\"prompt\": \"Once upon a time\"}", 0, &j, "defaults")) {
        check(j.n == 1 && j.logprobs == -1 && !j.echo && j.max_tokens == 16 && !j.n_bias &&
              j.sp.presence_penalty == 0 && j.sp.frequency_penalty == 0 && j.sp.temp == 1.0f,
              "defaults: n 1, no logprobs, no echo, max_tokens 16, no bias, no penalties");
    }
    oai_job_free(&j);

    /* unknown fields and the extensions that exist */
    refuse(0, "{\"prompt\": \"x\", \"bogus\": 1}", 0, 400, "bogus", "unknown_parameter",
           "unknown parameter 'bogus'", "unknown field: 400 naming it");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"frobnicate\": true}", 0,
           400, "frobnicate", "unknown_parameter", NULL, "chat: unknown field");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"echo\": true}", 0, 400,
           "echo", "unknown_parameter", NULL, "echo on chat is refused");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"prompt\": \"x\"}", 0, 400,
           "prompt", "unknown_parameter", NULL, "prompt on chat is refused");
    refuse(1, "{\"prompt\": \"hi\"}", 0, 400, "messages", "missing_required_parameter", NULL,
           "chat without messages: messages is missing (checked before unknown fields)");
    refuse(0, "{\"prompt\": \"x\", \"top_logprobs\": 2}", 0, 400, "top_logprobs",
           "unknown_parameter", NULL, "top_logprobs on completions is unknown");
    refuse(0, "{\"prompt\": \"a\", \"prompt\": \"b\"}", 0, 400, "prompt", "invalid_value", "twice",
           "a field given twice");
    accept_only(0, "{\"prompt\": \"x\", \"top_k\": 40, \"min_p\": 0.05, \"repetition_penalty\": 1.1, "
                   "\"ignore_eos\": true, \"max_completion_tokens\": 4, \"seed\": 3, "
                   "\"stream\": true, \"stream_options\": {\"include_usage\": true}}",
                "extensions and stream options are accepted");
    accept_only(1, "{\"model\": \"stories260K\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                   "\"max_completion_tokens\": 4, \"temperature\": 0.5, \"top_p\": 0.9}",
                "chat: the usual fields");

    /* ignored, but type-checked */
    accept_only(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"user\": \"u1\", "
                   "\"metadata\": {\"a\": \"b\"}, \"store\": false, \"service_tier\": \"auto\"}",
                "user, metadata, store, service_tier are accepted (ignored)");
    accept_only(0, "{\"prompt\": \"x\", \"user\": \"u1\", \"metadata\": {}, \"store\": true}",
                "completions: user, metadata, store accepted");
    refuse(0, "{\"prompt\": \"x\", \"user\": 5}", 0, 400, "user", "invalid_type", NULL, "user must be a string");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"metadata\": [1]}", 0, 400,
           "metadata", "invalid_type", NULL, "metadata must be an object");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"store\": \"yes\"}", 0, 400,
           "store", "invalid_type", NULL, "store must be a boolean");

    /* unimplemented: refused unless neutral */
    static const struct { const char *field, *json; } chat_refused[] = {
        { "tools", "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]" },
        { "tool_choice", "\"auto\"" },
        { "functions", "[{\"name\": \"f\"}]" },
        { "function_call", "\"auto\"" },
        { "response_format", "{\"type\": \"json_object\"}" },
        { "parallel_tool_calls", "false" },
        { "audio", "{\"voice\": \"alloy\", \"format\": \"wav\"}" },
        { "modalities", "[\"text\", \"audio\"]" },
        { "prediction", "{\"type\": \"content\", \"content\": \"x\"}" },
        { "reasoning_effort", "\"low\"" },
    };
    char body[512], what[160];
    for (size_t i = 0; i < sizeof chat_refused / sizeof *chat_refused; i++) {
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"%s\": %s}",
                 chat_refused[i].field, chat_refused[i].json);
        snprintf(what, sizeof what, "chat: %s %s is refused", chat_refused[i].field, chat_refused[i].json);
        refuse(1, body, 0, 400, chat_refused[i].field, "unsupported_parameter", NULL, what);
    }
    static const struct { const char *field, *json; } chat_neutral[] = {
        { "tools", "[]" },          { "tool_choice", "\"none\"" },
        { "response_format", "{\"type\": \"text\"}" },  { "modalities", "[\"text\"]" },
        { "tools", "null" },
    };
    for (size_t i = 0; i < sizeof chat_neutral / sizeof *chat_neutral; i++) {
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"%s\": %s}",
                 chat_neutral[i].field, chat_neutral[i].json);
        snprintf(what, sizeof what, "chat: neutral %s %s is accepted", chat_neutral[i].field, chat_neutral[i].json);
        accept_only(1, body, what);
    }
    refuse(0, "{\"prompt\": \"x\", \"suffix\": \"end\"}", 0, 400, "suffix", "unsupported_parameter",
           NULL, "suffix is refused");
    refuse(0, "{\"prompt\": \"x\", \"best_of\": 2}", 0, 400, "best_of", "unsupported_parameter",
           NULL, "best_of 2 is refused");
    accept_only(0, "{\"prompt\": \"x\", \"suffix\": \"\", \"best_of\": 1}", "empty suffix, best_of 1");
    refuse(0, "{\"prompt\": \"x\", \"tools\": [{\"type\": \"function\"}]}", 0, 400, "tools",
           "unknown_parameter", NULL, "tools on completions is unknown");

    /* n */
    if (accept(0, "{\"prompt\": \"x\", \"n\": 16}", 0, &j, "n 16")) check(j.n == 16, "n 16 is kept");
    oai_job_free(&j);
    if (accept(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 3}", 0, &j, "chat n 3"))
        check(j.n == 3, "chat n 3 is kept");
    oai_job_free(&j);
    refuse(0, "{\"prompt\": \"x\", \"n\": 0}", 0, 400, "n", "invalid_value", NULL, "n 0");
    refuse(0, "{\"prompt\": \"x\", \"n\": 17}", 0, 400, "n", "invalid_value", "[1, 16]", "n 17");
    refuse(0, "{\"prompt\": \"x\", \"n\": 2.5}", 0, 400, "n", "invalid_type", NULL, "n 2.5");
    refuse(0, "{\"prompt\": \"x\", \"n\": \"2\"}", 0, 400, "n", "invalid_type", NULL, "n \"2\"");

    /* logit_bias */
    if (accept(0, "{\"prompt\": \"x\", \"logit_bias\": {\"300\": -100, \"5\": 10.5, \"0\": 100}}", 0,
               &j, "logit_bias with three entries"))
        check(j.n_bias == 3 && j.bias[0].token == 0 && j.bias[0].bias == 100.0f &&
              j.bias[1].token == 5 && j.bias[1].bias == 10.5f && j.bias[2].token == 300 &&
              j.bias[2].bias == -100.0f, "logit_bias: ids and biases, sorted by id");
    oai_job_free(&j);
    if (accept(0, "{\"prompt\": \"x\", \"logit_bias\": {}}", 0, &j, "empty logit_bias"))
        check(j.n_bias == 0, "empty logit_bias: no entries");
    oai_job_free(&j);
    char big[64];
    snprintf(big, sizeof big, "\"%d\"", lim.n_vocab);
    static const char *const bad_keys[] = { "\"-1\"", "\"abc\"", "\"1.5\"", "\" 5\"", "\"\"",
                                            "\"12345678901\"", "\"+5\"", NULL };
    for (int i = 0; bad_keys[i]; i++) {
        snprintf(body, sizeof body, "{\"prompt\": \"x\", \"logit_bias\": {%s: 1}}", bad_keys[i]);
        snprintf(what, sizeof what, "logit_bias key %s is refused", bad_keys[i]);
        refuse(0, body, 0, 400, "logit_bias", "invalid_value", NULL, what);
    }
    snprintf(body, sizeof body, "{\"prompt\": \"x\", \"logit_bias\": {%s: 1}}", big);
    refuse(0, body, 0, 400, "logit_bias", "invalid_value", "token id", "logit_bias key n_vocab is refused");
    refuse(0, "{\"prompt\": \"x\", \"logit_bias\": {\"5\": 101}}", 0, 400, "logit_bias",
           "invalid_value", "[-100, 100]", "logit_bias value 101");
    refuse(0, "{\"prompt\": \"x\", \"logit_bias\": {\"5\": -100.5}}", 0, 400, "logit_bias",
           "invalid_value", NULL, "logit_bias value -100.5");
    refuse(0, "{\"prompt\": \"x\", \"logit_bias\": {\"5\": \"1\"}}", 0, 400, "logit_bias",
           "invalid_value", NULL, "logit_bias value a string");
    refuse(0, "{\"prompt\": \"x\", \"logit_bias\": {\"5\": 1, \"05\": 2}}", 0, 400, "logit_bias",
           "invalid_value", "twice", "logit_bias naming one token twice");
    refuse(0, "{\"prompt\": \"x\", \"logit_bias\": [5, 1]}", 0, 400, "logit_bias", "invalid_type",
           NULL, "logit_bias an array");

    /* logprobs: completions */
    static const struct { const char *v; int want; } cl[] = {
        { "0", 0 }, { "5", 5 }, { "20", 20 }, { "false", -1 }, { "null", -1 },
    };
    for (size_t i = 0; i < sizeof cl / sizeof *cl; i++) {
        snprintf(body, sizeof body, "{\"prompt\": \"x\", \"logprobs\": %s}", cl[i].v);
        snprintf(what, sizeof what, "completions logprobs %s", cl[i].v);
        if (accept(0, body, 0, &j, what)) check(j.logprobs == cl[i].want, what);
        oai_job_free(&j);
    }
    refuse(0, "{\"prompt\": \"x\", \"logprobs\": 21}", 0, 400, "logprobs", "invalid_value", NULL, "logprobs 21");
    refuse(0, "{\"prompt\": \"x\", \"logprobs\": -1}", 0, 400, "logprobs", "invalid_value", NULL, "logprobs -1");
    refuse(0, "{\"prompt\": \"x\", \"logprobs\": true}", 0, 400, "logprobs", "invalid_type", NULL,
           "completions logprobs true");
    refuse(0, "{\"prompt\": \"x\", \"logprobs\": 1.5}", 0, 400, "logprobs", "invalid_type", NULL, "logprobs 1.5");
    /* logprobs: chat */
    static const struct { const char *v; int want; } ch[] = {
        { "\"logprobs\": true", 0 }, { "\"logprobs\": true, \"top_logprobs\": 3", 3 },
        { "\"logprobs\": true, \"top_logprobs\": 20", 20 }, { "\"logprobs\": false", -1 },
        { "\"logprobs\": true, \"top_logprobs\": null", 0 },
    };
    for (size_t i = 0; i < sizeof ch / sizeof *ch; i++) {
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], %s}", ch[i].v);
        snprintf(what, sizeof what, "chat %s", ch[i].v);
        if (accept(1, body, 0, &j, what)) check(j.logprobs == ch[i].want, what);
        oai_job_free(&j);
    }
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}", 0,
           400, "top_logprobs", "invalid_value", "logprobs", "top_logprobs without logprobs");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": false, "
              "\"top_logprobs\": 2}", 0, 400, "top_logprobs", "invalid_value", NULL,
           "top_logprobs with logprobs false");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true, "
              "\"top_logprobs\": 21}", 0, 400, "top_logprobs", "invalid_value", NULL, "top_logprobs 21");
    refuse(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": 3}", 0, 400,
           "logprobs", "invalid_type", NULL, "chat logprobs a number");

    /* echo */
    if (accept(0, "{\"prompt\": \"Once upon a time\", \"echo\": true}", 0, &j, "echo"))
        check(j.echo && j.echo_text && !strcmp(j.echo_text, "Once upon a time") && j.echo_len == 16,
              "echo: the prompt string as sent");
    oai_job_free(&j);
    int32_t ids[16];
    int64_t n = tok_encode(lim.tok, "Once upon a time", 16, 1, 1, ids, 16);
    int o = snprintf(body, sizeof body, "{\"prompt\": [");
    for (int64_t i = 0; i < n; i++) o += snprintf(body + o, sizeof body - (size_t)o, "%s%d", i ? ", " : "", ids[i]);
    snprintf(body + o, sizeof body - (size_t)o, "], \"echo\": true, \"max_tokens\": 0, \"logprobs\": 2}");
    if (accept(0, body, 0, &j, "echo of a token-id prompt with max_tokens 0")) {
        char dec[64];
        tok_decode(lim.tok, ids, n, dec, sizeof dec);
        check(j.echo_text && !strcmp(j.echo_text, dec) && j.max_tokens == 0 && j.logprobs == 2,
              "echo of token ids: their decoded text; max_tokens 0 allowed");
    }
    oai_job_free(&j);
    refuse(0, "{\"prompt\": \"x\", \"max_tokens\": 0}", 0, 400, "max_tokens", "invalid_value", NULL,
           "max_tokens 0 without echo");
    refuse(0, "{\"prompt\": \"x\", \"echo\": 1}", 0, 400, "echo", "invalid_type", NULL, "echo a number");

    /* penalties */
    if (accept(0, "{\"prompt\": \"x\", \"presence_penalty\": 0.5, \"frequency_penalty\": -1.25}", 0,
               &j, "penalties"))
        check(j.sp.presence_penalty == 0.5f && j.sp.frequency_penalty == -1.25f, "penalties reach sample_params");
    oai_job_free(&j);
    refuse(0, "{\"prompt\": \"x\", \"presence_penalty\": 2.5}", 0, 400, "presence_penalty",
           "invalid_value", NULL, "presence_penalty 2.5");
    refuse(0, "{\"prompt\": \"x\", \"frequency_penalty\": \"high\"}", 0, 400, "frequency_penalty",
           "invalid_type", NULL, "frequency_penalty a string");

    /* seed and stop */
    if (accept(0, "{\"prompt\": \"x\", \"seed\": 42, \"stop\": [\"a\", \"b\", \"c\", \"d\"]}", 0, &j,
               "seed and four stop strings"))
        check(j.seed_given && j.sp.seed == 42 && j.stops[3] && !strcmp(j.stops[3], "d") && !j.stops[4],
              "seed and four stop strings kept");
    oai_job_free(&j);
    refuse(0, "{\"prompt\": \"x\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", 0, 400, "stop",
           "invalid_value", NULL, "five stop strings");
}

/* log-softmax in long double, as an independent reference */
static double ref_lp(const float *x, int n, int t) {
    long double mx = x[0], s = 0;
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) s += expl((long double)x[i] - mx);
    return (double)((long double)x[t] - mx - logl(s));
}

static void test_encode(void) {
    float row[10] = { 1.0f, 3.0f, -2.0f, 3.0f, 0.5f, 2.0f, -1e30f, 3.0f, 0.0f, 1.0f };
    float lp = 0;
    sched_top top[SCHED_MAX_LOGPROBS];
    int k = oai_row_logprobs(row, 10, 5, 4, &lp, top);
    check(k == 4 && top[0].token == 1 && top[1].token == 3 && top[2].token == 7 && top[3].token == 5,
          "row logprobs: the 4 best, ties to the lower id");
    check(fabs(lp - ref_lp(row, 10, 5)) < 1e-6 && fabs(top[0].logprob - ref_lp(row, 10, 1)) < 1e-6,
          "row logprobs: log-softmax within 1e-6");
    check(oai_row_logprobs(row, 10, 0, 20, &lp, top) == 10, "row logprobs: k capped at V");

    int32_t a = 1, b = 2;   /* <s> and </s> in stories260K */
    char pa[32], pb[32];
    int la = tok_piece(lim.tok, 300, pa, sizeof pa, 1), lb = tok_piece(lim.tok, 301, pb, sizeof pb, 1);
    sched_top t2[2] = { { 300, -0.5f }, { 301, -1.0f } };
    oai_lp e[2] = { { .token = a, .logprob = NAN, .text_offset = 0 },
                    { .token = 301, .logprob = -1.0f, .text_offset = 3, .n_top = 1, .top = t2 } };
    cJSON *o = oai_logprobs(0, lim.tok, e, 2);
    cJSON *toks = cJSON_GetObjectItem(o, "tokens"), *lps = cJSON_GetObjectItem(o, "token_logprobs");
    cJSON *tops = cJSON_GetObjectItem(o, "top_logprobs"), *offs = cJSON_GetObjectItem(o, "text_offset");
    check(cJSON_GetArraySize(toks) == 2 && cJSON_IsNull(cJSON_GetArrayItem(lps, 0)) &&
          cJSON_IsNull(cJSON_GetArrayItem(tops, 0)) &&
          cJSON_GetArrayItem(lps, 1)->valuedouble == -1.0 &&
          cJSON_GetArrayItem(offs, 1)->valuedouble == 3, "completions logprobs: shape, null first");
    cJSON *d = cJSON_GetArrayItem(tops, 1);
    pa[la < 31 ? la : 31] = 0;
    pb[lb < 31 ? lb : 31] = 0;
    check(cJSON_GetArraySize(d) == 2 && cJSON_GetObjectItem(d, pa) && cJSON_GetObjectItem(d, pb),
          "completions top_logprobs: the best and the token itself");
    cJSON_Delete(o);
    e[0].logprob = -0.25f;
    e[1].n_top = 2;
    o = oai_logprobs(1, lim.tok, e, 2);
    cJSON *c = cJSON_GetObjectItem(o, "content");
    cJSON *c1 = cJSON_GetArrayItem(c, 1), *by = cJSON_GetObjectItem(c1, "bytes");
    int bytes_ok = cJSON_GetArraySize(by) == lb;
    for (int i = 0; i < lb && bytes_ok; i++) bytes_ok = cJSON_GetArrayItem(by, i)->valueint == (unsigned char)pb[i];
    check(cJSON_GetArraySize(c) == 2 && !strcmp(cJSON_GetObjectItem(c1, "token")->valuestring, pb) &&
          bytes_ok && cJSON_GetArraySize(cJSON_GetObjectItem(c1, "top_logprobs")) == 2,
          "chat logprobs: token, bytes, top_logprobs");
    char *s = tok_piece(lim.tok, b, pa, sizeof pa, 1) > 0 ? pa : NULL;
    check(s != NULL, "a control token renders its text");
    cJSON_Delete(o);
    check(oai_chars("a\xC3\xA9\xE2\x82\xAC", 6) == 3, "oai_chars counts code points");
    size_t tl = 0;
    char *tx = oai_text("a\0b\xC3", 4, &tl);
    check(tx && tl == 8 && !memcmp(tx, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD", 8),
          "oai_text: a 0 byte and an invalid byte become U+FFFD, nothing is cut");
    free(tx);
}

int main(void) {
    const char *shared = getenv("SAMPAN_SHARED");
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("skip: %s not found\n", path);
        return 77;
    }
    fclose(f);
    gguf_ctx *g = NULL;
    tok *t = NULL;
    if (gguf_open(path, &g, err, sizeof err) != GGUF_OK || tok_load(g, &t, err, sizeof err)) {
        printf("FAIL: loading %s: %s\n", path, err);
        gguf_close(g);
        return 1;
    }
    chat_tmpl ct = { .family = CHAT_PLAIN };
    lim = (oai_limits){ .model_name = "stories260K", .n_ctx = 256, .n_vocab = tok_n_vocab(t),
                        .tok = t, .chat = &ct };
    test_nul();
    test_fields();
    test_encode();
    tok_free(t);
    gguf_close(g);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
