/* test_conf: the configuration loader as an operator sees it — values that land, defaults,
 * and the exact FILE:LINE:COL error for each kind of mistake, secrets never echoed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"

#define ERRLEN 512

static struct conf *load(const char *yaml, char *err)
{
    return conf_load_string(yaml, strlen(yaml), "t.yaml", err, ERRLEN);
}

/* Loads yaml and checks it is refused with exactly want. */
static void check_error(const char *yaml, const char *want)
{
    char err[ERRLEN];
    struct conf *c = load(yaml, err);
    if (c || strcmp(err, want))
        print_error("yaml:\n%s\nwant: %s\ngot:  %s\n", yaml, want, c ? "(loaded)" : err);
    assert_null(c);
    assert_string_equal(err, want);
}

/* Loads yaml that must be valid. */
static struct conf *check_load(const char *yaml)
{
    char err[ERRLEN];
    struct conf *c = load(yaml, err);
    if (!c)
        print_error("yaml:\n%s\nunexpected error: %s\n", yaml, err);
    assert_non_null(c);
    return c;
}

/* The example in spec/CONFIG.md, verbatim. */
static const char spec_example[] =
    "listen: [\"127.0.0.1:8420\"]      # also \"[::1]:8420\", \"unix:/run/llmux/llmux.sock\"\n"
    "workers: 1                     # event-loop threads; \"auto\" = one per core\n"
    "\n"
    "limits:\n"
    "  max_connections: 20000\n"
    "  max_inflight: 10000\n"
    "  queue: 1000\n"
    "  max_header_bytes: 16k\n"
    "  max_body_bytes: 8m\n"
    "  header_timeout: 10s\n"
    "  body_timeout: 30s\n"
    "  idle_timeout: 75s\n"
    "\n"
    "timeouts:\n"
    "  default: 60s\n"
    "  max: 10m\n"
    "  connect: 5s\n"
    "\n"
    "upstreams:\n"
    "  - name: openai\n"
    "    provider: openai           # openai (any OpenAI-compatible) | anthropic\n"
    "    base_url: https://api.openai.com/v1\n"
    "    api_key: ${OPENAI_API_KEY}\n"
    "    headers: {OpenAI-Organization: org-1}\n"
    "    max_connections: 512\n"
    "    timeout: 120s\n"
    "  - name: claude\n"
    "    provider: anthropic\n"
    "    base_url: https://api.anthropic.com\n"
    "    api_key: ${ANTHROPIC_API_KEY}\n"
    "\n"
    "models:\n"
    "  - name: fast                 # what clients send as \"model\"\n"
    "    strategy: weighted         # weighted | fallback | least_inflight\n"
    "    retries: 2\n"
    "    backoff: {base: 100ms, max: 2s}   # exponential, full jitter; honours Retry-After\n"
    "    targets:\n"
    "      - {upstream: openai, model: gpt-4o-mini, weight: 3}\n"
    "      - {upstream: claude, model: claude-3-5-haiku-latest, weight: 1}\n"
    "  - name: gpt-4o               # a model name relayed as is\n"
    "    targets: [{upstream: openai}]\n"
    "\n"
    "health:\n"
    "  failures: 5\n"
    "  cooldown: 30s\n"
    "\n"
    "keys:                          # absent = no auth\n"
    "  - name: team-a\n"
    "    key: ${LLMUX_KEY_TEAM_A}\n"
    "    models: [fast]             # absent = all\n"
    "    rpm: 600\n"
    "    max_concurrency: 50\n"
    "    budget: {usd: 50, window: 30d}   # 1d | 7d | 30d | calendar_month\n"
    "    admin: false               # true: may read every key's spend\n"
    "\n"
    "gather:\n"
    "  max_items: 1000\n"
    "  max_concurrency: 64\n"
    "\n"
    "jobs:\n"
    "  dir: /var/lib/llmux/jobs\n"
    "  max_queued: 10000\n"
    "  retention: 24h\n"
    "  workers: 64\n"
    "\n"
    "state:\n"
    "  backend: memory              # memory | redis\n"
    "  redis: redis://127.0.0.1:6379/0\n"
    "\n"
    "log:\n"
    "  level: info                  # error | warn | info | debug\n"
    "  format: json                 # json | text\n"
    "  access: true\n";

static void set_spec_env(void)
{
    setenv("OPENAI_API_KEY", "sk-openai-test", 1);
    setenv("ANTHROPIC_API_KEY", "sk-ant-test", 1);
    setenv("LLMUX_KEY_TEAM_A", "team-a-key-123", 1);
}

static void test_spec_example_lands(void **state)
{
    set_spec_env();
    struct conf *c = check_load(spec_example);

    assert_string_equal(c->path, "t.yaml");
    assert_int_equal(c->nlisten, 1);
    assert_string_equal(c->listen[0], "127.0.0.1:8420");
    assert_int_equal(c->workers, 1);
    assert_int_equal(c->limits.max_connections, 20000);
    assert_int_equal(c->limits.max_inflight, 10000);
    assert_int_equal(c->limits.queue, 1000);
    assert_int_equal(c->limits.max_header_bytes, 16384);
    assert_int_equal(c->limits.max_body_bytes, 8 << 20);
    assert_int_equal(c->limits.header_timeout_ms, 10000);
    assert_int_equal(c->limits.body_timeout_ms, 30000);
    assert_int_equal(c->limits.idle_timeout_ms, 75000);
    assert_int_equal(c->timeouts.default_ms, 60000);
    assert_int_equal(c->timeouts.max_ms, 600000);
    assert_int_equal(c->timeouts.connect_ms, 5000);

    assert_int_equal(c->nupstreams, 2);
    const struct conf_upstream *oa = &c->upstreams[0], *cl = &c->upstreams[1];
    assert_string_equal(oa->name, "openai");
    assert_int_equal(oa->provider, PROVIDER_OPENAI);
    assert_string_equal(oa->base_url, "https://api.openai.com/v1");
    assert_string_equal(oa->api_key, "sk-openai-test");
    assert_int_equal(oa->nheaders, 1);
    assert_string_equal(oa->headers[0].name, "OpenAI-Organization");
    assert_string_equal(oa->headers[0].value, "org-1");
    assert_int_equal(oa->max_connections, 512);
    assert_int_equal(oa->timeout_ms, 120000);
    assert_string_equal(cl->name, "claude");
    assert_int_equal(cl->provider, PROVIDER_ANTHROPIC);
    assert_string_equal(cl->base_url, "https://api.anthropic.com");
    assert_string_equal(cl->api_key, "sk-ant-test");
    assert_int_equal(cl->nheaders, 0);

    assert_int_equal(c->nmodels, 2);
    const struct conf_model *fast = &c->models[0], *g4 = &c->models[1];
    assert_string_equal(fast->name, "fast");
    assert_int_equal(fast->strategy, STRATEGY_WEIGHTED);
    assert_int_equal(fast->retries, 2);
    assert_int_equal(fast->backoff_base_ms, 100);
    assert_int_equal(fast->backoff_max_ms, 2000);
    assert_int_equal(fast->ntargets, 2);
    assert_ptr_equal(fast->targets[0].upstream, oa);
    assert_string_equal(fast->targets[0].model, "gpt-4o-mini");
    assert_int_equal(fast->targets[0].weight, 3);
    assert_ptr_equal(fast->targets[1].upstream, cl);
    assert_string_equal(fast->targets[1].model, "claude-3-5-haiku-latest");
    assert_int_equal(fast->targets[1].weight, 1);
    assert_string_equal(g4->name, "gpt-4o");
    assert_int_equal(g4->ntargets, 1);
    assert_ptr_equal(g4->targets[0].upstream, oa);
    assert_null(g4->targets[0].model);

    assert_int_equal(c->health.failures, 5);
    assert_int_equal(c->health.cooldown_ms, 30000);
    assert_int_equal(c->nkeys, 1);
    assert_string_equal(c->keys[0].name, "team-a");
    assert_string_equal(c->keys[0].key, "team-a-key-123");
    assert_int_equal(c->keys[0].nmodels, 1);
    assert_string_equal(c->keys[0].models[0], "fast");
    assert_int_equal(c->keys[0].rpm, 600);
    assert_int_equal(c->keys[0].max_concurrency, 50);
    assert_true(c->keys[0].budget.usd == 50);
    assert_int_equal(c->keys[0].budget.window, BUDGET_30D);
    assert_false(c->keys[0].admin);
    assert_int_equal(c->gather.max_items, 1000);
    assert_int_equal(c->gather.max_concurrency, 64);
    assert_string_equal(c->jobs.dir, "/var/lib/llmux/jobs");
    assert_int_equal(c->jobs.max_queued, 10000);
    assert_int_equal(c->jobs.retention_ms, 24 * 3600 * 1000);
    assert_int_equal(c->jobs.workers, 64);
    assert_int_equal(c->state.backend, STATE_MEMORY);
    assert_string_equal(c->state.redis, "redis://127.0.0.1:6379/0");
    assert_false(c->state.fail_closed);
    assert_int_equal(c->state.timeout_ms, 500);
    assert_int_equal(c->log.level, LOG_INFO);
    assert_int_equal(c->log.format, LOG_FORMAT_JSON);
    assert_true(c->log.access);

    assert_ptr_equal(conf_find_model(c, "gpt-4o"), g4);
    assert_null(conf_find_model(c, "gpt-4"));
    assert_ptr_equal(conf_find_upstream(c, "claude"), cl);
    assert_null(conf_find_upstream(c, "Claude"));
    conf_unref(c);
}

