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

long usage_sum(long a, long b)
{
    long s;
    return __builtin_add_overflow(a, b, &s) ? (b < 0 ? LONG_MIN : LONG_MAX) : s;
}

/* Takes v into *n when valid (1), 0 when absent; *bad counts it when invalid. */
static int usage_field(const json_t *v, long *n, unsigned *bad)
{
    int rc = usage_take(v, n);
    *bad += rc < 0;
    return rc > 0;
}

unsigned openai_usage(const json_t *obj, struct usage *out)
{
    json_t *u = json_object_get(obj, "usage");
    long p = 0, c = 0, cached = 0;
    unsigned bad = 0;
    if (!json_is_object(u))
        return 0;
    json_t *pt = json_object_get(u, "prompt_tokens"), *ct = json_object_get(u, "completion_tokens");
    if (!pt && !ct) {     /* Anthropic messages and OpenAI responses name them otherwise */
        pt = json_object_get(u, "input_tokens");
        ct = json_object_get(u, "output_tokens");
    }
    int seen = usage_field(pt, &p, &bad) | usage_field(ct, &c, &bad);
    if (!seen)
        return bad;
    out->seen = true;
    out->prompt = usage_sum(out->prompt, p);
    out->completion = usage_sum(out->completion, c);
    json_t *d = json_object_get(u, "prompt_tokens_details");
    if (!d)
        d = json_object_get(u, "input_tokens_details");
    usage_field(json_object_get(d, "cached_tokens"), &cached, &bad);
    /* cached tokens are part of prompt_tokens: never more of them than the prompt had */
    out->cache_read = usage_sum(out->cache_read, cached < p ? cached : p);
    return bad;
}

bool openai_stream_usage_asked(const char *p, size_t n)
{
    struct json_pick so[] = {{"stream_options", 0, 0, false}};
    struct json_pick iu[] = {{"include_usage", 0, 0, false}};
    if (!p || !json_scan_may_have(p, n, "stream_options") ||
        json_scan_pick(p, n, so, 1) != 0 || !so[0].found || p[so[0].start] != '{')
        return false;
    p += so[0].start;
    return json_scan_pick(p, so[0].end - so[0].start, iu, 1) == 0 && iu[0].found &&
           iu[0].end - iu[0].start == 4 && !memcmp(p + iu[0].start, "true", 4);
}

void usage_add(struct usage *to, const struct usage *u)
{
    to->prompt = usage_sum(to->prompt, u->prompt);
    to->completion = usage_sum(to->completion, u->completion);
    to->cache_read = usage_sum(to->cache_read, u->cache_read);
    to->cache_write = usage_sum(to->cache_write, u->cache_write);
    to->seen |= u->seen;
}

long usage_total(const struct usage *u)
{
    return usage_sum(u->prompt, u->completion);
}

/* One usage field as openai_usage reads it from a tree: absent, null, an integer, or anything
 * else (a string, a real, a container: invalid). */
struct usage_val {
    enum { UV_ABSENT, UV_NULL, UV_INT, UV_OTHER } kind;
    long long n;
};

static struct usage_val usage_val(const char *p, const struct json_pick *pk)
{
    struct usage_val v = {pk->found ? UV_OTHER : UV_ABSENT, 0};
    const char *s = p + pk->start, *e = p + pk->end;
    if (!pk->found)
        return v;
    if (e - s == 4 && !memcmp(s, "null", 4))
        return (struct usage_val){UV_NULL, 0};
    bool neg = s < e && *s == '-';
    const char *d = s + neg;
    if (d == e)
        return v;
    for (const char *q = d; q < e; q++)
        if (*q < '0' || *q > '9')
            return v;           /* a real (fraction or exponent): not a count */
    for (; d < e; d++)
        v.n = v.n * 10 + (*d - '0');     /* < 19 digits: usage_text_plain checked */
    v.kind = UV_INT;
    v.n = neg ? -v.n : v.n;
    return v;
}

