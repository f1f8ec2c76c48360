/* test_provider_messages: Anthropic clients served by OpenAI-type upstreams, as the client and
 * the upstream see it — the chat body sent, the Message returned, the stream events written —
 * plus the relay codecs (Anthropic /v1/messages events, OpenAI /v1/responses events). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/json_assert.h"
#include "upstream/provider.h"

static void expect_chat(const char *messages_body, const char *want)
{
    char err[256] = "", param[64] = "";
    json_t *in = parse(messages_body);
    json_t *out = messages_to_chat(in, "gpt-x", err, sizeof err, param, sizeof param);
    json_decref(in);
    if (!out)
        fail_msg("translation failed: %s (param %s)", err, param);
    assert_json_eq(out, want);
    json_decref(out);
}

static void expect_refused(const char *messages_body, const char *want_param,
                           const char *want_in_msg)
{
    char err[256] = "", param[64] = "";
    json_t *in = parse(messages_body);
    json_t *out = messages_to_chat(in, "gpt-x", err, sizeof err, param, sizeof param);
    json_decref(in);
    assert_null(out);
    assert_string_equal(param, want_param);
    if (!strstr(err, want_in_msg))
        fail_msg("message \"%s\" lacks \"%s\"", err, want_in_msg);
}

/* ---- request: Messages → chat.completions ----------------------------------------------- */

