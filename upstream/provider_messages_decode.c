/* provider_messages_decode: OpenAI answers → Anthropic Messages answers, for clients on
 * /v1/messages served by OpenAI-type upstreams: a chat.completion becomes a Message, and the
 * chunks of a stream become message_start … message_stop events, written as they arrive. */
#include "upstream/provider_messages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_valid.h"
#include "upstream/provider.h"

static json_t *dec_load(const char *p, size_t n);
static int dec_error(const json_t *doc, const char *fallback, struct buf *out);
static json_t *dec_content(const json_t *message);
static json_t *dec_usage(const json_t *usage, struct usage *out);

static const char *str_or(const char *s, const char *dflt)
{
    return s ? s : dflt;
}

/* finish_reason → stop_reason. OpenAI does not say whether "stop" came from a stop sequence,
 * so it is end_turn (and stop_sequence null) either way. */
const char *messages_stop_reason(const char *finish_reason)
{
    if (!finish_reason)
        return "end_turn";
    if (!strcmp(finish_reason, "length"))
        return "max_tokens";
    if (!strcmp(finish_reason, "tool_calls") || !strcmp(finish_reason, "function_call"))
        return "tool_use";
    if (!strcmp(finish_reason, "content_filter"))
        return "refusal";
    return "end_turn";
}

/* The one place this direction builds trees from upstream text. */
static json_t *dec_load(const char *p, size_t n)
{
    return json_valid_load(p ? p : "", n, 0, NULL);     /* validated and priced first */
}

/* A token count as usage_take reads it; anything invalid counts as 0. */
static long dec_count(const json_t *v)
{
    long n = 0;
    return usage_take(v, &n) > 0 ? n : 0;
}

int messages_from_completion(const char *in, size_t len, const char *model,
                             struct buf *out, struct usage *usage)
{
    json_t *doc = dec_load(in, len), *msg = NULL;
    const json_t *choice = json_array_get(json_object_get(doc, "choices"), 0);
    const json_t *message = json_object_get(choice, "message");
    const char *id = json_string_value(json_object_get(doc, "id"));
    const char *own = json_string_value(json_object_get(doc, "model"));
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    int rc = -1;
    if (!json_is_object(message))
        goto done;
    json_t *content = dec_content(message);
    if (json_is_string(json_object_get(message, "refusal")) && !json_is_string(
            json_object_get(message, "content")))
        finish = "content_filter";
    /* Some servers (Ollama, older vLLM) say "stop" with tool calls; agents loop on tool_use. */
    if (json_array_size(json_object_get(message, "tool_calls")) && (!finish ||
                                                                    !strcmp(finish, "stop")))
        finish = "tool_calls";
    msg = json_pack("{s:o,s:s,s:s,s:s,s:o,s:s,s:n,s:o}", "id",
                    json_sprintf("msg_%s", id ? id : "llmux"), "type", "message", "role",
                    "assistant", "model", own ? own : model ? model : "", "content",
                    content ? content : json_array(), "stop_reason",
                    messages_stop_reason(finish), "stop_sequence", "usage",
                    dec_usage(json_object_get(doc, "usage"), usage));
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    rc = text ? buf_puts(out, text) : -1;
    free(text);
done:
    json_decref(msg);
    json_decref(doc);
    return rc;
}

/* Text (or a refusal) first, then one tool_use block per tool call. Arguments that are not a
 * JSON object (a model's malformed output) arrive as {} — Anthropic's input must be one. */
static json_t *dec_content(const json_t *message)
{
    json_t *blocks = json_array();
    const json_t *text = json_object_get(message, "content");
    if (!json_is_string(text))
        text = json_object_get(message, "refusal");
    if (json_is_string(text) && json_string_length(text))
        json_array_append_new(blocks, json_pack("{s:s,s:O}", "type", "text", "text", text));
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(message, "tool_calls"), i, c) {
        const json_t *fn = json_object_get(c, "function");
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        json_t *input = args ? dec_load(args, strlen(args)) : NULL;
        if (!json_is_object(input)) {
            json_decref(input);
            input = json_object();
        }
        json_array_append_new(blocks, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id",
                              str_or(json_string_value(json_object_get(c, "id")), ""),
                              "name", str_or(json_string_value(json_object_get(fn, "name")), ""),
                              "input", input));
    }
    return blocks;
}

