/* test_state: GCRA maths (burst, steady rate, retry delay, remaining, reset, token debt and its
 * cap), the process-wide slot table, and the memory backend's exactness under threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "daemon/state.h"
#include "daemon/state_impl.h"

#define W STATE_WINDOW_US

static void test_gcra_burst_then_rate(void **unused)
{
    double T = (double)W / 60;          /* rpm 60: one a second after a burst of 60 */
    int64_t tat = 0, now = 1000000000;
    for (int i = 0; i < 60; i++) {
        struct gcra g = gcra_admit(tat, now, T, W, 1);
        assert_true(g.ok);
        assert_int_equal(g.remaining, 59 - i);
        tat = g.tat;
    }
    struct gcra g = gcra_admit(tat, now, T, W, 1);
    assert_false(g.ok);
    assert_int_equal(g.tat, tat);       /* a refusal spends nothing */
    assert_int_equal(g.retry_us, 1000000);
    assert_int_equal(g.remaining, 0);
    assert_int_equal(g.reset_us, W);
    /* 1.5 s later exactly one fits again */
    g = gcra_admit(tat, now + 1500000, T, W, 1);
    assert_true(g.ok);
    tat = g.tat;
    g = gcra_admit(tat, now + 1500000, T, W, 1);
    assert_false(g.ok);
    assert_int_equal(g.retry_us, 500000);
    /* a minute idle: the whole budget is back, no more */
    g = gcra_check(tat, now + 200000000, T, W);
    assert_true(g.ok);
    assert_int_equal(g.remaining, 60);
    assert_int_equal(g.reset_us, 0);
}

static void test_gcra_odd_rates(void **unused)
{
    double T = (double)W / 7;
    int64_t tat = 0, now = 5;
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        struct gcra g = gcra_admit(tat, now, T, W, 1);
        if (g.ok) {
            ok++;
            tat = g.tat;
        }
    }
    assert_int_equal(ok, 7);
    /* after T the eighth fits, and not before */
    assert_false(gcra_admit(tat, now + (int64_t)T - 10, T, W, 1).ok);
    assert_true(gcra_admit(tat, now + (int64_t)T + 10, T, W, 1).ok);
}

static void test_gcra_tokens(void **unused)
{
    double T = (double)W / 1000;        /* tpm 1000 */
    int64_t now = 42000000;
    struct gcra g = gcra_charge(0, now, T, W, 400);
    assert_int_equal(g.remaining, 600);
    assert_true(gcra_check(g.tat, now, T, W).ok);
    g = gcra_charge(g.tat, now, T, W, 700);         /* over budget: a debt */
    assert_int_equal(g.remaining, 0);
    struct gcra c = gcra_check(g.tat, now, T, W);
    assert_false(c.ok);
    assert_int_equal(c.retry_us, 100 * (int64_t)T + (int64_t)T);
    /* the debt is capped at one more window */
    g = gcra_charge(0, now, T, W, 1e9);
    assert_int_equal(g.tat, now + 2 * W);
    assert_int_equal(g.reset_us, 2 * W);
}

static struct state *memory_state(void)
{
    char err[128];
    struct conf c;
    memset(&c, 0, sizeof c);
    c.state.redis = "redis://127.0.0.1:6379/0";
    c.state.backend = STATE_MEMORY;
    c.timeouts.connect_ms = 1000;
    struct state *st = state_new(&c, err, sizeof err);
    assert_non_null(st);
    return st;
}

static void test_slots(void **unused)
{
    struct state *st = memory_state();
    struct state_slot *a = state_slot_get(st, "alpha"), *b = state_slot_get(st, "beta");
    assert_non_null(a);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(state_slot_get(st, "alpha"), a);
    assert_string_equal(a->name, "alpha");
    char name[32];
    for (int i = 0; i < 5000; i++) {            /* many keys: buckets chain */
        snprintf(name, sizeof name, "k%d", i);
        assert_non_null(state_slot_get(st, name));
    }
    assert_ptr_equal(state_slot_get(st, "beta"), b);
    state_free(st);
}

struct race {
    struct state *st;
    struct state_link *link;
    struct conf_key *key;
    int taken, refused;
    int hold;                   /* keep what was taken (concurrency) */
};

static void *racer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 2000; i++) {
        struct state_hold h;
        memset(&h, 0, sizeof h);
        assert_true(state_take(r->link, &h, r->key));
        if (h.verdict == STATE_TAKEN) {
            r->taken++;
            if (!r->hold)
                state_release(&h, 0);
        } else {
            r->refused++;
        }
    }
    return NULL;
}

static int run_race(struct conf_key *key, int hold)
{
    struct state *st = memory_state();
    uint64_t errors = 0;
    struct state_link *link = state_link_new(st, NULL, 0, &errors);
    struct race r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct race){st, link, key, 0, 0, hold};
        assert_int_equal(pthread_create(&t[i], NULL, racer, &r[i]), 0);
    }
    int taken = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        taken += r[i].taken;
        assert_int_equal(r[i].taken + r[i].refused, 2000);
    }
    state_link_free(link);
    state_free(st);
    return taken;
}

/* 8,000 takes from 4 threads at once: exactly the limit gets through, never more. */
static void test_memory_exact_under_threads(void **unused)
{
    struct conf_key rated = {.name = "rated", .rpm = 1000};
    assert_int_equal(run_race(&rated, 0), 1000);
    struct conf_key narrow = {.name = "narrow", .max_concurrency = 37};
    assert_int_equal(run_race(&narrow, 1), 37);
    struct conf_key both = {.name = "both", .max_concurrency = 3, .rpm = 100};
    assert_int_equal(run_race(&both, 0), 100);      /* released each time: rpm decides */
}

static void test_memory_release_and_tokens(void **unused)
{
    struct state *st = memory_state();
    uint64_t errors = 0;
    struct state_link *link = state_link_new(st, NULL, 0, &errors);
    struct conf_key k = {.name = "t", .max_concurrency = 1, .tpm = 100};
    struct state_hold h1, h2;
    memset(&h1, 0, sizeof h1);
    memset(&h2, 0, sizeof h2);
    assert_true(state_take(link, &h1, &k));
    assert_int_equal(h1.verdict, STATE_TAKEN);
    assert_int_equal(h1.fig.limit_tok, 100);
    assert_int_equal(h1.fig.remaining_tok, 100);
    assert_true(state_take(link, &h2, &k));
    assert_int_equal(h2.verdict, STATE_BUSY);
    state_release(&h2, 0);                          /* took nothing: gives nothing back */
    state_release(&h1, 150);                        /* 150 tokens: over the minute's 100 */
    assert_true(state_take(link, &h2, &k));
    assert_int_equal(h2.verdict, STATE_TOKENS_LIMITED);
    assert_true(h2.retry_after_s > 29 && h2.retry_after_s < 31);
    struct state_figures f;
    state_peek(st, &k, &f);
    assert_int_equal(f.remaining_tok, 0);
    assert_int_equal(errors, 0);
    state_link_free(link);
    state_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_burst_then_rate),
        cmocka_unit_test(test_gcra_odd_rates),
        cmocka_unit_test(test_gcra_tokens),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_memory_exact_under_threads),
        cmocka_unit_test(test_memory_release_and_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
