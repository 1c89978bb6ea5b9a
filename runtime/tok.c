/* runtime/tok.c — the tokenizer: vocabulary loading from GGUF metadata, special-token
 * partitioning, SentencePiece-style and byte-level BPE encoding, and detokenization.
 * Regex pre-tokenization of byte-level BPE lives in tok_pre.c.
 *
 * Behaviour is llama.cpp's (its public test vectors are the reference):
 *   1. The text is first partitioned around special tokens: every CONTROL, USER_DEFINED or
 *      UNKNOWN token, longest text first, is searched in the remaining raw-text fragments and
 *      each occurrence becomes a single id. USER_DEFINED tokens are matched even without
 *      parse_special (Hugging Face's "added tokens"); CONTROL and UNKNOWN ones only with it.
 *   2. SPM ("llama"): each raw fragment that starts the text or follows a special token gets one
 *      leading space (add_space_prefix); spaces become U+2581; the fragment is split into UTF-8
 *      characters and the adjacent pair forming the highest-scoring vocabulary token is merged
 *      first (ties: leftmost), until no pair is a token; what is not a token falls back to
 *      <0xXX> byte tokens.
 *   3. BPE ("gpt2"): each raw fragment is split by the pre-tokenizer into byte-level encoded
 *      pieces; in each piece the adjacent pair with the lowest merge rank is merged first (ties:
 *      leftmost).
 * Both merge loops use one binary heap of candidate pairs; a popped pair whose sides changed
 * since it was pushed is stale and skipped, which keeps encoding O(n log n). SPM text is first
 * cut between two characters that are adjacent inside no token: no merge can cross such a cut,
 * so the pieces merge independently with the same result and the heaps stay small.
 *
 * Token texts and merges are copied out of the GGUF mapping, so a tok outlives its gguf_ctx.
 * A tok is read-only after tok_load: encoding allocates its scratch per call and is thread-safe.
 */
#include "tok.h"
#include "tok_pre.h"
#include "gguf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* token attributes (llama.cpp's, from tokenizer.ggml.token_type plus detected flags) */
enum {
    TOK__NORMAL = 1, TOK__UNKNOWN = 2, TOK__CONTROL = 4, TOK__USER = 8, TOK__UNUSED = 16,
    TOK__BYTE = 32, TOK__UNDEF = 64,
    TOK__EOG = 128,      /* ends generation */
    TOK__RSTRIP = 256,   /* as a special token, swallows white space after it */
};

/* Open-addressing hash set of strings stored as (base + off[i], off[i+1] - off[i]); the slot
 * holds the index i, or -1. A key may be looked up as one string or as "a b" (a merge). */
typedef struct { int32_t *slot; uint32_t mask; } tok__map;

struct tok {
    tok_kind kind;
    char pre_name[64];
    int32_t n_vocab;
    char *text;            /* all token texts back to back */
    uint32_t *off;         /* [n_vocab + 1] */
    float *score;          /* [n_vocab], SPM merge priority */
    uint16_t *attr;        /* [n_vocab] TOK__* bits */
    tok__map vocab;
    char *mtext;           /* BPE merges "left right", back to back; slot value = rank */
    uint32_t *moff;
    tok__map merges;
    tok_pre *pre;
    int32_t *special;      /* ids matched in text, longest text first */
    int32_t n_special;
    int32_t bos, eos, eot, eom, unk;
    int add_bos, add_eos, add_space_prefix;
    int32_t byte_tok[256]; /* SPM byte fallback: <0xXX>, else the one-byte token, else -1 */
    uint64_t *cpair;       /* SPM: set of character pairs adjacent inside some token */
    uint8_t *cpair_used;
    uint32_t cpair_mask, n_cpair;
};

/* ---- strings and hashing ------------------------------------------------------------------ */

