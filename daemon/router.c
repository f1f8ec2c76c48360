/* router: endpoint table, authentication, request controls (deadline, no-retry), and the
 * small handlers. Chat-like endpoints are validated here and handed to the proxy. */
#include "daemon/router.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/breaker.h"
#include "daemon/budget.h"
#include "common/json_scan.h"
#include "common/json_valid.h"
#include "daemon/gather.h"
#include "daemon/jobs.h"
#include "daemon/jobs_store.h"
#include "daemon/keylimit.h"
#include "daemon/metrics_labels.h"
#include "daemon/proxy.h"
#include "daemon/trace.h"
#include "daemon/trace_export.h"
#include "daemon/worker.h"

struct route {
    const char *path;
    enum http_method method;
    const char *allow;
    enum route_id id;
    bool needs_key;
};

static const struct route routes[] = {
    {"/v1/chat/completions", HTTP_POST, "POST", ROUTE_CHAT, true},
    {"/v1/completions", HTTP_POST, "POST", ROUTE_COMPLETIONS, true},
    {"/v1/embeddings", HTTP_POST, "POST", ROUTE_EMBEDDINGS, true},
    {"/v1/models", HTTP_GET, "GET", ROUTE_MODELS, true},
    {"/v1/gather", HTTP_POST, "POST", ROUTE_GATHER, true},
    {"/v1/messages", HTTP_POST, "POST", ROUTE_MESSAGES, true},
    {"/v1/messages/count_tokens", HTTP_POST, "POST", ROUTE_COUNT_TOKENS, true},
    {"/v1/responses", HTTP_POST, "POST", ROUTE_RESPONSES, true},
    {"/v1/jobs", HTTP_POST, "GET, POST", ROUTE_JOBS, true},
    {"/v1/jobs", HTTP_GET, "GET, POST", ROUTE_JOBS, true},
    {"/v1/spend", HTTP_GET, "GET", ROUTE_SPEND, true},
    {"/healthz", HTTP_GET, "GET", ROUTE_HEALTHZ, false},
    {"/readyz", HTTP_GET, "GET", ROUTE_READYZ, false},
    {"/metrics", HTTP_GET, "GET", ROUTE_METRICS, false},
};

/* /v1/jobs/{id}: the one path with a variable part. */
static const struct route job_routes[] = {
    {"/v1/jobs/", HTTP_GET, "GET, DELETE", ROUTE_JOBS, true},
    {"/v1/jobs/", HTTP_DELETE, "GET, DELETE", ROUTE_JOBS, true},
};

/* One "METHOD PATH" line per route, in table order: `llmuxd --routes`, which the docs test
 * compares with docs/openapi.yaml so that a new route can't land undocumented. */
