/* Unit tests for common/json_valid.c: the strict RFC 8259 validator and the parse budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_valid.h"

static int valid(const char *t)
{
    return json_valid(t, strlen(t), JSON_VALID_DEPTH, NULL, NULL);
}

static void test_accepts_rfc8259(void **state)
{
    const char *good[] = {
        "{}", "[]", " {\"a\":1} ", "0", "-0", "1.5e+10", "-12.25E-3", "\"\"", "true", "false",
        "null", "[1,[2,[3]],{\"a\":{\"b\":[]}}]", "\"\\u00e9\\n\\\\\\/\\\"\"",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", "\"\\ud800\"",
        "{\"id\":\"x\",\"choices\":[{\"index\":0}],\"usage\":null}", "\r\n\t[ 1 , 2 ]\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(valid(good[i]), 0);
}

static void test_refuses_everything_else(void **state)
{
    const char *bad[] = {
        "", " ", "{", "}", "{\"id\":\"x\",\"choices\":[},\"object\": tru}", "[1,]", "[,1]",
        "{\"a\":1,}", "{\"a\"}", "{\"a\" 1}", "{1:2}", "{'a':1}", "01", "1.", ".5", "-", "+1",
        "1e", "1e+", "0x10", "NaN", "Infinity", "tru", "nul", "truex", "\"abc", "\"a\tb\"",
        "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"", "\"\xe2\x82\"", "\"\x80\"", "[1] [2]", "{}x", "[1]]",
        "[}", "{]", "{\"a\":1 \"b\":2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(valid(bad[i]), -1);
    assert_int_equal(json_valid("[1]\0", 4, JSON_VALID_DEPTH, NULL, NULL), -1);
}

static void test_depth_and_error_offset(void **state)
{
    char deep[600];
    memset(deep, '[', 300);
    memset(deep + 300, ']', 300);
    assert_int_equal(json_valid(deep, 600, 512, NULL, NULL), 0);
    size_t at = 0;
    assert_int_equal(json_valid(deep, 600, 128, NULL, &at), -1);
    assert_int_equal(at, 128);
    assert_int_equal(json_valid("[1,2,x]", 7, 8, NULL, &at), -1);
    assert_int_equal(at, 5);
}

static void test_stats_price_tiny_containers(void **state)
{
    struct json_valid_stats st;
    const char *t = "{\"a\":[{},{},[]],\"b\":\"x\"}";
    assert_int_equal(json_valid(t, strlen(t), 8, &st, NULL), 0);
    assert_int_equal(st.containers, 5);
    assert_int_equal(st.members, 2);
    assert_int_equal(st.scalars, 1);
    size_t n = 3 * 100000 + 2;
    char *big = malloc(n + 1);
    big[0] = '[';
    for (size_t i = 0; i < 100000; i++)
        memcpy(big + 1 + 3 * i, i ? ",{}" : "{} ", 3);
    big[n - 1] = ']';
    int over = 0;
    assert_null(json_valid_load(big, n, 0, &over));
    assert_int_equal(over, 1);
    json_t *ok = json_valid_load("{\"a\":[1,2]}", 11, 0, &over);
    assert_non_null(ok);
    assert_int_equal(over, 0);
    json_decref(ok);
    free(big);
}

/* Strings are checked eight bytes at a time: a bad byte, a quote or an escape at any offset
 * of a word (after plain runs of every length) is found exactly where it is. */
static void test_bytes_found_at_every_offset(void **state)
{
    static const char bad[] = {0x01, 0x1f, (char)0xff, (char)0xc0};
    char t[64];
    for (size_t k = 0; k < 24; k++) {
        for (size_t b = 0; b < sizeof bad; b++) {
            memset(t, 'a', sizeof t);
            t[0] = '"';
            t[1 + k] = bad[b];
            t[40] = '"';
            size_t at = 0;
            assert_int_equal(json_valid(t, 41, 8, NULL, &at), -1);
            assert_int_equal(at, 1 + k);
        }
        memset(t, ' ', sizeof t);
        t[0] = '"';
        memset(t + 1, 'b', k);
        memcpy(t + 1 + k, "\\n\\\"\u00e9\"", 7);     /* escapes, UTF-8, then the end */
        assert_int_equal(json_valid(t, 1 + k + 7 + 20, 8, NULL, NULL), 0);
    }
}

static void test_object_check(void **state)
{
    assert_int_equal(json_valid_object(" {\"a\":1}", 8), 0);
    assert_int_equal(json_valid_object("[1]", 3), -1);
    assert_int_equal(json_valid_object("{\"a\":tru}", 9), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_rfc8259),
        cmocka_unit_test(test_refuses_everything_else),
        cmocka_unit_test(test_depth_and_error_offset),
        cmocka_unit_test(test_stats_price_tiny_containers),
        cmocka_unit_test(test_object_check),
        cmocka_unit_test(test_bytes_found_at_every_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
