/* mock_reply: the bodies the mock answers with — OpenAI and Anthropic JSON, their stream events
 * framed as HTTP chunks, and error objects. Everything is appended to caller-owned buffers. */
#include "tests/mock/mock.h"

#include <stdio.h>
#include <string.h>

#define EMBED_DIMS 8
#define EMBED_INPUTS_MAX 100000

static const char filler[] = "abcdefghijklmnopqrstuvwxyz";

static void reply_content(struct mock_reply *r, const char *body, const char *end);
static void reply_inputs(struct mock_reply *r, const char *body, const char *end);
static void reply_fit(struct mock_reply *r, long bytes);
static void reply_tool_args(struct mock_reply *r);
static int body_responses(struct mock_reply *r, struct buf *out, const char *status);
static int step_responses(struct mock_reply *r, struct buf *out, long step);
static int chunk_frame(struct buf *out, const struct buf *ev);
static int step_openai(struct mock_reply *r, struct buf *ev, long step);
static int step_anthropic(struct mock_reply *r, struct buf *out, long step);

void reply_init(struct mock_reply *r)
{
    memset(r, 0, sizeof *r);
}

void reply_free(struct mock_reply *r)
{
    buf_free(&r->model);
    buf_free(&r->text);
    buf_free(&r->text_esc);
    buf_free(&r->scratch);
}

/* Appends the text of a message's "content": a string, or the "text" of each part in an array
 * (OpenAI content parts and Anthropic content blocks look alike here). */
static void content_text(const char *v, const char *end, struct buf *out, long *budget)
{
    struct json_iter it;
    if (json_decode_str(v, end, out, budget) == 0 || !json_iter_init(&it, v, end))
        return;
    for (const char *part; (part = json_iter_next(&it)); ) {
        const char *t = json_member(part, end, "text");
        if (t)
            json_decode_str(t, end, out, budget);
    }
}

static void reply_content(struct mock_reply *r, const char *body, const char *end)
{
    long budget = MOCK_ECHO_CHARS;
    buf_puts(&r->text, "echo: ");
    if (r->api == MOCK_API_COMPLETIONS) {
        const char *prompt = json_member(body, end, "prompt");
        struct json_iter it;
        if (prompt && json_iter_init(&it, prompt, end))
            prompt = json_iter_next(&it);
        if (prompt)
            json_decode_str(prompt, end, &r->text, &budget);
        return;
    }
    struct json_iter it;
    const char *msg, *last = NULL;
    const char *list = json_member(body, end, r->api == MOCK_API_RESPONSES ? "input"
                                                                         : "messages");
    if (list && json_decode_str(list, end, &r->text, &budget) == 0)
        return;     /* Responses API: input may be a plain string */
    if (json_iter_init(&it, list, end))
        while ((msg = json_iter_next(&it)))
            last = msg;
    const char *content = last ? json_member(last, end, "content") : NULL;
    if (content)
        content_text(content, end, &r->text, &budget);
}

/* "input" is a string, a list of strings, a list of tokens (one input) or a list of lists. */
static void reply_inputs(struct mock_reply *r, const char *body, const char *end)
{
    const char *in = json_member(body, end, "input");
    struct json_iter it;
    r->inputs = 1;
    if (!json_iter_init(&it, in, end))
        return;
    const char *first = json_iter_next(&it);
    if (!first) {
        r->inputs = 0;
        return;
    }
    if (*first == '-' || (*first >= '0' && *first <= '9'))
        return;
    while (json_iter_next(&it) && r->inputs < EMBED_INPUTS_MAX)
        r->inputs++;
}

/* bytes=N: the echo cut (on a UTF-8 boundary) or padded with letters to exactly N bytes. */
static void reply_fit(struct mock_reply *r, long bytes)
{
    size_t n = (size_t)bytes;
    if (r->text.len > n) {
        while (n > 0 && ((unsigned char)r->text.data[n] & 0xc0) == 0x80)
            n--;
        r->text.len = n;
        r->text.data[n] = '\0';
    }
    if (buf_reserve(&r->text, (size_t)bytes - r->text.len) < 0)
        return;
    for (size_t i = 0; r->text.len < (size_t)bytes; i++)
        r->text.data[r->text.len++] = filler[i % (sizeof filler - 1)];
    r->text.data[r->text.len] = '\0';
}

