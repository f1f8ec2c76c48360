/* provider_anthropic_encode: an OpenAI chat completions request → an Anthropic Messages API
 * request (system prompt, alternation, content parts, tools, parameters), as pure jansson. */
#include "upstream/provider_anthropic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_valid.h"

/* Where an encoding error goes: a client-facing message and the offending field's path. */
struct enc {
    char *err;
    size_t errlen;
    char *param;
    size_t paramlen;
    unsigned default_max_tokens;    /* when the client sent none (Anthropic requires one) */
};

static int enc_fail(struct enc *e, const char *msg, const char *pfmt, ...)
    __attribute__((format(printf, 3, 4)));
static int enc_oom(struct enc *e);
static int enc_messages(struct enc *e, const json_t *req, json_t *out);
static int enc_message(struct enc *e, const json_t *m, size_t i, json_t *list, struct buf *sys);
static int enc_system(struct enc *e, const json_t *content, size_t i, struct buf *sys);
static int enc_content(struct enc *e, const json_t *content, size_t i, json_t *blocks);
static int enc_text(struct enc *e, json_t *blocks, const char *s, size_t n);
static int enc_image(struct enc *e, const json_t *part, size_t i, size_t j, json_t *blocks);
static int enc_tool_calls(struct enc *e, const json_t *calls, size_t i, json_t *blocks);
static int enc_tool_result(struct enc *e, const json_t *m, size_t i, json_t *blocks);
static int enc_push(json_t *list, const char *role, json_t *blocks);
static int enc_params(struct enc *e, const json_t *req, json_t *out);
static int enc_number(struct enc *e, const json_t *req, const char *name, json_t *out);
static int enc_stop(struct enc *e, const json_t *req, json_t *out);
static json_t *enc_tool(struct enc *e, const json_t *t, size_t i);
static int enc_tools(struct enc *e, const json_t *req, json_t *out);
static int enc_tool_choice(struct enc *e, const json_t *req, json_t *out);

/* ---- request ---------------------------------------------------------------------------- */

/* Dropped on purpose, having no Anthropic counterpart: frequency_penalty, presence_penalty,
 * logit_bias, logprobs, top_logprobs, seed, response_format, stream_options (usage is always
 * reported on the last chunk), service_tier, store, and messages' `name`. A client sending them
 * gets what a model that ignores a hint gives, rather than a refusal. */
json_t *anthropic_encode_chat(const json_t *openai, const char *model,
                              unsigned default_max_tokens, char *err, size_t errlen,
                              char *param, size_t paramlen)
{
    struct enc e = {err, errlen, param, paramlen,
                    default_max_tokens ? default_max_tokens : ANTHROPIC_DEFAULT_MAX_TOKENS};
    json_t *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (param && paramlen)
        param[0] = '\0';
    if (!json_is_object(openai)) {
        enc_fail(&e, "request body must be a JSON object", "%s", "");
        goto fail;
    }
    out = json_pack("{s:s}", "model", model ? model : "");
    if (!out) {
        enc_oom(&e);
        goto fail;
    }
    if (enc_messages(&e, openai, out) < 0 || enc_params(&e, openai, out) < 0 ||
        enc_tools(&e, openai, out) < 0)
        goto fail;
    return out;
fail:
    json_decref(out);
    return NULL;
}

static int enc_fail(struct enc *e, const char *msg, const char *pfmt, ...)
{
    if (e->err && e->errlen)
        snprintf(e->err, e->errlen, "%s", msg);
    if (e->param && e->paramlen) {
        va_list ap;
        va_start(ap, pfmt);
        vsnprintf(e->param, e->paramlen, pfmt, ap);
        va_end(ap);
    }
    return -1;
}

static int enc_oom(struct enc *e)
{
    return enc_fail(e, "out of memory while translating the request", "%s", "");
}

/* Anthropic takes the system prompt as a top-level field and wants user/assistant turns to
 * alternate, so system messages are lifted out and same-role neighbours merged. */
