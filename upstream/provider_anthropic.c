/* provider_anthropic: Anthropic Messages API → OpenAI chat completions, as pure jansson
 * transformations (responses, errors, stream events); requests are encoded in
 * provider_anthropic_encode.c, HTTP and headers live elsewhere. */
#include "upstream/provider_anthropic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/json_valid.h"
#include "common/json_write.h"
#include "upstream/provider.h"

/* Bytes of an unrecognised upstream body quoted back in an error message: enough to tell an
 * HTML proxy page from a truncated JSON body, too little to relay a whole document. */
#define ANTHROPIC_SNIPPET_MAX 200


static const char *dec_finish(const char *stop_reason);
static json_t *dec_usage(const struct usage *u);
static json_t *err_json(const char *msg, const char *type, const char *code);
static json_t *err_from_doc(const json_t *doc);
static json_t *err_generic(long status, const char *body, size_t len);
static int stream_dispatch(struct anthropic_stream *s, const char *ev, size_t elen,
                           const json_t *doc, struct buf *out);
static int stream_chunk(struct anthropic_stream *s, json_t *delta, const char *finish,
                        json_t *usage, struct buf *out);

/* ---- response --------------------------------------------------------------------------- */

json_t *anthropic_decode_chat(const json_t *msg, const char *model)
{
    const char *own = json_string_value(json_object_get(msg, "model"));
    if (own && own[0])
        model = own;
    const json_t *content = json_object_get(msg, "content");
    if (!json_is_array(content))
        return NULL;
    struct usage u = {0};
    anthropic_usage(json_object_get(msg, "usage"), &u);   /* counted by the caller */
    const char *id = json_string_value(json_object_get(msg, "id"));
    struct buf text = BUF_INIT;
    json_t *calls = json_array(), *message = NULL, *res = NULL;
    int has_text = 0;
    size_t i;
    const json_t *b;
    if (!calls)
        goto done;
    json_array_foreach(content, i, b) {
        const char *type = json_string_value(json_object_get(b, "type"));
        const json_t *t = json_object_get(b, "text");
        if (type && !strcmp(type, "text") && json_is_string(t)) {
            has_text = 1;
            if (buf_append(&text, json_string_value(t), json_string_length(t)) < 0)
                goto done;
        } else if (type && !strcmp(type, "tool_use")) {
            const json_t *input = json_object_get(b, "input");
            char *args = input ? json_write_text(input) : NULL;
            json_t *call = json_pack("{s:s?,s:s,s:{s:s?,s:s}}",
                                     "id", json_string_value(json_object_get(b, "id")),
                                     "type", "function", "function",
                                     "name", json_string_value(json_object_get(b, "name")),
                                     "arguments", args ? args : "{}");
            free(args);
            if (json_array_append_new(calls, call) < 0)
                goto done;
        }
    }
    message = json_pack("{s:s,s:o}", "role", "assistant", "content",
                        has_text ? json_stringn(text.data ? text.data : "", text.len)
                                 : json_null());
    if (!message || (json_array_size(calls) && json_object_set(message, "tool_calls", calls)))
        goto done;
    res = json_pack("{s:o,s:s,s:I,s:s,s:[{s:i,s:O,s:s}],s:o}",
                    "id", json_sprintf("chatcmpl-%s", id ? id : ""),
                    "object", "chat.completion", "created", (json_int_t)time(NULL),
                    "model", model ? model : "",
                    "choices", "index", 0, "message", message, "finish_reason",
                    dec_finish(json_string_value(json_object_get(msg, "stop_reason"))),
                    "usage", dec_usage(&u));
done:
    json_decref(message);
    json_decref(calls);
    buf_free(&text);
    return res;
}

/* pause_turn and anything newer end the turn normally as far as an OpenAI client can tell. */
static const char *dec_finish(const char *stop_reason)
{
    if (!stop_reason)
        return "stop";
    if (!strcmp(stop_reason, "max_tokens"))
        return "length";
    if (!strcmp(stop_reason, "tool_use"))
        return "tool_calls";
    if (!strcmp(stop_reason, "refusal"))
        return "content_filter";
    return "stop";
}

