/* tests/fuzz/fuzz_oai.c — libFuzzer harness for the OpenAI request parser (launch/oai_parse.c):
 * every input is a request body, parsed for /v1/completions and for /v1/chat/completions (the
 * chat template family chosen by the input's length), with stories260K's tokenizer from
 * $SAMPAN_SHARED (default: the shared folder beside the source tree). Asserts oai.h's
 * contract: 0 or -1; an error has a 4xx/5xx status, a type and a message, and encodes; a job
 * has 1 <= n_prompt < n_ctx, prompt + max_tokens within n_ctx, 1 <= n <= OAI_MAX_N, logprobs
 * in -1..SCHED_MAX_LOGPROBS, logit_bias ids in range and distinct, non-empty stop strings, and
 * an echo text with echo. The job's prompt then goes through the logprobs encoder. Leaks are
 * LeakSanitizer's to find. Without the tokenizer every input is skipped (a message says so).
 * Seeds: tests/fuzz/seeds/oai/ (one JSON body per file). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "oai.h"
#include "tok.h"

#ifndef FUZZ_SHARED_DIR
#define FUZZ_SHARED_DIR "../shared"
#endif

#define FUZZ_CHECK(c)                                                                        \
    do {                                                                                     \
        if (!(c)) {                                                                          \
            fprintf(stderr, "fuzz_oai: %s:%d: check failed: %s\n", __FILE__, __LINE__, #c);  \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

static gguf_ctx *fuzz_g;
static tok *fuzz_t;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *shared = getenv("SAMPAN_SHARED");
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : FUZZ_SHARED_DIR);
    if (gguf_open(path, &fuzz_g, err, sizeof err) != GGUF_OK || tok_load(fuzz_g, &fuzz_t, err, sizeof err)) {
        fprintf(stderr, "fuzz_oai: no tokenizer (%s: %s): every input is skipped\n", path, err);
        fuzz_t = NULL;
    }
    return 0;
}

static void fuzz_one(const char *body, size_t len, int chat, chat_family fam) {
    chat_tmpl ct = { .family = fam };
    if (fam == CHAT_CHATML) snprintf(ct.default_system, sizeof ct.default_system, "Be brief.");
    oai_limits lim = { .model_name = "stories260K", .n_ctx = 96, .n_vocab = tok_n_vocab(fuzz_t),
                       .tok = fuzz_t, .chat = &ct };
    oai_job j;
    oai_err e;
    memset(&e, 0, sizeof e);
    int rc = oai_parse(&lim, body, len, chat, &j, &e);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc) {
        FUZZ_CHECK(e.status >= 400 && e.status < 600);
        FUZZ_CHECK(e.type && e.msg[0]);
        cJSON *o = oai_error_json(&e);
        char *s = cJSON_PrintUnformatted(o);
        FUZZ_CHECK(s);
        free(s);
        cJSON_Delete(o);
        oai_job_free(&j);
        return;
    }
    FUZZ_CHECK(j.n_prompt >= 1 && j.n_prompt < lim.n_ctx && j.prompt);
    FUZZ_CHECK(j.max_tokens >= (j.echo ? 0 : 1) && j.n_prompt + j.max_tokens <= lim.n_ctx);
    FUZZ_CHECK(j.n >= 1 && j.n <= OAI_MAX_N);
    FUZZ_CHECK(j.logprobs >= -1 && j.logprobs <= SCHED_MAX_LOGPROBS);
    FUZZ_CHECK(j.chat == chat && (!chat || !j.echo));
    FUZZ_CHECK(!j.echo || j.echo_text);
    for (int i = 0; i < j.n_prompt; i++) FUZZ_CHECK(j.prompt[i] >= 0 && j.prompt[i] < lim.n_vocab);
    for (int i = 0; i < j.n_bias; i++) {
        FUZZ_CHECK(j.bias[i].token >= 0 && j.bias[i].token < lim.n_vocab);
        FUZZ_CHECK(j.bias[i].bias >= -100 && j.bias[i].bias <= 100);
        FUZZ_CHECK(i == 0 || j.bias[i].token > j.bias[i - 1].token);
    }
    for (int i = 0; i < SCHED_MAX_STOPS && j.stops[i]; i++) FUZZ_CHECK(j.stops[i][0]);
    FUZZ_CHECK(!j.stops[SCHED_MAX_STOPS]);
    FUZZ_CHECK(j.sp.presence_penalty >= -2 && j.sp.presence_penalty <= 2);
    FUZZ_CHECK(j.sp.frequency_penalty >= -2 && j.sp.frequency_penalty <= 2);

    /* the prompt through the logprobs encoders, as an echo with logprobs would send it */
    int n = j.n_prompt < 8 ? j.n_prompt : 8;
    oai_lp e8[8];
    long off[96];
    sched_top top[2] = { { j.prompt[0], -0.5f }, { j.prompt[n - 1], -INFINITY } };
    FUZZ_CHECK(oai_prompt_offsets(fuzz_t, j.prompt, j.n_prompt, off) == 0);
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(off[i] >= 0 && (i == 0 || off[i] >= off[i - 1]));
        e8[i] = (oai_lp){ .token = j.prompt[i], .logprob = i ? -1.0f : NAN, .text_offset = off[i],
                          .n_top = 2, .top = top };
    }
    cJSON *o = oai_logprobs(chat, fuzz_t, e8, n);
    FUZZ_CHECK(o);
    char *s = cJSON_PrintUnformatted(o);
    FUZZ_CHECK(s);
    free(s);
    cJSON_Delete(o);
    oai_job_free(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_t) return 0;
    chat_family fam = (chat_family)(size % 5);
    fuzz_one((const char *)data, size, 0, fam);
    fuzz_one((const char *)data, size, 1, fam);
    return 0;
}
