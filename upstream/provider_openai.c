/* provider_openai: codec for OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Groq…).
 * Bodies pass through; we only check they are what was promised and read usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "common/json_write.h"
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

/* Only "model" changes. With the client's text at hand, its bytes are spliced around the new
 * value: no tree copy, no re-serialisation, and the body goes upstream as the client wrote it. */
static int openai_encode(enum endpoint ep, json_t *body, const struct buf *raw,
                         const char *model, unsigned default_max_tokens, struct buf *out,
                         char *err, size_t errlen, char *param, size_t paramlen)
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
    /* Relayed as is: a structural check (garbage, truncation) and a parse of `usage` alone
     * cost a fraction of parsing the whole answer. */
    if (json_scan_object(in, len) < 0)
        return -1;
    openai_usage_text(in, len, &c->prompt_tokens, &c->completion_tokens);
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
