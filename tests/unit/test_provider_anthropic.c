/* test_provider_anthropic: the OpenAI ⇄ Anthropic codec as a client would see it: the request
 * body Anthropic receives, the chat.completion and error objects returned, and stream frames. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/json_write.h"
#include "tests/unit/json_assert.h"
#include "upstream/provider_anthropic.h"

static json_t *encode(const char *body, char *err, char *param)
{
    json_t *in = parse(body);
    json_t *out = anthropic_encode_chat(in, "claude-test", 0, err, 256, param, 64);
    json_decref(in);
    return out;
}

static void expect_encoded(const char *body, const char *want)
{
    char err[256], param[64];
    json_t *out = encode(body, err, param);
    if (!out)
        fail_msg("encode failed: %s (param %s)", err, param);
    assert_json_eq(out, want);
    json_decref(out);
}

/* ---- encode ----------------------------------------------------------------------------- */

static void test_encode_basic_fields(void **state)
{
    expect_encoded(
        "{\"model\":\"gpt-x\",\"messages\":["
        " {\"role\":\"system\",\"content\":\"You are terse.\"},"
        " {\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Answer in French.\"},"
        "                                  {\"type\":\"text\",\"text\":\"No emoji.\"}]},"
        " {\"role\":\"user\",\"content\":\"Hi\"},"
        " {\"role\":\"assistant\",\"content\":\"Bonjour\"},"
        " {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather?\"}]}],"
        " \"temperature\":0.5,\"top_p\":0.9,\"stop\":\"END\",\"stream\":true,\"user\":\"u-42\","
        " \"n\":1,\"frequency_penalty\":0.1,\"presence_penalty\":0.2,\"logprobs\":true,\"seed\":7,"
        " \"response_format\":{\"type\":\"json_object\"}}",
        "{\"model\":\"claude-test\","
        " \"system\":\"You are terse.\\n\\nAnswer in French.\\n\\nNo emoji.\","
        " \"messages\":["
        "  {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]},"
        "  {\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Bonjour\"}]},"
        "  {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather?\"}]}],"
        " \"max_tokens\":4096,\"temperature\":0.5,\"top_p\":0.9,\"stop_sequences\":[\"END\"],"
        " \"stream\":true,\"metadata\":{\"user_id\":\"u-42\"}}");
}

static void test_encode_merges_roles_and_max_tokens(void **state)
{
    /* Same-role neighbours merge; empty messages vanish rather than break alternation. */
    expect_encoded(
        "{\"messages\":["
        " {\"role\":\"user\",\"content\":\"a\"},"
        " {\"role\":\"user\",\"content\":\"\"},"
        " {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"b\"}]},"
        " {\"role\":\"assistant\",\"content\":\"c\"},"
        " {\"role\":\"assistant\",\"content\":null},"
        " {\"role\":\"assistant\",\"content\":\"d\"}],"
        " \"max_tokens\":50,\"max_completion_tokens\":100,\"stop\":[\"x\",\"y\"]}",
        "{\"model\":\"claude-test\",\"messages\":["
        "  {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "                                {\"type\":\"text\",\"text\":\"b\"}]},"
        "  {\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"c\"},"
        "                                     {\"type\":\"text\",\"text\":\"d\"}]}],"
        " \"max_tokens\":100,\"stop_sequences\":[\"x\",\"y\"]}");
    expect_encoded("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":7}",
                   "{\"model\":\"claude-test\",\"max_tokens\":7,\"messages\":"
                   "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q\"}]}]}");
}

static void test_encode_images(void **state)
{
    expect_encoded(
        "{\"messages\":[{\"role\":\"user\",\"content\":["
        " {\"type\":\"text\",\"text\":\"what is this\"},"
        " {\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},"
        " {\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.jpg\","
        "                                      \"detail\":\"high\"}}]}]}",
        "{\"model\":\"claude-test\",\"max_tokens\":4096,\"messages\":[{\"role\":\"user\","
        " \"content\":[{\"type\":\"text\",\"text\":\"what is this\"},"
        "  {\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\","
        "                               \"data\":\"iVBORw0KGgo=\"}},"
        "  {\"type\":\"image\",\"source\":{\"type\":\"url\","
        "                               \"url\":\"https://example.com/cat.jpg\"}}]}]}");
}