/* OpenAI's prompt_tokens includes cached tokens; Anthropic counts them apart. */
static json_t *dec_usage(const json_t *usage, struct usage *out)
{
    struct usage got = {0};
    json_t *wrap = json_pack("{s:O}", "usage", usage ? (json_t *)usage : json_null());
    openai_usage(wrap, &got);       /* validated: invalid counts are taken as absent */
    json_decref(wrap);
    usage_add(out, &got);
    long p = got.prompt, c = got.completion, cached = got.cache_read;
    json_t *u = json_pack("{s:I,s:I}", "input_tokens", (json_int_t)(p - cached),
                          "output_tokens", (json_int_t)c);
    if (u && cached)
        json_object_set_new(u, "cache_read_input_tokens", json_integer(cached));
    return u ? u : json_object();
}

/* ---- stream ----------------------------------------------------------------------------- */

void messages_stream_init(struct messages_stream *s, const char *model)
{
    memset(s, 0, sizeof *s);
    s->model = strdup(model ? model : "");
    s->open_block = -1;
    for (int i = 0; i < MESSAGES_MAX_TOOL_CALLS; i++)
        s->tool_block[i] = -1;
}

void messages_stream_free(struct messages_stream *s)
{
    free(s->model);
    s->model = NULL;
}

static int ev_begin(struct buf *out, const char *name)
{
    return buf_printf(out, "event: %s\ndata: {\"type\":\"%s\"", name, name);
}

static int put_str(struct buf *out, const char *key, const char *s, size_t n)
{
    return buf_printf(out, ",\"%s\":\"", key) | buf_json_escape(out, s, n) | buf_puts(out, "\"");
}

