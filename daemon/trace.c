/* trace: W3C Trace Context and the spans of a request and its upstream attempts, written as
 * OTLP JSON span objects for the exporter thread. */
#include "daemon/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <ev.h>

#include "common/json_scan.h"
#include "daemon/http_parser.h"
#include "daemon/request.h"
#include "daemon/trace_export.h"

#define TRACE_CONTENT_MAX 8192      /* bytes of prompt/answer text a span may carry */

enum span_kind { SPAN_INTERNAL = 1, SPAN_SERVER = 2, SPAN_CLIENT = 3 };

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
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
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
    struct trace *t = calloc(1, sizeof *t);
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
    t->tracestate = state ? strndup(state, state_len) : NULL;
    trace_random_id(t->span_id, sizeof t->span_id);
    t->start = ev_time();
    r->trace = t;
}

/* Spans are written with appends, not printf: this runs twice per traced request. */
static void put_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, tmp + i, sizeof tmp - i);
}

static void put_i64(struct buf *b, long v)
{
    if (v < 0) {
        buf_append(b, "-", 1);
        put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(b, (uint64_t)v);
    }
}

static void put_key(struct buf *b, const char *key, const char *type)
{
    buf_puts(b, "{\"key\":\"");
    buf_puts(b, key);
    buf_puts(b, "\",\"value\":{\"");
    buf_puts(b, type);
    buf_puts(b, "\":");
}

static void put_comma(struct buf *b)
{
    char last = b->len ? b->data[b->len - 1] : '[';
    if (last != '[' && last != '{')
        buf_puts(b, ",");
}

static void put_str(struct buf *b, const char *s, size_t n)
{
    buf_puts(b, "\"");
    buf_json_escape(b, s, n);
    buf_puts(b, "\"");
}

static void attr_str(struct buf *b, const char *key, const char *val)
{
    if (!val)
        return;
    put_comma(b);
    put_key(b, key, "stringValue");
    put_str(b, val, strlen(val));
    buf_puts(b, "}}");
}

static void attr_text(struct buf *b, const char *key, const char *val, size_t n)
{
    put_comma(b);
    put_key(b, key, "stringValue");
    put_str(b, val, n < TRACE_CONTENT_MAX ? n : TRACE_CONTENT_MAX);
    buf_puts(b, "}}");
}

static void attr_int(struct buf *b, const char *key, long v)
{
    put_comma(b);
    put_key(b, key, "intValue");
    buf_puts(b, "\"");
    put_i64(b, v);
    buf_puts(b, "\"}}");
}

static void attr_double(struct buf *b, const char *key, double v)
{
    put_comma(b);
    buf_printf(b, "{\"key\":\"%s\",\"value\":{\"doubleValue\":%.10g}}", key, v);
}

/* {"traceId",…,"attributes":[ — the caller adds attributes, then span_close. */
static void span_open(struct buf *b, const struct trace *t, const uint8_t *span_id,
                      const uint8_t *parent, const char *name, enum span_kind kind,
                      double start, double end)
{
    char tid[33], sid[17], pid[17];
    trace_hex(tid, t->trace_id, 16);
    trace_hex(sid, span_id, 8);
    buf_reserve(b, 2048);
    buf_puts(b, "{\"traceId\":\"");
    buf_append(b, tid, 32);
    buf_puts(b, "\",\"spanId\":\"");
    buf_append(b, sid, 16);
    buf_puts(b, "\",");
    if (memcmp(parent, "\0\0\0\0\0\0\0\0", 8)) {
        trace_hex(pid, parent, 8);
        buf_puts(b, "\"parentSpanId\":\"");
        buf_append(b, pid, 16);
        buf_puts(b, "\",");
    }
    if (t->tracestate) {
        buf_puts(b, "\"traceState\":");
        put_str(b, t->tracestate, strlen(t->tracestate));
        buf_puts(b, ",");
    }
    buf_puts(b, "\"name\":");
    put_str(b, name, strlen(name));
    buf_puts(b, ",\"kind\":");
    put_u64(b, (uint64_t)kind);
    buf_puts(b, ",\"startTimeUnixNano\":\"");
    put_u64(b, (uint64_t)(start * 1e9));
    buf_puts(b, "\",\"endTimeUnixNano\":\"");
    put_u64(b, (uint64_t)(end * 1e9));
    buf_puts(b, "\",\"attributes\":[");
}