void router_print_routes(FILE *f)
{
    static const char *const names[] = {
        [HTTP_GET] = "GET", [HTTP_HEAD] = "HEAD", [HTTP_POST] = "POST", [HTTP_PUT] = "PUT",
        [HTTP_DELETE] = "DELETE", [HTTP_OPTIONS] = "OPTIONS", [HTTP_PATCH] = "PATCH",
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        fprintf(f, "%s %s\n", names[routes[i].method], routes[i].path);
    for (size_t i = 0; i < sizeof job_routes / sizeof job_routes[0]; i++)
        fprintf(f, "%s %s{id}\n", names[job_routes[i].method], job_routes[i].path);
}

static void fail400(struct request *r, const char *param, const char *code, const char *msg)
{
    request_fail(r, 400, "invalid_request_error", code, param, msg, OUTCOME_REJECTED);
}

static void copy_slice(char *dst, size_t cap, struct http_slice s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static void set_id(struct request *r, const struct http_head *h)
{
    const struct http_header *x = http_find_header(h, "x-request-id");
    if (x && request_id_acceptable(x->value.p, x->value.len))
        copy_slice(r->id, sizeof r->id, x->value);
    else
        request_make_id(r->id, &r->w->rng);
}

/* Client headers an upstream may need and that can't leak anything: opt-in feature flags.
 * Everything else (cookies, the client's own key, hop-by-hop fields) stays at the gateway. */
static const char *const forwarded_headers[] = {"openai-beta", "anthropic-beta"};

/* The endpoint a route serves upstream; routes that don't reach an upstream have none. */
static enum endpoint route_endpoint(enum route_id id)
{
    switch (id) {
    case ROUTE_COMPLETIONS: return EP_COMPLETIONS;
    case ROUTE_EMBEDDINGS: return EP_EMBEDDINGS;
    case ROUTE_MESSAGES: return EP_MESSAGES;
    case ROUTE_COUNT_TOKENS: return EP_COUNT_TOKENS;
    case ROUTE_RESPONSES: return EP_RESPONSES;
    default: return EP_CHAT;
    }
}

/* anthropic-version goes to Anthropic upstreams as the client sent it (a short token, so it
 * can't smuggle anything into the upstream's headers); absent, the codec's default is used. */
static int take_anthropic_version(struct request *r, const struct http_head *h)
{
    const struct http_header *v = http_find_header(h, "anthropic-version");
    if (!v)
        return 0;
    bool ok = v->value.len > 0 && v->value.len < sizeof r->anthropic_version;
    for (size_t i = 0; ok && i < v->value.len; i++) {
        char c = v->value.p[i];
        ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             c == '-' || c == '.' || c == '_';
    }
    if (!ok && r->error_shape != ERROR_SHAPE_ANTHROPIC)
        return 0;       /* only /v1/messages* (and its gather items) use it */
    if (!ok) {
        fail400(r, "anthropic-version", "invalid_header",
                "anthropic-version must be a version such as 2023-06-01");
        return -1;
    }
    copy_slice(r->anthropic_version, sizeof r->anthropic_version, v->value);
    return 0;
}

static void collect_forwarded(struct request *r, const struct http_head *h)
{
    for (size_t i = 0; i < sizeof forwarded_headers / sizeof *forwarded_headers; i++) {
        const struct http_header *f = http_find_header(h, forwarded_headers[i]);
        if (!f || f->value.len > 512)
            continue;
        buf_append(&r->fwd_headers, f->name.p, f->name.len);
        buf_puts(&r->fwd_headers, ": ");
        buf_append(&r->fwd_headers, f->value.p, f->value.len);
        buf_append(&r->fwd_headers, "", 1);
    }
}

/* Bearer token or x-api-key; 0 when allowed (or no keys configured). */
static int authenticate(struct request *r, const struct http_head *h)
{
    if (r->conf->nkeys == 0)
        return 0;
    struct http_slice key = {NULL, 0};
    const struct http_header *a = http_find_header(h, "authorization");
    if (a && a->value.len > 7 && strncasecmp(a->value.p, "Bearer ", 7) == 0) {
        key.p = a->value.p + 7;
        key.len = a->value.len - 7;
    } else if ((a = http_find_header(h, "x-api-key"))) {
        key = a->value;
    }
    if (!key.len) {
        request_fail(r, 401, "authentication_error", "missing_api_key", NULL,
                     "missing API key: send Authorization: Bearer <key> or x-api-key",
                     OUTCOME_REJECTED);
        return -1;
    }
    r->key = conf_find_key(r->conf, key.p, key.len);
    if (r->conf->hashed_keys) {
        /* Both lookups always run, so timing tells nothing about which kind matched. */
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)key.p, key.len, d);
        const struct conf_key *h = conf_find_key_sha256(r->conf, d);
        r->key = r->key ? r->key : h;
    }
    if (!r->key) {
        request_fail(r, 401, "authentication_error", "invalid_api_key", NULL,
                     "invalid API key", OUTCOME_REJECTED);
        return -1;
    }
    return 0;
}

/* A header of up to 12 decimal digits; -1 when it is anything else. */
static int64_t header_ms(const struct http_header *t)
{
    int64_t v = 0;
    size_t i = 0;
    for (; i < t->value.len && i < 12 && t->value.p[i] >= '0' && t->value.p[i] <= '9'; i++)
        v = v * 10 + (t->value.p[i] - '0');
    return i == 0 || i != t->value.len ? -1 : v;
}

/* X-Llmux-Timeout-Ms (capped by timeouts.max) else timeouts.default; X-Llmux-Hedge-Ms;
 * X-Llmux-No-Retry. */
