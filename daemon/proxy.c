/* proxy: runs one request's upstream attempts — target order, retries with backoff inside the
 * deadline, fallbacks, circuit breaker — and turns answers into the request's sink calls. */
#include "daemon/proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/sse.h"
#include "daemon/metrics_labels.h"
#include "daemon/worker.h"
#include "upstream/engine.h"
#include "upstream/route.h"

#define SSE_MAX_EVENT (1u << 20)

struct proxy {
    struct request *r;
    json_t *body;
    const struct conf_model *model;
    unsigned order[ROUTE_MAX_TARGETS];
    unsigned norder, pos, retry;
    const struct conf_target *target;
    struct route_health *health;
    struct call *call;
    ev_timer backoff;
    struct codec codec;
    struct buf resp;                /* non-streamed answer, or an error body */
    struct buf frames;              /* translated stream output, reused */
    struct sse_parser sse;
    long status;
    int64_t retry_after_ms;
    double call_started;            /* ev_time the current attempt began */
    bool paused, stream_failed;
    bool probe;                     /* this attempt is the half-open breaker's single probe */
    int pair;                       /* the target's metric labels (metrics_labels_pair) */
    /* the last failure, reported when no attempt is left */
    int fail_status;
    const char *fail_type, *fail_code;
    char fail_msg[200];
    char fail_param[64];            /* the client field a 400 names */
    json_t *fail_body;              /* an upstream 4xx error, relayed as is */
};

static void attempt(struct proxy *p);
static void on_head(void *ud, long status, int64_t retry_after_ms);
static enum call_verdict on_data(void *ud, const char *data, size_t n);
static void on_done(void *ud, enum call_result result, long status, const char *detail);

static const struct call_ops proxy_call_ops = {on_head, on_data, on_done};

/* limits.max_inflight and limits.queue hold for the whole process: one atomic count of slots
 * and one of queued requests, shared by the workers; each worker queues its own requests. */
