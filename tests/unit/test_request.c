/* Unit tests for daemon/request.c: a request ends exactly once, answers through its sink in the
 * right shape (JSON error, or an error event and a truncated stream), and its deadline fires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "daemon/request.h"
#include "daemon/worker.h"

struct record {
    int responds, stream_starts, ended, status;
    bool stream_complete, stream_ended;
    struct buf body, stream;
};

static struct record rec;

static void s_respond(struct request *r, int status, const char *body, size_t len)
{
    rec.responds++;
    rec.status = status;
    buf_append(&rec.body, body, len);
}
static void s_stream_start(struct request *r, int status) { rec.stream_starts++; }
static bool s_stream_data(struct request *r, const char *p, size_t n)
{
    buf_append(&rec.stream, p, n);
    return false;
}
static void s_stream_end(struct request *r, bool complete)
{
    rec.stream_ended = true;
    rec.stream_complete = complete;
}
static void s_ended(struct request *r) { rec.ended++; }

static const struct sink_ops sink = {s_respond, s_stream_start, s_stream_data, s_stream_end,
                                     s_ended};

struct fixture {
    struct server srv;
    struct worker w;
    struct conf *conf;
};

static int setup(void **state)
{
    static struct fixture f;
    char err[256];
    memset(&f, 0, sizeof f);
    memset(&rec, 0, sizeof rec);
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    f.conf = conf_load_string("log: {access: false}\n", 21, "t.yaml", err, sizeof err);
    assert_non_null(f.conf);
    f.srv.nworkers = 1;
    f.w.srv = &f.srv;
    f.w.loop = ev_loop_new(EVFLAG_AUTO);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ev_loop_destroy(f->w.loop);
    conf_unref(f->conf);
    buf_free(&rec.body);
    buf_free(&rec.stream);
    return 0;
}

static void test_fail_answers_openai_error_once(void **state)
{
    struct fixture *f = *state;
    struct request *r = request_new(&f->w, f->conf, &sink, NULL, ROUTE_CHAT);
    request_fail(r, 404, "invalid_request_error", "model_not_found", "model", "no such model",
                 OUTCOME_REJECTED);
    request_fail(r, 500, "server_error", NULL, NULL, "again", OUTCOME_REJECTED);
    request_end(r, OUTCOME_COMPLETED);
    assert_int_equal(rec.responds, 1);
    assert_int_equal(rec.ended, 1);
    assert_int_equal(rec.status, 404);
    json_t *j = json_loads(rec.body.data, 0, NULL);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "model_not_found");
    assert_string_equal(json_string_value(json_object_get(e, "param")), "model");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "invalid_request_error");
    json_decref(j);
    assert_int_equal(r->outcome, OUTCOME_REJECTED);
    assert_int_equal(f->w.m.outcomes[OUTCOME_REJECTED], 1);
    assert_int_equal(f->w.m.inflight_requests, 0);
    request_free(r);
}

static void test_fail_mid_stream_is_event_then_truncation(void **state)
{
    struct fixture *f = *state;
    struct request *r = request_new(&f->w, f->conf, &sink, NULL, ROUTE_CHAT);
    request_stream_start(r, 200);
    request_stream_data(r, "data: {}\n\n", 10);
    request_fail(r, 502, "upstream_error", "upstream_reset", NULL, "gone", OUTCOME_UPSTREAM_ERROR);
    assert_int_equal(rec.responds, 0);
    assert_true(rec.stream_ended);
    assert_false(rec.stream_complete);
    assert_non_null(strstr(rec.stream.data, "data: {\"error\":{\"message\":\"gone\""));
    assert_int_equal(rec.ended, 1);
    request_free(r);
}

/* The error shape belongs to the request: the same call words it Anthropic's way, whole or as
 * a stream's error event. */
static void test_fail_in_anthropic_shape(void **state)
{
    struct fixture *f = *state;
    struct request *r = request_new(&f->w, f->conf, &sink, NULL, ROUTE_MESSAGES);
    r->error_shape = ERROR_SHAPE_ANTHROPIC;
    request_fail(r, 404, "invalid_request_error", "model_not_found", "model", "no such model",
                 OUTCOME_REJECTED);
    assert_string_equal(rec.body.data, "{\"type\":\"error\",\"error\":{\"type\":"
                        "\"not_found_error\",\"message\":\"model: no such model\"}}");
    request_free(r);
    r = request_new(&f->w, f->conf, &sink, NULL, ROUTE_MESSAGES);
    r->error_shape = ERROR_SHAPE_ANTHROPIC;
    request_stream_start(r, 200);
    request_fail(r, 504, "timeout_error", "deadline_exceeded", NULL, "late", OUTCOME_DEADLINE);
    assert_string_equal(rec.stream.data, "event: error\ndata: {\"type\":\"error\",\"error\":"
                        "{\"type\":\"api_error\",\"message\":\"late\"}}\n\n");
    assert_false(rec.stream_complete);
    request_free(r);
}

static void test_deadline_fires_504(void **state)
{
    struct fixture *f = *state;
    struct request *r = request_new(&f->w, f->conf, &sink, NULL, ROUTE_CHAT);
    request_set_deadline(r, 20);
    ev_run(f->w.loop, 0);       /* returns once the deadline timer has run */
    assert_int_equal(rec.status, 504);
    assert_int_equal(r->outcome, OUTCOME_DEADLINE);
    assert_non_null(strstr(rec.body.data, "\"deadline_exceeded\""));
    assert_true(ev_now(f->w.loop) - r->started >= 0.019);
    request_free(r);
}

static void test_end_stops_the_deadline(void **state)
{
    struct fixture *f = *state;
    struct request *r = request_new(&f->w, f->conf, &sink, NULL, ROUTE_CHAT);
    request_set_deadline(r, 10);
    request_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
    ev_run(f->w.loop, EVRUN_NOWAIT);
    assert_int_equal(rec.responds, 1);
    assert_int_equal(rec.status, 200);
    assert_int_equal(r->outcome, OUTCOME_COMPLETED);
    assert_false(ev_is_active(&r->deadline));
    request_free(r);
}

static void test_free_before_end_ends_as_cancelled(void **state)
{
    struct fixture *f = *state;
    struct request *r = request_new(&f->w, f->conf, &sink, NULL, ROUTE_CHAT);
    request_free(r);
    assert_int_equal(rec.ended, 1);
    assert_int_equal(rec.responds, 0);
    assert_int_equal(f->w.m.outcomes[OUTCOME_CANCELLED], 1);
}

static void test_request_ids(void **state)
{
    char id[REQUEST_ID_MAX + 1];
    uint32_t rng = 42;
    request_make_id(id, &rng);
    assert_int_equal(strlen(id), 28);
    assert_memory_equal(id, "req_", 4);
    assert_true(request_id_acceptable(id, strlen(id)));
    assert_true(request_id_acceptable("abc-1.2:3_x", 11));
    assert_false(request_id_acceptable("", 0));
    assert_false(request_id_acceptable("a b", 3));
    assert_false(request_id_acceptable("a\r\nX: y", 7));
    char long_id[80];
    memset(long_id, 'a', sizeof long_id);
    assert_false(request_id_acceptable(long_id, sizeof long_id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fail_answers_openai_error_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_mid_stream_is_event_then_truncation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fail_in_anthropic_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_fires_504, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_stops_the_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_before_end_ends_as_cancelled, setup, teardown),
        cmocka_unit_test(test_request_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