static int set_controls(struct request *r, const struct http_head *h)
{
    uint64_t ms = r->conf->timeouts.default_ms;
    const struct http_header *t = http_find_header(h, "x-llmux-timeout-ms");
    if (t) {
        int64_t v = header_ms(t);
        if (v <= 0) {
            fail400(r, "X-Llmux-Timeout-Ms", "invalid_header",
                    "X-Llmux-Timeout-Ms must be a positive integer (milliseconds)");
            return -1;
        }
        ms = (uint64_t)v;
    }
    if (r->conf->timeouts.max_ms && ms > r->conf->timeouts.max_ms)
        ms = r->conf->timeouts.max_ms;
    request_set_deadline(r, ms);
    const struct http_header *hg = http_find_header(h, "x-llmux-hedge-ms");
    if (hg && (r->hedge_ms = header_ms(hg)) < 0) {
        fail400(r, "X-Llmux-Hedge-Ms", "invalid_header",
                "X-Llmux-Hedge-Ms must be a non-negative integer (milliseconds; 0 = no hedge)");
        return -1;
    }
    const struct http_header *nr = http_find_header(h, "x-llmux-no-retry");
    r->no_retry = nr && http_slice_eq(nr->value, "1");
    return 0;
}

/* The request's model name: a JSON string value, decoded (escapes and all). */
static int take_model(struct request *r, const char *t, const struct json_pick *pk)
{
    if (!pk->found || t[pk->start] != '"')
        return -1;
    size_t n = pk->end - pk->start;
    if (!memchr(t + pk->start, '\\', n)) {      /* valid text without escapes: its bytes */
        r->model = n > 2 ? strndup(t + pk->start + 1, n - 2) : NULL;
        return r->model ? 0 : -1;
    }
    json_t *v = json_valid_load(t + pk->start, pk->end - pk->start, JSON_DECODE_ANY, NULL);
    if (json_is_string(v) && json_string_length(v) && !memchr(json_string_value(v), 0,
                                                              json_string_length(v)))
        r->model = strdup(json_string_value(v));
    json_decref(v);
    return r->model ? 0 : -1;
}

/* The client's completion cap: the largest of the caps it names as plain integers (a real or
 * a string is not a count), -1 when none. The budget reserves by it and spans report it. */
static long take_max_tokens(const char *t, const struct json_pick *pk, size_t n)
{
    long best = -1;
    for (size_t i = 0; i < n; i++) {
        char num[24], *end;
        size_t len = pk[i].end - pk[i].start;
        if (!pk[i].found || len == 0 || len >= sizeof num)
            continue;
        memcpy(num, t + pk[i].start, len);
        num[len] = '\0';
        long v = strtol(num, &end, 10);
        if (!*end && num[0] != '+' && v > best)
            best = v;
    }
    return best;
}

static bool is_literal(const char *t, const struct json_pick *pk, const char *word)
{
    size_t n = strlen(word);
    return pk->end - pk->start == n && memcmp(t + pk->start, word, n) == 0;
}

/* Reads what routing needs from the request's (validated) JSON text without building a tree:
 * the upstream is sent the client's own bytes, and a codec that translates builds its tree
 * itself, under a budget, only for as long as the encoding takes. */