static void test_encode_tools_round_trip(void **state)
{
    expect_encoded(
        "{\"messages\":["
        " {\"role\":\"user\",\"content\":\"weather in Paris, and the time?\"},"
        " {\"role\":\"assistant\",\"content\":\"Let me check.\",\"tool_calls\":["
        "   {\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "    \"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "   {\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
        "    \"arguments\":\"\"}}]},"
        " {\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C\"},"
        " {\"role\":\"tool\",\"tool_call_id\":\"call_2\","
        "  \"content\":[{\"type\":\"text\",\"text\":\"12:00\"}]},"
        " {\"role\":\"user\",\"content\":\"thanks\"}],"
        " \"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "   \"description\":\"Current weather\",\"parameters\":{\"type\":\"object\","
        "   \"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
        "  {\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}],"
        " \"tool_choice\":\"required\",\"parallel_tool_calls\":false}",
        "{\"model\":\"claude-test\",\"max_tokens\":4096,\"messages\":["
        " {\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "   \"text\":\"weather in Paris, and the time?\"}]},"
        " {\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Let me check.\"},"
        "   {\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\","
        "    \"input\":{\"city\":\"Paris\"}},"
        "   {\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":\"get_time\",\"input\":{}}]},"
        " {\"role\":\"user\",\"content\":["
        "   {\"type\":\"tool_result\",\"tool_use_id\":\"call_1\",\"content\":\"18C\"},"
        "   {\"type\":\"tool_result\",\"tool_use_id\":\"call_2\","
        "    \"content\":[{\"type\":\"text\",\"text\":\"12:00\"}]},"
        "   {\"type\":\"text\",\"text\":\"thanks\"}]}],"
        " \"tools\":[{\"name\":\"get_weather\",\"description\":\"Current weather\","
        "   \"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
        "   \"required\":[\"city\"]}},"
        "  {\"name\":\"get_time\",\"input_schema\":{\"type\":\"object\",\"properties\":{}}}],"
        " \"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true}}");
}

static void test_encode_tool_arguments_forms(void **state)
{
    /* Arguments already given as an object (some clients do) pass through as the input. */
    expect_encoded(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"t?\"},"
        " {\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c9\","
        "   \"type\":\"function\",\"function\":{\"name\":\"get_time\","
        "   \"arguments\":{\"tz\":\"UTC\"}}}]}]}",
        "{\"model\":\"claude-test\",\"max_tokens\":4096,\"messages\":["
        " {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"t?\"}]},"
        " {\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"c9\","
        "   \"name\":\"get_time\",\"input\":{\"tz\":\"UTC\"}}]}]}");
}

static void test_encode_tool_choice(void **state)
{
    static const struct {
        const char *extra, *want;   /* want: the tool_choice Anthropic gets, NULL = none */
    } cases[] = {
        {"\"tool_choice\":\"auto\"", "{\"type\":\"auto\"}"},
        {"\"tool_choice\":\"none\"", "{\"type\":\"none\"}"},
        {"\"tool_choice\":\"required\"", "{\"type\":\"any\"}"},
        {"\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}",
         "{\"type\":\"tool\",\"name\":\"f\"}"},
        {"\"parallel_tool_calls\":false",
         "{\"type\":\"auto\",\"disable_parallel_tool_use\":true}"},
        {"\"parallel_tool_calls\":true", NULL},
        /* "none" forbids tools, so there is nothing to keep from running in parallel. */
        {"\"tool_choice\":\"none\",\"parallel_tool_calls\":false", "{\"type\":\"none\"}"},
        {"\"tool_choice\":\"auto\",\"parallel_tool_calls\":false",
         "{\"type\":\"auto\",\"disable_parallel_tool_use\":true}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512], err[256], param[64];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                 "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],%s}",
                 cases[i].extra);
        json_t *out = encode(body, err, param);
        assert_non_null(out);
        const json_t *tc = json_object_get(out, "tool_choice");
        if (cases[i].want)
            assert_json_eq(tc, cases[i].want);
        else
            assert_null(tc);
        json_decref(out);
    }
}

