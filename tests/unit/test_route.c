/* Unit tests for upstream/route.c (target order per strategy, retry classification, backoff)
 * and upstream/health.c (the per-target circuit breaker and its table). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "upstream/health.h"
#include "upstream/route.h"

static struct conf_upstream ups[3] = {{.name = "a"}, {.name = "b"}, {.name = "c"}};

static struct conf_model model(enum conf_strategy s, struct conf_target *t, size_t n)
{
    struct conf_model m = {.name = "m", .strategy = s, .targets = t, .ntargets = n,
                           .backoff_base_ms = 100, .backoff_max_ms = 2000};
    return m;
}

static void test_fallback_keeps_config_order(void **state)
{
    struct conf_target t[3] = {
        {.upstream = &ups[0], .weight = 1},
        {.upstream = &ups[1], .weight = 5},
        {.upstream = &ups[2], .weight = 9},
    };
    struct conf_model m = model(STRATEGY_FALLBACK, t, 3);
    unsigned order[ROUTE_MAX_TARGETS];
    uint32_t rng = 7;
    assert_int_equal(route_order(&m, &rng, order), 3);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
}

static void test_least_inflight_sorts_by_load_stably(void **state)
{
    struct target_health h0 = {.inflight = 5}, h1 = {.inflight = 1}, h2 = {.inflight = 1};
    struct conf_target t[3] = {
        {.upstream = &ups[0], .weight = 1, .health = &h0},
        {.upstream = &ups[1], .weight = 1, .health = &h1},
        {.upstream = &ups[2], .weight = 1, .health = &h2},
    };
    struct conf_model m = model(STRATEGY_LEAST_INFLIGHT, t, 3);
    unsigned order[ROUTE_MAX_TARGETS];
    uint32_t rng = 1;
    route_order(&m, &rng, order);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 0);
}

static void test_weighted_follows_weights_and_covers_all(void **state)
{
    struct conf_target t[2] = {{.upstream = &ups[0], .weight = 3},
                               {.upstream = &ups[1], .weight = 1}};
    struct conf_model m = model(STRATEGY_WEIGHTED, t, 2);
    unsigned order[ROUTE_MAX_TARGETS], first0 = 0;
    uint32_t rng = 12345;
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(route_order(&m, &rng, order), 2);
        assert_int_not_equal(order[0], order[1]);   /* each target once: the rest are fallbacks */
        first0 += order[0] == 0;
    }
    assert_in_range(first0, 7200, 7800);            /* 3:1 → 75 % */
}

static void test_retryable_classes(void **state)
{
    assert_true(route_retryable(CALL_CONNECT, 0));
    assert_true(route_retryable(CALL_RESET, 0));
    assert_true(route_retryable(CALL_TIMEOUT, 0));
    assert_true(route_retryable(CALL_FIRST_BYTE_TIMEOUT, 0));
    assert_true(route_retryable(CALL_IDLE_TIMEOUT, 0));
    assert_true(route_retryable(CALL_OK, 429));
    assert_true(route_retryable(CALL_OK, 503));
    assert_false(route_retryable(CALL_OK, 400));
    assert_false(route_retryable(CALL_OK, 404));
    assert_false(route_retryable(CALL_TOO_LARGE, 0));
    assert_false(route_retryable(CALL_ERROR, 0));
}

static void test_backoff_bounded_and_honours_retry_after(void **state)
{
    struct conf_model m = model(STRATEGY_FALLBACK, NULL, 0);
    uint32_t rng = 99;
    for (unsigned retry = 0; retry < 8; retry++) {
        uint64_t cap = retry < 5 ? 100u << retry : 2000;
        if (cap > 2000)
            cap = 2000;
        for (int i = 0; i < 200; i++)
            assert_true(route_backoff_ms(&m, retry, -1, &rng) <= cap);
    }
    assert_true(route_backoff_ms(&m, 0, 5000, &rng) >= 5000);
}

static enum health_change fail_at(struct target_health *h, int64_t now)
{
    return health_report(h, HEALTH_FAIL, false, now, 5, 30000);
}

