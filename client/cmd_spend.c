/* cmd_spend: `llmux spend` — each visible key's spend, budget and remaining, with its spend per
 * model below it, then the model budgets (GET /v1/spend), as a table or the raw answer. */
#include <string.h>

#include "client/cli.h"
#include "client/http.h"

enum { SPEND_OPT_JSON = 0x200, SPEND_OPT_NAME };

static const char spend_usage[] =
    "Usage: llmux spend [--name NAME] [--json]\n"
    "Print spend, budget and remaining per key, and each key's spend per model, for the\n"
    "current budget window (GET /v1/spend). A key sees its own; an admin key sees every key\n"
    "and the model budgets.\n"
    "  --name NAME  only the key named NAME (its config name, not the secret)\n"
    "  --json       print the gateway's answer as it came\n";

struct spend_flags {
    bool json;
    const char *name;
};

static int spend_parse(struct cli *c, int argc, char **argv, struct spend_flags *f)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"json", no_argument, NULL, SPEND_OPT_JSON},
        {"name", required_argument, NULL, SPEND_OPT_NAME},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (opt == SPEND_OPT_JSON) {
            f->json = true;
            continue;
        }
        if (opt == SPEND_OPT_NAME) {
            f->name = optarg;
            continue;
        }
        switch (cli_common_opt(c, opt, optarg, argv)) {
        case CLI_OPT_DONE:
            break;
        case CLI_OPT_HELP:
            fputs(spend_usage, stdout);
            return CLI_HANDLED;
        case CLI_OPT_EXIT:
            return CLI_HANDLED;
        case CLI_OPT_BAD:
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return cli_usage_error(c, "unexpected argument '%s'", argv[optind]);
    return cli_check(c) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
}

/* A USD amount as the gateway gave it ("-" for null: no budget). */
static void put_usd(const json_t *v)
{
    if (json_is_number(v))
        printf("  %14.9g", json_number_value(v));
    else
        printf("  %14s", "-");
}

static void put_name(const char *prefix, const char *name)
{
    size_t n = strlen(prefix) + strlen(name);
    fputs(prefix, stdout);
    cli_put_clean(stdout, name, strlen(name));
    printf("%*s", n < 24 ? (int)(24 - n) : 0, "");
}

/* One budget line: spent, reserved, budget, remaining, window and reset. */
static void put_row(const char *prefix, const char *name, const json_t *o)
{
    const json_t *b = json_object_get(o, "budget");
    put_name(prefix, name);
    put_usd(json_object_get(o, "spent_usd"));
    put_usd(json_object_get(o, "reserved_usd"));
    put_usd(json_object_get(b, "usd"));
    put_usd(json_object_get(o, "remaining_usd"));
    const char *w = json_string_value(json_object_get(b, "window"));
    const char *at = json_string_value(json_object_get(b, "resets_at"));
    printf("  %-14s  %s\n", w ? w : "-", at ? at : "-");
}

static int print_spend(const struct http_resp *rs, const char *only)
{
    json_t *root = json_loadb(rs->body.data ? rs->body.data : "", rs->body.len, 0, NULL);
    json_t *keys = json_object_get(root, "keys"), *models = json_object_get(root, "models");
    json_t *k, *m;
    size_t i, j, shown = 0;
    if (!json_is_array(keys) || !json_is_array(models)) {
        cli_err("the gateway's answer has no spend table");
        json_decref(root);
        return CLI_EXIT_API;
    }
    printf("%-24s  %14s  %14s  %14s  %14s  %-14s  %s\n", "KEY / MODEL", "SPENT_USD",
           "RESERVED_USD", "BUDGET_USD", "REMAINING_USD", "WINDOW", "RESETS_AT");
    json_array_foreach(keys, i, k) {
        const char *name = json_string_value(json_object_get(k, "key"));
        if (!name || (only && strcmp(only, name)))
            continue;
        shown++;
        put_row("", name, k);
        json_array_foreach(json_object_get(k, "models"), j, m) {
            const char *model = json_string_value(json_object_get(m, "model"));
            put_name("  ", model ? model : "?");
            put_usd(json_object_get(m, "spent_usd"));
            putchar('\n');
        }
    }
    json_array_foreach(models, i, m) {
        const char *name = json_string_value(json_object_get(m, "model"));
        if (name && !only)
            put_row("model ", name, m);
    }
    json_decref(root);
    if (only && !shown) {
        cli_err("no key named '%s' is visible to this key", only);
        return CLI_EXIT_API;
    }
    return CLI_EXIT_OK;
}

int cmd_spend(struct cli *c, int argc, char **argv)
{
    struct spend_flags f = {0};
    struct http_resp rs;
    int code = spend_parse(c, argc, argv, &f);
    if (code)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    struct http_req rq = {.method = "GET", .path = "/v1/spend", .deadline_ms = c->timeout_ms};
    code = http_call(c, &rq, &rs);
    if (code == CLI_EXIT_OK && f.json)
        code = fwrite(rs.body.data, 1, rs.body.len, stdout) == rs.body.len && putchar('\n') != EOF
               ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    else if (code == CLI_EXIT_OK)
        code = print_spend(&rs, f.name);
    http_resp_free(&rs);
    return code;
}