/* Every non-default value, including the keys beyond CONFIG.md, lands where it should. */
static void test_every_key_lands(void **state)
{
    struct conf *c = check_load(
        "listen: [\"0.0.0.0:80\", \"localhost:8080\", \"[::1]:65535\", \"unix:/run/l.sock\"]\n"
        "workers: auto\n"
        "limits: {max_connections: 7, max_inflight: 8, queue: 0, max_request_line: 2k,\n"
        "  max_header_bytes: 3KiB, max_headers: 9, max_body_bytes: 1g, header_timeout: 1s,\n"
        "  body_timeout: 2s, idle_timeout: 3s, send_timeout: 4s, stream_high_water: 10k,\n"
        "  stream_low_water: 9k}\n"
        "timeouts: {default: 1m, max: 1h, connect: 250ms}\n"
        "upstreams:\n"
        "  - {name: u, provider: anthropic, base_url: \"http://[::1]:8000//\",\n"
        "     max_connections: 3, timeout: 2m, max_response_bytes: 1mb, http: 2}\n"
        "models:\n"
        "  - {name: m, strategy: least_inflight, retries: 0, backoff: {base: 0ms, max: 0ms},\n"
        "     targets: [{upstream: u, weight: 1000}]}\n"
        "  - {name: f, strategy: fallback, retries: 10, targets: [{upstream: u}]}\n"
        "health: {failures: 1, cooldown: 1d}\n"
        "keys: [{name: k, key: abc}]\n"
        "gather: {max_items: 2, max_concurrency: 3}\n"
        "jobs: {dir: ./jobs, max_queued: 4, retention: 5h, workers: 6}\n"
        "state: {backend: redis, redis: \"redis://:pw@cache:6380/1\", on_error: closed,\n"
        "        timeout: 2s}\n"
        "log: {level: debug, format: text, access: off}\n"
        "shutdown_grace: 0s\n");

    assert_int_equal(c->nlisten, 4);
    assert_string_equal(c->listen[0], "0.0.0.0:80");
    assert_string_equal(c->listen[1], "localhost:8080");
    assert_string_equal(c->listen[2], "[::1]:65535");
    assert_string_equal(c->listen[3], "unix:/run/l.sock");
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->limits.max_connections, 7);
    assert_int_equal(c->limits.max_inflight, 8);
    assert_int_equal(c->limits.queue, 0);
    assert_int_equal(c->limits.max_request_line, 2048);
    assert_int_equal(c->limits.max_header_bytes, 3072);
    assert_int_equal(c->limits.max_headers, 9);
    assert_int_equal(c->limits.max_body_bytes, 1 << 30);
    assert_int_equal(c->limits.header_timeout_ms, 1000);
    assert_int_equal(c->limits.body_timeout_ms, 2000);
    assert_int_equal(c->limits.idle_timeout_ms, 3000);
    assert_int_equal(c->limits.send_timeout_ms, 4000);
    assert_int_equal(c->limits.stream_high_water, 10240);
    assert_int_equal(c->limits.stream_low_water, 9216);
    assert_int_equal(c->timeouts.default_ms, 60000);
    assert_int_equal(c->timeouts.max_ms, 3600000);
    assert_int_equal(c->timeouts.connect_ms, 250);
    assert_int_equal(c->upstreams[0].provider, PROVIDER_ANTHROPIC);
    assert_string_equal(c->upstreams[0].base_url, "http://[::1]:8000");
    assert_int_equal(c->upstreams[0].max_connections, 3);
    assert_int_equal(c->upstreams[0].http, CONF_HTTP_2);
    assert_int_equal(c->upstreams[0].timeout_ms, 120000);
    assert_int_equal(c->upstreams[0].max_response_bytes, 1 << 20);
    assert_int_equal(c->models[0].strategy, STRATEGY_LEAST_INFLIGHT);
    assert_int_equal(c->models[0].retries, 0);
    assert_int_equal(c->models[0].backoff_base_ms, 0);
    assert_int_equal(c->models[0].backoff_max_ms, 0);
    assert_int_equal(c->models[0].targets[0].weight, 1000);
    assert_int_equal(c->models[1].strategy, STRATEGY_FALLBACK);
    assert_int_equal(c->models[1].retries, 10);
    assert_int_equal(c->health.failures, 1);
    assert_int_equal(c->health.cooldown_ms, 86400000);
    assert_null(c->keys[0].models);
    assert_int_equal(c->keys[0].rpm, 0);
    assert_int_equal(c->gather.max_items, 2);
    assert_int_equal(c->gather.max_concurrency, 3);
    assert_string_equal(c->jobs.dir, "./jobs");
    assert_int_equal(c->jobs.max_queued, 4);
    assert_int_equal(c->jobs.retention_ms, 5 * 3600000);
    assert_int_equal(c->jobs.workers, 6);
    assert_int_equal(c->state.backend, STATE_REDIS);
    assert_string_equal(c->state.redis, "redis://:pw@cache:6380/1");
    assert_true(c->state.fail_closed);
    assert_int_equal(c->state.timeout_ms, 2000);
    assert_int_equal(c->log.level, LOG_DEBUG);
    assert_int_equal(c->log.format, LOG_FORMAT_TEXT);
    assert_false(c->log.access);
    assert_int_equal(c->shutdown_grace_ms, 0);
    conf_unref(c);
}

