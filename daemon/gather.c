/* gather: POST /v1/gather. The parent request owns one child request per item; children run
 * through the same router and proxy as single requests, at most max_concurrency at once.
 * Everything ends through request_end: ending the parent ends every child still running. */
#include "daemon/gather.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "daemon/cost.h"
#include "daemon/router.h"
#include "daemon/trace.h"
#include "daemon/worker.h"

#define GATHER_TRIM_ITEMS 256

enum gather_mode { MODE_ALL, MODE_FIRST };

struct gather_item {
    struct request *req;        /* NULL until started */
    json_t *body;               /* until started */
    enum endpoint ep;
    struct buf entry;           /* {"index","status","response"|"error"} as JSON text, once
                                 * done: answers are spliced in as they came, never re-parsed */
    size_t value_off, value_len;    /* the response or error object inside entry */
    int status;
    bool done;
};

struct gather {
    struct request *parent;
    struct gather_item *items;
    size_t n, next, ndone, succeeded, failed;
    unsigned running, max_concurrency;
    enum gather_mode mode;
    bool return_exceptions, stream, advancing, finished;
    bool timed;                 /* the timeout timer is set */
    uint64_t item_timeout_ms;
    struct usage usage;         /* summed over the items, estimates included */
    double cost_usd;
    bool priced;                /* some item had a price */
    ev_timer timeout;           /* the gather's own timeout_ms */
    ssize_t failure;            /* index of the fail-fast failure, -1 none */
    ssize_t winner;             /* mode first: index of the winner, -1 none */
    ssize_t last_failed;        /* the item that failed last in time, -1 none */
};

static void item_respond(struct request *r, int status, const char *body, size_t len);
static void item_stream_start(struct request *r, int status) {}
static bool item_stream_data(struct request *r, const char *p, size_t n) { return false; }
static void item_stream_end(struct request *r, bool complete) {}
static void item_ended(struct request *r);
static void advance(struct gather *g);

static const struct sink_ops item_sink = {
    item_respond, item_stream_start, item_stream_data, item_stream_end, item_ended,
};

static void fail400(struct request *r, const char *param, const char *msg)
{
    request_fail(r, 400, "invalid_request_error", "invalid_gather", param, msg,
                 OUTCOME_REJECTED);
}

