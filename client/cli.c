/* cli: shared option handling and diagnostics for the llmux commands (see cli.h).
 * Nothing here touches the network; http.c does. */
#include "client/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

void cli_init(struct cli *c)
{
    c->url = env_nonempty("LLMUX_URL");
    if (!c->url)
        c->url = CLI_DEFAULT_URL;
    c->key = env_nonempty("LLMUX_API_KEY");
    c->timeout_ms = 0;
    c->verbose = false;
    c->cmd = NULL;
}

void cli_err(const char *fmt, ...)
{
    va_list ap;
    fputs("llmux: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage_error(const struct cli *c, const char *fmt, ...)
{
    va_list ap;
    fputs("llmux: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (c->cmd)
        fprintf(stderr, "\nTry 'llmux %s --help'.\n", c->cmd);
    else
        fputs("\nTry 'llmux --help'.\n", stderr);
    return CLI_EXIT_USAGE;
}

int cli_parse_long(const struct cli *c, const char *name, const char *s, long min, long max,
                   long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        cli_usage_error(c, "%s wants a whole number from %ld to %ld, not '%s'", name, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

enum cli_opt_result cli_common_opt(struct cli *c, int opt, const char *arg, char **argv)
{
    switch (opt) {
    case CLI_OPT_URL:
        c->url = arg;
        return CLI_OPT_DONE;
    case CLI_OPT_KEY:
        c->key = *arg ? arg : NULL;
        return CLI_OPT_DONE;
    case CLI_OPT_TIMEOUT:
        /* The gateway caps deadlines itself; the upper bound only keeps arithmetic sane. */
        return cli_parse_long(c, "--timeout", arg, 1, 86400000L, &c->timeout_ms) < 0
                   ? CLI_OPT_BAD : CLI_OPT_DONE;
    case 'v':
        c->verbose = true;
        return CLI_OPT_DONE;
    case 'h':
        return CLI_OPT_HELP;
    case CLI_OPT_VERSION:
        printf("llmux %s\n", LLMUX_VERSION);
        return CLI_OPT_EXIT;
    case ':':
        cli_usage_error(c, "option '%s' needs a value", argv[optind - 1]);
        return CLI_OPT_BAD;
    default:
        /* getopt leaves the culprit in optopt (short) or just before optind (long). */
        if (optopt && optopt < 0x100)
            cli_usage_error(c, "unknown option '-%c'", optopt);
        else
            cli_usage_error(c, "unknown option '%s'", argv[optind - 1]);
        return CLI_OPT_BAD;
    }
}

int cli_check(const struct cli *c)
{
    if (!*c->url) {
        cli_usage_error(c, "--url is empty");
        return -1;
    }
    /* The key becomes a header line: a CR or LF in it would smuggle in other headers. */
    for (const char *p = c->key; p && *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            cli_usage_error(c, "the API key contains control characters");
            return -1;
        }
    }
    return 0;
}

const char *cli_model(const char *flag)
{
    return flag && *flag ? flag : env_nonempty("LLMUX_MODEL");
}

int cli_no_model(const struct cli *c)
{
    return cli_usage_error(c, "no model given: pass -m MODEL or set LLMUX_MODEL "
                              "('llmux models' lists the models the gateway serves)");
}

void cli_put_clean(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
}

static void put_json_str(FILE *f, const json_t *v)
{
    if (json_is_string(v))
        cli_put_clean(f, json_string_value(v), json_string_length(v));
}

void cli_api_error(const char *what, long status, const json_t *error)
{
    const json_t *msg = json_object_get(error, "message");
    const json_t *code = json_object_get(error, "code");
    if (!json_is_string(code))
        code = json_object_get(error, "type");
    fputs("llmux: ", stderr);
    if (what)
        fprintf(stderr, "%s: ", what);
    if (status)
        fprintf(stderr, "HTTP %ld", status);
    if (json_is_string(code)) {
        fputs(status ? " " : "", stderr);
        put_json_str(stderr, code);
    }
    if (json_is_string(msg)) {
        fputs(status || json_is_string(code) ? ": " : "", stderr);
        put_json_str(stderr, msg);
    }
    fputc('\n', stderr);
}

int cli_print_json_line(const json_t *v)
{
    if (json_dumpf(v, stdout, JSON_COMPACT) < 0 || fputc('\n', stdout) == EOF
        || fflush(stdout) == EOF)
        return -1;
    return 0;
}

int cli_finish_stdout(int code)
{
    if (fflush(stdout) == EOF || ferror(stdout)) {
        cli_err("writing output: %s", strerror(errno));
        return code ? code : CLI_EXIT_USAGE;
    }
    return code;
}
