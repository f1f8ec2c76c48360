/* test_budget: budget windows (fixed from the epoch, UTC calendar months), the estimate a
 * request reserves, the memory backend's reserve/settle arithmetic and its exactness under
 * threads, and budget.json across a restart. */
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

#include "daemon/budget.h"
#include "daemon/state.h"
#include "daemon/state_impl.h"

#define DAY 86400

static void test_fixed_windows(void **unused)
{
    int64_t end;
    /* 2026-12-01T05:00:00Z */
    int64_t t = 1796101200;
    assert_int_equal(state_budget_window(BUDGET_1D, t, &end), t / DAY);
    assert_int_equal(end, (t / DAY + 1) * DAY);
    assert_int_equal(end % DAY, 0);
    assert_int_equal(state_budget_window(BUDGET_7D, t, &end), t / (7 * DAY));
    assert_int_equal((end / DAY + 4) % 7, 4);   /* weekday (Sunday 0): a week ends on Thursday */
    assert_int_equal(state_budget_window(BUDGET_30D, t, &end), t / (30 * DAY));
    assert_true(end > t && end - t <= 30 * DAY);
    /* the last second of a window and the first of the next */
    assert_int_equal(state_budget_window(BUDGET_1D, DAY - 1, &end), 0);
    assert_int_equal(state_budget_window(BUDGET_1D, DAY, &end), 1);
    assert_int_equal(end, 2 * DAY);
}

static void test_calendar_months(void **unused)
{
    int64_t end;
    /* 2026-12-01T05:00:00Z: December ends 2027-01-01T00:00:00Z */
    int64_t n = state_budget_window(BUDGET_CALENDAR_MONTH, 1796101200, &end);
    assert_int_equal(n, 2026 * 12 + 11);
    assert_int_equal(end, 1798761600);
    /* 2024-02-10: a leap February ends on 2024-03-01T00:00:00Z */
    n = state_budget_window(BUDGET_CALENDAR_MONTH, 1707523200, &end);
    assert_int_equal(n, 2024 * 12 + 1);
    assert_int_equal(end, 1709251200);
    /* the last second of January 2025 is January's; the next is February's */
    assert_int_equal(state_budget_window(BUDGET_CALENDAR_MONTH, 1738367999, &end),
                     2025 * 12 + 0);
    assert_int_equal(end, 1738368000);
    assert_int_equal(state_budget_window(BUDGET_CALENDAR_MONTH, 1738368000, &end),
                     2025 * 12 + 1);
}

static void test_estimate(void **unused)
{
    struct conf_price cheap = {.input = 1, .output = 2, .per = 1000000};
    struct conf_price dear = {.input = 10, .output = 30, .per = 1000000};
    struct conf_target t[2] = {{.price = &cheap}, {.price = &dear}};
    struct conf_model m = {.name = "m", .targets = t, .ntargets = 2, .default_max_tokens = 100};
    /* 400 bytes = 100 prompt tokens, 50 completion tokens, at the dearer target:
     * 100 × 10 + 50 × 30 = 2500 per million = 0.0025 USD = 2 500 000 nano-USD */
    assert_int_equal(budget_estimate(&m, 400, 50), 2500000);
    /* no cap in the body: default_max_tokens */
    assert_int_equal(budget_estimate(&m, 400, -1), 4000000);      /* 100 × 10 + 100 × 30 */
    /* unpriced targets cost nothing */
    t[0].price = t[1].price = NULL;
    assert_int_equal(budget_estimate(&m, 400, 50), 0);
}

static struct state *memory_state(const char *dir)
{
    char err[128];
    struct conf c;
    memset(&c, 0, sizeof c);
    c.state.redis = "redis://127.0.0.1:6379/0";
    c.state.backend = STATE_MEMORY;
    c.jobs.dir = (char *)dir;
    struct state *st = state_new(&c, err, sizeof err);
    assert_non_null(st);
    return st;
}

static const struct conf_budget key_budget = {.usd = 1.0, .window = BUDGET_1D};
static const struct conf_budget model_budget = {.usd = 0.5, .window = BUDGET_CALENDAR_MONTH};

static void hold_init(struct state_budget_hold *h, int64_t est, bool with_model)
{
    memset(h, 0, sizeof *h);
    h->ref[0] = (struct state_budget_ref){.kind = BUDGET_OF_KEY, .name = "k", .b = &key_budget};
    h->ref[1] = (struct state_budget_ref){.kind = BUDGET_OF_MODEL, .name = "m",
                                          .b = &model_budget};
    h->n = with_model ? 2 : 1;
    h->estimate = est;
    h->model = "m";
}