/* Ends the attributes; an event (when named) at end; status error when error is set. */
static void span_close(struct buf *b, const char *event, double at, const char *error)
{
    buf_puts(b, "],\"events\":[");
    if (event) {
        buf_puts(b, "{\"timeUnixNano\":\"");
        put_u64(b, (uint64_t)(at * 1e9));
        buf_puts(b, "\",\"name\":\"");
        buf_puts(b, event);
        buf_puts(b, "\"}");
    }
    buf_puts(b, "],\"status\":{");
    if (error) {
        buf_puts(b, "\"code\":2,\"message\":");
        put_str(b, error, strlen(error));
    }
    buf_puts(b, "}}");
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

static void server_attributes(struct buf *b, const struct request *r)
{
    attr_str(b, "http.request.method", r->method);
    attr_str(b, "http.route", r->path);
    attr_int(b, "http.response.status_code", r->status);
    attr_str(b, "llmux.request_id", r->id);
    attr_str(b, "llmux.key", r->key ? r->key->name : NULL);
    attr_str(b, "llmux.model", r->model);
    attr_str(b, "llmux.outcome", outcome_name(r->outcome));
    attr_str(b, "llmux.upstream", r->upstream);
    attr_int(b, "llmux.attempts", (long)r->attempts);
    if (r->usage.seen || r->usage_estimated) {
        attr_int(b, "gen_ai.usage.input_tokens", r->usage.prompt);
        attr_int(b, "gen_ai.usage.output_tokens", r->usage.completion);
    }
    if (r->usage_estimated)
        attr_str(b, "llmux.usage", "estimated");
    if (r->priced)
        attr_double(b, "llmux.cost_usd", r->cost_usd);
}

void trace_end(struct request *r)
{
    struct trace *t = r->trace;
    if (!t)
        return;
    r->trace = NULL;
    if (t->sampled) {
        struct buf b = BUF_INIT;
        char name[64];
        double end = ev_time();
        snprintf(name, sizeof name, "%s %s", r->method, r->path);
        span_open(&b, t, t->span_id, t->parent_id, name, t->child ? SPAN_INTERNAL : SPAN_SERVER,
                  t->start, end);
        server_attributes(&b, r);
        char err[24] = "";
        if (r->status >= 500)
            snprintf(err, sizeof err, "%d", r->status);
        span_close(&b, outcome_event(r->outcome), end, r->status >= 500 ? err : NULL);
        trace_export_push(&b);
    }
    free(t->tracestate);
    free(t);
}

bool trace_attempt_begin(struct request *r, struct trace_attempt *a, char *line, size_t len)
{
    const struct trace *t = r->trace;
    if (!t)
        return false;
    char tid[33], sid[17];
    trace_random_id(a->span_id, sizeof a->span_id);
    a->start = ev_time();
    a->active = true;
    trace_hex(tid, t->trace_id, 16);
    trace_hex(sid, a->span_id, 8);
    snprintf(line, len, "traceparent: 00-%s-%s-%s", tid, sid, t->sampled ? "01" : "00");
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

void trace_attempt_end(struct request *r, struct trace_attempt *a,
                       const struct trace_attempt_info *in)
{
    if (!a->active)
        return;
    a->active = false;
    const struct trace *t = r->trace;
    if (!t || !t->sampled)
        return;
    struct buf b = BUF_INIT;
    char name[160];
    double end = ev_time();
    const char *op = operation_name(r->ep);
    snprintf(name, sizeof name, "%s %s", op, in->request_model ? in->request_model : "");
    span_open(&b, t, a->span_id, t->span_id, name, SPAN_CLIENT, a->start, end);
    attr_str(&b, "gen_ai.operation.name", op);
    attr_str(&b, "gen_ai.system", in->system);
    attr_str(&b, "gen_ai.request.model", in->request_model);
    attr_str(&b, "gen_ai.response.model", in->response_model);
    if (in->max_tokens >= 0)
        attr_int(&b, "gen_ai.request.max_tokens", in->max_tokens);
    if (in->input_tokens >= 0)
        attr_int(&b, "gen_ai.usage.input_tokens", in->input_tokens);
    if (in->output_tokens >= 0)
        attr_int(&b, "gen_ai.usage.output_tokens", in->output_tokens);
    if (in->status)
        attr_int(&b, "http.response.status_code", in->status);
    attr_str(&b, "llmux.upstream", in->upstream);
    attr_int(&b, "llmux.attempt", (long)in->attempt);
    attr_str(&b, "error.type", in->error);
    if (r->conf->tracing.capture_content && in->prompt)
        attr_text(&b, "gen_ai.prompt", in->prompt, in->prompt_len);
    if (r->conf->tracing.capture_content && in->answer)
        attr_text(&b, "gen_ai.completion", in->answer, in->answer_len);
    span_close(&b, in->event, end, in->error);
    trace_export_push(&b);
}

/* The client's token cap, read from its text without a tree (-1: none asked). */
static long max_tokens_of(const struct buf *raw)
{
    struct json_pick pk[] = {{"max_completion_tokens", 0, 0, false},
                             {"max_tokens", 0, 0, false}, {"max_output_tokens", 0, 0, false}};
    if (!raw || !raw->len || json_scan_pick(raw->data, raw->len, pk, 3) != 0)
        return -1;
    for (size_t i = 0; i < sizeof pk / sizeof pk[0]; i++) {
        char num[24];
        size_t n = pk[i].end - pk[i].start;
        if (!pk[i].found || n >= sizeof num)
            continue;
        memcpy(num, raw->data + pk[i].start, n);
        num[n] = '\0';
        char *end;
        long v = strtol(num, &end, 10);
        if (*end == '\0')      /* an integer as written (not 1.5, not a string) */
            return v;
    }
    return -1;
}

void trace_attempt_info_fill(struct trace_attempt_info *in, const struct request *r,
                             const struct conf_target *t, const struct codec *c,
                             const struct buf *raw, const struct buf *resp,
                             const struct buf *sent)
{
    bool anthropic = t->upstream->provider == PROVIDER_ANTHROPIC;
    size_t s, e;
    memset(in, 0, sizeof *in);
    /* the answer's model: Anthropic's from its message; an OpenAI body's "model" string */
    char *model = in->response_model_buf;
    size_t cap = sizeof in->response_model_buf;
    if (anthropic && c->anthropic.model)
        snprintf(model, cap, "%s", c->anthropic.model);
    else if (!r->stream && json_scan_member(resp->data, resp->len, "model", &s, &e) == 0 &&
             e - s >= 2 && e - s < cap && resp->data[s] == '"')
        snprintf(model, cap, "%.*s", (int)(e - s - 2), resp->data + s + 1);
    in->system = anthropic ? "anthropic" : "openai";
    in->upstream = t->upstream->name;
    in->request_model = t->model ? t->model : r->model;
    in->response_model = in->response_model_buf[0] ? in->response_model_buf : NULL;
    in->input_tokens = c->usage.seen ? c->usage.prompt : -1;
    in->output_tokens = c->usage.seen ? c->usage.completion : -1;
    in->max_tokens = max_tokens_of(raw);
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
