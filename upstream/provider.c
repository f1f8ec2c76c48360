/* provider: codec table (OpenAI pass-through, Anthropic translation) and shared helpers:
 * error shapes, usage, the model splice and SSE framing. */
#include "common/json_write.h"
#include "upstream/provider.h"

#include "common/json_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct codec_ops codec_openai;
extern const struct codec_ops codec_anthropic;

void codec_init(struct codec *c, enum conf_provider p, enum endpoint ep,
                const char *model, long created)
{
    memset(c, 0, sizeof *c);
    c->ops = p == PROVIDER_ANTHROPIC ? &codec_anthropic : &codec_openai;
    c->ep = ep;
    c->model = model;
    if (p == PROVIDER_ANTHROPIC)
        anthropic_stream_init(&c->anthropic, model, created);
    else if (ep == EP_MESSAGES)
        messages_stream_init(&c->messages, model);
}

void codec_free(struct codec *c)
{
    if (c->ops == &codec_anthropic)
        anthropic_stream_free(&c->anthropic);
    else
        messages_stream_free(&c->messages);
    c->ops = NULL;
}

bool codec_supports(enum conf_provider p, enum endpoint ep)
{
    const struct codec_ops *ops = p == PROVIDER_ANTHROPIC ? &codec_anthropic : &codec_openai;
    return ops->path(ep) != NULL;
}

const char *anthropic_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

json_t *anthropic_error(int status, const char *message)
{
    return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                     anthropic_error_type(status), "message", message);
}

/* Only "model" changes. With the client's text at hand, its bytes are spliced around the new
 * value: no tree copy, no re-serialisation, and the body goes upstream as the client wrote it. */
int codec_splice_model(json_t *body, const struct buf *raw, const char *model, struct buf *out,
                       char *err, size_t errlen)
{
    size_t start, end;
    if (raw && raw->len && json_scan_member(raw->data, raw->len, "model", &start, &end) == 0) {
        if (buf_reserve(out, raw->len + strlen(model) + 16) == 0) {
            buf_append(out, raw->data, start);
            buf_puts(out, "\"");
            buf_json_escape(out, model, strlen(model));
            buf_puts(out, "\"");
            buf_append(out, raw->data + end, raw->len - end);
            return 0;
        }
    }
    /* No text at hand (a gather item): written with the client's numbers kept (json_write) */
    int rc = json_object_set_new(body, "model", json_string(model)) == 0
                 ? json_write(body, out) : -1;
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

int codec_sse_frame(struct buf *out, const char *event, size_t elen, const char *data,
                    size_t dlen)
{
    int rc = 0;
    if (elen)
        rc |= buf_puts(out, "event: ") | buf_append(out, event, elen) | buf_puts(out, "\n");
    return rc | buf_puts(out, "data: ") | buf_append(out, data, dlen) | buf_puts(out, "\n\n");
}

json_t *openai_error(const char *message, const char *type, const char *param, const char *code)
{
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type", type,
                     "param", param, "code", code);
}

/* Counts a client could fake through a relayed answer are kept non-negative. */
static long usage_count(const json_t *v)
{
    json_int_t n = json_integer_value(v);
    return n > 0 ? (long)n : 0;
}

void openai_usage(const json_t *obj, struct usage *out)
{
    json_t *u = json_object_get(obj, "usage");
    if (!json_is_object(u))
        return;
    json_t *p = json_object_get(u, "prompt_tokens"), *c = json_object_get(u, "completion_tokens");
    if (!p && !c) {     /* Anthropic messages and OpenAI responses name them otherwise */
        p = json_object_get(u, "input_tokens");
        c = json_object_get(u, "output_tokens");
    }
    if (!json_is_integer(p) && !json_is_integer(c))
        return;
    out->seen = true;
    out->prompt += usage_count(p);
    out->completion += usage_count(c);
    json_t *d = json_object_get(u, "prompt_tokens_details");
    if (!d)
        d = json_object_get(u, "input_tokens_details");
    long cached = usage_count(json_object_get(d, "cached_tokens"));
    /* cached tokens are part of prompt_tokens: never more of them than the prompt had */
    out->cache_read += cached < usage_count(p) ? cached : usage_count(p);
}

bool openai_stream_usage_asked(const json_t *body)
{
    return json_is_true(json_object_get(json_object_get(body, "stream_options"),
                                        "include_usage"));
}

void usage_add(struct usage *to, const struct usage *u)
{
    to->prompt += u->prompt;
    to->completion += u->completion;
    to->cache_read += u->cache_read;
    to->cache_write += u->cache_write;
    to->seen |= u->seen;
}

void openai_usage_text(const char *body, size_t len, struct usage *out)
{
    size_t start, end;
    if (json_scan_member(body, len, "usage", &start, &end) < 0)
        return;
    json_t *u = json_loadb(body + start, end - start, 0, NULL);
    json_t *wrap = json_pack("{s:o}", "usage", u ? u : json_null());
    openai_usage(wrap, out);
    json_decref(wrap);
}
