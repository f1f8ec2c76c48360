/* proxy: runs one request's upstream attempts — target order, retries with backoff inside the
 * deadline, fallbacks, the per-target breaker — and turns answers into the request's sink calls.
 * Hedged attempts (hedge.c) run in extra slots; the first 2xx head wins. */
#include "daemon/proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/json_valid.h"
#include "common/log.h"
#include "daemon/cost.h"
#include "daemon/breaker.h"
#include "daemon/gather.h"
#include "daemon/metrics_labels.h"
#include "daemon/proxy_internal.h"
#include "daemon/worker.h"

#define SSE_MAX_EVENT (1u << 20)

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

bool proxy_slot_take(struct worker *w)
{
    if (!slot_take(w->srv, w->conf->limits.max_inflight))
        return false;
    w->inflight++;
    return true;
}

void proxy_slot_give(struct worker *w)
{
    slot_give(w);
}

/* An answer buffer counts against limits.max_memory while it is held. */
static void attempt_charge(struct attempt *a, size_t n)
{
    a->mem += n;
    mem_add(a->p->r->w, n);
}

static void attempt_resp_reset(struct attempt *a)
{
    mem_sub(a->p->r->w, a->mem);
    a->mem = 0;
    buf_reset(&a->resp);
}

static void proxy_free(struct proxy *p)
{
    struct worker *w = p->r->w;
    slot_give(w);
    ev_timer_stop(w->loop, &p->backoff);
    hedge_end(p);
    for (unsigned i = 0; i < p->nslots; i++) {
        struct attempt *a = &p->slots[i];
        if (a->codec.ops)
            codec_free(&a->codec);
        sse_free(&a->sse);
        mem_sub(w, a->mem);
        buf_free(&a->resp);
        buf_free(&a->sent);
    }
    buf_free(&p->frames);
    free(p->uerr);
    free(p);
}