static uint32_t tok__fnv(uint32_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static uint32_t tok__mix(uint32_t h) {
    h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
    return h;
}

static int tok__map_init(tok__map *m, int64_t n) {
    if (n > (INT64_C(1) << 30)) return -1;
    uint32_t cap = 16;
    while ((int64_t)cap < 2 * n) cap <<= 1;
    m->slot = malloc((size_t)cap * sizeof(int32_t));
    if (!m->slot) return -1;
    memset(m->slot, 0xff, (size_t)cap * sizeof(int32_t));
    m->mask = cap - 1;
    return 0;
}

/* Finds key a (b == NULL) or "a b"; returns the slot position, holding -1 if absent. */
static uint32_t tok__map_pos(const tok__map *m, const char *base, const uint32_t *off,
                             const char *a, size_t na, const char *b, size_t nb) {
    uint32_t h = tok__fnv(2166136261u, a, na);
    size_t klen = na;
    if (b) { h = tok__fnv(tok__fnv(h, " ", 1), b, nb); klen += 1 + nb; }
    for (uint32_t p = tok__mix(h) & m->mask;; p = (p + 1) & m->mask) {
        int32_t i = m->slot[p];
        if (i < 0) return p;
        const char *k = base + off[i];
        if (off[i + 1] - off[i] == klen && memcmp(k, a, na) == 0 &&
            (!b || (k[na] == ' ' && memcmp(k + na + 1, b, nb) == 0)))
            return p;
    }
}

static int32_t tok__find(const tok *t, const char *s, size_t n) {
    return t->vocab.slot[tok__map_pos(&t->vocab, t->text, t->off, s, n, NULL, 0)];
}

static int32_t tok__rank(const tok *t, const char *a, size_t na, const char *b, size_t nb) {
    return t->merges.slot[tok__map_pos(&t->merges, t->mtext, t->moff, a, na, b, nb)];
}

/* Copies the n strings of a STRING array into one buffer with offsets. */
static int tok__copy_strs(const gguf_value *arr, uint64_t n, char **text, uint32_t **off,
                          const char *key, char *err, size_t errlen) {
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) total += gguf_arr_str(arr, i).len;
    if (total > UINT32_MAX - 1) {
        snprintf(err, errlen, "tok: %s holds %llu bytes of text (limit 4 GiB)", key,
                 (unsigned long long)total);
        return -1;
    }
    *text = malloc(total + 1);
    *off = malloc((n + 1) * sizeof(uint32_t));
    if (!*text || !*off) { snprintf(err, errlen, "tok: out of memory reading %s", key); return -1; }
    uint32_t o = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(arr, i);
        (*off)[i] = o;
        if (s.len) memcpy(*text + o, s.ptr, s.len);
        o += (uint32_t)s.len;
    }
    (*off)[n] = o;
    return 0;
}

/* ---- SPM cut points: the set of character pairs adjacent inside a token --------------------- */

static const uint8_t tok__lead_len[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };

/* Length of the character starting s[0] as the merge sessions split text: from the lead byte,
 * clipped at the end. */
static size_t tok__char_len(const char *s, size_t n) {
    size_t l = tok__lead_len[(uint8_t)s[0] >> 4];
    return l < n ? l : n;
}

/* two characters (1..4 bytes each) as one key; equal keys mean equal byte strings because a
 * character's length follows from its lead byte (or from the clipped end, seen alike) */
static uint64_t tok__cpair_key(const char *a, size_t na, const char *b, size_t nb) {
    uint32_t x = 0, y = 0;
    memcpy(&x, a, na);
    memcpy(&y, b, nb);
    return (uint64_t)x << 32 | y;
}

static uint32_t tok__cpair_pos(const tok *t, uint64_t key) {
    uint32_t p = tok__mix((uint32_t)key ^ tok__mix((uint32_t)(key >> 32))) & t->cpair_mask;
    while (t->cpair_used[p] && t->cpair[p] != key) p = (p + 1) & t->cpair_mask;
    return p;
}

static int tok__cpair_has(const tok *t, uint64_t key) {
    return t->cpair_used[tok__cpair_pos(t, key)];
}

static int tok__cpair_grow(tok *t) {
    uint32_t old_cap = t->cpair ? t->cpair_mask + 1 : 0, cap = old_cap ? old_cap * 2 : 4096;
    uint64_t *old = t->cpair;
    uint8_t *old_used = t->cpair_used;
    t->cpair = malloc(cap * sizeof(uint64_t));
    t->cpair_used = calloc(cap, 1);
    if (!t->cpair || !t->cpair_used) { free(old); free(old_used); return -1; }
    t->cpair_mask = cap - 1;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old_used[i]) {
            uint32_t p = tok__cpair_pos(t, old[i]);
            t->cpair[p] = old[i];
            t->cpair_used[p] = 1;
        }
    free(old);
    free(old_used);
    return 0;
}

static int tok__cpair_build(tok *t) {
    if (tok__cpair_grow(t)) return -1;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const char *s = t->text + t->off[i];
        size_t n = t->off[i + 1] - t->off[i];
        if (n == 0) continue;
        for (size_t a = 0, la = tok__char_len(s, n); a + la < n;) {
            size_t lb = tok__char_len(s + a + la, n - a - la);
            uint64_t key = tok__cpair_key(s + a, la, s + a + la, lb);
            uint32_t p = tok__cpair_pos(t, key);
            if (!t->cpair_used[p]) {
                t->cpair[p] = key;
                t->cpair_used[p] = 1;
                if (++t->n_cpair * 2 > t->cpair_mask && tok__cpair_grow(t)) return -1;
            }
            a += la;
            la = lb;
        }
    }
    return 0;
}

/* ---- loading --------------------------------------------------------------------------- */

static const gguf_value *tok__array(const gguf_ctx *g, const char *key, int want_str,
                                    char *err, size_t errlen) {
    const gguf_value *v = gguf_get(g, key);
    if (!v) return NULL;
    int ok = v->type == GGUF_TYPE_ARRAY;
    if (ok && want_str) ok = v->v.arr.elem_type == GGUF_TYPE_STRING;
    if (ok && !want_str)
        ok = v->v.arr.elem_type != GGUF_TYPE_STRING && v->v.arr.elem_type != GGUF_TYPE_ARRAY;
    if (!ok)
        snprintf(err, errlen, "tok: %s has type %s, expected an array of %s", key,
                 gguf_type_name(v->type), want_str ? "strings" : "numbers");
    return ok ? v : NULL;
}