static void assert_defaults(const struct conf *c)
{
    assert_int_equal(c->nlisten, 1);
    assert_string_equal(c->listen[0], "127.0.0.1:8420");
    assert_int_equal(c->workers, 1);
    assert_int_equal(c->limits.max_connections, 20000);
    assert_int_equal(c->limits.max_inflight, 10000);
    assert_int_equal(c->limits.queue, 1000);
    assert_int_equal(c->limits.max_request_line, 8192);
    assert_int_equal(c->limits.max_header_bytes, 16384);
    assert_int_equal(c->limits.max_headers, 100);
    assert_int_equal(c->limits.max_body_bytes, 8 << 20);
    assert_int_equal(c->limits.header_timeout_ms, 10000);
    assert_int_equal(c->limits.body_timeout_ms, 30000);
    assert_int_equal(c->limits.idle_timeout_ms, 75000);
    assert_int_equal(c->limits.send_timeout_ms, 60000);
    assert_int_equal(c->limits.stream_high_water, 65536);
    assert_int_equal(c->limits.stream_low_water, 16384);
    assert_int_equal(c->timeouts.default_ms, 60000);
    assert_int_equal(c->timeouts.max_ms, 600000);
    assert_int_equal(c->timeouts.connect_ms, 5000);
    assert_int_equal(c->nupstreams, 0);
    assert_int_equal(c->nmodels, 0);
    assert_int_equal(c->health.failures, 5);
    assert_int_equal(c->health.cooldown_ms, 30000);
    assert_int_equal(c->nkeys, 0);
    assert_null(c->keys);               /* NULL/0: no auth, as conf.h promises */
    assert_int_equal(c->gather.max_items, 1000);
    assert_int_equal(c->gather.max_concurrency, 64);
    assert_string_equal(c->jobs.dir, "/var/lib/llmux/jobs");
    assert_int_equal(c->jobs.max_queued, 10000);
    assert_int_equal(c->jobs.retention_ms, 86400000);
    assert_int_equal(c->jobs.workers, 64);
    assert_int_equal(c->state.backend, STATE_MEMORY);
    assert_string_equal(c->state.redis, "redis://127.0.0.1:6379/0");
    assert_int_equal(c->log.level, LOG_INFO);
    assert_int_equal(c->log.format, LOG_FORMAT_JSON);
    assert_true(c->log.access);
    assert_int_equal(c->shutdown_grace_ms, 30000);
}

static void test_defaults_when_absent(void **state)
{
    static const char *const docs[] = {
        "", "# nothing but a comment\n", "---\n", "~\n",
        "limits:\ntimeouts:\nupstreams:\nmodels:\nkeys:\nhealth:\ngather:\njobs:\nstate:\nlog:\n",
        "limits: {}\ntimeouts: {}\nupstreams: []\nmodels: []\nkeys: []\nlog: {}\n",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        struct conf *c = check_load(docs[i]);
        assert_defaults(c);
        conf_unref(c);
    }
}

static void test_item_defaults(void **state)
{
    struct conf *c = check_load("upstreams: [{name: u, base_url: \"https://h\"}]\n"
                                "models: [{name: m, targets: [{upstream: u}]}]\n");
    const struct conf_upstream *u = &c->upstreams[0];
    assert_int_equal(u->provider, PROVIDER_OPENAI);
    assert_null(u->api_key);
    assert_int_equal(u->nheaders, 0);
    assert_int_equal(u->max_connections, 512);
    assert_int_equal(u->http, CONF_HTTP_AUTO);
    assert_int_equal(u->timeout_ms, 120000);
    assert_int_equal(u->max_response_bytes, 64 << 20);
    const struct conf_model *m = &c->models[0];
    assert_int_equal(m->strategy, STRATEGY_WEIGHTED);
    assert_int_equal(m->retries, 2);
    assert_int_equal(m->backoff_base_ms, 100);
    assert_int_equal(m->backoff_max_ms, 2000);
    assert_null(m->targets[0].model);
    assert_int_equal(m->targets[0].weight, 1);
    conf_unref(c);
}

static void test_unknown_keys_and_typos(void **state)
{
    check_error("limits:\n  max_conection: 5\n",
                "t.yaml:2:3: limits.max_conection: unknown key \"max_conection\" in limits "
                "(did you mean \"max_connections\"?)");
    check_error("listne: [\"127.0.0.1:1\"]\n",
                "t.yaml:1:1: listne: unknown key \"listne\" at the top level "
                "(did you mean \"listen\"?)");
    check_error("colour: red\n",
                "t.yaml:1:1: colour: unknown key \"colour\" at the top level");
    check_error("upstreams:\n  - nmae: a\n    base_url: http://h\n",
                "t.yaml:2:5: upstreams[0].nmae: unknown key \"nmae\" in upstreams[0] "
                "(did you mean \"name\"?)");
    check_error("upstreams: [{name: u, base_url: \"http://h\"}]\n"
                "models: [{name: m, backoff: {bsae: 1s}, targets: [{upstream: u}]}]\n",
                "t.yaml:2:30: models[0].backoff.bsae: unknown key \"bsae\" in "
                "models[0].backoff (did you mean \"base\"?)");
}

static void test_wrong_types(void **state)
{
    check_error("- a\n", "t.yaml:1:1: expected a mapping of settings at the top level, "
                         "got a list");
    check_error("limits: 5\n", "t.yaml:1:9: limits: expected a mapping, got a scalar");
    check_error("limits:\n  queue: [1]\n",
                "t.yaml:2:10: limits.queue: expected a non-negative integer, got a list");
    check_error("upstreams: {a: 1}\n",
                "t.yaml:1:12: upstreams: expected a list of upstreams, got a mapping");
    check_error("listen: {a: b}\n",
                "t.yaml:1:9: listen: expected an address or a list of them, got a mapping");
    check_error("? [a]\n: 1\n", "t.yaml:1:3: expected a string key, got a list");
    check_error("upstreams: [{name: u, base_url: \"http://h\", api_key: {a: b}}]\n",
                "t.yaml:1:54: upstreams[0].api_key: expected a secret string, got a mapping");
}

