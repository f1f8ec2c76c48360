/* test_sse: the text/event-stream parser against the WHATWG rules it claims: line ends, fields,
 * dispatch, BOM, caps, and that any split of the input yields the same events. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/sse.h"

/* Events are recorded as "event\x1f" "data\x1e" so whole sequences compare as one string. */
struct rec {
    struct buf log;
    int count;
    int stop_after;     /* callback returns -1 on this event (1-based); 0 = never */
};

static int on_event(void *ud, const char *event, size_t elen, const char *data, size_t dlen)
{
    struct rec *r = ud;
    assert_int_equal(strlen(event), elen);
    assert_int_equal(data[dlen], '\0');
    buf_append(&r->log, event, elen);
    buf_append(&r->log, "\x1f", 1);
    buf_append(&r->log, data, dlen);
    buf_append(&r->log, "\x1e", 1);
    r->count++;
    return r->stop_after && r->count == r->stop_after ? -1 : 0;
}

/* Feeds the pieces delimited by cuts[] (ascending offsets) and returns sse_feed's last result. */
static int feed_cuts(struct rec *r, const char *in, size_t len, const size_t *cuts, size_t ncuts,
                     size_t max_event)
{
    struct sse_parser p;
    sse_init(&p, max_event);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts && rc == 0; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        rc = sse_feed(&p, in + at, end - at, on_event, r);
        at = end;
    }
    sse_free(&p);
    return rc;
}

static int feed_all(struct rec *r, const char *in, size_t max_event)
{
    return feed_cuts(r, in, strlen(in), NULL, 0, max_event);
}

static void rec_free(struct rec *r)
{
    buf_free(&r->log);
}

#define EXPECT(r, s) assert_memory_equal((r)->log.data ? (r)->log.data : "", s, sizeof(s))

static void test_openai_stream(void **state)
{
    struct rec r = {BUF_INIT, 0, 0};
    const char *in = "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
                     "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{}}]}\n\n"
                     "data: [DONE]\n\n";
    assert_int_equal(feed_all(&r, in, 0), 0);
    assert_int_equal(r.count, 3);
    EXPECT(&r, "\x1f{\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\x1e"
               "\x1f{\"id\":\"c1\",\"choices\":[{\"delta\":{}}]}\x1e"
               "\x1f[DONE]\x1e");
    rec_free(&r);
}

static void test_anthropic_stream(void **state)
{
    struct rec r = {BUF_INIT, 0, 0};
    const char *in = "event: message_start\n"
                     "data: {\"type\":\"message_start\"}\n\n"
                     "event: ping\n"
                     "data: {\"type\": \"ping\"}\n\n"
                     "event: content_block_delta\n"
                     "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"a: b\"}}\n\n"
                     "event: message_stop\n"
                     "data: {\"type\":\"message_stop\"}\n\n";
    assert_int_equal(feed_all(&r, in, 0), 0);
    assert_int_equal(r.count, 4);
    EXPECT(&r, "message_start\x1f{\"type\":\"message_start\"}\x1e"
               "ping\x1f{\"type\": \"ping\"}\x1e"
               "content_block_delta\x1f{\"type\":\"content_block_delta\","
               "\"delta\":{\"text\":\"a: b\"}}\x1e"
               "message_stop\x1f{\"type\":\"message_stop\"}\x1e");
    rec_free(&r);
}

/* A stream exercising every rule at once: BOM, all three line ends, comments, multi-line data,
 * ignored fields, an event without data, and a trailing incomplete event. */
static const char sample[] =
    "\xEF\xBB\xBF: hello\r\n"
    "event: one\r\ndata: first\r\ndata:second\r\n\r\n"
    "id: 7\rretry: 100\rdata:  two spaces\r\r"
    "event: dropped\n\n"
    "data\n\n"
    "event: three\r\ndata: x\r\n: note\r\ndata: y\n\n"
    "data: unfinished\n";
static const char sample_events[] =
    "one\x1f" "first\nsecond\x1e"
    "\x1f two spaces\x1e"
    "\x1f\x1e"
    "three\x1fx\ny\x1e";

static void test_every_split_same_events(void **state)
{
    size_t len = sizeof sample - 1;
    struct rec whole = {BUF_INIT, 0, 0};
    assert_int_equal(feed_cuts(&whole, sample, len, NULL, 0, 0), 0);
    EXPECT(&whole, sample_events);
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i; j <= len; j++) {
            struct rec r = {BUF_INIT, 0, 0};
            size_t cuts[2] = {i, j};
            assert_int_equal(feed_cuts(&r, sample, len, cuts, 2, 0), 0);
            assert_int_equal(r.count, 4);
            EXPECT(&r, sample_events);
            rec_free(&r);
        }
    }
    /* and one byte at a time */
    size_t cuts[sizeof sample];
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    struct rec r = {BUF_INIT, 0, 0};
    assert_int_equal(feed_cuts(&r, sample, len, cuts, len - 1, 0), 0);
    EXPECT(&r, sample_events);
    rec_free(&r);
    rec_free(&whole);
}

