/* provider: codec table (OpenAI pass-through, Anthropic translation) and shared helpers:
 * error shapes, usage, the model splice and SSE framing. */
#include "common/json_write.h"
#include "upstream/provider.h"

#include "common/json_scan.h"
#include "common/json_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
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
    struct json_pick pk[] = {{"model", 0, 0, false}};     /* found as the router found it */
    if (raw && raw->len && json_scan_pick(raw->data, raw->len, pk, 1) == 0 && pk[0].found) {
        size_t start = pk[0].start, end = pk[0].end;
        if (buf_reserve(out, raw->len + strlen(model) + 16) == 0) {
            buf_append(out, raw->data, start);
            buf_puts(out, "\"");
            buf_json_escape(out, model, strlen(model));
            buf_puts(out, "\"");
            buf_append(out, raw->data + end, raw->len - end);
            return 0;
        }
    }
    /* No text at hand: written with the client's numbers kept (json_write) */
    int rc = body && json_object_set_new(body, "model", json_string(model)) == 0
                 ? json_write(body, out) : -1;
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

json_t *codec_tree(json_t *body, const struct buf *raw, char *err, size_t errlen, int *rc)
{
    int over = 0;
    json_t *tree = body ? json_incref(body)
                        : json_valid_load(raw ? raw->data : NULL, raw ? raw->len : 0, 0, &over);
    *rc = tree ? 0 : over ? CODEC_OVER_BUDGET : -1;
    if (!tree)
        snprintf(err, errlen, over ? "the body has too many JSON values for its size to be "
                 "translated for this model's upstream" : "the body is not a JSON object");
    return tree;
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

int usage_take(const json_t *v, long *out)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > USAGE_MAX)
        return -1;
    *out = (long)json_integer_value(v);
    return 1;
}

long usage_add(long a, long b)
{
    long s;
    return __builtin_add_overflow(a, b, &s) ? (b < 0 ? LONG_MIN : LONG_MAX) : s;
}

unsigned openai_usage(const json_t *obj, long *prompt, long *completion)
{
    json_t *u = json_object_get(obj, "usage");
    long v;
    unsigned bad = 0;
    if (!json_is_object(u))
        return 0;
    json_t *pt = json_object_get(u, "prompt_tokens"), *ct = json_object_get(u, "completion_tokens");
    if (!pt && !ct) {     /* Anthropic messages and OpenAI responses name them otherwise */
        pt = json_object_get(u, "input_tokens");
        ct = json_object_get(u, "output_tokens");
    }
    int rc = usage_take(pt, &v);
    if (rc > 0)
        *prompt = usage_add(*prompt, v);
    bad += rc < 0;
    rc = usage_take(ct, &v);
    if (rc > 0)
        *completion = usage_add(*completion, v);
    bad += rc < 0;
    return bad;
}

unsigned openai_usage_text(const char *body, size_t len, long *prompt, long *completion)
{
    size_t start, end;
    if (json_scan_member(body, len, "usage", &start, &end) < 0)
        return 0;
    json_t *u = json_valid_load(body + start, end - start, 0, NULL);
    json_t *wrap = json_pack("{s:o}", "usage", u ? u : json_null());
    unsigned bad = openai_usage(wrap, prompt, completion);
    json_decref(wrap);
    return bad;
}
