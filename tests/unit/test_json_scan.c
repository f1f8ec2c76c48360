/* Unit tests for common/json_scan.c: finding a top-level member's value in JSON text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/json_scan.h"

static const char *value_of(const char *text, const char *key)
{
    static char out[256];
    size_t s, e;
    if (json_scan_member(text, strlen(text), key, &s, &e) < 0)
        return NULL;
    memcpy(out, text + s, e - s);
    out[e - s] = '\0';
    return out;
}

static void test_finds_top_level_members(void **state)
{
    const char *t = " {\"a\": 1, \"model\" : \"gpt-4o\", \"n\":[1,{\"model\":\"x\"}],\"z\":null}";
    assert_string_equal(value_of(t, "model"), "\"gpt-4o\"");
    assert_string_equal(value_of(t, "a"), "1");
    assert_string_equal(value_of(t, "n"), "[1,{\"model\":\"x\"}]");
    assert_string_equal(value_of(t, "z"), "null");
    assert_null(value_of(t, "missing"));
}

static void test_skips_nested_and_tricky_strings(void **state)
{
    const char *t = "{\"messages\":[{\"content\":\"a \\\"}]{\\\\\",\"model\":\"inner\"}],"
                    "\"model\":\"outer\"}";
    assert_string_equal(value_of(t, "model"), "\"outer\"");
    assert_null(value_of("{\"mo\\u0064el\":\"x\"}", "model"));   /* escaped key: not matched */
    assert_null(value_of("[1,2]", "model"));
    assert_null(value_of("{\"model\"", "model"));
    assert_null(value_of("{\"model\":\"unterminated", "model"));
}

static void test_pick_decodes_names_and_finds_duplicates(void **state)
{
    const char *t = "{\"mo\\u0064el\":\"a\",\"stream\":true,\"x\":{\"model\":1}}";
    struct json_pick pk[] = {{"model", 0, 0, false}, {"stream", 0, 0, false},
                             {"messages", 0, 0, false}};
    assert_int_equal(json_scan_pick(t, strlen(t), pk, 3), 0);
    assert_true(pk[0].found && pk[1].found && !pk[2].found);
    assert_int_equal(pk[0].end - pk[0].start, 3);
    const char *d = "{\"model\":\"a\",\"m\":1,\"model\":\"b\"}";
    assert_int_equal(json_scan_pick(d, strlen(d), pk, 3), 1);
    const char *e = "{\"stream\":1,\"str\\u0065am\":2}";
    assert_int_equal(json_scan_pick(e, strlen(e), pk, 3), 2);
    assert_int_equal(json_scan_pick("[1]", 3, pk, 3), -1);
}

/* Long strings with escaped quotes and backslash runs end where a parser says they end. */
static void test_strings_with_escapes_skipped_exactly(void **state)
{
    const char *t = "{\"a\":\"x\\\\\",\"b\":\"q\\\"\\\\\\\"z\\\\\\\\\",\"model\":\"m\"}";
    assert_string_equal(value_of(t, "model"), "\"m\"");
    assert_string_equal(value_of(t, "a"), "\"x\\\\\"");
}

static void test_may_have_rules_out_only_absent_names(void **state)
{
    const char *plain = "{\"model\":\"m\",\"messages\":[]}";
    assert_false(json_scan_may_have(plain, strlen(plain), "stream"));
    assert_true(json_scan_may_have(plain, strlen(plain), "model"));
    const char *esc = "{\"str\\u0065am\":true}";     /* a \u escape anywhere: can't tell */
    assert_true(json_scan_may_have(esc, strlen(esc), "stream"));
    const char *lines = "{\"content\":\"a\\nb \\\"q\\\"\"}";  /* \n, \": still sure */
    assert_false(json_scan_may_have(lines, strlen(lines), "stream"));
    const char *nested = "{\"x\":{\"stream\":1}}";    /* anywhere, not only at the top */
    assert_true(json_scan_may_have(nested, strlen(nested), "stream"));
}

static void test_next_walks_array_elements(void **state)
{
    const char *t = "[ {\"a\":[1,2]} , \"x,y\", 3 ]";
    size_t pos = 0, s, e, n = 0;
    while (json_scan_next(t, strlen(t), &pos, &s, &e) > 0)
        n++;
    assert_int_equal(n, 3);
    pos = 0;
    assert_int_equal(json_scan_next("[]", 2, &pos, &s, &e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finds_top_level_members),
        cmocka_unit_test(test_skips_nested_and_tricky_strings),
        cmocka_unit_test(test_pick_decodes_names_and_finds_duplicates),
        cmocka_unit_test(test_next_walks_array_elements),
        cmocka_unit_test(test_strings_with_escapes_skipped_exactly),
        cmocka_unit_test(test_may_have_rules_out_only_absent_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