static void test_encode_errors_name_param(void **state)
{
    static const struct {
        const char *body, *param;
    } cases[] = {
        {"{\"model\":\"m\"}", "messages"},
        {"{\"messages\":[]}", "messages"},
        {"{\"messages\":\"hi\"}", "messages"},
        {"{\"messages\":[{\"role\":\"system\",\"content\":\"only a system prompt\"}]}",
         "messages"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2}", "n"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
         "\"content\":\"b\"},{\"role\":\"wizard\",\"content\":\"c\"}]}", "messages[2].role"},
        {"{\"messages\":[{\"content\":\"no role\"}]}", "messages[0].role"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}",
         "messages[0].content[0].type"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"},"
         "{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://h/i.png\"}}]}]}",
         "messages[0].content[1].image_url"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
         "\"image_url\":{\"url\":\"data:image/png,rawbytes\"}}]}]}",
         "messages[0].content[0].image_url"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
         "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
         "\"arguments\":\"{not json\"}}]}]}", "messages[1].tool_calls[0].function.arguments"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"tool\","
         "\"content\":\"r\"}]}", "messages[1].tool_call_id"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":42}]}", "messages[0].content"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":0}",
         "max_tokens"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_completion_tokens\":\"9\"}",
         "max_completion_tokens"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stop\":5}", "stop"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"temperature\":\"hot\"}",
         "temperature"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"tool_choice\":\"sometimes\"}",
         "tool_choice"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
         "\"tools\":[{\"type\":\"retrieval\"}]}", "tools[0].type"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
         "\"tools\":[{\"type\":\"function\",\"function\":{}}]}", "tools[0].function.name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "unset", param[64] = "unset";
        json_t *out = encode(cases[i].body, err, param);
        if (out)
            fail_msg("case %zu encoded although invalid: %s", i, cases[i].body);
        if (strcmp(param, cases[i].param))
            fail_msg("case %zu: param '%s', want '%s'", i, param, cases[i].param);
        assert_true(strlen(err) > 10);
    }
    /* Not an object at all: an error, no param. */
    char err[256], param[64];
    json_t *arr = parse("[1]");
    assert_null(anthropic_encode_chat(arr, "m", 0, err, sizeof err, param, sizeof param));
    assert_string_equal(param, "");
    assert_true(strlen(err) > 0);
    json_decref(arr);
}

static void test_encode_default_max_tokens_and_numbers(void **state)
{
    char err[256], param[64];
    json_t *in = parse("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                       "\"temperature\":0.2,\"top_p\":0.7}");
    json_t *out = anthropic_encode_chat(in, "c", 1234, err, sizeof err, param, sizeof param);
    assert_non_null(out);
    assert_int_equal(json_integer_value(json_object_get(out, "max_tokens")), 1234);
    char *text = json_write_text(out);
    assert_non_null(strstr(text, "\"temperature\":0.2,"));
    assert_non_null(strstr(text, "\"top_p\":0.7"));
    free(text);
    json_decref(out);
    out = anthropic_encode_chat(in, "c", 0, err, sizeof err, param, sizeof param);
    assert_int_equal(json_integer_value(json_object_get(out, "max_tokens")),
                     ANTHROPIC_DEFAULT_MAX_TOKENS);
    json_decref(out);
    json_decref(in);
}

/* ---- decode ----------------------------------------------------------------------------- */

static void test_decode_model_falls_back_to_the_one_asked(void **state)
{
    json_t *msg = parse("{\"id\":\"msg_1\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}],"
                        "\"stop_reason\":\"end_turn\",\"usage\":{}}");
    json_t *res = anthropic_decode_chat(msg, "asked-model");
    assert_string_equal(json_string_value(json_object_get(res, "model")), "asked-model");
    json_decref(res);
    json_decref(msg);
}

static json_t *decode_chat(const char *msg_text)
{
    json_t *msg = parse(msg_text);
    long t0 = (long)time(NULL);
    json_t *res = anthropic_decode_chat(msg, "my-model");
    long t1 = (long)time(NULL);
    json_decref(msg);
    assert_non_null(res);
    json_int_t created = json_integer_value(json_object_get(res, "created"));
    assert_true(created >= t0 && created <= t1);
    json_object_del(res, "created");
    return res;
}