/* Reads an optional non-negative integer option; -1 on a wrong type (already answered). */
static int opt_uint(struct request *r, json_t *body, const char *name, uint64_t *out)
{
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s must be a non-negative integer", name);
        fail400(r, name, msg);
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int opt_bool(struct request *r, json_t *body, const char *name, bool *out)
{
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s must be a boolean", name);
        fail400(r, name, msg);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* Item shape: a chat body, or {"endpoint": "/v1/embeddings", "body": {...}}. Entries keep the
 * gather's (OpenAI) error shape whatever the item's endpoint; a /v1/messages item's response
 * is the Message. */
static int parse_item(struct request *r, json_t *it, size_t i, struct gather_item *out)
{
    char param[64], msg[160];
    if (!json_is_object(it)) {
        snprintf(param, sizeof param, "requests[%zu]", i);
        fail400(r, param, "each item must be a JSON object");
        return -1;
    }
    json_t *ep = json_object_get(it, "endpoint");
    out->ep = EP_CHAT;
    if (ep) {
        const char *e = json_string_value(ep);
        json_t *b = json_object_get(it, "body");
        if (e && strcmp(e, "/v1/embeddings") == 0)
            out->ep = EP_EMBEDDINGS;
        else if (e && strcmp(e, "/v1/completions") == 0)
            out->ep = EP_COMPLETIONS;
        else if (e && strcmp(e, "/v1/messages") == 0)
            out->ep = EP_MESSAGES;
        else if (!e || strcmp(e, "/v1/chat/completions") != 0) {
            snprintf(param, sizeof param, "requests[%zu].endpoint", i);
            fail400(r, param, "endpoint must be /v1/chat/completions, /v1/completions, "
                              "/v1/embeddings or /v1/messages");
            return -1;
        }
        if (!json_is_object(b)) {
            snprintf(param, sizeof param, "requests[%zu].body", i);
            fail400(r, param, "body must be a JSON object");
            return -1;
        }
        it = b;
    }
    json_t *stream = json_object_get(it, "stream");
    if (json_is_true(stream)) {
        snprintf(param, sizeof param, "requests[%zu].stream", i);
        snprintf(msg, sizeof msg, "item %zu asks for stream; use the gather's own stream option",
                 i);
        fail400(r, param, msg);
        return -1;
    }
    out->body = json_incref(it);
    return 0;
}

/* A misspelt option (max_concurency) would otherwise be ignored without a word, as unknown
 * config keys are not: the first unknown field is named in a 400. */
static int check_fields(struct request *r, json_t *body)
{
    static const char *const known[] = {"requests", "return_exceptions", "timeout_ms",
                                        "item_timeout_ms", "max_concurrency", "mode", "stream"};
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        size_t i = 0;
        while (i < sizeof known / sizeof *known && strcmp(key, known[i]) != 0)
            i++;
        if (i < sizeof known / sizeof *known)
            continue;
        char msg[200], param[64];
        snprintf(param, sizeof param, "%.63s", key);
        snprintf(msg, sizeof msg, "unknown gather option '%.60s' (known: requests, mode, "
                 "stream, return_exceptions, timeout_ms, item_timeout_ms, max_concurrency)", key);
        fail400(r, param, msg);
        return -1;
    }
    return 0;
}

static int parse_options(struct request *r, struct gather *g, json_t *body)
{
    const struct conf *c = r->conf;
    if (check_fields(r, body) < 0)
        return -1;
    uint64_t conc = c->gather.max_concurrency, timeout = 0, item_timeout = 0;
    if (opt_bool(r, body, "return_exceptions", &g->return_exceptions) < 0 ||
        opt_bool(r, body, "stream", &g->stream) < 0 ||
        opt_uint(r, body, "timeout_ms", &timeout) < 0 ||
        opt_uint(r, body, "item_timeout_ms", &item_timeout) < 0 ||
        opt_uint(r, body, "max_concurrency", &conc) < 0)
        return -1;
    json_t *mode = json_object_get(body, "mode");
    if (mode && !json_is_null(mode)) {
        const char *m = json_string_value(mode);
        if (!m || (strcmp(m, "all") != 0 && strcmp(m, "first") != 0)) {
            fail400(r, "mode", "mode must be \"all\" or \"first\"");
            return -1;
        }
        g->mode = strcmp(m, "first") == 0 ? MODE_FIRST : MODE_ALL;
    }
    if (conc == 0)
        conc = 1;
    g->max_concurrency = (unsigned)(conc < c->gather.max_concurrency ? conc
                                                                     : c->gather.max_concurrency);
    g->item_timeout_ms = item_timeout;
    if (timeout) {
        /* The gather's own timer reports unfinished items as 504 entries; the request deadline
         * is pushed just past it so that graceful path wins. */
        uint64_t cap = c->timeouts.max_ms;
        if (cap && timeout > cap)
            timeout = cap;
        request_set_deadline(r, timeout + 1000);
        ev_timer_set(&g->timeout, (double)timeout / 1000.0, 0.);
        g->timed = true;
    } else if (r->deadline_at) {
        double left = r->deadline_at - ev_now(r->w->loop);
        ev_timer_set(&g->timeout, left > 0.05 ? left - 0.05 : 0., 0.);
        g->timed = true;
        request_set_deadline(r, (uint64_t)((r->deadline_at - r->started) * 1000) + 1000);
    }
    return 0;
}

static int parse_requests(struct request *r, struct gather *g, json_t *body)
{
    json_t *reqs = json_object_get(body, "requests");
    size_t max = r->conf->gather.max_items;
    if (!json_is_array(reqs) || json_array_size(reqs) == 0) {
        fail400(r, "requests", "requests must be a non-empty array");
        return -1;
    }
    if (json_array_size(reqs) > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "at most %zu requests per gather", max);
        fail400(r, "requests", msg);
        return -1;
    }
    g->n = json_array_size(reqs);
    g->items = calloc(g->n, sizeof *g->items);
    if (!g->items) {
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return -1;
    }
    for (size_t i = 0; i < g->n; i++)
        if (parse_item(r, json_array_get(reqs, i), i, &g->items[i]) < 0)
            return -1;
    return 0;
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents);

