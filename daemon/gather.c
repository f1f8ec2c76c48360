/* gather: POST /v1/gather. The parent request owns one child request per item; children run
 * through the same router and proxy as single requests, at most max_concurrency at once.
 * Everything ends through request_end: ending the parent ends every child still running. */
#include "daemon/gather.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "common/json_valid.h"
#include "daemon/cost.h"
#include "daemon/gather_internal.h"
#include "daemon/router.h"
#include "daemon/trace.h"
#include "daemon/worker.h"

#define GATHER_TRIM_ITEMS 256

static void item_respond(struct request *r, int status, const char *body, size_t len);
static void item_stream_start(struct request *r, int status) {}
static bool item_stream_data(struct request *r, const char *p, size_t n) { return false; }
static void item_stream_end(struct request *r, bool complete) {}
static void item_ended(struct request *r);
static void advance(struct gather *g);
static void put_summary(struct gather *g, struct buf *out);

static const struct sink_ops item_sink = {
    item_respond, item_stream_start, item_stream_data, item_stream_end, item_ended,
};

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents);

/* Entries count against limits.max_memory while they are held. */
static void entry_drop(struct gather *g, struct gather_item *it)
{
    mem_sub(g->parent->w, it->entry.len);
    buf_free(&it->entry);
}

/* Writes to the client; remembers when it went above its high-water mark. */
static void out(struct gather *g, const char *p, size_t n)
{
    if (request_stream_data(g->parent, p, n))
        g->blocked = true;
}

static void emit(struct gather *g, const char *event, const char *data, size_t len)
{
    struct buf ev = BUF_INIT;
    buf_printf(&ev, "event: %s\ndata: ", event);
    buf_append(&ev, data, len);
    buf_puts(&ev, "\n\n");
    out(g, ev.data, ev.len);
    buf_free(&ev);
}

/* Sends the entries whose turn has come, unless the client is behind (force: at the end). */
static void flush_entries(struct gather *g, bool force)
{
    while (g->ordered && g->emitted < g->n && g->items[g->emitted].done &&
           (force || !g->blocked)) {
        struct gather_item *it = &g->items[g->emitted];
        if (g->emitted++)
            out(g, ",", 1);
        out(g, it->entry.data, it->entry.len);
        entry_drop(g, it);
    }
    while (g->fifo && g->fifo_head < g->fifo_tail && (force || !g->blocked)) {
        size_t i = g->fifo[g->fifo_head++];
        emit(g, "result", g->items[i].entry.data, g->items[i].entry.len);
        if ((ssize_t)i != g->failure)   /* the fail-fast failure is reported again at the end */
            entry_drop(g, &g->items[i]);
    }
}

bool gather_stream_fail(struct gather *g, const char *error_body)
{
    if (!g->stream || g->finished)
        return false;
    struct buf s = BUF_INIT;
    emit(g, "error", error_body, strlen(error_body));
    buf_puts(&s, "{\"object\":\"gather.result\",");
    put_summary(g, &s);
    buf_puts(&s, "}");
    emit(g, "done", s.data, s.len);
    buf_free(&s);
    return true;
}

bool gather_item_blocked(const struct request *r)
{
    return r->sink == &item_sink && ((const struct gather *)r->owner)->blocked;
}

void gather_drained(struct gather *g)
{
    g->blocked = false;
    if (g->finished)
        return;
    flush_entries(g, false);
    for (size_t i = 0; i < g->next && !g->blocked; i++)   /* paused answers read on */
        if (g->items[i].req && !g->items[i].done)
            request_drained(g->items[i].req);
    if (!g->finished)
        advance(g);
}

void gather_start(struct request *r, const char *body, size_t len)
{
    struct gather *g = calloc(1, sizeof *g);
    if (!g || buf_append(&g->text, body, len) < 0) {
        free(g);
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return;
    }
    g->parent = r;
    request_charge(r, len);
    g->return_exceptions = true;
    g->failure = g->winner = g->last_failed = -1;
    ev_timer_init(&g->timeout, on_timeout, 0., 0.);
    g->timeout.data = g;
    r->gather = g;
    int rc = gather_parse(r, g);
    if (rc == 0 && g->stream && g->mode == MODE_ALL &&
        !(g->fifo = calloc(g->n, sizeof *g->fifo)))
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
    if (rc < 0 || r->ended)
        return;     /* answered; the gather is freed with its request */
    if (g->timed)
        ev_timer_start(r->w->loop, &g->timeout);
    g->ordered = !g->stream && g->mode == MODE_ALL && g->return_exceptions;
    if (g->ordered)
        r->content_type = "application/json";
    if (g->stream || g->ordered)
        request_stream_start(r, 200);
    if (g->ordered)
        out(g, "{\"object\":\"gather.result\",\"results\":[", 37);
    advance(g);
}

static void set_entry(struct gather *g, struct gather_item *it, size_t index, int status,
                      const char *key, const char *value, size_t len)
{
    entry_drop(g, it);
    buf_printf(&it->entry, "{\"index\":%zu,\"status\":%d,\"%s\":", index, status, key);
    it->value_off = it->entry.len;
    it->value_len = len;
    buf_append(&it->entry, value, len);
    buf_puts(&it->entry, "}");
    mem_add(g->parent->w, it->entry.len);
    it->status = status;
}

