/* provider_anthropic_ops: the Anthropic codec's seat in the codec table — wires the pure
 * translation functions of provider_anthropic.c to struct codec_ops. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_write.h"
#include "upstream/provider.h"

static const char *anthropic_path(enum endpoint ep)
{
    return ep == EP_CHAT ? "/v1/messages" : NULL;   /* no completions/embeddings API */
}

static int anthropic_encode(enum endpoint ep, json_t *body, const struct buf *raw,
                            const char *model, unsigned default_max_tokens, struct buf *out,
                            char *err, size_t errlen, char *param, size_t paramlen)
{
    json_t *msg = anthropic_encode_chat(body, model, default_max_tokens, err, errlen, param,
                                        paramlen);
    int rc = msg ? json_write(msg, out) : -1;   /* numbers as the client wrote them */
    json_decref(msg);
    return rc;
}

static struct curl_slist *anthropic_auth(const struct conf_upstream *up, struct curl_slist *h)
{
    h = curl_slist_append(h, "anthropic-version: " ANTHROPIC_VERSION);
    if (up->api_key && up->api_key[0]) {
        char line[1024];
        snprintf(line, sizeof line, "x-api-key: %s", up->api_key);
        h = curl_slist_append(h, line);
        memset(line, 0, sizeof line);
    }
    return h;
}

static int anthropic_body(struct codec *c, enum endpoint ep, const char *in, size_t len,
                          struct buf *out)
{
    json_t *msg = json_loadb(in, len, 0, NULL);
    json_t *oa = json_is_object(msg) ? anthropic_decode_chat(msg, c->model) : NULL;
    json_decref(msg);
    if (!oa)
        return -1;
    openai_usage(oa, &c->prompt_tokens, &c->completion_tokens);
    int rc = json_write(oa, out);
    json_decref(oa);
    return rc;
}

static int anthropic_event(struct codec *c, const char *event, size_t elen, const char *data,
                           size_t dlen, struct buf *out)
{
    int rc = anthropic_stream_event(&c->anthropic, event, elen, data, dlen, out);
    c->stream_done = c->anthropic.done;
    c->prompt_tokens = c->anthropic.prompt_tokens;
    c->completion_tokens = c->anthropic.completion_tokens;
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
