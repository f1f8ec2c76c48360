/* provider: the codec seam. A codec turns a client's request on one endpoint into one
 * provider's wire format and its answers (bodies, stream events, errors) back into the shape
 * that endpoint's clients expect: OpenAI's, or Anthropic's on /v1/messages. */
#ifndef LLMUX_PROVIDER_H
#define LLMUX_PROVIDER_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>

#include "common/buf.h"
#include "conf/conf.h"
#include "upstream/provider_anthropic.h"
#include "upstream/provider_messages.h"

/* Client-facing endpoints that reach an upstream. EP_MESSAGES and EP_COUNT_TOKENS are
 * Anthropic's /v1/messages and /v1/messages/count_tokens; EP_RESPONSES is OpenAI's. */
enum endpoint {
    EP_CHAT, EP_COMPLETIONS, EP_EMBEDDINGS, EP_MESSAGES, EP_COUNT_TOKENS, EP_RESPONSES, EP_COUNT
};

#define CODEC_OVER_BUDGET (-2)

/* Per-call translation state. */
struct codec {
    const struct codec_ops *ops;
    const char *model;              /* the model asked of the upstream (borrowed): reported
                                     * when the upstream's answer names none */
    enum endpoint ep;
    const char *anthropic_version;  /* the client's anthropic-version, or NULL (borrowed) */
    bool stream_done;               /* the terminal event ([DONE] / message_stop) was relayed */
    bool strip_usage;               /* the usage-only stream chunk was asked for by us, not the
                                     * client: it is read, not relayed */
    struct usage usage;             /* of the answer; added to by decode_body/decode_event */
    unsigned usage_invalid;         /* usage numbers refused (negative, past 2^40, not ints) */
    struct anthropic_stream anthropic;
    struct messages_stream messages;
};

struct codec_ops {
    const char *name;
    /* Path appended to base_url, or NULL when the provider has no such endpoint. */
    const char *(*path)(enum endpoint ep);
    /* Writes the upstream body for `model` into out from raw, the client's JSON text (valid,
     * an object); default_max_tokens is what a provider that requires max_tokens gets when
     * the client sent none. body is its tree when the caller has one (the codec may change
     * it), else NULL: a codec that needs a tree builds it under the parse budget (codec_tree)
     * and frees it before returning. -1 with err/param (a client error, 400) when the request
     * can't be expressed, CODEC_OVER_BUDGET (413) when its tree would take more than the
     * budget. */
    int (*encode)(enum endpoint ep, json_t *body, const struct buf *raw, const char *model,
                  unsigned default_max_tokens, struct buf *out, char *err, size_t errlen,
                  char *param, size_t paramlen);
    /* Authentication and provider headers. */
    struct curl_slist *(*auth)(const struct codec *c, const struct conf_upstream *up,
                               struct curl_slist *h);
    /* A complete 2xx body → OpenAI JSON in out; leaves out empty to mean "relay as is".
     * -1 when the body is not what the provider promised (garbage → 502). */
    int (*decode_body)(struct codec *c, enum endpoint ep, const char *in, size_t len,
                       struct buf *out);
    /* One upstream SSE event → OpenAI frames appended to out. -1: an error event or garbage;
     * out then holds an OpenAI error object (JSON text). */
    int (*decode_event)(struct codec *c, const char *event, size_t elen,
                        const char *data, size_t dlen, struct buf *out);
    /* A non-2xx answer → OpenAI {"error":{...}} (new reference). */
    json_t *(*decode_error)(long status, const char *body, size_t len);
};

void codec_init(struct codec *c, enum conf_provider p, enum endpoint ep,
                const char *model, long created);
void codec_free(struct codec *c);
/* Whether provider p serves endpoint ep at all (directly or translated). */
bool codec_supports(enum conf_provider p, enum endpoint ep);

/* Shared helpers for codecs and the gateway. */
json_t *openai_error(const char *message, const char *type, const char *param, const char *code);
/* Anthropic's error shape {"type":"error","error":{"type","message"}}, its type named after
 * the HTTP status (400 invalid_request_error … 529 overloaded_error). */
json_t *anthropic_error(int status, const char *message);
const char *anthropic_error_type(int status);
/* The client's body with its top-level "model" replaced (bytes spliced when raw is known,
 * else re-encoded from body). -1 out of memory (err set). */
int codec_splice_model(json_t *body, const struct buf *raw, const char *model, struct buf *out,
                       char *err, size_t errlen);
/* The tree a translating codec works on: body (a new reference) when given, else raw parsed
 * under the parse budget. NULL with err set and *rc -1 (not an object) or CODEC_OVER_BUDGET. */
json_t *codec_tree(json_t *body, const struct buf *raw, char *err, size_t errlen, int *rc);
/* Appends one SSE event as received: "event: NAME\n" (when named) "data: DATA\n\n". */
int codec_sse_frame(struct buf *out, const char *event, size_t elen, const char *data,
                    size_t dlen);
/* Token counts are the upstream's word: one is taken when it is an integer in [0, 2^40]. */
#define USAGE_MAX ((json_int_t)1 << 40)
/* 1 and *out set when v is a valid count, 0 when absent (NULL or null), -1 when invalid. */
int usage_take(const json_t *v, long *out);
/* a + b, saturating (counts are summed over items, attempts and events). */
long usage_sum(long a, long b);
/* Adds usage.prompt_tokens/completion_tokens (and prompt_tokens_details.cached_tokens) of an
 * OpenAI object to u (or the input_tokens/output_tokens of Anthropic messages and OpenAI
 * responses), when present and valid; returns how many were present but invalid (ignored). */
unsigned openai_usage(const json_t *obj, struct usage *u);
/* The same from JSON text, parsing only its top-level `usage` member. */
unsigned openai_usage_text(const char *body, size_t len, struct usage *u);
/* to += u kind by kind, saturating; and a usage's prompt + completion, saturating. */
void usage_add(struct usage *to, const struct usage *u);
long usage_total(const struct usage *u);
/* The client's text (valid JSON) asks for usage on its stream (stream_options.include_usage:
 * true), read without a tree. */
bool openai_stream_usage_asked(const char *p, size_t n);

#endif
