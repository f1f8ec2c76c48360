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

static void test_structural_object_check(void **state)
{
    const char *good[] = {"{}", " {\"a\":1} ", "{\"a\":{\"b\":[1,2,\"]\"]},\"c\":\"}\"}"};
    const char *bad[] = {"", "not json", "[1]", "{\"a\":1", "{\"a\":1}x", "{\"a\":}",
                         "{\"a\" 1}", "{\"a\":{\"b\":1}", "{\"a\":\"x}"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(json_scan_object(good[i], strlen(good[i])), 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(json_scan_object(bad[i], strlen(bad[i])), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finds_top_level_members),
        cmocka_unit_test(test_skips_nested_and_tricky_strings),
        cmocka_unit_test(test_structural_object_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
