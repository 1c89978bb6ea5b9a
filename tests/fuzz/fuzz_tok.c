/* tests/fuzz/fuzz_tok.c — libFuzzer harness for the tokenizer (runtime/tok.h).
 *
 * LLVMFuzzerInitialize loads a table of vocabularies: hand-built ones written with the GGUF writer
 * (always: a byte-level BPE vocabulary under every pre-tokenizer of tok_pre.c, an SPM one with and
 * without add_space_prefix), then, from the shared reference data ($SAMPAN_SHARED, default
 * ../shared beside the source tree; skipped with a message when absent), every vocabulary of
 * reference/vocab, stories260K's, and the GPT-2 vocabulary again under the llama3, qwen2, dbrx
 * and default pre-tokenizers (which no shared file uses). An input's first byte picks the
 * vocabulary; the rest is the text. Per input, with parse_special 0 and 1 and add_special 0:
 *   1. tok_encode equals a naive reference encoder written here from the rules in tok.h and
 *      tok.c's header (special-token partition, then SPM: highest score first, leftmost on ties,
 *      <0xXX> fallback; BPE: lowest merge rank first, leftmost on ties, over the pieces of
 *      tok_pre_split): it scans every pair after every merge, so it shares neither the heap nor
 *      SPM's cut points with tok.c;
 *   2. the buffer contract: a call with a smaller cap returns the same count and a prefix, every
 *      id is < n_vocab, add_special=1 adds exactly BOS/EOS as tok_add_bos and the metadata say;
 *   3. tok_decode returns the concatenated tok_piece bytes (minus the one space SPM added), the
 *      same length with any cap, NUL-terminated: for the encoder's ids and for ids read from the
 *      text's bytes (any id, -1 and n_vocab included, as a model may sample them);
 *   4. round trip, "the exact inverse of tok_encode(add_special=0) on valid text" (tok.h):
 *      byte-level BPE, parse_special 0: decode == the text for valid UTF-8; for any other bytes,
 *      == the text as tok_pre.h reads it (llama.cpp's reading: an undecodable byte becomes
 *      U+FFFD; overlong forms, which it decodes, come back in their shortest form). With
 *      parse_special 1 the pieces rendered with special=1 give the same bytes. Where the text
 *      holds a byte whose character is no token (falcon lacks 28 byte tokens, e.g. 0x0B;
 *      starcoder and refact lack 0xF1), that byte is dropped: then the rest must come back in
 *      order, nothing added.
 *      SPM, valid UTF-8 and no special token in the ids: decode == the text with U+2581 shown as
 *      a space (SentencePiece's escape, which cannot be told apart from a space). Invalid UTF-8
 *      does not round-trip in SPM (a truncated character swallows the next byte, e.g. of an
 *      escaped space) and is not promised to.
 * Failures print the vocabulary, the text in hex and both id lists, then abort().
 */
#include "gguf.h"
#include "tok.h"
#include "tok_pre.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FUZZ_SHARED_DIR
#define FUZZ_SHARED_DIR "../shared"
#endif

/* The harness's own code (the reference, the checks) needs no coverage feedback: without its
 * comparison tracing the harness runs about a third faster. */
#define FZ_NOCOV __attribute__((no_sanitize("coverage")))

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the vocabulary table -------------------------------------------------------------- */

/* Hash set of token ids (or merge ranks) keyed by their string in a GGUF string array. */
typedef struct { int32_t *slot; uint32_t mask; const gguf_value *arr; } fz_map;

enum { FZ_USER = 1, FZ_CTRL = 2, FZ_RSTRIP = 4 };

typedef struct {
    char name[96];
    gguf_ctx *g;           /* kept open: the arrays below point into it */
    tok *t;
    tok_pre *pre;          /* BPE: the reference's own splitter */
    int spm, add_space_prefix, add_eos;
    int32_t n_vocab, unk;
    const gguf_value *scores;
    fz_map vocab, merges;
    uint8_t *flags;        /* [n_vocab] FZ_* */
    int32_t *special;      /* user and control ids, longest text first, then lowest id */
    int32_t n_special;
    int32_t byte_tok[256];
    uint8_t covered[256];  /* BPE: the byte's character is a token (falcon lacks 28 of them) */
} fz_vocab;

#define FZ_MAX_VOCABS 32
static fz_vocab vocabs[FZ_MAX_VOCABS];
static int n_vocabs;

FZ_NOCOV static uint32_t fz_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    h ^= h >> 15; h *= 0x2c1b3c6du; h ^= h >> 12;
    return h;
}

/* Position of key s in m: holds its value or -1. */
FZ_NOCOV static uint32_t fz_map_pos(const fz_map *m, const char *s, size_t n) {
    for (uint32_t p = fz_hash(s, n) & m->mask;; p = (p + 1) & m->mask) {
        int32_t v = m->slot[p];
        if (v < 0) return p;
        gguf_str k = gguf_arr_str(m->arr, (uint64_t)v);
        if (k.len == n && memcmp(k.ptr, s, n) == 0) return p;
    }
}