void gather_start(struct request *r, json_t *body)
{
    struct gather *g = calloc(1, sizeof *g);
    if (!g) {
        json_decref(body);
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return;
    }
    g->parent = r;
    g->return_exceptions = true;
    g->failure = g->winner = g->last_failed = -1;
    ev_timer_init(&g->timeout, on_timeout, 0., 0.);
    g->timeout.data = g;
    r->gather = g;
    int rc = parse_options(r, g, body);
    if (rc == 0)
        rc = parse_requests(r, g, body);
    json_decref(body);
    if (rc < 0)
        return;     /* answered; the gather is freed with its request */
    if (g->timed)
        ev_timer_start(r->w->loop, &g->timeout);
    if (g->stream)
        request_stream_start(r, 200);
    advance(g);
}

static void set_entry(struct gather_item *it, size_t index, int status, const char *key,
                      const char *value, size_t len)
{
    buf_reset(&it->entry);
    buf_printf(&it->entry, "{\"index\":%zu,\"status\":%d,\"%s\":", index, status, key);
    it->value_off = it->entry.len;
    it->value_len = len;
    buf_append(&it->entry, value, len);
    buf_puts(&it->entry, "}");
    it->status = status;
}

/* An entry the gateway writes itself (timeouts, cancellations, refusals). */
static void entry_error(struct gather_item *it, int status, const char *type, const char *code,
                        const char *msg, size_t index)
{
    json_t *e = json_pack("{s:s, s:s, s:n, s:s}", "message", msg, "type", type, "param",
                          "code", code);
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    set_entry(it, index, status, "error", text ? text : "{}", text ? strlen(text) : 2);
    free(text);
    json_decref(e);
}

static void start_item(struct gather *g, size_t i)
{
    struct request *p = g->parent;
    struct gather_item *it = &g->items[i];
    enum route_id route = it->ep == EP_EMBEDDINGS ? ROUTE_EMBEDDINGS
                       : it->ep == EP_COMPLETIONS ? ROUTE_COMPLETIONS
                       : it->ep == EP_MESSAGES ? ROUTE_MESSAGES : ROUTE_CHAT;
    struct request *r = request_new(p->w, p->conf, &item_sink, g, route);
    if (!r) {
        entry_error(it, 503, "server_error", "overloaded", "out of memory", i);
        it->done = true;
        g->ndone++;
        g->failed++;
        return;
    }
    it->req = r;
    trace_begin(r, NULL, p->trace);     /* each item its own span, under the gather's */
    r->gather_index = (unsigned)i;
    r->ep = it->ep;
    r->key = p->key;
    r->wait_for_key = true;             /* items queue for the key's slots, not 429 */
    r->no_retry = p->no_retry;
    request_set_client(r, p->client, p->user_agent,
                       p->user_agent ? strlen(p->user_agent) : 0);
    buf_append(&r->fwd_headers, p->fwd_headers.data, p->fwd_headers.len);
    memcpy(r->anthropic_version, p->anthropic_version, sizeof r->anthropic_version);
    memcpy(r->method, p->method, sizeof r->method);
    memcpy(r->path, p->path, sizeof r->path);
    snprintf(r->id, sizeof r->id, "%.*s.%u", REQUEST_ID_MAX - 12, p->id, (unsigned)i % 100000);
    double left = p->deadline_at ? (p->deadline_at - ev_now(p->w->loop)) * 1000.0 : 0;
    uint64_t ms = g->item_timeout_ms;
    if (left > 0 && (!ms || (double)ms > left))
        ms = (uint64_t)left;
    request_set_deadline(r, ms);
    g->running++;
    json_t *body = it->body;
    it->body = NULL;
    char prefix[40];
    snprintf(prefix, sizeof prefix, "requests[%zu].", i);
    router_start_upstream(r, body, prefix);
}

/* A child answered: its body goes into the item's entry as it came (it was checked on the way
 * in); an error's code is rewritten when the item's deadline hit. */
static void item_respond(struct request *r, int status, const char *body, size_t len)
{
    struct gather *g = r->owner;
    struct gather_item *it = &g->items[r->gather_index];
    size_t idx = r->gather_index, start, end;
    if (status >= 200 && status < 300) {
        bool object = json_scan_object(body, len) == 0;
        set_entry(it, idx, status, "response", object ? body : "null", object ? len : 4);
        return;
    }
    bool timed_out = status == 504 && r->deadline_at &&
                     ev_now(r->w->loop) >= r->deadline_at - 0.001;
    if (json_scan_member(body, len, "error", &start, &end) < 0) {
        set_entry(it, idx, status, "error", "{}", 2);
    } else if (!timed_out) {
        set_entry(it, idx, status, "error", body + start, end - start);
    } else {
        json_t *err = json_loadb(body + start, end - start, 0, NULL);
        json_object_set_new(err, "code", json_string("item_timeout"));
        char *text = err ? json_dumps(err, JSON_COMPACT) : NULL;
        set_entry(it, idx, status, "error", text ? text : "{}", text ? strlen(text) : 2);
        free(text);
        json_decref(err);
    }
}