/* An optional numeric array of at least n entries: *out = NULL if absent; -1 (message in err)
 * if of another type or too short. */
static int tok__numbers(const gguf_ctx *g, const char *key, int32_t n, const gguf_value **out,
                        char *err, size_t errlen) {
    err[0] = 0;
    *out = tok__array(g, key, 0, err, errlen);
    if (err[0]) return -1;
    if (*out && (*out)->v.arr.n < (uint64_t)n) {
        snprintf(err, errlen, "tok: %s has %llu entries for %d tokens", key,
                 (unsigned long long)(*out)->v.arr.n, n);
        return -1;
    }
    return 0;
}

/* bool key into *out if present; -1 (message in err) if of another type */
static int tok__get_bool(const gguf_ctx *g, const char *key, int *out, char *err, size_t errlen) {
    const gguf_value *v = gguf_get(g, key);
    if (!v) return 0;
    if (v->type != GGUF_TYPE_BOOL) {
        snprintf(err, errlen, "tok: %s has type %s, expected bool", key, gguf_type_name(v->type));
        return -1;
    }
    *out = v->v.b != 0;
    return 0;
}

/* token id key into *id if present and in range */
static void tok__get_id(const gguf_ctx *g, const tok *t, const char *key, int32_t *id) {
    uint32_t v;
    char e[8];
    if (gguf_get_u32(g, key, &v, e, sizeof(e)) == GGUF_OK && v < (uint32_t)t->n_vocab)
        *id = (int32_t)v;
}

/* The lowest id among the tokens spelled as one of the NULL-terminated list, or -1. */
static int32_t tok__first_of(const tok *t, const char *const *list) {
    int32_t best = -1;
    for (; *list; list++) {
        int32_t id = tok__find(t, *list, strlen(*list));
        if (id >= 0 && (best < 0 || id < best)) best = id;
    }
    return best;
}

/* Token texts llama.cpp recognises when the metadata does not name them (UTF-8 spelled out:
 * U+FF5C fullwidth bar, U+2581 lower block). */
