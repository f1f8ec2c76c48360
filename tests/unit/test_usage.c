/* test_usage: token counts as the cost accounting takes them — every kind validated the same
 * way and summed with saturation — and the usage option spliced into a stream's text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <limits.h>
#include <string.h>

#include "common/buf.h"
#include "upstream/provider.h"
#include "upstream/provider_anthropic.h"

static json_t *parse(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_anthropic_cache_kinds_validated(void **state)
{
    json_t *u = parse("{\"input_tokens\":10,\"cache_read_input_tokens\":-4,"
                      "\"cache_creation_input_tokens\":4611686018427387904,"
                      "\"output_tokens\":\"5\"}");
    struct usage got = {.completion = 7};
    assert_int_equal(anthropic_usage(u, &got), 3);     /* each bad kind counted once */
    json_decref(u);
    assert_true(got.seen);
    assert_int_equal(got.prompt, 10);
    assert_int_equal(got.cache_read, 0);
    assert_int_equal(got.cache_write, 0);
    assert_int_equal(got.completion, 7);    /* an invalid output count changes nothing */
}

static void test_anthropic_delta_output_only(void **state)
{
    json_t *u = parse("{\"output_tokens\":-1}");
    struct usage got = {.prompt = 3, .completion = 2, .seen = true};
    assert_int_equal(anthropic_usage_delta(u, &got), 1);
    json_decref(u);
    assert_int_equal(got.completion, 2);
    u = parse("{\"output_tokens\":9}");
    assert_int_equal(anthropic_usage_delta(u, &got), 0);
    json_decref(u);
    assert_int_equal(got.prompt, 3);
    assert_int_equal(got.completion, 9);
}

static void test_openai_cached_validated(void **state)
{
    json_t *j = parse("{\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":1,"
                      "\"prompt_tokens_details\":{\"cached_tokens\":-3}}}");
    struct usage got = {0};
    assert_int_equal(openai_usage(j, &got), 1);
    json_decref(j);
    assert_int_equal(got.prompt, 20);
    assert_int_equal(got.cache_read, 0);
    j = parse("{\"usage\":{\"prompt_tokens\":1099511627777,\"completion_tokens\":-1}}");
    struct usage none = {0};
    assert_int_equal(openai_usage(j, &none), 2);       /* past 2^40 and negative */
    json_decref(j);
    assert_false(none.seen);
    assert_int_equal(none.prompt, 0);
}

/* An answer's usage read from its text: each case as the tree reading (openai_usage) takes it,
 * whether the scanner reads it in place or hands it to jansson (escapes, huge numbers). */
static void usage_text_is(const char *text, unsigned bad, long prompt, long completion,
                          long cached, bool seen)
{
    struct usage got = {0};
    assert_int_equal(openai_usage_text(text, strlen(text), &got), bad);
    assert_int_equal(got.prompt, prompt);
    assert_int_equal(got.completion, completion);
    assert_int_equal(got.cache_read, cached);
    assert_int_equal(got.seen, seen);
}

static void test_openai_usage_from_text(void **state)
{
    usage_text_is("{\"id\":\"a\",\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":20}}}", 0, 12, 3, 12, true);
    usage_text_is("{\"usage\":{\"input_tokens\":-0,\"output_tokens\":7,"
                  "\"input_tokens_details\":{\"cached_tokens\":2}}}", 0, 0, 7, 0, true);
    usage_text_is("{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1.0}}", 1, 5, 0, 0,
                  true);
    usage_text_is("{\"usage\":{\"prompt_tokens\":\"5\",\"completion_tokens\":-2}}", 2, 0, 0, 0,
                  false);
    usage_text_is("{\"usage\":{\"prompt_tokens\":null,\"completion_tokens\":4,"
                  "\"prompt_tokens_details\":null,\"input_tokens_details\":{\"cached_tokens\":1}}}",
                  0, 0, 4, 0, true);
    usage_text_is("{\"usage\":null}", 0, 0, 0, 0, false);
    usage_text_is("{\"usage\":[1,2]}", 0, 0, 0, 0, false);
    usage_text_is("{\"model\":\"m\"}", 0, 0, 0, 0, false);
    /* the last copy of a name wins, as in jansson */
    usage_text_is("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
                  "\"prompt_tokens\":9}}", 0, 9, 2, 0, true);
    /* an escaped name is decoded */
    usage_text_is("{\"usage\":{\"prompt\\u005ftokens\":6,\"completion_tokens\":2}}", 0, 6, 2, 0,
                  true);
    /* a number jansson can't hold fails its parse: the whole usage is ignored */
    usage_text_is("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
                  "\"x\":123456789012345678901234}}", 0, 0, 0, 0, false);
    usage_text_is("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"x\":1e999}}",
                  0, 0, 0, 0, false);
    usage_text_is("{\"usage\":{\"prompt_tokens\":1099511627776,\"completion_tokens\":"
                  "1099511627777}}", 1, 1099511627776L, 0, 0, true);
}

