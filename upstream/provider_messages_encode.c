/* provider_messages_encode: an Anthropic Messages request → an OpenAI chat.completions request,
 * for clients on /v1/messages routed to OpenAI-type upstreams. What has no counterpart is
 * either dropped (cache_control, thinking, top_k) or refused with a 400 naming the field
 * (PDF documents, server tools). */
#include "upstream/provider_messages.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct enc {
    char *err, *param;
    size_t errlen, paramlen;
};

static int enc_fail(struct enc *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int enc_system(struct enc *e, const json_t *sys, json_t *msgs);
static int enc_messages(struct enc *e, const json_t *in, json_t *msgs);
static int enc_tools(struct enc *e, const json_t *msg, json_t *chat);
static int enc_options(struct enc *e, const json_t *msg, json_t *chat);

json_t *messages_to_chat(const json_t *msg, const char *model, char *err, size_t errlen,
                         char *param, size_t paramlen)
{
    struct enc e = {err, param, errlen, paramlen};
    json_t *msgs = json_array();
    json_t *chat = json_pack("{s:s}", "model", model);
    if (!msgs || !chat) {
        enc_fail(&e, "", "out of memory");
        goto fail;
    }
    if (enc_system(&e, json_object_get(msg, "system"), msgs) < 0 ||
        enc_messages(&e, json_object_get(msg, "messages"), msgs) < 0 ||
        json_object_set(chat, "messages", msgs) < 0 || enc_options(&e, msg, chat) < 0 ||
        enc_tools(&e, msg, chat) < 0)
        goto fail;
    json_decref(msgs);
    return chat;
fail:
    json_decref(msgs);
    json_decref(chat);
    return NULL;
}

static int enc_fail(struct enc *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    snprintf(e->param, e->paramlen, "%s", param);
    return -1;
}

static const char *block_type(const json_t *b)
{
    return json_string_value(json_object_get(b, "type"));
}

/* Text blocks joined by newlines: many OpenAI-compatible servers take only a string here. */
static int enc_text_blocks(struct enc *e, const json_t *blocks, const char *what, json_t **out)
{
    json_t *s = json_string("");
    size_t i;
    const json_t *b;
    json_array_foreach(blocks, i, b) {
        const char *type = block_type(b), *t = json_string_value(json_object_get(b, "text"));
        if (!type || strcmp(type, "text") || !t) {
            json_decref(s);
            char p[128];
            snprintf(p, sizeof p, "%.100s[%zu]", what, i);
            return enc_fail(e, p, "%s blocks must be text blocks here", what);
        }
        const char *have = json_string_value(s);
        json_t *n = json_sprintf("%s%s%s", have, *have ? "\n" : "", t);
        json_decref(s);
        if (!(s = n))
            return enc_fail(e, what, "out of memory");
    }
    *out = s;
    return 0;
}

static int enc_system(struct enc *e, const json_t *sys, json_t *msgs)
{
    json_t *text = NULL;
    if (!sys || json_is_null(sys))
        return 0;
    if (json_is_string(sys))
        text = json_incref((json_t *)sys);
    else if (!json_is_array(sys))
        return enc_fail(e, "system", "system must be a string or an array of text blocks");
    else if (enc_text_blocks(e, sys, "system", &text) < 0)
        return -1;
    return json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "system", "content",
                                                 text));
}

/* An image block → an image_url part (a data: URL for base64 sources). */
static json_t *enc_image(const json_t *b)
{
    const json_t *src = json_object_get(b, "source");
    const char *kind = json_string_value(json_object_get(src, "type"));
    const char *media = json_string_value(json_object_get(src, "media_type"));
    const char *data = json_string_value(json_object_get(src, "data"));
    const char *url = json_string_value(json_object_get(src, "url"));
    json_t *u = NULL;
    if (kind && !strcmp(kind, "base64") && media && data)
        u = json_sprintf("data:%s;base64,%s", media, data);
    else if (kind && !strcmp(kind, "url") && url)
        u = json_string(url);
    return u ? json_pack("{s:s,s:{s:o}}", "type", "image_url", "image_url", "url", u) : NULL;
}

/* tool_result → an OpenAI "tool" message. is_error has no field there, so it becomes a prefix
 * the model can read. */