static void emit(struct gather *g, const char *event, const char *data, size_t len)
{
    struct buf ev = BUF_INIT;
    buf_printf(&ev, "event: %s\ndata: ", event);
    buf_append(&ev, data, len);
    buf_puts(&ev, "\n\n");
    request_stream_data(g->parent, ev.data, ev.len);
    buf_free(&ev);
}

static void item_ended(struct request *r)
{
    struct gather *g = r->owner;
    struct gather_item *it = &g->items[r->gather_index];
    METRIC_INC(r->w->m.gather_items[r->outcome]);
    usage_add(&g->usage, &r->usage);    /* what each item was charged, failed ones too */
    g->cost_usd += r->cost_usd;
    g->priced |= r->priced;
    g->running--;
    it->done = true;
    g->ndone++;
    if (!it->entry.len)     /* ended without an answer: cancelled by the gather itself */
        entry_error(it, 499, "cancelled", "cancelled", "cancelled", r->gather_index);
    bool ok = it->status >= 200 && it->status < 300;
    if (ok) {
        g->succeeded++;
    } else {
        g->failed++;
        if (!g->finished)
            g->last_failed = r->gather_index;
    }
    if (g->finished)
        return;
    if (ok && g->mode == MODE_FIRST && g->winner < 0)
        g->winner = r->gather_index;
    if (!ok && !g->return_exceptions && g->mode == MODE_ALL && g->failure < 0)
        g->failure = r->gather_index;
    if (g->stream && g->mode == MODE_ALL)
        emit(g, "result", it->entry.data, it->entry.len);   /* mode first: from finish() */
    advance(g);
}

/* Writes the summary members (no braces): succeeded, failed, usage, cost_usd (null without
 * prices), elapsed_ms. */
static void put_summary(struct gather *g, struct buf *out)
{
    struct request *p = g->parent;
    long ms = (long)((ev_now(p->w->loop) - p->started) * 1000.0);
    char cost[32] = "null";
    if (g->priced)
        cost_format(cost, sizeof cost, g->cost_usd);
    buf_printf(out, "\"succeeded\":%zu,\"failed\":%zu,\"usage\":{\"prompt_tokens\":%ld,"
               "\"completion_tokens\":%ld,\"total_tokens\":%ld,\"prompt_tokens_details\":"
               "{\"cached_tokens\":%ld}},\"cost_usd\":%s,\"elapsed_ms\":%ld",
               g->succeeded, g->failed, g->usage.prompt, g->usage.completion,
               g->usage.prompt + g->usage.completion, g->usage.cache_read, cost, ms);
}

static void reply(struct request *p, int status, struct buf *body)
{
    request_respond(p, status, body->data, body->len);
    buf_free(body);
    request_end(p, OUTCOME_COMPLETED);
}

static void stream_done(struct gather *g)
{
    struct buf s = BUF_INIT;
    buf_puts(&s, "{\"object\":\"gather.result\",");
    put_summary(g, &s);
    buf_puts(&s, "}");
    emit(g, "done", s.data, s.len);
    buf_free(&s);
    request_stream_end(g->parent, true);
    request_end(g->parent, OUTCOME_COMPLETED);
}

