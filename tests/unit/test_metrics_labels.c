/* test_metrics_labels: labelled counters as a scrape shows them — summed over workers, one
 * series per (upstream, model) however many targets share it, label values escaped, counters
 * of names kept across a reload monotonic, removed names gone, and the per-target log limiter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics_labels.h"

static struct conf *load(const char *yaml)
{
    char err[256];
    struct conf *c = conf_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    return c;
}

static const char *const CONF1 =
    "upstreams: [{name: u1, base_url: \"http://a\"}, {name: \"q\\\"x\", base_url: \"http://b\"}]\n"
    "models:\n"
    "  - {name: m, targets: [{upstream: u1, model: a}, {upstream: u1, model: b},"
    " {upstream: \"q\\\"x\"}]}\n"
    "  - {name: gone, targets: [{upstream: u1}]}\n"
    "keys: [{name: k, key: sk-1}]\n";

static const char *const CONF2 =
    "upstreams: [{name: u1, base_url: \"http://a\"}]\n"
    "models: [{name: m, targets: [{upstream: u1}]}, {name: new, targets: [{upstream: u1}]}]\n";

/* The value of the series whose line starts with `series ` in text, or -1. */
static long value_of(const char *text, const char *series)
{
    char want[256];
    snprintf(want, sizeof want, "\n%s ", series);
    const char *p = strstr(text, want);
    return p ? strtol(p + strlen(want), NULL, 10) : -1;
}

/* What a scrape shows for c, after a newline so every series starts one (free it). */
static char *render(const struct conf *c)
{
    struct buf out = BUF_INIT;
    buf_puts(&out, "\n");
    metrics_labels_render(&out, c);
    return buf_steal(&out);
}

static void test_sums_workers_and_shares_pairs(void **state)
{
    struct metrics_registry *reg = metrics_registry_new(2);
    struct conf *c = load(CONF1);
    assert_int_equal(metrics_labels_attach(reg, c), 0);
    const struct conf_model *m = &c->models[0];
    int p0 = metrics_labels_pair(c, m, 0), p2 = metrics_labels_pair(c, m, 2);
    assert_int_equal(metrics_labels_pair(c, m, 1), p0);    /* same upstream, same series */
    assert_int_not_equal(p0, p2);
    metrics_labels_event(c, 0, p0, PAIR_ATTEMPT);
    metrics_labels_event(c, 1, p0, PAIR_ATTEMPT);
    metrics_labels_event(c, 1, p2, PAIR_FAILURE);
    struct usage u = {.prompt = 10, .completion = 3, .cache_read = 4, .seen = true};
    metrics_labels_usage(c, 0, &c->keys[0], m, &u, 0.25, false);
    metrics_labels_usage(c, 1, &c->keys[0], m, &u, 0.5, true);
    metrics_labels_key_limited(c, 1, &c->keys[0], KEY_LIMIT_RPM);
    char *text = render(c);
    assert_int_equal(value_of(text, "llmux_upstream_attempts_total{upstream=\"u1\","
                                        "model=\"m\"}"), 2);
    assert_int_equal(value_of(text, "llmux_upstream_failures_total{upstream=\"q\\\"x\","
                                        "model=\"m\"}"), 1);
    assert_int_equal(value_of(text, "llmux_tokens_total{key=\"k\",model=\"m\","
                                        "kind=\"prompt\"}"), 20);
    assert_int_equal(value_of(text, "llmux_tokens_total{key=\"k\",model=\"m\","
                                        "kind=\"cache_read\"}"), 8);
    assert_non_null(strstr(text, "llmux_cost_usd_total{key=\"k\",model=\"m\"} 0.75"));
    assert_int_equal(value_of(text, "llmux_usage_estimated_total{key=\"k\",model=\"m\"}"), 1);
    assert_int_equal(value_of(text, "llmux_key_limited_total{key=\"k\",limit=\"rpm\"}"), 1);
    free(text);
    conf_unref(c);
    metrics_registry_free(reg);
}

static void test_reload_keeps_names_monotonic(void **state)
{
    struct metrics_registry *reg = metrics_registry_new(1);
    struct conf *c1 = load(CONF1), *c2 = load(CONF2);
    metrics_labels_attach(reg, c1);
    metrics_labels_event(c1, 0, metrics_labels_pair(c1, &c1->models[0], 0), PAIR_ATTEMPT);
    metrics_labels_attach(reg, c2);
    /* a request still on the old snapshot, then one on the new: one series */
    metrics_labels_event(c1, 0, metrics_labels_pair(c1, &c1->models[0], 0), PAIR_ATTEMPT);
    metrics_labels_event(c2, 0, metrics_labels_pair(c2, &c2->models[0], 0), PAIR_ATTEMPT);
    conf_unref(c1);
    char *text = render(c2);
    assert_int_equal(value_of(text, "llmux_upstream_attempts_total{upstream=\"u1\","
                                        "model=\"m\"}"), 3);
    assert_int_equal(value_of(text, "llmux_upstream_attempts_total{upstream=\"u1\","
                                        "model=\"new\"}"), 0);
    assert_null(strstr(text, "\"gone\""));
    free(text);
    conf_unref(c2);
    metrics_registry_free(reg);
}

static void test_log_limiter(void **state)
{
    struct metrics_registry *reg = metrics_registry_new(1);
    struct conf *c = load(CONF2);
    metrics_labels_attach(reg, c);
    uint64_t held;
    assert_true(metrics_labels_log_allowed(c, 0, 5000, &held));
    assert_false(metrics_labels_log_allowed(c, 0, 5100, &held));
    assert_false(metrics_labels_log_allowed(c, 0, 5900, &held));
    assert_true(metrics_labels_log_allowed(c, 1, 5900, &held));    /* another target */
    assert_true(metrics_labels_log_allowed(c, 0, 6000, &held));
    assert_int_equal(held, 2);
    conf_unref(c);
    metrics_registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_workers_and_shares_pairs),
        cmocka_unit_test(test_reload_keeps_names_monotonic),
        cmocka_unit_test(test_log_limiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
