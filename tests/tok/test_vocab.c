/* tests/tok/test_vocab.c — the tokenizer against llama.cpp's public tokenizer test vectors.
 *
 * For each of the nine vocabularies in $SAMPAN_SHARED/reference/vocab: load NAME.gguf, split
 * NAME.gguf.inp on "\n__ggml_vocab_test__\n", and for every text check
 *   - tok_encode(add_special=0, parse_special=0) equals the ids on the matching line of
 *     NAME.gguf.out (produced by llama.cpp), and
 *   - tok_decode of those ids gives back the text byte for byte.
 * A case passes when both hold. Prints "<file>: passed/total" per vocabulary (with the load time)
 * and finally "N passed, N failed". Exit 77 when the reference folder is absent.
 */
#include "gguf.h"
#include "tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const vocabs[] = {
    "llama-spm", "phi-3", "gpt-2", "falcon", "mpt", "starcoder", "refact", "deepseek-coder",
    "deepseek-llm",
};

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; *len = (size_t)n; }
    return buf;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void print_ids(const char *what, const int32_t *ids, int64_t n) {
    fprintf(stderr, "    %s (%lld):", what, (long long)n);
    for (int64_t i = 0; i < n && i < 64; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 64 ? " ..." : "");
}

/* Runs every case of one vocabulary; adds to *pass / *fail. */
static void run_vocab(const char *dir, const char *name, int *pass, int *fail) {
    char path[1200], err[256];
    size_t inp_len = 0, out_len = 0;
    snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf", dir, name);
    gguf_ctx *g = NULL;
    tok *t = NULL;
    if (gguf_open(path, &g, err, sizeof(err)) != GGUF_OK) {
        printf("%s: cannot open: %s\n", name, err);
        (*fail)++;
        return;
    }
    double t0 = now_ms();
    if (tok_load(g, &t, err, sizeof(err)) != 0) {
        printf("%s: tok_load failed: %s\n", name, err);
        (*fail)++;
        gguf_close(g);
        return;
    }
    double load_ms = now_ms() - t0;
    snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf.inp", dir, name);
    char *inp = slurp(path, &inp_len);
    snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf.out", dir, name);
    char *out = slurp(path, &out_len);
    if (!inp || !out) {
        printf("%s: cannot read %s\n", name, path);
        (*fail)++;
        goto done;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int n_pass = 0, n_total = 0;
    double enc_ms = 0;
    char *text = inp, *line = out;
    int32_t *ids = malloc(65536 * sizeof(int32_t)), *want = malloc(65536 * sizeof(int32_t));
    char *dec = malloc(1 << 20);
    for (;;) {
        char *end = strstr(text, sep);
        if (!end) break;
        size_t tlen = (size_t)(end - text);
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        int64_t nw = 0;
        for (char *p = line, *q; nw < 65536; p = q) {
            long v = strtol(p, &q, 10);
            if (q == p) break;
            want[nw++] = (int32_t)v;
        }
        double e0 = now_ms();
        int64_t n = tok_encode(t, text, tlen, 0, 0, ids, 65536);
        enc_ms += now_ms() - e0;
        int ok_enc = n == nw && memcmp(ids, want, (size_t)nw * sizeof(int32_t)) == 0;
        int64_t dl = tok_decode(t, want, nw, dec, 1 << 20);
        int ok_dec = dl == (int64_t)tlen && memcmp(dec, text, tlen) == 0;
        n_total++;
        if (ok_enc && ok_dec) {
            n_pass++;
        } else {
            fprintf(stderr, "  %s case %d: '%.*s'%s%s\n", name, n_total - 1,
                    (int)(tlen > 60 ? 60 : tlen), text, ok_enc ? "" : " [encode differs]",
                    ok_dec ? "" : " [decode differs]");
            if (!ok_enc) { print_ids("want", want, nw); print_ids("got ", ids, n < 0 ? 0 : n); }
            if (!ok_dec) fprintf(stderr, "    decoded: '%.*s'\n", (int)(dl > 200 ? 200 : dl), dec);
        }
        text = end + sizeof(sep) - 1;
        line = nl ? nl + 1 : line + strlen(line);
    }
    printf("%s: %d/%d (load %.1f ms, encode %.2f ms total)\n", name, n_pass, n_total, load_ms,
           enc_ms);
    *pass += n_pass;
    *fail += n_total - n_pass;
    if (n_total == 0) (*fail)++;
    free(ids);
    free(want);
    free(dec);
done:
    free(inp);
    free(out);
    tok_free(t);
    gguf_close(g);
}

int main(void) {
    const char *shared = getenv("SAMPAN_SHARED");
    char dir[900];
    snprintf(dir, sizeof(dir), "%s/reference/vocab", shared ? shared : "../shared");
    FILE *probe;
    char probe_path[1100];
    snprintf(probe_path, sizeof(probe_path), "%s/README.md", dir);
    if (!(probe = fopen(probe_path, "r"))) {
        printf("skip: %s not found\n", dir);
        return 77;
    }
    fclose(probe);
    int pass = 0, fail = 0;
    for (size_t i = 0; i < sizeof(vocabs) / sizeof(vocabs[0]); i++)
        run_vocab(dir, vocabs[i], &pass, &fail);
    printf("%d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