static void test_sums_saturate(void **state)
{
    struct usage to = {.prompt = LONG_MAX - 1, .cache_read = LONG_MAX, .completion = 1};
    struct usage u = {.prompt = 5, .cache_read = 5, .completion = 2, .seen = true};
    usage_add(&to, &u);
    assert_true(to.prompt == LONG_MAX && to.cache_read == LONG_MAX);
    assert_int_equal(to.completion, 3);
    assert_true(to.seen);
    assert_true(usage_total(&to) == LONG_MAX);
}

/* The upstream body for raw, and that it is valid JSON with the usage option on. */
static json_t *encode(const char *raw)
{
    struct codec c;
    struct buf in = BUF_INIT, out = BUF_INIT;
    char err[128] = "", param[64] = "";
    codec_init(&c, PROVIDER_OPENAI, EP_CHAT, "up-model", 0);
    buf_puts(&in, raw);
    assert_int_equal(c.ops->encode(EP_CHAT, NULL, &in, "up-model", 0, &out, err, sizeof err,
                                   param, sizeof param), 0);
    json_t *j = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "up-model");
    assert_true(openai_stream_usage_asked(out.data, out.len) ==
                json_is_true(json_object_get(j, "stream")));
    codec_free(&c);
    buf_free(&in);
    buf_free(&out);
    return j;
}

static void test_usage_option_spliced(void **state)
{
    static const char *const streams[] = {
        "{\"model\":\"m\",\"stream\":true,\"messages\":[]}",
        " {\"stream\":true,\"stream_options\":{\"include_usage\":false},\"model\":\"m\"}",
        "{\"model\":\"m\",\"stream_options\":{ },\"stream\":true}",
        "{\"model\":\"m\",\"stream_options\":{\"x\":1},\"stream\":true}",
        "{\"stream_options\":null,\"stream\":true,\"model\":\"a\\\"b\"}",
        "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
    };
    for (size_t i = 0; i < sizeof streams / sizeof *streams; i++) {
        json_t *j = encode(streams[i]);
        assert_true(json_object_size(json_object_get(j, "stream_options")) >= 1);
        json_decref(j);
    }
    json_t *j = encode("{\"model\":\"m\",\"stream\":false}");      /* not a stream: as written */
    assert_null(json_object_get(j, "stream_options"));
    json_decref(j);
}

static void test_usage_asked_read_from_text(void **state)
{
    static const char yes[] = "{\"stream_options\" : { \"include_usage\" : true }}";
    static const char no[] = "{\"stream_options\":{\"include_usage\":\"true\"}}";
    assert_true(openai_stream_usage_asked(yes, strlen(yes)));
    assert_false(openai_stream_usage_asked(no, strlen(no)));
    assert_false(openai_stream_usage_asked("{}", 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anthropic_cache_kinds_validated),
        cmocka_unit_test(test_anthropic_delta_output_only),
        cmocka_unit_test(test_openai_cached_validated),
        cmocka_unit_test(test_openai_usage_from_text),
        cmocka_unit_test(test_sums_saturate),
        cmocka_unit_test(test_usage_option_spliced),
        cmocka_unit_test(test_usage_asked_read_from_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
