/* Unit tests for upstream/route.c: target order per strategy, retry classification, backoff,
 * and the circuit breaker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

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
    assert_int_equal(route_order(&m, NULL, &rng, order), 3);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
}

static void test_least_inflight_sorts_by_load_stably(void **state)
{
    struct conf_target t[3] = {
        {.upstream = &ups[0], .weight = 1},
        {.upstream = &ups[1], .weight = 1},
        {.upstream = &ups[2], .weight = 1},
    };
    struct conf_model m = model(STRATEGY_LEAST_INFLIGHT, t, 3);
    struct route_health h0 = {.inflight = 5}, h1 = {.inflight = 1}, h2 = {.inflight = 1};
    const struct route_health *hs[3] = {&h0, &h1, &h2};
    unsigned order[ROUTE_MAX_TARGETS];
    uint32_t rng = 1;
    route_order(&m, hs, &rng, order);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 0);
}

static void test_weighted_follows_weights_and_covers_all(void **state)
{
    struct conf_target t[2] = {
        {.upstream = &ups[0], .weight = 3},
        {.upstream = &ups[1], .weight = 1},
    };
    struct conf_model m = model(STRATEGY_WEIGHTED, t, 2);
    unsigned order[ROUTE_MAX_TARGETS], first0 = 0;
    uint32_t rng = 12345;
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(route_order(&m, NULL, &rng, order), 2);
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

static void test_breaker_opens_cools_probes_closes(void **state)
{
    struct route_health h = {0};
    for (int i = 0; i < 4; i++)
        route_health_result(&h, false, 10.0, 5, 30.0);
    assert_true(route_health_allows(&h, 10.0));     /* 4 of 5 failures: still closed */
    route_health_result(&h, false, 10.0, 5, 30.0);
    assert_false(route_health_allows(&h, 11.0));    /* open */
    assert_true(route_health_allows(&h, 40.0));     /* cooldown over: a probe may go */
    h.probing = true;
    assert_false(route_health_allows(&h, 40.0));    /* only one probe at a time */
    route_health_result(&h, true, 41.0, 5, 30.0);
    assert_true(route_health_allows(&h, 41.0));
    assert_int_equal(h.failures, 0);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