static void test_decode_chat_text_and_usage(void **state)
{
    json_t *res = decode_chat(
        "{\"id\":\"msg_abc\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\","
        " \"content\":[{\"type\":\"text\",\"text\":\"Hello \"},"
        "             {\"type\":\"text\",\"text\":\"there\"}],"
        " \"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
        " \"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":3,"
        "           \"cache_read_input_tokens\":4,\"output_tokens\":5}}");
    assert_json_eq(res,
        "{\"id\":\"chatcmpl-msg_abc\",\"object\":\"chat.completion\",\"model\":\"claude-x\","
        " \"choices\":[{\"index\":0,"
        "   \"message\":{\"role\":\"assistant\",\"content\":\"Hello there\"},"
        "              \"finish_reason\":\"stop\"}],"
        " \"usage\":{\"prompt_tokens\":17,\"completion_tokens\":5,\"total_tokens\":22,"
        "  \"prompt_tokens_details\":{\"cached_tokens\":4}}}");
    json_decref(res);
    /* for pricing the kinds stay apart: 10 uncached + 4 read + 3 written, never summed twice */
    json_t *u = json_loads("{\"input_tokens\":10,\"cache_creation_input_tokens\":3,"
                           "\"cache_read_input_tokens\":4,\"output_tokens\":5}", 0, NULL);
    struct usage got = {0};
    anthropic_usage(u, &got);
    json_decref(u);
    assert_true(got.seen);
    assert_int_equal(got.prompt, 17);
    assert_int_equal(got.cache_read, 4);
    assert_int_equal(got.cache_write, 3);
    assert_int_equal(got.completion, 5);
}

static void test_decode_chat_tool_use(void **state)
{
    json_t *res = decode_chat(
        "{\"id\":\"msg_t\",\"type\":\"message\",\"role\":\"assistant\","
        " \"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\","
        "              \"input\":{\"city\":\"Paris\"}}],"
        " \"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":8,\"output_tokens\":2}}");
    assert_json_eq(res,
        "{\"id\":\"chatcmpl-msg_t\",\"object\":\"chat.completion\",\"model\":\"my-model\","
        " \"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
        "   \"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\",\"function\":"
        "     {\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
        "   \"finish_reason\":\"tool_calls\"}],"
        " \"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2,\"total_tokens\":10}}");
    json_decref(res);
}

static void test_decode_chat_finish_reasons(void **state)
{
    static const struct {
        const char *stop, *finish;
    } cases[] = {
        {"end_turn", "stop"}, {"stop_sequence", "stop"}, {"max_tokens", "length"},
        {"tool_use", "tool_calls"}, {"refusal", "content_filter"}, {"pause_turn", "stop"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "{\"id\":\"m\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}],"
                 "\"stop_reason\":\"%s\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}",
                 cases[i].stop);
        json_t *res = decode_chat(text);
        const json_t *c0 = json_array_get(json_object_get(res, "choices"), 0);
        assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")),
                            cases[i].finish);
        json_decref(res);
    }
    json_t *notmsg = parse("{\"type\":\"error\"}");
    assert_null(anthropic_decode_chat(notmsg, "m"));
    json_decref(notmsg);
}

/* ---- errors ----------------------------------------------------------------------------- */

static void expect_error(long status, const char *body, const char *want)
{
    json_t *res = anthropic_decode_error(status, body, strlen(body));
    assert_json_eq(res, want);
    json_decref(res);
}