#define TOK__DS_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
static const char *const tok__eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", TOK__DS_EOS, "<end_of_utterance>", NULL };
static const char *const tok__eom_texts[] = { "<|eom_id|>", NULL };
#define TOK__FIM(name) "<\xef\xbd\x9c" "fim\xe2\x96\x81" name "\xef\xbd\x9c>"
static const char *const tok__fim_texts[6][9] = {   /* pre, suf, mid, pad, repo, file-sep */
    { "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", TOK__FIM("begin"), "<PRE>",
      "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL },
    { "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", TOK__FIM("hole"), "<SUF>",
      "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL },
    { "<|fim_middle|>", "<fim-middle>", "<fim_middle>", TOK__FIM("end"), "<MID>",
      "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL },
    { "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL },
    { "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL },
    { "<|file_sep|>", NULL } };
static const char *const tok__eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", TOK__DS_EOS,
    "[e~[", NULL };

/* If *slot is unset, the first token whose text is in list becomes *slot and CONTROL. */
static void tok__detect(tok *t, int32_t *slot, const char *const *list) {
    if (*slot >= 0) return;
    *slot = tok__first_of(t, list);
    if (*slot >= 0) t->attr[*slot] |= TOK__CONTROL;
}

/* EOT/EOM/FIM roles from keys or detected by text, and the end-of-generation set: EOS, EOT,
 * EOM, FIM pad/repo/file-sep and every token spelled like an end marker. */
static void tok__special_flags(tok *t, const gguf_ctx *g) {
    int32_t fim[6] = { -1, -1, -1, -1, -1, -1 };
    static const char *const fim_keys[9] = {
        "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
        "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
        "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id",
        "tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id",
        "tokenizer.ggml.middle_token_id" };
    for (int k = 0; k < 9; k++) tok__get_id(g, t, fim_keys[k], &fim[k % 6]);
    tok__detect(t, &t->eot, tok__eot_texts);
    tok__detect(t, &t->eom, tok__eom_texts);
    for (int k = 0; k < 6; k++) tok__detect(t, &fim[k], tok__fim_texts[k]);
    for (int k = 3; k < 6; k++)
        if (fim[k] >= 0) t->attr[fim[k]] |= TOK__EOG;
    for (const char *const *e = tok__eog_texts; *e; e++) {
        int32_t id = tok__find(t, *e, strlen(*e));
        if (id >= 0) t->attr[id] |= TOK__CONTROL | TOK__EOG;
    }
    if (t->eos >= 0) t->attr[t->eos] |= TOK__EOG;
    if (t->eot >= 0) t->attr[t->eot] |= TOK__EOG;
    if (t->eom >= 0) t->attr[t->eom] |= TOK__EOG;
}

static int tok__special_cmp(const void *pa, const void *pb, void *ud) {
    const tok *t = ud;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    uint32_t la = t->off[a + 1] - t->off[a], lb = t->off[b + 1] - t->off[b];
    if (la != lb) return la > lb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int tok__special_list(tok *t, const gguf_ctx *g) {
    t->special = malloc(((size_t)t->n_vocab + 1) * sizeof(int32_t));
    if (!t->special) return -1;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if ((t->attr[i] & (TOK__CONTROL | TOK__USER | TOK__UNKNOWN)) && t->off[i + 1] > t->off[i])
            t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof(int32_t), tok__special_cmp, t);
    /* llama.cpp: Phi-3 special tokens swallow the white space after them */
    gguf_str name;
    char e[8], low[128];
    if (gguf_get_str(g, "general.name", &name, e, sizeof(e)) == GGUF_OK) {
        size_t n = name.len < sizeof(low) - 1 ? (size_t)name.len : sizeof(low) - 1;
        for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name.ptr[i]);
        low[n] = 0;
        if (strstr(low, "phi-3") || strstr(low, "phi3")) {
            static const char *const keep[] = { "<unk>", "<s>", "<|endoftext|>", NULL };
            int32_t eos_s = tok__find(t, "</s>", 4);
            for (int32_t k = 0; k < t->n_special; k++) t->attr[t->special[k]] |= TOK__RSTRIP;
            if (eos_s >= 0) t->attr[eos_s] |= TOK__RSTRIP;
            for (int32_t k = 0; keep[k]; k++) {
                int32_t id = tok__find(t, keep[k], strlen(keep[k]));
                if (id >= 0) t->attr[id] &= (uint16_t)~TOK__RSTRIP;
            }
        }
    }
    return 0;
}

static int tok__load_vocab(tok *t, const gguf_ctx *g, char *err, size_t errlen) {
    const char *key = "tokenizer.ggml.tokens";
    const gguf_value *toks = tok__array(g, key, 1, err, errlen);
    if (!toks) {
        if (!gguf_get(g, key)) snprintf(err, errlen, "tok: %s not found", key);
        return -1;
    }
    if (toks->v.arr.n == 0 || toks->v.arr.n > INT32_MAX - 1) {
        snprintf(err, errlen, "tok: %s has %llu entries", key, (unsigned long long)toks->v.arr.n);
        return -1;
    }
    t->n_vocab = (int32_t)toks->v.arr.n;
    if (tok__copy_strs(toks, toks->v.arr.n, &t->text, &t->off, key, err, errlen)) return -1;
    t->score = calloc((size_t)t->n_vocab, sizeof(float));
    t->attr = malloc((size_t)t->n_vocab * sizeof(uint16_t));
    if (!t->score || !t->attr || tok__map_init(&t->vocab, t->n_vocab)) {
        snprintf(err, errlen, "tok: out of memory for %d tokens", t->n_vocab);
        return -1;
    }
    const gguf_value *sc, *ty;
    if (tok__numbers(g, "tokenizer.ggml.scores", t->n_vocab, &sc, err, errlen) ||
        tok__numbers(g, "tokenizer.ggml.token_type", t->n_vocab, &ty, err, errlen))
        return -1;
    static const uint16_t type_attr[7] = { TOK__UNDEF, TOK__NORMAL, TOK__UNKNOWN, TOK__CONTROL,
                                           TOK__USER, TOK__UNUSED, TOK__BYTE };
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (sc) t->score[i] = (float)gguf_arr_f64(sc, (uint64_t)i);
        int64_t ty_i = ty ? gguf_arr_i64(ty, (uint64_t)i) : 1;
        t->attr[i] = ty_i >= 0 && ty_i <= 6 ? type_attr[ty_i] : TOK__UNDEF;
        size_t n = t->off[i + 1] - t->off[i];
        if (n == 0) continue;   /* an empty token can never be produced by encoding */
        uint32_t p = tok__map_pos(&t->vocab, t->text, t->off, t->text + t->off[i], n, NULL, 0);
        if (t->vocab.slot[p] >= 0) {
            snprintf(err, errlen, "tok: duplicate token '%.*s' with ids %d and %d",
                     (int)(n > 40 ? 40 : n), t->text + t->off[i], t->vocab.slot[p], i);
            return -1;
        }
        t->vocab.slot[p] = i;
    }
    return 0;
}

static int tok__load_merges(tok *t, const gguf_ctx *g, char *err, size_t errlen) {
    const char *key = "tokenizer.ggml.merges";
    err[0] = 0;
    const gguf_value *m = tok__array(g, key, 1, err, errlen);
    if (!m) {
        if (!err[0]) snprintf(err, errlen, "tok: %s not found (needed by a gpt2 tokenizer)", key);
        return -1;
    }
    if (m->v.arr.n > INT32_MAX - 1) {
        snprintf(err, errlen, "tok: %s has %llu entries", key, (unsigned long long)m->v.arr.n);
        return -1;
    }
    if (tok__copy_strs(m, m->v.arr.n, &t->mtext, &t->moff, key, err, errlen)) return -1;
    if (tok__map_init(&t->merges, (int64_t)m->v.arr.n)) {
        snprintf(err, errlen, "tok: out of memory for %llu merges", (unsigned long long)m->v.arr.n);
        return -1;
    }
    for (int32_t r = 0; r < (int32_t)m->v.arr.n; r++) {
        const char *s = t->mtext + t->moff[r];
        size_t n = t->moff[r + 1] - t->moff[r];
        uint32_t p = tok__map_pos(&t->merges, t->mtext, t->moff, s, n, NULL, 0);
        if (t->merges.slot[p] < 0) t->merges.slot[p] = r;   /* a repeated merge keeps its first rank */
    }
    return 0;
}

int tok_load(const gguf_ctx *g, tok **out, char *err, size_t errlen) {
    *out = NULL;
    gguf_str model, pre = { "", 0 };
    if (gguf_get_str(g, "tokenizer.ggml.model", &model, err, errlen) != GGUF_OK) {
        if (!gguf_get(g, "tokenizer.ggml.model"))
            snprintf(err, errlen, "tok: tokenizer.ggml.model not found");
        return -1;
    }
    const gguf_value *pv = gguf_get(g, "tokenizer.ggml.pre");
    if (pv && gguf_get_str(g, "tokenizer.ggml.pre", &pre, err, errlen) != GGUF_OK) return -1;
    tok *t = calloc(1, sizeof(*t));
    if (!t) { snprintf(err, errlen, "tok: out of memory"); return -1; }
    if (gguf_str_eq(model, "llama")) {
        t->kind = TOK_SPM;
        t->bos = 1; t->eos = 2; t->unk = 0;
        t->add_bos = 1; t->add_space_prefix = 1;
    } else if (gguf_str_eq(model, "gpt2")) {
        t->kind = TOK_BPE;
        t->bos = 11; t->eos = 11; t->unk = -1;
    } else {
        snprintf(err, errlen, "tok: unsupported tokenizer.ggml.model '%.*s' (llama or gpt2)",
                 (int)(model.len > 40 ? 40 : model.len), model.ptr);
        goto fail;
    }
    t->eot = t->eom = -1;
    snprintf(t->pre_name, sizeof(t->pre_name), "%.*s",
             pre.len ? (int)(pre.len > 60 ? 60 : pre.len) : 7, pre.len ? pre.ptr : "default");
    if (tok__load_vocab(t, g, err, errlen)) goto fail;
    if (t->kind == TOK_BPE) {
        if (tok__load_merges(t, g, err, errlen)) goto fail;
        if (tok_pre_new(t->pre_name, &t->pre, err, errlen)) goto fail;
        t->add_bos = tok_pre_add_bos(t->pre);
    }
    if (tok__get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err, errlen) ||
        tok__get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen) ||
        tok__get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos, err, errlen))
        goto fail;
    if (t->kind == TOK_BPE) t->add_space_prefix = 0;   /* only SentencePiece adds the space */
    /* defaults out of range are disabled; keys out of range keep the default */
    int32_t *ids[5] = { &t->bos, &t->eos, &t->unk, &t->eot, &t->eom };
    for (int k = 0; k < 5; k++)
        if (*ids[k] >= t->n_vocab) *ids[k] = -1;
    tok__get_id(g, t, "tokenizer.ggml.bos_token_id", &t->bos);
    tok__get_id(g, t, "tokenizer.ggml.eos_token_id", &t->eos);
    tok__get_id(g, t, "tokenizer.ggml.unknown_token_id", &t->unk);
    tok__get_id(g, t, "tokenizer.ggml.eot_token_id", &t->eot);
    tok__get_id(g, t, "tokenizer.ggml.eom_token_id", &t->eom);
    if ((t->add_bos && t->bos < 0) || (t->add_eos && t->eos < 0)) {
        snprintf(err, errlen, "tok: tokenizer.ggml.add_%s_token is true but there is no %s id",
                 t->add_bos && t->bos < 0 ? "bos" : "eos", t->add_bos && t->bos < 0 ? "BOS" : "EOS");
        goto fail;
    }
    tok__special_flags(t, g);
    if (tok__special_list(t, g)) { snprintf(err, errlen, "tok: out of memory"); goto fail; }
    if (t->kind == TOK_SPM) {
        for (int b = 0; b < 256; b++) {
            char hex[7], one = (char)b;
            snprintf(hex, sizeof(hex), "<0x%02X>", b);
            int32_t id = tok__find(t, hex, 6);
            t->byte_tok[b] = id >= 0 ? id : tok__find(t, &one, 1);
        }
        if (tok__cpair_build(t)) { snprintf(err, errlen, "tok: out of memory"); goto fail; }
    }
    *out = t;
    return 0;
