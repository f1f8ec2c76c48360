/* test_cost: the price table as an operator writes it (globs, most specific wins, overlaps
 * refused by -t) and the pricing of usage (each token kind at its own rate, estimates). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "daemon/cost.h"

#define ERRLEN 512
#define HEAD "upstreams: [{name: u, base_url: \"https://h\"}]\n" \
             "models:\n" \
             "  - {name: gpt-4o, targets: [{upstream: u}]}\n" \
             "  - {name: mini, targets: [{upstream: u, model: gpt-4o-mini-2024}]}\n" \
             "  - {name: other, targets: [{upstream: u, model: llama}]}\n"

static struct conf *load(const char *yaml, char *err)
{
    return conf_load_string(yaml, strlen(yaml), "t.yaml", err, ERRLEN);
}

static void test_glob_match(void **state)
{
    assert_true(conf_glob_match("gpt-4o*", "gpt-4o"));
    assert_true(conf_glob_match("gpt-4o*", "gpt-4o-mini"));
    assert_true(conf_glob_match("*", ""));
    assert_true(conf_glob_match("a?c", "abc"));
    assert_true(conf_glob_match("*mini*", "gpt-4o-mini-2024"));
    assert_true(conf_glob_match("a*b*c", "aXbYbZc"));
    assert_false(conf_glob_match("a?c", "ac"));
    assert_false(conf_glob_match("gpt-4o", "gpt-4o-mini"));
    assert_false(conf_glob_match("*x", "abc"));
}

static void test_glob_overlap_and_specificity(void **state)
{
    assert_true(conf_glob_overlap("gpt-*", "*-mini"));       /* gpt-mini */
    assert_true(conf_glob_overlap("a*", "a*"));
    assert_true(conf_glob_overlap("a?c", "*b*"));
    assert_false(conf_glob_overlap("gpt-*", "claude-*"));
    assert_false(conf_glob_overlap("a?", "abc"));
    assert_false(conf_glob_overlap("*a", "*b"));
    assert_int_equal(conf_glob_specificity("gpt-4o*"), 6);
    assert_int_equal(conf_glob_specificity("*?*"), 0);
}

static void test_most_specific_wins(void **state)
{
    char err[ERRLEN];
    struct conf *c = load(HEAD "prices:\n"
                          "  - {model: \"gpt-4o*\", input: 2.50, output: 10}\n"
                          "  - {model: \"gpt-4o-mini*\", input: 0.15, output: 0.60, "
                          "cache_read: 0.075, per: 1M}\n"
                          "  - {model: \"*\", input: 1, output: 1, cache_write: 0, per: 1K}\n",
                          err);
    if (!c)
        fprintf(stderr, "%s\n", err);
    assert_non_null(c);
    assert_int_equal(c->nprices, 3);
    const struct conf_price *p4 = c->models[0].targets[0].price;   /* by the model's name */
    const struct conf_price *pm = c->models[1].targets[0].price;   /* by the target's model */
    const struct conf_price *po = c->models[2].targets[0].price;
    assert_ptr_equal(p4, &c->prices[0]);
    assert_ptr_equal(pm, &c->prices[1]);
    assert_ptr_equal(po, &c->prices[2]);
    assert_true(p4->cache_read == 2.50 && p4->cache_write == 2.50);    /* default: input */
    assert_true(pm->cache_read == 0.075);
    assert_int_equal(po->per, 1000);
    assert_true(po->cache_write == 0);
    conf_unref(c);
}

static void check_refused(const char *yaml, const char *want)
{
    char err[ERRLEN];
    struct conf *c = load(yaml, err);
    if (c || !strstr(err, want))
        fprintf(stderr, "want ...%s...\ngot: %s\n", want, c ? "(loaded)" : err);
    assert_null(c);
    assert_non_null(strstr(err, want));
}

static void test_refused(void **state)
{
    check_refused(HEAD "prices: [{model: \"gpt-*\", input: 1, output: 1},"
                  " {model: \"*-min\", input: 2, output: 2}]\n",
                  "t.yaml:6:57: prices[1].model: \"*-min\" overlaps prices[0] \"gpt-*\" with "
                  "the same specificity");
    check_refused(HEAD "prices: [{model: a, input: 1, output: 1}, {model: a, input: 1, "
                  "output: 2}]\n", "prices[1].model: \"a\" overlaps prices[0]");
    check_refused(HEAD "prices: [{model: a, input: -1, output: 1}]\n",
                  "prices[0].input: expected a price in USD from 0 to 1e+06 (like 2.50), "
                  "got \"-1\"");
    check_refused(HEAD "prices: [{model: a, input: 0x10, output: 1}]\n", "got \"0x10\"");
    check_refused(HEAD "prices: [{model: a, input: nan, output: 1}]\n", "got \"nan\"");
    check_refused(HEAD "prices: [{model: a, input: 1, output: 1, per: 1G}]\n",
                  "prices[0].per: expected 1M or 1K");
    check_refused(HEAD "prices: [{model: a, input: 1}]\n",
                  "prices[0].output: missing required key");
    check_refused(HEAD "prices: [{model: a, input: 1, output: 1, cached: 1}]\n",
                  "prices[0]");
}

static void test_cost_each_kind_once(void **state)
{
    struct conf_price p = {.input = 3, .output = 15, .cache_read = 0.30, .cache_write = 3.75,
                           .per = 1000000};
    /* Anthropic: 1000 uncached + 2000 read + 500 written = 3500 prompt, 100 out */
    struct usage u = {.prompt = 3500, .completion = 100, .cache_read = 2000, .cache_write = 500};
    double want = (1000 * 3 + 2000 * 0.30 + 500 * 3.75 + 100 * 15) / 1e6;
    assert_true(fabs(cost_of(&p, &u) - want) < 1e-12);
    assert_true(cost_of(NULL, &u) == 0);
    struct usage e;
    cost_estimate(&e, 401, 7);
    assert_int_equal(e.prompt, 101);
    assert_int_equal(e.completion, 7);
    assert_false(e.seen);
}

static void test_format(void **state)
{
    char s[32];
    cost_format(s, sizeof s, 0.0000125);
    assert_string_equal(s, "0.0000125");
    cost_format(s, sizeof s, 2);
    assert_string_equal(s, "2.0");
    cost_format(s, sizeof s, 0);
    assert_string_equal(s, "0.0");
    cost_format(s, sizeof s, -1);
    assert_string_equal(s, "-");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glob_match),
        cmocka_unit_test(test_glob_overlap_and_specificity),
        cmocka_unit_test(test_most_specific_wins),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_cost_each_kind_once),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
