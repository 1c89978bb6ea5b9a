/* runtime/tok_pre.c — byte-level BPE pre-tokenizers: the regex splits per `tokenizer.ggml.pre`,
 * run with PCRE2, and GPT-2's byte -> unicode mapping of the resulting pieces.
 *
 * The regexes are the Hugging Face ones in the form llama.cpp uses (its test vectors are our
 * reference). Semantics follow llama.cpp's splitter:
 *   - regexes apply in sequence; regex k sees each piece left by regex k-1 as a separate
 *     subject (so `$` and `(?!\S)` see the piece's end), and its matches AND the gaps between
 *     them become the new pieces;
 *   - the subject is the text's code points with non-ASCII white space replaced by U+000B (its
 *     engine's view) and invalid UTF-8 bytes decoded as U+FFFD; pieces are kept as code point
 *     ranges and encoded from the original code points;
 *   - `$` means end of piece only (PCRE2_DOLLAR_ENDONLY, as in ECMAScript).
 * The GPT-2 and Llama-3 regexes, which llama.cpp runs as hand-written matchers, are given here
 * with their final `|\s+` alternative, which is what those matchers implement.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tok_pre.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RX_CONTRACT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RX_LLAMA3 RX_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2 RX_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* DeepSeek: CJK runs (U+4E00-U+9FA5, U+0800-U+4E00, Hangul U+AC00-U+D7FF) */
#define RX_DS_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
/* DeepSeek LLM: cased letters as listed in its tokenizer.json (an older Unicode's \p{LC}) */
#define RX_DS_LETTERS "\\s?[\\x{41}-\\x{5A}\\x{61}-\\x{7A}\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}" \
    "\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}" \
    "\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}" \
    "\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}" \
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}" \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}" \
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}" \
    "\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}" \
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}" \
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}" \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}" \
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}" \
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}" \
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}" \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}" \
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}" \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}" \
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+"
/* DeepSeek LLM: ASCII and full-width punctuation, quotes U+2018-U+201F, U+3000-U+3002 */
#define RX_DS_PUNCT "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}" \
    "\\x{3000}-\\x{3002}]+"

#define TOK_PRE_MAX_RX 6

typedef struct {
    const char *names;      /* the `tokenizer.ggml.pre` values, separated by '|' */
    int ignore_merges, add_bos;
    const char *rx[TOK_PRE_MAX_RX];
} tok__pre_def;