fail:
    tok_free(t);
    return -1;
}

void tok_free(tok *t) {
    if (!t) return;
    free(t->text); free(t->off); free(t->score); free(t->attr); free(t->vocab.slot);
    free(t->mtext); free(t->moff); free(t->merges.slot); free(t->special);
    free(t->cpair); free(t->cpair_used);
    tok_pre_free(t->pre);
    free(t);
}

tok_kind tok_kind_of(const tok *t) { return t->kind; }
const char *tok_pre_name(const tok *t) { return t->pre_name; }
int32_t tok_n_vocab(const tok *t) { return t->n_vocab; }
int32_t tok_bos(const tok *t) { return t->bos; }
int32_t tok_eos(const tok *t) { return t->eos; }
int tok_add_bos(const tok *t) { return t->add_bos; }
int tok_is_eog(const tok *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & TOK__EOG) != 0;
}

/* ---- encoding: output, heap of candidate merges -------------------------------------------- */

typedef struct { int32_t *ids; int64_t cap, n; } tok__out;

static void tok__emit(tok__out *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* A candidate merge of adjacent symbols left, right. key: -score (SPM) or rank (BPE), lower
 * first, then leftmost. na, nb: the sides' byte lengths when pushed (stale if they changed). */
typedef struct { double key; int32_t left, right; uint32_t na, nb; } tok__pair;
typedef struct { tok__pair *v; int64_t n, cap; } tok__heap;

static int tok__pair_less(const tok__pair *x, const tok__pair *y) {
    return x->key < y->key || (x->key == y->key && x->left < y->left);
}

static int tok__heap_push(tok__heap *h, tok__pair p) {
    if (h->n == h->cap) {
        int64_t cap = h->cap ? h->cap * 2 : 64;
        tok__pair *v = realloc(h->v, (size_t)cap * sizeof(*v));
        if (!v) return -1;
        h->v = v; h->cap = cap;
    }
    int64_t i = h->n++;
    while (i > 0 && tok__pair_less(&p, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = p;
    return 0;
}

static tok__pair tok__heap_pop(tok__heap *h) {
    tok__pair top = h->v[0], last = h->v[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && tok__pair_less(&h->v[c + 1], &h->v[c])) c++;
        if (!tok__pair_less(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0) h->v[i] = last;
    return top;
}

/* Symbols of one merge session: a doubly linked list over a byte string; symbol i covers
 * s[beg[i], beg[i] + len[i]); len 0 means merged into its left neighbour. */
typedef struct {
    const tok *t;
    tok__out *out;
    int32_t *prev, *next;
    uint32_t *beg, *len;
    int64_t cap;
    tok__heap heap;
    const char *s;
} tok__sess;

static int tok__sess_reserve(tok__sess *x, int64_t n) {
    if (n <= x->cap) return 0;
    int64_t cap = n > 2 * x->cap ? n : 2 * x->cap;
    int32_t *p = realloc(x->prev, (size_t)cap * sizeof(int32_t));
    if (p) x->prev = p;
    int32_t *q = realloc(x->next, (size_t)cap * sizeof(int32_t));
    if (q) x->next = q;
    uint32_t *b = realloc(x->beg, (size_t)cap * sizeof(uint32_t));
    if (b) x->beg = b;
    uint32_t *l = realloc(x->len, (size_t)cap * sizeof(uint32_t));
    if (l) x->len = l;
    if (!p || !q || !b || !l) return -1;
    x->cap = cap;
    return 0;
}

static void tok__sess_free(tok__sess *x) {
    free(x->prev); free(x->next); free(x->beg); free(x->len); free(x->heap.v);
}

/* Splits s[0, n) into UTF-8 characters (length from the lead byte, clipped at the end). */
static int64_t tok__sess_chars(tok__sess *x, const char *s, size_t n) {
    if (tok__sess_reserve(x, (int64_t)n + 1)) return -1;
    x->s = s;
    x->heap.n = 0;
    int64_t k = 0;
    for (size_t o = 0; o < n; k++) {
        size_t l = tok__char_len(s + o, n - o);
        x->beg[k] = (uint32_t)o;
        x->len[k] = (uint32_t)l;
        x->prev[k] = (int32_t)k - 1;
        o += l;
        x->next[k] = o == n ? -1 : (int32_t)k + 1;
    }
    return k;
}

/* Pushes the pair (l, r) if merging it is allowed. */
static int tok__sess_try(tok__sess *x, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    const tok *t = x->t;
    tok__pair p = { 0, l, r, x->len[l], x->len[r] };
    if (t->kind == TOK_SPM) {
        int32_t id = tok__find(t, x->s + x->beg[l], x->len[l] + x->len[r]);
        if (id < 0) return 0;
        p.key = -(double)t->score[id];
    } else {
        int32_t rank = tok__rank(t, x->s + x->beg[l], x->len[l], x->s + x->beg[r], x->len[r]);
        if (rank < 0) return 0;
        p.key = rank;
    }
    return tok__heap_push(&x->heap, p);
}

/* Runs the merges over the k symbols set up by tok__sess_chars. */
static int tok__sess_merge(tok__sess *x, int64_t k) {
    for (int64_t i = 1; i < k; i++)
        if (tok__sess_try(x, (int32_t)i - 1, (int32_t)i)) return -1;
    while (x->heap.n > 0) {
        tok__pair p = tok__heap_pop(&x->heap);
        int32_t l = p.left, r = p.right;
        if (x->len[l] == 0 || x->len[r] == 0 || x->len[l] != p.na || x->len[r] != p.nb)
            continue;   /* stale: a side was merged elsewhere since */
        x->len[l] += x->len[r];
        x->len[r] = 0;
        x->next[l] = x->next[r];
        if (x->next[r] >= 0) x->prev[x->next[r]] = l;
        if (tok__sess_try(x, x->prev[l], l) || tok__sess_try(x, l, x->next[l])) return -1;
    }
    return 0;
}

/* SPM: emits the symbols; a symbol that is not a token falls back to byte tokens. */
static void tok__spm_emit(tok__sess *x, int64_t k) {
    const tok *t = x->t;
    for (int64_t i = 0; i < k; i++) {
        if (x->len[i] == 0) continue;
        int32_t id = tok__find(t, x->s + x->beg[i], x->len[i]);
        if (id >= 0) { tok__emit(x->out, id); continue; }
        for (uint32_t j = 0; j < x->len[i]; j++) {
            int32_t b = t->byte_tok[(uint8_t)x->s[x->beg[i] + j]];
            if (b < 0) b = t->unk;
            if (b >= 0) tok__emit(x->out, b);
        }
    }
}

/* SPM: merges the escaped text s[0, n), cut where no token can span. */
static int tok__spm_cut_merge(tok__sess *x, const char *s, size_t n) {
    size_t seg = 0;
    for (size_t a = 0, la = n ? tok__char_len(s, n) : 0; a < n;) {
        size_t b = a + la, lb = b < n ? tok__char_len(s + b, n - b) : 0;
        if (b == n || !tok__cpair_has(x->t, tok__cpair_key(s + a, la, s + b, lb))) {
            int64_t k = tok__sess_chars(x, s + seg, b - seg);
            if (k < 0 || tok__sess_merge(x, k)) return -1;
            tok__spm_emit(x, k);
            seg = b;
        }
        a = b;
        la = lb;
    }
    return 0;
}

/* BPE: one pre-tokenized piece (tok_pre_fn). */
static int tok__bpe_piece(void *ud, const char *s, size_t n) {
    tok__sess *x = ud;
    const tok *t = x->t;
    if (tok_pre_ignore_merges(t->pre)) {
        int32_t id = tok__find(t, s, n);
        if (id >= 0) { tok__emit(x->out, id); return 0; }
    }
    int64_t k = tok__sess_chars(x, s, n);
    if (k < 0 || tok__sess_merge(x, k)) return -1;
    for (int64_t i = 0; i < k; i++) {
        if (x->len[i] == 0) continue;
        int32_t id = tok__find(t, s + x->beg[i], x->len[i]);
        if (id >= 0) { tok__emit(x->out, id); continue; }
        for (uint32_t j = 0; j < x->len[i]; j++) {   /* llama.cpp: single bytes, if tokens */
            int32_t b = tok__find(t, s + x->beg[i] + j, 1);
            if (b >= 0) tok__emit(x->out, b);
        }
    }
    return 0;
}

/* ---- special-token partition ------------------------------------------------------------ */

/* A fragment: raw text [off, off + len) when id < 0, else the special token id. */
typedef struct { size_t off, len; int32_t id; } tok__frag;

/* Splits the raw fragments of f[0, *n) around every occurrence of special token id; g is
 * scratch of the same capacity. Returns the array now holding the fragments. */
static tok__frag *tok__split_special(const tok *t, const char *text, int32_t id, tok__frag *f,
                                     tok__frag *g, int64_t *n) {
    const char *st = t->text + t->off[id];
    size_t sl = t->off[id + 1] - t->off[id];
    int64_t m = 0;
    int found = 0;
    for (int64_t i = 0; i < *n; i++) {
        if (f[i].id >= 0 || f[i].len < sl) { g[m++] = f[i]; continue; }
        size_t pos = f[i].off, end = f[i].off + f[i].len;
        for (;;) {
            const char *hit = memmem(text + pos, end - pos, st, sl);
            if (!hit) {
                if (end > pos) g[m++] = (tok__frag){ pos, end - pos, -1 };
                break;
            }
            found = 1;
            size_t at = (size_t)(hit - text);
            if (at > pos) g[m++] = (tok__frag){ pos, at - pos, -1 };
            g[m++] = (tok__frag){ at, sl, id };
            pos = at + sl;
            if (t->attr[id] & TOK__RSTRIP)
                while (pos < end && isspace((unsigned char)text[pos])) pos++;
        }
    }
    if (!found) return f;
    *n = m;
    return g;
}

/* ---- encode ----------------------------------------------------------------------------- */

int64_t tok_encode(const tok *t, const char *text, size_t len, int add_special, int parse_special,
                   int32_t *ids, int64_t cap) {
    tok__out out = { ids, cap < 0 ? 0 : cap, 0 };
    tok__sess x = { .t = t, .out = &out };
    tok__frag one = { 0, len, -1 }, *frags = &one, *buf[2] = { NULL, NULL };
    int64_t nf = len > 0 ? 1 : 0;
    char *esc = NULL;
    int64_t rc = -1;
    uint8_t present[256] = { 0 };   /* bytes of the text: most special tokens fail on the first */
    for (size_t i = 0; i < len; i++) present[(uint8_t)text[i]] = 1;
    for (int32_t k = 0; k < t->n_special && nf > 0; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (TOK__CONTROL | TOK__UNKNOWN))) continue;
        size_t sl = t->off[id + 1] - t->off[id];
        if (sl > len || !present[(uint8_t)t->text[t->off[id]]] ||
            !memmem(text, len, t->text + t->off[id], sl))
            continue;
        if (!buf[0]) {   /* each occurrence adds at most two fragments */
            buf[0] = malloc((2 * len + 2) * sizeof(tok__frag));
            buf[1] = malloc((2 * len + 2) * sizeof(tok__frag));
            if (!buf[0] || !buf[1]) goto done;
            buf[0][0] = one;
            frags = buf[0];
        }
        frags = tok__split_special(t, text, id, frags, frags == buf[0] ? buf[1] : buf[0], &nf);
    }
    if (add_special && t->add_bos) tok__emit(&out, t->bos);
    if (t->kind == TOK_SPM) {
        esc = malloc(3 * len + 4);
        if (!esc) goto done;
        int prev_special = 1;   /* the text's start counts as following a special token */
        for (int64_t i = 0; i < nf; i++) {
            if (frags[i].id >= 0) { tok__emit(&out, frags[i].id); prev_special = 1; continue; }
            size_t m = 0;
            if (t->add_space_prefix && prev_special) { memcpy(esc, "\xe2\x96\x81", 3); m = 3; }
            for (size_t j = 0; j < frags[i].len; j++) {
                char c = text[frags[i].off + j];
                if (c == ' ') { memcpy(esc + m, "\xe2\x96\x81", 3); m += 3; }
                else esc[m++] = c;
            }
            if (tok__spm_cut_merge(&x, esc, m)) goto done;
            prev_special = 0;
        }
    } else {
        for (int64_t i = 0; i < nf; i++) {
            if (frags[i].id >= 0) { tok__emit(&out, frags[i].id); continue; }
            if (tok_pre_split(t->pre, text + frags[i].off, frags[i].len, tok__bpe_piece, &x))
                goto done;
        }
    }
    if (add_special && t->add_eos) tok__emit(&out, t->eos);
    rc = out.n;
done:
    free(esc);
    free(buf[0]);
    free(buf[1]);
    tok__sess_free(&x);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------------ */

/* Appends bytes to buf while they fit; counts them all. skip_space: drop one leading ' '. */
typedef struct { char *buf; int64_t cap, n; int skip_space; } tok__sink;

static void tok__put(tok__sink *k, const char *s, size_t n) {
    if (k->skip_space && n > 0) {
        if (s[0] == ' ') { s++; n--; }
        k->skip_space = 0;
    }
    for (size_t i = 0; i < n; i++, k->n++)
        if (k->n < k->cap) k->buf[k->n] = s[i];
}

static void tok__piece_to(const tok *t, int32_t id, int special, tok__sink *k) {
    if (id < 0 || id >= t->n_vocab) return;
    uint16_t a = t->attr[id];
    const char *s = t->text + t->off[id];
    size_t n = t->off[id + 1] - t->off[id];
    if (a & (TOK__UNKNOWN | TOK__CONTROL)) {
        if (special) tok__put(k, s, n);
    } else if (a & TOK__USER) {
        tok__put(k, s, n);
    } else if (a & TOK__NORMAL) {
        for (size_t i = 0; i < n;) {
            size_t adv;
            uint32_t cp = tok_utf8_decode(s + i, n - i, &adv);
            int b = t->kind == TOK_BPE ? tok_pre_cp_to_byte(cp) : -1;
            if (t->kind == TOK_SPM && cp == 0x2581) tok__put(k, " ", 1);
            else if (b >= 0) { char c = (char)b; tok__put(k, &c, 1); }
            else tok__put(k, s + i, adv);   /* BPE: a character outside the byte table as is */
            i += adv;
        }
    } else if ((a & TOK__BYTE) && n == 6 && memcmp(s, "<0x", 3) == 0) {
        char c = (char)strtol((char[3]){ s[3], s[4], 0 }, NULL, 16);
        tok__put(k, &c, 1);
    }
}

int tok_piece(const tok *t, int32_t id, char *buf, int cap, int special) {
    tok__sink k = { buf, cap < 0 ? 0 : cap, 0, 0 };
    tok__piece_to(t, id, special, &k);
    return (int)k.n;
}

int64_t tok_decode(const tok *t, const int32_t *ids, int64_t n, char *buf, int64_t cap) {
    tok__sink k = { buf, cap > 0 ? cap - 1 : 0, 0, 0 };
    for (int64_t i = 0; i < n; i++) {
        k.skip_space = i == 0 && t->kind == TOK_SPM && t->add_space_prefix;
        tok__piece_to(t, ids[i], 0, &k);
        k.skip_space = 0;
    }
    if (cap > 0) buf[k.n < cap - 1 ? k.n : cap - 1] = 0;
    return k.n;
}