/* A count when valid (usage_take), else 0; *bad counts it when present but invalid. */
static long dec_count(const json_t *usage, const char *name, unsigned *bad)
{
    long v = 0;
    int rc = usage_take(json_object_get(usage, name), &v);
    *bad += rc < 0;
    return rc > 0 ? v : 0;
}

/* Anthropic counts cached prompt tokens apart from input_tokens; OpenAI's prompt_tokens
 * includes them, and that is what a client compares against its own accounting. The kinds
 * stay apart in u too, each priced at its own rate. */
unsigned anthropic_usage(const json_t *usage, struct usage *u)
{
    unsigned bad = 0;
    long out;
    if (!json_is_object(usage))
        return 0;
    long input = dec_count(usage, "input_tokens", &bad);
    u->cache_read = dec_count(usage, "cache_read_input_tokens", &bad);
    u->cache_write = dec_count(usage, "cache_creation_input_tokens", &bad);
    u->prompt = usage_sum(usage_sum(input, u->cache_read), u->cache_write);
    int rc = usage_take(json_object_get(usage, "output_tokens"), &out);
    bad += rc < 0;
    if (rc > 0)
        u->completion = out;
    u->seen = true;
    return bad;
}

unsigned anthropic_usage_delta(const json_t *usage, struct usage *u)
{
    long v;
    if (json_is_integer(json_object_get(usage, "input_tokens")))
        return anthropic_usage(usage, u);
    int rc = usage_take(json_object_get(usage, "output_tokens"), &v);
    if (rc > 0) {
        u->completion = v;
        u->seen = true;
    }
    return rc < 0;
}

/* OpenAI's shape, cache reads as prompt_tokens_details.cached_tokens (as OpenAI reports them). */
static json_t *dec_usage(const struct usage *u)
{
    json_t *j = json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)u->prompt,
                          "completion_tokens", (json_int_t)u->completion, "total_tokens",
                          (json_int_t)usage_total(u));
    if (j && u->cache_read > 0)
        json_object_set_new(j, "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens", (json_int_t)u->cache_read));
    return j;
}

/* ---- errors ----------------------------------------------------------------------------- */

/* Anthropic error type → OpenAI's type and code. OpenAI files "not found" and "too large"
 * under invalid_request_error and 5xx-class failures under server_error. */
static const struct err_kind {
    const char *anthropic, *type, *code;
} err_kinds[] = {
    {"invalid_request_error", "invalid_request_error", NULL},
    {"authentication_error", "authentication_error", "invalid_api_key"},
    {"permission_error", "permission_error", "permission_denied"},
    {"not_found_error", "invalid_request_error", "not_found"},
    {"request_too_large", "invalid_request_error", "request_too_large"},
    {"rate_limit_error", "rate_limit_error", "rate_limit_exceeded"},
    {"billing_error", "insufficient_quota", "insufficient_quota"},
    {"api_error", "server_error", NULL},
    {"overloaded_error", "server_error", "overloaded"},
    {"timeout_error", "server_error", "timeout"},
};

json_t *anthropic_decode_error(long status, const char *body, size_t len)
{
    json_t *doc = body && len ? json_valid_load(body, len, 0, NULL) : NULL;
    json_t *res = err_from_doc(doc);
    json_decref(doc);
    return res ? res : err_generic(status, body, len);
}

static json_t *err_json(const char *msg, const char *type, const char *code)
{
    return json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message", msg, "type", type, "param",
                     "code", code);
}

/* {"error":{"type":T,"message":M}}, Anthropic's shape (also accepted without the outer type). */
static json_t *err_from_doc(const json_t *doc)
{
    const json_t *err = json_object_get(doc, "error");
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *type = json_string_value(json_object_get(err, "type"));
    if (!msg)
        return NULL;
    for (size_t i = 0; type && i < sizeof err_kinds / sizeof err_kinds[0]; i++) {
        if (!strcmp(type, err_kinds[i].anthropic))
            return err_json(msg, err_kinds[i].type, err_kinds[i].code);
    }
    return err_json(msg, "upstream_error", NULL);
}