/* tool: the answer is a call of tool "lookup" whose arguments are {"text": the echo}; the text
 * becomes that JSON, so stream chunks slice the arguments like they slice content. */
static void reply_tool_args(struct mock_reply *r)
{
    struct buf args = BUF_INIT;
    buf_puts(&args, "{\"text\":\"");
    buf_json_escape(&args, r->text.data ? r->text.data : "", r->text.len);
    buf_puts(&args, "\"}");
    buf_reset(&r->text);
    buf_append(&r->text, args.data, args.len);
    buf_free(&args);
}

int reply_prepare(struct mock_reply *r, enum mock_api api, const char *body, size_t len,
                  const struct mock_dirs *d)
{
    const char *end = body + len, *p = json_ws(body, end);
    buf_reset(&r->model);
    buf_reset(&r->text);
    buf_reset(&r->text_esc);
    r->api = api;
    r->stream = false;
    r->sized = false;
    r->tool = false;
    r->prompt_tokens = (long)len / 4;
    r->completion_tokens = 7;
    r->cache_read = d->cache_read;
    r->cache_write = d->cache_write;
    r->no_usage = d->no_usage;
    r->include_usage = false;
    if (d->usage == 1)
        r->prompt_tokens = -5;
    if (d->usage == 2)
        r->prompt_tokens = r->cache_read = 1L << 62;
    r->chunks = d->stream_n < 1 ? 1 : d->stream_n;
    if (api == MOCK_API_MODELS)
        return 0;
    const char *after = p < end && *p == '{' ? json_skip(p, end, 0) : NULL;
    if (!after || json_ws(after, end) != end)
        return -1;
    long budget = MOCK_ECHO_CHARS;
    const char *model = json_member(p, end, "model");
    if (!model || json_decode_str(model, end, &r->model, &budget) < 0) {
        buf_reset(&r->model);
        buf_puts(&r->model, "mock-model");
    }
    const char *stream = json_member(p, end, "stream");
    r->stream = stream && end - stream >= 4 && memcmp(stream, "true", 4) == 0 &&
                api != MOCK_API_EMBEDDINGS;
    const char *so = json_member(p, end, "stream_options");
    const char *iu = so && *so == '{' ? json_member(so, end, "include_usage") : NULL;
    r->include_usage = iu && end - iu >= 4 && memcmp(iu, "true", 4) == 0;
    if (api == MOCK_API_EMBEDDINGS) {
        reply_inputs(r, p, end);
        return 0;
    }
    reply_content(r, p, end);
    r->tool = d->tool && api == MOCK_API_CHAT;
    if (r->tool)
        reply_tool_args(r);
    if (d->bytes >= 0) {
        r->sized = true;
        reply_fit(r, d->bytes);
        if (buf_json_escape(&r->text_esc, r->text.data ? r->text.data : "", r->text.len) < 0)
            return -1;
    }
    return 0;
}

/* `"usage":{...},` — or nothing with no_usage. Anthropic counts cache tokens apart from
 * input_tokens; OpenAI's prompt_tokens includes the cached ones. */
static int body_usage(struct buf *out, const struct mock_reply *r)
{
    if (r->no_usage)
        return 0;
    if (r->api == MOCK_API_MESSAGES) {
        buf_printf(out, "\"usage\":{\"input_tokens\":%ld,\"output_tokens\":%ld",
                   r->prompt_tokens, r->completion_tokens);
        if (r->cache_read || r->cache_write)
            buf_printf(out, ",\"cache_read_input_tokens\":%ld,"
                       "\"cache_creation_input_tokens\":%ld", r->cache_read, r->cache_write);
        return buf_puts(out, "},");
    }
    if (r->api == MOCK_API_RESPONSES)
        return buf_printf(out, "\"usage\":{\"input_tokens\":%ld,\"output_tokens\":%ld,"
                          "\"total_tokens\":%ld},", r->prompt_tokens, r->completion_tokens,
                          r->prompt_tokens + r->completion_tokens);
    long cached = r->cache_read < r->prompt_tokens ? r->cache_read : r->prompt_tokens;
    buf_printf(out, "\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
               "\"total_tokens\":%ld", r->prompt_tokens, r->completion_tokens,
               r->prompt_tokens + r->completion_tokens);
    if (cached > 0)     /* cache_read=N only: the answers stay as short as they were */
        buf_printf(out, ",\"prompt_tokens_details\":{\"cached_tokens\":%ld}", cached);
    return buf_puts(out, "},");
}