/* The vocabulary map's values are the keys' own indices; the merge map's too (rank = index,
 * the first of repeated merges kept). */
static int fz_map_build(fz_map *m, const gguf_value *arr) {
    uint64_t n = arr->v.arr.n;
    uint32_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    m->slot = malloc(cap * sizeof(int32_t));
    if (!m->slot) return -1;
    memset(m->slot, 0xff, cap * sizeof(int32_t));
    m->mask = cap - 1;
    m->arr = arr;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(arr, i);
        if (s.len == 0) continue;
        uint32_t p = fz_map_pos(m, s.ptr, (size_t)s.len);
        if (m->slot[p] < 0) m->slot[p] = (int32_t)i;
    }
    return 0;
}

FZ_NOCOV static int32_t fz_find(const fz_map *m, const char *s, size_t n) {
    if (!m->slot || n == 0) return -1;
    return m->slot[fz_map_pos(m, s, n)];
}

FZ_NOCOV static gguf_str fz_text(const fz_vocab *v, int32_t id) {
    return gguf_arr_str(v->vocab.arr, (uint64_t)id);
}

static int fz_special_cmp(const void *pa, const void *pb, void *ud) {
    const fz_vocab *v = ud;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    uint64_t la = fz_text(v, a).len, lb = fz_text(v, b).len;
    if (la != lb) return la > lb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int fz_bool(const gguf_ctx *g, const char *key, int dflt) {
    const gguf_value *x = gguf_get(g, key);
    return x && x->type == GGUF_TYPE_BOOL ? x->v.b != 0 : dflt;
}

/* Fills the reference's view of v from its metadata and from what the tok renders: a token is
 * control-like (matched only with parse_special) when its piece is empty unless special is asked
 * for; user-defined (matched always) when token_type says 4 and it is not control-like. */
static int fz_vocab_init(fz_vocab *v, const char *name, gguf_ctx *g) {
    char err[512];
    snprintf(v->name, sizeof v->name, "%s", name);
    v->g = g;
    if (tok_load(g, &v->t, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tok: %s: %s (vocabulary skipped)\n", name, err);
        return -1;
    }
    const gguf_value *toks = gguf_get(g, "tokenizer.ggml.tokens");
    const gguf_value *types = gguf_get(g, "tokenizer.ggml.token_type");
    v->n_vocab = tok_n_vocab(v->t);
    v->spm = tok_kind_of(v->t) == TOK_SPM;
    v->add_space_prefix = v->spm && fz_bool(g, "tokenizer.ggml.add_space_prefix", 1);
    v->add_eos = fz_bool(g, "tokenizer.ggml.add_eos_token", 0);
    v->scores = gguf_get(g, "tokenizer.ggml.scores");
    if (fz_map_build(&v->vocab, toks)) return -1;
    if (!v->spm) {
        if (fz_map_build(&v->merges, gguf_get(g, "tokenizer.ggml.merges"))) return -1;
        if (tok_pre_new(tok_pre_name(v->t), &v->pre, err, sizeof err)) return -1;
    }
    v->flags = calloc((size_t)v->n_vocab, 1);
    v->special = malloc((size_t)v->n_vocab * sizeof(int32_t));
    if (!v->flags || !v->special) return -1;
    /* llama.cpp's Phi-3 rule (tok.c): its special tokens swallow the white space after them */
    char low[128] = "";
    gguf_str gn;
    if (gguf_get_str(g, "general.name", &gn, err, sizeof err) == GGUF_OK) {
        size_t n = gn.len < sizeof low - 1 ? (size_t)gn.len : sizeof low - 1;
        for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)gn.ptr[i]);
        low[n] = 0;
    }
    int phi = strstr(low, "phi-3") || strstr(low, "phi3");
    char p0[8], p1[8];
    for (int32_t i = 0; i < v->n_vocab; i++) {
        gguf_str s = fz_text(v, i);
        int ctrl = tok_piece(v->t, i, p0, sizeof p0, 0) == 0 &&
                   tok_piece(v->t, i, p1, sizeof p1, 1) > 0;
        int user = !ctrl && s.len > 0 && types && gguf_arr_i64(types, (uint64_t)i) == 4;
        v->flags[i] = (uint8_t)((ctrl ? FZ_CTRL : 0) | (user ? FZ_USER : 0));
        if (ctrl || user) v->special[v->n_special++] = i;
        int keep = gguf_str_eq(s, "<unk>") || gguf_str_eq(s, "<s>") ||
                   gguf_str_eq(s, "<|endoftext|>");
        if (phi && (ctrl || user || gguf_str_eq(s, "</s>")) && !keep) v->flags[i] |= FZ_RSTRIP;
    }
    qsort_r(v->special, (size_t)v->n_special, sizeof(int32_t), fz_special_cmp, v);
    v->unk = -1;
    for (int b = 0; b < 256 && !v->spm; b++) {
        char u[4];
        size_t un = (size_t)tok_utf8_encode(tok_pre_byte_to_cp((uint8_t)b), u);
        v->covered[b] = fz_find(&v->vocab, u, un) >= 0;
    }
    if (v->spm) {
        uint32_t u;
        v->unk = v->n_vocab > 0 ? 0 : -1;
        if (gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &u, err, sizeof err) == GGUF_OK &&
            u < (uint32_t)v->n_vocab)
            v->unk = (int32_t)u;
        for (int b = 0; b < 256; b++) {
            char hex[8], one = (char)b;
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            int32_t id = fz_find(&v->vocab, hex, 6);
            v->byte_tok[b] = id >= 0 ? id : fz_find(&v->vocab, &one, 1);
        }
    }
    return 0;
}