static bool slot_take(struct server *s, unsigned max)
{
    unsigned n = __atomic_load_n(&s->inflight_slots, __ATOMIC_RELAXED);
    do {
        if (n >= max)
            return false;
    } while (!__atomic_compare_exchange_n(&s->inflight_slots, &n, n + 1, true,
                                          __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return true;
}

/* A slot freed: this worker's queue goes first; other workers with a queue are woken. */
static void slot_give(struct worker *w)
{
    struct server *s = w->srv;
    __atomic_sub_fetch(&s->inflight_slots, 1, __ATOMIC_SEQ_CST);
    w->inflight--;
    if (w->queue_head) {
        ev_prepare_start(w->loop, &w->admit);
        return;
    }
    if (!__atomic_load_n(&s->queued_total, __ATOMIC_SEQ_CST))
        return;
    for (unsigned i = 0; i < s->nworkers; i++)
        if (&s->workers[i] != w && __atomic_load_n(&s->workers[i].queued, __ATOMIC_RELAXED))
            ev_async_send(s->workers[i].loop, &s->workers[i].admit_wake);
}

static void proxy_free(struct proxy *p)
{
    struct worker *w = p->r->w;
    slot_give(w);
    ev_timer_stop(w->loop, &p->backoff);
    if (p->codec.ops)
        codec_free(&p->codec);
    sse_free(&p->sse);
    buf_free(&p->resp);
    buf_free(&p->frames);
    json_decref(p->body);
    json_decref(p->fail_body);
    free(p);
}

static void on_backoff(struct ev_loop *loop, ev_timer *t, int revents)
{
    attempt(t->data);
}

/* Targets whose provider has no such endpoint are left out of the order (a model mixing
 * OpenAI and Anthropic targets serves /v1/responses from the OpenAI ones); with none left the
 * request can't be served on this model at all. */
static int only_capable(struct proxy *p)
{
    struct request *r = p->r;
    unsigned n = 0;
    for (unsigned i = 0; i < p->norder; i++)
        if (codec_supports(p->model->targets[p->order[i]].upstream->provider, r->ep))
            p->order[n++] = p->order[i];
    if (n || !p->norder) {
        p->norder = n;
        return 0;
    }
    char msg[200];
    bool tokens = r->ep == EP_COUNT_TOKENS;
    snprintf(msg, sizeof msg, "model %.80s has no %s target: %s", p->model->name,
             r->ep == EP_RESPONSES ? "OpenAI-type" : tokens ? "Anthropic" : "suitable",
             r->ep == EP_RESPONSES ? "this endpoint needs an OpenAI-type target"
             : tokens ? "token counting is only relayed to Anthropic upstreams"
                      : "its upstreams do not offer this endpoint");
    request_fail(r, tokens ? 501 : 400, "invalid_request_error",
                 tokens ? "not_implemented" : "unsupported_endpoint", "model", msg,
                 OUTCOME_REJECTED);
    return -1;
}

static int proxy_begin(struct request *r, json_t *body, const struct conf_model *m)
{
    struct proxy *p = calloc(1, sizeof *p);
    if (!p) {
        __atomic_sub_fetch(&r->w->srv->inflight_slots, 1, __ATOMIC_SEQ_CST);
        json_decref(body);
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return -1;
    }
    p->r = r;
    p->body = body;
    p->model = m;
    p->pair = -1;
    ev_timer_init(&p->backoff, on_backoff, 0., 0.);
    p->backoff.data = p;
    const struct route_health *health[ROUTE_MAX_TARGETS];
    for (size_t i = 0; i < m->ntargets && i < ROUTE_MAX_TARGETS; i++)
        health[i] = worker_health(r->w, m->targets[i].upstream->name);
    p->norder = route_order(m, health, &r->w->rng, p->order);
    if (only_capable(p) < 0) {
        json_decref(body);
        free(p);
        return -1;
    }
    p->fail_status = 503;
    p->fail_type = "upstream_error";
    p->fail_code = "no_healthy_upstream";
    snprintf(p->fail_msg, sizeof p->fail_msg, "no healthy upstream for model %s", m->name);
    r->proxy = p;
    r->w->inflight++;           /* the process-wide slot was taken by the caller */
    attempt(p);
    return 0;
}

int proxy_start(struct request *r, json_t *body, const struct conf_model *m)
{
    struct worker *w = r->w;
    struct server *s = w->srv;
    const struct conf_limits *l = &w->conf->limits;
    if (!w->queue_head && slot_take(s, l->max_inflight))
        return proxy_begin(r, body, m);
    if (__atomic_add_fetch(&s->queued_total, 1, __ATOMIC_SEQ_CST) > l->queue) {
        __atomic_sub_fetch(&s->queued_total, 1, __ATOMIC_SEQ_CST);
        json_decref(body);
        r->retry_after_s = 1;
        request_fail(r, 503, "server_error", "overloaded",
                     NULL, "too many requests in flight and the queue is full; retry shortly",
                     OUTCOME_REJECTED);
        return -1;
    }
    r->queued = true;
    r->qbody = body;
    r->qmodel = m;
    r->qprev = w->queue_tail;
    if (w->queue_tail)
        w->queue_tail->qnext = r;
    else
        w->queue_head = r;
    w->queue_tail = r;
    __atomic_add_fetch(&w->queued, 1, __ATOMIC_RELAXED);
    ev_prepare_start(w->loop, &w->admit);   /* a slot may have freed meanwhile */
    return 0;
}

void proxy_unqueue(struct request *r)
{
    struct worker *w = r->w;
    if (!r->queued)
        return;
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        w->queue_head = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        w->queue_tail = r->qprev;
    r->queued = false;
    r->qnext = r->qprev = NULL;
    __atomic_sub_fetch(&w->queued, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&w->srv->queued_total, 1, __ATOMIC_SEQ_CST);
    json_decref(r->qbody);
    r->qbody = NULL;
}

/* Before the loop polls: hand freed slots to queued requests in order. */
static void on_admit(struct ev_loop *loop, ev_prepare *pw, int revents)
{
    struct worker *w = pw->data;
    while (w->queue_head && slot_take(w->srv, w->conf->limits.max_inflight)) {
        struct request *r = w->queue_head;
        json_t *body = r->qbody;
        const struct conf_model *m = r->qmodel;
        r->qbody = NULL;        /* ownership moves to proxy_begin */
        proxy_unqueue(r);
        proxy_begin(r, body, m);
    }
    if (!w->queue_head)
        ev_prepare_stop(loop, pw);
}

static void on_admit_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    if (w->queue_head)
        ev_prepare_start(loop, &w->admit);
}

void proxy_worker_init(struct worker *w)
{
    ev_prepare_init(&w->admit, on_admit);
    w->admit.data = w;
    ev_async_init(&w->admit_wake, on_admit_wake);
    w->admit_wake.data = w;
    ev_async_start(w->loop, &w->admit_wake);
}

void proxy_cancel(struct proxy *p, enum abort_reason why)
{
    if (p->call) {
        call_cancel(p->call);
        p->call = NULL;
        /* the upstream was working until now: the access log's upstream_ms says so */
        p->r->upstream_ms += (ev_time() - p->call_started) * 1000.0;
        METRIC_INC(p->r->w->m.aborted[why]);
        METRIC_DEC(p->r->w->m.upstream_inflight);
        p->health->inflight--;
        if (p->probe)
            p->health->probing = false;     /* an abandoned probe must not block the next */
    }
    proxy_free(p);
}

void proxy_resume(struct proxy *p)
{
    if (p->paused && p->call) {
        p->paused = false;
        call_resume(p->call);   /* may deliver the held bytes right away, through on_data */
    }
}

/* No attempt left: report the last failure (a relayed upstream error, or the gateway's). */
static void give_up(struct proxy *p)
{
    struct request *r = p->r;
    r->retry_after_s = p->fail_status == 429 || p->fail_status == 503
                           ? (p->retry_after_ms > 0 ? (p->retry_after_ms + 999) / 1000 : 1)
                           : -1;
    if (p->fail_body && r->error_shape != ERROR_SHAPE_OPENAI) {
        /* Relayed in the client's shape: the message kept, the type named after the status. */
        const json_t *m = json_object_get(json_object_get(p->fail_body, "error"), "message");
        request_fail(r, p->fail_status, "upstream_error", NULL, NULL,
                     json_is_string(m) ? json_string_value(m) : "upstream error",
                     OUTCOME_UPSTREAM_ERROR);
        return;
    }
    if (p->fail_body) {
        char *text = json_dumps(p->fail_body, JSON_COMPACT);
        request_respond(r, p->fail_status, text ? text : "{}", text ? strlen(text) : 2);
        free(text);
        request_end(r, OUTCOME_UPSTREAM_ERROR);
        return;
    }
    request_fail(r, p->fail_status, p->fail_type, p->fail_code,
                 p->fail_param[0] ? p->fail_param : NULL, p->fail_msg,
                 p->fail_status == 400 ? OUTCOME_REJECTED : OUTCOME_UPSTREAM_ERROR);
}

static struct curl_slist *build_headers(struct proxy *p, const struct conf_upstream *up)
{
    char line[160];
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, p->r->stream ? "Accept: text/event-stream" : "Accept: application/json");
    h = curl_slist_append(h, "Expect:");     /* no 100-continue round trip upstream */
    snprintf(line, sizeof line, "X-Request-Id: %s", p->r->id);
    h = curl_slist_append(h, line);
    const struct buf *fwd = &p->r->fwd_headers;
    for (size_t off = 0; off < fwd->len; off += strlen(fwd->data + off) + 1)
        h = curl_slist_append(h, fwd->data + off);
    for (size_t i = 0; i < up->nheaders; i++) {
        struct buf b = BUF_INIT;
        buf_printf(&b, "%s: %s", up->headers[i].name, up->headers[i].value);
        h = curl_slist_append(h, b.data);
        buf_free(&b);
    }
    return p->codec.ops->auth(&p->codec, up, h);
}