static void test_request_basic_fields(void **state)
{
    expect_chat("{\"model\":\"c\",\"max_tokens\":100,\"system\":\"be brief\",\"temperature\":0.2,"
                "\"top_p\":0.9,\"top_k\":40,\"stop_sequences\":[\"END\"],"
                "\"metadata\":{\"user_id\":\"u1\"},"
                "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                "{\"model\":\"gpt-x\",\"max_tokens\":100,\"temperature\":0.2,\"top_p\":0.9,"
                "\"stop\":[\"END\"],\"user\":\"u1\",\"messages\":["
                "{\"role\":\"system\",\"content\":\"be brief\"},"
                "{\"role\":\"user\",\"content\":\"hi\"}]}");
    /* System blocks join; a stream asks for usage in its last chunk. */
    expect_chat("{\"max_tokens\":5,\"stream\":true,\"system\":[{\"type\":\"text\",\"text\":\"a\","
                "\"cache_control\":{\"type\":\"ephemeral\"}},{\"type\":\"text\",\"text\":\"b\"}],"
                "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}"
                "]}",
                "{\"model\":\"gpt-x\",\"max_tokens\":5,\"stream\":true,"
                "\"stream_options\":{\"include_usage\":true},\"messages\":["
                "{\"role\":\"system\",\"content\":\"a\\nb\"},{\"role\":\"user\","
                "\"content\":\"x\"}]}");
}

static void test_request_images(void **state)
{
    expect_chat("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":["
                "{\"type\":\"document\",\"source\":{\"type\":\"text\",\"media_type\":"
                "\"text/plain\",\"data\":\"the doc\"}},{\"type\":\"text\",\"text\":\"sum\"}]}]}",
                "{\"model\":\"gpt-x\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
                "\"content\":[{\"type\":\"text\",\"text\":\"the doc\"},"
                "{\"type\":\"text\",\"text\":\"sum\"}]}]}");
    expect_chat("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":["
                "{\"type\":\"text\",\"text\":\"what\"},"
                "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\","
                "\"data\":\"AAAA\"}},"
                "{\"type\":\"image\",\"source\":{\"type\":\"url\","
                "\"url\":\"https://x/y.jpg\"}}]}]}",
                "{\"model\":\"gpt-x\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
                "\"content\":["
                "{\"type\":\"text\",\"text\":\"what\"},"
                "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}},"
                "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.jpg\"}}]}]}");
}

/* A full tool round trip: the ids the client got back are the ids the upstream issued. */
static void test_request_tool_round_trip(void **state)
{
    expect_chat("{\"max_tokens\":5,"
                "\"tools\":[{\"name\":\"get\",\"description\":\"d\",\"input_schema\":"
                "{\"type\":\"object\"}},{\"type\":\"custom\",\"name\":\"put\","
                "\"input_schema\":{}}],"
                "\"tool_choice\":{\"type\":\"tool\",\"name\":\"get\"},"
                "\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
                "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\","
                "\"signature\":\"s\"},{\"type\":\"text\",\"text\":\"on it\"},"
                "{\"type\":\"tool_use\",\"id\":\"call_9\",\"name\":\"get\","
                "\"input\":{\"k\":[1]}}]},"
                "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
                "\"tool_use_id\":\"call_9\","
                "\"content\":[{\"type\":\"text\",\"text\":\"v\"}],\"is_error\":true},"
                "{\"type\":\"text\",\"text\":\"go on\"}]}]}",
                "{\"model\":\"gpt-x\",\"max_tokens\":5,\"tool_choice\":{\"type\":\"function\","
                "\"function\":{\"name\":\"get\"}},\"tools\":["
                "{\"type\":\"function\",\"function\":{\"name\":\"get\",\"description\":\"d\","
                "\"parameters\":{\"type\":\"object\"}}},"
                "{\"type\":\"function\",\"function\":{\"name\":\"put\",\"parameters\":{}}}],"
                "\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
                "{\"role\":\"assistant\",\"content\":\"on it\",\"tool_calls\":[{\"id\":\"call_9\","
                "\"type\":\"function\",\"function\":{\"name\":\"get\","
                "\"arguments\":\"{\\\"k\\\":[1]}\"}"
                "}]},{\"role\":\"tool\",\"tool_call_id\":\"call_9\",\"content\":\"Error: v\"},"
                "{\"role\":\"user\",\"content\":\"go on\"}]}");
}

static void test_request_tool_choice_forms(void **state)
{
    static const char *const in[] = {"{\"type\":\"auto\"}", "{\"type\":\"any\"}",
                                     "{\"type\":\"none\"}",
                                     "{\"type\":\"auto\",\"disable_parallel_tool_use\":true}"};
    static const char *const out[] = {"\"auto\"", "\"required\"", "\"none\"", "\"auto\""};
    for (size_t i = 0; i < 4; i++) {
        char body[512], want[512];
        snprintf(body, sizeof body, "{\"max_tokens\":1,\"messages\":[],\"tools\":[{\"name\":\"t\","
                 "\"input_schema\":{}}],\"tool_choice\":%s}", in[i]);
        snprintf(want, sizeof want, "{\"model\":\"gpt-x\",\"max_tokens\":1,\"messages\":[],"
                 "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"t\","
                 "\"parameters\":{}}}],\"tool_choice\":%s%s}", out[i],
                 i == 3 ? ",\"parallel_tool_calls\":false" : "");
        expect_chat(body, want);
    }
    /* An assistant turn with only a tool call has null content, as OpenAI expects. */
    expect_chat("{\"max_tokens\":1,\"messages\":[{\"role\":\"assistant\",\"content\":["
                "{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"t\",\"input\":{}}]}]}",
                "{\"model\":\"gpt-x\",\"max_tokens\":1,\"messages\":[{\"role\":\"assistant\","
                "\"content\":null,\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\","
                "\"function\":{\"name\":\"t\",\"arguments\":\"{}\"}}]}]}");
}

static void test_request_refusals_name_the_field(void **state)
{
    expect_refused("{\"messages\":[]}", "max_tokens", "is required");
    expect_refused("{\"max_tokens\":0,\"messages\":[]}", "max_tokens", "positive");
    expect_refused("{\"max_tokens\":1,\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}",
                   "messages[0].role", "role must be");
    expect_refused("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                   "\"text\",\"text\":\"a\"},{\"type\":\"document\",\"source\":{\"type\":"
                   "\"base64\",\"media_type\":\"application/pdf\",\"data\":\"JVBE\"}}]}]}",
                   "messages[0].content[1]", "'document' is not supported");
    expect_refused("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                   "\"image\",\"source\":{\"type\":\"file\"}}]}]}", "messages[0].content[0]",
                   "image source");
    expect_refused("{\"max_tokens\":1,\"messages\":[],\"tools\":[{\"type\":\"web_search_20250305\","
                   "\"name\":\"web_search\"}]}", "tools[0]", "only client tools");
    expect_refused("{\"max_tokens\":1,\"messages\":[],\"tools\":[{\"name\":\"t\",\"input_schema\":"
                   "{}}],\"tool_choice\":{\"type\":\"sometimes\"}}", "tool_choice", "auto, any");
    expect_refused("{\"max_tokens\":1,\"system\":[{\"type\":\"image\"}],\"messages\":[]}",
                   "system[0]", "text blocks");
    expect_refused("{\"max_tokens\":1,\"messages\":{}}", "messages", "array");
}

/* ---- answer: chat.completion → Message ---------------------------------------------------- */

static void expect_message(const char *completion, const char *want, long want_prompt,
                           long want_completion)
{
    struct buf out = BUF_INIT;
    struct usage u = {0};
    assert_int_equal(messages_from_completion(completion, strlen(completion), "claude-ish",
                                              &out, &u), 0);
    json_t *got = parse(out.data);
    assert_json_eq(got, want);
    assert_int_equal(u.prompt, want_prompt);
    assert_int_equal(u.completion, want_completion);
    json_decref(got);
    buf_free(&out);
}

static void test_answer_text(void **state)
{
    expect_message("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,"
                   "\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                   "\"assistant\",\"content\":\"Hello!\"},\"finish_reason\":\"stop\"}],"
                   "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":10}}}",
                   "{\"id\":\"msg_chatcmpl-1\",\"type\":\"message\",\"role\":\"assistant\","
                   "\"model\":\"gpt-x\",\"content\":[{\"type\":\"text\",\"text\":\"Hello!\"}],"
                   "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{"
                   "\"input_tokens\":2,\"cache_read_input_tokens\":10,\"output_tokens\":3}}",
                   12, 3);
}