static int enc_messages(struct enc *e, const json_t *req, json_t *out)
{
    const json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return enc_fail(e, "'messages' must be a non-empty array", "messages");
    struct buf sys = BUF_INIT;
    json_t *list = json_array();
    int rc = -1;
    size_t i;
    const json_t *m;
    if (!list) {
        enc_oom(e);
        goto done;
    }
    json_array_foreach(msgs, i, m) {
        if (enc_message(e, m, i, list, &sys) < 0)
            goto done;
    }
    if (json_array_size(list) == 0) {
        enc_fail(e, "'messages' must contain a user or assistant message with content",
                 "messages");
        goto done;
    }
    if ((sys.len && json_object_set_new(out, "system", json_stringn(sys.data, sys.len)) < 0) ||
        json_object_set(out, "messages", list) < 0) {
        enc_oom(e);
        goto done;
    }
    rc = 0;
done:
    json_decref(list);
    buf_free(&sys);
    return rc;
}

static int enc_message(struct enc *e, const json_t *m, size_t i, json_t *list, struct buf *sys)
{
    if (!json_is_object(m))
        return enc_fail(e, "each message must be an object", "messages[%zu]", i);
    const char *role = json_string_value(json_object_get(m, "role"));
    const json_t *content = json_object_get(m, "content");
    if (role && (!strcmp(role, "system") || !strcmp(role, "developer")))
        return enc_system(e, content, i, sys);
    if (!role || (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "tool")))
        return enc_fail(e, "unsupported message role (expected system, developer, user, "
                        "assistant or tool)", "messages[%zu].role", i);
    json_t *blocks = json_array();
    int rc = -1;
    if (!blocks) {
        enc_oom(e);
        goto done;
    }
    if (!strcmp(role, "tool")) {
        if (enc_tool_result(e, m, i, blocks) < 0)
            goto done;
        role = "user";  /* Anthropic carries tool results in the user turn */
    } else {
        if (enc_content(e, content, i, blocks) < 0)
            goto done;
        if (!strcmp(role, "assistant") &&
            enc_tool_calls(e, json_object_get(m, "tool_calls"), i, blocks) < 0)
            goto done;
    }
    if (enc_push(list, role, blocks) < 0) {
        enc_oom(e);
        goto done;
    }
    rc = 0;
done:
    json_decref(blocks);
    return rc;
}

static int enc_sys_append(struct enc *e, struct buf *sys, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if ((sys->len && buf_append(sys, "\n\n", 2) < 0) || buf_append(sys, s, n) < 0)
        return enc_oom(e);
    return 0;
}

static int enc_system(struct enc *e, const json_t *content, size_t i, struct buf *sys)
{
    if (json_is_string(content))
        return enc_sys_append(e, sys, json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return enc_fail(e, "system message content must be a string or an array of text parts",
                        "messages[%zu].content", i);
    size_t j;
    const json_t *part;
    json_array_foreach(content, j, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const json_t *text = json_object_get(part, "text");
        if (!type || strcmp(type, "text") || !json_is_string(text))
            return enc_fail(e, "system message parts must be text parts",
                            "messages[%zu].content[%zu]", i, j);
        if (enc_sys_append(e, sys, json_string_value(text), json_string_length(text)) < 0)
            return -1;
    }
    return 0;
}

static int enc_content(struct enc *e, const json_t *content, size_t i, json_t *blocks)
{
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content))
        return enc_text(e, blocks, json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return enc_fail(e, "message content must be a string, an array of content parts or null",
                        "messages[%zu].content", i);
    size_t j;
    const json_t *part;
    json_array_foreach(content, j, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (type && !strcmp(type, "text")) {
            const json_t *text = json_object_get(part, "text");
            if (!json_is_string(text))
                return enc_fail(e, "text parts need a string 'text'",
                                "messages[%zu].content[%zu].text", i, j);
            if (enc_text(e, blocks, json_string_value(text), json_string_length(text)) < 0)
                return -1;
        } else if (type && !strcmp(type, "image_url")) {
            if (enc_image(e, part, i, j, blocks) < 0)
                return -1;
        } else {
            return enc_fail(e, "unsupported content part type (expected text or image_url)",
                            "messages[%zu].content[%zu].type", i, j);
        }
    }
    return 0;
}