/* The start of the body goes into the message as printable ASCII only (whitespace runs folded,
 * other bytes as '?'): it is for a human reading the error, and can't break the JSON around it. */
static json_t *err_generic(long status, const char *body, size_t len)
{
    struct buf msg = BUF_INIT;
    struct buf snip = BUF_INIT;
    json_t *res = NULL;
    size_t n = len < ANTHROPIC_SNIPPET_MAX ? len : ANTHROPIC_SNIPPET_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)body[i];
        int space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
        if (space && (snip.len == 0 || snip.data[snip.len - 1] == ' '))
            continue;
        char ch = space ? ' ' : (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        if (buf_append(&snip, &ch, 1) < 0)
            goto done;
    }
    while (snip.len && snip.data[snip.len - 1] == ' ')
        snip.len--;
    if (buf_printf(&msg, "upstream returned status %ld", status) < 0 ||
        (snip.len && buf_printf(&msg, ": %.*s%s", (int)snip.len, snip.data,
                                len > n ? "..." : "") < 0))
        goto done;
    res = err_json(msg.data, "upstream_error", NULL);
done:
    buf_free(&snip);
    buf_free(&msg);
    return res;
}

/* ---- stream ----------------------------------------------------------------------------- */

void anthropic_stream_init(struct anthropic_stream *s, const char *model, long created)
{
    memset(s, 0, sizeof *s);
    s->model = strdup(model ? model : "");
    s->created = created;
}

void anthropic_stream_free(struct anthropic_stream *s)
{
    free(s->model);
    s->model = NULL;
}

/* The event name decides; when the upstream left it out, the data's own "type" (Anthropic
 * repeats it there) stands in. On failure out is emptied and holds just the error object. */
int anthropic_stream_event(struct anthropic_stream *s, const char *event, size_t elen,
                           const char *data, size_t dlen, struct buf *out)
{
    json_t *doc = json_valid_load(data ? data : "", dlen, 0, NULL);
    json_t *err = NULL;
    const char *type = json_string_value(json_object_get(doc, "type"));
    if (elen == 0 && type) {
        event = type;
        elen = strlen(type);
    }
    int is_error = elen == 5 && !memcmp(event, "error", 5);
    int rc = -1;
    if (json_is_object(doc) && !is_error)
        rc = stream_dispatch(s, event, elen, doc, out);
    if (rc < 0) {
        err = is_error ? err_from_doc(doc) : NULL;
        if (!err)
            err = err_json(is_error ? "upstream reported an error mid-stream"
                                    : "upstream sent an undecodable stream event",
                           "upstream_error", NULL);
        char *text = err ? json_dumps(err, JSON_COMPACT) : NULL;
        buf_reset(out);
        if (text)
            buf_puts(out, text);
        free(text);
    }
    json_decref(err);
    json_decref(doc);
    return rc;
}

static int ev_is(const char *ev, size_t elen, const char *name)
{
    return elen == strlen(name) && !memcmp(ev, name, elen);
}

static int stream_message_start(struct anthropic_stream *s, const json_t *doc, struct buf *out)
{
    const json_t *m = json_object_get(doc, "message");
    const char *id = json_string_value(json_object_get(m, "id"));
    if (!id)
        return -1;
    snprintf(s->id, sizeof s->id, "chatcmpl-%s", id);
    const char *own = json_string_value(json_object_get(m, "model"));
    char *copy = own && own[0] ? strdup(own) : NULL;
    if (copy) {
        free(s->model);
        s->model = copy;
    }
    s->usage_invalid += anthropic_usage(json_object_get(m, "usage"), &s->usage);
    return stream_chunk(s, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL,
                        NULL, out);
}

/* A tool_use block opens an OpenAI tool call (id and name now, arguments in deltas). Text blocks
 * open empty (their text comes in deltas), so they and other kinds give nothing here. */