static void test_answer_tool_calls(void **state)
{
    expect_message("{\"id\":\"c2\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                   "\"content\":null,\"tool_calls\":[{\"id\":\"call_a\",\"type\":\"function\","
                   "\"function\":{\"name\":\"get\","
                   "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
                   "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"bad\","
                   "\"arguments\":\"not json\"}}]},\"finish_reason\":\"tool_calls\"}],"
                   "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9}}",
                   "{\"id\":\"msg_c2\",\"type\":\"message\",\"role\":\"assistant\","
                   "\"model\":\"claude-ish\",\"content\":["
                   "{\"type\":\"tool_use\",\"id\":\"call_a\",\"name\":\"get\","
                   "\"input\":{\"city\":\"Paris\"}},"
                   "{\"type\":\"tool_use\",\"id\":\"call_b\",\"name\":\"bad\",\"input\":{}}],"
                   "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
                   "\"usage\":{\"input_tokens\":5,\"output_tokens\":9}}", 5, 9);
}

/* Servers that finish tool calls with "stop" still get tool_use, whole or streamed. */
static void test_tool_calls_with_stop_are_tool_use(void **state)
{
    expect_message("{\"id\":\"o1\",\"choices\":[{\"message\":{\"role\":\"assistant\","
                   "\"content\":\"\",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":"
                   "\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}]}",
                   "{\"id\":\"msg_o1\",\"type\":\"message\",\"role\":\"assistant\","
                   "\"model\":\"claude-ish\",\"content\":[{\"type\":\"tool_use\",\"id\":"
                   "\"c\",\"name\":\"f\",\"input\":{}}],\"stop_reason\":\"tool_use\","
                   "\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}",
                   0, 0);
    static const char *const chunks[] = {
        ("{\"id\":\"o2\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":"
         "\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}"),
        "{\"id\":\"o2\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}",
        "[DONE]",
    };
    struct messages_stream st;
    struct buf out = BUF_INIT;
    messages_stream_init(&st, "claude-ish");
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(messages_stream_event(&st, chunks[i], strlen(chunks[i]), &out), 0);
    assert_non_null(strstr(out.data, "\"stop_reason\":\"tool_use\""));
    messages_stream_free(&st);
    buf_free(&out);
}

static void test_answer_refusal_and_garbage(void **state)
{
    expect_message("{\"id\":\"c3\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
                   "null,\"refusal\":\"no\"},\"finish_reason\":\"stop\"}]}",
                   "{\"id\":\"msg_c3\",\"type\":\"message\",\"role\":\"assistant\","
                   "\"model\":\"claude-ish\",\"content\":[{\"type\":\"text\",\"text\":\"no\"}],"
                   "\"stop_reason\":\"refusal\",\"stop_sequence\":null,"
                   "\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}", 0, 0);
    struct buf out = BUF_INIT;
    struct usage u = {0};
    assert_int_equal(messages_from_completion("<html>", 6, "m", &out, &u), -1);
    assert_int_equal(messages_from_completion("{\"choices\":[]}", 14, "m", &out, &u), -1);
    buf_free(&out);
}

static void test_stop_reason_table(void **state)
{
    assert_string_equal(messages_stop_reason("stop"), "end_turn");
    assert_string_equal(messages_stop_reason("length"), "max_tokens");
    assert_string_equal(messages_stop_reason("tool_calls"), "tool_use");
    assert_string_equal(messages_stop_reason("function_call"), "tool_use");
    assert_string_equal(messages_stop_reason("content_filter"), "refusal");
    assert_string_equal(messages_stop_reason(NULL), "end_turn");
    assert_string_equal(messages_stop_reason("something_new"), "end_turn");
}

/* ---- stream: chunks → events ------------------------------------------------------------ */