static const tok__pre_def tok__pre_defs[] = {
    { "default", 0, 0,
      { "[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]" } },
    { "gpt-2|phi-2|mpt|olmo|jais", 0, 0, { RX_GPT2 } },
    { "starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b", 0, 0,
      { "\\p{N}", RX_GPT2 } },
    { "falcon", 0, 0, { "[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]" } },
    { "deepseek-coder", 0, 0,
      { "[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RX_DS_CJK, "\\p{N}" } },
    { "deepseek-llm", 0, 0,
      { "[\\r\\n]", RX_DS_LETTERS, RX_DS_PUNCT, "\\s+$", RX_DS_CJK, "\\p{N}+" } },
    /* DeepSeek-V3 / R1 (llama.cpp's DEEPSEEK3_LLM) */
    { "deepseek-v3", 0, 0,
      { "\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
        " ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" } },
    { "llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2", 1, 1, { RX_LLAMA3 } },
    { "dbrx|smaug-bpe", 0, 0, { RX_LLAMA3 } },
    { "qwen2|deepseek-r1-qwen|stablelm2|megrez", 0, 0, { RX_QWEN2 } },
};

struct tok_pre {
    const tok__pre_def *def;
    char name[64];
    int n_rx;
    pcre2_code *rx[TOK_PRE_MAX_RX];
};

static int tok__name_in(const char *names, const char *name) {
    size_t n = strlen(name);
    for (const char *p = names; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

int tok_pre_new(const char *name, tok_pre **out, char *err, size_t errlen) {
    *out = NULL;
    if (!name || !*name) name = "default";
    const tok__pre_def *def = NULL;
    for (size_t i = 0; i < sizeof(tok__pre_defs) / sizeof(tok__pre_defs[0]); i++)
        if (tok__name_in(tok__pre_defs[i].names, name)) def = &tok__pre_defs[i];
    if (!def) {
        snprintf(err, errlen, "tok: unknown pre-tokenizer '%s' (tokenizer.ggml.pre)", name);
        return -1;
    }
    tok_pre *p = calloc(1, sizeof(*p));
    if (!p) { snprintf(err, errlen, "tok: out of memory"); return -1; }
    p->def = def;
    snprintf(p->name, sizeof(p->name), "%s", name);
    for (int i = 0; i < TOK_PRE_MAX_RX && def->rx[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        p->rx[i] = pcre2_compile((PCRE2_SPTR)def->rx[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ec, &eo, NULL);
        if (!p->rx[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            snprintf(err, errlen, "tok: pre-tokenizer '%s' regex %d at offset %zu: %s", name, i,
                     (size_t)eo, (const char *)msg);
            tok_pre_free(p);
            return -1;
        }
        pcre2_jit_compile(p->rx[i], PCRE2_JIT_COMPLETE);  /* optional: the interpreter remains */
        p->n_rx = i + 1;
    }
    *out = p;
    return 0;
}

void tok_pre_free(tok_pre *p) {
    if (!p) return;
    for (int i = 0; i < p->n_rx; i++) pcre2_code_free(p->rx[i]);
    free(p);
}

const char *tok_pre_name_of(const tok_pre *p) { return p->name; }
int tok_pre_ignore_merges(const tok_pre *p) { return p->def->ignore_merges; }
int tok_pre_add_bos(const tok_pre *p) { return p->def->add_bos; }

/* ---- byte-level mapping: printable Latin-1 bytes map to themselves, the 68 others to
 * U+0100.. in byte order (0x00-0x20, 0x7F-0xA0, 0xAD) */
uint32_t tok_pre_byte_to_cp(uint8_t b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 0x100u + b;
    if (b <= 0xA0) return 0x100u + 33 + (b - 0x7Fu);
    return 0x100u + 67;  /* 0xAD */
}

int tok_pre_cp_to_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143) return 0xAD;
    return -1;
}

uint32_t tok_utf8_decode(const char *s, size_t len, size_t *adv) {
    const uint8_t *u = (const uint8_t *)s;
    uint8_t b = u[0];
    *adv = 1;
    if (b < 0x80) return b;
    int n = (b & 0x40) == 0 ? 0 : (b & 0x20) == 0 ? 2 : (b & 0x10) == 0 ? 3 : (b & 0x08) == 0 ? 4 : 0;
    if (n == 0 || (size_t)n > len) return 0xFFFD;
    uint32_t cp = b & (0x7Fu >> n);
    for (int i = 1; i < n; i++) {
        if ((u[i] & 0xC0) != 0x80) return 0xFFFD;
        cp = (cp << 6) | (u[i] & 0x3Fu);
    }
    *adv = (size_t)n;
    return cp;
}

int tok_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Unicode White_Space outside ASCII (the set llama.cpp maps to U+000B) */
static int tok__is_uspace(uint32_t c) {
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- splitting. Pieces are code point ranges [beg, end) over the decoded text. */
typedef struct {
    uint32_t *cp;          /* n code points, as decoded (may be a surrogate or > U+10FFFF) */
    int64_t n;
    char *sub;             /* subject handed to PCRE2: valid UTF-8 */
    int64_t *sub_off;      /* [n + 1] byte offset of code point i in sub */
    int64_t *b2c;          /* [sub_len + 1] code point index of a byte offset in sub */
    int64_t *beg[2], *end[2];
    int64_t npieces[2];
} tok__split;

static void tok__split_free(tok__split *s) {
    free(s->cp); free(s->sub); free(s->sub_off); free(s->b2c);
    for (int i = 0; i < 2; i++) { free(s->beg[i]); free(s->end[i]); }
}

static int tok__split_init(tok__split *s, const char *text, size_t len) {
    memset(s, 0, sizeof(*s));
    s->cp = malloc((len + 1) * sizeof(uint32_t));
    s->sub = malloc(len * 3 + 4);          /* an invalid byte (1) can grow to U+FFFD (3) */
    s->sub_off = malloc((len + 1) * sizeof(int64_t));
    s->b2c = malloc((len * 3 + 4) * sizeof(int64_t));
    for (int i = 0; i < 2; i++) {
        s->beg[i] = malloc((len + 1) * sizeof(int64_t));
        s->end[i] = malloc((len + 1) * sizeof(int64_t));
    }
    if (!s->cp || !s->sub || !s->sub_off || !s->b2c || !s->beg[0] || !s->beg[1] || !s->end[0] ||
        !s->end[1])
        return -1;
    int64_t n = 0, sb = 0;
    for (size_t i = 0; i < len;) {
        size_t adv;
        uint32_t c = tok_utf8_decode(text + i, len - i, &adv);
        i += adv;
        if (c > 0x10FFFF) c = 0xFFFD;   /* llama.cpp cannot re-encode these either */
        s->cp[n] = c;
        uint32_t v = c;
        if (v >= 0xD800 && v <= 0xDFFF) v = 0xFFFD;   /* PCRE2 refuses surrogates */
        if (tok__is_uspace(v)) v = 0x0B;
        s->sub_off[n] = sb;
        int k = tok_utf8_encode(v, s->sub + sb);
        for (int j = 0; j < k; j++) s->b2c[sb + j] = n;
        sb += k;
        n++;
    }
    s->sub_off[n] = sb;
    s->b2c[sb] = n;
    s->n = n;
    return 0;
}

static void tok__push(tok__split *s, int w, int64_t b, int64_t e) {
    int64_t k = s->npieces[w]++;
    s->beg[w][k] = b;
    s->end[w][k] = e;
}

/* Splits every piece of side r into side w by regex rx. */
static int tok__split_rx(tok__split *s, const pcre2_code *rx, pcre2_match_data *md, int r) {
    int w = 1 - r;
    s->npieces[w] = 0;
    for (int64_t k = 0; k < s->npieces[r]; k++) {
        int64_t pb = s->sub_off[s->beg[r][k]], pe = s->sub_off[s->end[r][k]];
        PCRE2_SPTR subj = (PCRE2_SPTR)(s->sub + pb);
        PCRE2_SIZE plen = (PCRE2_SIZE)(pe - pb), off = 0, last = 0;
        uint32_t opts = 0;
        while (off <= plen) {
            int rc = pcre2_match(rx, subj, plen, off, opts | PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                rc = pcre2_match(rx, subj, plen, off, opts | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                                 md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) {
                if (opts == 0 || off >= plen) break;
                /* after an empty match: step one character and search again */
                off++;
                while (off < plen && (subj[off] & 0xC0) == 0x80) off++;
                opts = 0;
                continue;
            }
            if (rc < 0) return -1;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (ov[1] == ov[0]) {   /* empty match: no piece; retry non-empty at this point */
                off = ov[0];
                opts = PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
                continue;
            }
            if (ov[0] > last) tok__push(s, w, s->b2c[pb + (int64_t)last], s->b2c[pb + (int64_t)ov[0]]);
            tok__push(s, w, s->b2c[pb + (int64_t)ov[0]], s->b2c[pb + (int64_t)ov[1]]);
            last = off = ov[1];
            opts = 0;
        }
        if (last < plen) tok__push(s, w, s->b2c[pb + (int64_t)last], s->b2c[pe]);
    }
    return 0;
}

int tok_pre_split(const tok_pre *p, const char *text, size_t len, tok_pre_fn fn, void *ud) {
    if (len == 0) return 0;
    tok__split s;
    pcre2_match_data *md = NULL;
    char *enc = NULL;
    int rc = -1;
    if (tok__split_init(&s, text, len) != 0) goto done;
    md = pcre2_match_data_create(4, NULL);
    enc = malloc(len * 8 + 8);   /* a code point is <= 4 bytes, each byte <= 2 once mapped */
    if (!md || !enc) goto done;
    int r = 0;
    s.npieces[0] = 0;
    tok__push(&s, 0, 0, s.n);
    for (int i = 0; i < p->n_rx; i++) {
        if (tok__split_rx(&s, p->rx[i], md, r) != 0) goto done;
        r = 1 - r;
    }
    rc = 0;
    for (int64_t k = 0; k < s.npieces[r] && rc == 0; k++) {
        size_t m = 0;
        for (int64_t i = s.beg[r][k]; i < s.end[r][k]; i++) {
            char u[4];
            int nb = tok_utf8_encode(s.cp[i], u);
            for (int j = 0; j < nb; j++) m += (size_t)tok_utf8_encode(tok_pre_byte_to_cp((uint8_t)u[j]), enc + m);
        }
        rc = fn(ud, enc, m);
    }
done:
    free(enc);
    pcre2_match_data_free(md);
    tok__split_free(&s);
    return rc;
}
