/* provider_openai: codec for OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Groq…).
 * OpenAI endpoints pass through (we only check answers are what was promised and read usage);
 * Anthropic clients on /v1/messages are translated by provider_messages*.c. */
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
        [EP_MESSAGES] = "/chat/completions",        /* translated */
        [EP_RESPONSES] = "/responses",
    };
    return paths[ep];
}

#define USAGE_OPTION "\"stream_options\":{\"include_usage\":true}"

/* A stream is asked to end with a usage chunk (what the cost accounting reads) unless the
 * client asked already; the chunk is then not relayed (codec.strip_usage). */
static bool openai_wants_usage_option(enum endpoint ep, const json_t *body)
{
    return (ep == EP_CHAT || ep == EP_COMPLETIONS) &&
           json_is_true(json_object_get(body, "stream")) && !openai_stream_usage_asked(body);
}

/* codec_splice_model with the usage option spliced in after the opening brace. -1: not
 * possible here (no text, or the client's own stream_options, amended in the tree instead). */
static int openai_splice_usage(const struct buf *raw, const char *model, struct buf *out)
{
    size_t start, end, brace = 0, so_start, so_end;
    if (!raw || !raw->len || json_scan_member(raw->data, raw->len, "model", &start, &end) < 0 ||
        json_scan_member(raw->data, raw->len, "stream_options", &so_start, &so_end) == 0)
        return -1;
    while (brace < start && raw->data[brace] != '{')
        brace++;
    if (buf_reserve(out, raw->len + strlen(model) + sizeof USAGE_OPTION + 16) < 0)
        return -1;
    buf_append(out, raw->data, brace + 1);
    buf_puts(out, USAGE_OPTION ",");
    buf_append(out, raw->data + brace + 1, start - brace - 1);
    buf_puts(out, "\"");
    buf_json_escape(out, model, strlen(model));
    buf_puts(out, "\"");
    buf_append(out, raw->data + end, raw->len - end);
    return 0;
}

static int openai_encode(enum endpoint ep, json_t *body, const struct buf *raw,
                         const char *model, unsigned default_max_tokens, struct buf *out,
                         char *err, size_t errlen, char *param, size_t paramlen)
{
    if (openai_wants_usage_option(ep, body)) {
        if (openai_splice_usage(raw, model, out) == 0)
            return 0;
        buf_reset(out);
        json_t *so = json_object_get(body, "stream_options");
        if (!so)
            json_object_set_new(body, "stream_options", so = json_object());
        if (json_is_object(so))
            json_object_set_new(so, "include_usage", json_true());
        return codec_splice_model(body, NULL, model, out, err, errlen);
    }
    if (ep != EP_MESSAGES)
        return codec_splice_model(body, raw, model, out, err, errlen);
    json_t *chat = messages_to_chat(body, model, err, errlen, param, paramlen);
    int rc = chat ? json_write(chat, out) : -1;   /* numbers as the client wrote them */
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
        return messages_from_completion(in, len, c->model, out, &c->usage);
    /* Relayed as is: a structural check (garbage, truncation) and a parse of `usage` alone
     * cost a fraction of parsing the whole answer. */
    if (json_scan_object(in, len) < 0)
        return -1;
    openai_usage_text(in, len, &c->usage);
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
        json_t *j = json_loadb(data, dlen, 0, NULL);
        openai_usage(json_object_get(j, "response"), &c->usage);
        json_decref(j);
    }
    if (dlen == 6 && !memcmp(data, "[DONE]", 6))
        c->stream_done = true;
    return codec_sse_frame(out, event, elen, data, dlen);
}

/* A "usage" member other than null (streams asked for usage say "usage":null on every chunk
 * but the last, and those need no parse). */
static bool has_usage(const char *data, size_t dlen)
{
    const char *u = memmem(data, dlen, "\"usage\"", 7);
    if (!u)
        return false;
    const char *p = u + 7, *e = data + dlen;
    while (p < e && (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return !(e - p >= 4 && !memcmp(p, "null", 4));
}

static int openai_decode_event(struct codec *c, const char *event, size_t elen,
                               const char *data, size_t dlen, struct buf *out)
{
    if (c->ep == EP_MESSAGES) {
        int rc = messages_stream_event(&c->messages, data, dlen, out);
        c->stream_done = c->messages.done;
        c->usage = (struct usage){.prompt = c->messages.prompt_tokens,
                                  .completion = c->messages.completion_tokens,
                                  .cache_read = c->messages.cached_tokens,
                                  .seen = c->messages.usage_seen};
        return rc;
    }
    if (c->ep == EP_RESPONSES)
        return responses_event(c, event, elen, data, dlen, out);
    if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0) {
        c->stream_done = true;
        return buf_puts(out, "data: [DONE]\n\n");
    }
    /* Only chunks that carry usage or an error are worth a JSON parse on this hot path. */
    if (has_usage(data, dlen) || memmem(data, dlen, "\"error\"", 7)) {
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
        openai_usage(j, &c->usage);
        json_t *choices = json_object_get(j, "choices");
        bool usage_only = json_is_array(choices) && json_array_size(choices) == 0;
        json_decref(j);
        if (usage_only && c->strip_usage)
            return 0;
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