static void test_decode_error_types(void **state)
{
    static const struct {
        const char *anthropic, *want;
    } cases[] = {
        {"invalid_request_error",
         "\"type\":\"invalid_request_error\",\"param\":null,\"code\":null"},
        {"authentication_error",
         "\"type\":\"authentication_error\",\"param\":null,\"code\":\"invalid_api_key\""},
        {"permission_error",
         "\"type\":\"permission_error\",\"param\":null,\"code\":\"permission_denied\""},
        {"not_found_error",
         "\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"not_found\""},
        {"rate_limit_error",
         "\"type\":\"rate_limit_error\",\"param\":null,\"code\":\"rate_limit_exceeded\""},
        {"api_error", "\"type\":\"server_error\",\"param\":null,\"code\":null"},
        {"overloaded_error", "\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded\""},
        {"brand_new_error", "\"type\":\"upstream_error\",\"param\":null,\"code\":null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256], want[256];
        snprintf(body, sizeof body, "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
                 "\"message\":\"it \\\"broke\\\"\"}}", cases[i].anthropic);
        snprintf(want, sizeof want, "{\"error\":{\"message\":\"it \\\"broke\\\"\",%s}}",
                 cases[i].want);
        expect_error(400, body, want);
    }
}

static void test_decode_error_unknown_bodies(void **state)
{
    expect_error(502, "\n \t<html>\r\n  <h1>Bad \"Gateway\"</h1>\x01\xc3\xa9\n</html>\n",
                 "{\"error\":{\"message\":\"upstream returned status 502: <html> "
                 "<h1>Bad \\\"Gateway\\\"</h1>??? </html>\",\"type\":\"upstream_error\","
                 "\"param\":null,\"code\":null}}");
    expect_error(503, "", "{\"error\":{\"message\":\"upstream returned status 503\","
                          "\"type\":\"upstream_error\",\"param\":null,\"code\":null}}");
    expect_error(500, "{\"detail\":\"nope\"}",
                 "{\"error\":{\"message\":\"upstream returned status 500: {\\\"detail\\\":"
                 "\\\"nope\\\"}\",\"type\":\"upstream_error\",\"param\":null,\"code\":null}}");

    /* A large body is cut to the first 200 bytes. */
    char big[5000];
    memset(big, 'A', sizeof big);
    json_t *res = anthropic_decode_error(500, big, sizeof big);
    const char *msg = json_string_value(json_object_get(json_object_get(res, "error"),
                                                        "message"));
    assert_non_null(msg);
    const char *prefix = "upstream returned status 500: ";
    assert_int_equal(strncmp(msg, prefix, strlen(prefix)), 0);
    assert_int_equal(strlen(msg), strlen(prefix) + 200 + 3);
    assert_string_equal(msg + strlen(msg) - 4, "A...");
    json_decref(res);
}

/* ---- stream ----------------------------------------------------------------------------- */

#define CHUNK_HEAD "data: {\"id\":\"chatcmpl-msg_01\",\"object\":\"chat.completion.chunk\"," \
                   "\"created\":1700000000,\"model\":\"claude-x\"," \
                   "\"choices\":[{\"index\":0,\"delta\":"
#define CHUNK(delta) CHUNK_HEAD delta ",\"finish_reason\":null}]}\n\n"

static void test_stream_full_translation(void **state)
{
    static const struct {
        const char *event, *data, *frames;
    } steps[] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\","
         "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\","
         "\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,"
         "\"output_tokens\":1}}}",
         CHUNK("{\"role\":\"assistant\",\"content\":\"\"}")},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
         "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}", ""},
        {"ping", "{\"type\": \"ping\"}", ""},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
         "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}",
         CHUNK("{\"content\":\"Hello\"}")},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
         "\"delta\":{\"type\":\"text_delta\",\"text\":\" \\\"w\\u00f6rld\\\"\\n\"}}",
         CHUNK("{\"content\":\" \\\"w\xc3\xb6rld\\\"\\n\"}")},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}", ""},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,"
         "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\","
         "\"input\":{}}}",
         CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_1\",\"type\":\"function\","
               "\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}")},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,"
         "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}",
         CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
               "\"{\\\"city\\\":\"}}]}")},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,"
         "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}",
         CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
               "\"\\\"Paris\\\"}\"}}]}")},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}", ""},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":2,"
         "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"get_time\","
         "\"input\":{}}}",
         CHUNK("{\"tool_calls\":[{\"index\":1,\"id\":\"toolu_2\",\"type\":\"function\","
               "\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]}")},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,"
         "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}",
         CHUNK("{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{}\"}}]}")},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}", ""},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
         "\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}",
         CHUNK_HEAD "{},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":30,"
         "\"completion_tokens\":42,\"total_tokens\":72,"
         "\"prompt_tokens_details\":{\"cached_tokens\":5}}}\n\n"},
        {"message_stop", "{\"type\":\"message_stop\"}", "data: [DONE]\n\n"},
    };
    struct anthropic_stream s;
    struct buf out = BUF_INIT;
    anthropic_stream_init(&s, "my-model", 1700000000);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        assert_false(s.done);
        buf_reset(&out);
        int rc = anthropic_stream_event(&s, steps[i].event, strlen(steps[i].event),
                                        steps[i].data, strlen(steps[i].data), &out);
        if (rc != 0 || strcmp(out.data ? out.data : "", steps[i].frames))
            fail_msg("step %zu (%s): rc %d\ngot  %s\nwant %s", i, steps[i].event, rc,
                     out.data ? out.data : "", steps[i].frames);
    }
    assert_true(s.done);
    buf_free(&out);
    anthropic_stream_free(&s);
}