/* Prepares the call for the current target; -1 when this target can't take the request. */
static int launch(struct proxy *p)
{
    struct request *r = p->r;
    const struct conf_upstream *up = p->target->upstream;
    const char *model = p->target->model ? p->target->model : r->model;
    if (p->codec.ops)
        codec_free(&p->codec);
    codec_init(&p->codec, up->provider, r->ep, model, (long)time(NULL));
    p->codec.anthropic_version = r->anthropic_version[0] ? r->anthropic_version : NULL;
    const char *path = p->codec.ops->path(r->ep);
    char err[200] = "", param[64] = "";
    struct buf body = BUF_INIT;
    if (!path || p->codec.ops->encode(r->ep, p->body, &r->body_raw, model,
                                      p->model->default_max_tokens, &body, err, sizeof err,
                                      param, sizeof param) < 0) {
        buf_free(&body);
        p->fail_status = 400;
        p->fail_type = "invalid_request_error";
        p->fail_code = path ? "unsupported_request" : "unsupported_endpoint";
        snprintf(p->fail_param, sizeof p->fail_param, "%s", param);
        snprintf(p->fail_msg, sizeof p->fail_msg, "%s",
                 path ? err : "this endpoint is not supported by the model's upstream");
        return -1;
    }
    struct call_spec spec = {0};
    struct buf url = BUF_INIT;
    buf_printf(&url, "%s%s", up->base_url, path);
    spec.url = url.data;
    spec.body_len = body.len;
    spec.body = buf_steal(&body);
    spec.headers = build_headers(p, up);
    spec.connect_timeout_ms = r->conf->timeouts.connect_ms;
    spec.timeout_ms = up->timeout_ms;
    spec.max_response_bytes = r->stream ? 0 : up->max_response_bytes;
    spec.ca_file = up->ca_file;
    spec.tls_verify = up->tls_verify;
    p->call = call_start(r->w->engine, &spec, &proxy_call_ops, p);
    buf_free(&url);
    if (!p->call)
        return -1;
    sse_free(&p->sse);
    sse_init(&p->sse, SSE_MAX_EVENT);
    return 0;
}