static int stream_block_start(struct anthropic_stream *s, const json_t *doc, struct buf *out)
{
    const json_t *b = json_object_get(doc, "content_block");
    const char *type = json_string_value(json_object_get(b, "type"));
    if (!type)
        return -1;
    if (strcmp(type, "tool_use"))
        return 0;
    const char *id = json_string_value(json_object_get(b, "id"));
    const char *name = json_string_value(json_object_get(b, "name"));
    if (!id || !name)
        return -1;
    json_t *delta = json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls", "index",
                              s->tool_calls++, "id", id, "type", "function", "function", "name",
                              name, "arguments", "");
    return stream_chunk(s, delta, NULL, NULL, out);
}

/* Thinking, signature and citation deltas have no OpenAI counterpart and are dropped. */
static int stream_block_delta(struct anthropic_stream *s, const json_t *doc, struct buf *out)
{
    const json_t *d = json_object_get(doc, "delta");
    const char *type = json_string_value(json_object_get(d, "type"));
    if (!type)
        return -1;
    if (!strcmp(type, "text_delta")) {
        const json_t *t = json_object_get(d, "text");
        if (!json_is_string(t))
            return -1;
        return stream_chunk(s, json_pack("{s:O}", "content", (json_t *)t), NULL, NULL, out);
    }
    if (!strcmp(type, "input_json_delta")) {
        const char *pj = json_string_value(json_object_get(d, "partial_json"));
        /* Blocks stream one at a time, so the arguments belong to the last tool call opened. */
        if (!pj || s->tool_calls == 0)
            return -1;
        json_t *delta = json_pack("{s:[{s:i,s:{s:s}}]}", "tool_calls", "index",
                                  s->tool_calls - 1, "function", "arguments", pj);
        return stream_chunk(s, delta, NULL, NULL, out);
    }
    return 0;
}

static int stream_message_delta(struct anthropic_stream *s, const json_t *doc, struct buf *out)
{
    const json_t *d = json_object_get(doc, "delta");
    const json_t *u = json_object_get(doc, "usage");
    if (!json_is_object(d))
        return -1;
    s->usage_invalid += anthropic_usage_delta(u, &s->usage);
    const char *finish = dec_finish(json_string_value(json_object_get(d, "stop_reason")));
    return stream_chunk(s, json_object(), finish,
                        dec_usage(&s->usage), out);
}

static int stream_dispatch(struct anthropic_stream *s, const char *ev, size_t elen,
                           const json_t *doc, struct buf *out)
{
    if (ev_is(ev, elen, "message_start"))
        return stream_message_start(s, doc, out);
    if (ev_is(ev, elen, "content_block_start"))
        return stream_block_start(s, doc, out);
    if (ev_is(ev, elen, "content_block_delta"))
        return stream_block_delta(s, doc, out);
    if (ev_is(ev, elen, "message_delta"))
        return stream_message_delta(s, doc, out);
    if (ev_is(ev, elen, "message_stop")) {
        s->done = true;
        return buf_puts(out, "data: [DONE]\n\n");
    }
    /* ping, content_block_stop, and event types added after this was written. */
    return 0;
}

/* Appends one "data: {chunk}\n\n" frame; takes ownership of delta and usage. */
static int stream_chunk(struct anthropic_stream *s, json_t *delta, const char *finish,
                        json_t *usage, struct buf *out)
{
    char *text = NULL;
    int rc = -1;
    json_t *chunk = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s?}]}", "id", s->id,
                              "object", "chat.completion.chunk", "created",
                              (json_int_t)s->created, "model", s->model ? s->model : "",
                              "choices", "index", 0, "delta", delta, "finish_reason", finish);
    if (!chunk || (usage && json_object_set(chunk, "usage", usage) < 0))
        goto done;
    text = json_write_text(chunk);
    if (text && buf_printf(out, "data: %s\n\n", text) == 0)
        rc = 0;
done:
    free(text);
    json_decref(chunk);
    json_decref(usage);
    return rc;
}