/* Feeds chunks (each must translate) and compares all the events written with want. */
static void expect_events(struct messages_stream *s, const char *const *chunks, size_t n,
                          const char *want)
{
    struct buf out = BUF_INIT;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(messages_stream_event(s, chunks[i], strlen(chunks[i]), &out), 0);
    assert_string_equal(out.data ? out.data : "", want);
    buf_free(&out);
}

#define EV(name, json) "event: " name "\ndata: " json "\n\n"
#define START(id) EV("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"" id \
    "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-ish\",\"content\":[]," \
    "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0," \
    "\"output_tokens\":0}}}") EV("ping", "{\"type\":\"ping\"}")

static void test_stream_text(void **state)
{
    static const char *const chunks[] = {
        ("{\"id\":\"cc1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
         "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}"),
        "{\"id\":\"cc1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}",
        "{\"id\":\"cc1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\\"x\\\"\"}}]}",
        "{\"id\":\"cc1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}",
        "{\"id\":\"cc1\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2}}",
        "[DONE]",
    };
    static const char *const late[] = {"[DONE]"};
    struct messages_stream s;
    messages_stream_init(&s, "claude-ish");
    expect_events(&s, chunks, 6,
        START("msg_cc1")
        EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
           "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
           "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
           "\"delta\":{\"type\":\"text_delta\",\"text\":\"lo \\\"x\\\"\"}}")
        EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}")
        EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
           "\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":8,"
           "\"output_tokens\":2}}")
        EV("message_stop", "{\"type\":\"message_stop\"}"));
    assert_true(s.done);
    assert_int_equal(s.prompt_tokens, 8);
    assert_int_equal(s.completion_tokens, 2);
    expect_events(&s, late, 1, "");     /* anything after the end is ignored */
    messages_stream_free(&s);
}

/* Text, then two tool calls: each call opens its own block; argument fragments become
 * input_json_delta on that block. */
static void test_stream_tool_use(void **state)
{
    static const char *const chunks[] = {
        "{\"id\":\"t1\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Let me\"}}]}",
        ("{\"id\":\"t1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_x\","
         "\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}"),
        ("{\"id\":\"t1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
         "{\"arguments\":\"{\\\"c\\\":\"}}]}}]}"),
        ("{\"id\":\"t1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
         "{\"arguments\":\"1}\"}}]}}]}"),
        ("{\"id\":\"t1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_y\","
         "\"function\":{\"name\":\"put\",\"arguments\":\"{}\"}}]}}]}"),
        ("{\"id\":\"t1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}],"
         "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}"),
        "[DONE]",
    };
    struct messages_stream s;
    messages_stream_init(&s, "claude-ish");
    expect_events(&s, chunks, 7,
        START("msg_t1")
        EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
           "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
           "\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me\"}}")
        EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}")
        EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":1,"
           "\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_x\",\"name\":\"get\","
           "\"input\":{}}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,"
           "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"c\\\":\"}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,"
           "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}")
        EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}")
        EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":2,"
           "\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_y\",\"name\":\"put\","
           "\"input\":{}}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,"
           "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}")
        EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}")
        EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
           "\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":3,"
           "\"output_tokens\":4}}")
        EV("message_stop", "{\"type\":\"message_stop\"}"));
    messages_stream_free(&s);
}

static void test_stream_errors_and_empty(void **state)
{
    struct messages_stream s;
    struct buf out = BUF_INIT;
    messages_stream_init(&s, "claude-ish");
    assert_int_equal(messages_stream_event(&s, "[DONE]", 6, &out), 0);
    assert_string_equal(out.data, START("")
        EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
           "\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":0,"
           "\"output_tokens\":0}}")
        EV("message_stop", "{\"type\":\"message_stop\"}"));
    messages_stream_free(&s);

    static const char *const bad[] = {
        "{\"error\":{\"message\":\"quota gone\",\"type\":\"x\"}}",
        "not json",
        /* arguments for a call that never opened */
        ("{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":3,\"function\":{\"arguments\":"
         "\"{}\"}}]}}]}"),
        ("{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":500,\"id\":\"a\",\"function\":"
         "{\"name\":\"n\"}}]}}]}"),
    };
    static const char *const msg[] = {"quota gone", "undecodable", "undecodable",
                                      "undecodable"};
    for (size_t i = 0; i < 4; i++) {
        messages_stream_init(&s, "claude-ish");
        buf_reset(&out);
        assert_int_equal(messages_stream_event(&s, bad[i], strlen(bad[i]), &out), -1);
        json_t *e = parse(out.data);
        const char *m = json_string_value(json_object_get(json_object_get(e, "error"),
                                                          "message"));
        assert_non_null(m);
        assert_non_null(strstr(m, msg[i]));
        json_decref(e);
        messages_stream_free(&s);
    }
    buf_free(&out);
}