static void attempt(struct proxy *p)
{
    struct request *r = p->r;
    double now = ev_now(r->w->loop);
    for (; p->pos < p->norder; p->pos++, p->retry = 0) {
        p->target = &p->model->targets[p->order[p->pos]];
        p->health = worker_health(r->w, p->target->upstream->name);
        if (p->retry == 0 && !route_health_allows(p->health, now))
            continue;
        buf_reset(&p->resp);
        p->status = 0;
        p->retry_after_ms = -1;
        if (launch(p) < 0)
            continue;
        p->probe = p->health->open_until != 0;
        if (p->probe)
            p->health->probing = true;
        if (p->pos > 0 && p->retry == 0 && r->attempts > 0)     /* counted on the one left */
            metrics_labels_event(r->conf, r->w->id, r->label_pair, PAIR_FALLBACK);
        r->attempts++;
        r->upstream = p->target->upstream->name;
        p->pair = r->label_pair = metrics_labels_pair(r->conf, p->model, p->order[p->pos]);
        p->call_started = ev_time();
        p->health->inflight++;
        metrics_labels_event(r->conf, r->w->id, p->pair, PAIR_ATTEMPT);
        METRIC_INC(r->w->m.upstream_inflight);
        return;
    }
    give_up(p);
}

static void on_head(void *ud, long status, int64_t retry_after_ms)
{
    struct proxy *p = ud;
    p->status = status;
    p->retry_after_ms = retry_after_ms;
}

static int on_sse_event(void *ud, const char *ev, size_t elen, const char *data, size_t dlen)
{
    struct proxy *p = ud;
    if (p->codec.ops->decode_event(&p->codec, ev, elen, data, dlen, &p->frames) < 0) {
        p->stream_failed = true;
        return -1;
    }
    return 0;
}

/* Relays one upstream read of a stream. Returns false when the request ended inside. */
static bool relay_stream(struct proxy *p, const char *data, size_t n)
{
    struct request *r = p->r;
    buf_reset(&p->frames);
    int rc = sse_feed(&p->sse, data, n, on_sse_event, p);
    if (p->frames.len && !p->stream_failed) {
        if (!r->streaming)
            request_stream_start(r, 200);
        if (request_stream_data(r, p->frames.data, p->frames.len))
            p->paused = true;
    }
    if (rc < 0 || p->stream_failed) {
        const char *msg = "upstream stream could not be decoded";
        json_t *e = p->stream_failed ? json_loadb(p->frames.data, p->frames.len, 0, NULL) : NULL;
        json_t *m = json_object_get(json_object_get(e, "error"), "message");
        if (json_is_string(m))
            msg = json_string_value(m);
        request_fail(r, 502, "upstream_error", "upstream_stream_error", NULL, msg,
                     OUTCOME_UPSTREAM_ERROR);
        json_decref(e);
        return false;
    }
    return true;
}

