/* tests/http/test_think.c — the reasoning split (launch/oai_think.c) against hand-written
 * expectations: an answer with and without a leading "<think>", fed whole and in pieces cut
 * at every byte position (each tag split across two pieces somewhere), in single bytes, with
 * no "</think>" at all (all reasoning), with a "<" that is no tag, and with UTF-8 text around
 * the tags; the concatenated outputs must be the same whatever the cut. */
#include <stdio.h>
#include <string.h>

#include "oai_think.h"

static int n_pass, n_fail;

static void check(int ok, const char *what) {
    if (ok) n_pass++;
    else {
        n_fail++;
        printf("FAIL: %s\n", what);
    }
}

/* feeds s in pieces cut at the positions cuts[0..nc), collects both streams */
static void run(const char *s, const size_t *cuts, int nc, char *r, char *c) {
    oai_think t;
    oai_think_init(&t);
    size_t rl = 0, cl = 0, at = 0, n = strlen(s);
    char rb[256], cb[256];
    for (int k = 0; k <= nc; k++) {
        size_t end = k < nc ? cuts[k] : n, rn, cn;
        oai_think_feed(&t, s + at, end - at, k == nc, rb, &rn, cb, &cn);
        memcpy(r + rl, rb, rn);
        memcpy(c + cl, cb, cn);
        rl += rn;
        cl += cn;
        at = end;
    }
    r[rl] = c[cl] = 0;
}

static void case_all_cuts(const char *s, const char *want_r, const char *want_c, const char *what) {
    char r[256], c[256], msg[160];
    size_t n = strlen(s);
    int ok = 1;
    run(s, NULL, 0, r, c);
    ok &= !strcmp(r, want_r) && !strcmp(c, want_c);
    for (size_t a = 0; a <= n && ok; a++)   /* one cut anywhere, and two cuts anywhere */
        for (size_t b = a; b <= n && ok; b++) {
            size_t cuts[2] = { a, b };
            run(s, cuts, 2, r, c);
            ok &= !strcmp(r, want_r) && !strcmp(c, want_c);
        }
    size_t ones[200];
    for (size_t i = 0; i < n; i++) ones[i] = i + 1;
    run(s, ones, (int)n - 1, r, c);   /* a byte at a time */
    ok &= !strcmp(r, want_r) && !strcmp(c, want_c);
    snprintf(msg, sizeof msg, "%s (whole, every 1 and 2 cuts, byte by byte)", what);
    check(ok, msg);
    if (!ok) printf("  got reason \"%s\" content \"%s\"\n", r, c);
}

int main(void) {
    case_all_cuts("<think>\nLet me see.\n</think>\n\nThe answer is 4.", "\nLet me see.\n",
                  "\n\nThe answer is 4.", "leading <think> dropped, thought and answer split");
    case_all_cuts("Hmm, 2+2.</think>4", "Hmm, 2+2.", "4", "no <think> (the template opened it)");
    case_all_cuts("still thinking <thi", "still thinking <thi", "",
                  "no </think>: all reasoning, a partial tag flushed at the end");
    case_all_cuts("a < b </thinker></think>done", "a < b </thinker>", "done",
                  "a '<' and a longer word are no tag");
    case_all_cuts("<thin>x</think>y", "<thin>x", "y", "a near-miss of <think> is reasoning text");
    case_all_cuts("\xe6\x80\x9d\xe8\x80\x83</think>\xe7\xad\x94", "\xe6\x80\x9d\xe8\x80\x83",
                  "\xe7\xad\x94", "UTF-8 around the tag stays whole");
    case_all_cuts("</think>", "", "", "an empty thought and answer");
    case_all_cuts("x</think>a</think>b", "x", "a</think>b", "only the first </think> ends the thought");
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
