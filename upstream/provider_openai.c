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

#define USAGE_OPTION "\"include_usage\":true"

/* A stream is asked to end with a usage chunk (what the cost accounting reads) unless the
 * client asked already; the chunk is then not relayed (codec.strip_usage). Read from the
 * client's text: no tree is built for it. */
static bool openai_wants_usage_option(enum endpoint ep, const struct buf *raw)
{
    struct json_pick st[] = {{"stream", 0, 0, false}};
    return (ep == EP_CHAT || ep == EP_COMPLETIONS) && raw && raw->len &&
           json_scan_may_have(raw->data, raw->len, "stream") &&
           json_scan_pick(raw->data, raw->len, st, 1) == 0 && st[0].found &&
           st[0].end - st[0].start == 4 && !memcmp(raw->data + st[0].start, "true", 4) &&
           !openai_stream_usage_asked(raw->data, raw->len);
}

/* One replacement of the bytes [start, end) of the client's text. */
struct splice {
    size_t start, end;
    const char *text;
    size_t len;
};

/* Where the usage option goes: a new stream_options member after the opening brace, into the
 * client's stream_options object (its include_usage replaced, or added first), or in place of
 * a stream_options that is not an object. -1 when a name is written twice. */
static int usage_splice(const char *p, size_t len, const struct json_pick *so, struct splice *e)
{
    struct json_pick iu[] = {{"include_usage", 0, 0, false}};
    static const char member[] = "\"stream_options\":{" USAGE_OPTION "},";
    static const char object[] = "{" USAGE_OPTION "}";
    if (!so->found) {
        size_t brace = 0;
        while (brace < len && p[brace] != '{')
            brace++;
        *e = (struct splice){brace + 1, brace + 1, member, sizeof member - 1};
        return 0;
    }
    if (p[so->start] != '{') {
        *e = (struct splice){so->start, so->end, object, sizeof object - 1};
        return 0;
    }
    if (json_scan_pick(p + so->start, so->end - so->start, iu, 1) != 0)
        return -1;
    if (iu[0].found) {
        *e = (struct splice){so->start + iu[0].start, so->start + iu[0].end, "true", 4};
        return 0;
    }
    size_t i = so->start + 1;
    while (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')
        i++;
    bool empty = p[i] == '}';
    *e = (struct splice){so->start + 1, so->start + 1, empty ? USAGE_OPTION : USAGE_OPTION ",",
                         sizeof USAGE_OPTION - 1 + !empty};
    return 0;
}

/* codec_splice_model with the usage option spliced in too, the client's bytes otherwise
 * kept. -1: not possible here (no text, or a name written twice). */
static int openai_splice_usage(const struct buf *raw, const char *model, struct buf *out)
{
    struct json_pick pk[] = {{"model", 0, 0, false}, {"stream_options", 0, 0, false}};
    struct buf name = BUF_INIT;
    struct splice e[2];
    int rc = -1;
    if (!raw || !raw->len || json_scan_pick(raw->data, raw->len, pk, 2) != 0 || !pk[0].found ||
        usage_splice(raw->data, raw->len, &pk[1], &e[1]) < 0)
        return -1;
    if (buf_puts(&name, "\"") < 0 || buf_json_escape(&name, model, strlen(model)) < 0 ||
        buf_puts(&name, "\"") < 0 || buf_reserve(out, raw->len + name.len + 64) < 0)
        goto done;
    e[0] = (struct splice){pk[0].start, pk[0].end, name.data, name.len};
    bool swap = e[1].start < e[0].start;
    const struct splice *first = &e[swap], *second = &e[!swap];
    buf_append(out, raw->data, first->start);
    buf_append(out, first->text, first->len);
    buf_append(out, raw->data + first->end, second->start - first->end);
    buf_append(out, second->text, second->len);
    buf_append(out, raw->data + second->end, raw->len - second->end);
    rc = 0;
done:
    buf_free(&name);
    return rc;
}

static int openai_encode(enum endpoint ep, json_t *body, const struct buf *raw,
                         const char *model, unsigned default_max_tokens, struct buf *out,
                         char *err, size_t errlen, char *param, size_t paramlen)
{
    if (openai_wants_usage_option(ep, raw)) {
        if (openai_splice_usage(raw, model, out) == 0)
            return 0;
        buf_reset(out);     /* a name written twice: sent as the client wrote it */
    }
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
        int n = snprintf(line, sizeof line, "Authorization: Bearer %s", up->api_key);
        h = curl_slist_append(h, line);
        /* the key is scrubbed from the stack (explicit_bzero: a dead store memset may be
         * dropped by the compiler), the bytes written rather than the whole array */
        explicit_bzero(line, n > 0 && (size_t)n < sizeof line ? (size_t)n : sizeof line);
    }
    return h;
}

static int openai_decode_body(struct codec *c, enum endpoint ep, const char *in, size_t len,
                              struct buf *out)
{
    if (ep == EP_MESSAGES)
        return messages_from_completion(in, len, c->model, out, &c->usage);
    /* Relayed as is after a strict validation (one pass, nothing allocated) and a parse of
     * `usage` alone: a fraction of the cost of parsing the whole answer. */
    if (json_valid_object(in, len) < 0)
        return -1;
    c->usage_invalid += openai_usage_text(in, len, &c->usage);
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
        c->usage_invalid += openai_usage(json_object_get(j, "response"), &c->usage);
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
        c->usage_invalid += openai_usage(j, &c->usage);
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
