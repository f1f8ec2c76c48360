/* provider_openai: codec for OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Groq…).
 * OpenAI endpoints pass through (we only check answers are what was promised and read usage);
 * Anthropic clients on /v1/messages are translated by provider_messages*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "common/json_valid.h"
#include "common/json_write.h"
#include "upstream/provider.h"

static const char *openai_path(enum endpoint ep)
{
    static const char *const paths[EP_COUNT] = {
        [EP_CHAT] = "/chat/completions",
        [EP_COMPLETIONS] = "/completions",
        [EP_EMBEDDINGS] = "/embeddings",
        [EP_MESSAGES] = "/chat/completions",        /* translated */
        [EP_RESPONSES] = "/responses",
    };
    return paths[ep];
}

static int openai_encode(enum endpoint ep, json_t *body, const struct buf *raw,
                         const char *model, unsigned default_max_tokens, struct buf *out,
                         char *err, size_t errlen, char *param, size_t paramlen)
{
    if (ep != EP_MESSAGES)
        return codec_splice_model(body, raw, model, out, err, errlen);
    int rc;
    json_t *tree = codec_tree(body, raw, err, errlen, &rc);
    if (!tree)
        return rc;
    json_t *chat = messages_to_chat(tree, model, err, errlen, param, paramlen);
    json_decref(tree);      /* the tree lives only while the upstream's bytes are made */
    rc = chat ? json_write(chat, out) : -1;   /* numbers as the client wrote them */
    if (chat && rc < 0)
        snprintf(err, errlen, "out of memory");
    json_decref(chat);
    return rc;
}

static struct curl_slist *openai_auth(const struct codec *c, const struct conf_upstream *up,
                                      struct curl_slist *h)
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
    if (ep == EP_MESSAGES)
        return messages_from_completion(in, len, c->model, out, &c->prompt_tokens,
                                        &c->completion_tokens);
    /* Relayed as is after a strict validation (one pass, nothing allocated) and a parse of
     * `usage` alone: a fraction of the cost of parsing the whole answer. */
    if (json_valid_object(in, len) < 0)
        return -1;
    c->usage_invalid += openai_usage_text(in, len, &c->prompt_tokens, &c->completion_tokens);
    return 0;
}

/* Responses API events pass through with their names; the terminal ones end the stream and
 * response.completed carries the usage. */
static int responses_event(struct codec *c, const char *event, size_t elen, const char *data,
                           size_t dlen, struct buf *out)
{
    static const char *const terminal[] = {
        "response.completed", "response.incomplete", "response.failed", "error",
    };
    for (size_t i = 0; i < sizeof terminal / sizeof *terminal; i++)
        if (elen == strlen(terminal[i]) && !memcmp(event, terminal[i], elen))
            c->stream_done = true;
    if (elen == 18 && !memcmp(event, "response.completed", 18)) {
        json_t *j = json_valid_load(data, dlen, 0, NULL);
        c->usage_invalid += openai_usage(json_object_get(j, "response"), &c->prompt_tokens,
                                         &c->completion_tokens);
        json_decref(j);
    }
    if (dlen == 6 && !memcmp(data, "[DONE]", 6))
        c->stream_done = true;
    return codec_sse_frame(out, event, elen, data, dlen);
}

static int openai_decode_event(struct codec *c, const char *event, size_t elen,
                               const char *data, size_t dlen, struct buf *out)
{
    if (c->ep == EP_MESSAGES) {
        int rc = messages_stream_event(&c->messages, data, dlen, out);
        c->stream_done = c->messages.done;
        c->prompt_tokens = c->messages.prompt_tokens;
        c->completion_tokens = c->messages.completion_tokens;
        return rc;
    }
    if (c->ep == EP_RESPONSES)
        return responses_event(c, event, elen, data, dlen, out);
    if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0) {
        c->stream_done = true;
        return buf_puts(out, "data: [DONE]\n\n");
    }
    /* Only chunks that carry usage or an error are worth a JSON parse on this hot path. */
    if (memmem(data, dlen, "\"usage\"", 7) || memmem(data, dlen, "\"error\"", 7)) {
        json_t *j = json_valid_load(data, dlen, 0, NULL);
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
        c->usage_invalid += openai_usage(j, &c->prompt_tokens, &c->completion_tokens);
        json_decref(j);
    }
    if (buf_puts(out, "data: ") < 0 || buf_append(out, data, dlen) < 0)
        return -1;
    return buf_puts(out, "\n\n");
}

static json_t *openai_decode_error(long status, const char *body, size_t len)
{
    json_t *j = json_valid_load(body, len, 0, NULL);
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