static void fz_add(const char *name, gguf_ctx *g) {
    if (!g) return;
    if (n_vocabs == FZ_MAX_VOCABS) { gguf_close(g); return; }
    fz_vocab *v = &vocabs[n_vocabs];
    if (fz_vocab_init(v, name, g) == 0) { n_vocabs++; return; }
    tok_free(v->t); tok_pre_free(v->pre);
    free(v->vocab.slot); free(v->merges.slot); free(v->flags); free(v->special);
    memset(v, 0, sizeof *v);
    gguf_close(g);
}

/* Writes w to a temporary file and opens it (the mapping outlives the unlinked file). */
static gguf_ctx *fz_open_written(gguf_writer *w) {
    char path[] = "/tmp/fuzz_tok_XXXXXX", err[512];
    int fd = mkstemp(path);
    gguf_ctx *g = NULL;
    if (fd < 0) { perror("fuzz_tok: mkstemp"); gguf_writer_free(w); return NULL; }
    close(fd);
    if (gguf_writer_write(w, path, err, sizeof err) != GGUF_OK ||
        gguf_open(path, &g, err, sizeof err) != GGUF_OK) {
        fprintf(stderr, "fuzz_tok: writing a vocabulary: %s\n", err);
        g = NULL;
    }
    unlink(path);
    gguf_writer_free(w);
    return g;
}

/* Byte-level BPE: the 256 byte tokens, the merges below and their results, two added tokens. */
static gguf_writer *fz_synth_bpe(const char *pre) {
    static const char *const merges[][2] = {
        { "\xc4\xa0", "t" }, { "h", "e" }, { "\xc4\xa0t", "he" }, { "i", "n" }, { "in", "g" },
        { "\xc4\xa0", "a" }, { "e", "r" }, { "\xc4\xa0", "\xc4\xa0" },
        { "\xc4\xa0\xc4\xa0", "\xc4\xa0\xc4\xa0" }, { "\xc4\x8a", "\xc4\x8a" }, { "1", "2" },
        { "12", "3" }, { "\xc3\x83", "\xc2\xa9" }, { "\xc4\xa0", "\xc3\x83\xc2\xa9" },
        { "'", "s" }, { "\xc3\xa4", "\xc2\xb8" }, { "\xc3\xa4\xc2\xb8", "\xc2\xad" },
        { "t", "h" }, { "th", "e" }, { "\xc4\xa0", "the" }, { "a", "a" }, { "aa", "aa" },
    };
    enum { NM = sizeof merges / sizeof merges[0], NT = 256 + NM + 2 };
    static char bytes[256][4], joined[NM][32], mtext[NM][32];
    const char *toks[NT], *mk[NM];
    int32_t types[NT];
    for (int b = 0; b < 256; b++) {
        int n = tok_utf8_encode(tok_pre_byte_to_cp((uint8_t)b), bytes[b]);
        bytes[b][n] = 0;
        toks[b] = bytes[b];
        types[b] = 1;
    }
    int nt = 256;
    for (int i = 0; i < NM; i++) {   /* two merges may make the same token ("Ġt he", "Ġ the") */
        snprintf(joined[i], sizeof joined[i], "%s%s", merges[i][0], merges[i][1]);
        snprintf(mtext[i], sizeof mtext[i], "%s %s", merges[i][0], merges[i][1]);
        mk[i] = mtext[i];
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= strcmp(joined[i], joined[j]) == 0;
        if (dup) continue;
        toks[nt] = joined[i];
        types[nt++] = 1;
    }
    toks[nt] = "<|user|>"; types[nt++] = 4;
    toks[nt] = "<|endoftext|>"; types[nt++] = 3;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)nt);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)nt);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", mk, NM);
    return w;
}

/* SPM: <unk> <s> </s>, the 256 <0xXX> tokens, pieces with scores (ties included), one user
 * token. */
