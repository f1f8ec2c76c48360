/* request: lifecycle of one unit of client-visible work — deadline, single end, accounting. */
#include "daemon/request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/budget.h"
#include "daemon/cost.h"
#include "daemon/gather.h"
#include "daemon/jobs.h"
#include "daemon/keylimit.h"
#include "daemon/metrics_labels.h"
#include "daemon/proxy.h"
#include "daemon/trace.h"
#include "daemon/worker.h"

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents);

struct request *request_new(struct worker *w, struct conf *conf, const struct sink_ops *sink,
                            void *owner, enum route_id route)
{
    struct request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->w = w;
    r->max_tokens = -1;
    r->conf = conf_ref(conf);
    r->sink = sink;
    r->owner = owner;
    r->route = route;
    r->started = ev_now(w->loop);
    r->t0 = ev_time();
    r->retry_after_s = -1;
    r->label_pair = -1;
    r->hedge_ms = -1;
    ev_timer_init(&r->deadline, on_deadline, 0., 0.);
    r->deadline.data = r;
    METRIC_INC(w->m.inflight_requests);
    return r;
}

void request_set_deadline(struct request *r, uint64_t ms)
{
    ev_timer_stop(r->w->loop, &r->deadline);
    if (!ms) {
        r->deadline_at = 0;
        return;
    }
    r->deadline_at = r->started + (double)ms / 1000.0;
    double left = r->deadline_at - ev_now(r->w->loop);
    ev_timer_set(&r->deadline, left > 0 ? left : 0., 0.);
    ev_timer_start(r->w->loop, &r->deadline);
}

void request_set_client(struct request *r, const char *client, const char *ua, size_t ualen)
{
    size_t n = client ? strnlen(client, sizeof r->client - 1) : 0;
    memcpy(r->client, client ? client : "", n);
    r->client[n] = '\0';
    free(r->user_agent);
    r->user_agent = ua ? strndup(ua, ualen < REQUEST_UA_MAX ? ualen : REQUEST_UA_MAX) : NULL;
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct request *r = t->data;
    char msg[96];
    snprintf(msg, sizeof msg, "request deadline of %.0f ms exceeded",
             (r->deadline_at - r->started) * 1000.0);
    request_fail(r, 504, "timeout_error", "deadline_exceeded", NULL, msg, OUTCOME_DEADLINE);
}

static enum abort_reason abort_reason_of(enum outcome o)
{
    switch (o) {
    case OUTCOME_DEADLINE: return ABORT_DEADLINE;
    case OUTCOME_CLIENT_DISCONNECT: return ABORT_CLIENT_DISCONNECT;
    case OUTCOME_SHUTDOWN: return ABORT_SHUTDOWN;
    default: return ABORT_CANCELLED;
    }
}

static void access_log(const struct request *r, double elapsed_ms)
{
    char status[8], bytes[24], ms[24], ums[24], attempts[12], tokens[24], winner[12];
    char cost[32];
    snprintf(status, sizeof status, "%d", r->status);
    snprintf(bytes, sizeof bytes, "%lu", (unsigned long)r->bytes_out);
    snprintf(ms, sizeof ms, "%.3f", elapsed_ms);
    snprintf(ums, sizeof ums, "%.3f", r->upstream_ms);
    snprintf(attempts, sizeof attempts, "%u", r->attempts);
    snprintf(tokens, sizeof tokens, "%ld", usage_total(&r->usage));
    snprintf(winner, sizeof winner, "%u", r->hedge_winner);
    cost_format(cost, sizeof cost, r->priced ? r->cost_usd : -1);
    log_fields(LOG_INFO, "access", "request_id", r->id, "client", r->client[0] ? r->client : "-",
               "user_agent", r->user_agent ? r->user_agent : "-",
               "key", r->key ? r->key->name : "-",
               "method", r->method, "path", r->path, "model", r->model ? r->model : "-",
               "upstream", r->upstream ? r->upstream : "-", "#status", status, "#bytes", bytes,
               "#latency_ms", ms, "#upstream_ms", ums, "#attempts", attempts,
               "#tokens", tokens, r->priced ? "#cost_usd" : "cost_usd", cost,
               "usage", r->usage_estimated ? "estimated" : r->usage.seen ? "reported" : "-",
               "outcome", outcome_name(r->outcome),
               "#hedged", r->hedged ? "true" : "false", "#hedge_winner", r->hedged ? winner : "0",
               "phase_timeout", r->phase_timeout ? r->phase_timeout : "-", (char *)NULL);
}

static void account(struct request *r)
{
    struct metrics *m = &r->w->m;
    double elapsed = ev_time() - r->t0;    /* ev_now is per loop turn: too coarse here */
    METRIC_INC(m->outcomes[r->outcome]);
    METRIC_INC(m->requests[r->route][metrics_status_slot(r->status)]);
    METRIC_DEC(m->inflight_requests);
    metrics_observe(&m->request_latency, elapsed);
    metrics_labels_request(r->conf, r->w->id, r->cmodel, r->label_pair, r->outcome, elapsed);
    metrics_labels_usage(r->conf, r->w->id, r->key, r->cmodel, &r->usage, r->cost_usd,
                         r->usage_estimated);
    if (r->conf->log.access)
        access_log(r, elapsed * 1000.0);
}