static void test_missing_required(void **state)
{
    check_error("upstreams:\n  - name: a\n",
                "t.yaml:2:5: upstreams[0].base_url: missing required key");
    check_error("upstreams:\n  - base_url: http://h\n",
                "t.yaml:2:5: upstreams[0].name: missing required key");
    check_error("upstreams:\n  - {name: u, base_url: \"http://h\"}\n"
                "models:\n  - name: m\n",
                "t.yaml:4:5: models[0].targets: missing required key");
    check_error("upstreams: [{name: u, base_url: \"http://h\"}]\n"
                "models: [{name: m, targets: [{model: x}]}]\n",
                "t.yaml:2:30: models[0].targets[0].upstream: missing required key");
    check_error("keys:\n  - name: a\n",
                "t.yaml:2:5: keys[0].key: missing required key (or key_file, or key_sha256)");
    check_error("keys:\n  - {name: a, key: abc, key_sha256: "
                "\"0000000000000000000000000000000000000000000000000000000000000000\"}\n",
                "t.yaml:2:5: keys[0]: expected exactly one of key or key_sha256");
    check_error("keys:\n  - {name: a, key_sha256: abc}\n", "t.yaml:2:27: keys[0].key_sha256: "
                "expected 64 hex digits (the SHA-256 of the key, e.g. from: printf %s KEY | "
                "sha256sum)");
    check_error("keys:\n  - key: abcdefgh\n", "t.yaml:2:5: keys[0].name: missing required key");
    check_error("upstreams:\n  - name: ~\n    base_url: http://h\n",
                "t.yaml:2:11: upstreams[0].name: expected a value");
    check_error("upstreams: [{name: u, base_url: \"http://h\"}]\n"
                "models: [{name: m, targets: []}]\n",
                "t.yaml:2:29: models[0].targets: expected a non-empty list of targets");
}

static void test_duplicates(void **state)
{
    check_error("upstreams:\n  - name: a\n    name: b\n    base_url: http://h\n",
                "t.yaml:3:5: upstreams[0].name: duplicate key \"name\" (first at line 2)");
    check_error("workers: 2\nlog: {}\nworkers: 3\n",
                "t.yaml:3:1: workers: duplicate key \"workers\" (first at line 1)");
    check_error("upstreams:\n  - {name: a, base_url: \"http://h\"}\n"
                "  - {name: a, base_url: \"http://i\"}\n",
                "t.yaml:3:12: upstreams[1].name: duplicate upstream name \"a\" "
                "(first at line 2)");
    check_error("upstreams: [{name: u, base_url: \"http://h\"}]\n"
                "models:\n  - {name: m, targets: [{upstream: u}]}\n"
                "  - {name: m, targets: [{upstream: u}]}\n",
                "t.yaml:4:12: models[1].name: duplicate model name \"m\" (first at line 3)");
    check_error("keys:\n  - {name: a, key: k1}\n  - {name: a, key: k2}\n",
                "t.yaml:3:12: keys[1].name: duplicate key name \"a\" (first at line 2)");
    check_error("listen: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
                "t.yaml:1:25: listen[1]: duplicate address \"127.0.0.1:1\"");
    check_error("upstreams: [{name: u, base_url: \"http://h\", headers: {X-A: 1, x-a: 2}}]\n",
                "t.yaml:1:63: upstreams[0].headers.x-a: duplicate header \"x-a\" "
                "(first at line 1)");
}

static void test_references(void **state)
{
    check_error("upstreams: [{name: a, base_url: \"http://h\"}]\n"
                "models:\n"
                "  - name: m\n"
                "    targets:\n"
                "      - {upstream: a}\n"
                "      - {upstream: a, weight: 2}\n"
                "      - {upstream: b}\n",
                "t.yaml:7:20: models[0].targets[2].upstream: unknown upstream \"b\"; "
                "the upstreams are: \"a\"");
    check_error("upstreams: [{name: openai, base_url: \"http://h\"}]\n"
                "models: [{name: m, targets: [{upstream: opneai}]}]\n",
                "t.yaml:2:41: models[0].targets[0].upstream: unknown upstream \"opneai\" "
                "(did you mean \"openai\"?); the upstreams are: \"openai\"");
    check_error("models: [{name: m, targets: [{upstream: x}]}]\n",
                "t.yaml:1:41: models[0].targets[0].upstream: unknown upstream \"x\" "
                "(no upstreams are configured)");
    check_error("upstreams: [{name: u, base_url: \"http://h\"}]\n"
                "models: [{name: fast, targets: [{upstream: u}]}]\n"
                "keys: [{name: k, key: abc, models: [fast, fats]}]\n",
                "t.yaml:3:43: keys[0].models[1]: unknown model \"fats\" "
                "(did you mean \"fast\"?)");
    check_error("keys: [{name: k, key: abc, models: []}]\n",
                "t.yaml:1:36: keys[0].models: expected at least one model name (leave models "
                "out to allow every model)");
}

static void test_bad_values(void **state)
{
    check_error("limits:\n  queue: -1\n",
                "t.yaml:2:10: limits.queue: expected a non-negative integer, got \"-1\"");
    check_error("limits:\n  queue: 1x\n",
                "t.yaml:2:10: limits.queue: expected a non-negative integer, got \"1x\"");
    check_error("limits:\n  queue: 4294967296\n", "t.yaml:2:10: limits.queue: expected a "
                "non-negative integer, got \"4294967296\"");
    check_error("limits:\n  max_inflight: 0\n",
                "t.yaml:2:17: limits.max_inflight: expected an integer of at least 1, got \"0\"");
    check_error("limits:\n  max_body_bytes: lots\n",
                "t.yaml:2:19: limits.max_body_bytes: expected a size like 8m, got \"lots\"");
    check_error("limits:\n  max_body_bytes: 99999999999g\n",
                "t.yaml:2:19: limits.max_body_bytes: size \"99999999999g\" is too large");
    check_error("limits:\n  max_body_bytes: 0\n",
                "t.yaml:2:19: limits.max_body_bytes: expected a positive size, got \"0\"");
    check_error("limits:\n  header_timeout: 30\n",
                "t.yaml:2:19: limits.header_timeout: expected a duration like 30s or 500ms, "
                "got \"30\": a bare number is ambiguous, add a unit (ms, s, m, h, d)");
    check_error("timeouts:\n  connect: 5 s\n", "t.yaml:2:12: timeouts.connect: expected a "
                "duration like 30s or 500ms, got \"5 s\"");
    check_error("limits:\n  idle_timeout: 0s\n",
                "t.yaml:2:17: limits.idle_timeout: expected a positive duration, got \"0s\"");
    check_error("shutdown_grace: 99999999999999999999s\n", "t.yaml:1:17: shutdown_grace: "
                "duration \"99999999999999999999s\" is too large");
    check_error("workers: 0\n", "t.yaml:1:10: workers: expected an integer from 1 to 256 or "
                "\"auto\", got \"0\"");
    check_error("workers: 257\n", "t.yaml:1:10: workers: expected an integer from 1 to 256 or "
                "\"auto\", got \"257\"");
    check_error("workers: many\n", "t.yaml:1:10: workers: expected an integer from 1 to 256 "
                "or \"auto\", got \"many\"");
    check_error("log: {level: verbose}\n",
                "t.yaml:1:14: log.level: expected error, warn, info or debug, got \"verbose\"");
    check_error("log: {format: xml}\n",
                "t.yaml:1:15: log.format: expected json or text, got \"xml\"");
    check_error("log: {access: maybe}\n", "t.yaml:1:15: log.access: expected true or false "
                "(also yes/no, on/off), got \"maybe\"");
    check_error("state: {backend: etcd}\n",
                "t.yaml:1:18: state.backend: expected memory or redis, got \"etcd\"");
    check_error("jobs: {dir: \"\"}\n", "t.yaml:1:13: jobs.dir: expected a non-empty string "
                "without control characters");
    check_error("jobs: {dir: \"a\\0b\"}\n", "t.yaml:1:13: jobs.dir: expected a string, got a "
                "value containing a NUL byte");
    check_error("upstreams: [{name: u, provider: azure, base_url: \"http://h\"}]\n",
                "t.yaml:1:33: upstreams[0].provider: expected openai or anthropic, "
                "got \"azure\"");
    check_error("upstreams: [{name: u, base_url: \"http://h\", max_connections: 0}]\n",
                "t.yaml:1:62: upstreams[0].max_connections: expected an integer of at least 1, "
                "got \"0\"");
    check_error("upstreams: [{name: u, base_url: \"http://h\", http: 3}]\n",
                "t.yaml:1:51: upstreams[0].http: expected auto, 1.1 or 2, got \"3\"");
}

