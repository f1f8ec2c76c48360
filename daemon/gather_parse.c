/* gather_parse: a gather's body read in place — the options as small values parsed one by
 * one (under the parse budget), the items as slices of the client's text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "common/json_valid.h"
#include "daemon/gather_internal.h"
#include "daemon/worker.h"

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

static bool slice_is(const char *t, const struct json_pick *pk, const char *word)
{
    return pk->found && pk->end - pk->start == strlen(word) &&
           memcmp(t + pk->start, word, strlen(word)) == 0;
}

/* Item shape: a chat body, or {"endpoint": "/v1/embeddings", "body": {...}}; read from the
 * text in place (it was validated whole), so an item goes upstream as the client wrote it.
 * Entries keep the gather's (OpenAI) error shape whatever the item's endpoint; a /v1/messages
 * item's response is the Message. */
static int parse_item(struct request *r, const char *t, size_t s, size_t e, size_t i,
                      struct gather_item *out)
{
    char param[64], msg[160];
    struct json_pick pk[] = {{"endpoint", 0, 0, false}, {"body", 0, 0, false}};
    int dup = t[s] == '{' ? json_scan_pick(t + s, e - s, pk, 2) : -1;
    if (dup != 0) {
        snprintf(param, sizeof param, "requests[%zu]%s%s", i, dup > 0 ? "." : "",
                 dup > 0 ? pk[dup - 1].name : "");
        fail400(r, param, dup > 0 ? "a member appears twice" : "each item must be a JSON object");
        return -1;
    }
    out->ep = EP_CHAT;
    out->body_off = s;
    out->body_len = e - s;
    if (pk[0].found) {
        t += s;
        if (slice_is(t, &pk[0], "\"/v1/embeddings\""))
            out->ep = EP_EMBEDDINGS;
        else if (slice_is(t, &pk[0], "\"/v1/completions\""))
            out->ep = EP_COMPLETIONS;
        else if (slice_is(t, &pk[0], "\"/v1/messages\""))
            out->ep = EP_MESSAGES;
        else if (!slice_is(t, &pk[0], "\"/v1/chat/completions\"")) {
            snprintf(param, sizeof param, "requests[%zu].endpoint", i);
            fail400(r, param, "endpoint must be /v1/chat/completions, /v1/completions, "
                              "/v1/embeddings or /v1/messages");
            return -1;
        }
        if (!pk[1].found || t[pk[1].start] != '{') {
            snprintf(param, sizeof param, "requests[%zu].body", i);
            fail400(r, param, "body must be a JSON object");
            return -1;
        }
        out->body_off = s + pk[1].start;
        out->body_len = pk[1].end - pk[1].start;
    }
    struct json_pick st[] = {{"stream", 0, 0, false}};
    json_scan_pick(r->gather->text.data + out->body_off, out->body_len, st, 1);
    if (slice_is(r->gather->text.data + out->body_off, &st[0], "true")) {
        snprintf(param, sizeof param, "requests[%zu].stream", i);
        snprintf(msg, sizeof msg, "item %zu asks for stream; use the gather's own stream option",
                 i);
        fail400(r, param, msg);
        return -1;
    }
    return 0;
}

static int parse_options(struct request *r, struct gather *g, json_t *body)
{
    const struct conf *c = r->conf;
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

static int parse_requests(struct request *r, struct gather *g, const struct json_pick *reqs)
{
    const char *t = g->text.data;
    size_t max = r->conf->gather.max_items, n = 0, pos, s, e;
    if (reqs->found && t[reqs->start] == '[')
        for (pos = reqs->start; json_scan_next(t, reqs->end, &pos, &s, &e) > 0;)
            n++;
    if (n == 0) {
        fail400(r, "requests", "requests must be a non-empty array");
        return -1;
    }
    if (n > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "at most %zu requests per gather", max);
        fail400(r, "requests", msg);
        return -1;
    }
    g->items = calloc(n, sizeof *g->items);
    if (!g->items) {
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return -1;
    }
    g->n = n;
    pos = reqs->start;
    for (size_t i = 0; json_scan_next(t, reqs->end, &pos, &s, &e) > 0; i++)
        if (parse_item(r, t, s, e, i, &g->items[i]) < 0)
            return -1;
    return 0;
}

/* The options, each a small value parsed on its own (under the parse budget) into one object
 * for parse_options; NULL when answered (a member given twice, or out of memory). */
static json_t *load_options(struct request *r, struct gather *g, struct json_pick *pk, size_t n)
{
    int dup = json_scan_pick(g->text.data, g->text.len, pk, n);
    if (dup > 0) {
        fail400(r, pk[dup - 1].name, "a member appears twice in the body");
        return NULL;
    }
    /* A misspelt option (max_concurency) would otherwise be ignored without a word, as unknown
     * config keys are not: the first unknown member is named in a 400. */
    size_t ks, ke;
    if (json_scan_other(g->text.data, g->text.len, pk, n, &ks, &ke) > 0) {
        char msg[200], param[64];
        int len = (int)(ke - ks < 60 ? ke - ks : 60);
        snprintf(param, sizeof param, "%.*s", len, g->text.data + ks);
        snprintf(msg, sizeof msg, "unknown gather option '%.*s' (known: requests, mode, "
                 "stream, return_exceptions, timeout_ms, item_timeout_ms, max_concurrency)",
                 len, g->text.data + ks);
        fail400(r, param, msg);
        return NULL;
    }
    json_t *opts = json_object();
    for (size_t i = 0; opts && i + 1 < n; i++) {
        if (!pk[i].found)
            continue;
        json_t *v = json_valid_load(g->text.data + pk[i].start, pk[i].end - pk[i].start,
                                    JSON_DECODE_ANY, NULL);
        json_object_set_new(opts, pk[i].name, v ? v : json_string("?"));
    }
    if (!opts)
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
    return opts;
}

int gather_parse(struct request *r, struct gather *g)
{
    struct json_pick pk[] = {
        {"return_exceptions", 0, 0, false}, {"stream", 0, 0, false},
        {"timeout_ms", 0, 0, false}, {"item_timeout_ms", 0, 0, false},
        {"max_concurrency", 0, 0, false}, {"mode", 0, 0, false}, {"requests", 0, 0, false},
    };
    size_t npk = sizeof pk / sizeof *pk;
    json_t *opts = load_options(r, g, pk, npk);
    int rc = opts ? parse_options(r, g, opts) : -1;
    json_decref(opts);
    return rc == 0 ? parse_requests(r, g, &pk[npk - 1]) : -1;
}
