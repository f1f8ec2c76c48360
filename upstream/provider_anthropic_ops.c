/* provider_anthropic_ops: the Anthropic codec's seat in the codec table — wires the pure
 * translation functions of provider_anthropic.c to struct codec_ops, and relays Anthropic
 * clients (/v1/messages, count_tokens) as they came, with only the model spliced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "common/json_valid.h"
#include "common/json_write.h"
#include "upstream/provider.h"

static const char *anthropic_path(enum endpoint ep)
{
    switch (ep) {
    case EP_CHAT: case EP_MESSAGES: return "/v1/messages";
    case EP_COUNT_TOKENS: return "/v1/messages/count_tokens";
    default: return NULL;   /* no completions, embeddings or responses API */
    }
}

static int anthropic_encode(enum endpoint ep, json_t *body, const struct buf *raw,
                            const char *model, unsigned default_max_tokens, struct buf *out,
                            char *err, size_t errlen, char *param, size_t paramlen)
{
    if (ep != EP_CHAT)
        return codec_splice_model(body, raw, model, out, err, errlen);
    int rc;
    json_t *tree = codec_tree(body, raw, err, errlen, &rc);
    if (!tree)
        return rc;
    json_t *msg = anthropic_encode_chat(tree, model, default_max_tokens, err, errlen, param,
                                        paramlen);
    json_decref(tree);      /* the tree lives only while the upstream's bytes are made */
    rc = msg ? json_write(msg, out) : -1;   /* numbers as the client wrote them */
    json_decref(msg);
    return rc;
}

/* A client of /v1/messages picks its API version; chat translation is written against ours. */
static struct curl_slist *anthropic_auth(const struct codec *c, const struct conf_upstream *up,
                                         struct curl_slist *h)
{
    char version[64];
    snprintf(version, sizeof version, "anthropic-version: %s",
             c->ep != EP_CHAT && c->anthropic_version ? c->anthropic_version
                                                      : ANTHROPIC_VERSION);
    h = curl_slist_append(h, version);
    if (up->api_key && up->api_key[0]) {
        char line[1024];
        int n = snprintf(line, sizeof line, "x-api-key: %s", up->api_key);
        h = curl_slist_append(h, line);
        explicit_bzero(line, n > 0 && (size_t)n < sizeof line ? (size_t)n : sizeof line);
    }
    return h;
}

static int relay_body(struct codec *c, enum endpoint ep, const char *in, size_t len)
{
    size_t start, end;
    if (json_valid_object(in, len) < 0)
        return -1;
    if (ep == EP_MESSAGES && json_scan_member(in, len, "usage", &start, &end) == 0) {
        json_t *u = json_valid_load(in + start, end - start, 0, NULL);
        c->usage_invalid += anthropic_usage(u, &c->usage);
        json_decref(u);
    }
    return 0;
}

static int anthropic_body(struct codec *c, enum endpoint ep, const char *in, size_t len,
                          struct buf *out)
{
    if (ep != EP_CHAT)
        return relay_body(c, ep, in, len);
    json_t *msg = json_valid_load(in, len, 0, NULL);
    json_t *oa = json_is_object(msg) ? anthropic_decode_chat(msg, c->model) : NULL;
    struct usage u = {0};
    c->usage_invalid += anthropic_usage(json_object_get(msg, "usage"), &u);
    if (oa)
        usage_add(&c->usage, &u);
    json_decref(msg);
    if (!oa)
        return -1;
    int rc = json_write(oa, out);
    json_decref(oa);
    return rc;
}

/* Events go out as they came. Only those with usage (message_start, message_delta) or an error
 * are parsed; message_stop ends the stream. */
static int relay_event(struct codec *c, const char *event, size_t elen, const char *data,
                       size_t dlen, struct buf *out)
{
    bool start = elen == 13 && !memcmp(event, "message_start", 13);
    bool delta = elen == 13 && !memcmp(event, "message_delta", 13);
    if (elen == 5 && !memcmp(event, "error", 5)) {
        json_t *e = anthropic_decode_error(500, data, dlen);
        char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
        buf_reset(out);
        buf_puts(out, text ? text : "{}");
        free(text);
        json_decref(e);
        return -1;
    }
    if (start || delta) {
        json_t *j = json_valid_load(data, dlen, 0, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            buf_reset(out);
            buf_puts(out, "{\"error\":{\"message\":\"upstream sent an undecodable stream "
                          "event\",\"type\":\"upstream_error\"}}");
            return -1;
        }
        const json_t *u = json_object_get(start ? json_object_get(j, "message") : j, "usage");
        c->usage_invalid += start ? anthropic_usage(u, &c->usage)
                                  : anthropic_usage_delta(u, &c->usage);
        json_decref(j);
    }
    if (elen == 12 && !memcmp(event, "message_stop", 12))
        c->stream_done = true;
    return codec_sse_frame(out, event, elen, data, dlen);
}

static int anthropic_event(struct codec *c, const char *event, size_t elen, const char *data,
                           size_t dlen, struct buf *out)
{
    if (c->ep != EP_CHAT)
        return relay_event(c, event, elen, data, dlen, out);
    int rc = anthropic_stream_event(&c->anthropic, event, elen, data, dlen, out);
    c->stream_done = c->anthropic.done;
    c->usage = c->anthropic.usage;
    c->usage_invalid = c->anthropic.usage_invalid;
    return rc;
}

const struct codec_ops codec_anthropic = {
    .name = "anthropic",
    .path = anthropic_path,
    .encode = anthropic_encode,
    .auth = anthropic_auth,
    .decode_body = anthropic_body,
    .decode_event = anthropic_event,
    .decode_error = anthropic_decode_error,
};
