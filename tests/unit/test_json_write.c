/* test_json_write: the compact writer keeps numbers as the client wrote them (shortest text that
 * reads back as the same double), escapes strings as jansson does, and keeps key order. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_write.h"

static void expect_written(const char *in, const char *want)
{
    json_error_t e;
    json_t *v = json_loads(in, JSON_DECODE_ANY, &e);
    assert_non_null(v);
    char *got = json_write_text(v);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
    json_decref(v);
}

static void test_reals_as_written(void **state)
{
    expect_written("0.2", "0.2");
    expect_written("[0.1, 0.7, 1.5, -3.25, 1e-7, 2.5e+300]", "[0.1,0.7,1.5,-3.25,1e-07,2.5e+300]");
    expect_written("1.0", "1.0");              /* stays a real */
    expect_written("100.0", "100.0");
    /* 0.1 + 0.2 needs all 17 digits to read back; nothing is lost */
    expect_written("0.30000000000000004", "0.30000000000000004");
    expect_written("123456789012345678", "123456789012345678");     /* integers untouched */
}

static void test_every_real_round_trips(void **state)
{
    char text[48];
    double samples[] = {0.2, 1.0 / 3.0, 2.0 / 3.0, 1e-300, 1.7976931348623157e308, -0.0, 5e-324};
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        assert_int_equal(json_write_real(samples[i], text, sizeof text), 0);
        assert_true(strtod(text, NULL) == samples[i]);
    }
    uint64_t x = 88172645463325252ull;     /* xorshift over raw bit patterns */
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double d;
        memcpy(&d, &x, sizeof d);
        if (!isfinite(d))
            continue;
        assert_int_equal(json_write_real(d, text, sizeof text), 0);
        assert_true(strtod(text, NULL) == d);
    }
    assert_int_equal(json_write_real(NAN, text, sizeof text), -1);
    assert_int_equal(json_write_real(INFINITY, text, sizeof text), -1);
}

static void test_structure_and_strings(void **state)
{
    expect_written("{\"z\":1,\"a\":[true,false,null,{}],\"s\":\"q\\\"\\\\\\n\\u0001é\"}",
                   "{\"z\":1,\"a\":[true,false,null,{}],\"s\":\"q\\\"\\\\\\n\\u0001é\"}");
    expect_written("[]", "[]");
    expect_written("\"\"", "\"\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reals_as_written),
        cmocka_unit_test(test_every_real_round_trips),
        cmocka_unit_test(test_structure_and_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