/* Ends an object whose members were each written with a trailing comma. */
static int close_obj(struct buf *out)
{
    if (out->len && out->data[out->len - 1] == ',')
        out->len--;
    return buf_puts(out, "}");
}

/* The part every OpenAI object starts with: {"id":..,"object":..,"created":..,"model":"..", */
static int body_openai_head(struct buf *out, const struct mock_reply *r, const char *object)
{
    const char *prefix = r->api == MOCK_API_COMPLETIONS ? "cmpl" : "chatcmpl";
    buf_printf(out, "{\"id\":\"%s-mock-%lu\",\"object\":\"%s\",\"created\":%ld,\"model\":\"",
               prefix, r->id, object, r->created);
    buf_json_escape(out, r->model.data, r->model.len);
    return buf_puts(out, "\",");
}

static int body_embeddings(struct mock_reply *r, struct buf *out)
{
    buf_puts(out, "{\"object\":\"list\",\"data\":[");
    for (long i = 0; i < r->inputs; i++) {
        buf_printf(out, "%s{\"object\":\"embedding\",\"index\":%ld,\"embedding\":[",
                   i ? "," : "", i);
        for (int j = 0; j < EMBED_DIMS; j++)
            buf_printf(out, "%s%.4f", j ? "," : "", (double)((i + 1) * (j + 1) % 97) / 97.0);
        buf_puts(out, "]}");
    }
    buf_puts(out, "],\"model\":\"");
    buf_json_escape(out, r->model.data, r->model.len);
    return buf_printf(out, "\",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}",
                      r->prompt_tokens, r->prompt_tokens);
}

