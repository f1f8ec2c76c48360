/* provider_anthropic: translation between OpenAI chat completions (the gateway's language) and
 * Anthropic's Messages API: requests, responses, stream events, usage and errors. Pure functions. */
#ifndef LLMUX_PROVIDER_ANTHROPIC_H
#define LLMUX_PROVIDER_ANTHROPIC_H

#include <jansson.h>
#include <stdbool.h>
#include "common/buf.h"
#include "upstream/usage.h"

#define ANTHROPIC_VERSION "2023-06-01"
#define ANTHROPIC_DEFAULT_MAX_TOKENS 4096

/* OpenAI chat body → Anthropic /v1/messages body for `model`, with max_tokens set to
 * default_max_tokens (0: ANTHROPIC_DEFAULT_MAX_TOKENS) when the client sent none. NULL with a
 * client-facing
 * message in err (and the offending field in param, e.g. "messages[2].content") when the body
 * can't be expressed (e.g. n > 1, an unknown role). */
json_t *anthropic_encode_chat(const json_t *openai, const char *model,
                              unsigned default_max_tokens, char *err, size_t errlen,
                              char *param, size_t paramlen);

/* Anthropic message response → OpenAI chat.completion. Its `model` is the upstream's own model
 * string (as an OpenAI upstream's answer carries), else `model` (what was asked for). */
json_t *anthropic_decode_chat(const json_t *msg, const char *model);

/* Anthropic error (status + raw body, maybe not JSON) → OpenAI {"error":{...}} object. */
json_t *anthropic_decode_error(long status, const char *body, size_t len);

/* Stream translation state, one per upstream call. */
struct anthropic_stream {
    char id[80];
    char *model;                /* reported in chunks: the upstream's (from message_start),
                                 * else the model asked for */
    long created;
    struct usage usage;
    unsigned usage_invalid;     /* usage numbers refused (see usage_take) */
    int tool_calls;             /* tool_use blocks started: OpenAI's tool_calls[].index */
    bool done;                  /* message_stop seen */
};

/* An Anthropic usage object into u (prompt includes the cache reads and writes, counted
 * apart too), each count taken only when valid (usage_take): an absent or invalid one is 0
 * (output_tokens: u's completion is left as it was). u is left alone when usage is not an
 * object. Returns how many counts were present but invalid. */
unsigned anthropic_usage(const json_t *usage, struct usage *u);
/* A message_delta's usage: newer API versions repeat the (cumulative) input counts, taken as
 * above; older ones give only the output count, which is cumulative and replaces. */
unsigned anthropic_usage_delta(const json_t *usage, struct usage *u);
void anthropic_stream_init(struct anthropic_stream *s, const char *model, long created);
/* One Anthropic SSE event → zero or more OpenAI frames appended to out, each exactly
 * "data: {chat.completion.chunk}\n\n"; after message_stop also "data: [DONE]\n\n".
 * Returns 0, or -1 for an upstream "error" event or an undecodable one: out then holds
 * (only) an OpenAI-shaped error object {"error":{...}} as JSON text, not framed. */
int anthropic_stream_event(struct anthropic_stream *s, const char *event, size_t elen,
                           const char *data, size_t dlen, struct buf *out);
void anthropic_stream_free(struct anthropic_stream *s);

#endif