static void test_reserve_settle(void **unused)
{
    struct state *st = memory_state(NULL);
    uint64_t errors = 0;
    struct state_link *l = state_link_new(st, NULL, 0, &errors);
    struct state_budget_hold a, b, c;
    hold_init(&a, 300000000, true);                 /* 0.3 USD */
    assert_true(state_budget_reserve(l, &a));
    assert_int_equal(a.verdict, STATE_TAKEN);
    assert_int_equal(a.ref[1].reserved, 0);         /* figures before this reservation */
    hold_init(&b, 300000000, true);                 /* the model's 0.5 has 0.2 left */
    assert_true(state_budget_reserve(l, &b));
    assert_int_equal(b.verdict, STATE_BUDGET_EXCEEDED);
    assert_int_equal(b.refused, 1);
    assert_int_equal(b.ref[1].reserved, 300000000);
    hold_init(&c, 300000000, false);                /* the key alone still has room */
    assert_true(state_budget_reserve(l, &c));
    assert_int_equal(c.verdict, STATE_TAKEN);
    state_budget_settle(&b, 5);                     /* refused: holds nothing, charges nothing */
    state_budget_settle(&a, 100000000);             /* cost 0.1 of an estimate of 0.3 */
    state_budget_settle(&a, 100000000);             /* twice: the second is nothing */
    struct state_budget_ref k = {.kind = BUDGET_OF_KEY, .name = "k", .b = &key_budget};
    struct state_budget_ref m = {.kind = BUDGET_OF_MODEL, .name = "m", .b = &model_budget};
    state_budget_peek(st, &k);
    state_budget_peek(st, &m);
    assert_int_equal(k.spent, 100000000);
    assert_int_equal(k.reserved, 300000000);        /* c's */
    assert_int_equal(m.spent, 100000000);
    assert_int_equal(m.reserved, 0);
    state_budget_settle(&c, 0);
    state_budget_peek(st, &k);
    assert_int_equal(k.reserved, 0);
    /* used up: even an estimate of 0 is refused */
    hold_init(&a, 900000000, false);
    assert_true(state_budget_reserve(l, &a));
    state_budget_settle(&a, 900000000);
    hold_init(&a, 0, false);
    assert_true(state_budget_reserve(l, &a));
    assert_int_equal(a.verdict, STATE_BUDGET_EXCEEDED);
    state_link_free(l);
    state_free(st);
}

struct race {
    struct state_link *l;
    int taken;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 1000; i++) {
        struct state_budget_hold h;
        hold_init(&h, 1000000, i % 2);              /* 0.001 USD, half with the model */
        assert_true(state_budget_reserve(r->l, &h));
        if (h.verdict == STATE_TAKEN) {
            r->taken++;
            state_budget_settle(&h, 1000000);
        }
    }
    return NULL;
}

/* 4 threads × 1000 requests of 0.001 USD against 1 USD (key) and 0.5 USD (model): exactly
 * 1000 settle in all, never more, and the model's half stops at 500. */
static void test_exact_under_threads(void **unused)
{
    struct state *st = memory_state(NULL);
    uint64_t errors = 0;
    struct state_link *l = state_link_new(st, NULL, 0, &errors);
    struct race r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct race){l, 0};
        assert_int_equal(pthread_create(&t[i], NULL, racer, &r[i]), 0);
    }
    int taken = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        taken += r[i].taken;
    }
    assert_int_equal(taken, 1000);
    struct state_budget_ref k = {.kind = BUDGET_OF_KEY, .name = "k", .b = &key_budget};
    struct state_budget_ref m = {.kind = BUDGET_OF_MODEL, .name = "m", .b = &model_budget};
    state_budget_peek(st, &k);
    state_budget_peek(st, &m);
    assert_int_equal(k.spent, 1000000000);
    assert_true(m.spent <= 500000000);
    assert_int_equal(k.reserved + m.reserved, 0);
    state_link_free(l);
    state_free(st);
}

static void test_saved_across_restart(void **unused)
{
    char dir[] = "/tmp/llmux-budget-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/budget.json", dir);
    struct state *st = memory_state(dir);
    uint64_t errors = 0;
    struct state_link *l = state_link_new(st, NULL, 0, &errors);
    struct state_budget_hold h;
    hold_init(&h, 5000, true);
    assert_true(state_budget_reserve(l, &h));
    state_budget_settle(&h, 4321);
    state_link_free(l);
    state_free(st);                                 /* the last write, at exit */
    assert_int_equal(access(path, R_OK), 0);
    st = memory_state(dir);
    struct state_budget_ref k = {.kind = BUDGET_OF_KEY, .name = "k", .b = &key_budget};
    state_budget_peek(st, &k);
    assert_int_equal(k.spent, 4321);
    assert_int_equal(k.reserved, 0);
    struct state_spend_row row = {.ref = k};
    struct state_spend_read rd = {.rows = &row, .n = 1};
    l = state_link_new(st, NULL, 0, &errors);
    assert_true(state_spend_read(l, &rd));
    assert_int_equal(json_integer_value(json_object_get(row.models, "m")), 4321);
    json_decref(row.models);
    state_link_free(l);
    state_free(st);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_windows),
        cmocka_unit_test(test_calendar_months),
        cmocka_unit_test(test_estimate),
        cmocka_unit_test(test_reserve_settle),
        cmocka_unit_test(test_exact_under_threads),
        cmocka_unit_test(test_saved_across_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
