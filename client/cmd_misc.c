/* cmd_misc: the small read-only commands — models, health, metrics, spend — each one GET whose
 * answer is printed plainly (or raw with --json). */
#include <string.h>

#include "client/cli.h"
#include "client/http.h"

enum { MISC_OPT_JSON = 0x200, MISC_OPT_READY, MISC_OPT_NAME };

#define MISC_ALLOW_JSON 1u
#define MISC_ALLOW_READY 2u
#define MISC_ALLOW_NAME 4u

struct misc_flags {
    bool json;
    bool ready;
    const char *name;           /* spend --name */
};

static const char models_usage[] =
    "Usage: llmux models [--json]\n"
    "List the models this key may use, one id per line (GET /v1/models).\n"
    "  --json   print the gateway's answer as it came\n";

static const char health_usage[] =
    "Usage: llmux health [--ready] [--json]\n"
    "Check the gateway: prints its status and exits 0 when it is up (GET /healthz).\n"
    "  --ready  ask whether it is ready to serve instead (GET /readyz): config loaded\n"
    "           and a healthy upstream for every model\n"
    "  --json   print the gateway's answer as it came\n";

static const char spend_usage[] =
    "Usage: llmux spend [--name NAME] [--json]\n"
    "Print spend, budget and remaining per key, and each key's spend per model, for the\n"
    "current budget window (GET /v1/spend). A key sees its own; an admin key sees every key\n"
    "and the model budgets.\n"
    "  --name NAME  only the key named NAME (its config name, not the secret)\n"
    "  --json       print the gateway's answer as it came\n";

static const char metrics_usage[] =
    "Usage: llmux metrics\n"
    "Print the gateway's metrics in Prometheus text format, as served by GET /metrics.\n";