static void test_breaker_opens_cools_probes_closes(void **state)
{
    struct target_health h = {0};
    bool probe;
    for (int i = 0; i < 4; i++)
        assert_int_equal(fail_at(&h, 10000), HEALTH_SAME);
    assert_true(health_admit(&h, 10000, &probe));       /* 4 of 5 failures: still closed */
    assert_false(probe);
    assert_int_equal(fail_at(&h, 10000), HEALTH_OPENED);   /* the 5th opens it, once */
    assert_int_equal(fail_at(&h, 10001), HEALTH_SAME);     /* late failures change nothing */
    assert_int_equal(h.opens, 1);
    assert_int_equal(health_state(&h, 11000), HEALTH_OPEN);
    assert_false(health_admit(&h, 11000, &probe));
    assert_int_equal(health_wait_ms(&h, 11000), 29000);
    assert_int_equal(health_state(&h, 40000), HEALTH_HALF_OPEN);
    assert_true(health_admit(&h, 40000, &probe));       /* cooldown over: one probe */
    assert_true(probe);
    assert_false(health_admit(&h, 40000, &probe));      /* exactly one */
    assert_int_equal(health_report(&h, HEALTH_PASS, true, 41000, 5, 30000),
                     HEALTH_CLOSED_AGAIN);
    assert_int_equal(health_state(&h, 41000), HEALTH_CLOSED);
    assert_int_equal(h.failures, 0);
}

static void test_failed_probe_reopens_abandoned_probe_frees(void **state)
{
    struct target_health h = {0};
    bool probe;
    for (int i = 0; i < 5; i++)
        fail_at(&h, 0);
    assert_true(health_admit(&h, 30000, &probe) && probe);
    assert_int_equal(health_report(&h, HEALTH_FAIL, true, 30000, 5, 30000), HEALTH_OPENED);
    assert_int_equal(h.opens, 2);
    assert_false(health_admit(&h, 59999, &probe));      /* a fresh full cooldown */
    assert_true(health_admit(&h, 60000, &probe) && probe);
    health_release_probe(&h);                           /* cancelled: the next may probe */
    assert_true(health_admit(&h, 60000, &probe) && probe);
    /* a 429 on the probe says nothing either way: still half-open, next request probes */
    assert_int_equal(health_report(&h, HEALTH_NEUTRAL, true, 60000, 5, 30000), HEALTH_SAME);
    assert_int_equal(health_state(&h, 60000), HEALTH_HALF_OPEN);
    assert_true(health_admit(&h, 60000, &probe) && probe);
}

static void test_verdicts_429_and_4xx_never_open(void **state)
{
    assert_int_equal(health_verdict(CALL_OK, 500), HEALTH_FAIL);
    assert_int_equal(health_verdict(CALL_OK, 503), HEALTH_FAIL);
    assert_int_equal(health_verdict(CALL_CONNECT, 0), HEALTH_FAIL);
    assert_int_equal(health_verdict(CALL_RESET, 0), HEALTH_FAIL);
    assert_int_equal(health_verdict(CALL_TIMEOUT, 0), HEALTH_FAIL);
    assert_int_equal(health_verdict(CALL_FIRST_BYTE_TIMEOUT, 0), HEALTH_FAIL);
    assert_int_equal(health_verdict(CALL_IDLE_TIMEOUT, 0), HEALTH_FAIL);
    assert_int_equal(health_verdict(CALL_OK, 429), HEALTH_NEUTRAL);
    assert_int_equal(health_verdict(CALL_OK, 400), HEALTH_PASS);
    assert_int_equal(health_verdict(CALL_OK, 404), HEALTH_PASS);
    assert_int_equal(health_verdict(CALL_OK, 200), HEALTH_PASS);
    struct target_health h = {0};
    for (int i = 0; i < 100; i++)
        assert_int_equal(health_report(&h, health_verdict(CALL_OK, 429), false, 0, 5, 30000),
                         HEALTH_SAME);
    assert_int_equal(health_state(&h, 0), HEALTH_CLOSED);
    /* consecutive: a pass in between starts the count again; a 429 does not */
    for (int i = 0; i < 4; i++)
        fail_at(&h, 0);
    health_report(&h, HEALTH_PASS, false, 0, 5, 30000);
    for (int i = 0; i < 4; i++)
        assert_int_equal(fail_at(&h, 0), HEALTH_SAME);
    health_report(&h, HEALTH_NEUTRAL, false, 0, 5, 30000);
    assert_int_equal(fail_at(&h, 0), HEALTH_OPENED);
}