static void test_stream_event_name_from_data(void **state)
{
    /* Without an "event:" line the data's own type decides. */
    struct anthropic_stream s;
    struct buf out = BUF_INIT;
    anthropic_stream_init(&s, "my-model", 1700000000);
    const char *d = "{\"type\":\"message_stop\"}";
    assert_int_equal(anthropic_stream_event(&s, "", 0, d, strlen(d), &out), 0);
    assert_string_equal(out.data, "data: [DONE]\n\n");
    assert_true(s.done);
    buf_free(&out);
    anthropic_stream_free(&s);
}

static void expect_stream_error(const char *event, const char *data, const char *want)
{
    struct anthropic_stream s;
    struct buf out = BUF_INIT;
    anthropic_stream_init(&s, "my-model", 1700000000);
    buf_puts(&out, "earlier frames");
    assert_int_equal(anthropic_stream_event(&s, event, strlen(event), data, strlen(data), &out),
                     -1);
    /* out holds only the error object, as JSON text and not framed. */
    json_t *got = parse(out.data);
    assert_json_eq(got, want);
    assert_null(strstr(out.data, "data:"));
    json_decref(got);
    buf_free(&out);
    anthropic_stream_free(&s);
}

static void test_stream_errors(void **state)
{
    expect_stream_error("error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                        "\"message\":\"Overloaded\"}}",
                        "{\"error\":{\"message\":\"Overloaded\",\"type\":\"server_error\","
                        "\"param\":null,\"code\":\"overloaded\"}}");
    expect_stream_error("content_block_delta", "not json",
                        "{\"error\":{\"message\":\"upstream sent an undecodable stream event\","
                        "\"type\":\"upstream_error\",\"param\":null,\"code\":null}}");
    /* Arguments for a tool call that was never opened can't be placed. */
    expect_stream_error("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
                        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}",
                        "{\"error\":{\"message\":\"upstream sent an undecodable stream event\","
                        "\"type\":\"upstream_error\",\"param\":null,\"code\":null}}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_basic_fields),
        cmocka_unit_test(test_encode_merges_roles_and_max_tokens),
        cmocka_unit_test(test_encode_images),
        cmocka_unit_test(test_encode_default_max_tokens_and_numbers),
        cmocka_unit_test(test_decode_model_falls_back_to_the_one_asked),
        cmocka_unit_test(test_encode_tools_round_trip),
        cmocka_unit_test(test_encode_tool_arguments_forms),
        cmocka_unit_test(test_encode_tool_choice),
        cmocka_unit_test(test_encode_errors_name_param),
        cmocka_unit_test(test_decode_chat_text_and_usage),
        cmocka_unit_test(test_decode_chat_tool_use),
        cmocka_unit_test(test_decode_chat_finish_reasons),
        cmocka_unit_test(test_decode_error_types),
        cmocka_unit_test(test_decode_error_unknown_bodies),
        cmocka_unit_test(test_stream_full_translation),
        cmocka_unit_test(test_stream_event_name_from_data),
        cmocka_unit_test(test_stream_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