static gguf_writer *fz_synth_spm(int add_space_prefix) {
    static const char *const pieces[] = {
        "\xe2\x96\x81", "\xe2\x96\x81t", "h", "e", "he", "\xe2\x96\x81the", "t", "th", "the",
        "a", "\xe2\x96\x81\x61", "aa", "aaa", "i", "n", "in", "g", "ing",
        "\xe2\x96\x81\xe2\x96\x81",
        "\xc3\xa9", "\xe4\xb8\xad", "\xe4\xb8\xad\xe6\x96\x87", "<", "s", ">", "<s",
    };
    static const float sc[] = { -1, -3, -2, -2, -4, -5, -2, -4, -4, -1, -3, -4, -4, -2, -2, -3,
                                -2, -3, -6, -1, -1, -2, -1, -1, -1, -3 };
    enum { NP = sizeof pieces / sizeof pieces[0], NT = 3 + 256 + NP + 1 };
    static char hex[256][8];
    const char *toks[NT];
    float scores[NT];
    int32_t types[NT];
    toks[0] = "<unk>"; toks[1] = "<s>"; toks[2] = "</s>";
    types[0] = 2; types[1] = 3; types[2] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(hex[b], sizeof hex[b], "<0x%02X>", b);
        toks[3 + b] = hex[b];
        types[3 + b] = 6;
    }
    for (int i = 0; i < NP; i++) {
        toks[259 + i] = pieces[i];
        scores[259 + i] = sc[i];
        types[259 + i] = 1;
    }
    for (int i = 0; i < 259; i++) scores[i] = 0;
    toks[NT - 1] = "<|user|>"; scores[NT - 1] = 0; types[NT - 1] = 4;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NT);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, NT);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, NT);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", add_space_prefix);
    return w;
}

/* A shared file's tokenizer keys with tokenizer.ggml.pre replaced. */
static gguf_ctx *fz_with_pre(const gguf_ctx *src, const char *pre) {
    gguf_writer *w = gguf_writer_new();
    for (int64_t i = 0; i < gguf_n_kv(src); i++) {
        gguf_str k = gguf_kv_key(src, i);
        if (k.len > 10 && memcmp(k.ptr, "tokenizer.", 10) == 0 &&
            !gguf_str_eq(k, "tokenizer.ggml.pre") && !gguf_str_eq(k, "tokenizer.chat_template"))
            gguf_writer_copy_kv(w, src, i);
    }
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    return fz_open_written(w);
}

static gguf_ctx *fz_open_file(const char *path) {
    char err[512];
    gguf_ctx *g = NULL;
    if (access(path, R_OK) != 0) return NULL;
    if (gguf_open(path, &g, err, sizeof err) != GGUF_OK) {
        fprintf(stderr, "fuzz_tok: %s\n", err);
        return NULL;
    }
    return g;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    static const char *const pres[] = { "default", "gpt-2", "starcoder", "falcon", "deepseek-coder",
                                        "deepseek-llm", "llama3", "dbrx", "qwen2" };
    char name[96], path[2048];
    for (size_t i = 0; i < sizeof pres / sizeof pres[0]; i++) {
        snprintf(name, sizeof name, "synth-bpe/%s", pres[i]);
        fz_add(name, fz_open_written(fz_synth_bpe(pres[i])));
    }
    fz_add("synth-spm", fz_open_written(fz_synth_spm(1)));
    fz_add("synth-spm/no-space-prefix", fz_open_written(fz_synth_spm(0)));
    int n_synth = n_vocabs;

    const char *shared = getenv("SAMPAN_SHARED");
    if (!shared || !*shared) shared = FUZZ_SHARED_DIR;
    static const char *const files[] = { "gpt-2", "falcon", "mpt", "starcoder", "refact",
                                         "deepseek-coder", "deepseek-llm", "llama-spm", "phi-3" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/reference/vocab/ggml-vocab-%s.gguf", shared, files[i]);
        fz_add(files[i], fz_open_file(path));
    }
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared);
    fz_add("stories260K", fz_open_file(path));
    snprintf(path, sizeof path, "%s/reference/vocab/ggml-vocab-gpt-2.gguf", shared);
    gguf_ctx *gpt2 = fz_open_file(path);
    if (gpt2) {
        static const char *const alt[] = { "llama3", "qwen2", "dbrx", "default" };
        for (size_t i = 0; i < sizeof alt / sizeof alt[0]; i++) {
            snprintf(name, sizeof name, "gpt-2/%s", alt[i]);
            fz_add(name, fz_with_pre(gpt2, alt[i]));
        }
        gguf_close(gpt2);
    }
    if (n_vocabs == n_synth)
        fprintf(stderr, "fuzz_tok: no shared vocabulary under %s/reference/vocab: fuzzing the %d "
                "hand-built vocabularies only\n", shared, n_synth);
    fprintf(stderr, "fuzz_tok: %d vocabularies:", n_vocabs);
    for (int i = 0; i < n_vocabs; i++) fprintf(stderr, " %d=%s", i, vocabs[i].name);
    fprintf(stderr, "\n");
    if (n_vocabs == 0) {
        fprintf(stderr, "fuzz_tok: no vocabulary could be built\n");
        exit(1);
    }
    return 0;
}

