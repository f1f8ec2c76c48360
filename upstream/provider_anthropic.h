/* provider_anthropic: translation between OpenAI chat completions (the gateway's language) and
 * Anthropic's Messages API: requests, responses, stream events, usage and errors. Pure functions. */
#ifndef LLMUX_PROVIDER_ANTHROPIC_H
#define LLMUX_PROVIDER_ANTHROPIC_H

#include <jansson.h>
#include <stdbool.h>
#include "common/buf.h"

#define ANTHROPIC_VERSION "2023-06-01"
#define ANTHROPIC_DEFAULT_MAX_TOKENS 4096

/* OpenAI chat body → Anthropic /v1/messages body for `model`. NULL with a client-facing
 * message in err (and the offending field in param, e.g. "messages[2].content") when the body
 * can't be expressed (e.g. n > 1, an unknown role). */
json_t *anthropic_encode_chat(const json_t *openai, const char *model, char *err, size_t errlen,
                              char *param, size_t paramlen);

/* Anthropic message response → OpenAI chat.completion, reporting `client_model` as model. */
json_t *anthropic_decode_chat(const json_t *msg, const char *client_model);

/* Anthropic error (status + raw body, maybe not JSON) → OpenAI {"error":{...}} object. */
json_t *anthropic_decode_error(long status, const char *body, size_t len);

/* Stream translation state, one per upstream call. */
struct anthropic_stream {
    char id[80];
    char *model;                /* client model name reported in chunks */
    long created;
    long prompt_tokens, completion_tokens;
    int tool_calls;             /* tool_use blocks started: OpenAI's tool_calls[].index */
    bool done;                  /* message_stop seen */
};

void anthropic_stream_init(struct anthropic_stream *s, const char *client_model, long created);
/* One Anthropic SSE event → zero or more OpenAI frames appended to out, each exactly
 * "data: {chat.completion.chunk}\n\n"; after message_stop also "data: [DONE]\n\n".
 * Returns 0, or -1 for an upstream "error" event or an undecodable one: out then holds
 * (only) an OpenAI-shaped error object {"error":{...}} as JSON text, not framed. */
int anthropic_stream_event(struct anthropic_stream *s, const char *event, size_t elen,
                           const char *data, size_t dlen, struct buf *out);
void anthropic_stream_free(struct anthropic_stream *s);

#endif