/* Anthropic rejects empty text blocks, and an empty OpenAI text says nothing, so it is skipped. */
static int enc_text(struct enc *e, json_t *blocks, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (json_array_append_new(blocks, json_pack("{s:s,s:s%}", "type", "text", "text", s, n)) < 0)
        return enc_oom(e);
    return 0;
}

static int enc_image(struct enc *e, const json_t *part, size_t i, size_t j, json_t *blocks)
{
    const json_t *iu = json_object_get(part, "image_url");
    const char *url = json_is_object(iu) ? json_string_value(json_object_get(iu, "url"))
                                         : json_string_value(iu);
    json_t *source;
    if (!url)
        return enc_fail(e, "image_url parts need a string 'image_url.url'",
                        "messages[%zu].content[%zu].image_url", i, j);
    if (!strncasecmp(url, "data:", 5)) {
        const char *b64 = strstr(url, ";base64,");
        if (!b64 || b64 == url + 5)
            return enc_fail(e, "image data URLs must be data:<media type>;base64,<data>",
                            "messages[%zu].content[%zu].image_url", i, j);
        source = json_pack("{s:s,s:s%,s:s}", "type", "base64", "media_type", url + 5,
                           (size_t)(b64 - (url + 5)), "data", b64 + 8);
    } else if (!strncasecmp(url, "https://", 8) || !strncasecmp(url, "http://", 7)) {
        source = json_pack("{s:s,s:s}", "type", "url", "url", url);
    } else {
        return enc_fail(e, "image URLs must be http(s) URLs or base64 data URLs",
                        "messages[%zu].content[%zu].image_url", i, j);
    }
    if (!source ||
        json_array_append_new(blocks, json_pack("{s:s,s:o}", "type", "image", "source", source)))
        return enc_oom(e);
    return 0;
}