/* ---- the reference encoder -------------------------------------------------------------- */

typedef struct { int32_t *v; int64_t n, cap; } fz_ids;

FZ_NOCOV static void fz_push(fz_ids *o, int32_t id) {
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 64;
        o->v = realloc(o->v, (size_t)o->cap * sizeof(int32_t));
        if (!o->v) abort();
    }
    o->v[o->n++] = id;
}

/* length of the character at s[0] as tok.h's merge sessions split text: from the lead byte,
 * clipped at the end */
FZ_NOCOV static size_t fz_char_len(const char *s, size_t n) {
    uint8_t b = (uint8_t)s[0];
    size_t l = b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    return l < n ? l : n;
}

/* Symbols of s[0, n) as (beg, len) arrays; merges by repeatedly taking the best adjacent pair
 * over all pairs (SPM: highest score of the joined token; BPE: lowest rank of "left right"),
 * the leftmost of equals. */
typedef struct { size_t *beg, *len; int64_t k; } fz_syms;

FZ_NOCOV static double fz_pair_key(const fz_vocab *v, const char *s, const fz_syms *y, int64_t i) {
    if (v->spm) {
        int32_t id = fz_find(&v->vocab, s + y->beg[i], y->len[i] + y->len[i + 1]);
        if (id < 0) return INFINITY;
        return v->scores ? -(double)(float)gguf_arr_f64(v->scores, (uint64_t)id) : 0.0;
    }
    size_t a = y->len[i], b = y->len[i + 1];
    char stack[256], *key = a + b + 1 <= sizeof stack ? stack : malloc(a + b + 1);
    if (!key) abort();
    memcpy(key, s + y->beg[i], a);
    key[a] = ' ';
    memcpy(key + a + 1, s + y->beg[i + 1], b);
    int32_t r = fz_find(&v->merges, key, a + b + 1);
    if (key != stack) free(key);
    return r < 0 ? INFINITY : (double)r;
}

FZ_NOCOV static void fz_merge(const fz_vocab *v, const char *s, size_t n, fz_syms *y) {
    y->beg = malloc((n + 1) * sizeof(size_t));
    y->len = malloc((n + 1) * sizeof(size_t));
    double *key = malloc((n + 1) * sizeof(double));
    if (!y->beg || !y->len || !key) abort();
    y->k = 0;
    for (size_t o = 0; o < n; y->k++) {
        y->beg[y->k] = o;
        y->len[y->k] = fz_char_len(s + o, n - o);
        o += y->len[y->k];
    }
    for (int64_t i = 0; i + 1 < y->k; i++) key[i] = fz_pair_key(v, s, y, i);
    for (;;) {
        int64_t best = -1;
        for (int64_t i = 0; i + 1 < y->k; i++)
            if (key[i] < INFINITY && (best < 0 || key[i] < key[best])) best = i;
        if (best < 0) break;
        y->len[best] += y->len[best + 1];
        int64_t tail = y->k - best - 2;
        memmove(y->beg + best + 1, y->beg + best + 2, (size_t)tail * sizeof(size_t));
        memmove(y->len + best + 1, y->len + best + 2, (size_t)tail * sizeof(size_t));
        memmove(key + best + 1, key + best + 2, (size_t)(tail > 0 ? tail - 1 : 0) * sizeof(double));
        y->k--;
        if (best > 0) key[best - 1] = fz_pair_key(v, s, y, best - 1);
        if (best + 1 < y->k) key[best] = fz_pair_key(v, s, y, best);
    }
    free(key);
}

typedef struct { const fz_vocab *v; fz_ids *out; } fz_bpe_ud;

FZ_NOCOV static int fz_bpe_piece(void *ud, const char *s, size_t n) {
    const fz_vocab *v = ((fz_bpe_ud *)ud)->v;
    fz_ids *out = ((fz_bpe_ud *)ud)->out;
    if (tok_pre_ignore_merges(v->pre)) {
        int32_t id = fz_find(&v->vocab, s, n);
        if (id >= 0) { fz_push(out, id); return 0; }
    }
    fz_syms y;
    fz_merge(v, s, n, &y);
    for (int64_t i = 0; i < y.k; i++) {
        int32_t id = fz_find(&v->vocab, s + y.beg[i], y.len[i]);
        if (id >= 0) { fz_push(out, id); continue; }
        for (size_t j = 0; j < y.len[i]; j++) {
            int32_t b = fz_find(&v->vocab, s + y.beg[i] + j, 1);
            if (b >= 0) fz_push(out, b);
        }
    }
    free(y.beg);
    free(y.len);
    return 0;
}