static void test_model_values(void **state)
{
    static const char head[] = "upstreams: [{name: u, base_url: \"http://h\"}]\nmodels:\n";
    char yaml[512];
    struct {
        const char *model, *err;
    } cases[] = {
        {"  - {name: m, retries: 11, targets: [{upstream: u}]}\n",
         "t.yaml:3:24: models[0].retries: expected an integer from 0 to 10, got \"11\""},
        {"  - {name: m, strategy: random, targets: [{upstream: u}]}\n",
         "t.yaml:3:25: models[0].strategy: expected weighted, fallback or least_inflight, "
         "got \"random\""},
        {"  - {name: m, targets: [{upstream: u, weight: 0}]}\n",
         "t.yaml:3:47: models[0].targets[0].weight: expected an integer from 1 to 1000, "
         "got \"0\""},
        {"  - {name: m, targets: [{upstream: u, weight: 1001}]}\n",
         "t.yaml:3:47: models[0].targets[0].weight: expected an integer from 1 to 1000, "
         "got \"1001\""},
        {"  - {name: m, backoff: {base: 5s}, targets: [{upstream: u}]}\n",
         "t.yaml:3:24: models[0].backoff: base (5s) must not exceed max (2s)"},
        {"  - {name: m, backoff: {base: 1s, max: 500ms}, targets: [{upstream: u}]}\n",
         "t.yaml:3:24: models[0].backoff: base (1s) must not exceed max (500ms)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(yaml, sizeof(yaml), "%s%s", head, cases[i].model);
        check_error(yaml, cases[i].err);
    }
}

static void test_cross_field(void **state)
{
    check_error("timeouts:\n  default: 20m\n", "t.yaml:2:12: timeouts.default: 20m must "
                "not exceed timeouts.max (10m)");
    check_error("timeouts:\n  max: 30s\n", "t.yaml:2:3: timeouts.default: 1m must not "
                "exceed timeouts.max (30s)");
    check_error("limits:\n  stream_low_water: 64k\n", "t.yaml:2:21: limits.stream_low_water: "
                "65536 bytes must be below limits.stream_high_water (65536 bytes)");
    struct conf *c = check_load("limits: {stream_low_water: 1k, stream_high_water: 2k}\n"
                                "timeouts: {default: 10m}\n");
    assert_int_equal(c->limits.stream_low_water, 1024);
    assert_int_equal(c->timeouts.default_ms, 600000);
    conf_unref(c);
}

static void test_listen(void **state)
{
    static const char expect[] = "expected \"HOST:PORT\" (IPv4 or localhost), \"[IPv6]:PORT\" "
                                 "or \"unix:/abs/path\", got ";
    char want[ERRLEN];
    struct {
        const char *yaml, *pos, *got;
    } cases[] = {
        {"listen: 8420\n", "t.yaml:1:9: listen", "\"8420\": missing :PORT"},
        {"listen: [\"127.0.0.1:8420\", \"example.com:80\"]\n", "t.yaml:1:28: listen[1]",
         "\"example.com:80\": the host must be an IPv4 address or localhost"},
        {"listen: \"127.0.0.1:0\"\n", "t.yaml:1:9: listen",
         "\"127.0.0.1:0\": the port must be 1..65535"},
        {"listen: \"127.0.0.1:65536\"\n", "t.yaml:1:9: listen",
         "\"127.0.0.1:65536\": the port must be 1..65535"},
        {"listen: \"127.0.0.1:\"\n", "t.yaml:1:9: listen",
         "\"127.0.0.1:\": the port must be 1..65535"},
        {"listen: \"[::1]8420\"\n", "t.yaml:1:9: listen", "\"[::1]8420\": missing :PORT"},
        {"listen: \"[::g]:80\"\n", "t.yaml:1:9: listen", "\"[::g]:80\": not an IPv6 address"},
        {"listen: \"::1:80\"\n", "t.yaml:1:9: listen",
         "\"::1:80\": an IPv6 address needs brackets"},
        {"listen: \"unix:run/l.sock\"\n", "t.yaml:1:9: listen",
         "\"unix:run/l.sock\": a unix socket path must be absolute"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(want, sizeof(want), "%s: %s%s", cases[i].pos, expect, cases[i].got);
        check_error(cases[i].yaml, want);
    }
    check_error("listen: []\n", "t.yaml:1:9: listen: expected at least one address, "
                                "got an empty list");
    struct conf *c = check_load("listen: \"[::]:8420\"\n");
    assert_int_equal(c->nlisten, 1);
    assert_string_equal(c->listen[0], "[::]:8420");
    conf_unref(c);
}

static void test_upstream_url_and_headers(void **state)
{
    char yaml[512], want[ERRLEN];
    struct {
        const char *url, *err;
    } bad[] = {
        {"ftp://h", "expected an http:// or https:// URL"},
        {"https://", "expected a URL with a host"},
        {"https://:443/v1", "expected a URL with a host"},
        {"https://h:99999", "the port must be 1..65535"},
        {"http://[::1]x/v1", "expected ':' or '/' after an IPv6 host"},
        {"http://[::1/v1", "expected a closing ']' after an IPv6 host"},
        {"https://h/v 1", "expected a URL without spaces or control characters"},
        {"https://h/v1?key=abc", "expected a URL without a query or fragment"},
        {"https://user:pw@h/v1", "expected a URL without credentials (use api_key or headers)"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "upstreams:\n  - name: a\n    base_url: \"%s\"\n",
                 bad[i].url);
        snprintf(want, sizeof(want), "t.yaml:3:15: upstreams[0].base_url: %s", bad[i].err);
        check_error(yaml, want);
    }

    static const char pre[] = "upstreams: [{name: u, base_url: \"http://h\", headers: ";
    struct {
        const char *headers, *err;
    } hbad[] = {
        {"{Authorization: Bearer x}", "t.yaml:1:55: upstreams[0].headers.Authorization: "
         "\"Authorization\" cannot be configured: llmux sets it (put credentials in api_key)"},
        {"{HOST: x}", "t.yaml:1:55: upstreams[0].headers.HOST: \"HOST\" cannot be "
         "configured: llmux sets it (put credentials in api_key)"},
        {"{x-api-key: x}", "t.yaml:1:55: upstreams[0].headers.x-api-key: \"x-api-key\" cannot "
         "be configured: llmux sets it (put credentials in api_key)"},
        {"{Content-Length: 1}", "t.yaml:1:55: upstreams[0].headers.Content-Length: "
         "\"Content-Length\" cannot be configured: llmux sets it (put credentials in api_key)"},
        {"{Transfer-Encoding: x}", "t.yaml:1:55: upstreams[0].headers.Transfer-Encoding: "
         "\"Transfer-Encoding\" cannot be configured: llmux sets it (put credentials in "
         "api_key)"},
        {"{\"Bad Header\": x}", "t.yaml:1:55: upstreams[0].headers.Bad Header: expected a "
         "header name (letters, digits, -), got \"Bad Header\""},
        {"{X-A: \"tok\\r\\nEvil: 1\"}", "t.yaml:1:60: upstreams[0].headers.X-A: expected a "
         "header value without CR, LF or other control characters"},
        {"{X-A: }", "t.yaml:1:60: upstreams[0].headers.X-A: expected a header value, "
         "got nothing"},
        {"[a]", "t.yaml:1:54: upstreams[0].headers: expected a mapping of header names to "
         "values, got a list"},
    };
    for (size_t i = 0; i < sizeof(hbad) / sizeof(hbad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "%s%s}]\n", pre, hbad[i].headers);
        check_error(yaml, hbad[i].err);
    }

    setenv("T_HDR", "from-env", 1);
    struct conf *c = check_load("upstreams:\n  - name: u\n    base_url: https://h.example/v1//\n"
                                "    headers: {X-One: \"1\", X-Env: \"${T_HDR}\", "
                                "X-Tab: \"a\\tb\"}\n");
    const struct conf_upstream *u = &c->upstreams[0];
    assert_string_equal(u->base_url, "https://h.example/v1");
    assert_int_equal(u->nheaders, 3);
    assert_string_equal(u->headers[0].name, "X-One");
    assert_string_equal(u->headers[0].value, "1");
    assert_string_equal(u->headers[1].value, "from-env");
    assert_string_equal(u->headers[2].value, "a\tb");
    conf_unref(c);
}

static void test_yaml_errors(void **state)
{
    check_error("limits: [1, 2\n", "t.yaml:2:1: YAML syntax error: did not find expected ',' "
                "or ']' (while parsing a flow sequence at line 1)");
    check_error("limits:\n\tqueue: 1\n", "t.yaml:2:1: YAML syntax error: a tab is not allowed "
                "for indentation (use spaces)");
    /* a key missing its ':' swallows the next line; libyaml blames that line's ':' */
    check_error("upstreams:\n  - name: a\n    provider openai\n    base_url: http://h\n",
                "t.yaml:3:5: YAML syntax error: missing ':' after the key on this line (or the "
                "next line is indented wrongly)");
    check_error("models:\n  - name: m\n     retries: 2\n",
                "t.yaml:3:13: YAML syntax error: unexpected key: check the indentation of this "
                "line (it does not line up with the keys above it)");
    check_error("log: {level: info}\nshutdown_grace: a: b\n",
                "t.yaml:2:18: YAML syntax error: a value containing \": \" must be quoted");
    check_error("a: &x 1\nb: *x\n",
                "t.yaml:2:4: YAML aliases (*x) are not supported; repeat the value");
    check_error("---\nworkers: 1\n---\nworkers: 2\n",
                "t.yaml:3:1: expected one YAML document, found a second one");
    check_error("workers: \"\\xff\"\n", "t.yaml:1:10: workers: expected an integer from 1 to "
                "256 or \"auto\", got \"\\xc3\\xbf\"");
}

static void test_env_expansion(void **state)
{
    setenv("T_HOST", "example.test", 1);
    unsetenv("T_PORT");
    setenv("T_EMPTY", "", 1);
    setenv("T_META", "${T_HOST}", 1);
    unsetenv("T_MISSING_VAR");
    struct conf *c = check_load(
        "upstreams: [{name: u, base_url: \"http://${T_HOST}:${T_PORT:-8080}/v1\"}]\n"
        "jobs: {dir: \"/a/$$HOME/b$c/p${T_EMPTY}q/${T_EMPTY:-dflt}/${T_META}/"
        "${T_MISSING_VAR:-}\"}\n"
        "limits: {queue: \"${T_QUEUE:-7}\"}\n");
    assert_string_equal(c->upstreams[0].base_url, "http://example.test:8080/v1");
    assert_string_equal(c->jobs.dir, "/a/$HOME/b$c/pq/dflt/${T_HOST}/");
    assert_int_equal(c->limits.queue, 7);
    conf_unref(c);

    setenv("T_PORT", "9090", 1);
    c = check_load("upstreams: [{name: u, base_url: \"http://${T_HOST}:${T_PORT:-8080}\"}]\n");
    assert_string_equal(c->upstreams[0].base_url, "http://example.test:9090");
    conf_unref(c);

    check_error("jobs:\n  dir: ${T_MISSING_VAR}\n", "t.yaml:2:8: jobs.dir: environment "
                "variable T_MISSING_VAR is not set (use ${T_MISSING_VAR:-default} to give a "
                "default)");
    check_error("jobs:\n  dir: \"a/${T_HOST}/${T_MISSING_VAR}\"\n", "t.yaml:2:8: jobs.dir: "
                "environment variable T_MISSING_VAR is not set (use ${T_MISSING_VAR:-default} "
                "to give a default)");
    check_error("jobs: {dir: \"${T_HOST\"}\n", "t.yaml:1:13: jobs.dir: unterminated \"${\": "
                "expected \"}\" (write $$ for a literal $)");
    check_error("jobs: {dir: \"${1A}\"}\n", "t.yaml:1:13: jobs.dir: expected a variable name "
                "(letters, digits, _) after \"${\"");
    check_error("jobs: {dir: \"${}\"}\n", "t.yaml:1:13: jobs.dir: expected a variable name "
                "(letters, digits, _) after \"${\"");
}

/* No error about a secret may contain the secret, whatever is wrong with it. */
static void test_secrets_not_echoed(void **state)
{
    char err[ERRLEN];
    struct {
        const char *yaml, *want, *secret;
    } cases[] = {
        {"upstreams: [{name: u, base_url: \"http://h\", api_key: \"sk-hush value\"}]\n",
         "t.yaml:1:54: upstreams[0].api_key: must not contain spaces or control characters "
         "(value not shown: it is a secret)", "hush"},
        {"keys: [{name: k, key: \"hush\\nhush\"}]\n",
         "t.yaml:1:23: keys[0].key: must not contain spaces or control characters (value not "
         "shown: it is a secret)", "hush"},
        {"keys: [{name: k, key: \"\"}]\n",
         "t.yaml:1:23: keys[0].key: expected a non-empty secret, got an empty string", NULL},
        {"keys:\n  - {name: a, key: sekrit-1}\n  - {name: b, key: sekrit-1}\n",
         "t.yaml:3:20: keys[1].key: the same key as keys[0] (keys must be unique)", "sekrit"},
        {"state: {redis: \"http://:hunter2@h\"}\n", "t.yaml:1:16: state.redis: expected a "
         "redis:// or rediss:// URL (value not shown: it may hold a password)", "hunter2"},
        {"state: {redis: \"rediss://:hunter2@h\"}\n", "t.yaml:1:16: state.redis: rediss:// (TLS) "
         "is not available: Debian 12's hiredis 0.14 has no TLS; reach Redis through a TLS "
         "tunnel (stunnel, spiped) and use redis://", "hunter2"},
        {"state: {redis: \"redis://:hunter2@h:99999\"}\n", "t.yaml:1:16: state.redis: expected "
         "host[:port] (port 1-65535) after redis:// (value not shown: it may hold a password)",
         "hunter2"},
        {"upstreams: [{name: u, base_url: \"https://u:hunter2@h\"}]\n", "t.yaml:1:33: "
         "upstreams[0].base_url: expected a URL without credentials (use api_key or headers)",
         "hunter2"},
        {"upstreams: [{name: u, base_url: \"http://h\", headers: {X-Tok: \"hunter2\\n\"}}]\n",
         "t.yaml:1:62: upstreams[0].headers.X-Tok: expected a header value without CR, LF or "
         "other control characters", "hunter2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_error(cases[i].yaml, cases[i].want);
        if (cases[i].secret) {
            assert_null(load(cases[i].yaml, err));
            assert_null(strstr(err, cases[i].secret));
        }
    }
    /* A secret from the environment that is malformed: the variable is not echoed either. */
    setenv("T_SECRET", "sk-from env", 1);
    assert_null(load("upstreams:\n  - name: u\n    base_url: http://h\n"
                     "    api_key: ${T_SECRET}\n", err));
    assert_string_equal(err, "t.yaml:4:14: upstreams[0].api_key: must not contain spaces or "
                        "control characters (value not shown: it is a secret)");
    assert_null(strstr(err, "from env"));
    /* An empty api_key means none, so ${VAR:-} makes a key optional. */
    unsetenv("T_NO_KEY");
    struct conf *c = check_load("upstreams: [{name: u, base_url: \"http://h\", "
                                "api_key: \"${T_NO_KEY:-}\"}]\n");
    assert_null(c->upstreams[0].api_key);
    conf_unref(c);
}

static void test_size_parser(void **state)
{
    struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0", 0}, {"512", 512}, {"1b", 1}, {"16k", 16384}, {"16K", 16384}, {"2kb", 2048},
        {"2KiB", 2048}, {"4m", 4 << 20}, {"3MB", 3 << 20}, {"1mib", 1 << 20},
        {"1g", 1ull << 30}, {"1GiB", 1ull << 30}, {"17179869183g", 17179869183ull << 30},
        {"18446744073709551615", UINT64_MAX},
    };
    static const char *const bad[] = {
        "", "k", "1.5m", "-1", "+1", " 1k", "1k ", "1t", "1kk", "0x10", "1_000", "1 k",
        "18446744073709551616", "17179869184g", "18014398509481984k", "99999999999999999999",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 1234;
        if (conf_parse_size(good[i].s, &v) != 0)
            print_error("size \"%s\" refused\n", good[i].s);
        assert_int_equal(conf_parse_size(good[i].s, &v), 0);
        assert_int_equal(v, good[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 1234;
        if (conf_parse_size(bad[i], &v) != -1)
            print_error("size \"%s\" accepted\n", bad[i]);
        assert_int_equal(conf_parse_size(bad[i], &v), -1);
        assert_int_equal(v, 1234);
    }
    assert_int_equal(conf_parse_size(NULL, &(uint64_t){0}), -1);
}

static void test_duration_parser(void **state)
{
    struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"500ms", 500}, {"0s", 0}, {"30s", 30000}, {"5m", 300000}, {"1h", 3600000},
        {"2d", 172800000}, {"213503982334d", 213503982334ull * 86400000},
        {"18446744073709551s", 18446744073709551000ull},
        {"18446744073709551615ms", UINT64_MAX},
    };
    static const char *const bad[] = {
        "30", "0", "", "s", "1.5s", "1S", "1M", "1sec", "1 s", "-1s", "1h30m", "ms",
        "213503982335d", "18446744073709551616ms", "18446744073709552s",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 1234;
        if (conf_parse_duration(good[i].s, &v) != 0)
            print_error("duration \"%s\" refused\n", good[i].s);
        assert_int_equal(conf_parse_duration(good[i].s, &v), 0);
        assert_int_equal(v, good[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 1234;
        if (conf_parse_duration(bad[i], &v) != -1)
            print_error("duration \"%s\" accepted\n", bad[i]);
        assert_int_equal(conf_parse_duration(bad[i], &v), -1);
        assert_int_equal(v, 1234);
    }
}

static void test_booleans(void **state)
{
    static const char *const yes[] = {"true", "yes", "on", "True", "YES"};
    static const char *const no[] = {"false", "no", "off", "FALSE", "Off"};
    char yaml[64];
    for (size_t i = 0; i < 5; i++) {
        snprintf(yaml, sizeof(yaml), "log: {access: %s}\n", no[i]);
        struct conf *c = check_load(yaml);
        assert_false(c->log.access);
        conf_unref(c);
        snprintf(yaml, sizeof(yaml), "log: {access: %s}\n", yes[i]);
        c = check_load(yaml);
        assert_true(c->log.access);
        conf_unref(c);
    }
}

static void *ref_churn(void *arg)
{
    struct conf *c = arg;
    for (int i = 0; i < 100000; i++)
        conf_unref(conf_ref(c));
    return NULL;
}

/* Under ASan, a missed free is a leak and a double free an abort. */
static void test_refcount(void **state)
{
    struct conf *c = check_load("workers: 3\n");
    assert_ptr_equal(conf_ref(c), c);
    assert_ptr_equal(conf_ref(c), c);
    conf_unref(c);
    conf_unref(c);
    assert_int_equal(c->workers, 3);        /* one reference left: still readable */

    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, ref_churn, c), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(__atomic_load_n(&c->refs, __ATOMIC_ACQUIRE), 1);
    conf_unref(c);
    assert_null(conf_ref(NULL));
    conf_unref(NULL);
}

static void test_budgets(void **state)
{
    struct conf *c = check_load(
        "upstreams: [{name: u, base_url: \"http://h\"}]\n"
        "models:\n"
        "  - {name: a, targets: [{upstream: u}], budget: {usd: 0.25, window: calendar_month}}\n"
        "  - {name: b, targets: [{upstream: u}]}\n"
        "keys:\n"
        "  - {name: one, key: key-one, budget: {usd: 12.5}, admin: true}\n"
        "  - {name: two, key: key-two, budget: {usd: 1, window: 7d}}\n"
        "  - {name: three, key: key-three}\n");
    assert_true(c->models[0].budget.usd == 0.25);
    assert_int_equal(c->models[0].budget.window, BUDGET_CALENDAR_MONTH);
    assert_true(c->models[1].budget.usd == 0);
    assert_true(c->keys[0].budget.usd == 12.5);
    assert_int_equal(c->keys[0].budget.window, BUDGET_30D);     /* the default window */
    assert_true(c->keys[0].admin);
    assert_int_equal(c->keys[1].budget.window, BUDGET_7D);
    assert_false(c->keys[1].admin);
    assert_true(c->keys[2].budget.usd == 0);
    conf_unref(c);
    char err[ERRLEN];
    static const char *const bad[][2] = {
        {"budget: {usd: 0}", "keys[0].budget.usd: expected an amount in USD above 0"},
        {"budget: {usd: 1000001}", "at most 1e+06"},
        {"budget: {usd: 1, window: month}", "expected 1d, 7d, 30d or calendar_month"},
        {"budget: 5", "keys[0].budget: expected a mapping"},
        {"budget: {window: 1d}", "keys[0].budget.usd: missing required key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml, "keys:\n  - name: a\n    key: k-1\n    %s\n", bad[i][0]);
        assert_null(load(yaml, err));
        assert_non_null(strstr(err, bad[i][1]));
    }
}

static void test_keys(void **state)
{
    struct conf *c = check_load(
        "upstreams: [{name: u, base_url: \"http://h\"}]\n"
        "models: [{name: a, targets: [{upstream: u}]}, {name: b, targets: [{upstream: u}]}]\n"
        "keys:\n"
        "  - {name: one, key: key-one-1234, models: [a]}\n"
        "  - {name: two, key: key-two-1234}\n"
        "  - {name: short, key: k}\n"
        "  - {name: hashed, tpm: 9, key_sha256: "
        "\"A1CE8E7DB3A2F1E1F7B12A48D1F4B56E5D8A3A6B54B8F0E1F39B6C3A4F5E6D70\"}\n");
    static const unsigned char digest[32] = {
        0xa1, 0xce, 0x8e, 0x7d, 0xb3, 0xa2, 0xf1, 0xe1, 0xf7, 0xb1, 0x2a, 0x48, 0xd1, 0xf4, 0xb5,
        0x6e, 0x5d, 0x8a, 0x3a, 0x6b, 0x54, 0xb8, 0xf0, 0xe1, 0xf3, 0x9b, 0x6c, 0x3a, 0x4f, 0x5e,
        0x6d, 0x70};
    unsigned char other[32];
    memcpy(other, digest, 32);
    other[31] ^= 1;
    assert_true(c->hashed_keys);
    assert_string_equal(conf_find_key_sha256(c, digest)->name, "hashed");
    assert_int_equal(conf_find_key_sha256(c, digest)->tpm, 9);
    assert_null(conf_find_key_sha256(c, other));
    assert_null(conf_find_key(c, "A1CE8E7DB3A2F1E1F7B12A48D1F4B56E5D8A3A6B54B8F0E1F39B6C3A4F5E6D70",
                              64));
    const struct conf_key *one = conf_find_key(c, "key-one-1234", 12);
    const struct conf_key *two = conf_find_key(c, "key-two-1234", 12);
    assert_non_null(one);
    assert_string_equal(one->name, "one");
    assert_non_null(two);
    assert_string_equal(two->name, "two");
    assert_string_equal(conf_find_key(c, "k", 1)->name, "short");
    assert_null(conf_find_key(c, "key-one-123", 11));
    assert_null(conf_find_key(c, "key-one-12345", 13));
    assert_null(conf_find_key(c, "key-one-1234", 11));
    assert_null(conf_find_key(c, "KEY-ONE-1234", 12));
    assert_null(conf_find_key(c, "", 0));
    assert_null(conf_find_key(c, NULL, 3));
    /* len bounds the comparison: trailing bytes past len are not part of the key. */
    assert_ptr_equal(conf_find_key(c, "key-two-1234garbage", 12), two);

    assert_true(conf_key_allows_model(one, "a"));
    assert_false(conf_key_allows_model(one, "b"));
    assert_false(conf_key_allows_model(one, "A"));
    assert_true(conf_key_allows_model(two, "a"));
    assert_true(conf_key_allows_model(two, "b"));
    assert_true(conf_key_allows_model(two, "anything"));
    conf_unref(c);

    c = check_load("workers: 1\n");
    assert_null(conf_find_key(c, "key-one-1234", 12));
    conf_unref(c);
}

static void test_load_files(void **state)
{
    char err[ERRLEN], path[] = "/tmp/test_conf_XXXXXX";
    struct conf *c = conf_load("conf/llmux.demo.yaml", err, sizeof(err));
    if (!c)
        print_error("%s\n", err);
    assert_non_null(c);
    assert_string_equal(c->listen[0], "127.0.0.1:8420");
    assert_int_equal(c->nupstreams, 2);
    assert_string_equal(c->upstreams[0].base_url, "http://127.0.0.1:8421/v1");
    assert_null(c->upstreams[0].api_key);
    assert_string_equal(c->upstreams[1].api_key, "demo-not-secret");
    assert_int_equal(c->upstreams[1].provider, PROVIDER_ANTHROPIC);
    assert_non_null(conf_find_model(c, "demo"));
    assert_non_null(conf_find_model(c, "demo-claude"));
    assert_int_equal(conf_find_model(c, "demo-fallback")->strategy, STRATEGY_FALLBACK);
    assert_int_equal(conf_find_model(c, "demo-fallback")->ntargets, 2);
    assert_int_equal(c->log.format, LOG_FORMAT_TEXT);
    assert_string_equal(c->jobs.dir, "./build/jobs-demo");
    conf_unref(c);

    set_spec_env();
    setenv("LLMUX_KEY_BATCH", "batch-key-123", 1);
    c = conf_load("conf/llmux.example.yaml", err, sizeof(err));
    if (!c)
        print_error("%s\n", err);
    assert_non_null(c);
    conf_unref(c);
    unsetenv("LLMUX_KEY_BATCH");
    assert_null(conf_load("conf/llmux.example.yaml", err, sizeof(err)));
    assert_non_null(strstr(err, "conf/llmux.example.yaml:"));
    assert_non_null(strstr(err, "environment variable LLMUX_KEY_BATCH is not set"));

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char bad[] = "workers: 2\nlimits:\n  queue: lots\n";
    assert_int_equal(write(fd, bad, sizeof(bad) - 1), sizeof(bad) - 1);
    close(fd);
    char want[ERRLEN];
    snprintf(want, sizeof(want), "%s:3:10: limits.queue: expected a non-negative integer, "
             "got \"lots\"", path);
    assert_null(conf_load(path, err, sizeof(err)));
    assert_string_equal(err, want);
    unlink(path);

    assert_null(conf_load("/nonexistent/llmux.yaml", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/llmux.yaml: cannot open: No such file or directory");
    /* A short buffer truncates; no buffer at all is allowed. */
    char tiny[8];
    assert_null(conf_load_string("workers: 0", 10, "t.yaml", tiny, sizeof(tiny)));
    assert_string_equal(tiny, "t.yaml:");
    assert_null(conf_load_string("workers: 0", 10, "t.yaml", NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_example_lands),
        cmocka_unit_test(test_every_key_lands),
        cmocka_unit_test(test_defaults_when_absent),
        cmocka_unit_test(test_item_defaults),
        cmocka_unit_test(test_unknown_keys_and_typos),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_model_values),
        cmocka_unit_test(test_cross_field),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_upstream_url_and_headers),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_secrets_not_echoed),
        cmocka_unit_test(test_size_parser),
        cmocka_unit_test(test_duration_parser),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_load_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