/* The upstream error's fields, allocated on first use; NULL when memory ran out. */
static struct provider_error *uerr_get(struct proxy *p)
{
    if (!p->uerr)
        p->uerr = calloc(1, sizeof *p->uerr);
    return p->uerr;
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

/* Attempts a request may run at once: hedges need a slot each, other models only one. */
static unsigned proxy_slots(const struct request *r, const struct conf_model *m)
{
    return m->hedge_after_ms && !r->no_retry ? 1 + m->hedge_max : 1;
}

static int proxy_begin(struct request *r, const struct conf_model *m)
{
    unsigned nslots = proxy_slots(r, m);
    struct proxy *p = calloc(1, sizeof *p + nslots * sizeof p->slots[0]);
    if (!p) {
        __atomic_sub_fetch(&r->w->srv->inflight_slots, 1, __ATOMIC_SEQ_CST);
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return -1;
    }
    p->r = r;
    p->model = m;
    ev_timer_init(&p->backoff, on_backoff, 0., 0.);
    p->backoff.data = p;
    p->nslots = nslots;
    for (unsigned i = 0; i < p->nslots; i++)
        p->slots[i].p = p;
    hedge_init(p);
    p->norder = route_order(m, &r->w->rng, p->order);
    if (only_capable(p) < 0) {
        __atomic_sub_fetch(&r->w->srv->inflight_slots, 1, __ATOMIC_SEQ_CST);    /* its slot */
        free(p);
        return -1;
    }
    p->retry_after_ms = -1;
    p->fail_status = 503;
    p->fail_type = "upstream_error";
    p->fail_code = "no_healthy_upstream";
    /* fail_msg stays empty until a failure says more; give_up words the default */
    r->proxy = p;
    r->w->inflight++;           /* the process-wide slot was taken by the caller */
    attempt(p);
    return 0;
}

int proxy_start(struct request *r, const struct conf_model *m)
{
    struct worker *w = r->w;
    struct server *s = w->srv;
    const struct conf_limits *l = &w->conf->limits;
    if (!w->queue_head && slot_take(s, l->max_inflight))
        return proxy_begin(r, m);
    if (__atomic_add_fetch(&s->queued_total, 1, __ATOMIC_SEQ_CST) > l->queue) {
        __atomic_sub_fetch(&s->queued_total, 1, __ATOMIC_SEQ_CST);
        r->retry_after_s = 1;
        request_fail(r, 503, "server_error", "overloaded",
                     NULL, "too many requests in flight and the queue is full; retry shortly",
                     OUTCOME_REJECTED);
        return -1;
    }
    r->queued = true;
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
}

/* Before the loop polls: hand freed slots to queued requests in order. */
static void on_admit(struct ev_loop *loop, ev_prepare *pw, int revents)
{
    struct worker *w = pw->data;
    while (w->queue_head && slot_take(w->srv, w->conf->limits.max_inflight)) {
        struct request *r = w->queue_head;
        const struct conf_model *m = r->qmodel;
        proxy_unqueue(r);
        proxy_begin(r, m);
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

/* The attempt that answered is charged to the request (cost_charge): its usage, or an
 * estimate when it gave none. */
static void charge(struct attempt *a)
{
    METRIC_ADD(a->p->r->w->m.usage_invalid, a->codec.usage_invalid);
    cost_charge(a->p->r, &a->codec.usage, a->target->price, a->sent_bytes, a->events);
}

/* Ends a's span (when traced) with what is known of the attempt on target t. */
static void span_end(struct attempt *a, const struct conf_target *t, long status,
                     const char *error, const char *event)
{
    if (!a->span.active)
        return;
    struct trace_attempt_info in;
    trace_attempt_info_fill(&in, a->p->r, t, &a->codec, &a->resp, &a->sent);
    in.attempt = a->number;
    in.status = status;
    if (status < 200 || status >= 300)
        in.answer = NULL;   /* an upstream's error body may reflect its secrets: never exported */
    in.error = error;
    in.event = event;
    trace_attempt_end(a->p->r, &a->span, &in);
}

void proxy_attempt_cancel(struct attempt *a, enum abort_reason why)
{
    struct worker *w = a->p->r->w;
    /* an answer already under way is billed by the provider whether or not we read it all */
    if (a->status >= 200 && a->status < 300)
        charge(a);
    span_end(a, a->target, a->status, NULL, trace_abort_event(why));
    call_cancel(a->call);
    a->call = NULL;
    a->p->running--;
    /* the upstream was working until now: the access log's upstream_ms says so */
    a->p->r->upstream_ms += (ev_time() - a->started) * 1000.0;
    METRIC_INC(w->m.aborted[why]);
    METRIC_DEC(w->m.upstream_inflight);
    health_inflight_add(a->target->health, -1);
    if (a->probe)
        health_release_probe(a->target->health);   /* an abandoned probe must not block */
    if (a->hedge)
        hedge_release(a);
}

void proxy_cancel(struct proxy *p, enum abort_reason why)
{
    for (unsigned i = 0; i < p->nslots; i++)
        if (p->slots[i].call)
            proxy_attempt_cancel(&p->slots[i], why);
    proxy_free(p);
}

void proxy_resume(struct proxy *p)
{
    if (p->paused && p->winner && p->winner->call) {
        p->paused = false;
        call_resume(p->winner->call);  /* may deliver the held bytes right away, via on_data */
    }
}

/* No attempt left: report the last failure (a relayed upstream error, or the gateway's). */
static void give_up(struct proxy *p)
{
    struct request *r = p->r;
    r->retry_after_s = p->fail_status == 429 || p->fail_status == 503
                           ? (p->retry_after_ms > 0 ? (p->retry_after_ms + 999) / 1000 : 1)
                           : -1;
    if (p->all_open_retry_s > 0 && p->fail_status == 503)
        r->retry_after_s = p->all_open_retry_s;
    if (p->fail_upstream && r->error_shape != ERROR_SHAPE_OPENAI) {
        /* Relayed in the client's shape: the message kept, the type named after the status. */
        request_fail(r, p->fail_status, "upstream_error", NULL, NULL, p->uerr->message,
                     OUTCOME_UPSTREAM_ERROR);
        return;
    }
    if (p->fail_upstream) {     /* four fields re-encoded; request_fail removes any secret */
        const struct provider_error *e = p->uerr;
        request_fail(r, p->fail_status, e->type, e->code[0] ? e->code : NULL,
                     e->param[0] ? e->param : NULL, e->message, OUTCOME_UPSTREAM_ERROR);
        return;
    }
    if (!p->fail_msg[0])
        snprintf(p->fail_msg, sizeof p->fail_msg, "no healthy upstream for model %s",
                 p->model->name);
    request_fail(r, p->fail_status, p->fail_type, p->fail_code,
                 p->fail_param[0] ? p->fail_param : NULL, p->fail_msg,
                 p->fail_status == 400 ? OUTCOME_REJECTED : OUTCOME_UPSTREAM_ERROR);
}

static struct curl_slist *build_headers(struct attempt *a, const struct conf_upstream *up)
{
    struct request *r = a->p->r;
    char line[160] = "X-Request-Id: ";
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, r->stream ? "Accept: text/event-stream" : "Accept: application/json");
    h = curl_slist_append(h, "Expect:");     /* no 100-continue round trip upstream */
    size_t idn = strnlen(r->id, sizeof line - 15);      /* (no printf per request) */
    memcpy(line + 14, r->id, idn);
    line[14 + idn] = '\0';
    h = curl_slist_append(h, line);
    if (trace_attempt_begin(r, &a->span, line, sizeof line)) {
        h = curl_slist_append(h, line);
        struct buf ts = BUF_INIT;
        if (r->trace->tracestate && buf_printf(&ts, "tracestate: %s", r->trace->tracestate) == 0)
            h = curl_slist_append(h, ts.data);
        buf_free(&ts);
    }
    const struct buf *fwd = &r->fwd_headers;
    for (size_t off = 0; off < fwd->len; off += strlen(fwd->data + off) + 1)
        h = curl_slist_append(h, fwd->data + off);
    for (size_t i = 0; i < up->nheaders; i++) {
        struct buf b = BUF_INIT;
        buf_printf(&b, "%s: %s", up->headers[i].name, up->headers[i].value);
        h = curl_slist_append(h, b.data);
        buf_free(&b);
    }
    return a->codec.ops->auth(&a->codec, up, h);
}

/* A request the target's codec can't express: a client error, reported if nothing else works. */
static void unsupported(struct proxy *p, const char *path, int rc, const char *err,
                        const char *param)
{
    p->fail_status = rc == CODEC_OVER_BUDGET ? 413 : 400;
    p->fail_type = "invalid_request_error";
    p->fail_code = !path ? "unsupported_endpoint" : rc == CODEC_OVER_BUDGET
                 ? "body_too_complex" : "unsupported_request";
    snprintf(p->fail_param, sizeof p->fail_param, "%s", param);
    snprintf(p->fail_msg, sizeof p->fail_msg, "%s",
             path ? err : "this endpoint is not supported by the model's upstream");
}

static void fill_spec(struct call_spec *spec, const struct request *r,
                      const struct conf_upstream *up)
{
    spec->connect_timeout_ms = up->connect_ms ? up->connect_ms : r->conf->timeouts.connect_ms;
    spec->timeout_ms = up->timeout_ms;
    spec->first_byte_timeout_ms = up->first_byte_ms;
    spec->idle_timeout_ms = up->idle_ms;
    spec->max_response_bytes = up->max_response_bytes;    /* streamed or not, any status */
    spec->ca_file = up->ca_file;
    spec->tls_verify = up->tls_verify;
    spec->http = up->http == CONF_HTTP_2 ? CALL_HTTP_2
               : up->http == CONF_HTTP_1_1 ? CALL_HTTP_1_1 : CALL_HTTP_AUTO;
    unsigned nw = r->w->srv->nworkers;
    spec->gate_key = up->name;
    spec->gate_cap = (up->max_connections + nw - 1) / nw;
}

int proxy_launch(struct proxy *p, struct attempt *a, const struct conf_target *t, bool probe)
{
    struct request *r = p->r;
    const struct conf_upstream *up = t->upstream;
    const char *model = health_target_model(p->model, t);
    if (a->codec.ops)
        codec_free(&a->codec);
    codec_init(&a->codec, up->provider, r->ep, model, (long)time(NULL));
    a->codec.anthropic_version = r->anthropic_version[0] ? r->anthropic_version : NULL;
    a->codec.strip_usage = r->stream && (r->ep == EP_CHAT || r->ep == EP_COMPLETIONS) &&
                           !openai_stream_usage_asked(r->body_raw.data, r->body_raw.len);
    a->events = 0;
    const char *path = a->codec.ops->path(r->ep);
    char err[200] = "", param[64] = "";
    struct buf body = BUF_INIT;
    int rc = path ? a->codec.ops->encode(r->ep, NULL, &r->body_raw, model,
                                         p->model->default_max_tokens, &body, err, sizeof err,
                                         param, sizeof param) : -1;
    if (rc < 0) {
        buf_free(&body);
        unsupported(p, path, rc, err, param);
        return -1;
    }
    struct call_spec spec = {0};
    struct buf url = BUF_INIT;
    buf_puts(&url, up->base_url);
    buf_puts(&url, path);
    spec.url = url.data;
    buf_reset(&a->sent);
    if (r->trace && r->trace->sampled && r->conf->tracing.capture_content)
        buf_append(&a->sent, body.data, body.len);
    spec.body_len = a->sent_bytes = body.len;
    spec.body = buf_steal(&body);
    spec.headers = build_headers(a, up);
    fill_spec(&spec, r, up);
    a->call = call_start(r->w->engine, &spec, &proxy_call_ops, a);
    buf_free(&url);
    if (!a->call) {
        span_end(a, t, 0, "start_failed", NULL);
        return -1;
    }
    a->target = t;
    a->probe = probe;
    a->hedge = false;
    a->status = 0;
    a->retry_after_ms = -1;
    a->number = ++r->attempts;
    a->started = ev_time();
    attempt_resp_reset(a);
    sse_free(&a->sse);
    sse_init(&a->sse, SSE_MAX_EVENT);
    p->running++;
    r->upstream = up->name;
    a->pair = r->label_pair = metrics_labels_pair(r->conf, p->model,
                                                  (size_t)(t - p->model->targets));
    health_inflight_add(t->health, 1);
    metrics_labels_event(r->conf, r->w->id, a->pair, PAIR_ATTEMPT);
    METRIC_INC(r->w->m.upstream_inflight);
    return 0;
}

static struct attempt *free_slot(struct proxy *p)
{
    for (unsigned i = 0; i < p->nslots; i++)
        if (!p->slots[i].call)
            return &p->slots[i];
    return NULL;
}

/* The next target of the walk the breaker admits, launched; else the last failure reported.
 * When every target was skipped as open, the 503 carries the shortest remaining cooldown. */
static void attempt(struct proxy *p)
{
    struct request *r = p->r;
    int64_t now = breaker_now_ms();
    bool tried = false;
    for (; p->pos < p->norder; p->pos++, p->retry = 0) {
        const struct conf_target *t = &p->model->targets[p->order[p->pos]];
        bool probe = false;
        if (!health_admit(t->health, now, &probe))
            continue;
        tried = true;
        struct attempt *a = free_slot(p);
        int left = r->label_pair;
        if (a && proxy_launch(p, a, t, probe) == 0) {
            if (p->pos > 0 && p->retry == 0 && r->attempts > 1)     /* counted on the one left */
                metrics_labels_event(r->conf, r->w->id, left, PAIR_FALLBACK);
            hedge_arm(p);
            return;
        }
        if (probe)
            health_release_probe(t->health);
    }
    if (!tried && r->attempts == 0)
        p->all_open_retry_s = breaker_retry_after_s(p->model, now);
    give_up(p);
}

static void on_head(void *ud, long status, int64_t retry_after_ms)
{
    struct attempt *a = ud;
    a->status = status;
    a->retry_after_ms = retry_after_ms;
    if (status >= 200 && status < 300 && !a->p->winner)
        hedge_won(a->p, a);
}

static int on_sse_event(void *ud, const char *ev, size_t elen, const char *data, size_t dlen)
{
    struct attempt *a = ud;
    struct proxy *p = a->p;
    a->events++;
    if (a->codec.ops->decode_event(&a->codec, ev, elen, data, dlen, &p->frames) < 0) {
        p->stream_failed = true;
        return -1;
    }
    return 0;
}

/* Relays one upstream read of a stream. Returns false when the request ended inside. */
static bool relay_stream(struct attempt *a, const char *data, size_t n)
{
    struct proxy *p = a->p;
    struct request *r = p->r;
    buf_reset(&p->frames);
    int rc = sse_feed(&a->sse, data, n, on_sse_event, a);
    if (p->frames.len && !p->stream_failed) {
        if (!r->streaming) {
            hedge_stop(p);      /* a stream byte is out: no hedge may start any more */
            request_stream_start(r, 200);
        }
        if (request_stream_data(r, p->frames.data, p->frames.len))
            p->paused = true;
    }
    if (rc < 0 || p->stream_failed) {
        const char *msg = "upstream stream could not be decoded";
        json_t *e = p->stream_failed ? json_valid_load(p->frames.data, p->frames.len, 0, NULL)
                                     : NULL;
        json_t *m = json_object_get(json_object_get(e, "error"), "message");
        struct provider_error *ue = json_is_string(m) ? uerr_get(p) : NULL;
        if (ue) {       /* cut like any upstream message; secrets go later */
            provider_error_cut(json_string_value(m), ue->message, sizeof ue->message);
            msg = ue->message;
        }
        request_fail(r, 502, "upstream_error", "upstream_stream_error", NULL, msg,
                     OUTCOME_UPSTREAM_ERROR);
        json_decref(e);
        return false;
    }
    return true;
}

static enum call_verdict on_data(void *ud, const char *data, size_t n)
{
    struct attempt *a = ud;
    struct proxy *p = a->p;
    if (p->winner && a != p->winner)
        return CALL_CONTINUE;   /* a loser's bytes go nowhere (it is being cancelled) */
    if (p->paused || gather_item_blocked(p->r)) {
        p->paused = true;       /* resumed by request_drained */
        return CALL_PAUSE;
    }
    if (p->r->stream && a->status >= 200 && a->status < 300) {
        relay_stream(a, data, n);   /* the call was cancelled if the request ended */
        return CALL_CONTINUE;
    }
    /* A 2xx answer is bounded by max_response_bytes (the engine's cap); an error answer is
     * only read for its message: what passes PROVIDER_ERROR_BODY_MAX is dropped. */
    bool ok = a->status >= 200 && a->status < 300;
    size_t room = ok ? n : a->resp.len < PROVIDER_ERROR_BODY_MAX
                           ? PROVIDER_ERROR_BODY_MAX - a->resp.len : 0;
    if (buf_append(&a->resp, data, n < room ? n : room) == 0)
        attempt_charge(a, n < room ? n : room);
    return CALL_CONTINUE;
}

static void record_failure(struct proxy *p, struct attempt *a, enum call_result result,
                           long status, const char *detail)
{
    const char *up = a->target->upstream->name;
    p->fail_type = "upstream_error";
    p->fail_param[0] = '\0';
    p->retry_after_ms = a->retry_after_ms;
    p->fail_upstream = false;
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
            /* The upstream's own answer, with its status: only message (cut), type, code and
             * param are re-encoded, and request_fail removes any upstream secret from them. */
            json_t *doc = a->codec.ops->decode_error(status, a->resp.data, a->resp.len);
            struct provider_error *ue = uerr_get(p);
            if (ue)
                provider_error_take(doc, ue);
            json_decref(doc);
            if (ue) {
                p->fail_status = (int)status;
                p->fail_upstream = true;
                return;
            }
        }
        p->fail_status = 502;
        p->fail_code = status >= 500 ? "upstream_status" : "upstream_bad_response";
        snprintf(p->fail_msg, sizeof p->fail_msg, "upstream %s answered %s (status %ld)", up,
                 status >= 500 ? "with an error" : "with an unreadable body", status);
        return;
    case CALL_TIMEOUT:
    case CALL_FIRST_BYTE_TIMEOUT:
    case CALL_IDLE_TIMEOUT:
        p->fail_status = 504;
        p->fail_type = "timeout_error";
        p->fail_code = result == CALL_FIRST_BYTE_TIMEOUT ? "upstream_first_byte_timeout"
                     : result == CALL_IDLE_TIMEOUT ? "upstream_idle_timeout"
                     : "upstream_timeout";
        if (result != CALL_TIMEOUT)
            p->r->phase_timeout = p->fail_code;
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
static void log_attempt_failure(struct attempt *a, enum call_result result, long status,
                                const char *detail, const char *next, uint64_t wait_ms)
{
    struct request *r = a->p->r;
    uint64_t suppressed;
    if (!log_enabled(LOG_WARN) ||
        !metrics_labels_log_allowed(r->conf, a->pair, (uint64_t)(ev_time() * 1000), &suppressed))
        return;
    char what[240], st[16], wait[24], held[24], att[12];
    if (result == CALL_OK && status >= 300)
        snprintf(what, sizeof what, "status %ld", status);
    else
        snprintf(what, sizeof what, "%s", detail ? detail : "error");
    struct buf clean = BUF_INIT;    /* curl's words may quote a URL: no secret in the log */
    if (buf_puts(&clean, what) == 0 && conf_redact(r->conf, &clean) == 0)
        snprintf(what, sizeof what, "%s", clean.data);
    else
        snprintf(what, sizeof what, "error");
    buf_free(&clean);
    snprintf(st, sizeof st, "%ld", status);
    snprintf(wait, sizeof wait, "%lu", (unsigned long)wait_ms);
    snprintf(held, sizeof held, "%lu", (unsigned long)suppressed);
    snprintf(att, sizeof att, "%u", a->number);
    log_fields(LOG_WARN, "upstream attempt failed", "request_id", r->id,
               "upstream", a->target->upstream->name, "model", a->p->model->name,
               "upstream_model", health_target_model(a->p->model, a->target), "#attempt", att,
               "error", what, "#status", st, "next", next, "#retry_in_ms", wait,
               "#suppressed", held, (char *)NULL);
}

/* A complete, successful, non-streamed answer, already decoded into out (empty: as it came). */
static void deliver_body(struct attempt *a, struct buf *out)
{
    struct request *r = a->p->r;
    charge(a);
    struct buf *body = out->len ? out : &a->resp;
    request_respond(r, (int)a->status, body->data, body->len);
    request_end(r, OUTCOME_COMPLETED);
}

/* The stream ended: complete, cut by the upstream, or cut by the idle timeout (an error event
 * naming it, then the body ends short, as for any mid-stream failure). */
static void finish_stream(struct attempt *a, enum call_result result, long status,
                          const char *detail)
{
    struct request *r = a->p->r;
    charge(a);
    cost_stream_comment(r);
    if (result == CALL_OK && a->codec.stream_done) {
        request_stream_end(r, true);
        request_end(r, OUTCOME_COMPLETED);
        return;
    }
    metrics_labels_event(r->conf, r->w->id, a->pair, PAIR_FAILURE);
    log_attempt_failure(a, result, status, result == CALL_OK ? "stream ended early" : detail,
                        "give_up (the stream had started)", 0);
    if (result == CALL_TOO_LARGE) {
        request_fail(r, 502, "upstream_error", "upstream_response_too_large", NULL,
                     "the upstream's stream exceeded max_response_bytes", OUTCOME_UPSTREAM_ERROR);
        return;
    }
    if (result == CALL_IDLE_TIMEOUT) {
        r->phase_timeout = "upstream_idle_timeout";
        request_fail(r, 504, "timeout_error", "upstream_idle_timeout", NULL,
                     "upstream sent nothing for longer than its idle timeout mid-stream",
                     OUTCOME_UPSTREAM_ERROR);
        return;
    }
    request_fail(r, 502, "upstream_error", "upstream_stream_truncated", NULL,
                 result == CALL_OK ? "upstream ended the stream early"
                                   : "upstream connection lost mid-stream",
                 OUTCOME_UPSTREAM_ERROR);
}

/* After a failed attempt: the same target again after a backoff, the next target, or done. */
static void retry_or_give_up(struct attempt *a, enum call_result result, long status,
                             const char *detail)
{
    struct proxy *p = a->p;
    struct request *r = p->r;
    if (r->no_retry || !route_retryable(result, status)) {
        log_attempt_failure(a, result, status, detail, r->no_retry ? "give_up (no-retry asked)"
                                                   : "give_up (not retryable)", 0);
        give_up(p);
        return;
    }
    if (p->retry < p->model->retries) {
        uint64_t wait = route_backoff_ms(p->model, p->retry, p->retry_after_ms, &r->w->rng);
        double at = ev_now(r->w->loop) + (double)wait / 1000.0;
        if (r->deadline_at && at >= r->deadline_at) {
            log_attempt_failure(a, result, status, detail, "give_up (no time for a retry)", 0);
            give_up(p);     /* a retry must fit inside the deadline, never extend it */
            return;
        }
        log_attempt_failure(a, result, status, detail, "retry", wait);
        p->retry++;
        metrics_labels_event(r->conf, r->w->id, a->pair, PAIR_RETRY);
        ev_timer_set(&p->backoff, (double)wait / 1000.0, 0.);
        ev_timer_start(r->w->loop, &p->backoff);
        return;
    }
    log_attempt_failure(a, result, status, detail, p->pos + 1 < p->norder
                        ? "fallback (next target)" : "give_up (no target left)", 0);
    p->pos++;
    p->retry = 0;
    attempt(p);
}

/* The attempt's call is over: give back what it held and tell the breaker how it went. */
static void attempt_ended(struct attempt *a, enum call_result result, long status)
{
    struct proxy *p = a->p;
    struct worker *w = p->r->w;
    double ms = (ev_time() - a->started) * 1000.0;
    a->call = NULL;
    p->running--;
    health_inflight_add(a->target->health, -1);
    METRIC_DEC(w->m.upstream_inflight);
    metrics_labels_attempt_time(p->r->conf, w->id, a->pair, ms / 1000.0);
    p->r->upstream_ms += ms;
    breaker_report(p->r->conf, a->target, health_verdict(result, status), a->probe, p->r->id);
    if (result == CALL_FIRST_BYTE_TIMEOUT || result == CALL_IDLE_TIMEOUT)
        METRIC_INC(w->m.phase_timeouts[result == CALL_IDLE_TIMEOUT ? PHASE_IDLE
                                                                   : PHASE_FIRST_BYTE]);
    if (a->hedge && a->hedge_outcome != HEDGE_WON)
        a->hedge_outcome = HEDGE_FAILED;    /* it ended by itself, without winning */
    if (a->hedge)
        hedge_release(a);
}

static void on_done(void *ud, enum call_result result, long status, const char *detail)
{
    struct attempt *a = ud;
    struct proxy *p = a->p;
    struct request *r = p->r;
    struct buf out = BUF_INIT;
    bool ok = result == CALL_OK && status >= 200 && status < 300;
    /* A 2xx that is garbage, or a "stream" without a single event, is a broken target: decided
     * before the breaker hears of it. */
    const char *broken = NULL;
    if (ok && !r->stream && a->codec.ops->decode_body(&a->codec, r->ep, a->resp.data,
                                                      a->resp.len, &out) < 0)
        broken = "the answer is not valid JSON";
    else if (ok && r->stream && !r->streaming)
        broken = "no stream events in the answer";
    if (broken) {
        ok = false;
        result = CALL_ERROR;
        detail = broken;
    }
    char code[16];
    const char *etype = broken ? "invalid_response" : NULL;
    if (!ok && !broken) {       /* the status in text only for a failure's error type */
        snprintf(code, sizeof code, "%ld", status);
        etype = trace_error_type(result, code);
    } else if (ok && a == p->winner && r->streaming && !a->codec.stream_done) {
        etype = "stream_truncated";
    }
    span_end(a, a->target, status, etype, NULL);
    attempt_ended(a, result, status);
    if (ok && !r->stream) {
        deliver_body(a, &out);
        buf_free(&out);
        return;
    }
    buf_free(&out);
    if (a == p->winner && r->streaming) {
        finish_stream(a, result, status, detail);
        return;
    }
    if (a == p->winner)
        p->winner = NULL;       /* its answer was unusable: the walk goes on */
    metrics_labels_event(r->conf, r->w->id, a->pair, PAIR_FAILURE);
    record_failure(p, a, result, status, detail);
    if (broken)
        p->fail_code = "upstream_invalid_response";
    if (p->running) {   /* a failing attempt never cancels the others: one may still answer */
        log_attempt_failure(a, result, status, detail, "wait (another attempt is running)", 0);
        return;
    }
    retry_or_give_up(a, result, status, detail);
}