FZ_NOCOV static void fz_spm_raw(const fz_vocab *v, const char *s, size_t n, int prefix,
                                fz_ids *out) {
    char *e = malloc(3 * n + 4);
    if (!e) abort();
    size_t m = 0;
    if (prefix) { memcpy(e, "\xe2\x96\x81", 3); m = 3; }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { memcpy(e + m, "\xe2\x96\x81", 3); m += 3; }
        else e[m++] = s[i];
    }
    fz_syms y;
    fz_merge(v, e, m, &y);
    for (int64_t i = 0; i < y.k; i++) {
        int32_t id = fz_find(&v->vocab, e + y.beg[i], y.len[i]);
        if (id >= 0) { fz_push(out, id); continue; }
        for (size_t j = 0; j < y.len[i]; j++) {
            int32_t b = v->byte_tok[(uint8_t)e[y.beg[i] + j]];
            if (b < 0) b = v->unk;
            if (b >= 0) fz_push(out, b);
        }
    }
    free(y.beg);
    free(y.len);
    free(e);
}

typedef struct { size_t off, len; int32_t id; } fz_frag;

/* The special-token partition: each special token in list order cuts every raw fragment at
 * each of its occurrences, left to right. */
FZ_NOCOV static void fz_encode(const fz_vocab *v, const char *text, size_t len, int add_special,
                               int ps, fz_ids *out) {
    fz_frag *f = malloc((2 * len + 2) * sizeof(fz_frag));
    fz_frag *g = malloc((2 * len + 2) * sizeof(fz_frag));
    if (!f || !g) abort();
    int64_t nf = 0;
    if (len) f[nf++] = (fz_frag){ 0, len, -1 };
    for (int32_t k = 0; k < v->n_special; k++) {
        int32_t id = v->special[k];
        if (!ps && (v->flags[id] & FZ_CTRL)) continue;
        gguf_str st = fz_text(v, id);
        int64_t m = 0;
        for (int64_t i = 0; i < nf; i++) {
            if (f[i].id >= 0) { g[m++] = f[i]; continue; }
            size_t pos = f[i].off, end = f[i].off + f[i].len;
            while (pos < end) {
                const char *hit = memmem(text + pos, end - pos, st.ptr, (size_t)st.len);
                if (!hit) break;
                size_t at = (size_t)(hit - text);
                if (at > pos) g[m++] = (fz_frag){ pos, at - pos, -1 };
                g[m++] = (fz_frag){ at, (size_t)st.len, id };
                pos = at + (size_t)st.len;
                if (v->flags[id] & FZ_RSTRIP)
                    while (pos < end && isspace((unsigned char)text[pos])) pos++;
            }
            if (pos < end) g[m++] = (fz_frag){ pos, end - pos, -1 };
        }
        fz_frag *x = f; f = g; g = x;
        nf = m;
    }
    if (add_special && tok_add_bos(v->t)) fz_push(out, tok_bos(v->t));
    int prev_special = 1;
    for (int64_t i = 0; i < nf; i++) {
        if (f[i].id >= 0) { fz_push(out, f[i].id); prev_special = 1; continue; }
        if (v->spm) {
            fz_spm_raw(v, text + f[i].off, f[i].len, v->add_space_prefix && prev_special, out);
        } else {
            fz_bpe_ud ud = { v, out };
            if (tok_pre_split(v->pre, text + f[i].off, f[i].len, fz_bpe_piece, &ud) != 0) abort();
        }
        prev_special = 0;
    }
    if (add_special && v->add_eos) fz_push(out, tok_eos(v->t));
    free(f);
    free(g);
}

/* ---- checks ------------------------------------------------------------------------------- */

static const fz_vocab *cur_v;
static const char *cur_text;
static size_t cur_len;
static int cur_ps;

static void fz_dump_ids(const char *what, const int32_t *ids, int64_t n) {
    fprintf(stderr, "  %s (%lld):", what, (long long)n);
    for (int64_t i = 0; i < n && i < 200; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 200 ? " ..." : "");
}

static void fz_dump_bytes(const char *what, const char *s, size_t n) {
    fprintf(stderr, "  %s (%zu bytes):", what, n);
    for (size_t i = 0; i < n && i < 400; i++) fprintf(stderr, " %02x", (uint8_t)s[i]);
    fprintf(stderr, "%s\n", n > 400 ? " ..." : "");
}