static void test_line_end_mixes(void **state)
{
    struct rec r = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r, "data: a\r\rdata: b\r\n\r\ndata: c\n\ndata: d\n\r", 0), 0);
    EXPECT(&r, "\x1f" "a\x1e\x1f" "b\x1e\x1f" "c\x1e\x1f" "d\x1e");
    rec_free(&r);

    /* CR ending one feed and LF starting the next are a single line end, not a blank line:
     * x and y belong to one event. */
    struct rec r2 = {BUF_INIT, 0, 0};
    const char *in = "data: x\r\ndata: y\r\n\r\n";
    size_t cut[] = {7};
    assert_int_equal(feed_cuts(&r2, in, strlen(in), cut, 1, 0), 0);
    EXPECT(&r2, "\x1fx\ny\x1e");
    rec_free(&r2);

    /* LF LF after CR: the first LF completes CRLF, the second is the blank line. */
    struct rec r3 = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r3, "data: z\r\n\n", 0), 0);
    EXPECT(&r3, "\x1fz\x1e");
    rec_free(&r3);
}

static void test_multi_line_data_and_fields(void **state)
{
    struct rec r = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r, "data: a\ndata:b\ndata:  c\ndata\n\n"
                                  "data:\n\n"
                                  "id: 1\nretry: 5\nfoo: bar\nevent\ndata: v\n\n"
                                  "event: e1\nevent: e2\ndata: w\n\n", 0), 0);
    assert_int_equal(r.count, 4);
    EXPECT(&r, "\x1f" "a\nb\n c\n\x1e"
               "\x1f\x1e"
               "\x1fv\x1e"
               "e2\x1fw\x1e");
    rec_free(&r);
}

static void test_comments_and_dataless_events(void **state)
{
    struct rec r = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r, ": keepalive\n\n:\n\n"
                                  ":x\ndata: y\n: z\n\n"
                                  "event: lonely\n\n"
                                  "data: after\n\n", 0), 0);
    /* The name of the data-less event must not stick to the next one. */
    assert_int_equal(r.count, 2);
    EXPECT(&r, "\x1fy\x1e\x1f" "after\x1e");
    rec_free(&r);
}

static void test_no_trailing_blank_line(void **state)
{
    struct rec r = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r, "data: a\n\ndata: b\n", 0), 0);
    assert_int_equal(r.count, 1);
    EXPECT(&r, "\x1f" "a\x1e");
    rec_free(&r);

    struct rec r2 = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r2, "event: x\ndata: b", 0), 0);
    assert_int_equal(r2.count, 0);
    rec_free(&r2);
}

static void test_bom_only_at_start(void **state)
{
    struct rec r = {BUF_INIT, 0, 0};
    const char *in = "\xEF\xBB\xBF" "data: a\n\n\xEF\xBB\xBF" "data: b\n\n";
    size_t cut[] = {1, 2};
    assert_int_equal(feed_cuts(&r, in, strlen(in), cut, 2, 0), 0);
    /* A second BOM is part of the field name "\xEF\xBB\xBFdata", which is no known field. */
    assert_int_equal(r.count, 1);
    EXPECT(&r, "\x1f" "a\x1e");
    rec_free(&r);

    /* A BOM prefix that turns out not to be one is kept as line bytes. */
    struct rec r2 = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r2, "\xEF\xBB" "data: c\n\ndata: d\n\n", 0), 0);
    EXPECT(&r2, "\x1f" "d\x1e");
    rec_free(&r2);
}

static void test_oversize(void **state)
{
    /* One long line (split across feeds) over the cap. */
    struct rec r = {BUF_INIT, 0, 0};
    const char *in = "data: 0123456789012345678901234567890123456789\n\n";
    size_t cut[] = {10, 20};
    assert_int_equal(feed_cuts(&r, in, strlen(in), cut, 2, 32), -1);
    assert_int_equal(r.count, 0);
    rec_free(&r);

    /* Many short data lines adding up past the cap before the blank line. */
    struct rec r2 = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r2, "data: 0123456789\ndata: 0123456789\ndata: 0123456789\n"
                                   "data: 0123456789\n\n", 32), -1);
    assert_int_equal(r2.count, 0);
    rec_free(&r2);

    /* A line that never ends, or a comment line, holds no data but still counts. */
    struct rec r4 = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r4, "data: 0123456789012345678901234567890123456789", 32), -1);
    assert_int_equal(feed_all(&r4, ": 0123456789012345678901234567890123456789\n", 32), -1);
    rec_free(&r4);

    /* The cap is per event: events each under it pass however many there are. */
    struct rec r3 = {BUF_INIT, 0, 0};
    assert_int_equal(feed_all(&r3, "data: 0123456789\ndata: 0123456789\n\n"
                                   "data: 0123456789\ndata: 0123456789\n\n", 32), 0);
    assert_int_equal(r3.count, 2);
    rec_free(&r3);
}

static void test_callback_stop(void **state)
{
    struct rec r = {BUF_INIT, 0, 2};
    assert_int_equal(feed_all(&r, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 0), -1);
    assert_int_equal(r.count, 2);
    EXPECT(&r, "\x1f" "1\x1e\x1f" "2\x1e");
    rec_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_stream),
        cmocka_unit_test(test_anthropic_stream),
        cmocka_unit_test(test_every_split_same_events),
        cmocka_unit_test(test_line_end_mixes),
        cmocka_unit_test(test_multi_line_data_and_fields),
        cmocka_unit_test(test_comments_and_dataless_events),
        cmocka_unit_test(test_no_trailing_blank_line),
        cmocka_unit_test(test_bom_only_at_start),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_callback_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