static int enc_tool_result(struct enc *e, const json_t *b, const char *p, json_t *msgs)
{
    const char *id = json_string_value(json_object_get(b, "tool_use_id"));
    const json_t *c = json_object_get(b, "content");
    json_t *text = NULL;
    char cp[128];
    if (!id)
        return enc_fail(e, p, "tool_result needs a tool_use_id");
    snprintf(cp, sizeof cp, "%s.content", p);
    if (!c || json_is_string(c))
        text = json_string(c ? json_string_value(c) : "");
    else if (!json_is_array(c))
        return enc_fail(e, cp, "tool_result content must be a string or text blocks");
    else if (enc_text_blocks(e, c, cp, &text) < 0)
        return -1;
    if (json_is_true(json_object_get(b, "is_error"))) {
        json_t *n = json_sprintf("Error: %s", json_string_value(text));
        json_decref(text);
        text = n;
    }
    return json_array_append_new(msgs, json_pack("{s:s,s:s,s:o}", "role", "tool",
                                                 "tool_call_id", id, "content", text));
}

/* One block of a user message: text and images become parts; tool results become their own
 * "tool" messages, placed before the user message as OpenAI requires. */
static int enc_user_block(struct enc *e, const json_t *b, const char *p, json_t *parts,
                          json_t *msgs)
{
    const char *type = block_type(b);
    const json_t *t = json_object_get(b, "text");
    if (type && !strcmp(type, "text") && json_is_string(t))
        return json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", t));
    if (type && !strcmp(type, "image")) {
        json_t *img = enc_image(b);
        if (!img)
            return enc_fail(e, p, "image source must be base64 (media_type, data) or url");
        return json_array_append_new(parts, img);
    }
    if (type && !strcmp(type, "tool_result"))
        return enc_tool_result(e, b, p, msgs);
    const json_t *src = json_object_get(b, "source");
    const char *kind = json_string_value(json_object_get(src, "type"));
    const json_t *data = json_object_get(src, "data");
    if (type && !strcmp(type, "document") && kind && !strcmp(kind, "text") &&
        json_is_string(data))   /* a plain-text document is text; PDFs have no counterpart */
        return json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text",
                                                      data));
    return enc_fail(e, p, "content block type '%s' is not supported by this model's "
                    "upstream (OpenAI-type)", type ? type : "(none)");
}

static int enc_user(struct enc *e, const json_t *content, const char *p, json_t *msgs)
{
    json_t *parts = json_array();
    size_t i;
    const json_t *b;
    char bp[96];
    int rc = 0;
    json_array_foreach(content, i, b) {
        snprintf(bp, sizeof bp, "%s[%zu]", p, i);
        if ((rc = enc_user_block(e, b, bp, parts, msgs)) < 0)
            break;
    }
    if (rc == 0 && json_array_size(parts)) {
        const json_t *only = json_array_size(parts) == 1 ? json_array_get(parts, 0) : NULL;
        json_t *text = json_object_get(only, "text");
        rc = json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content",
                                                   text ? text : parts));
    }
    json_decref(parts);
    return rc;
}

