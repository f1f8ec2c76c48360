/* provider_messages: the inbound Anthropic Messages API served by OpenAI-type upstreams —
 * Messages request → chat.completions request, chat.completion → Message, and OpenAI stream
 * chunks → Anthropic stream events. Pure functions, no I/O. */
#ifndef LLMUX_PROVIDER_MESSAGES_H
#define LLMUX_PROVIDER_MESSAGES_H

#include <jansson.h>
#include <stdbool.h>

#include "common/buf.h"
#include "upstream/usage.h"

/* Messages body → chat.completions body for `model` (the one place this direction builds a
 * tree). NULL with a client-facing message in err and the field in param ("messages[1]
 * .content[0]") when the request can't be expressed for an OpenAI-type upstream. */
json_t *messages_to_chat(const json_t *msg, const char *model, char *err, size_t errlen,
                         char *param, size_t paramlen);

/* Anthropic stop_reason for an OpenAI finish_reason (NULL → end_turn). */
const char *messages_stop_reason(const char *finish_reason);

/* A chat.completion (text) → Message JSON text appended to out, reporting the
 * completion's own model string, else `model`;
 * token counts added to *prompt / *completion. -1 when the body is not a chat.completion. */
int messages_from_completion(const char *in, size_t len, const char *model,
                             struct buf *out, struct usage *usage);

/* Stream translation state, one per upstream call. Content blocks are numbered in the order
 * they open; an OpenAI tool call index maps to the block that carries it. */
#define MESSAGES_MAX_TOOL_CALLS 128

struct messages_stream {
    char id[96];
    char *model;                    /* reported in message_start: the upstream's own, else
                                     * the model asked of it */
    bool started;                   /* message_start (and its ping) went out */
    bool done;                      /* message_stop went out */
    int open_block;                 /* index of the open content block, -1 none */
    bool open_is_text;
    bool tool_used;                 /* a tool_use block was opened */
    int nblocks;                    /* content blocks started so far */
    int tool_block[MESSAGES_MAX_TOOL_CALLS];    /* OpenAI tool index → block index, -1 none */
    const char *stop_reason;        /* static string, from the last finish_reason */
    long prompt_tokens, cached_tokens, completion_tokens;
    bool usage_seen;            /* the upstream's usage chunk came */
};

void messages_stream_init(struct messages_stream *s, const char *model);
void messages_stream_free(struct messages_stream *s);
/* One OpenAI SSE data payload (a chat.completion.chunk, or [DONE]) → zero or more Anthropic
 * events appended to out, each "event: NAME\ndata: {json}\n\n". -1 for an upstream error chunk
 * or an undecodable one: out then holds only an OpenAI error object (JSON text, unframed). */
int messages_stream_event(struct messages_stream *s, const char *data, size_t dlen,
                          struct buf *out);

#endif