static int ev_message_start(struct messages_stream *s, struct buf *out)
{
    s->started = true;
    return ev_begin(out, "message_start") | buf_puts(out, ",\"message\":{\"id\":\"") |
           buf_json_escape(out, s->id, strlen(s->id)) |
           buf_puts(out, "\",\"type\":\"message\",\"role\":\"assistant\"") |
           put_str(out, "model", s->model, strlen(s->model)) |
           buf_puts(out, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                         "\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n") |
           buf_puts(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

static int ev_block_stop(struct messages_stream *s, struct buf *out)
{
    if (s->open_block < 0)
        return 0;
    int rc = ev_begin(out, "content_block_stop") |
             buf_printf(out, ",\"index\":%d}\n\n", s->open_block);
    s->open_block = -1;
    return rc;
}

static int ev_delta(struct buf *out, int index, const char *type, const char *key,
                    const char *s, size_t n)
{
    return ev_begin(out, "content_block_delta") |
           buf_printf(out, ",\"index\":%d,\"delta\":{\"type\":\"%s\"", index, type) |
           put_str(out, key, s, n) | buf_puts(out, "}}\n\n");
}

static int on_text(struct messages_stream *s, const char *t, size_t n, struct buf *out)
{
    int rc = 0;
    if (!n)
        return 0;
    if (s->open_block < 0 || !s->open_is_text) {
        rc |= ev_block_stop(s, out);
        s->open_block = s->nblocks++;
        s->open_is_text = true;
        rc |= ev_begin(out, "content_block_start") |
              buf_printf(out, ",\"index\":%d,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"
                              "\n\n", s->open_block);
    }
    return rc | ev_delta(out, s->open_block, "text_delta", "text", t, n);
}

static int tool_open(struct messages_stream *s, int i, const char *id, const char *name,
                     struct buf *out)
{
    int rc = ev_block_stop(s, out);
    s->open_block = s->tool_block[i] = s->nblocks++;
    s->open_is_text = false;
    s->tool_used = true;
    return rc | ev_begin(out, "content_block_start") |
           buf_printf(out, ",\"index\":%d,\"content_block\":{\"type\":\"tool_use\"",
                      s->open_block) |
           put_str(out, "id", id, strlen(id)) | put_str(out, "name", name, strlen(name)) |
           buf_puts(out, ",\"input\":{}}}\n\n");
}

/* A tool call's first fragment (id, name) opens its block; argument fragments become
 * input_json_delta. A fragment for an earlier call (servers that interleave parallel calls)
 * still names that call's block, which is how SDKs accumulate input. */
static int on_tool_call(struct messages_stream *s, const json_t *tc, struct buf *out)
{
    const json_t *fn = json_object_get(tc, "function");
    json_int_t i = json_integer_value(json_object_get(tc, "index"));
    const char *id = json_string_value(json_object_get(tc, "id"));
    const char *name = json_string_value(json_object_get(fn, "name"));
    const char *args = json_string_value(json_object_get(fn, "arguments"));
    int rc = 0;
    if (i < 0 || i >= MESSAGES_MAX_TOOL_CALLS)
        return -1;
    if (s->tool_block[i] < 0) {
        char gen[32];
        if (!name)
            return -1;
        snprintf(gen, sizeof gen, "call_%d", (int)i);   /* servers that send no id */
        rc = tool_open(s, (int)i, id ? id : gen, name, out);
    }
    if (args && *args)
        rc |= ev_delta(out, s->tool_block[i], "input_json_delta", "partial_json", args,
                       strlen(args));
    return rc;
}

static int ev_finish(struct messages_stream *s, struct buf *out)
{
    const char *stop = s->stop_reason ? s->stop_reason : "end_turn";
    if (s->tool_used && !strcmp(stop, "end_turn"))
        stop = "tool_use";      /* a "stop" with tool calls, as in messages_from_completion */
    int rc = (s->started ? 0 : ev_message_start(s, out)) | ev_block_stop(s, out);
    rc |= ev_begin(out, "message_delta") |
          buf_printf(out, ",\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":null},"
                          "\"usage\":{\"input_tokens\":%ld,\"output_tokens\":%ld", stop,
                     s->prompt_tokens - s->cached_tokens, s->completion_tokens);
    if (s->cached_tokens)
        rc |= buf_printf(out, ",\"cache_read_input_tokens\":%ld", s->cached_tokens);
    rc |= buf_puts(out, "}}\n\n") | ev_begin(out, "message_stop") | buf_puts(out, "}\n\n");
    s->done = true;
    return rc;
}

static void on_usage(struct messages_stream *s, const json_t *u)
{
    if (!json_is_object(u))
        return;
    s->prompt_tokens = dec_count(json_object_get(u, "prompt_tokens"));
    s->completion_tokens = dec_count(json_object_get(u, "completion_tokens"));
    s->cached_tokens = dec_count(json_object_get(json_object_get(u, "prompt_tokens_details"),
                                                 "cached_tokens"));
    if (s->cached_tokens > s->prompt_tokens)
        s->cached_tokens = 0;
    s->usage_seen = true;
}

static int on_chunk(struct messages_stream *s, const json_t *doc, struct buf *out)
{
    const json_t *choice = json_array_get(json_object_get(doc, "choices"), 0);
    const json_t *delta = json_object_get(choice, "delta");
    const json_t *text = json_object_get(delta, "content"), *tc;
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    int rc = 0;
    size_t i;
    if (!s->started) {
        const char *id = json_string_value(json_object_get(doc, "id"));
        snprintf(s->id, sizeof s->id, "msg_%s", id ? id : "llmux");
        const char *own = json_string_value(json_object_get(doc, "model"));
        char *copy = own ? strdup(own) : NULL;  /* the upstream's own model string wins */
        if (copy) {
            free(s->model);
            s->model = copy;
        }
        rc |= ev_message_start(s, out);
    }
    if (!json_is_string(text))
        text = json_object_get(delta, "refusal");
    if (json_is_string(text))
        rc |= on_text(s, json_string_value(text), json_string_length(text), out);
    json_array_foreach(json_object_get(delta, "tool_calls"), i, tc)
        if (on_tool_call(s, tc, out) < 0)
            return -1;
    if (finish)
        s->stop_reason = messages_stop_reason(finish);
    on_usage(s, json_object_get(doc, "usage"));
    return rc;
}

int messages_stream_event(struct messages_stream *s, const char *data, size_t dlen,
                          struct buf *out)
{
    if (s->done)
        return 0;
    if (dlen == 6 && !memcmp(data, "[DONE]", 6))
        return ev_finish(s, out);
    json_t *doc = dec_load(data, dlen);
    int rc = -1;
    if (json_is_object(doc) && !json_object_get(doc, "error"))
        rc = on_chunk(s, doc, out);
    if (rc < 0)
        dec_error(doc, "upstream sent an undecodable stream chunk", out);
    json_decref(doc);
    return rc;
}

/* On failure out holds just the OpenAI error object: the upstream's, or one saying why. */
static int dec_error(const json_t *doc, const char *fallback, struct buf *out)
{
    const json_t *e = json_object_get(doc, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    json_t *err = openai_error(msg ? msg : fallback, "upstream_error", NULL, NULL);
    char *text = err ? json_dumps(err, JSON_COMPACT) : NULL;
    buf_reset(out);
    int rc = text ? buf_puts(out, text) : -1;
    free(text);
    json_decref(err);
    return rc;
}