#define REQUIRE(c) REQUIRE_OR_DUMP(c, (void)0)
#define REQUIRE_OR_DUMP(c, ...)                                                                \
    do {                                                                                       \
        if (!(c)) {                                                                            \
            fprintf(stderr, "fuzz_tok: %s, parse_special=%d: invariant failed: %s (line %d)\n", \
                    cur_v->name, cur_ps, #c, __LINE__);                                        \
            fz_dump_bytes("text", cur_text, cur_len);                                          \
            __VA_ARGS__;                                                                       \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
FZ_NOCOV static int fz_valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t k;
        uint32_t lo = 0x80, hi = 0xBF;   /* range of the second byte */
        if (b < 0x80) { i++; continue; }
        else if (b >= 0xC2 && b <= 0xDF) k = 2;
        else if (b >= 0xE0 && b <= 0xEF) {
            k = 3;
            if (b == 0xE0) lo = 0xA0;   /* overlong */
            if (b == 0xED) hi = 0x9F;   /* surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 4;
            if (b == 0xF0) lo = 0x90;   /* overlong */
            if (b == 0xF4) hi = 0x8F;   /* above U+10FFFF */
        }
        else return 0;
        if (i + k > n || s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t j = 2; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* The text as byte-level BPE sees it (tok_pre.h): what tok_utf8_decode cannot decode, or
 * decodes above U+10FFFF, becomes U+FFFD; the rest is re-encoded from its code points. */
FZ_NOCOV static char *fz_bpe_normal(const char *s, size_t n, size_t *out_n) {
    char *o = malloc(3 * n + 1);
    if (!o) abort();
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t adv;
        uint32_t cp = tok_utf8_decode(s + i, n - i, &adv);
        if (cp > 0x10FFFF) cp = 0xFFFD;
        m += (size_t)tok_utf8_encode(cp, o + m);
        i += adv;
    }
    *out_n = m;
    return o;
}

/* The pieces of ids concatenated (special: render control tokens). */
FZ_NOCOV static char *fz_pieces(const fz_vocab *v, const int32_t *ids, int64_t n, int special,
                                size_t *out_n) {
    size_t cap = 64, m = 0;
    char *o = malloc(cap);
    if (!o) abort();
    for (int64_t i = 0; i < n; i++) {
        char tmp[8];
        int need = tok_piece(v->t, ids[i], tmp, sizeof tmp, special);
        REQUIRE(need >= 0);
        if (m + (size_t)need + 1 > cap) {
            while (m + (size_t)need + 1 > cap) cap *= 2;
            o = realloc(o, cap);
            if (!o) abort();
        }
        int got = tok_piece(v->t, ids[i], o + m, need, special);
        REQUIRE(got == need);
        REQUIRE(need <= (int)sizeof tmp || memcmp(tmp, o + m, sizeof tmp) == 0);
        REQUIRE(need > (int)sizeof tmp || memcmp(tmp, o + m, (size_t)need) == 0);
        m += (size_t)need;
    }
    *out_n = m;
    return o;
}

/* 2. a smaller cap gives the same count and a prefix; add_special adds exactly BOS and EOS */
FZ_NOCOV static void fz_check_contract(const fz_vocab *v, const char *text, size_t len,
                                       const int32_t *ids, int64_t n) {
    int64_t half = n / 2;
    int32_t *part = malloc((size_t)(half + 1) * sizeof(int32_t));
    if (!part) abort();
    REQUIRE(tok_encode(v->t, text, len, 0, 0, part, half) == n);
    REQUIRE(half == 0 || memcmp(part, ids, (size_t)half * sizeof(int32_t)) == 0);
    REQUIRE(tok_encode(v->t, text, len, 0, 0, NULL, 0) == n);
    free(part);
    int32_t *sp = malloc((size_t)(n + 2) * sizeof(int32_t));
    if (!sp) abort();
    int bos = tok_add_bos(v->t) != 0, eos = v->add_eos;
    REQUIRE(tok_encode(v->t, text, len, 1, 0, sp, n + 2) == n + bos + eos);
    REQUIRE(!bos || sp[0] == tok_bos(v->t));
    REQUIRE(!eos || sp[n + bos] == tok_eos(v->t));
    REQUIRE(n == 0 || memcmp(sp + bos, ids, (size_t)n * sizeof(int32_t)) == 0);
    free(sp);
}

/* 3. tok_decode of ids (any, valid or not) is their pieces back to back, less the one space SPM
 * drops; with any cap the same length, NUL-terminated. Returns the decoded text (malloc'd). */
FZ_NOCOV static char *fz_check_decode(const fz_vocab *v, const int32_t *ids, int64_t n,
                                      int64_t *dn_out) {
    size_t pn;
    char *pieces = fz_pieces(v, ids, n, 0, &pn);
    /* tok_decode drops one space only if the first token's piece starts with it */
    char c0 = 0;
    size_t skip = n > 0 && v->spm && v->add_space_prefix &&
                  tok_piece(v->t, ids[0], &c0, 1, 0) > 0 && c0 == ' ';
    char *dec = malloc(pn + 1);
    if (!dec) abort();
    int64_t dn = tok_decode(v->t, ids, n, dec, (int64_t)pn + 1);
    REQUIRE_OR_DUMP(dn == (int64_t)(pn - skip) && dec[dn] == 0 &&
                    memcmp(dec, pieces + skip, (size_t)dn) == 0,
                    fz_dump_ids("ids", ids, n), fz_dump_bytes("decoded", dec, (size_t)dn));
    if (dn > 0) {
        char *small = malloc((size_t)dn);
        if (!small) abort();
        REQUIRE(tok_decode(v->t, ids, n, small, dn) == dn && small[dn - 1] == 0 &&
                memcmp(small, dec, (size_t)dn - 1) == 0);
        free(small);
    }
    REQUIRE(tok_decode(v->t, ids, n, NULL, 0) == dn);
    free(pieces);
    *dn_out = dn;
    return dec;
}

FZ_NOCOV static void fz_check(const fz_vocab *v, const char *text, size_t len, int ps) {
    cur_v = v; cur_text = text; cur_len = len; cur_ps = ps;
    int64_t cap = 3 * (int64_t)len + 8;
    int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
    if (!ids) abort();
    int64_t n = tok_encode(v->t, text, len, 0, ps, ids, cap);
    REQUIRE(n >= 0 && n <= cap);
    for (int64_t i = 0; i < n; i++)
        REQUIRE_OR_DUMP(ids[i] >= 0 && ids[i] < v->n_vocab, fz_dump_ids("ids", ids, n));

    /* 1. the reference encoder */
    fz_ids ref = { 0 };
    fz_encode(v, text, len, 0, ps, &ref);
    REQUIRE_OR_DUMP(ref.n == n && (n == 0 || memcmp(ref.v, ids, (size_t)n * sizeof(int32_t)) == 0),
            fz_dump_ids("tok_encode", ids, n), fz_dump_ids("reference ", ref.v, ref.n));

    if (!ps) fz_check_contract(v, text, len, ids, n);   /* independent of parse_special */

    /* 3. decode against the pieces, of these ids and of ids read from the text's bytes */
    int64_t dn;
    char *dec = fz_check_decode(v, ids, n, &dn);
    if (!ps) {
        int64_t nr = (int64_t)len / 3;
        int32_t *rids = malloc((size_t)(nr + 1) * sizeof(int32_t));
        if (!rids) abort();
        for (int64_t i = 0; i < nr; i++) {   /* -1 and n_vocab included: out of range */
            const uint8_t *u = (const uint8_t *)text + 3 * i;
            uint32_t x = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16;
            rids[i] = (int32_t)(x % (uint32_t)(v->n_vocab + 2)) - 1;
        }
        int64_t rn;
        free(fz_check_decode(v, rids, nr, &rn));
        free(rids);
    }

    /* 4. round trip */
    int valid = fz_valid_utf8((const uint8_t *)text, len);
    if (!v->spm) {
        size_t en;
        char *want = fz_bpe_normal(text, len, &en);
        REQUIRE(!valid || (en == len && memcmp(want, text, len) == 0));
        size_t rn;
        char *got = ps ? fz_pieces(v, ids, n, 1, &rn) : dec;
        if (!ps) rn = (size_t)dn;
        int covered = 1;
        for (size_t i = 0; i < en; i++) covered &= v->covered[(uint8_t)want[i]];
        if (!covered) {   /* a byte without its token is dropped: the rest stays, in order */
            size_t j = 0;
            for (size_t i = 0; i < rn; i++, j++)
                while (j < en && want[j] != got[i]) j++;
            REQUIRE_OR_DUMP(j <= en, fz_dump_ids("ids", ids, n), fz_dump_bytes("want", want, en),
                            fz_dump_bytes("got ", got, rn));
        } else {
            REQUIRE_OR_DUMP(rn == en && memcmp(got, want, en) == 0, fz_dump_ids("ids", ids, n),
                            fz_dump_bytes("want", want, en), fz_dump_bytes("got ", got, rn));
        }
        if (got != dec) free(got);
        free(want);
    } else if (valid) {
        int special = 0;
        for (int64_t i = 0; i < n; i++) special |= v->flags[ids[i]] & (FZ_USER | FZ_CTRL);
        if (!special) {
            char *want = malloc(len + 1);
            if (!want) abort();
            size_t en = 0;
            for (size_t i = 0; i < len; i++) {
                if (i + 3 <= len && memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
                    want[en++] = ' ';
                    i += 2;
                } else {
                    want[en++] = text[i];
                }
            }
            REQUIRE_OR_DUMP((size_t)dn == en && memcmp(dec, want, en) == 0,
                            fz_dump_ids("ids", ids, n), fz_dump_bytes("decoded", dec, (size_t)dn));
            free(want);
        }
    }
    free(dec);
    free(ref.v);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const fz_vocab *v = &vocabs[data[0] % n_vocabs];
    size_t len = size - 1;
    char *text = malloc(len ? len : 1);   /* exact size: ASan sees a read past the end */
    if (!text) return 0;
    memcpy(text, data + 1, len);
    fz_check(v, text, len, 0);
    fz_check(v, text, len, 1);
    free(text);
    return 0;
}
