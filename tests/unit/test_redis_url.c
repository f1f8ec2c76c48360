/* test_redis_url: the redis-cli URL grammar — defaults, user and password, percent escapes,
 * IPv6, database numbers — and that errors never echo a secret. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/redis_url.h"

static void test_defaults(void **state)
{
    struct redis_url u;
    char err[128];
    assert_int_equal(redis_url_parse("redis://", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_null(u.user);
    assert_null(u.pass);
    assert_false(u.tls);
    assert_int_equal(redis_url_parse("redis://cache.internal:7000/3", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "cache.internal");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    redis_url_clear(&u);
}

static void test_userinfo(void **state)
{
    struct redis_url u;
    char err[128];
    assert_int_equal(redis_url_parse("redis://:s3cret@h/0", &u, err, sizeof err), 0);
    assert_null(u.user);
    assert_string_equal(u.pass, "s3cret");
    redis_url_clear(&u);
    assert_int_equal(redis_url_parse("rediss://app:p%40ss:w@h:6380", &u, err, sizeof err), 0);
    assert_true(u.tls);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.pass, "p@ss:w");
    assert_int_equal(u.port, 6380);
    redis_url_clear(&u);
    /* redis-cli reads a lone userinfo as the password */
    assert_int_equal(redis_url_parse("redis://pw@h", &u, err, sizeof err), 0);
    assert_null(u.user);
    assert_string_equal(u.pass, "pw");
    redis_url_clear(&u);
    /* an unescaped '@' in the password: the last '@' ends the userinfo */
    assert_int_equal(redis_url_parse("redis://:a@b@h", &u, err, sizeof err), 0);
    assert_string_equal(u.pass, "a@b");
    assert_string_equal(u.host, "h");
    redis_url_clear(&u);
}

static void test_ipv6(void **state)
{
    struct redis_url u;
    char err[128];
    assert_int_equal(redis_url_parse("redis://[::1]:6390/1", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
    assert_int_equal(u.db, 1);
    assert_int_equal(redis_url_parse("redis://[::1]", &u, err, sizeof err), 0);
    assert_int_equal(u.port, 6379);
    assert_int_equal(redis_url_parse("redis://[::1", &u, err, sizeof err), -1);
    assert_int_equal(redis_url_parse("redis://[::1]x", &u, err, sizeof err), -1);
}

static void test_bad(void **state)
{
    static const char *const bad[] = {
        "http://h", "redis://h:0", "redis://h:65536", "redis://h:12a", "redis://h/x",
        "redis://h/99999999999", "redis://:zq%zzzq@h", "redis://:zq%00zq@h", "redis://:x%4@h",
        "redis://h h", "redis://h:",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct redis_url u;
        char err[128] = "";
        assert_int_equal(redis_url_parse(bad[i], &u, err, sizeof err), -1);
        assert_true(err[0]);
        assert_null(strstr(err, "zq"));
        assert_null(u.pass);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_userinfo),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