/* OpenAI sends arguments as JSON text; Anthropic wants the object itself. */
static json_t *enc_arguments(const json_t *args)
{
    if (!args || json_is_null(args))
        return json_object();
    if (json_is_object(args))
        return json_deep_copy(args);
    const char *s = json_string_value(args);
    if (!s)
        return NULL;
    if (s[strspn(s, " \t\r\n")] == '\0')
        return json_object();
    json_t *v = json_valid_load(s, strlen(s), 0, NULL);     /* priced: a client's string */
    if (!json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

static int enc_tool_calls(struct enc *e, const json_t *calls, size_t i, json_t *blocks)
{
    if (!calls || json_is_null(calls))
        return 0;
    if (!json_is_array(calls))
        return enc_fail(e, "'tool_calls' must be an array", "messages[%zu].tool_calls", i);
    size_t j;
    const json_t *call;
    json_array_foreach(calls, j, call) {
        const json_t *fn = json_object_get(call, "function");
        const char *id = json_string_value(json_object_get(call, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!id)
            return enc_fail(e, "tool calls need a string 'id'",
                            "messages[%zu].tool_calls[%zu].id", i, j);
        if (!name)
            return enc_fail(e, "tool calls need a string 'function.name'",
                            "messages[%zu].tool_calls[%zu].function.name", i, j);
        json_t *input = enc_arguments(json_object_get(fn, "arguments"));
        if (!input)
            return enc_fail(e, "tool call arguments must be a JSON object encoded as a string",
                            "messages[%zu].tool_calls[%zu].function.arguments", i, j);
        json_t *use = json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id, "name", name,
                                "input", input);
        if (json_array_append_new(blocks, use) < 0)
            return enc_oom(e);
    }
    return 0;
}

static int enc_tool_result(struct enc *e, const json_t *m, size_t i, json_t *blocks)
{
    const char *id = json_string_value(json_object_get(m, "tool_call_id"));
    if (!id)
        return enc_fail(e, "tool messages need a string 'tool_call_id'",
                        "messages[%zu].tool_call_id", i);
    const json_t *content = json_object_get(m, "content");
    json_t *res = json_pack("{s:s,s:s}", "type", "tool_result", "tool_use_id", id);
    json_t *inner = NULL;
    int rc = -1;
    if (!res) {
        enc_oom(e);
        goto done;
    }
    if (json_is_string(content)) {
        if (json_string_length(content))
            inner = json_copy((json_t *)content);
    } else {
        inner = json_array();
        if (inner && enc_content(e, content, i, inner) < 0)
            goto done;
        if (json_array_size(inner) == 0) {
            json_decref(inner);
            inner = NULL;
        }
    }
    if ((inner && json_object_set(res, "content", inner) < 0) ||
        json_array_append(blocks, res) < 0) {
        enc_oom(e);
        goto done;
    }
    rc = 0;
done:
    json_decref(inner);
    json_decref(res);
    return rc;
}

/* Appends one turn, merged into the previous one when the role repeats. A turn with no blocks
 * (an empty user message, an assistant message with neither text nor tools) is left out:
 * Anthropic rejects empty content and it carried nothing. */
static int enc_push(json_t *list, const char *role, json_t *blocks)
{
    if (json_array_size(blocks) == 0)
        return 0;
    size_t n = json_array_size(list);
    json_t *last = n ? json_array_get(list, n - 1) : NULL;
    const char *last_role = json_string_value(json_object_get(last, "role"));
    if (last_role && !strcmp(last_role, role))
        return json_array_extend(json_object_get(last, "content"), blocks);
    return json_array_append_new(list, json_pack("{s:s,s:O}", "role", role, "content", blocks));
}

static int enc_params(struct enc *e, const json_t *req, json_t *out)
{
    const json_t *v = json_object_get(req, "n");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return enc_fail(e, "'n' must be a positive integer", "n");
        if (json_integer_value(v) > 1)
            return enc_fail(e, "'n' greater than 1 is not supported by this model's provider",
                            "n");
    }
    /* max_completion_tokens is OpenAI's successor to max_tokens; it wins when both are set. */
    const char *mt = "max_completion_tokens";
    v = json_object_get(req, mt);
    if (!v || json_is_null(v)) {
        mt = "max_tokens";
        v = json_object_get(req, mt);
    }
    json_int_t max_tokens = e->default_max_tokens;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return enc_fail(e, "max_tokens / max_completion_tokens must be a positive integer",
                            "%s", mt);
        max_tokens = json_integer_value(v);
    }
    if (json_object_set_new(out, "max_tokens", json_integer(max_tokens)) < 0)
        return enc_oom(e);
    if (enc_number(e, req, "temperature", out) < 0 || enc_number(e, req, "top_p", out) < 0 ||
        enc_stop(e, req, out) < 0)
        return -1;
    v = json_object_get(req, "stream");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return enc_fail(e, "'stream' must be a boolean", "stream");
        if (json_object_set_new(out, "stream", json_boolean(json_is_true(v))) < 0)
            return enc_oom(e);
    }
    v = json_object_get(req, "user");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return enc_fail(e, "'user' must be a string", "user");
        json_t *meta = json_pack("{s:O}", "user_id", (json_t *)v);
        if (json_object_set_new(out, "metadata", meta) < 0)
            return enc_oom(e);
    }
    return 0;
}

static int enc_number(struct enc *e, const json_t *req, const char *name, json_t *out)
{
    const json_t *v = json_object_get(req, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return enc_fail(e, "must be a number", "%s", name);
    if (json_object_set_new(out, name, json_deep_copy(v)) < 0)
        return enc_oom(e);
    return 0;
}

static int enc_stop(struct enc *e, const json_t *req, json_t *out)
{
    const json_t *v = json_object_get(req, "stop");
    json_t *seq;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        seq = json_pack("[O]", (json_t *)v);
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *s;
        json_array_foreach(v, i, s) {
            if (!json_is_string(s))
                return enc_fail(e, "'stop' must be a string or an array of strings", "stop");
        }
        if (json_array_size(v) == 0)
            return 0;
        seq = json_deep_copy(v);
    } else {
        return enc_fail(e, "'stop' must be a string or an array of strings", "stop");
    }
    if (json_object_set_new(out, "stop_sequences", seq) < 0)
        return enc_oom(e);
    return 0;
}

/* {type:function, function:{name, description, parameters}} → {name, description, input_schema};
 * Anthropic requires a schema, so a function without parameters gets the empty object schema. */