/* usage_field on a scanned value: the same verdicts as usage_take on jansson's tree. */
static int usage_val_take(struct usage_val v, long *n, unsigned *bad)
{
    if (v.kind == UV_ABSENT || v.kind == UV_NULL)
        return 0;
    if (v.kind != UV_INT || v.n < 0 || v.n > USAGE_MAX) {
        (*bad)++;
        return 0;
    }
    *n = (long)v.n;
    return 1;
}

/* Text jansson reads exactly as the scanner does: no escapes (a \u0000 or a lone surrogate
 * fails jansson's whole parse, an escaped name must be decoded), no number that could overflow
 * jansson's integer or real (19 digits or more, an exponent), and small enough that its tree
 * is within json_valid_load's budget (at most 121 bytes of tree per byte of text, so 16 KiB
 * stay under the budget's 2 MiB). */
static bool usage_text_plain(const char *p, size_t n)
{
    if (n > 16384 || memchr(p, '\\', n))
        return false;
    bool in_str = false;
    unsigned digits = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '"')
            in_str = !in_str;
        if (in_str)
            continue;
        if ((c == 'e' || c == 'E') && i && (p[i - 1] >= '0' && p[i - 1] <= '9'))
            return false;
        digits = c >= '0' && c <= '9' ? digits + 1 : c == '.' ? digits : 0;
        if (digits >= 19)
            return false;
    }
    return true;
}

/* openai_usage over the usage object's text, read in place; -1 when the text needs jansson. */
static int usage_scan(const char *u, size_t n, struct usage *out, unsigned *bad)
{
    enum { PT, CT, IT, OT, PD, ID, NPICK };
    struct json_pick pk[NPICK] = {
        {"prompt_tokens", 0, 0, false}, {"completion_tokens", 0, 0, false},
        {"input_tokens", 0, 0, false}, {"output_tokens", 0, 0, false},
        {"prompt_tokens_details", 0, 0, false}, {"input_tokens_details", 0, 0, false},
    };
    if (!usage_text_plain(u, n) || json_scan_pick(u, n, pk, NPICK) > 0)
        return -1;      /* a name twice: jansson keeps the last copy */
    long p = 0, c = 0, cached = 0;
    int ip = PT, ic = CT;
    if (!pk[PT].found && !pk[CT].found)
        ip = IT, ic = OT;
    int seen = usage_val_take(usage_val(u, &pk[ip]), &p, bad) |
               usage_val_take(usage_val(u, &pk[ic]), &c, bad);
    if (!seen)
        return 0;
    out->seen = true;
    out->prompt = usage_sum(out->prompt, p);
    out->completion = usage_sum(out->completion, c);
    const struct json_pick *d = pk[PD].found ? &pk[PD] : &pk[ID];
    if (d->found && u[d->start] == '{') {
        struct json_pick ct[] = {{"cached_tokens", 0, 0, false}};
        if (json_scan_pick(u + d->start, d->end - d->start, ct, 1) > 0)
            return -1;
        usage_val_take(usage_val(u + d->start, &ct[0]), &cached, bad);
    }
    out->cache_read = usage_sum(out->cache_read, cached < p ? cached : p);
    return 0;
}

/* The answer's usage without a tree when its text allows (nearly always), else by jansson. */
unsigned openai_usage_text(const char *body, size_t len, struct usage *out)
{
    size_t start, end;
    unsigned bad = 0;
    if (json_scan_member(body, len, "usage", &start, &end) < 0)
        return 0;
    if (body[start] != '{')
        return 0;
    struct usage scanned = *out;
    if (usage_scan(body + start, end - start, &scanned, &bad) == 0) {
        *out = scanned;
        return bad;
    }
    json_t *u = json_valid_load(body + start, end - start, 0, NULL);
    json_t *wrap = json_pack("{s:o}", "usage", u ? u : json_null());
    bad = openai_usage(wrap, out);
    json_decref(wrap);
    return bad;
}
