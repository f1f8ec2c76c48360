/* provider: codec table (OpenAI pass-through, Anthropic translation) and shared error helpers. */
#include "upstream/provider.h"

#include "common/json_scan.h"

#include <string.h>

extern const struct codec_ops codec_openai;
extern const struct codec_ops codec_anthropic;

void codec_init(struct codec *c, enum conf_provider p, const char *model, long created)
{
    memset(c, 0, sizeof *c);
    c->ops = p == PROVIDER_ANTHROPIC ? &codec_anthropic : &codec_openai;
    c->model = model;
    if (p == PROVIDER_ANTHROPIC)
        anthropic_stream_init(&c->anthropic, model, created);
}

void codec_free(struct codec *c)
{
    if (c->ops == &codec_anthropic)
        anthropic_stream_free(&c->anthropic);
    c->ops = NULL;
}

json_t *openai_error(const char *message, const char *type, const char *param, const char *code)
{
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type", type,
                     "param", param, "code", code);
}

void openai_usage(const json_t *obj, long *prompt, long *completion)
{
    json_t *u = json_object_get(obj, "usage");
    if (!json_is_object(u))
        return;
    json_t *p = json_object_get(u, "prompt_tokens"), *c = json_object_get(u, "completion_tokens");
    if (json_is_integer(p))
        *prompt += (long)json_integer_value(p);
    if (json_is_integer(c))
        *completion += (long)json_integer_value(c);
}

void openai_usage_text(const char *body, size_t len, long *prompt, long *completion)
{
    size_t start, end;
    if (json_scan_member(body, len, "usage", &start, &end) < 0)
        return;
    json_t *u = json_loadb(body + start, end - start, 0, NULL);
    json_t *wrap = json_pack("{s:o}", "usage", u ? u : json_null());
    openai_usage(wrap, prompt, completion);
    json_decref(wrap);
}
