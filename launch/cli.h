/* launch/cli.h — shared helpers of the sampan subcommands: strict number parsing, one-line
 * errors, peak RSS (the clock is runtime/clock.h's clk_now). Subcommands return the process exit status:
 * 0 ok, 1 runtime error (bad model, bad input), 2 usage error. */
#ifndef SAMPAN_CLI_H
#define SAMPAN_CLI_H

#include <stddef.h>
#include <stdint.h>

int cmd_run(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_model(int argc, char **argv);
int cmd_topo(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* prints "sampan: <msg>\n" to stderr */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* strict parsers: the whole string must be a number in [lo, hi]; 0 ok, -1 error (printed) */
int cli_int(const char *opt, const char *s, long lo, long hi, long *out);
int cli_float(const char *opt, const char *s, double lo, double hi, double *out);
/* --kv-type f32|f16|bf16 -> QT_F32, QT_F16 or QT_BF16 (kernels/qtypes.h); --backend
 * cpu|cuda|auto -> that name (model_opts.backend). 0, or -1 with a one-line error (printed). */
int cli_kv_type(const char *opt, const char *s, int *out);
int cli_backend(const char *opt, const char *s, const char **out);
/* argv[i+1] or an error naming the option */
const char *cli_arg(int argc, char **argv, int *i);
long cli_peak_rss_bytes(void);
/* a copy of n bytes with each byte that is not part of valid UTF-8 replaced by U+FFFD, for
 * JSON output (a token may end inside a multi-byte character); NULL when out of memory.
 * utf8_sanitize (runtime/utf8.h) under the subcommands' name. */
char *cli_utf8_valid(const char *s, size_t n);

#endif