/* An entry the gateway writes itself (timeouts, cancellations, refusals). */
static void entry_error(struct gather *g, struct gather_item *it, int status, const char *type,
                        const char *code, const char *msg, size_t index)
{
    json_t *e = json_pack("{s:s, s:s, s:n, s:s}", "message", msg, "type", type, "param",
                          "code", code);
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    set_entry(g, it, index, status, "error", text ? text : "{}", text ? strlen(text) : 2);
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
        entry_error(g, it, 503, "server_error", "overloaded", "out of memory", i);
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
    char prefix[40];
    snprintf(prefix, sizeof prefix, "requests[%zu].", i);
    request_charge(r, it->body_len);
    if (buf_append(&r->body_raw, g->text.data + it->body_off, it->body_len) < 0) {
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return;
    }
    router_start_upstream(r, prefix);
}

/* A child answered: its body goes into the item's entry as it came (it was checked on the way
 * in); an error's code is rewritten when the item's deadline hit. */
static void item_respond(struct request *r, int status, const char *body, size_t len)
{
    struct gather *g = r->owner;
    struct gather_item *it = &g->items[r->gather_index];
    size_t idx = r->gather_index, start, end;
    if (status >= 200 && status < 300) {
        bool object = json_valid_object(body, len) == 0;
        set_entry(g, it, idx, status, "response", object ? body : "null", object ? len : 4);
        return;
    }
    bool timed_out = status == 504 && r->deadline_at &&
                     ev_now(r->w->loop) >= r->deadline_at - 0.001;
    if (json_scan_member(body, len, "error", &start, &end) < 0) {
        set_entry(g, it, idx, status, "error", "{}", 2);
    } else if (!timed_out) {
        set_entry(g, it, idx, status, "error", body + start, end - start);
    } else {
        json_t *err = json_valid_load(body + start, end - start, 0, NULL);
        json_object_set_new(err, "code", json_string("item_timeout"));
        char *text = err ? json_dumps(err, JSON_COMPACT) : NULL;
        set_entry(g, it, idx, status, "error", text ? text : "{}", text ? strlen(text) : 2);
        free(text);
        json_decref(err);
    }
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
        entry_error(g, it, 499, "cancelled", "cancelled", "cancelled", r->gather_index);
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
    g->result_bytes += it->entry.len;
    if (g->result_bytes > r->conf->gather.max_result_bytes)
        g->too_large = true;
    if (ok && g->mode == MODE_FIRST && g->winner < 0)
        g->winner = r->gather_index;
    if (!ok && !g->return_exceptions && g->mode == MODE_ALL && g->failure < 0)
        g->failure = r->gather_index;
    if (g->fifo)
        g->fifo[g->fifo_tail++] = r->gather_index;      /* mode first: from finish() */
    flush_entries(g, false);
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
               usage_total(&g->usage), g->usage.cache_read, cost, ms);
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

/* The rest of an ordered document: entries still due, then the summary after the results. */
static void ordered_done(struct gather *g, const char *error)
{
    struct buf s = BUF_INIT;
    if (!error)
        flush_entries(g, true);
    buf_puts(&s, "],");
    if (error)
        buf_printf(&s, "\"error\":%s,", error);
    put_summary(g, &s);
    buf_puts(&s, "}");
    out(g, s.data, s.len);
    buf_free(&s);
    request_stream_end(g->parent, true);
    request_end(g->parent, OUTCOME_COMPLETED);
}

/* gather.max_result_bytes passed: the gather ends with an error in its own format. */
static void finish_too_large(struct gather *g)
{
    uint64_t max = g->parent->conf->gather.max_result_bytes;
    char msg[160];
    if (max % (1u << 20) == 0)
        snprintf(msg, sizeof msg, "the gather's answers exceeded gather.max_result_bytes "
                 "(%llu MiB)", (unsigned long long)(max >> 20));
    else
        snprintf(msg, sizeof msg, "the gather's answers exceeded gather.max_result_bytes "
                 "(%llu bytes)", (unsigned long long)max);
    if (!g->stream && !g->ordered) {
        request_fail(g->parent, 502, "server_error", "gather_result_too_large", NULL, msg,
                     OUTCOME_UPSTREAM_ERROR);
        return;
    }
    json_t *e = json_pack("{s:s, s:s, s:n, s:s}", "message", msg, "type", "server_error",
                          "param", "code", "gather_result_too_large");
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (g->ordered) {
        ordered_done(g, text ? text : "{}");
    } else {
        struct buf ev = BUF_INIT;
        buf_printf(&ev, "{\"error\":%s}", text ? text : "{}");
        emit(g, "error", ev.data, ev.len);
        buf_free(&ev);
        stream_done(g);
    }
    free(text);
}

static void finish_all(struct gather *g)
{
    if (g->stream) {
        flush_entries(g, true);
        stream_done(g);
        return;
    }
    if (g->ordered) {
        ordered_done(g, NULL);
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
    if (g->too_large)
        finish_too_large(g);
    else if (g->failure >= 0)
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
        if (g->failure >= 0 || g->winner >= 0 || g->ndone == g->n || g->too_large) {
            finish(g);
            break;
        }
        if (g->running < g->max_concurrency && g->next < g->n && !g->blocked) {
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
        entry_error(g, it, 504, "timeout_error", "gather_timeout",
                    "the gather's timeout_ms passed before this item finished", i);
        if (!it->req) {     /* never started */
            it->done = true;
            g->ndone++;
            g->failed++;
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
        entry_drop(g, &g->items[i]);
    }
    free(g->items);
    free(g->fifo);
    buf_free(&g->text);
    free(g);
    if (n >= GATHER_TRIM_ITEMS)
        malloc_trim(0);     /* a big fan-out leaves glibc arenas full of free pages */
}
