/* main: the llmux command-line client — global options, then dispatch to one command.
 * Results go to stdout, diagnostics to stderr; the exit codes are in cli.h and llmux(1). */
#include <stdio.h>
#include <string.h>

#include "client/cli.h"
#include "client/http.h"

struct command {
    const char *name;
    int (*run)(struct cli *c, int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"chat", cmd_chat, "send a chat completion; tokens stream to stdout as they arrive"},
    {"gather", cmd_gather, "run one prompt per input line at once, results as JSON lines"},
    {"jobs", cmd_jobs, "background jobs: submit, get, wait, cancel, list"},
    {"models", cmd_models, "list the models the gateway serves"},
    {"spend", cmd_spend, "spend, budget and remaining per key and model"},
    {"health", cmd_health, "check that the gateway is up (--ready: ready to serve)"},
    {"metrics", cmd_metrics, "print the gateway's Prometheus metrics"},
};

static void usage(FILE *f)
{
    fputs("Usage: llmux [OPTIONS] COMMAND [COMMAND OPTIONS] [ARGS]\n"
          "\n"
          "Commands:\n", f);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fputs("  help CMD  show the options of a command\n"
          "\n"
          "Options (every command accepts them):\n"
          "  --url URL      gateway address (default $LLMUX_URL, else " CLI_DEFAULT_URL ")\n"
          "  --key KEY      API key (default $LLMUX_API_KEY)\n"
          "  --timeout MS   deadline for the request, sent as X-Llmux-Timeout-Ms\n"
          "  -v, --verbose  show request id, upstream, attempts and timing on stderr\n"
          "  -h, --help     show help\n"
          "  --version      print the version\n"
          "\n"
          "Exit status: 0 ok, 1 usage or local error, 2 the gateway answered with an error\n"
          "(or a gather item failed), 3 no connection or the answer was cut short,\n"
          "130 interrupted by Ctrl-C.\n", f);
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* "llmux help chat" is "llmux chat --help". */
static int run_help(struct cli *c, int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    const struct command *cmd = find_command(argv[1]);
    if (!cmd)
        return cli_usage_error(c, "unknown command '%s'", argv[1]);
    char help[] = "--help";
    char *args[] = {argv[1], help, NULL};
    c->cmd = cmd->name;
    /* a fresh scan: after "llmux --url U help chat" optind points past our two-entry argv */
    optind = 0;
    return cmd->run(c, 2, args);
}

static int run(struct cli *c, int argc, char **argv)
{
    static const struct option longopts[] = {CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        switch (cli_common_opt(c, opt, optarg, argv)) {
        case CLI_OPT_DONE:
            break;
        case CLI_OPT_HELP:
            usage(stdout);
            return CLI_EXIT_OK;
        case CLI_OPT_EXIT:
            return CLI_EXIT_OK;
        case CLI_OPT_BAD:
            return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[optind];
    if (!strcmp(name, "help"))
        return run_help(c, argc - optind, argv + optind);
    const struct command *cmd = find_command(name);
    if (!cmd)
        return cli_usage_error(c, "unknown command '%s'", name);
    c->cmd = cmd->name;
    argv += optind;
    argc -= optind;
    optind = 0; /* glibc: start a fresh scan of the command's own arguments */
    return cmd->run(c, argc, argv);
}

int main(int argc, char **argv)
{
    struct cli c;
    cli_init(&c);
    if (http_setup() < 0) {
        cli_err("cannot initialise libcurl");
        return CLI_EXIT_USAGE;
    }
    int code = run(&c, argc, argv);
    http_teardown();
    return cli_finish_stdout(code);
}