static void test_table_shares_entries_by_target_and_keeps_them(void **state)
{
    char err[256];
    static const char yaml[] =
        "upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'},"
        "            {name: v, base_url: 'http://127.0.0.1:2/v1'}]\n"
        "models:\n"
        "  - {name: a, targets: [{upstream: u, model: broken}]}\n"
        "  - {name: b, targets: [{upstream: u, model: fine}]}\n"
        "  - {name: a2, targets: [{upstream: u, model: broken}, {upstream: v, model: broken}]}\n"
        "  - {name: fine, targets: [{upstream: u}]}\n";
    struct conf *c = conf_load_string(yaml, sizeof yaml - 1, "t", err, sizeof err);
    assert_non_null(c);
    struct health_table t = {0};
    assert_int_equal(health_bind(&t, c), 0);
    const struct target_health *a = c->models[0].targets[0].health;
    assert_ptr_equal(a, c->models[2].targets[0].health);        /* same pair: one state */
    assert_ptr_not_equal(a, c->models[1].targets[0].health);    /* other upstream model */
    assert_ptr_not_equal(a, c->models[2].targets[1].health);    /* other upstream */
    /* a target without its own model sends the client's: keyed by the model's name, which
     * here equals b's upstream model "fine" on the same upstream, so they share */
    assert_ptr_equal(c->models[3].targets[0].health, c->models[1].targets[0].health);
    assert_string_equal(a->upstream, "u");
    assert_string_equal(a->model, "broken");
    struct conf *c2 = conf_load_string(yaml, sizeof yaml - 1, "t", err, sizeof err);
    assert_int_equal(health_bind(&t, c2), 0);                   /* a reload keeps the state */
    assert_ptr_equal(c2->models[0].targets[0].health, a);
    conf_unref(c);
    conf_unref(c2);
    health_table_free(&t);
}

static void test_hedge_config(void **state)
{
    char err[256];
    static const char ok[] =
        "upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1',"
        "             timeouts: {connect: 2s, first_byte: 10s, idle: 5s}}]\n"
        "models: [{name: a, hedge: {after: 300ms, max: 2}, targets: [{upstream: u}]},"
        "         {name: b, targets: [{upstream: u}]}]\n";
    struct conf *c = conf_load_string(ok, sizeof ok - 1, "t", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->models[0].hedge_after_ms, 300);
    assert_int_equal(c->models[0].hedge_max, 2);
    assert_int_equal(c->models[0].hedge_min_after_ms, 300);
    assert_int_equal(c->models[1].hedge_after_ms, 0);
    assert_int_equal(c->upstreams[0].connect_ms, 2000);
    assert_int_equal(c->upstreams[0].first_byte_ms, 10000);
    assert_int_equal(c->upstreams[0].idle_ms, 5000);
    conf_unref(c);
    static const char bad[] =
        "upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\n"
        "models: [{name: a, hedge: {after: 300ms, min_after: 1s}, targets: [{upstream: u}]}]\n";
    assert_null(conf_load_string(bad, sizeof bad - 1, "t", err, sizeof err));
    assert_non_null(strstr(err, "models[0].hedge"));
    static const char many[] =
        "upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\n"
        "models: [{name: a, hedge: {after: 1s, max: 4}, targets: [{upstream: u}]}]\n";
    assert_null(conf_load_string(many, sizeof many - 1, "t", err, sizeof err));
    static const char noafter[] =
        "upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\n"
        "models: [{name: a, hedge: {max: 1}, targets: [{upstream: u}]}]\n";
    assert_null(conf_load_string(noafter, sizeof noafter - 1, "t", err, sizeof err));
    assert_non_null(strstr(err, "after"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fallback_keeps_config_order),
        cmocka_unit_test(test_least_inflight_sorts_by_load_stably),
        cmocka_unit_test(test_weighted_follows_weights_and_covers_all),
        cmocka_unit_test(test_retryable_classes),
        cmocka_unit_test(test_backoff_bounded_and_honours_retry_after),
        cmocka_unit_test(test_breaker_opens_cools_probes_closes),
        cmocka_unit_test(test_failed_probe_reopens_abandoned_probe_frees),
        cmocka_unit_test(test_verdicts_429_and_4xx_never_open),
        cmocka_unit_test(test_table_shares_entries_by_target_and_keeps_them),
        cmocka_unit_test(test_hedge_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
