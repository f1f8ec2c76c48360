/* test_trace: W3C traceparent parsing (what is accepted, what restarts the trace), the ids we
 * make, and root sampling by ratio. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "daemon/trace.h"

static bool parse(const char *s, uint8_t tid[16], uint8_t pid[8], bool *sampled)
{
    return trace_parse_parent(s, strlen(s), tid, pid, sampled);
}

static void test_parent_accepted(void **state)
{
    uint8_t tid[16], pid[8];
    bool sampled = false;
    char hex[33];
    assert_true(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, pid,
                      &sampled));
    assert_true(sampled);
    trace_hex(hex, tid, 16);
    assert_string_equal(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    trace_hex(hex, pid, 8);
    assert_string_equal(hex, "00f067aa0ba902b7");
    assert_true(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", tid, pid,
                      &sampled));
    assert_false(sampled);
    /* a later version may add fields; its first four are read the same way */
    assert_true(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what", tid,
                      pid, &sampled));
    assert_true(sampled);
}

static void test_parent_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    };
    uint8_t tid[16], pid[8];
    bool sampled;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], tid, pid, &sampled))
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_state_and_ids(void **state)
{
    assert_true(trace_state_ok("rojo=00f067aa0ba902b7", 21));
    assert_false(trace_state_ok("a=\x01", 3));
    assert_false(trace_state_ok("", 0));
    char big[600];
    memset(big, 'a', sizeof big);
    assert_false(trace_state_ok(big, sizeof big));
    uint8_t a[16], b[16];
    trace_random_id(a, 16);
    trace_random_id(b, 16);
    assert_memory_not_equal(a, b, 16);
}

static void test_sampling_ratio(void **state)
{
    unsigned kept = 0;
    uint8_t id[16];
    for (int i = 0; i < 10000; i++) {
        trace_random_id(id, 16);
        kept += trace_sample_root(id, 0.25);
        assert_true(trace_sample_root(id, 1.0));
        assert_false(trace_sample_root(id, 0.0));
    }
    assert_in_range(kept, 2200, 2800);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parent_accepted),
        cmocka_unit_test(test_parent_refused),
        cmocka_unit_test(test_state_and_ids),
        cmocka_unit_test(test_sampling_ratio),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
