/* tests/tok/test_prompts.c — the tokenizer of every model in $SAMPAN_SHARED/models against the
 * prompt tokenizations recorded in $SAMPAN_SHARED/reference/<model>/prompt-N.json (llama.cpp's
 * for the random-weight models, llama2.c's own tokenizer for stories260K).
 *
 * Per prompt: tok_encode(prompt, add_special from the file, parse_special=1) must equal
 * prompt_tokens; tok_add_bos must agree with whether prompt_tokens starts with tok_bos; and
 * tok_decode of the tokens after the BOS must give back the prompt. Prints one line per model and
 * "N passed, N failed"; exit 77 when the reference folder is absent.
 */
#include "gguf.h"
#include "tok.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

/* Checks one prompt file; returns 1 if it passes. */
static int check_prompt(const tok *t, const char *model, const char *path) {
    char *js = slurp(path);
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    free(js);
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *ja = cJSON_GetObjectItemCaseSensitive(j, "add_special");
    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(j, "prompt_tokens");
    if (!cJSON_IsString(jp) || !cJSON_IsArray(jt)) {
        printf("  %s: %s: missing prompt or prompt_tokens\n", model, path);
        cJSON_Delete(j);
        return 0;
    }
    const char *prompt = jp->valuestring;
    int add_special = ja ? cJSON_IsTrue(ja) : 1;
    int n_want = cJSON_GetArraySize(jt);
    int32_t want[512], got[512];
    for (int i = 0; i < n_want && i < 512; i++) want[i] = (int32_t)cJSON_GetArrayItem(jt, i)->valueint;
    int64_t n = tok_encode(t, prompt, strlen(prompt), add_special, 1, got, 512);
    int ok = n == n_want && memcmp(got, want, (size_t)n_want * sizeof(int32_t)) == 0;
    if (!ok) {
        printf("  %s: %s: tokens differ (want %d, got %lld)\n   want:", model, path, n_want,
               (long long)n);
        for (int i = 0; i < n_want && i < 512; i++) printf(" %d", want[i]);
        printf("\n   got: ");
        for (int64_t i = 0; i < n && i < 512; i++) printf(" %d", got[i]);
        printf("\n");
    }
    int has_bos = n_want > 0 && want[0] == tok_bos(t);
    if (add_special && has_bos != (tok_add_bos(t) != 0)) {
        printf("  %s: %s: tok_add_bos=%d but the reference %s a BOS\n", model, path,
               tok_add_bos(t), has_bos ? "starts with" : "has no");
        ok = 0;
    }
    char dec[4096];
    int skip = add_special && has_bos;
    int64_t dl = tok_decode(t, want + skip, n_want - skip, dec, sizeof(dec));
    if (dl != (int64_t)strlen(prompt) || memcmp(dec, prompt, strlen(prompt)) != 0) {
        printf("  %s: %s: decode gives '%s'\n", model, path, dec);
        ok = 0;
    }
    cJSON_Delete(j);
    return ok;
}

int main(void) {
    const char *shared = getenv("SAMPAN_SHARED");
    char ref[900], models[900], path[2000], err[256];
    snprintf(ref, sizeof(ref), "%s/reference", shared ? shared : "../shared");
    snprintf(models, sizeof(models), "%s/models", shared ? shared : "../shared");
    DIR *d = opendir(ref);
    if (!d) {
        printf("skip: %s not found\n", ref);
        return 77;
    }
    int pass = 0, fail = 0, n_models = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        snprintf(path, sizeof(path), "%s/%s.gguf", models, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;   /* not a model's reference folder (vocab/, dequant/) */
        fclose(f);
        n_models++;
        gguf_ctx *g = NULL;
        tok *t = NULL;
        if (gguf_open(path, &g, err, sizeof(err)) != GGUF_OK || tok_load(g, &t, err, sizeof(err))) {
            printf("%s: %s\n", e->d_name, err);
            fail++;
            gguf_close(g);
            continue;
        }
        int mp = 0, mt = 0;
        for (int k = 1; k <= 16; k++) {
            snprintf(path, sizeof(path), "%s/%s/prompt-%d.json", ref, e->d_name, k);
            if (!(f = fopen(path, "rb"))) continue;
            fclose(f);
            mt++;
            mp += check_prompt(t, e->d_name, path);
        }
        printf("%s (%s/%s): %d/%d\n", e->d_name, tok_kind_of(t) == TOK_SPM ? "spm" : "bpe",
               tok_pre_name(t), mp, mt);
        pass += mp;
        fail += mt - mp + (mt == 0);
        tok_free(t);
        gguf_close(g);
    }
    closedir(d);
    if (n_models == 0) fail++;
    printf("%d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
