/* cli: what every llmux command shares — global options, exit codes, option parsing and the
 * helpers that keep stdout for results and stderr for diagnostics. */
#ifndef LLMUX_CLI_H
#define LLMUX_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#define CLI_DEFAULT_URL "http://127.0.0.1:8420"

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_USAGE = 1,        /* bad arguments, or a local problem: bad input, write error */
    CLI_EXIT_API = 2,          /* the gateway answered with an error, or a gather item failed */
    CLI_EXIT_CONN = 3,         /* no (complete) answer: refused, unresolvable, reset, timed out */
    CLI_EXIT_INTERRUPTED = 130 /* Ctrl-C; the request was aborted, so the gateway cancels it */
};

/* Global options; every command accepts them too, before or after its own. */
struct cli {
    const char *url;       /* gateway base URL */
    const char *key;       /* API key, or NULL to send no Authorization header */
    long timeout_ms;       /* request deadline; 0 = none */
    bool verbose;
    const char *cmd;       /* command being run, for "Try 'llmux CMD --help'" */
};

/* Long option codes of the global options (above any short option character). */
enum {
    CLI_OPT_URL = 0x100,
    CLI_OPT_KEY,
    CLI_OPT_TIMEOUT,
    CLI_OPT_VERSION,
};

/* Entries every command's long-option table starts with (the table is data, not code). */
#define CLI_COMMON_LONGOPTS                                  \
    {"url", required_argument, NULL, CLI_OPT_URL},           \
    {"key", required_argument, NULL, CLI_OPT_KEY},           \
    {"timeout", required_argument, NULL, CLI_OPT_TIMEOUT},   \
    {"verbose", no_argument, NULL, 'v'},                     \
    {"help", no_argument, NULL, 'h'},                        \
    {"version", no_argument, NULL, CLI_OPT_VERSION}

/* Short options of the global set, prefix of every command's optstring: '+' stops at the first
 * operand (so a prompt may contain "-v"), ':' lets us word missing-argument errors ourselves. */
#define CLI_COMMON_SHORTOPTS "+:hv"

enum cli_opt_result {
    CLI_OPT_DONE,     /* handled, go on */
    CLI_OPT_HELP,     /* --help: caller prints its usage to stdout and exits 0 */
    CLI_OPT_EXIT,     /* --version printed: exit 0 */
    CLI_OPT_BAD,      /* diagnosed on stderr: exit with CLI_EXIT_USAGE */
};

/* What a command's option parser returns when --help or --version was served: exit 0 now. */
#define CLI_HANDLED (-1)

/* Fills defaults from the environment ($LLMUX_URL, $LLMUX_API_KEY). */
void cli_init(struct cli *c);
/* Handles one getopt_long result that the command did not recognise itself. */
enum cli_opt_result cli_common_opt(struct cli *c, int opt, const char *arg, char **argv);
/* Checks what the options produced (URL and key usable); -1 after a diagnostic. */
int cli_check(const struct cli *c);

/* "llmux: <message>" on stderr; returns CLI_EXIT_USAGE after adding the --help hint. */
int cli_usage_error(const struct cli *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "llmux: <message>" on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Strict decimal parse of an option value into [min, max]; -1 after a usage diagnostic. */
int cli_parse_long(const struct cli *c, const char *name, const char *s, long min, long max,
                   long *out);

/* The model to use: -m, else $LLMUX_MODEL, else NULL. */
const char *cli_model(const char *flag);
/* Says a model is needed and how to find one; returns CLI_EXIT_USAGE. */
int cli_no_model(const struct cli *c);

/* Writes s to f with control characters (terminal escapes included) shown as '?'; text from
 * the network goes through here before it reaches stderr. */
void cli_put_clean(FILE *f, const char *s, size_t n);
/* Prints an OpenAI-shaped error object ({"message","type","code"}) as one stderr line:
 * "llmux: [what: ]HTTP <status> <code>: <message>". */
void cli_api_error(const char *what, long status, const json_t *error);
/* Writes one JSON value as a compact line on stdout and flushes it; -1 on write failure. */
int cli_print_json_line(const json_t *v);
/* Flushes and checks stdout at exit, so "llmux models >/dev/full" does not pass silently. */
int cli_finish_stdout(int code);

/* Commands: argc/argv start at the command name. Each returns an exit code. */
int cmd_chat(struct cli *c, int argc, char **argv);
int cmd_gather(struct cli *c, int argc, char **argv);
int cmd_models(struct cli *c, int argc, char **argv);
int cmd_health(struct cli *c, int argc, char **argv);
int cmd_metrics(struct cli *c, int argc, char **argv);
int cmd_jobs(struct cli *c, int argc, char **argv);
int cmd_spend(struct cli *c, int argc, char **argv);

#endif