int reply_body(struct mock_reply *r, struct buf *out)
{
    const char *text = r->text.data ? r->text.data : "";
    switch (r->api) {
    case MOCK_API_EMBEDDINGS:
        return body_embeddings(r, out);
    case MOCK_API_COUNT_TOKENS:
        return buf_printf(out, "{\"input_tokens\":%ld}", r->prompt_tokens);
    case MOCK_API_RESPONSES:
        return body_responses(r, out, "completed");
    case MOCK_API_MESSAGES:
        buf_printf(out, "{\"id\":\"msg_mock_%lu\",\"type\":\"message\",\"role\":\"assistant\","
                   "\"model\":\"", r->id);
        buf_json_escape(out, r->model.data, r->model.len);
        buf_puts(out, "\",\"content\":[{\"type\":\"text\",\"text\":\"");
        buf_json_escape(out, text, r->text.len);
        buf_puts(out, "\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,");
        break;
    case MOCK_API_COMPLETIONS:
        body_openai_head(out, r, "text_completion");
        buf_puts(out, "\"choices\":[{\"text\":\"");
        buf_json_escape(out, text, r->text.len);
        buf_puts(out, "\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],");
        break;
    default:
        body_openai_head(out, r, "chat.completion");
        buf_puts(out, "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",");
        if (r->tool)
            buf_printf(out, "\"content\":null,\"tool_calls\":[{\"id\":\"call_mock_%lu\","
                       "\"type\":\"function\",\"function\":{\"name\":\"lookup\","
                       "\"arguments\":\"", r->id);
        else
            buf_puts(out, "\"content\":\"");
        buf_json_escape(out, text, r->text.len);
        buf_printf(out, "\"%s},\"finish_reason\":\"%s\"}],", r->tool ? "}}]" : "",
                   r->tool ? "tool_calls" : "stop");
        break;
    }
    body_usage(out, r);
    return close_obj(out);
}

/* Appends the escaped content of chunk k: the whole text when sized, else the k-th of `chunks`
 * slices of the text, with slice edges moved forward to UTF-8 boundaries. */
static int chunk_content(struct mock_reply *r, struct buf *out, long k)
{
    if (r->sized)
        return buf_append(out, r->text_esc.data, r->text_esc.len);
    size_t len = r->text.len, edge[2];
    for (int i = 0; i < 2; i++) {
        size_t e = (size_t)((unsigned long long)len * (unsigned long long)(k + i) /
                            (unsigned long long)r->chunks);
        while (e < len && ((unsigned char)r->text.data[e] & 0xc0) == 0x80)
            e++;
        edge[i] = e;
    }
    return buf_json_escape(out, r->text.data ? r->text.data + edge[0] : "", edge[1] - edge[0]);
}

static int chunk_frame(struct buf *out, const struct buf *ev)
{
    buf_printf(out, "%zx\r\n", ev->len);
    buf_append(out, ev->data, ev->len);
    return buf_puts(out, "\r\n");
}

static int step_openai(struct mock_reply *r, struct buf *ev, long step)
{
    bool chat = r->api != MOCK_API_COMPLETIONS;
    buf_puts(ev, "data: ");
    body_openai_head(ev, r, chat ? "chat.completion.chunk" : "text_completion");
    if (step == r->chunks) {
        if (chat)
            buf_printf(ev, "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"%s\"}],",
                       r->tool ? "tool_calls" : "stop");
        else
            buf_puts(ev, "\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
                     "\"finish_reason\":\"stop\"}],");
        if (!r->include_usage)
            body_usage(ev, r);      /* as some OpenAI-compatible servers do unasked */
        close_obj(ev);
        buf_puts(ev, "\n\n");
        if (!r->include_usage || r->no_usage)
            return 0;
        /* asked for: OpenAI's usage-only last chunk, with no choices */
        buf_puts(ev, "data: ");
        body_openai_head(ev, r, chat ? "chat.completion.chunk" : "text_completion");
        buf_puts(ev, "\"choices\":[],");
        body_usage(ev, r);
        close_obj(ev);
        return buf_puts(ev, "\n\n");
    }
    if (r->tool) {
        buf_puts(ev, "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,");
        if (step == 0)
            buf_printf(ev, "\"id\":\"call_mock_%lu\",\"type\":\"function\",", r->id);
        buf_printf(ev, "\"function\":{%s\"arguments\":\"", step == 0 ? "\"name\":\"lookup\"," : "");
        chunk_content(r, ev, step);
        return buf_puts(ev, "\"}}]},\"finish_reason\":null}]}\n\n");
    }
    if (chat)
        buf_printf(ev, "\"choices\":[{\"index\":0,\"delta\":{%s\"content\":\"",
                   step == 0 ? "\"role\":\"assistant\"," : "");
    else
        buf_puts(ev, "\"choices\":[{\"text\":\"");
    chunk_content(r, ev, step);
    return buf_puts(ev, chat ? "\"},\"finish_reason\":null}]}\n\n"
                    : "\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

/* Each Anthropic event goes out as its own HTTP chunk: begin it in scratch, fill it, end it. */
static void ev_begin(struct mock_reply *r, const char *type)
{
    buf_reset(&r->scratch);
    buf_printf(&r->scratch, "event: %s\ndata: ", type);
}

static int ev_end(struct mock_reply *r, struct buf *out)
{
    buf_puts(&r->scratch, "\n\n");
    return chunk_frame(out, &r->scratch);
}

static int step_anthropic(struct mock_reply *r, struct buf *out, long step)
{
    struct buf *ev = &r->scratch;
    if (step == 0) {
        ev_begin(r, "message_start");
        buf_printf(ev, "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_%lu\","
                   "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"", r->id);
        buf_json_escape(ev, r->model.data, r->model.len);
        buf_puts(ev, "\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,");
        if (!r->no_usage)
            buf_printf(ev, "\"usage\":{\"input_tokens\":%ld,\"output_tokens\":1,"
                       "\"cache_read_input_tokens\":%ld,\"cache_creation_input_tokens\":%ld},",
                       r->prompt_tokens, r->cache_read, r->cache_write);
        close_obj(ev);
        buf_puts(ev, "}");
        ev_end(r, out);
        ev_begin(r, "content_block_start");
        buf_puts(ev, "{\"type\":\"content_block_start\",\"index\":0,"
                 "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
        ev_end(r, out);
        ev_begin(r, "ping");
        buf_puts(ev, "{\"type\":\"ping\"}");
        ev_end(r, out);
    }
    if (step < r->chunks) {
        ev_begin(r, "content_block_delta");
        buf_puts(ev, "{\"type\":\"content_block_delta\",\"index\":0,"
                 "\"delta\":{\"type\":\"text_delta\",\"text\":\"");
        chunk_content(r, ev, step);
        buf_puts(ev, "\"}}");
        return ev_end(r, out);
    }
    ev_begin(r, "content_block_stop");
    buf_puts(ev, "{\"type\":\"content_block_stop\",\"index\":0}");
    ev_end(r, out);
    ev_begin(r, "message_delta");
    buf_puts(ev, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
             "\"stop_sequence\":null}");
    if (!r->no_usage)
        buf_printf(ev, ",\"usage\":{\"output_tokens\":%ld}", r->completion_tokens);
    buf_puts(ev, "}");
    ev_end(r, out);
    ev_begin(r, "message_stop");
    buf_puts(ev, "{\"type\":\"message_stop\"}");
    ev_end(r, out);
    return buf_puts(out, "0\r\n\r\n");
}

int reply_stream_step(struct mock_reply *r, struct buf *out, long step)
{
    buf_reset(&r->scratch);
    if (r->api == MOCK_API_MESSAGES)
        return step_anthropic(r, out, step);
    if (r->api == MOCK_API_RESPONSES)
        return step_responses(r, out, step);
    step_openai(r, &r->scratch, step);
    chunk_frame(out, &r->scratch);
    if (step < r->chunks)
        return 0;
    buf_reset(&r->scratch);
    buf_puts(&r->scratch, "data: [DONE]\n\n");
    chunk_frame(out, &r->scratch);
    return buf_puts(out, "0\r\n\r\n");
}

/* A Responses API object: one output message with the whole text (empty while in progress). */
static int body_responses(struct mock_reply *r, struct buf *out, const char *status)
{
    bool done = !strcmp(status, "completed");
    buf_printf(out, "{\"id\":\"resp_mock_%lu\",\"object\":\"response\",\"created_at\":%ld,"
               "\"status\":\"%s\",\"model\":\"", r->id, r->created, status);
    buf_json_escape(out, r->model.data, r->model.len);
    buf_printf(out, "\",\"output\":[{\"type\":\"message\",\"id\":\"msg_mock_%lu\","
               "\"status\":\"%s\",\"role\":\"assistant\",\"content\":[{\"type\":"
               "\"output_text\",\"annotations\":[],\"text\":\"", r->id, status);
    if (done)
        buf_json_escape(out, r->text.data ? r->text.data : "", r->text.len);
    buf_puts(out, "\"}]}],");
    if (!done)
        return buf_puts(out, "\"usage\":null}");
    body_usage(out, r);
    return close_obj(out);
}

/* response.created with the first delta, a response.output_text.delta per chunk, then
 * response.completed carrying the whole response and its usage. */
static int step_responses(struct mock_reply *r, struct buf *out, long step)
{
    struct buf *ev = &r->scratch;
    if (step == 0) {
        ev_begin(r, "response.created");
        buf_puts(ev, "{\"type\":\"response.created\",\"response\":");
        body_responses(r, ev, "in_progress");
        buf_puts(ev, "}");
        ev_end(r, out);
    }
    if (step < r->chunks) {
        ev_begin(r, "response.output_text.delta");
        buf_printf(ev, "{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_mock_%lu\","
                   "\"output_index\":0,\"content_index\":0,\"delta\":\"", r->id);
        chunk_content(r, ev, step);
        buf_puts(ev, "\"}");
        return ev_end(r, out);
    }
    ev_begin(r, "response.completed");
    buf_puts(ev, "{\"type\":\"response.completed\",\"response\":");
    body_responses(r, ev, "completed");
    buf_puts(ev, "}");
    ev_end(r, out);
    return buf_puts(out, "0\r\n\r\n");
}

/* Error type names as each provider spells them for a status. */
static const char *error_type(bool anthropic, int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return anthropic ? "request_too_large" : "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: case 529: return anthropic ? "overloaded_error" : "server_error";
    default: return status >= 500 ? (anthropic ? "api_error" : "server_error")
                                  : "invalid_request_error";
    }
}

int reply_error_body(struct buf *out, bool anthropic, int status, const char *msg)
{
    if (anthropic) {
        buf_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"",
                   error_type(true, status));
        buf_json_escape(out, msg, strlen(msg));
        return buf_puts(out, "\"}}");
    }
    buf_puts(out, "{\"error\":{\"message\":\"");
    buf_json_escape(out, msg, strlen(msg));
    return buf_printf(out, "\",\"type\":\"%s\",\"param\":null,\"code\":null}}",
                      error_type(false, status));
}

int reply_models(struct buf *out, long created)
{
    static const char *const ids[] = {"mock-model", "mock-gpt", "mock-claude"};
    buf_puts(out, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        buf_printf(out, "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":%ld,"
                   "\"owned_by\":\"mock\"}", i ? "," : "", ids[i], created);
    return buf_puts(out, "]}");
}