static json_t *enc_tool_call(const json_t *b)
{
    char *args = json_dumps(json_object_get(b, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *call = json_pack("{s:s?,s:s,s:{s:s?,s:s}}", "id",
                             json_string_value(json_object_get(b, "id")), "type", "function",
                             "function", "name", json_string_value(json_object_get(b, "name")),
                             "arguments", args ? args : "{}");
    free(args);
    return call;
}

/* Text blocks are concatenated, tool_use blocks become tool_calls (their ids kept, so the
 * client's tool_result ids match), thinking blocks are dropped. */
static int enc_assistant(struct enc *e, const json_t *content, const char *p, json_t *msgs)
{
    struct buf text = BUF_INIT;
    json_t *calls = json_array(), *m = NULL;
    size_t i;
    const json_t *b;
    int rc = -1;
    json_array_foreach(content, i, b) {
        const char *type = block_type(b), *t = json_string_value(json_object_get(b, "text"));
        char bp[96];
        snprintf(bp, sizeof bp, "%s[%zu]", p, i);
        if (type && !strcmp(type, "text") && t)
            buf_puts(&text, t);
        else if (type && !strcmp(type, "tool_use") && json_is_string(json_object_get(b, "name")))
            json_array_append_new(calls, enc_tool_call(b));
        else if (type && !strcmp(type, "tool_use")) {
            enc_fail(e, bp, "tool_use needs a name");
            goto done;
        } else if (!type || (strcmp(type, "thinking") && strcmp(type, "redacted_thinking"))) {
            enc_fail(e, bp, "content block type '%s' is not supported in an assistant message "
                     "for this model's upstream (OpenAI-type)", type ? type : "(none)");
            goto done;
        }
    }
    m = json_pack("{s:s,s:o}", "role", "assistant", "content",
                  text.len || !json_array_size(calls) ? json_stringn(text.data ? text.data : "",
                                                                    text.len) : json_null());
    if (m && json_array_size(calls))
        json_object_set(m, "tool_calls", calls);
    rc = m ? json_array_append(msgs, m) : enc_fail(e, p, "out of memory");
done:
    json_decref(m);
    json_decref(calls);
    buf_free(&text);
    return rc;
}

static int enc_messages(struct enc *e, const json_t *in, json_t *msgs)
{
    size_t i;
    const json_t *m;
    char p[64];
    if (!json_is_array(in))
        return enc_fail(e, "messages", "messages must be an array of messages");
    json_array_foreach(in, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const json_t *c = json_object_get(m, "content");
        snprintf(p, sizeof p, "messages[%zu].content", i);
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
            snprintf(p, sizeof p, "messages[%zu].role", i);
            return enc_fail(e, p, "role must be \"user\" or \"assistant\"");
        }
        if (json_is_string(c)) {
            if (json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", role, "content", c)))
                return enc_fail(e, p, "out of memory");
            continue;
        }
        if (!json_is_array(c))
            return enc_fail(e, p, "content must be a string or an array of content blocks");
        int rc = !strcmp(role, "user") ? enc_user(e, c, p, msgs) : enc_assistant(e, c, p, msgs);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* max_tokens (required by the Messages API), sampling, stop sequences, user, stream. */
static int enc_options(struct enc *e, const json_t *msg, json_t *chat)
{
    const json_t *mt = json_object_get(msg, "max_tokens");
    const json_t *stop = json_object_get(msg, "stop_sequences");
    const char *user = json_string_value(json_object_get(json_object_get(msg, "metadata"),
                                                         "user_id"));
    if (!json_is_integer(mt) || json_integer_value(mt) < 1)
        return enc_fail(e, "max_tokens", "a positive integer is required");
    json_object_set(chat, "max_tokens", (json_t *)mt);
    static const char *const copied[] = {"temperature", "top_p"};
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        json_t *v = json_object_get(msg, copied[i]);
        if (json_is_number(v))
            json_object_set(chat, copied[i], v);
    }
    if (json_is_array(stop) && json_array_size(stop))
        json_object_set(chat, "stop", (json_t *)stop);
    else if (stop && !json_is_null(stop) && !json_is_array(stop))
        return enc_fail(e, "stop_sequences", "stop_sequences must be an array of strings");
    if (user)
        json_object_set_new(chat, "user", json_string(user));
    if (json_is_true(json_object_get(msg, "stream"))) {
        /* usage arrives in a last chunk only when asked for; message_delta needs it. */
        json_object_set_new(chat, "stream", json_true());
        json_object_set_new(chat, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return 0;
}

static int enc_tool_choice(struct enc *e, const json_t *tc, json_t *chat)
{
    const char *type = json_string_value(json_object_get(tc, "type"));
    const char *name = json_string_value(json_object_get(tc, "name"));
    json_t *v = NULL;
    if (!tc || json_is_null(tc))
        return 0;
    if (type && !strcmp(type, "auto"))
        v = json_string("auto");
    else if (type && !strcmp(type, "any"))
        v = json_string("required");
    else if (type && !strcmp(type, "none"))
        v = json_string("none");
    else if (type && !strcmp(type, "tool") && name)
        v = json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name", name);
    else
        return enc_fail(e, "tool_choice", "tool_choice type must be auto, any, tool (with a "
                        "name) or none");
    json_object_set_new(chat, "tool_choice", v);
    if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")))
        json_object_set_new(chat, "parallel_tool_calls", json_false());
    return 0;
}

/* Client tools become functions; Anthropic's server tools (web search, bash …) have no
 * counterpart on an OpenAI-type upstream and are refused. */
static int enc_tools(struct enc *e, const json_t *msg, json_t *chat)
{
    const json_t *tools = json_object_get(msg, "tools"), *t;
    size_t i;
    char p[48];
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return enc_fail(e, "tools", "tools must be an array");
    json_t *fns = json_array();
    json_array_foreach(tools, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *type = json_string_value(json_object_get(t, "type"));
        const json_t *schema = json_object_get(t, "input_schema");
        snprintf(p, sizeof p, "tools[%zu]", i);
        if (!name || !json_is_object(schema) || (type && strcmp(type, "custom"))) {
            json_decref(fns);
            return enc_fail(e, p, "only client tools (name, input_schema) can be used with "
                            "this model's upstream (OpenAI-type)");
        }
        json_array_append_new(fns, json_pack("{s:s,s:{s:s,s:s*,s:O}}", "type", "function",
                                             "function", "name", name, "description",
                                             json_string_value(json_object_get(t,
                                                                               "description")),
                                             "parameters", schema));
    }
    if (json_array_size(fns))
        json_object_set(chat, "tools", fns);
    json_decref(fns);
    return json_array_size(tools) ? enc_tool_choice(e, json_object_get(msg, "tool_choice"), chat)
                                  : 0;
}