/* The gather's answer when one item decides it (fail-fast failure, first winner, none won). */
static void finish_decided(struct gather *g, struct gather_item *it, size_t index)
{
    struct buf body = BUF_INIT;
    int status = it ? it->status : 502;
    bool won = it && status >= 200 && status < 300;
    if (won && g->stream) {
        buf_append(&body, it->entry.data, it->entry.len);   /* the result event is the entry */
    } else if (won) {
        buf_append(&body, it->entry.data + it->value_off, it->value_len);   /* the completion */
    } else {
        buf_puts(&body, "{\"error\":");
        if (it)
            buf_append(&body, it->entry.data + it->value_off, it->value_len);
        else
            buf_puts(&body, "{\"message\":\"no item succeeded\",\"type\":\"upstream_error\","
                            "\"param\":null,\"code\":\"all_failed\"}");
        buf_printf(&body, ",\"index\":%zu}", index);
        if (g->mode == MODE_FIRST)      /* none won: 504 when the last failure was a timeout */
            status = status == 504 ? 504 : 502;
        else if (status < 400 || status == 499)
            status = 502;
    }
    if (g->stream) {
        emit(g, won ? "result" : "error", body.data, body.len);
        buf_free(&body);
        stream_done(g);
        return;
    }
    reply(g->parent, status, &body);
}

static void finish_all(struct gather *g)
{
    if (g->stream) {
        stream_done(g);
        return;
    }
    struct buf body = BUF_INIT;
    size_t total = 128;
    for (size_t i = 0; i < g->n; i++)
        total += g->items[i].entry.len + 1;
    buf_reserve(&body, total);
    buf_puts(&body, "{\"object\":\"gather.result\",");
    put_summary(g, &body);
    buf_puts(&body, ",\"results\":[");
    for (size_t i = 0; i < g->n; i++) {
        if (i)
            buf_puts(&body, ",");
        buf_append(&body, g->items[i].entry.data, g->items[i].entry.len);
    }
    buf_puts(&body, "]}");
    reply(g->parent, 200, &body);
}

static void finish(struct gather *g)
{
    struct request *p = g->parent;
    g->finished = true;
    ev_timer_stop(p->w->loop, &g->timeout);
    metrics_observe(&p->w->m.gather_duration, ev_now(p->w->loop) - p->started);
    gather_cancel(g, OUTCOME_CANCELLED);    /* siblings still running lose */
    if (g->failure >= 0)
        finish_decided(g, &g->items[g->failure], (size_t)g->failure);
    else if (g->mode == MODE_FIRST && g->winner >= 0)
        finish_decided(g, &g->items[g->winner], (size_t)g->winner);
    else if (g->mode == MODE_FIRST) {
        ssize_t last = g->last_failed;  /* none won: carry the last error */
        finish_decided(g, last >= 0 ? &g->items[last] : NULL, last >= 0 ? (size_t)last : 0);
    } else
        finish_all(g);
}

static void advance(struct gather *g)
{
    if (g->advancing)
        return;
    g->advancing = true;
    while (!g->finished) {
        if (g->failure >= 0 || g->winner >= 0 || g->ndone == g->n) {
            finish(g);
            break;
        }
        if (g->running < g->max_concurrency && g->next < g->n) {
            start_item(g, g->next++);
            continue;
        }
        break;
    }
    g->advancing = false;
}

/* timeout_ms passed: unfinished items become 504 entries and the gather answers. */
static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct gather *g = t->data;
    for (size_t i = 0; i < g->n; i++) {
        struct gather_item *it = &g->items[i];
        if (it->done)
            continue;
        entry_error(it, 504, "timeout_error", "gather_timeout",
                    "the gather's timeout_ms passed before this item finished", i);
        if (!it->req) {     /* never started */
            it->done = true;
            g->ndone++;
            g->failed++;
            json_decref(it->body);
            it->body = NULL;
        } else if (!g->return_exceptions && g->failure < 0) {
            g->failure = (ssize_t)i;
        }
    }
    g->next = g->n;
    for (size_t i = 0; i < g->n; i++)
        if (g->items[i].req && !g->items[i].done)
            request_end(g->items[i].req, OUTCOME_DEADLINE);
    advance(g);
}

void gather_cancel(struct gather *g, enum outcome o)
{
    g->finished = true;
    ev_timer_stop(g->parent->w->loop, &g->timeout);
    for (size_t i = 0; i < g->n; i++)
        if (g->items[i].req && !g->items[i].done)
            request_end(g->items[i].req, o);
}

void gather_free(struct gather *g)
{
    size_t n = g->n;
    for (size_t i = 0; i < g->n; i++) {
        request_free(g->items[i].req);
        json_decref(g->items[i].body);
        buf_free(&g->items[i].entry);
    }
    free(g->items);
    free(g);
    if (n >= GATHER_TRIM_ITEMS)
        malloc_trim(0);     /* a big fan-out leaves glibc arenas full of free pages */
}
