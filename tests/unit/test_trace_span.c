/* test_trace_span: span records — their OTLP JSON (escapes, optional fields, numbers), text
 * cut to fit at a character boundary, and the pool that takes records back from another
 * thread and hands them out again. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include <jansson.h>

#include "daemon/trace_span.h"

static json_t *encode(const struct trace_span *s)
{
    struct buf b = BUF_INIT;
    assert_int_equal(trace_span_encode(&b, s), 0);
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, 0, &err);    /* jansson refuses bad UTF-8 too */
    if (!j)
        fail_msg("not JSON (%s): %s", err.text, b.data);
    buf_free(&b);
    return j;
}

static const char *attr(json_t *span, const char *key, const char *type)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(span, "attributes"), i, a)
        if (!strcmp(json_string_value(json_object_get(a, "key")), key)) {
            json_t *v = json_object_get(json_object_get(a, "value"), type);
            return json_is_string(v) ? json_string_value(v) : json_dumps(v, JSON_ENCODE_ANY);
        }
    return NULL;
}

static void test_encode_child_span(void **state)
{
    struct trace_span *s = trace_span_new();
    assert_non_null(s);
    memset(s->trace_id, 0xab, 16);
    memset(s->span_id, 0x01, 8);
    memset(s->parent_id, 0xfe, 8);
    s->kind = TRACE_KIND_CLIENT;
    s->start_ns = 1764547200123456789ull;
    s->end_ns = 1764547200987654321ull;
    s->state = trace_span_text(s, "k=v", 3);
    s->name = trace_span_text2(s, "chat", "gpt-4o");
    s->event = trace_span_text(s, "deadline_exceeded", 17);
    s->error = trace_span_text(s, "504", 3);
    TRACE_SPAN_STR(s, "tricky", "q\"b\\n\nt\tc\x01 d\x7f \xc3\xa9");
    TRACE_SPAN_INT(s, "neg", -42);
    TRACE_SPAN_INT(s, "n8", 99999999);          /* the 8-digit group boundaries */
    TRACE_SPAN_INT(s, "n9", 100000000);
    TRACE_SPAN_INT(s, "n17", 10000000000000005);
    TRACE_SPAN_DOUBLE(s, "cost", 0.00125);
    TRACE_SPAN_STR(s, "none", NULL);       /* adds nothing */
    TRACE_SPAN_LIT(s, "lit", "completed");
    TRACE_SPAN_CONTENT(s, "gen_ai.prompt", "hello world", 11, 5);
    json_t *j = encode(s);
    assert_string_equal(json_string_value(json_object_get(j, "traceId")),
                        "abababababababababababababababab");
    assert_string_equal(json_string_value(json_object_get(j, "spanId")), "0101010101010101");
    assert_string_equal(json_string_value(json_object_get(j, "parentSpanId")),
                        "fefefefefefefefe");
    assert_string_equal(json_string_value(json_object_get(j, "traceState")), "k=v");
    assert_string_equal(json_string_value(json_object_get(j, "name")), "chat gpt-4o");
    assert_int_equal(json_integer_value(json_object_get(j, "kind")), 3);
    assert_string_equal(json_string_value(json_object_get(j, "startTimeUnixNano")),
                        "1764547200123456789");
    assert_string_equal(json_string_value(json_object_get(j, "endTimeUnixNano")),
                        "1764547200987654321");
    assert_string_equal(attr(j, "tricky", "stringValue"),
                        "q\"b\\n\nt\tc\x01 d\x7f \xc3\xa9");
    assert_string_equal(attr(j, "neg", "intValue"), "-42");
    assert_string_equal(attr(j, "n8", "intValue"), "99999999");
    assert_string_equal(attr(j, "n9", "intValue"), "100000000");
    assert_string_equal(attr(j, "n17", "intValue"), "10000000000000005");
    char *cost = (char *)attr(j, "cost", "doubleValue");
    assert_string_equal(cost, "0.00125");
    free(cost);
    assert_null(attr(j, "none", "stringValue"));
    assert_string_equal(attr(j, "lit", "stringValue"), "completed");
    assert_string_equal(attr(j, "gen_ai.prompt", "stringValue"), "hello");
    json_t *ev = json_array_get(json_object_get(j, "events"), 0);
    assert_string_equal(json_string_value(json_object_get(ev, "name")), "deadline_exceeded");
    assert_string_equal(json_string_value(json_object_get(ev, "timeUnixNano")),
                        "1764547200987654321");
    json_t *st = json_object_get(j, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(st, "message")), "504");
    json_decref(j);
    trace_span_release(s);
    trace_pools_free();
}