static json_t *enc_tool(struct enc *e, const json_t *t, size_t i)
{
    const char *type = json_string_value(json_object_get(t, "type"));
    const json_t *fn = json_object_get(t, "function");
    const char *name = json_string_value(json_object_get(fn, "name"));
    const json_t *desc = json_object_get(fn, "description");
    const json_t *params = json_object_get(fn, "parameters");
    if (!type || strcmp(type, "function")) {
        enc_fail(e, "only function tools are supported", "tools[%zu].type", i);
        return NULL;
    }
    if (!name) {
        enc_fail(e, "tools need a string 'function.name'", "tools[%zu].function.name", i);
        return NULL;
    }
    json_t *schema = json_is_object(params) ? json_deep_copy(params)
                     : json_pack("{s:s,s:{}}", "type", "object", "properties");
    json_t *tool = json_pack("{s:s}", "name", name);
    if (!tool || !schema || (json_is_string(desc) &&
                             json_object_set(tool, "description", (json_t *)desc) < 0) ||
        json_object_set(tool, "input_schema", schema) < 0) {
        json_decref(tool);
        tool = NULL;
        enc_oom(e);
    }
    json_decref(schema);
    return tool;
}

static int enc_tools(struct enc *e, const json_t *req, json_t *out)
{
    const json_t *tools = json_object_get(req, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return enc_fail(e, "'tools' must be an array", "tools");
        json_t *list = json_array();
        size_t i;
        const json_t *t;
        int rc = list ? 0 : enc_oom(e);
        json_array_foreach(tools, i, t) {
            json_t *tool = rc < 0 ? NULL : enc_tool(e, t, i);
            if (!tool || json_array_append_new(list, tool) < 0) {
                rc = tool ? enc_oom(e) : -1;
                break;
            }
        }
        if (rc == 0 && json_array_size(list) && json_object_set(out, "tools", list) < 0)
            rc = enc_oom(e);
        json_decref(list);
        if (rc < 0)
            return -1;
    }
    return enc_tool_choice(e, req, out);
}

/* auto → auto, none → none, required → any, {function:{name}} → {type:tool,name}. OpenAI's
 * parallel_tool_calls=false is Anthropic's disable_parallel_tool_use, part of tool_choice. */
static int enc_tool_choice(struct enc *e, const json_t *req, json_t *out)
{
    const json_t *tc = json_object_get(req, "tool_choice");
    const char *s = json_string_value(tc);
    json_t *choice = NULL;
    if (s && !strcmp(s, "auto")) {
        choice = json_pack("{s:s}", "type", "auto");
    } else if (s && !strcmp(s, "none")) {
        choice = json_pack("{s:s}", "type", "none");
    } else if (s && !strcmp(s, "required")) {
        choice = json_pack("{s:s}", "type", "any");
    } else if (json_is_object(tc)) {
        const char *name = json_string_value(json_object_get(json_object_get(tc, "function"),
                                                             "name"));
        if (!name)
            return enc_fail(e, "tool_choice needs a string 'function.name'",
                            "tool_choice.function.name");
        choice = json_pack("{s:s,s:s}", "type", "tool", "name", name);
    } else if (tc && !json_is_null(tc)) {
        return enc_fail(e, "tool_choice must be \"auto\", \"none\", \"required\" or "
                        "{\"type\":\"function\",\"function\":{\"name\":...}}", "tool_choice");
    } else if (json_is_false(json_object_get(req, "parallel_tool_calls")) &&
               json_object_get(out, "tools")) {
        choice = json_pack("{s:s}", "type", "auto");
    } else {
        return 0;
    }
    if (!choice)
        return enc_oom(e);
    const char *type = json_string_value(json_object_get(choice, "type"));
    if (json_is_false(json_object_get(req, "parallel_tool_calls")) && strcmp(type, "none") &&
        json_object_set_new(choice, "disable_parallel_tool_use", json_true()) < 0) {
        json_decref(choice);
        return enc_oom(e);
    }
    if (json_object_set_new(out, "tool_choice", choice) < 0)
        return enc_oom(e);
    return 0;
}