void router_start_upstream(struct request *r, const char *pp)
{
    char param[96];
    const char *t = r->body_raw.data;
    struct json_pick pk[] = {{"model", 0, 0, false}, {"stream", 0, 0, false},
                             {"messages", 0, 0, false}, {"max_tokens", 0, 0, false},
                             {"max_completion_tokens", 0, 0, false},
                             {"max_output_tokens", 0, 0, false}};
    int dup = json_scan_pick(t, r->body_raw.len, pk, 6);
    if (dup > 0) {
        snprintf(param, sizeof param, "%s%s", pp, pk[dup - 1].name);
        fail400(r, param, "duplicate_member", "a member appears twice in the body");
        return;
    }
    if (dup < 0 || take_model(r, t, &pk[0]) < 0) {
        snprintf(param, sizeof param, "%smodel", pp);
        fail400(r, param, "missing_model", "you must provide a model parameter (a string)");
        return;
    }
    if (pk[1].found && !is_literal(t, &pk[1], "true") && !is_literal(t, &pk[1], "false") &&
        !is_literal(t, &pk[1], "null")) {
        snprintf(param, sizeof param, "%sstream", pp);
        fail400(r, param, "invalid_type", "stream must be a boolean");
        return;
    }
    r->stream = pk[1].found && is_literal(t, &pk[1], "true") && r->ep != EP_EMBEDDINGS &&
                r->ep != EP_COUNT_TOKENS;
    r->max_tokens = r->ep == EP_EMBEDDINGS ? 0 : take_max_tokens(t, &pk[3], 3);
    bool has_messages = r->ep == EP_CHAT || r->ep == EP_MESSAGES || r->ep == EP_COUNT_TOKENS;
    if (has_messages && (!pk[2].found || t[pk[2].start] != '[')) {
        snprintf(param, sizeof param, "%smessages", pp);
        fail400(r, param, "missing_messages", "messages must be an array of messages");
        return;
    }
    /* A model that exists nowhere is 404 for every key; one that exists but is outside the
     * key's allow-list is 403. Both name the model, so the client knows which one to fix. */
    char msg[200];
    const struct conf_model *m = conf_find_model(r->conf, r->model);
    if (!m) {
        snprintf(msg, sizeof msg, "the model '%.100s' does not exist", r->model);
        request_fail(r, 404, "invalid_request_error", "model_not_found", "model", msg,
                     OUTCOME_REJECTED);
        return;
    }
    if (r->key && !conf_key_allows_model(r->key, r->model)) {
        snprintf(msg, sizeof msg, "this key may not use the model '%.100s'", r->model);
        request_fail(r, 403, "permission_error", "model_not_allowed", "model", msg,
                     OUTCOME_REJECTED);
        return;
    }
    r->cmodel = m;
    keylimit_admit(r, m);
}

/* One strict pass over the client's body (RFC 8259, depth-limited, nothing allocated); the
 * body must be an object. 0, or -1 when answered with 400. */
static int check_body(struct request *r, const char *body, size_t len)
{
    size_t at = 0;
    if (json_valid(body, len, JSON_VALID_DEPTH, NULL, &at) < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "invalid JSON body (at byte %zu; nesting is limited to %d "
                 "levels)", at, JSON_VALID_DEPTH);
        fail400(r, NULL, "invalid_json", msg);
        return -1;
    }
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len || body[i] != '{') {
        fail400(r, NULL, "invalid_json", "the body must be a JSON object");
        return -1;
    }
    return 0;
}