static enum call_verdict on_data(void *ud, const char *data, size_t n)
{
    struct proxy *p = ud;
    if (p->paused)
        return CALL_PAUSE;
    if (p->r->stream && p->status >= 200 && p->status < 300) {
        relay_stream(p, data, n);   /* the call was cancelled if the request ended */
        return CALL_CONTINUE;
    }
    buf_append(&p->resp, data, n);
    return CALL_CONTINUE;
}

static void record_failure(struct proxy *p, enum call_result result, long status,
                           const char *detail)
{
    const char *up = p->target->upstream->name;
    p->fail_type = "upstream_error";
    p->fail_param[0] = '\0';
    json_decref(p->fail_body);
    p->fail_body = NULL;
    switch (result) {
    case CALL_OK:
        if (status == 401 || status == 403) {
            /* The gateway's own key was refused: the client can't fix that, and the upstream's
             * message may quote the key (even masked), so it is logged, not relayed. */
            p->fail_status = 502;
            p->fail_code = "upstream_auth_failed";
            snprintf(p->fail_msg, sizeof p->fail_msg,
                     "upstream %s refused the gateway's credentials (status %ld)", up, status);
            log_error("request %s: upstream %s answered %ld: check its api_key", p->r->id, up,
                      status);
            return;
        }
        if (status >= 400 && status < 500) {
            /* The upstream's own answer, relayed with its status (wrapped if not OpenAI's). */
            p->fail_status = (int)status;
            p->fail_body = p->codec.ops->decode_error(status, p->resp.data, p->resp.len);
            return;
        }
        p->fail_status = 502;
        p->fail_code = status >= 500 ? "upstream_status" : "upstream_bad_response";
        snprintf(p->fail_msg, sizeof p->fail_msg, "upstream %s answered %s (status %ld)", up,
                 status >= 500 ? "with an error" : "with an unreadable body", status);
        return;
    case CALL_TIMEOUT:
        p->fail_status = 504;
        p->fail_type = "timeout_error";
        p->fail_code = "upstream_timeout";
        break;
    case CALL_CONNECT:
        p->fail_status = 502;
        p->fail_code = "upstream_unreachable";
        break;
    case CALL_RESET:
        p->fail_status = 502;
        p->fail_code = "upstream_reset";
        break;
    case CALL_TOO_LARGE:
        p->fail_status = 502;
        p->fail_code = "upstream_response_too_large";
        break;
    default:
        p->fail_status = 502;
        p->fail_code = "upstream_error";
    }
    snprintf(p->fail_msg, sizeof p->fail_msg, "upstream %s: %s", up, detail);
}

/* One warn line per failed attempt — which target, what failed, what happens next — at most
 * one a second per target (across workers), saying how many were held back meanwhile. */
static void log_attempt_failure(struct proxy *p, enum call_result result, long status,
                                const char *detail, const char *next, uint64_t wait_ms)
{
    struct request *r = p->r;
    uint64_t suppressed;
    if (!log_enabled(LOG_WARN) ||
        !metrics_labels_log_allowed(r->conf, p->pair, (uint64_t)(ev_time() * 1000), &suppressed))
        return;
    char what[240], st[16], wait[24], held[24], att[12];
    if (result == CALL_OK && status >= 300)
        snprintf(what, sizeof what, "status %ld", status);
    else
        snprintf(what, sizeof what, "%s", detail ? detail : "error");
    snprintf(st, sizeof st, "%ld", status);
    snprintf(wait, sizeof wait, "%lu", (unsigned long)wait_ms);
    snprintf(held, sizeof held, "%lu", (unsigned long)suppressed);
    snprintf(att, sizeof att, "%u", r->attempts);
    const char *umodel = p->target->model ? p->target->model : r->model;
    log_fields(LOG_WARN, "upstream attempt failed", "request_id", r->id,
               "upstream", p->target->upstream->name, "model", p->model->name,
               "upstream_model", umodel ? umodel : "-", "#attempt", att, "error", what,
               "#status", st, "next", next, "#retry_in_ms", wait, "#suppressed", held,
               (char *)NULL);
}

