/* trace: W3C Trace Context and the spans of a request and its upstream attempts, recorded as
 * span records (trace_span.c) for the exporter thread to encode. */
#include "daemon/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <ev.h>

#include "daemon/http_parser.h"
#include "daemon/request.h"
#include "daemon/trace_export.h"
#include "daemon/trace_span.h"

#define TRACE_CONTENT_MAX 8192      /* bytes of prompt/answer text a span may carry */

static __thread uint64_t rng_state;

static uint64_t rng_next(void)
{
    if (!rng_state) {
        if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state || !rng_state)
            rng_state = (uint64_t)(ev_time() * 1e9) | 1;
    }
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);      /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void trace_random_id(uint8_t *out, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t v = rng_next();
            memcpy(out + i, &v, n - i < 8 ? n - i : 8);
        }
    } while (!memcmp(out, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", n));   /* all-zero is invalid */
}

void trace_hex(char *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, trace_hex_pairs + 2 * p[i], 2);
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool unhex(const char *s, uint8_t *out, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < 2 * n; i++) {
        int v = hexval(s[i]);
        if (v < 0)
            return false;       /* upper case is invalid too (W3C: lowercase hex) */
        out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | v) : v << 4);
        nonzero |= v != 0;
    }
    return nonzero;
}

/* Two lower-case hex digits, zero allowed. */
static bool hexbyte(const char *s, uint8_t *out)
{
    int hi = hexval(s[0]), lo = hexval(s[1]);
    if (hi < 0 || lo < 0)
        return false;
    *out = (uint8_t)(hi << 4 | lo);
    return true;
}

bool trace_parse_parent(const char *s, size_t n, uint8_t trace_id[16], uint8_t parent[8],
                        bool *sampled)
{
    uint8_t version = 0, flags = 0;
    if (n < TRACE_PARENT_LEN || s[2] != '-' || s[35] != '-' || s[52] != '-' ||
        !hexbyte(s, &version) || version == 0xff)
        return false;
    /* version 00 is exactly 55 bytes; a later one may append "-…" fields (W3C §3.2.4) */
    if (version == 0 ? n != TRACE_PARENT_LEN : (n > TRACE_PARENT_LEN && s[55] != '-'))
        return false;
    if (!unhex(s + 3, trace_id, 16) || !unhex(s + 36, parent, 8) || !hexbyte(s + 53, &flags))
        return false;
    *sampled = flags & 1;
    return true;
}