static void handle_models(struct request *r)
{
    json_t *data = json_array();
    for (size_t i = 0; i < r->conf->nmodels; i++) {
        const char *name = r->conf->models[i].name;
        if (r->key && !conf_key_allows_model(r->key, name))
            continue;
        json_array_append_new(data, json_pack("{s:s, s:s, s:i, s:s}", "id", name, "object",
                                              "model", "created", 0, "owned_by", "llmux"));
    }
    request_reply_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

/* One answer for the whole process: the breaker state is shared, and draining is the server's. */
static void handle_readyz(struct request *r)
{
    struct server *s = r->w->srv;
    json_t *open = json_array();
    const char *reason = NULL;
    if (!__atomic_load_n(&s->ready, __ATOMIC_RELAXED) || r->w->draining)
        reason = r->w->draining || s->drain ? "draining" : "starting";
    else if (!breaker_ready(r->conf, open))
        reason = "no healthy upstream for some model";
    json_t *body = json_pack("{s:s, s:o}", "status", reason ? "not_ready" : "ready",
                             "open_targets", open);
    if (reason) {   /* a 503 is still an error in the API's shape, with the details beside it */
        json_t *e = json_pack("{s:s, s:s, s:n}", "message", reason, "type", "server_error",
                              "param");
        json_object_set_new(e, "code", json_string("not_ready"));
        json_object_set_new(body, "error", e);
    }
    request_reply_json(r, reason ? 503 : 200, body);
}

static void handle_metrics(struct request *r)
{
    struct server *s = r->w->srv;
    struct metrics *blocks[256];
    unsigned n = s->nworkers < 256 ? s->nworkers : 256;
    for (unsigned i = 0; i < n; i++)
        blocks[i] = &s->workers[i].m;
    pthread_mutex_lock(&s->lock);
    struct metrics_extra x = {s->reloads_ok, s->reloads_failed, s->ready, s->drain,
                              __atomic_load_n(&s->mem_used, __ATOMIC_RELAXED),
                              r->conf->limits.max_memory};
    pthread_mutex_unlock(&s->lock);
    struct buf out = BUF_INIT;
    metrics_render(&out, blocks, n, &x);
    metrics_labels_render(&out, r->conf);
    if (s->jobs)
        jobs_store_metrics(s->jobs, &out);
    breaker_metrics(&out, r->conf);
    budget_metrics(&out, r->conf, s->state);
    trace_export_render(&out);
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    request_respond(r, 200, out.data, out.len);
    buf_free(&out);
    request_end(r, OUTCOME_COMPLETED);
}

/* New work whose body would take the process past limits.max_memory waits for none: 503. */
static int admit_memory(struct request *r, size_t len)
{
    if (request_mem_admits(r, len))
        return 0;
    r->retry_after_s = 1;
    request_fail(r, 503, "server_error", "overloaded", NULL,
                 "the gateway is at its memory limit (limits.max_memory), retry shortly",
                 OUTCOME_REJECTED);
    return -1;
}

static void handle(struct request *r, const struct route *rt, const char *body, size_t len)
{
    switch (rt->id) {
    case ROUTE_MODELS: handle_models(r); return;
    case ROUTE_HEALTHZ:
        request_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
        return;
    case ROUTE_READYZ:
        handle_readyz(r);
        return;
    case ROUTE_METRICS: handle_metrics(r); return;
    case ROUTE_SPEND: budget_spend(r); return;
    case ROUTE_GATHER:
        if (admit_memory(r, len) == 0 && check_body(r, body, len) == 0)
            gather_start(r, body, len);
        return;
    default:
        r->ep = route_endpoint(rt->id);
        if (admit_memory(r, len) < 0 || check_body(r, body, len) < 0)
            return;
        request_charge(r, len);
        if (buf_append(&r->body_raw, body, len) < 0) {
            request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                         OUTCOME_REJECTED);
            return;
        }
        router_start_upstream(r, "");
    }
}

void router_dispatch(struct request *r, const struct http_head *head, const char *body,
                     size_t len)
{
    copy_slice(r->method, sizeof r->method, head->method_name);
    copy_slice(r->path, sizeof r->path, head->path);
    set_id(r, head);
    const struct route *rt = NULL;
    bool path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!http_slice_eq(head->path, routes[i].path))
            continue;
        path_known = true;
        r->allow = routes[i].allow;
        r->error_shape = routes[i].id == ROUTE_MESSAGES || routes[i].id == ROUTE_COUNT_TOKENS
                             ? ERROR_SHAPE_ANTHROPIC : ERROR_SHAPE_OPENAI;
        if (head->method == routes[i].method)
            rt = &routes[i];
    }
    size_t plen = strlen(job_routes[0].path);
    if (!path_known && head->path.len > plen && memcmp(head->path.p, job_routes[0].path,
                                                       plen) == 0) {
        path_known = true;
        r->allow = job_routes[0].allow;
        for (size_t i = 0; i < sizeof job_routes / sizeof job_routes[0]; i++)
            if (head->method == job_routes[i].method)
                rt = &job_routes[i];
    }
    if (!rt) {
        if (path_known) {
            request_fail(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                         "method not allowed for this path", OUTCOME_REJECTED);
            return;
        }
        r->allow = NULL;
        request_fail(r, 404, "invalid_request_error", "unknown_url", NULL,
                     "unknown path", OUTCOME_REJECTED);
        return;
    }
    r->allow = NULL;
    r->route = rt->id;
    if (rt->needs_key)
        trace_begin(r, head, NULL);
    if (rt->needs_key && authenticate(r, head) < 0)
        return;
    if (rt->needs_key && set_controls(r, head) < 0)
        return;
    if (rt->needs_key && take_anthropic_version(r, head) < 0)
        return;
    if (rt->needs_key)
        collect_forwarded(r, head);
    if (rt->id == ROUTE_JOBS)
        jobs_handle(r, head, body, len);
    else
        handle(r, rt, body, len);
}