static int misc_parse(struct cli *c, int argc, char **argv, const char *usage, unsigned allow,
                      struct misc_flags *f)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"json", no_argument, NULL, MISC_OPT_JSON},
        {"ready", no_argument, NULL, MISC_OPT_READY},
        {"name", required_argument, NULL, MISC_OPT_NAME},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (opt == MISC_OPT_JSON && (allow & MISC_ALLOW_JSON)) {
            f->json = true;
            continue;
        }
        if (opt == MISC_OPT_READY && (allow & MISC_ALLOW_READY)) {
            f->ready = true;
            continue;
        }
        if (opt == MISC_OPT_NAME && (allow & MISC_ALLOW_NAME)) {
            f->name = optarg;
            continue;
        }
        if (opt == MISC_OPT_JSON || opt == MISC_OPT_READY || opt == MISC_OPT_NAME)
            return cli_usage_error(c, "'%s' does not apply to '%s'", argv[optind - 1], c->cmd);
        switch (cli_common_opt(c, opt, optarg, argv)) {
        case CLI_OPT_DONE:
            break;
        case CLI_OPT_HELP:
            fputs(usage, stdout);
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

/* Writes the body unchanged, with a final newline if it lacked one. */
static int print_raw(const struct http_resp *rs)
{
    if (rs->body.len && fwrite(rs->body.data, 1, rs->body.len, stdout) != rs->body.len)
        return CLI_EXIT_USAGE;
    if (rs->body.len && rs->body.data[rs->body.len - 1] != '\n')
        fputc('\n', stdout);
    return CLI_EXIT_OK;
}

static int get(struct cli *c, const char *path, struct http_resp *rs)
{
    struct http_req rq = {.method = "GET", .path = path, .deadline_ms = c->timeout_ms};
    return http_call(c, &rq, rs);
}

static json_t *load_body(const struct http_resp *rs)
{
    json_t *root = json_loadb(rs->body.data ? rs->body.data : "", rs->body.len, 0, NULL);
    if (!root)
        cli_err("the gateway's answer is not JSON");
    return root;
}

static int print_models(const struct http_resp *rs)
{
    json_t *root = load_body(rs), *data = json_object_get(root, "data"), *m;
    size_t i;
    if (!root)
        return CLI_EXIT_API;
    if (!json_is_array(data)) {
        cli_err("the gateway's model list has no \"data\" array");
        json_decref(root);
        return CLI_EXIT_API;
    }
    json_array_foreach(data, i, m) {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (id)
            printf("%s\n", id);
    }
    json_decref(root);
    return CLI_EXIT_OK;
}

int cmd_models(struct cli *c, int argc, char **argv)
{
    struct misc_flags f = {0};
    struct http_resp rs;
    int code = misc_parse(c, argc, argv, models_usage, MISC_ALLOW_JSON, &f);
    if (code)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    code = get(c, "/v1/models", &rs);
    if (code == CLI_EXIT_OK)
        code = f.json ? print_raw(&rs) : print_models(&rs);
    http_resp_free(&rs);
    return code;
}

int cmd_health(struct cli *c, int argc, char **argv)
{
    struct misc_flags f = {0};
    struct http_resp rs;
    int code = misc_parse(c, argc, argv, health_usage, MISC_ALLOW_JSON | MISC_ALLOW_READY, &f);
    if (code)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    code = get(c, f.ready ? "/readyz" : "/healthz", &rs);
    if (code == CLI_EXIT_OK && f.json) {
        code = print_raw(&rs);
    } else if (code == CLI_EXIT_OK) {
        json_t *root = load_body(&rs);
        const char *status = json_string_value(json_object_get(root, "status"));
        printf("%s\n", status ? status : "ok");
        json_decref(root);
        code = root ? CLI_EXIT_OK : CLI_EXIT_API;
    }
    http_resp_free(&rs);
    return code;
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
    json_t *root = load_body(rs), *keys = json_object_get(root, "keys");
    json_t *models = json_object_get(root, "models"), *k, *m;
    size_t i, j, shown = 0;
    if (!root)
        return CLI_EXIT_API;
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

/* --json --name: the answer with only that key's row (and no model budgets, as the table). */
static int print_spend_json(const struct http_resp *rs, const char *only)
{
    json_t *root = load_body(rs), *keys = json_object_get(root, "keys"), *k, *mine;
    size_t i;
    if (!root)
        return CLI_EXIT_API;
    mine = json_array();
    json_array_foreach(keys, i, k) {
        const char *name = json_string_value(json_object_get(k, "key"));
        if (name && !strcmp(only, name))
            json_array_append(mine, k);
    }
    json_object_set_new(root, "keys", mine);
    json_object_set_new(root, "models", json_array());
    int code = CLI_EXIT_OK;
    if (!json_array_size(mine)) {
        cli_err("no key named '%s' is visible to this key", only);
        code = CLI_EXIT_API;
    } else if (json_dumpf(root, stdout, JSON_INDENT(2)) < 0 || putchar('\n') == EOF) {
        code = CLI_EXIT_USAGE;
    }
    json_decref(root);
    return code;
}

int cmd_spend(struct cli *c, int argc, char **argv)
{
    struct misc_flags f = {0};
    struct http_resp rs;
    int code = misc_parse(c, argc, argv, spend_usage, MISC_ALLOW_JSON | MISC_ALLOW_NAME, &f);
    if (code)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    code = get(c, "/v1/spend", &rs);
    if (code == CLI_EXIT_OK)
        code = !f.json ? print_spend(&rs, f.name)
               : f.name ? print_spend_json(&rs, f.name) : print_raw(&rs);
    http_resp_free(&rs);
    return code;
}

int cmd_metrics(struct cli *c, int argc, char **argv)
{
    struct misc_flags f = {0};
    struct http_resp rs;
    int code = misc_parse(c, argc, argv, metrics_usage, 0, &f);
    if (code)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    code = get(c, "/metrics", &rs);
    if (code == CLI_EXIT_OK)
        code = print_raw(&rs);
    http_resp_free(&rs);
    return code;
}