bool trace_state_ok(const char *s, size_t n)
{
    if (n == 0 || n > TRACE_STATE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

bool trace_sample_root(const uint8_t trace_id[16], double ratio)
{
    if (ratio >= 1.0)
        return true;
    if (ratio <= 0.0)
        return false;
    uint64_t low = 0;
    for (int i = 8; i < 16; i++)
        low = low << 8 | trace_id[i];
    return (double)(low >> 11) < ratio * (double)(1ull << 53);
}

/* ---- spans -------------------------------------------------------------------------------- */

static bool trace_on(const struct request *r)
{
    return r->conf->tracing.endpoint && trace_export_running();
}

void trace_begin(struct request *r, const struct http_head *head, const struct trace *parent)
{
    if (r->trace || !trace_on(r))
        return;
    struct trace *t = trace_pool_trace();
    if (!t)
        return;     /* the request goes untraced rather than failing */
    bool have = false;
    const char *state = NULL;
    size_t state_len = 0;
    if (parent) {
        memcpy(t->trace_id, parent->trace_id, sizeof t->trace_id);
        memcpy(t->parent_id, parent->span_id, sizeof t->parent_id);
        t->sampled = parent->sampled;
        t->child = have = true;
        state = parent->tracestate;
        state_len = state ? strlen(state) : 0;
    } else if (head) {
        const struct http_header *tp = http_find_header(head, "traceparent");
        have = tp && trace_parse_parent(tp->value.p, tp->value.len, t->trace_id, t->parent_id,
                                        &t->sampled);
        const struct http_header *ts = have ? http_find_header(head, "tracestate") : NULL;
        if (ts && trace_state_ok(ts->value.p, ts->value.len)) {
            state = ts->value.p;
            state_len = ts->value.len;
        }
    }
    if (!have) {    /* absent or invalid: a new trace (W3C: restart, drop tracestate) */
        memset(t->parent_id, 0, sizeof t->parent_id);
        trace_random_id(t->trace_id, sizeof t->trace_id);
        t->sampled = trace_sample_root(t->trace_id, r->conf->tracing.sample_ratio);
    }
    if (state) {    /* at most TRACE_STATE_MAX: checked by trace_state_ok, or the parent's */
        memcpy(t->state_buf, state, state_len);
        t->state_buf[state_len] = '\0';
        t->tracestate = t->state_buf;
    }
    trace_random_id(t->span_id, sizeof t->span_id);
    t->start = ev_time();
    r->trace = t;
}

static uint64_t unix_ns(double t)
{
    return (uint64_t)(t * 1e9);
}

static struct trace_text text_of(struct trace_span *s, const char *str)
{
    return str ? trace_span_text(s, str, strlen(str)) : (struct trace_text){0, 0};
}

/* A span record of t's trace, with its ids, times, tracestate, event and error (text first,
 * so attributes are what a full record cuts). NULL, counted as dropped, without memory. */
static struct trace_span *span_begin(const struct trace *t, const uint8_t *span_id,
                                     const uint8_t *parent, enum trace_kind kind,
                                     double start, double end)
{
    struct trace_span *s = trace_span_new();
    if (!s) {
        trace_export_drop();
        return NULL;
    }
    memcpy(s->trace_id, t->trace_id, sizeof s->trace_id);
    memcpy(s->span_id, span_id, sizeof s->span_id);
    memcpy(s->parent_id, parent, sizeof s->parent_id);
    s->kind = (uint8_t)kind;
    s->start_ns = unix_ns(start);
    s->end_ns = unix_ns(end);
    s->state = text_of(s, t->tracestate);
    return s;
}

static const char *outcome_event(enum outcome o)
{
    switch (o) {
    case OUTCOME_DEADLINE: return "deadline_exceeded";
    case OUTCOME_CLIENT_DISCONNECT: return "client_disconnect";
    case OUTCOME_SHUTDOWN: return "shutdown";
    case OUTCOME_CANCELLED: return "cancelled";
    default: return NULL;
    }
}

static void server_attributes(struct trace_span *s, const struct request *r)
{
    TRACE_SPAN_STR(s, "http.request.method", r->method);
    TRACE_SPAN_STR(s, "http.route", r->path);
    TRACE_SPAN_INT(s, "http.response.status_code", r->status);
    TRACE_SPAN_STR(s, "llmux.request_id", r->id);
    TRACE_SPAN_STR(s, "llmux.key", r->key ? r->key->name : NULL);
    TRACE_SPAN_STR(s, "llmux.model", r->model);
    TRACE_SPAN_LIT(s, "llmux.outcome", outcome_name(r->outcome));
    TRACE_SPAN_STR(s, "llmux.upstream", r->upstream);
    TRACE_SPAN_INT(s, "llmux.attempts", (long)r->attempts);
    if (r->usage.seen || r->usage_estimated) {
        TRACE_SPAN_INT(s, "gen_ai.usage.input_tokens", r->usage.prompt);
        TRACE_SPAN_INT(s, "gen_ai.usage.output_tokens", r->usage.completion);
    }
    if (r->usage_estimated)
        TRACE_SPAN_LIT(s, "llmux.usage", "estimated");
    if (r->priced)
        TRACE_SPAN_DOUBLE(s, "llmux.cost_usd", r->cost_usd);
}

/* The request's own span: server (or a gather item's internal one), error status on 5xx. */
static void server_span(const struct request *r, const struct trace *t)
{
    struct trace_span *s = span_begin(t, t->span_id, t->parent_id,
                                      t->child ? TRACE_KIND_INTERNAL : TRACE_KIND_SERVER,
                                      t->start, ev_time());
    if (!s)
        return;
    s->name = trace_span_text2(s, r->method, r->path);
    s->event = text_of(s, outcome_event(r->outcome));
    if (r->status >= 500) {
        char err[24];
        int n = snprintf(err, sizeof err, "%d", r->status);
        s->error = trace_span_text(s, err, (size_t)n);
    }
    server_attributes(s, r);
    trace_export_push(s);
}

void trace_end(struct request *r)
{
    struct trace *t = r->trace;
    if (!t)
        return;
    r->trace = NULL;
    if (t->sampled)
        server_span(r, t);
    trace_pool_trace_free(t);
}

bool trace_attempt_begin(struct request *r, struct trace_attempt *a, char *line, size_t len)
{
    static const char prefix[] = "traceparent: 00-";
    const struct trace *t = r->trace;
    if (!t || len < sizeof prefix + 32 + 1 + 16 + 3)
        return false;
    trace_random_id(a->span_id, sizeof a->span_id);
    a->active = t->sampled;     /* an unsampled attempt has an id to send, no span to record */
    a->start = t->sampled ? ev_time() : 0;
    char *w = line;
    memcpy(w, prefix, sizeof prefix - 1);
    w += sizeof prefix - 1;
    trace_hex(w, t->trace_id, 16);
    w[32] = '-';
    trace_hex(w + 33, a->span_id, 8);
    memcpy(w + 49, t->sampled ? "-01" : "-00", 4);
    return true;
}

static const char *operation_name(enum endpoint ep)
{
    switch (ep) {
    case EP_COMPLETIONS: return "text_completion";
    case EP_EMBEDDINGS: return "embeddings";
    default: return "chat";
    }
}

static void client_attributes(struct trace_span *s, const char *op,
                              const struct trace_attempt_info *in)
{
    TRACE_SPAN_LIT(s, "gen_ai.operation.name", op);
    TRACE_SPAN_LIT(s, "gen_ai.system", in->system);
    TRACE_SPAN_STR(s, "gen_ai.request.model", in->request_model);
    TRACE_SPAN_STR(s, "gen_ai.response.model", in->response_model);
    if (in->max_tokens >= 0)
        TRACE_SPAN_INT(s, "gen_ai.request.max_tokens", in->max_tokens);
    if (in->input_tokens >= 0)
        TRACE_SPAN_INT(s, "gen_ai.usage.input_tokens", in->input_tokens);
    if (in->output_tokens >= 0)
        TRACE_SPAN_INT(s, "gen_ai.usage.output_tokens", in->output_tokens);
    if (in->status)
        TRACE_SPAN_INT(s, "http.response.status_code", in->status);
    TRACE_SPAN_STR(s, "llmux.upstream", in->upstream);
    TRACE_SPAN_INT(s, "llmux.attempt", (long)in->attempt);
    TRACE_SPAN_STR(s, "error.type", in->error);
}

void trace_attempt_end(struct request *r, struct trace_attempt *a,
                       const struct trace_attempt_info *in)
{
    if (!a->active)
        return;
    a->active = false;
    const struct trace *t = r->trace;
    if (!t || !t->sampled)
        return;
    const char *op = operation_name(r->ep);
    struct trace_span *s = span_begin(t, a->span_id, t->span_id, TRACE_KIND_CLIENT, a->start,
                                      ev_time());
    if (!s)
        return;
    s->name = trace_span_text2(s, op, in->request_model ? in->request_model : "");
    s->event = text_of(s, in->event);
    s->error = text_of(s, in->error);
    client_attributes(s, op, in);
    if (r->conf->tracing.capture_content && in->prompt)
        TRACE_SPAN_CONTENT(s, "gen_ai.prompt", in->prompt, in->prompt_len, TRACE_CONTENT_MAX);
    if (r->conf->tracing.capture_content && in->answer)
        TRACE_SPAN_CONTENT(s, "gen_ai.completion", in->answer, in->answer_len,
                           TRACE_CONTENT_MAX);
    trace_export_push(s);
}

/* Past the JSON string that opens at t[i] (the text is valid JSON): a memchr per quote. */
static size_t skim_string(const char *t, size_t n, size_t i)
{
    for (;;) {
        const char *q = memchr(t + i + 1, '"', n - i - 1);
        if (!q)
            return n;
        size_t j = (size_t)(q - t), bs = 0;
        while (t[j - 1 - bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return j + 1;
        i = j;
    }
}

static size_t skip_ws(const char *t, size_t n, size_t i)
{
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

/* The bytes skim_members stops at: 1 opens a value, 2 closes one, 3 opens a string. */
static const uint8_t skim_class[256] = {
    ['{'] = 1, ['['] = 1, ['}'] = 2, [']'] = 2, ['"'] = 3,
};

/* The top-level members of JSON text t named in names (quoted, as written): where each one's
 * first value starts (at) and how often it appears (seen); with first, it stops once every
 * name was seen. One pass: other bytes are skipped by a table, strings jumped over with
 * memchr, nested values only counted in and out. Several times cheaper than a member walk
 * that parses every value, which matters because it runs for every exported attempt. */
static void skim_members(const char *t, size_t n, const char *const *names, size_t k,
                         size_t *at, unsigned *seen, bool first)
{
    size_t depth = 0, found = 0;
    for (size_t i = 0; i < n; i++) {
        while (i < n && !skim_class[(unsigned char)t[i]])
            i++;
        if (i == n)
            break;
        uint8_t cls = skim_class[(unsigned char)t[i]];
        if (cls != 3) {
            depth += cls == 1 ? 1 : (size_t)-1;
            continue;
        }
        size_t end = skim_string(t, n, i), c = depth == 1 ? skip_ws(t, n, end) : n;
        for (size_t m = 0; c < n && t[c] == ':' && m < k; m++)
            if (end - i == strlen(names[m]) && !memcmp(t + i, names[m], end - i) &&
                !seen[m]++) {
                at[m] = skip_ws(t, n, c + 1);
                if (first && ++found == k)
                    return;
            }
        i = end - 1;
    }
}

/* An OpenAI answer's "model" string, as written, into out (cap bytes); "" when none fits. */
static void answer_model(const struct buf *resp, char *out, size_t cap)
{
    static const char *const names[] = {"\"model\""};
    size_t at = 0, n = 0;
    unsigned seen = 0;
    skim_members(resp->data, resp->len, names, 1, &at, &seen, true);
    if (seen && at < resp->len && resp->data[at] == '"') {
        n = skim_string(resp->data, resp->len, at) - at - 2;
        n = n < cap ? n : 0;
    }
    memcpy(out, resp->data + at + 1, n);
    out[n] = '\0';
}

void trace_attempt_info_fill(struct trace_attempt_info *in, const struct request *r,
                             const struct conf_target *t, const struct codec *c,
                             const struct buf *resp, const struct buf *sent)
{
    bool anthropic = t->upstream->provider == PROVIDER_ANTHROPIC;
    memset(in, 0, sizeof *in);
    /* the answer's model: Anthropic's from its message; an OpenAI body's "model" string */
    char *model = in->response_model_buf;
    size_t cap = sizeof in->response_model_buf;
    if (anthropic && c->anthropic.model) {
        size_t n = strnlen(c->anthropic.model, cap - 1);
        memcpy(model, c->anthropic.model, n);
        model[n] = '\0';
    } else if (!r->stream && resp->len) {
        answer_model(resp, model, cap);
    }
    in->system = anthropic ? "anthropic" : "openai";
    in->upstream = t->upstream->name;
    in->request_model = t->model ? t->model : r->model;
    in->response_model = in->response_model_buf[0] ? in->response_model_buf : NULL;
    in->input_tokens = c->usage.seen ? c->usage.prompt : -1;
    in->output_tokens = c->usage.seen ? c->usage.completion : -1;
    in->max_tokens = r->max_tokens;
    in->attempt = r->attempts;
    in->prompt = sent->len ? sent->data : NULL;
    in->prompt_len = sent->len;
    in->answer = !r->stream && sent->len ? resp->data : NULL;
    in->answer_len = resp->len;
}

const char *trace_error_type(enum call_result result, const char *status)
{
    switch (result) {
    case CALL_OK: return status;
    case CALL_CONNECT: return "connect_error";
    case CALL_RESET: return "connection_reset";
    case CALL_TIMEOUT: return "timeout";
    case CALL_FIRST_BYTE_TIMEOUT: return "first_byte_timeout";
    case CALL_IDLE_TIMEOUT: return "idle_timeout";
    case CALL_TOO_LARGE: return "response_too_large";
    default: return "error";
    }
}

const char *trace_abort_event(enum abort_reason why)
{
    static const char *const events[ABORT_COUNT] = {
        [ABORT_DEADLINE] = "deadline_exceeded", [ABORT_CLIENT_DISCONNECT] = "client_disconnect",
        [ABORT_SHUTDOWN] = "shutdown", [ABORT_CANCELLED] = "cancelled",
    };
    return events[why];
}