/* A complete, successful, non-streamed answer. false: the body was garbage. */
static bool deliver_body(struct proxy *p)
{
    struct request *r = p->r;
    struct buf out = BUF_INIT;
    if (p->codec.ops->decode_body(&p->codec, r->ep, p->resp.data, p->resp.len, &out) < 0) {
        buf_free(&out);
        return false;
    }
    r->prompt_tokens += p->codec.prompt_tokens;
    r->completion_tokens += p->codec.completion_tokens;
    struct buf *body = out.len ? &out : &p->resp;
    request_respond(r, (int)p->status, body->data, body->len);
    buf_free(&out);
    request_end(r, OUTCOME_COMPLETED);
    return true;
}

static void finish_stream(struct proxy *p, enum call_result result, long status,
                          const char *detail)
{
    struct request *r = p->r;
    r->prompt_tokens += p->codec.prompt_tokens;
    r->completion_tokens += p->codec.completion_tokens;
    if (result == CALL_OK && p->codec.stream_done) {
        request_stream_end(r, true);
        request_end(r, OUTCOME_COMPLETED);
        return;
    }
    metrics_labels_event(r->conf, r->w->id, p->pair, PAIR_FAILURE);
    log_attempt_failure(p, result, status, result == CALL_OK ? "stream ended early" : detail,
                        "give_up (the stream had started)", 0);
    request_fail(r, 502, "upstream_error", "upstream_stream_truncated", NULL,
                 result == CALL_OK ? "upstream ended the stream early"
                                   : "upstream connection lost mid-stream",
                 OUTCOME_UPSTREAM_ERROR);
}

/* After a failed attempt: the same target again after a backoff, the next target, or done. */
static void retry_or_give_up(struct proxy *p, enum call_result result, long status,
                             const char *detail)
{
    struct request *r = p->r;
    if (r->no_retry || !route_retryable(result, status)) {
        log_attempt_failure(p, result, status, detail, r->no_retry ? "give_up (no-retry asked)"
                                                   : "give_up (not retryable)", 0);
        give_up(p);
        return;
    }
    if (p->retry < p->model->retries) {
        uint64_t wait = route_backoff_ms(p->model, p->retry, p->retry_after_ms, &r->w->rng);
        double at = ev_now(r->w->loop) + (double)wait / 1000.0;
        if (r->deadline_at && at >= r->deadline_at) {
            log_attempt_failure(p, result, status, detail, "give_up (no time for a retry)", 0);
            give_up(p);     /* a retry must fit inside the deadline, never extend it */
            return;
        }
        log_attempt_failure(p, result, status, detail, "retry", wait);
        p->retry++;
        metrics_labels_event(r->conf, r->w->id, p->pair, PAIR_RETRY);
        ev_timer_set(&p->backoff, (double)wait / 1000.0, 0.);
        ev_timer_start(r->w->loop, &p->backoff);
        return;
    }
    log_attempt_failure(p, result, status, detail, p->pos + 1 < p->norder
                        ? "fallback (next target)" : "give_up (no target left)", 0);
    p->pos++;
    p->retry = 0;
    attempt(p);
}

static void on_done(void *ud, enum call_result result, long status, const char *detail)
{
    struct proxy *p = ud;
    struct request *r = p->r;
    struct worker *w = r->w;
    double ms = (ev_time() - p->call_started) * 1000.0;
    p->call = NULL;
    p->health->inflight--;
    METRIC_DEC(w->m.upstream_inflight);
    metrics_labels_attempt_time(r->conf, w->id, p->pair, ms / 1000.0);
    r->upstream_ms += ms;
    bool ok = result == CALL_OK && status >= 200 && status < 300;
    route_health_result(p->health, ok || (result == CALL_OK && status < 500 && status != 429),
                        ev_now(w->loop), r->conf->health.failures,
                        (double)r->conf->health.cooldown_ms / 1000.0);
    if (r->streaming) {
        finish_stream(p, result, status, detail);
        return;
    }
    if (ok && !r->stream && deliver_body(p))
        return;
    if (ok) {       /* garbage, or a 2xx "stream" without a single event */
        result = CALL_ERROR;
        detail = r->stream ? "no stream events in the answer" : "the answer is not valid JSON";
    }
    metrics_labels_event(r->conf, w->id, p->pair, PAIR_FAILURE);
    record_failure(p, result, status, detail);
    retry_or_give_up(p, result, status, detail);
}
