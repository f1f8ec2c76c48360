/* provider_openai: codec for OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Groq…).
 * Bodies pass through; we only check they are what was promised and read usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/provider.h"

static const char *openai_path(enum endpoint ep)
{
    static const char *const paths[EP_COUNT] = {
        [EP_CHAT] = "/chat/completions",
        [EP_COMPLETIONS] = "/completions",
        [EP_EMBEDDINGS] = "/embeddings",
    };
    return paths[ep];
}

static json_t *openai_encode(enum endpoint ep, const json_t *body, const char *model,
                             char *err, size_t errlen, char *param, size_t paramlen)
{
    json_t *out = json_copy((json_t *)body);    /* shallow: only "model" changes */
    if (!out || json_object_set_new(out, "model", json_string(model)) < 0) {
        json_decref(out);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return out;
}

static struct curl_slist *openai_auth(const struct conf_upstream *up, struct curl_slist *h)
{
    if (up->api_key && up->api_key[0]) {
        char line[1024];
        snprintf(line, sizeof line, "Authorization: Bearer %s", up->api_key);
        h = curl_slist_append(h, line);
        memset(line, 0, sizeof line);
    }
    return h;
}

static int openai_decode_body(struct codec *c, enum endpoint ep, const char *in, size_t len,
                              struct buf *out)
{
    json_t *j = json_loadb(in, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return -1;
    }
    openai_usage(j, &c->prompt_tokens, &c->completion_tokens);
    json_decref(j);
    return 0;
}

static int openai_decode_event(struct codec *c, const char *event, size_t elen,
                               const char *data, size_t dlen, struct buf *out)
{
    if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0) {
        c->stream_done = true;
        return buf_puts(out, "data: [DONE]\n\n");
    }
    /* Only chunks that carry usage or an error are worth a JSON parse on this hot path. */
    if (memmem(data, dlen, "\"usage\"", 7) || memmem(data, dlen, "\"error\"", 7)) {
        json_t *j = json_loadb(data, dlen, 0, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            return -1;
        }
        json_t *e = json_object_get(j, "error");
        if (json_is_object(e)) {
            char *s = json_dumps(j, JSON_COMPACT);
            buf_puts(out, s ? s : "{}");
            free(s);
            json_decref(j);
            return -1;
        }
        openai_usage(j, &c->prompt_tokens, &c->completion_tokens);
        json_decref(j);
    }
    if (buf_puts(out, "data: ") < 0 || buf_append(out, data, dlen) < 0)
        return -1;
    return buf_puts(out, "\n\n");
}

static json_t *openai_decode_error(long status, const char *body, size_t len)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    if (json_is_object(j) && json_is_object(json_object_get(j, "error")))
        return j;       /* already OpenAI-shaped: relayed as it came */
    json_decref(j);
    char msg[96];
    snprintf(msg, sizeof msg, "upstream returned status %ld", status);
    return openai_error(msg, "upstream_error", NULL, NULL);
}

const struct codec_ops codec_openai = {
    .name = "openai",
    .path = openai_path,
    .encode = openai_encode,
    .auth = openai_auth,
    .decode_body = openai_decode_body,
    .decode_event = openai_decode_event,
    .decode_error = openai_decode_error,
};