static void test_encode_root_span(void **state)
{
    struct trace_span *s = trace_span_new();
    memset(s->trace_id, 0x11, 16);
    memset(s->span_id, 0x22, 8);
    s->kind = TRACE_KIND_SERVER;
    s->name = trace_span_text2(s, "POST", "/v1/chat/completions");
    TRACE_SPAN_INT(s, "zero", 0);
    json_t *j = encode(s);
    assert_null(json_object_get(j, "parentSpanId"));
    assert_null(json_object_get(j, "traceState"));
    assert_int_equal(json_array_size(json_object_get(j, "events")), 0);
    assert_int_equal(json_object_size(json_object_get(j, "status")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "startTimeUnixNano")), "0");
    assert_string_equal(attr(j, "zero", "intValue"), "0");
    json_decref(j);
    trace_span_release(s);
    trace_pools_free();
}

/* Text past the record's room is cut, never mid-character; attributes past the cap dropped. */
static void test_text_cut_to_fit(void **state)
{
    char big[3 * TRACE_SPAN_TEXT];
    for (size_t i = 0; i + 1 < sizeof big; i += 2)
        memcpy(big + i, "\xc3\xa9", 2);                 /* é, two bytes each */
    big[sizeof big - 1] = '\0';
    struct trace_span *s = trace_span_new();
    memset(s->trace_id, 1, 16);
    memset(s->span_id, 2, 8);
    s->name = trace_span_text(s, "x", 1);
    for (int i = 0; i < TRACE_SPAN_ATTRS + 4; i++)
        TRACE_SPAN_STR(s, "k", i == 0 ? big : "v");
    assert_true(s->text_len <= TRACE_SPAN_TEXT);
    assert_int_equal(s->nattrs, TRACE_SPAN_ATTRS);
    json_t *j = encode(s);                              /* valid UTF-8 throughout */
    assert_int_equal(json_array_size(json_object_get(j, "attributes")), TRACE_SPAN_ATTRS);
    json_decref(j);
    trace_span_release(s);
    trace_pools_free();
}

static void *on_release_thread(void *arg)
{
    trace_span_release(arg);
    return NULL;
}

/* A record handed back from another thread is the owner's next one: no malloc per span. */
static void test_pool_reuse_across_threads(void **state)
{
    struct trace_span *a = trace_span_new(), *b = trace_span_new();
    assert_non_null(a);
    assert_ptr_not_equal(a, b);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, on_release_thread, a), 0);
    pthread_join(th, NULL);
    struct trace_span *c = trace_span_new();
    assert_ptr_equal(c, a);
    assert_int_equal(c->nattrs, 0);
    assert_int_equal(c->text_len, 0);
    struct trace *t = trace_pool_trace(), *u;
    assert_non_null(t);
    assert_null(t->tracestate);
    trace_pool_trace_free(t);
    u = trace_pool_trace();
    assert_ptr_equal(u, t);
    trace_pool_trace_free(u);
    trace_span_release(b);
    trace_span_release(c);
    trace_pools_free();             /* everything freed: LeakSanitizer checks under make asan */
    struct trace_span *d = trace_span_new();    /* a new pool after the old ones went */
    assert_non_null(d);
    trace_span_release(d);
    trace_pools_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_child_span),
        cmocka_unit_test(test_encode_root_span),
        cmocka_unit_test(test_text_cut_to_fit),
        cmocka_unit_test(test_pool_reuse_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