void request_end(struct request *r, enum outcome o)
{
    if (r->ended)
        return;
    r->ended = true;
    r->outcome = o;
    ev_timer_stop(r->w->loop, &r->deadline);
    proxy_unqueue(r);
    keylimit_release(r);
    if (r->proxy) {
        proxy_cancel(r->proxy, abort_reason_of(o));
        r->proxy = NULL;
    }
    budget_end(r);                      /* after the cancel: its charge is in the cost */
    if (r->gather)
        gather_cancel(r->gather, o);
    if (r->jobs_pending)
        jobs_pending_detach(r);
    account(r);
    trace_end(r);
    r->sink->ended(r);
}

void request_free(struct request *r)
{
    if (!r)
        return;
    if (!r->ended)
        request_end(r, OUTCOME_CANCELLED);
    if (r->gather)
        gather_free(r->gather);
    mem_sub(r->w, r->mem);
    conf_unref(r->conf);
    buf_free(&r->body_raw);
    buf_free(&r->fwd_headers);
    free(r->model);
    free(r->user_agent);
    free(r);
}

void mem_add(struct worker *w, size_t n)
{
    __atomic_fetch_add(&w->srv->mem_used, (uint64_t)n, __ATOMIC_RELAXED);
}

void mem_sub(struct worker *w, size_t n)
{
    __atomic_fetch_sub(&w->srv->mem_used, (uint64_t)n, __ATOMIC_RELAXED);
}

void request_charge(struct request *r, size_t n)
{
    r->mem += n;
    mem_add(r->w, n);
}

bool request_mem_admits(const struct request *r, size_t n)
{
    uint64_t used = __atomic_load_n(&r->w->srv->mem_used, __ATOMIC_RELAXED);
    return used + n <= r->conf->limits.max_memory;
}

void request_respond(struct request *r, int status, const char *body, size_t len)
{
    r->responded = true;
    r->status = status;
    r->bytes_out += len;
    r->sink->respond(r, status, body, len);
}

void request_stream_start(struct request *r, int status)
{
    r->responded = r->streaming = true;
    r->status = status;
    r->sink->stream_start(r, status);
}

bool request_stream_data(struct request *r, const char *p, size_t n)
{
    r->bytes_out += n;
    return r->sink->stream_data(r, p, n);
}

void request_stream_end(struct request *r, bool complete)
{
    r->sink->stream_end(r, complete);
}

/* The error object in the request's shape. Anthropic's has no param, so the field at fault
 * leads the message, the way Anthropic words its own ("max_tokens: Field required"). */
static json_t *error_object(const struct request *r, int status, const char *type,
                            const char *code, const char *param, const char *message)
{
    if (r->error_shape != ERROR_SHAPE_ANTHROPIC)
        return openai_error(message, type, param, code);
    if (!param || !*param)
        return anthropic_error(status, message);
    struct buf m = BUF_INIT;
    json_t *err = buf_printf(&m, "%s: %s", param, message) == 0 ? anthropic_error(status, m.data)
                                                                 : NULL;
    buf_free(&m);
    return err;
}

void request_fail(struct request *r, int status, const char *type, const char *code,
                  const char *param, const char *message, enum outcome o)
{
    if (r->ended)
        return;
    bool anthropic = r->error_shape == ERROR_SHAPE_ANTHROPIC;
    json_t *err = error_object(r, status, type, code, param, message);
    char *text = err ? json_dumps(err, JSON_COMPACT) : NULL;
    struct buf clean = BUF_INIT;        /* no upstream secret leaves, whoever wrote the text */
    if (!text || buf_puts(&clean, text) < 0 || conf_redact(r->conf, &clean) < 0)
        buf_reset(&clean);
    const char *body = clean.len ? clean.data : "{\"error\":{\"message\":\"out of memory\"}}";
    if (r->streaming && r->gather && gather_stream_fail(r->gather, body)) {
        request_stream_end(r, true);
    } else if (r->streaming && r->content_type) {
        request_stream_end(r, false);   /* a JSON document being written: cut short */
    } else if (r->streaming) {
        /* Mid-stream: the error travels as an event, then the body is cut short on purpose. */
        struct buf ev = BUF_INIT;
        buf_printf(&ev, "%sdata: %s\n\n", anthropic ? "event: error\n" : "", body);
        request_stream_data(r, ev.data, ev.len);
        request_stream_end(r, false);
        buf_free(&ev);
    } else if (!r->responded) {
        request_respond(r, status, body, strlen(body));
    }
    free(text);
    buf_free(&clean);
    json_decref(err);
    request_end(r, o);
}

void request_reply_json(struct request *r, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) {
        request_fail(r, 500, "server_error", NULL, NULL, "out of memory", OUTCOME_REJECTED);
        return;
    }
    request_respond(r, status, text, strlen(text));
    free(text);
    request_end(r, OUTCOME_COMPLETED);
}

void request_drained(struct request *r)
{
    if (r->proxy)
        proxy_resume(r->proxy);
    else if (r->gather)
        gather_drained(r->gather);
}

void request_make_id(char *out, uint32_t *rng)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    memcpy(out, "req_", 4);
    for (int i = 0; i < 24; i++)
        out[4 + i] = alphabet[route_rand(rng) % 36];
    out[28] = '\0';
}

bool request_id_acceptable(const char *p, size_t n)
{
    if (n == 0 || n > REQUEST_ID_MAX - 8)   /* room for a gather suffix ".NNNN" */
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}