/* ---- relays and error shapes -------------------------------------------------------------- */

static int relay(struct codec *c, const char *event, const char *data, struct buf *out)
{
    return c->ops->decode_event(c, event, strlen(event), data, strlen(data), out);
}

static void test_anthropic_relay_events(void **state)
{
    struct codec c;
    struct buf out = BUF_INIT;
    codec_init(&c, PROVIDER_ANTHROPIC, EP_MESSAGES, "m", 1);
    const char *start = "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":"
                        "{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}";
    assert_int_equal(relay(&c, "message_start", start, &out), 0);
    const char *delta = "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                        "\"usage\":{\"output_tokens\":42}}";
    assert_int_equal(relay(&c, "message_delta", delta, &out), 0);
    assert_false(c.stream_done);
    assert_int_equal(relay(&c, "message_stop", "{}", &out), 0);
    assert_true(c.stream_done);
    struct buf want = BUF_INIT;
    buf_printf(&want, "event: message_start\ndata: %s\n\nevent: message_delta\ndata: %s\n\n"
               "event: message_stop\ndata: {}\n\n", start, delta);
    assert_string_equal(out.data, want.data);
    assert_int_equal(c.usage.prompt, 15);
    assert_int_equal(c.usage.completion, 42);
    buf_reset(&out);
    const char *err = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                      "\"message\":\"busy\"}}";
    assert_int_equal(relay(&c, "error", err, &out), -1);
    assert_non_null(strstr(out.data, "busy"));
    codec_free(&c);
    buf_free(&want);
    buf_free(&out);
}

static void test_responses_relay_events(void **state)
{
    struct codec c;
    struct buf out = BUF_INIT;
    codec_init(&c, PROVIDER_OPENAI, EP_RESPONSES, "m", 1);
    const char *d = "{\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}";
    assert_int_equal(relay(&c, "response.output_text.delta", d, &out), 0);
    assert_false(c.stream_done);
    const char *done = "{\"type\":\"response.completed\",\"response\":{\"usage\":"
                       "{\"input_tokens\":4,\"output_tokens\":6,\"total_tokens\":10}}}";
    assert_int_equal(relay(&c, "response.completed", done, &out), 0);
    assert_true(c.stream_done);
    assert_int_equal(c.usage.prompt, 4);
    assert_int_equal(c.usage.completion, 6);
    assert_non_null(strstr(out.data, "event: response.output_text.delta\ndata: {"));
    codec_free(&c);
    buf_free(&out);
}

static void test_endpoint_support_and_error_shape(void **state)
{
    assert_true(codec_supports(PROVIDER_OPENAI, EP_MESSAGES));
    assert_true(codec_supports(PROVIDER_OPENAI, EP_RESPONSES));
    assert_false(codec_supports(PROVIDER_OPENAI, EP_COUNT_TOKENS));
    assert_true(codec_supports(PROVIDER_ANTHROPIC, EP_COUNT_TOKENS));
    assert_false(codec_supports(PROVIDER_ANTHROPIC, EP_RESPONSES));
    assert_false(codec_supports(PROVIDER_ANTHROPIC, EP_EMBEDDINGS));
    static const int status[] = {400, 401, 403, 404, 408, 413, 429, 500, 501, 502, 503, 504,
                                 529};
    static const char *const type[] = {
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
        "invalid_request_error", "request_too_large", "rate_limit_error", "api_error",
        "api_error", "api_error", "overloaded_error", "api_error", "overloaded_error"};
    for (size_t i = 0; i < sizeof status / sizeof *status; i++)
        assert_string_equal(anthropic_error_type(status[i]), type[i]);
    json_t *e = anthropic_error(504, "too slow");
    assert_json_eq(e, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                      "\"message\":\"too slow\"}}");
    json_decref(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_basic_fields),
        cmocka_unit_test(test_request_images),
        cmocka_unit_test(test_request_tool_round_trip),
        cmocka_unit_test(test_request_tool_choice_forms),
        cmocka_unit_test(test_request_refusals_name_the_field),
        cmocka_unit_test(test_answer_text),
        cmocka_unit_test(test_answer_tool_calls),
        cmocka_unit_test(test_answer_refusal_and_garbage),
        cmocka_unit_test(test_tool_calls_with_stop_are_tool_use),
        cmocka_unit_test(test_stop_reason_table),
        cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_tool_use),
        cmocka_unit_test(test_stream_errors_and_empty),
        cmocka_unit_test(test_anthropic_relay_events),
        cmocka_unit_test(test_responses_relay_events),
        cmocka_unit_test(test_endpoint_support_and_error_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
