/* launch/cli.c — helpers shared by the sampan subcommands (see cli.h). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "qtypes.h"
#include "utf8.h"

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("sampan: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        cli_error("%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_float(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        cli_error("%s expects a number in [%g, %g], got '%s'", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_kv_type(const char *opt, const char *s, int *out) {
    static const struct { const char *name; int type; } kv[] = {
        { "f32", QT_F32 }, { "f16", QT_F16 }, { "bf16", QT_BF16 },
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (!strcmp(s, kv[i].name)) {
            *out = kv[i].type;
            return 0;
        }
    cli_error("%s expects f32, f16 or bf16, got '%s'", opt, s);
    return -1;
}

int cli_backend(const char *opt, const char *s, const char **out) {
    static const char *const names[] = { "cpu", "cuda", "auto" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i])) {
            *out = names[i];
            return 0;
        }
    cli_error("%s expects cpu, cuda or auto, got '%s'", opt, s);
    return -1;
}

const char *cli_arg(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_error("option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

long cli_peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

char *cli_utf8_valid(const char *s, size_t n) { return utf8_sanitize(s, n); }
